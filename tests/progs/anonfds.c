/* anonfds: eventfds, signalfds and timerfds in one poll() loop.
 *
 *   efd   eventfd, count 5, EFD_NONBLOCK        sem   eventfd, count 3, EFD_SEMAPHORE|EFD_NONBLOCK
 *   sfd   signalfd for SIGUSR1 (blocked), polled: each signal read prints
 *         "sig signo=S code=C pid=P"
 *   rtfd  signalfd for SIGRTMIN+2 (blocked), not polled; the process queued itself
 *         one SIGRTMIN+2 with value 4242 at start, so it stays pending
 *   tfd   CLOCK_MONOTONIC timerfd, every 100 ms, polled: "tick N expirations=E"
 *   fast  CLOCK_MONOTONIC timerfd, every 20 ms, never read until a report
 *   once  CLOCK_BOOTTIME one-shot timerfd (1 ms), fired and never read until a report
 *   wall  CLOCK_REALTIME timerfd, absolute (TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET),
 *         deadline one hour after the start, never fires during a test
 *
 * First lines: "fds efd=.. sem=.. sfd=.. rtfd=.. tfd=.. fast=.. once=.. wall=..",
 * "fast armed NS" (CLOCK_MONOTONIC time the fast timer was armed),
 * "wall deadline SEC NSEC", then "ready".
 *
 * On SIGUSR2 (a handler) the main loop prints a report, leaving the eventfds as
 * they were (what it reads it writes back):
 *   "efd plain=V sem=S semreads=R nb=XY" (R reads of 1 each in semaphore mode;
 *                                         X, Y: O_NONBLOCK of efd and sem)
 *   "rt signo=S value=V" or "rt none"
 *   "fast expirations=E" or "fast none"
 *   "once expirations=E" or "once none"
 *   "report done"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_report;

static void on_usr2(int sig) { (void)sig; want_report = 1; }

static int must(int fd, const char *what)
{
    if (fd < 0) { perror(what); _exit(1); }
    return fd;
}

static int timer(int clock, int flags, int set_flags, struct itimerspec its)
{
    int fd = must(timerfd_create(clock, flags), "timerfd_create");
    must(timerfd_settime(fd, set_flags, &its, NULL), "timerfd_settime");
    return fd;
}

static void read_timer(int fd, const char *name)
{
    uint64_t e;
    if (read(fd, &e, sizeof e) == sizeof e)
        dprintf(1, "%s expirations=%llu\n", name, (unsigned long long)e);
    else
        dprintf(1, "%s none\n", name);
}

static void report(int efd, int sem, int rtfd, int fast, int once)
{
    uint64_t plain = 0, v, sum = 0;
    int reads = 0;
    if (read(efd, &plain, sizeof plain) == sizeof plain) {
        if (write(efd, &plain, sizeof plain) != sizeof plain) dprintf(1, "efd BAD write\n");
    } else {
        plain = 0;
    }
    while (read(sem, &v, sizeof v) == sizeof v) { sum += v; reads++; }
    if (sum && write(sem, &sum, sizeof sum) != sizeof sum) dprintf(1, "sem BAD write\n");
    dprintf(1, "efd plain=%llu sem=%llu semreads=%d nb=%d%d\n", (unsigned long long)plain,
            (unsigned long long)sum, reads, !!(fcntl(efd, F_GETFL) & O_NONBLOCK),
            !!(fcntl(sem, F_GETFL) & O_NONBLOCK));

    struct signalfd_siginfo si;
    if (read(rtfd, &si, sizeof si) == sizeof si)
        dprintf(1, "rt signo=%u value=%d\n", si.ssi_signo, si.ssi_int);
    else
        dprintf(1, "rt none\n");
    read_timer(fast, "fast");
    read_timer(once, "once");
    dprintf(1, "report done\n");
}

int main(void)
{
    uint64_t v = 5;
    int efd = must(eventfd(0, EFD_NONBLOCK), "eventfd");
    int sem = must(eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK), "eventfd");
    if (write(efd, &v, sizeof v) != sizeof v) return 1;
    v = 3;
    if (write(sem, &v, sizeof v) != sizeof v) return 1;

    sigset_t both, usr1, rt;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &both, NULL);
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN + 2);
    int sfd = must(signalfd(-1, &usr1, SFD_NONBLOCK | SFD_CLOEXEC), "signalfd");
    int rtfd = must(signalfd(-1, &rt, SFD_NONBLOCK), "signalfd");
    union sigval sv = {.sival_int = 4242};
    must(sigqueue(getpid(), SIGRTMIN + 2, sv), "sigqueue");

    struct timespec now;
    int tfd = timer(CLOCK_MONOTONIC, TFD_CLOEXEC, 0,
                    (struct itimerspec){{0, 100000000}, {0, 100000000}});
    clock_gettime(CLOCK_MONOTONIC, &now);
    int fast = timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0,
                     (struct itimerspec){{0, 20000000}, {0, 20000000}});
    long long armed = now.tv_sec * 1000000000LL + now.tv_nsec;
    int once = timer(CLOCK_BOOTTIME, TFD_NONBLOCK, 0, (struct itimerspec){{0, 0}, {0, 1000000}});
    clock_gettime(CLOCK_REALTIME, &now);
    struct timespec deadline = {now.tv_sec + 3600, now.tv_nsec};
    int wall = timer(CLOCK_REALTIME, TFD_NONBLOCK, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET,
                     (struct itimerspec){{0, 0}, deadline});

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    dprintf(1, "fds efd=%d sem=%d sfd=%d rtfd=%d tfd=%d fast=%d once=%d wall=%d\n",
            efd, sem, sfd, rtfd, tfd, fast, once, wall);
    dprintf(1, "fast armed %lld\n", armed);
    dprintf(1, "wall deadline %lld %ld\n", (long long)deadline.tv_sec, deadline.tv_nsec);
    dprintf(1, "ready\n");

    for (long tick = 0;;) {
        if (want_report) { want_report = 0; report(efd, sem, rtfd, fast, once); }
        struct pollfd p[2] = {{tfd, POLLIN, 0}, {sfd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            perror("poll");
            return 1;
        }
        if (p[0].revents & POLLIN) {
            uint64_t e;
            if (read(tfd, &e, sizeof e) != sizeof e) { perror("read timerfd"); return 1; }
            dprintf(1, "tick %ld expirations=%llu\n", tick++, (unsigned long long)e);
        }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof si) != sizeof si) { perror("read signalfd"); return 1; }
            dprintf(1, "sig signo=%u code=%d pid=%u\n", si.ssi_signo, si.ssi_code, si.ssi_pid);
        }
    }
}
