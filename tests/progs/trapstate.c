/* trapstate MODE: a process whose SIGTRAP is handled (MODE "handle") or ignored
 * ("ignore"), for tests that ckpt's syscall injection forces no SIGTRAP on it.
 *
 * Prints a tick number every 50 ms. On SIGUSR1 it prints one line
 * "trap=DISPOSITION blocked=B hits=N": SIGTRAP's disposition (handler, ignored,
 * default) as sigaction reports it, whether SIGTRAP is blocked, and how many times
 * the handler ran (it then raises SIGTRAP once, which the handler counts, or which is
 * ignored).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_report, hits;

static void on_trap(int sig) { (void)sig; hits++; }
static void on_usr1(int sig) { (void)sig; want_report = 1; }

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = strcmp(argv[1], "ignore") ? on_trap : SIG_IGN;
    sigaction(SIGTRAP, &sa, NULL);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    for (long n = 0;; n++) {
        if (want_report) {
            want_report = 0;
            struct sigaction now;
            sigset_t mask;
            sigaction(SIGTRAP, NULL, &now);
            sigprocmask(SIG_BLOCK, NULL, &mask);
            const char *what = now.sa_handler == on_trap ? "handler"
                             : now.sa_handler == SIG_IGN ? "ignored" : "default";
            raise(SIGTRAP);
            dprintf(1, "trap=%s blocked=%d hits=%d\n", what, sigismember(&mask, SIGTRAP),
                    (int)hits);
        }
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
