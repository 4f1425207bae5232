/* nsstate: a container's init (PID 1 of its PID namespace) holding state whose restore
 * names processes by the PIDs they have inside: an unreaped zombie child in its group,
 * a blocked SIGCHLD and SIGUSR2 pending for the process and SIGUSR1 for its thread,
 * a POSIX timer signalling this thread (SIGEV_THREAD_ID) with SIGRTMIN, blocked, and
 * a pidfd on itself.
 *
 * It writes the zombie's PID into /data/zombie. Every 100 ms it prints a counter and appends it to /data/count. Once /data/check
 * exists it writes /data/report, one line, then goes on counting:
 *   "pid=P zombie=Z status=S pending=CHLD,USR1,USR2 timer=T pidfd=F"
 * P its PID (1), Z the zombie's PID inside, S its exit status once reaped, the pending
 * blocked signals it finds, and T "ok" if a SIGRTMIN of the timer arrives through
 * sigtimedwait with its value, F the PID its pidfd shows in its fdinfo (1).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The Pid: line of fd's fdinfo, or -1. */
static int pidfd_pid(int fd)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    int pid = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pid: %d", &pid) == 1) break;
    if (f) fclose(f);
    return pid;
}

static void report(pid_t zombie, int pidfd)
{
    sigset_t pending;
    sigpending(&pending);
    char sigs[64] = "";
    if (sigismember(&pending, SIGCHLD)) strcat(sigs, "CHLD,");
    if (sigismember(&pending, SIGUSR1)) strcat(sigs, "USR1,");
    if (sigismember(&pending, SIGUSR2)) strcat(sigs, "USR2,");
    if (sigs[0]) sigs[strlen(sigs) - 1] = 0;
    int status = -1;
    pid_t got = waitpid(zombie, &status, WNOHANG);
    sigset_t rt;
    sigemptyset(&rt);
    sigaddset(&rt, SIGRTMIN);
    siginfo_t si;
    struct timespec wait = {5, 0};
    int timer = sigtimedwait(&rt, &si, &wait) == SIGRTMIN
                && si.si_value.sival_int == 0x7157;
    FILE *f = fopen("/data/report.tmp", "w");
    if (!f) return;
    fprintf(f, "pid=%d zombie=%d status=%d pending=%s timer=%s pidfd=%d\n", getpid(),
            got == zombie ? zombie : -1, got == zombie ? WEXITSTATUS(status) : -1, sigs,
            timer ? "ok" : "none", pidfd_pid(pidfd));
    fclose(f);
    rename("/data/report.tmp", "/data/report");
}

int main(void)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGUSR2);
    sigaddset(&block, SIGRTMIN);
    sigprocmask(SIG_BLOCK, &block, NULL);

    pid_t zombie = fork();
    if (zombie == 0) _exit(7);
    siginfo_t si;
    waitid(P_PID, zombie, &si, WEXITED | WNOWAIT);  /* exited, left unreaped */
    FILE *z = fopen("/data/zombie", "w");
    if (z) {
        fprintf(z, "%d\n", zombie);
        fclose(z);
    }
    kill(getpid(), SIGUSR2);
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGUSR1);

    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN;
    ev.sigev_value.sival_int = 0x7157;
    ev._sigev_un._tid = syscall(SYS_gettid);
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &ev, &timer)) return 1;
    struct itimerspec every = {{0, 200000000}, {0, 200000000}};
    timer_settime(timer, 0, &every, NULL);

    int pidfd = syscall(SYS_pidfd_open, getpid(), 0);
    int checked = 0;
    for (long i = 1;; i++) {
        printf("%ld\n", i);
        fflush(stdout);
        int fd = open("/data/count", O_WRONLY | O_APPEND | O_CREAT, 0644);
        if (fd >= 0) {
            dprintf(fd, "%ld\n", i);
            close(fd);
        }
        if (!checked && access("/data/check", F_OK) == 0) {
            report(zombie, pidfd);
            checked = 1;
        }
        struct timespec tick = {0, 100000000};
        nanosleep(&tick, NULL);
    }
}
