/* ptimers: POSIX timers with sparse IDs.
 *
 * Three timers are created and the middle one deleted, so the IDs have a gap:
 *   fast:  CLOCK_MONOTONIC, every 20 ms, SIGRTMIN with sigev_value 0xfeed
 *   idle:  CLOCK_REALTIME, SIGEV_NONE, disarmed
 *   late:  CLOCK_MONOTONIC, one-shot, armed for 3600 s
 * Every 50 ms it prints "N fired=F idle=ok|BAD late=ok|BAD value=ok|BAD": F counts the
 * handler runs; idle must read back disarmed, late must have between 3000 and 3600 s
 * left, and every signal must carry 0xfeed. Prints "ids A B C" once.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t fired, bad_value;

static void on_tick(int sig, siginfo_t *si, void *uc)
{
    (void)sig; (void)uc;
    if (si->si_value.sival_ptr != (void *)0xfeed) bad_value = 1;
    fired++;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_tick;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);

    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGRTMIN;
    ev.sigev_value.sival_ptr = (void *)0xfeed;
    timer_t fast, gap, idle, late;
    if (timer_create(CLOCK_MONOTONIC, &ev, &fast)) return 1;
    struct sigevent none;
    memset(&none, 0, sizeof none);
    none.sigev_notify = SIGEV_NONE;
    if (timer_create(CLOCK_MONOTONIC, &none, &gap)) return 1;
    if (timer_create(CLOCK_REALTIME, &none, &idle)) return 1;
    if (timer_create(CLOCK_MONOTONIC, &none, &late)) return 1;
    timer_delete(gap);
    struct itimerspec every = {{0, 20 * 1000 * 1000}, {0, 20 * 1000 * 1000}};
    struct itimerspec hour = {{0, 0}, {3600, 0}};
    timer_settime(fast, 0, &every, NULL);
    timer_settime(late, 0, &hour, NULL);
    printf("ids %ld %ld %ld\n", (long)fast, (long)idle, (long)late);
    fflush(stdout);
    for (long n = 0;; n++) {
        struct itimerspec its;
        int idle_ok = timer_gettime(idle, &its) == 0 && its.it_value.tv_sec == 0 &&
                      its.it_value.tv_nsec == 0;
        int late_ok = timer_gettime(late, &its) == 0 && its.it_value.tv_sec >= 3000 &&
                      its.it_value.tv_sec <= 3600;
        printf("%ld fired=%d idle=%s late=%s value=%s\n", n, (int)fired, idle_ok ? "ok" : "BAD",
               late_ok ? "ok" : "BAD", bad_value ? "BAD" : "ok");
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        while (nanosleep(&ts, &ts)) ;
    }
}
