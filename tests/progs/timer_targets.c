/* POSIX timers aimed at threads and processes: "dead-clock" counts the CPU time of a thread that has exited,
 * "process PID" counts the CPU time of process PID, "live" aims one timer at a thread that
 * lives on and one at that thread's CPU clock. Then prints a number every 50 ms, and in
 * "live" mode whether both timers are still there ("ok"). "no-signal SIGNO": an armed timer
 * that sends no signal (SIGEV_NONE) made with sigev_signo SIGNO, which the kernel keeps
 * unchecked. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static timer_t signals_thread, thread_clock;
static clockid_t clock_of_thread;
static pthread_barrier_t made;

static void make(clockid_t clock, int notify, pid_t tid, timer_t *out) {
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = notify;
    sev.sigev_signo = SIGUSR1;
    sev._sigev_un._tid = tid;
    if (timer_create(clock, &sev, out)) {
        perror("timer_create");
        exit(1);
    }
}

static void *worker(void *mode) {
    if (strcmp(mode, "live") == 0)
        make(CLOCK_MONOTONIC, SIGEV_THREAD_ID, syscall(SYS_gettid), &signals_thread);
    pthread_getcpuclockid(pthread_self(), &clock_of_thread);
    make(clock_of_thread, SIGEV_NONE, 0, &thread_clock);
    if (strcmp(mode, "live") == 0) {
        pthread_barrier_wait(&made);
        for (;;)
            pause();
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "live";
    signal(SIGUSR1, SIG_IGN);
    pthread_barrier_init(&made, NULL, 2);
    if (strcmp(mode, "no-signal") == 0) {
        struct sigevent sev;
        struct itimerspec its = {{1, 0}, {1, 0}};
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_NONE;
        sev.sigev_signo = atoi(argv[2]);
        if (timer_create(CLOCK_MONOTONIC, &sev, &signals_thread) ||
            timer_settime(signals_thread, 0, &its, NULL)) {
            perror("timer_create");
            return 1;
        }
    } else if (strcmp(mode, "process") == 0) {
        clockid_t clock;
        timer_t t;
        if (clock_getcpuclockid(atoi(argv[2]), &clock)) {
            perror("clock_getcpuclockid");
            return 1;
        }
        make(clock, SIGEV_NONE, 0, &t);
    } else {
        pthread_t th;
        pthread_create(&th, NULL, worker, (void *)mode);
        if (strcmp(mode, "live") == 0)
            pthread_barrier_wait(&made);
        else
            pthread_join(th, NULL);
    }
    for (int i = 0;; i++) {
        struct itimerspec its;
        const char *ok = "";
        if (strcmp(mode, "live") == 0)
            ok = timer_gettime(signals_thread, &its) == 0 && timer_gettime(thread_clock, &its) == 0
                 ? " ok" : " lost";
        printf("%d%s\n", i, ok);
        fflush(stdout);
        usleep(50000);
    }
}
