/* threads_count: the main thread and 4 pthreads, each counting on its own.
 *
 * Each thread Ti (i = 1..4) keeps its counter in a __thread variable and prints
 * "Ti N" (N = 0, 1, 2, ...) every 50 ms (nanosleep). On every tick it checks its
 * thread-local state: a TLS tag set at start, the TLS counter against a copy on its
 * stack, gettid() and pthread_self() against the values of its first tick, the
 * address of its TLS block. Any mismatch prints "BAD Ti ...". Each thread also stores
 * its counter in a global array, progress[i].
 *
 * The main thread prints "tids MAIN T1 T2 T3 T4" (gettid() of each) once every
 * thread has started, then every 50 ms "M N P1 P2 P3 P4" where Pi is progress[i]:
 * what main sees of the other threads' stores through the shared memory.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 4

static __thread long tls_tag = -1;
static __thread long tls_count;
static __thread char tls_pad[64] = "initial tls image";
static volatile long progress[NTHREADS + 1];
static pid_t tids[NTHREADS + 1];
static pthread_barrier_t started;

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *worker(void *arg)
{
    long i = (long)(intptr_t)arg;
    pid_t tid = gettid();
    pthread_t self = pthread_self();
    void *tls_addr = (void *)&tls_count;

    if (tls_tag != -1 || tls_count != 0 || tls_pad[0] != 'i')
        dprintf(1, "BAD T%ld fresh TLS not initialised\n", i);
    tls_tag = 1000 * i + 7;
    tls_pad[0] = (char)('a' + i);
    tids[i] = tid;
    pthread_barrier_wait(&started);

    for (long n = 0;; n++) {
        if (tls_count != n)
            dprintf(1, "BAD T%ld tls_count %ld != %ld\n", i, tls_count, n);
        if (tls_tag != 1000 * i + 7 || tls_pad[0] != (char)('a' + i))
            dprintf(1, "BAD T%ld tls_tag %ld pad %c\n", i, tls_tag, tls_pad[0]);
        if (gettid() != tid)
            dprintf(1, "BAD T%ld gettid %d != %d\n", i, (int)gettid(), (int)tid);
        if (!pthread_equal(pthread_self(), self) || (void *)&tls_count != tls_addr)
            dprintf(1, "BAD T%ld pthread_self or TLS address changed\n", i);
        progress[i] = n;
        dprintf(1, "T%ld %ld\n", i, n);
        tls_count++;
        tick();
    }
    return NULL;
}

int main(void)
{
    pthread_t th[NTHREADS + 1];
    pthread_barrier_init(&started, NULL, NTHREADS + 1);
    tids[0] = gettid();
    for (long i = 1; i <= NTHREADS; i++) {
        progress[i] = -1;
        if (pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i) != 0) {
            dprintf(1, "pthread_create failed\n");
            return 1;
        }
    }
    pthread_barrier_wait(&started);
    dprintf(1, "tids %d %d %d %d %d\n", tids[0], tids[1], tids[2], tids[3], tids[4]);
    for (long n = 0;; n++) {
        if (gettid() != tids[0] || getpid() != tids[0])
            dprintf(1, "BAD M gettid %d getpid %d\n", (int)gettid(), (int)getpid());
        dprintf(1, "M %ld %ld %ld %ld %ld\n", n, progress[1], progress[2], progress[3],
                progress[4]);
        tick();
    }
}
