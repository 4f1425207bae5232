/* sharing: children that share their parent's fd table (CLONE_FILES) or its fs
 * struct (CLONE_FS: cwd, root, umask), as clone() makes them.
 *
 * The FILES child has two children of its own: one sharing the table too, one with a
 * copy of it (a plain fork).
 *
 * argv[1]: a folder to move to. The parent prints "pids PARENT FILES FS SHARING COPY",
 * then every
 * 50 ms "N fd9=F cwd=PATH umask=MASK": whether its fd 9 exists, its cwd and umask.
 * On SIGUSR1 the FILES child opens /dev/null as fd 9 (in the shared table) and the
 * FS child moves to argv[1] and sets umask 027: the parent sees both.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int sig) { (void)sig; go = 1; }

static pid_t clone_with(unsigned long flags)
{
    return (pid_t)syscall(SYS_clone, flags | SIGCHLD, NULL, NULL, NULL, 0);
}

static void wait_go(void)
{
    sigset_t none;
    sigemptyset(&none);
    while (!go) sigsuspend(&none);
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    sigset_t usr;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr, NULL);
    signal(SIGUSR1, on_usr1);
    umask(022);
    int kids[2] = {-1, -1};
    if (pipe(kids)) return 1;
    pid_t files = clone_with(CLONE_FILES);
    if (files == 0) {
        pid_t kid[2] = {clone_with(CLONE_FILES), 0};
        if (kid[0] == 0)
            for (;;) pause();
        kid[1] = fork();
        if (kid[1] == 0)
            for (;;) pause();
        if (write(kids[1], kid, sizeof kid) != sizeof kid) return 1;
        wait_go();
        int fd = open("/dev/null", O_RDONLY);
        if (fd < 0 || dup2(fd, 9) != 9) return 1;
        close(fd);
        for (;;) pause();
    }
    pid_t fs = clone_with(CLONE_FS);
    if (fs == 0) {
        wait_go();
        if (chdir(argv[1])) return 1;
        umask(027);
        for (;;) pause();
    }
    sigprocmask(SIG_UNBLOCK, &usr, NULL);
    signal(SIGUSR1, SIG_IGN);
    pid_t kid[2];
    if (read(kids[0], kid, sizeof kid) != sizeof kid) return 1;
    close(kids[0]);
    close(kids[1]);
    printf("pids %d %d %d %d %d\n", getpid(), files, fs, kid[0], kid[1]);
    fflush(stdout);
    for (long n = 0;; n++) {
        char cwd[4096];
        mode_t mask = umask(0);
        umask(mask);
        printf("%ld fd9=%d cwd=%s umask=%03o\n", n, fcntl(9, F_GETFD) != -1,
               getcwd(cwd, sizeof cwd) ? cwd : "?", (unsigned)mask);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
