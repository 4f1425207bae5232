/* threads_exit: threads that end after a restore, and a main thread that joins them.
 *
 *   E   locks a robust mutex, then prints "E N" every 50 ms; on SIGUSR1 (tgkill to E)
 *       it calls pthread_exit((void *)42) still holding the mutex
 *   F   prints "F N" every 50 ms; on SIGUSR1 (tgkill to F) pthread_exit((void *)7)
 *
 * Main prints "tids MAIN E F", then blocks in pthread_join(E). When E ends it prints
 * "joined E 42 err=0", locks the robust mutex and prints "robust EOWNERDEAD" (the kernel
 * marked the mutex of the dead owner) or "robust OTHER <err>", then pthread_join(F)
 * and "joined F 7 err=0", then ticks "M N" every 50 ms.
 *
 * pthread_join waits on the thread's tid word, which the kernel clears (and wakes) at
 * the thread's exit because of CLONE_CHILD_CLEARTID; the robust mutex is released by
 * the kernel walking the dead thread's robust list. Both are per-thread state.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t robust;
static __thread volatile sig_atomic_t want_exit;
static pid_t tids[3];
static pthread_barrier_t started;

static void on_usr1(int sig) { (void)sig; want_exit = 1; }

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *thread_e(void *arg)
{
    (void)arg;
    tids[1] = gettid();
    if (pthread_mutex_lock(&robust) != 0) dprintf(1, "BAD E lock\n");
    pthread_barrier_wait(&started);
    for (long n = 0;; n++) {
        if (want_exit) pthread_exit((void *)42);
        dprintf(1, "E %ld\n", n);
        tick();
    }
}

static void *thread_f(void *arg)
{
    (void)arg;
    tids[2] = gettid();
    pthread_barrier_wait(&started);
    for (long n = 0;; n++) {
        if (want_exit) pthread_exit((void *)7);
        dprintf(1, "F %ld\n", n);
        tick();
    }
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&robust, &attr);
    tids[0] = gettid();
    pthread_barrier_init(&started, NULL, 3);
    pthread_t e, f;
    if (pthread_create(&e, NULL, thread_e, NULL) != 0
        || pthread_create(&f, NULL, thread_f, NULL) != 0) {
        dprintf(1, "pthread_create failed\n");
        return 1;
    }
    pthread_barrier_wait(&started);
    dprintf(1, "tids %d %d %d\n", tids[0], tids[1], tids[2]);
    void *ret = NULL;
    int err = pthread_join(e, &ret);
    dprintf(1, "joined E %ld err=%d\n", (long)ret, err);
    err = pthread_mutex_lock(&robust);
    if (err == EOWNERDEAD) {
        dprintf(1, "robust EOWNERDEAD\n");
        pthread_mutex_consistent(&robust);
    } else {
        dprintf(1, "robust OTHER %d\n", err);
    }
    pthread_mutex_unlock(&robust);
    ret = NULL;
    err = pthread_join(f, &ret);
    dprintf(1, "joined F %ld err=%d\n", (long)ret, err);
    for (long n = 0;; n++) {
        dprintf(1, "M %ld\n", n);
        tick();
    }
}
