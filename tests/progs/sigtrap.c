/* sigtrap: a SIGTRAP handler and a SIGTRAP left pending while blocked (what a debugger
 * stub or a self-tracing program has), which a single-stepping tracer would disturb.
 *
 * It installs a SIGTRAP handler, blocks SIGTRAP and queues one to itself with
 * sigqueue (value 4242). Prints "N" every 50 ms; on SIGUSR1 it unblocks SIGTRAP, and
 * the handler prints "TRAP code=C value=V" for each SIGTRAP it gets.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    char buf[64];
    int n = snprintf(buf, sizeof buf, "TRAP code=%d value=%d\n", si->si_code,
                     si->si_value.sival_int);
    write(1, buf, n);
}

static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_trap;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGTRAP, &sa, NULL);
    signal(SIGUSR1, on_usr1);
    sigset_t trap;
    sigemptyset(&trap);
    sigaddset(&trap, SIGTRAP);
    sigprocmask(SIG_BLOCK, &trap, NULL);
    union sigval v = {.sival_int = 4242};
    sigqueue(getpid(), SIGTRAP, v);
    for (long n = 0;; n++) {
        if (got_usr1) {
            got_usr1 = 0;
            sigprocmask(SIG_UNBLOCK, &trap, NULL);
        }
        printf("%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
