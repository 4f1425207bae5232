/* lazyheap [MIB [KIDS [THREADS]]]: a counter holding a large heap that checks its own memory, for lazy
 * restores (pages arriving on first touch while it runs).
 *
 * HEAP (MIB MiB, malloc: a private anonymous mapping), 256 small malloc blocks (the
 * brk heap), MOVING and DROPPED (8 MiB mappings each) and SHARED (1 MiB, shared
 * anonymous memory) are filled with patterns.
 * Prints "ready", then "N ok" (or "N BAD what") every 20 ms, each tick checking one
 * 4 MiB slice of HEAP in turn, every small block and SHARED.
 * SIGUSR1: every byte of HEAP, MOVING and the blocks checked: "verify ok BYTES" or
 *          "verify BAD at WHERE".
 * With KIDS, it first forks KIDS children, each of them the same counter with a heap
 * of its own: every line then starts with its role ("P ", "K0 ", "K1 ", ...) and the
 * parent prints "pids P K0 K1 ..." first.
 * With THREADS, that many threads check the slices of HEAP too, one every 5 ms each,
 * a wrong byte making the next tick "N BAD thread at OFFSET".
 * SIGHUP: forks a child that checks every byte of HEAP and MOVING as SIGUSR1 does,
 *         prints "child verify ok BYTES" (or "child verify BAD ...") and exits; the
 *         parent reaps it and prints "forked".
 * SIGUSR2: MOVING moved elsewhere (mremap), DROPPED unmapped, the first MiB of HEAP
 *          dropped (MADV_DONTNEED: zeros from then on), touching none of them first;
 *          prints "moved".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLICE (4UL << 20)
#define SIDE (8UL << 20)
#define BLOCKS 256

static uint64_t size = 64UL << 20;
static uint64_t *heap, *moving, *dropped, *shared;
static uint64_t *blocks[BLOCKS];
static uint64_t zfrom, zto; /* the part of HEAP dropped (page-aligned), zeros */
static volatile sig_atomic_t want_verify, want_move, want_fork;
static char role[16];
static volatile long thread_bad = -1;

static void on_usr1(int sig) { (void)sig; want_verify = 1; }
static void on_usr2(int sig) { (void)sig; want_move = 1; }
static void on_hup(int sig) { (void)sig; want_fork = 1; }

static uint64_t pattern(uint64_t off, uint64_t seed)
{
    return (off * 0x9E3779B97F4A7C15ull) ^ (off >> 13) ^ (seed * 0xA5A5A5A5ull);
}

static void fill(uint64_t *p, uint64_t bytes, uint64_t seed)
{
    for (uint64_t i = 0; i < bytes / 8; i++) p[i] = pattern(i * 8, seed);
}

/* offset of the first wrong byte in [from, to) of p, or -1; [z0, z1) holds zeros */
static long check(const uint64_t *p, uint64_t from, uint64_t to, uint64_t seed, uint64_t z0,
                  uint64_t z1)
{
    for (uint64_t off = from; off < to; off += 8) {
        uint64_t want = off >= z0 && off < z1 ? 0 : pattern(off, seed);
        if (p[off / 8] != want) return (long)off;
    }
    return -1;
}

static long check_blocks(void)
{
    for (int b = 0; b < BLOCKS; b++) {
        long bad = check(blocks[b], 0, 1024, 100 + b, 0, 0);
        if (bad >= 0) return b;
    }
    return -1;
}

