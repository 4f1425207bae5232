/* pipefile FILE: append "line N" to FILE (O_APPEND) and print N on stdout every 50 ms,
 * while a pipe whose both ends it holds keeps PIPE_BYTES unread bytes.
 *
 * On SIGUSR1 the main loop drains the pipe (its read end is O_NONBLOCK), checks the
 * bytes and prints "pipe ok LEN cap CAPACITY" or "pipe BAD ...", then checks the pipe
 * still works with a fresh write and read ("pipe again ok").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES 100000
#define PIPE_CAP (1 << 17)

static volatile sig_atomic_t want_check;

static void on_usr1(int sig) { (void)sig; want_check = 1; }

static unsigned char byte_at(size_t i) { return (unsigned char)(i * 7 + i / 251); }

static void check_pipe(int rfd, int wfd)
{
    static unsigned char buf[PIPE_CAP];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(rfd, buf + got, sizeof buf - got);
        if (n > 0) { got += n; continue; }
        if (n < 0 && errno == EAGAIN) break;
        dprintf(1, "pipe BAD read %zd errno %d\n", n, errno);
        return;
    }
    for (size_t i = 0; i < got; i++)
        if (buf[i] != byte_at(i)) { dprintf(1, "pipe BAD byte %zu\n", i); return; }
    dprintf(1, "pipe %s %zu cap %d\n", got == PIPE_BYTES ? "ok" : "BAD length", got,
            fcntl(wfd, F_GETPIPE_SZ));
    char again[6];
    if (write(wfd, "again", 5) == 5 && read(rfd, again, 5) == 5 && !memcmp(again, "again", 5))
        dprintf(1, "pipe again ok\n");
    else
        dprintf(1, "pipe again BAD\n");
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    int file = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    int p[2];
    if (file < 0 || pipe(p) < 0) { perror("open/pipe"); return 1; }
    if (fcntl(p[1], F_SETPIPE_SZ, PIPE_CAP) < 0) { perror("F_SETPIPE_SZ"); return 1; }
    static unsigned char data[PIPE_BYTES];
    for (size_t i = 0; i < PIPE_BYTES; i++) data[i] = byte_at(i);
    if (write(p[1], data, PIPE_BYTES) != PIPE_BYTES) { perror("write pipe"); return 1; }
    fcntl(p[0], F_SETFL, O_NONBLOCK);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);

    for (long n = 0;; n++) {
        if (want_check) { want_check = 0; check_pipe(p[0], p[1]); }
        dprintf(file, "line %ld\n", n);
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
