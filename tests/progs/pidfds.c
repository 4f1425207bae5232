/* pidfds: a parent holding pidfds on its children, as a process manager does.
 *
 * fd 5: pidfd_open of a child that runs (and its copy at fd 7, one file);
 * fd 6: a pidfd from clone3(CLONE_PIDFD) of a child that has exited, not reaped
 * (a zombie: its pidfd is readable).
 * The parent prints "pids PARENT RUNNING ZOMBIE", then every 50 ms "N running=R
 * zombie=Z": whether poll finds each pidfd readable (its process ended).
 * On SIGUSR1 it kills the running child through fd 7 (pidfd_send_signal), reaps
 * both children through their pidfds (waitid P_PIDFD) and prints
 * "reaped RUNNING signal=S ZOMBIE status=E".
 */
#define _GNU_SOURCE
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t reap;
static void on_usr1(int sig) { (void)sig; reap = 1; }

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

int main(void)
{
    signal(SIGUSR1, on_usr1);
    pid_t running = fork();
    if (running == 0)
        for (;;) pause();
    int pfd = (int)syscall(SYS_pidfd_open, running, 0);
    if (pfd < 0 || dup2(pfd, 5) != 5 || dup2(5, 7) != 7) return 1;
    close(pfd);
    int zfd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD;
    args.pidfd = (unsigned long)&zfd;
    args.exit_signal = SIGCHLD;
    pid_t zombie = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (zombie == 0) _exit(7);
    if (zombie < 0 || dup2(zfd, 6) != 6) return 1;
    close(zfd);
    while (!readable(6)) usleep(1000);
    printf("pids %d %d %d\n", getpid(), running, zombie);
    fflush(stdout);
    for (long n = 0;; n++) {
        if (reap) {
            siginfo_t a, b;
            if (syscall(SYS_pidfd_send_signal, 7, SIGTERM, NULL, 0)) return 2;
            if (waitid(P_PIDFD, 5, &a, WEXITED) || waitid(P_PIDFD, 6, &b, WEXITED)) return 3;
            printf("reaped %d signal=%d %d status=%d\n", a.si_pid, a.si_status, b.si_pid,
                   b.si_status);
            fflush(stdout);
            reap = 0;
        }
        printf("%ld running=%d zombie=%d\n", n, readable(5), readable(6));
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
