/* ghost_memfd: shared memory between a parent P and its child C through a memfd.
 *
 * P creates memfd "ckpt-shm" (MFD_CLOEXEC | MFD_ALLOW_SEALING) of 3 pages, writes
 * "hello memfd" at page 2 with write(), maps pages 0-1 MAP_SHARED read-write,
 * seals it with F_SEAL_SHRINK | F_SEAL_GROW, and creates a second memfd "plain"
 * (no sealing allowed) holding "plain", and a third one, "only", mapped
 * MAP_SHARED whose fd is closed (only the mappings hold it). Then it forks; both keep the memfd fd
 * (one description). C also opens the memfd again read-only through
 * /proc/self/fd (a second description of the same object).
 *
 * Every 50 ms C stores its tick in page 0 of the mapping and in "only", and
 * checks, through its read-only description, that the file sees it: "C N ok".
 * P reads C's tick from the mapping (X) and from "only" (Y), and checks the file (pread), page 2, both memfds' seals,
 * and that growing the file is refused (EPERM): "P N c=X o=Y ok", else
 * "P N c=X o=Y BAD what". First line: "pids P C FD RO" (FD the memfd fd, RO C's read-only fd).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096
#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(void)
{
    int fd = memfd_create("ckpt-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    int plain = memfd_create("plain", 0);
    int only = memfd_create("only", 0);
    if (fd < 0 || plain < 0 || only < 0) return 2;
    if (ftruncate(only, PG)) return 3;
    volatile long *onl = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, only, 0);
    if (onl == MAP_FAILED) return 5;
    close(only);
    onl[0] = -1;
    if (ftruncate(fd, 3 * PG)) return 3;
    if (pwrite(fd, "hello memfd", 11, 2 * PG) != 11) return 4;
    if (write(plain, "plain", 5) != 5) return 4;
    volatile long *shm = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (shm == MAP_FAILED) return 5;
    if (fcntl(fd, F_ADD_SEALS, SEALS)) return 6;
    shm[0] = -1;
    pid_t c = fork();
    if (c < 0) return 7;
    if (c == 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        int ro = open(path, O_RDONLY);
        if (ro < 0) return 8;
        dprintf(1, "pids %d %d %d %d\n", getppid(), getpid(), fd, ro);
        for (long n = 0;; n++) {
            shm[0] = n;
            onl[0] = n;
            long seen = -2;
            int ok = pread(ro, &seen, sizeof seen, 0) == sizeof seen && seen == n;
            dprintf(1, "C %ld %s\n", n, ok ? "ok" : "BAD");
            tick();
        }
    }
    for (long n = 0;; n++) {
        long y = onl[0], x = shm[0], seen = -2;
        const char *bad = NULL;
        char hello[12] = {0}, pl[6] = {0};
        if (pread(fd, &seen, sizeof seen, 0) != sizeof seen || (seen != x && seen != shm[0]))
            bad = "pread";
        else if (pread(fd, hello, 11, 2 * PG) != 11 || strcmp(hello, "hello memfd"))
            bad = "content";
        else if (pread(plain, pl, 5, 0) != 5 || strcmp(pl, "plain"))
            bad = "plain";
        else if (fcntl(fd, F_GET_SEALS) != SEALS)
            bad = "seals";
        else if (fcntl(plain, F_GET_SEALS) != F_SEAL_SEAL)
            bad = "plain-seals";
        else if (ftruncate(fd, 4 * PG) == 0 || errno != EPERM)
            bad = "grow";
        if (bad) dprintf(1, "P %ld c=%ld o=%ld BAD %s\n", n, x, y, bad);
        else dprintf(1, "P %ld c=%ld o=%ld ok\n", n, x, y);
        tick();
    }
}
