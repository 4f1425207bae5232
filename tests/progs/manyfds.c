/* manyfds N MODE: hold N fds, then print 0, 1, 2, ... every 50 ms.
 *
 * It first raises its soft RLIMIT_NOFILE to the hard limit. MODE:
 *   distinct  N opens of its own executable, fd 3 + i at offset i
 *   shared    one open, at offset 7, dup'ed to fds 3 .. N + 2 (one description)
 *   sparse    like distinct, at fds 3 + 7 * i (holes between them)
 * It prints "ready N" once they are open. On SIGUSR1 it checks every fd (the same
 * file, each at its offset: every fd is at its number, on its own description or the
 * shared one) and prints "fds ok N" or "fds BAD fd F ...".
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t want_check;
static void on_usr1(int sig) { (void)sig; want_check = 1; }

static long n;
static int mode;  /* 0 distinct, 1 shared, 2 sparse */
static struct stat exe;

static int fd_of(long i) { return mode == 2 ? 3 + 7 * (int)i : 3 + (int)i; }
static off_t offset_of(long i) { return mode == 1 ? 7 : (off_t)i; }

static void check(void)
{
    for (long i = 0; i < n; i++) {
        struct stat st;
        int fd = fd_of(i);
        if (fstat(fd, &st) != 0 || st.st_ino != exe.st_ino || st.st_dev != exe.st_dev) {
            dprintf(1, "fds BAD fd %d is not the file\n", fd);
            return;
        }
        off_t at = lseek(fd, 0, SEEK_CUR);
        if (at != offset_of(i)) {
            dprintf(1, "fds BAD fd %d at offset %ld, not %ld\n", fd, (long)at,
                    (long)offset_of(i));
            return;
        }
    }
    dprintf(1, "fds ok %ld\n", n);
}

int main(int argc, char **argv)
{
    if (argc < 3) return 2;
    n = atol(argv[1]);
    mode = !strcmp(argv[2], "shared") ? 1 : !strcmp(argv[2], "sparse") ? 2 : 0;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl)) { perror("setrlimit"); return 1; }
    int probe = open("/proc/self/exe", O_RDONLY);
    if (probe < 0 || fstat(probe, &exe)) { perror("open"); return 1; }
    close(probe);
    int shared_fd = -1;
    for (long i = 0; i < n; i++) {
        int fd;
        if (mode == 1 && i > 0) {
            fd = dup(shared_fd);
        } else {
            fd = open("/proc/self/exe", O_RDONLY);
            if (fd >= 0) lseek(fd, offset_of(i), SEEK_SET);
        }
        if (fd < 0) { perror("open"); return 1; }
        if (fd != fd_of(i)) {
            if (dup2(fd, fd_of(i)) < 0) { perror("dup2"); return 1; }
            close(fd);
            fd = fd_of(i);
        }
        if (i == 0) shared_fd = fd;
    }
    signal(SIGUSR1, on_usr1);
    dprintf(1, "ready %ld\n", n);
    struct timespec ts = {0, 50 * 1000 * 1000};
    for (long k = 0;; k++) {
        if (want_check) {
            want_check = 0;
            check();
        }
        dprintf(1, "%ld\n", k);
        nanosleep(&ts, NULL);
    }
}
