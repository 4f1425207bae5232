/* timekeeper: a daemon living by its clocks, as chrony or a cron does: an epoll loop
 * over a periodic monotonic timerfd (100 ms), an absolute realtime timerfd re-armed
 * for each next whole second (TFD_TIMER_CANCEL_ON_SET), and a signalfd taking
 * SIGALRM from an interval itimer (150 ms) and SIGRTMIN from a POSIX timer on
 * CLOCK_BOOTTIME (200 ms); a thread sleeping to absolute deadlines on a 250 ms grid
 * (clock_nanosleep TIMER_ABSTIME).
 *
 * Prints, at each tick of the monotonic timerfd:
 *   "N mono=M second=S alarm=A rt=R sleeper=T"
 * N counting from 0 with no gap, the others the counts of each source so far.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile long sleeper;

static void *sleep_to_deadlines(void *arg)
{
    (void)arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        next.tv_nsec += 250000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_nsec -= 1000000000;
            next.tv_sec++;
        }
        int e;
        while ((e = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL)) == EINTR)
            ;
        if (e) {
            dprintf(2, "clock_nanosleep: %d\n", e);
            exit(1);
        }
        __atomic_add_fetch(&sleeper, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static void arm_next_second(int fd)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct itimerspec its = {.it_value = {now.tv_sec + 1, 0}};
    if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0) {
        perror("timerfd_settime realtime");
        exit(1);
    }
}

int main(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    sigaddset(&set, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &set, NULL);  /* before the thread: it inherits the mask */
    pthread_t th;
    if (pthread_create(&th, NULL, sleep_to_deadlines, NULL)) {
        perror("pthread_create");
        return 1;
    }
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    int mono = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    int real = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
    struct itimerspec every = {{0, 100000000}, {0, 100000000}};
    timerfd_settime(mono, 0, &every, NULL);
    arm_next_second(real);
    struct itimerval alarm_every = {{0, 150000}, {0, 150000}};
    setitimer(ITIMER_REAL, &alarm_every, NULL);
    struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN};
    timer_t t;
    if (timer_create(CLOCK_BOOTTIME, &sev, &t) < 0) {
        perror("timer_create");
        return 1;
    }
    struct itimerspec rt_every = {{0, 200000000}, {0, 200000000}};
    timer_settime(t, 0, &rt_every, NULL);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    int fds[] = {mono, real, sfd};
    for (int i = 0; i < 3; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev);
    }
    long n = 0, monos = 0, seconds = 0, alarms = 0, rts = 0;
    for (;;) {
        struct epoll_event evs[3];
        int k = epoll_wait(ep, evs, 3, -1);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                    if ((int)si.ssi_signo == SIGALRM)
                        alarms++;
                    else
                        rts++;
                    break;
                }
                continue;
            }
            uint64_t ticks;
            if (read(fd, &ticks, sizeof(ticks)) != sizeof(ticks)) {
                if (fd == real && errno == ECANCELED) {  /* the clock was set */
                    arm_next_second(real);
                    continue;
                }
                perror("read timerfd");
                return 1;
            }
            if (fd == real) {
                seconds += ticks;
                arm_next_second(real);
                continue;
            }
            monos += ticks;
            dprintf(1, "%ld mono=%ld second=%ld alarm=%ld rt=%ld sleeper=%ld\n", n++, monos,
                    seconds, alarms, rts, __atomic_load_n(&sleeper, __ATOMIC_SEQ_CST));
        }
    }
}
