/* sigio: a pipe whose read end signals its owner when data arrives (O_ASYNC).
 *
 * Usage: sigio
 *   The read end is O_ASYNC|O_NONBLOCK, owned by this process (F_SETOWN_EX,
 *   F_OWNER_PID) and signals SIGRTMIN+1 (F_SETSIG) instead of SIGIO. On SIGUSR1 the
 *   process writes one byte into the pipe; the signal handler counts the signals
 *   it gets for the read end (si_fd) and drains the pipe. Every 50 ms it prints a
 *   tick number; when the count changed it prints first
 *   "sigio N signo=S fd=F owner=TYPE:PID sig=S2 flags=HEX"
 *   with what fcntl says of the read end now. SIGIO itself is counted as "bad".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int rfd, wfd;
static volatile sig_atomic_t count, last_signo, last_fd, bad, poke;

static void on_rt(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    char buf[64];
    last_signo = sig;
    last_fd = si->si_fd;
    if (si->si_fd == rfd)
        count++;
    while (read(rfd, buf, sizeof(buf)) > 0)
        ;
}

static void on_sigio(int sig) { (void)sig; bad++; }
static void on_usr1(int sig) { (void)sig; poke = 1; }

int main(void)
{
    int p[2];
    if (pipe(p) < 0)
        return 2;
    rfd = p[0];
    wfd = p[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_rt;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    signal(SIGIO, on_sigio);
    signal(SIGUSR1, on_usr1);
    struct f_owner_ex own = {F_OWNER_PID, getpid()};
    if (fcntl(rfd, F_SETOWN_EX, &own) < 0 || fcntl(rfd, F_SETSIG, SIGRTMIN + 1) < 0 ||
        fcntl(rfd, F_SETFL, O_ASYNC | O_NONBLOCK) < 0)
        return 3;
    int seen = 0;
    for (long n = 0;; n++) {
        if (poke) {
            poke = 0;
            if (write(wfd, "x", 1) != 1)
                return 4;
        }
        if (count != seen) {
            seen = count;
            struct f_owner_ex now;
            fcntl(rfd, F_GETOWN_EX, &now);
            printf("sigio %d signo=%d fd=%d owner=%d:%d sig=%d flags=%x bad=%d\n", seen,
                   (int)last_signo - SIGRTMIN, (int)last_fd, now.type, now.pid,
                   fcntl(rfd, F_GETSIG) - SIGRTMIN, fcntl(rfd, F_GETFL), (int)bad);
        }
        printf("%ld\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
