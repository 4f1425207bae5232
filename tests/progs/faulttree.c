/* faulttree FILE: a small tree for fault injection (tests/test_faults.py).
 *
 *   P (root)  prints N = 0, 1, 2, ... every 50 ms, appends "line N" to FILE
 *   ├ thread  prints "t N" every 50 ms, with SIGUSR2 blocked (its own mask)
 *   └ child C prints "c N" every 50 ms, with SIGUSR1 blocked
 *
 * All three write to the same stdout. P and C share FILE (O_APPEND) and a pipe
 * holding PIPE_BYTES unread bytes. On SIGUSR1, P drains the pipe and prints
 * "pipe ok LEN" or "pipe BAD ...". P blocks SIGRTMIN+2 (its mask is not empty).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PIPE_BYTES 5000

static volatile sig_atomic_t want_check;

static void on_usr1(int sig) { (void)sig; want_check = 1; }

static unsigned char byte_at(size_t i) { return (unsigned char)(i * 7 + i / 251); }

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void block(int sig)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
}

static void *counter(void *arg)
{
    (void)arg;
    block(SIGUSR2);
    for (long n = 0;; n++) {
        dprintf(1, "t %ld\n", n);
        tick();
    }
    return NULL;
}

static void check_pipe(int rfd)
{
    static unsigned char buf[PIPE_BYTES * 2];
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
    dprintf(1, "pipe %s %zu\n", got == PIPE_BYTES ? "ok" : "BAD length", got);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    int file = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
    int p[2];
    if (file < 0 || pipe(p) < 0) { perror("open/pipe"); return 1; }
    static unsigned char data[PIPE_BYTES];
    for (size_t i = 0; i < PIPE_BYTES; i++) data[i] = byte_at(i);
    if (write(p[1], data, PIPE_BYTES) != PIPE_BYTES) { perror("write pipe"); return 1; }
    fcntl(p[0], F_SETFL, O_NONBLOCK);

    pid_t kid = fork();
    if (kid < 0) { perror("fork"); return 1; }
    if (kid == 0) {
        block(SIGUSR1);
        for (long n = 0;; n++) {
            dprintf(1, "c %ld\n", n);
            tick();
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    block(SIGRTMIN + 2);
    pthread_t th;
    if (pthread_create(&th, NULL, counter, NULL) != 0) { perror("pthread_create"); return 1; }

    for (long n = 0;; n++) {
        if (want_check) { want_check = 0; check_pipe(p[0]); }
        dprintf(file, "line %ld\n", n);
        dprintf(1, "%ld\n", n);
        tick();
    }
}
