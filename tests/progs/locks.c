/* locks: a parent and a child holding every kind of file lock, in the folder argv[1].
 *
 * ranges: POSIX write lock on bytes 0-9 and read lock on 100-199 (the parent's);
 *         through a second open, OFD write lock on 300-399 and read lock from 500 to
 *         the end (the child shares that open file, so both hold them).
 * whole:  flock write lock, taken before the fork: parent and child share it.
 * child:  POSIX write lock on the whole file, the child's own.
 * lease:  read lease, broken with SIGUSR1 (F_SETSIG); on a break the parent prints
 *         "lease broken fd=N sig=S" and gives the lease up.
 * The parent prints "pids PARENT CHILD", the child "child locked", then the parent
 * counts every 50 ms.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t broken_fd = -1, broken_sig;

static void on_break(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    broken_sig = sig;
    broken_fd = si->si_fd;
}

static int open_in(const char *dir, const char *name, int flags)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, flags | O_CREAT, 0644);
    if (fd < 0) {
        perror(path);
        exit(1);
    }
    return fd;
}

static void lock(int fd, int cmd, short type, off_t start, off_t len)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl)) {
        perror("fcntl");
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    const char *dir = argv[1];
    int ranges = open_in(dir, "ranges", O_RDWR);
    if (ftruncate(ranges, 1000)) return 1;
    lock(ranges, F_SETLK, F_WRLCK, 0, 10);
    lock(ranges, F_SETLK, F_RDLCK, 100, 100);
    int ofd = open_in(dir, "ranges", O_RDWR);
    lock(ofd, F_OFD_SETLK, F_WRLCK, 300, 100);
    lock(ofd, F_OFD_SETLK, F_RDLCK, 500, 0);
    int whole = open_in(dir, "whole", O_RDWR);
    if (flock(whole, LOCK_EX)) return 1;
    int lease = open_in(dir, "lease", O_RDONLY);
    struct sigaction sa = {.sa_sigaction = on_break, .sa_flags = SA_SIGINFO | SA_RESTART};
    sigaction(SIGUSR1, &sa, NULL);
    if (fcntl(lease, F_SETSIG, SIGUSR1) || fcntl(lease, F_SETLEASE, F_RDLCK)) {
        perror("lease");
        return 1;
    }
    pid_t child = fork();
    if (child == 0) {
        int mine = open_in(dir, "child", O_RDWR);
        lock(mine, F_SETLK, F_WRLCK, 0, 0);
        printf("child locked\n");
        fflush(stdout);
        for (;;) pause();
    }
    printf("pids %d %d\n", getpid(), child);
    fflush(stdout);
    for (long n = 0;; n++) {
        if (broken_fd >= 0) {
            printf("lease broken fd=%d sig=%d\n", (int)broken_fd, (int)broken_sig);
            fcntl(lease, F_SETLEASE, F_UNLCK);
            broken_fd = -1;
        }
        printf("%ld\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
