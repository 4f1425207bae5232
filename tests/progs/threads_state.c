/* threads_state: per-thread signal state and names.
 *
 *   main  comm "thr-main"    (pthread_setname_np on the main thread: the process comm)
 *   A     comm "thr-blkusr1" blocks SIGUSR1 in its own mask (pthread_sigmask)
 *   B     comm "thr-altstk"  has its own alternate signal stack (sigaltstack)
 *   C     comm "thr-plain"   pinned (pthread_setaffinity_np) to the first CPU it may use
 *
 * Every thread prints "ROLE N" (ROLE = M, A, B, C; N = 0, 1, 2, ...) every 50 ms.
 * Once all run, main prints "tids MAIN A B C" (gettid() of each).
 *
 * SIGUSR2 has a handler (SA_ONSTACK) that writes "usr2 tid=T onstack=X": T is the
 * gettid() of the thread it runs on, X is 1 when it runs on B's alternate stack.
 * SIGUSR1 has a handler that writes "usr1 tid=T". A SIGUSR1 sent to A (tgkill) stays
 * pending on A; when A has received a SIGUSR2, it unblocks SIGUSR1 and prints
 * "A unblocked" (the pending SIGUSR1 is delivered to A first).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char b_altstack[64 * 1024];
static __thread volatile sig_atomic_t usr2_seen;
static pid_t tids[4];
static pthread_barrier_t started;

/* Async-signal-safe "PREFIX tid=N[ onstack=X]\n". */
static void say(const char *prefix, long tid, int onstack)
{
    char buf[96], num[24];
    size_t len = strlen(prefix);
    memcpy(buf, prefix, len);
    memcpy(buf + len, " tid=", 5);
    len += 5;
    int k = 0;
    do { num[k++] = (char)('0' + tid % 10); tid /= 10; } while (tid);
    while (k) buf[len++] = num[--k];
    if (onstack >= 0) {
        memcpy(buf + len, " onstack=", 9);
        len += 9;
        buf[len++] = (char)('0' + onstack);
    }
    buf[len++] = '\n';
    (void)!write(1, buf, len);
}

static void on_usr2(int sig)
{
    char local;
    (void)sig;
    usr2_seen = 1;
    say("usr2", gettid(), &local >= b_altstack && &local < b_altstack + sizeof b_altstack);
}

static void on_usr1(int sig)
{
    (void)sig;
    say("usr1", gettid(), -1);
}

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void *thread_a(void *arg)
{
    (void)arg;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    pthread_setname_np(pthread_self(), "thr-blkusr1");
    tids[1] = gettid();
    pthread_barrier_wait(&started);
    int unblocked = 0;
    for (long n = 0;; n++) {
        if (usr2_seen && !unblocked) {
            unblocked = 1;
            pthread_sigmask(SIG_UNBLOCK, &set, NULL);
            dprintf(1, "A unblocked\n");
        }
        dprintf(1, "A %ld\n", n);
        tick();
    }
    return NULL;
}

static void *thread_b(void *arg)
{
    (void)arg;
    stack_t ss = {.ss_sp = b_altstack, .ss_size = sizeof b_altstack};
    if (sigaltstack(&ss, NULL) != 0) dprintf(1, "BAD sigaltstack\n");
    pthread_setname_np(pthread_self(), "thr-altstk");
    tids[2] = gettid();
    pthread_barrier_wait(&started);
    for (long n = 0;; n++) {
        dprintf(1, "B %ld\n", n);
        tick();
    }
    return NULL;
}

static void *thread_c(void *arg)
{
    (void)arg;
    cpu_set_t cpus, one;
    CPU_ZERO(&one);
    if (pthread_getaffinity_np(pthread_self(), sizeof cpus, &cpus) == 0)
        for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
            if (CPU_ISSET(cpu, &cpus)) {
                CPU_SET(cpu, &one);
                pthread_setaffinity_np(pthread_self(), sizeof one, &one);
                break;
            }
    pthread_setname_np(pthread_self(), "thr-plain");
    tids[3] = gettid();
    pthread_barrier_wait(&started);
    for (long n = 0;; n++) {
        dprintf(1, "C %ld\n", n);
        tick();
    }
    return NULL;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr2;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGUSR2, &sa, NULL);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_setname_np(pthread_self(), "thr-main");
    tids[0] = gettid();
    pthread_barrier_init(&started, NULL, 4);
    pthread_t th;
    void *(*fns[3])(void *) = {thread_a, thread_b, thread_c};
    for (int i = 0; i < 3; i++)
        if (pthread_create(&th, NULL, fns[i], NULL) != 0) {
            dprintf(1, "pthread_create failed\n");
            return 1;
        }
    pthread_barrier_wait(&started);
    dprintf(1, "tids %d %d %d %d\n", tids[0], tids[1], tids[2], tids[3]);
    for (long n = 0;; n++) {
        dprintf(1, "M %ld\n", n);
        tick();
    }
}
