/* seccomp_modes MODE: a process under seccomp that ckpt's injected syscalls would break.
 *
 * strict: SECCOMP_MODE_STRICT (only read, write, exit and sigreturn); prints N every
 *         ~50 ms of busy work, with write().
 * tsync:  two threads under one filter installed with SECCOMP_FILTER_FLAG_TSYNC that
 *         kills the process on any syscall but read, write, nanosleep, clock_nanosleep,
 *         rt_sigreturn, restart_syscall, futex, seccomp and exit(_group): mmap, munmap,
 *         prctl... (what ckpt injects) would kill it. Prints "N main" and "N thread"
 *         every 50 ms; on SIGUSR1 the main thread installs one more filter with TSYNC
 *         and prints "TSYNC 0" (or "TSYNC R" with seccomp's result R when its threads
 *         no longer share their filters).
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void say(const char *fmt, long n)
{
    char buf[64];
    int len = snprintf(buf, sizeof buf, fmt, n);
    write(1, buf, len);
}

static void strict(void)
{
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
        _exit(1);
    for (long n = 0;; n++) {
        say("%ld\n", n);
        for (volatile long i = 0; i < 20 * 1000 * 1000; i++)
            ;
    }
}

#define ALLOW(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
                  BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static struct sock_filter deny_most[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    ALLOW(SYS_read), ALLOW(SYS_write), ALLOW(SYS_nanosleep), ALLOW(SYS_clock_nanosleep),
    ALLOW(SYS_rt_sigreturn), ALLOW(SYS_restart_syscall), ALLOW(SYS_futex),
    ALLOW(SYS_seccomp), ALLOW(SYS_exit), ALLOW(SYS_exit_group),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
};

static struct sock_filter allow_all[] = {
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static long install(struct sock_filter *code, unsigned short len, unsigned flags)
{
    struct sock_fprog prog = {len, code};
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static volatile sig_atomic_t usr1;

static void on_usr1(int sig)
{
    (void)sig;
    usr1 = 1;
}

static volatile int thread_running;

static void *other(void *arg)
{
    (void)arg;
    for (long n = 0;; n++) {
        say("%ld thread\n", n);
        thread_running = 1; /* past the syscalls of its start, which the filter kills */
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "strict") == 0)
        strict();
    signal(SIGUSR1, on_usr1);
    pthread_t t;
    pthread_create(&t, NULL, other, NULL);
    while (!thread_running) /* however long the machine takes to run it */
        usleep(1000);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        install(deny_most, sizeof deny_most / sizeof deny_most[0], SECCOMP_FILTER_FLAG_TSYNC))
        _exit(1);
    for (long n = 0;; n++) {
        if (usr1) {
            usr1 = 0;
            say("TSYNC %ld\n", install(allow_all, 1, SECCOMP_FILTER_FLAG_TSYNC));
        }
        say("%ld main\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
