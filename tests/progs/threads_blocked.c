/* threads_blocked: threads that sit in the kernel, and threads that fight for a mutex.
 *
 *   W   waits on a condition variable (futex) until main sets `go`: "W woken"
 *   R   blocked in read() on a pipe that main writes "hello" to: "R read hello"
 *   L   blocked in pthread_mutex_lock() on a mutex main holds from the start:
 *       "L locked" once main unlocks it
 *   I1..I3  increment, under one mutex, a shared counter and their own counter,
 *       in batches of 1000 with a busy critical section (so that they contend), 1 ms apart
 *
 * Main prints "tids MAIN W R L I1 I2 I3" once all started, then every 50 ms
 * "M N shared=S C1 C2 C3 ok" (S and the Ci read under the mutex; "BAD" instead of
 * "ok" when S != C1 + C2 + C3). On SIGUSR1 (only main leaves it unblocked) main
 * signals the condition, writes to the pipe, unlocks L's mutex and prints
 * "M released". W, R and L print "W waiting", "R reading", "L locking" before they
 * block, and tick ("W N", ...) every 50 ms once released.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NINC 3

static pthread_mutex_t cond_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int go;
static int pfd[2];
static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t counter_mutex = PTHREAD_MUTEX_INITIALIZER;
static long shared_count, counts[NINC];
static pid_t tids[4 + NINC];
static pthread_barrier_t started;
static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static void sleep_ns(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

static void ticks(const char *role)
{
    for (long n = 0;; n++) {
        dprintf(1, "%s %ld\n", role, n);
        sleep_ns(50 * 1000 * 1000);
    }
}

static void *waiter(void *arg)
{
    (void)arg;
    tids[1] = gettid();
    pthread_mutex_lock(&cond_mutex);
    pthread_barrier_wait(&started);
    dprintf(1, "W waiting\n");
    while (!go) pthread_cond_wait(&cond, &cond_mutex);
    pthread_mutex_unlock(&cond_mutex);
    dprintf(1, "W woken\n");
    ticks("W");
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    char buf[64] = {0};
    tids[2] = gettid();
    pthread_barrier_wait(&started);
    dprintf(1, "R reading\n");
    ssize_t n = read(pfd[0], buf, sizeof buf - 1);
    if (n > 0 && buf[n - 1] == '\n') buf[n - 1] = 0;
    dprintf(1, "R read %s\n", n > 0 ? buf : "FAILED");
    ticks("R");
    return NULL;
}

static void *locker(void *arg)
{
    (void)arg;
    tids[3] = gettid();
    pthread_barrier_wait(&started);
    dprintf(1, "L locking\n");
    pthread_mutex_lock(&held);
    dprintf(1, "L locked\n");
    pthread_mutex_unlock(&held);
    ticks("L");
    return NULL;
}

static void *incrementer(void *arg)
{
    long i = (long)(intptr_t)arg;
    tids[4 + i] = gettid();
    pthread_barrier_wait(&started);
    for (;;) {
        for (int k = 0; k < 1000; k++) {
            pthread_mutex_lock(&counter_mutex);
            long s = shared_count;
            for (volatile int spin = 0; spin < 500; spin++) ;
            shared_count = s + 1;
            counts[i]++;
            pthread_mutex_unlock(&counter_mutex);
        }
        sleep_ns(1000 * 1000);
    }
    return NULL;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);  /* inherited by every thread */
    if (pipe(pfd) != 0) return 1;
    pthread_mutex_lock(&held);
    tids[0] = gettid();
    pthread_barrier_init(&started, NULL, 4 + NINC);
    pthread_t th;
    int bad = pthread_create(&th, NULL, waiter, NULL) | pthread_create(&th, NULL, reader, NULL)
              | pthread_create(&th, NULL, locker, NULL);
    for (long i = 0; i < NINC; i++)
        bad |= pthread_create(&th, NULL, incrementer, (void *)(intptr_t)i);
    if (bad) {
        dprintf(1, "pthread_create failed\n");
        return 1;
    }
    pthread_barrier_wait(&started);
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    dprintf(1, "tids %d %d %d %d %d %d %d\n", tids[0], tids[1], tids[2], tids[3], tids[4],
            tids[5], tids[6]);
    int released = 0;
    for (long n = 0;; n++) {
        if (got_usr1 && !released) {
            released = 1;
            pthread_mutex_lock(&cond_mutex);
            go = 1;
            pthread_cond_signal(&cond);
            pthread_mutex_unlock(&cond_mutex);
            (void)!write(pfd[1], "hello\n", 6);
            pthread_mutex_unlock(&held);
            dprintf(1, "M released\n");
        }
        pthread_mutex_lock(&counter_mutex);
        long s = shared_count, c0 = counts[0], c1 = counts[1], c2 = counts[2];
        pthread_mutex_unlock(&counter_mutex);
        dprintf(1, "M %ld shared=%ld %ld %ld %ld %s\n", n, s, c0, c1, c2,
                s == c0 + c1 + c2 ? "ok" : "BAD");
        sleep_ns(50 * 1000 * 1000);
    }
}
