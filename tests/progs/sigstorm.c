/* sigstorm [fork]: count the signals it is sent, for a test that sends them while the
 * process is being restored.
 *
 * Handlers (SA_SIGINFO | SA_RESTART): SIGUSR1 counted; SIGRTMIN+1, sent with sigqueue
 * and a value V (1..MAXV), marks V seen (a second time counts as a duplicate) and adds
 * V to a sum; SIGRTMIN+2, sent with tgkill, counted per thread (the first thread, the
 * second). SIGTERM keeps its default action. With "fork" the process forks once first;
 * both go on alike. Each process starts a second thread, prints "TAG pid=P tid=T" (TAG
 * p, or c in the child), then every 20 ms one line, written with one write:
 *   "TAG N usr1=A rt=B dups=C sum=S main=D thread=E"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXV (1 << 20)

static unsigned char seen[MAXV + 1];
static volatile long usr1, rt, dups, sum, main_count, thread_count;
static pid_t main_tid;

static void on_usr1(int sig, siginfo_t *info, void *ctx)
{
    (void)sig, (void)info, (void)ctx;
    usr1++;
}

static void on_value(int sig, siginfo_t *info, void *ctx)
{
    long v = (long)info->si_value.sival_ptr;
    (void)sig, (void)ctx;
    if (v < 1 || v > MAXV || seen[v]) {
        dups++;
        return;
    }
    seen[v] = 1;
    rt++;
    sum += v;
}

static void on_thread_signal(int sig, siginfo_t *info, void *ctx)
{
    (void)sig, (void)info, (void)ctx;
    if (syscall(SYS_gettid) == main_tid)
        main_count++;
    else
        thread_count++;
}

static volatile pid_t second_tid;

static void *second(void *arg)
{
    (void)arg;
    second_tid = syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

static void handle(int sig, void (*fn)(int, siginfo_t *, void *))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(sig, &sa, NULL);
}

int main(int argc, char **argv)
{
    const char *tag = "p";
    handle(SIGUSR1, on_usr1);
    handle(SIGRTMIN + 1, on_value);
    handle(SIGRTMIN + 2, on_thread_signal);
    if (argc > 1 && !strcmp(argv[1], "fork")) {
        pid_t pid = fork();
        if (pid < 0)
            return 1;
        if (pid == 0)
            tag = "c";
    }
    main_tid = syscall(SYS_gettid);
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL))
        return 1;
    while (!second_tid)
        usleep(1000);
    dprintf(1, "%s pid=%d tid=%d\n", tag, (int)getpid(), (int)second_tid);
    for (long n = 0;; n++) {
        dprintf(1, "%s %ld usr1=%ld rt=%ld dups=%ld sum=%ld main=%ld thread=%ld\n", tag, n,
                usr1, rt, dups, sum, main_count, thread_count);
        struct timespec ts = {0, 20 * 1000 * 1000};
        while (nanosleep(&ts, &ts) < 0)
            ;
    }
}