static void *checker(void *arg)
{
    uint64_t slices = size / SLICE;
    for (uint64_t k = (uintptr_t)arg;; k++) {
        uint64_t from = (k % slices) * SLICE;
        long bad = check(heap, from, from + SLICE, 1, zfrom, zto);
        if (bad >= 0) thread_bad = bad;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 1) size = strtoul(argv[1], NULL, 10) << 20;
    int kids = argc > 2 ? atoi(argv[2]) : 0;
    if (kids) {
        char line[256];
        int at = snprintf(line, sizeof line, "pids %d", getpid());
        for (int k = 0; k < kids; k++) {
            pid_t pid = fork();
            if (pid == 0) { snprintf(role, sizeof role, "K%d ", k); break; }
            at += snprintf(line + at, sizeof line - at, " %d", pid);
        }
        if (!role[0]) {
            strcpy(role, "P ");
            dprintf(1, "%s\n", line);
        }
    }
    heap = malloc(size);
    moving = mmap(NULL, SIDE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    dropped = mmap(NULL, SIDE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    shared = mmap(NULL, 1UL << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (!heap || moving == MAP_FAILED || dropped == MAP_FAILED || shared == MAP_FAILED) {
        perror("alloc");
        return 1;
    }
    fill(shared, 1UL << 20, 4);
    fill(heap, size, 1);
    fill(moving, SIDE, 2);
    fill(dropped, SIDE, 3);
    for (int b = 0; b < BLOCKS; b++) {
        blocks[b] = malloc(1024);
        fill(blocks[b], 1024, 100 + b);
    }
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    for (int t = 0; t < threads; t++) {
        pthread_t th;
        pthread_create(&th, NULL, checker, (void *)(uintptr_t)(t * 3));
    }
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    signal(SIGHUP, on_hup);
    dprintf(1, "%sready\n", role);
    uint64_t slices = size / SLICE;
    for (long n = 0;; n++) {
        if (want_move) {
            want_move = 0;
            void *to = mmap(NULL, SIDE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            moving = mremap(moving, SIDE, SIDE, MREMAP_MAYMOVE | MREMAP_FIXED, to);
            munmap(dropped, SIDE);
            uint64_t start = ((uintptr_t)heap + 4095) & ~4095UL;
            if (madvise((void *)start, 1UL << 20, MADV_DONTNEED) == 0) {
                zfrom = start - (uintptr_t)heap;
                zto = zfrom + (1UL << 20);
            }
            dprintf(1, "%smoved%s\n", role, moving == MAP_FAILED || !zto ? " FAILED" : "");
        }
        if (want_fork) {
            want_fork = 0;
            pid_t kid = fork();
            if (kid == 0) {
                long bad = check(heap, 0, size, 1, zfrom, zto);
                if (bad < 0) bad = check(moving, 0, SIDE, 2, 0, 0);
                if (bad >= 0) dprintf(1, "%schild verify BAD at %ld\n", role, bad);
                else dprintf(1, "%schild verify ok %lu\n", role, (unsigned long)size);
                _exit(0);
            }
            waitpid(kid, NULL, 0);
            dprintf(1, "%sforked\n", role);
        }
        if (want_verify) {
            want_verify = 0;
            long bad = check(heap, 0, size, 1, zfrom, zto);
            if (bad >= 0) dprintf(1, "%sverify BAD at heap+%ld\n", role, bad);
            else if ((bad = check(moving, 0, SIDE, 2, 0, 0)) >= 0)
                dprintf(1, "%sverify BAD at moving+%ld\n", role, bad);
            else if ((bad = check_blocks()) >= 0) dprintf(1, "%sverify BAD at block %ld\n", role, bad);
            else dprintf(1, "%sverify ok %lu\n", role, (unsigned long)size);
        }
        uint64_t from = (n % slices) * SLICE;
        long bad = check(heap, from, from + SLICE, 1, zfrom, zto);
        long badb = check_blocks();
        long bads = check(shared, 0, 1UL << 20, 4, 0, 0);
        if (bad >= 0) dprintf(1, "%s%ld BAD heap+%ld\n", role, n, bad);
        else if (thread_bad >= 0) dprintf(1, "%s%ld BAD thread at %ld\n", role, n, thread_bad);
        else if (badb >= 0) dprintf(1, "%s%ld BAD block %ld\n", role, n, badb);
        else if (bads >= 0) dprintf(1, "%s%ld BAD shared+%ld\n", role, n, bads);
        else dprintf(1, "%s%ld ok\n", role, n);
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
