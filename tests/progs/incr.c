/* incr: a large region of which only a small part keeps changing, for incremental dumps.
 *
 *   incr [-m MIB] [-f] [-c]
 *
 * The process maps MIB MiB (default 256) of private anonymous memory filled with a
 * pattern, and every 50 ms rewrites a small "hot" part of it (64 pages) with the
 * pattern of a new generation, then prints its tick number N on a line of its own.
 * It also has a 1 MiB MAP_SHARED|MAP_ANONYMOUS region (shared with the child) and
 * two 1 MiB "slots" at fixed addresses.
 *
 * SIGUSR1: check every byte of everything (and make the child do the same); prints
 *          "verify ok BYTES" or "verify BAD <what> at <offset>".
 * SIGUSR2: churn the mappings: slot A is unmapped, slot B moved (mremap) to A's
 *          address, a new mapping with a new pattern made at B's address, slot C
 *          mapped (new pattern) if it was not, else unmapped; parts of
 *          the large region are dropped (MADV_DONTNEED) and read again, so they are
 *          zero now (one of them is a transparent huge page where the kernel has
 *          them). Prints "churned K".
 * -c: churn all the time (25 times a tick, quietly), so that a pre-dump copying
 *     pages while the process runs finds mappings gone or moved.
 * -f: fork a child first, with a 32 MiB region of its own (its hot part changes
 *     too) and the shared region; it prints "child N" every tick, and "child verify
 *     ok BYTES" or "child verify BAD ..." when the parent passes SIGUSR1 on.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1ul << 20)
#define PAGE 4096ul
#define HOT_OFF (16 * MIB)
#define HOT_LEN (64 * PAGE)
#define Z1_OFF (100 * MIB + 3 * PAGE)
#define Z1_LEN (4 * PAGE)
#define Z2_OFF (128 * MIB)
#define Z2_LEN (2 * MIB)
#define SLOT (1 * MIB)
#define SHM (1 * MIB)

static volatile sig_atomic_t want_verify, want_churn;
static void on_usr1(int sig) { (void)sig; want_verify = 1; }
static void on_usr2(int sig) { (void)sig; want_churn = 1; }

static uint64_t pattern(uint64_t word, uint64_t seed)
{
    return (word * 0x9E3779B97F4A7C15ull) ^ (seed * 0xD1B54A32D192ED03ull) ^ (word >> 7);
}

static void fill(uint64_t *p, size_t bytes, uint64_t seed)
{
    for (size_t i = 0; i < bytes / 8; i++) p[i] = pattern(i, seed);
}

/* The offset of the first word in [from, bytes) that differs from fill()'s, or -1. */
static long check_from(const uint64_t *p, size_t from, size_t bytes, uint64_t seed)
{
    for (size_t i = from / 8; i < bytes / 8; i++)
        if (p[i] != pattern(i, seed)) return (long)(i * 8);
    return -1;
}

static long check(const uint64_t *p, size_t bytes, uint64_t seed)
{
    return check_from(p, 0, bytes, seed);
}

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
}

static void *map_anon(void *at, size_t len)
{
    void *p = mmap(at, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(1); }
    return p;
}

static char *big, *z2, *slot_a, *slot_b, *slot_c;
static uint64_t seed_a = 11, seed_b = 12, seed_c, next_seed = 13;
static int c_mapped;
static int zeroed;
static long churns;

/* Slot A unmapped, slot B moved onto its address, a new slot B; slot C there one
 * time, gone the next; zeroed parts. */
static void churn(void)
{
    if (c_mapped) {
        munmap(slot_c, SLOT);
    } else {
        map_anon(slot_c, SLOT);
        seed_c = next_seed++;
        fill((uint64_t *)slot_c, SLOT, seed_c);
    }
    c_mapped = !c_mapped;
    munmap(slot_a, SLOT);
    if (mremap(slot_b, SLOT, SLOT, MREMAP_MAYMOVE | MREMAP_FIXED, slot_a) == MAP_FAILED) {
        perror("mremap");
        exit(1);
    }
    map_anon(slot_b, SLOT);
    fill((uint64_t *)slot_b, SLOT, next_seed);
    seed_a = seed_b;
    seed_b = next_seed++;
    madvise(big + Z1_OFF, Z1_LEN, MADV_DONTNEED);
    madvise(z2, Z2_LEN, MADV_DONTNEED);
    volatile char sink = 0;
    for (size_t off = 0; off < Z1_LEN; off += PAGE) sink += big[Z1_OFF + off];
    for (size_t off = 0; off < Z2_LEN; off += PAGE) sink += z2[off];
    (void)sink;
    zeroed = 1;
    churns++;
}

static void child(uint64_t *shm)
{
    size_t size = 32 * MIB, hot = 16 * PAGE;
    uint64_t *mem = map_anon(NULL, size);
    fill(mem, size, 3);
    long gen = 0;
    for (long n = 0;; n++) {
        if (want_verify) {
            want_verify = 0;
            long bad;
            if ((bad = check(mem, hot, 2000 + gen)) >= 0)
                dprintf(1, "child verify BAD hot at %ld\n", bad);
            else if ((bad = check_from(mem, hot, size, 3)) >= 0)
                dprintf(1, "child verify BAD region at %ld\n", bad);
            else if ((bad = check_from(shm, 8, SHM, 7)) >= 0)
                dprintf(1, "child verify BAD shared at %ld\n", bad);
            else
                dprintf(1, "child verify ok %zu\n", size + SHM);
        }
        fill(mem, hot, 2000 + n);
        gen = n;
        dprintf(1, "child %ld\n", n);
        tick();
    }
}

int main(int argc, char **argv)
{
    size_t mib = 256;
    int with_child = 0, always_churn = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) mib = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-f")) with_child = 1;
        else if (!strcmp(argv[i], "-c")) always_churn = 1;
    }
    if (mib < 160) { dprintf(2, "-m: at least 160\n"); return 2; }
    handlers();
    uint64_t *shm = mmap(NULL, SHM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED) { perror("mmap"); return 1; }
    fill(shm, SHM, 7);
    pid_t kid = 0;
    if (with_child) {
        kid = fork();
        if (kid < 0) { perror("fork"); return 1; }
        if (kid == 0) child(shm);
    }

    size_t size = mib * MIB;
    big = map_anon(NULL, size);
    /* A 2 MiB-aligned part that may be one transparent huge page. */
    z2 = (char *)(((uintptr_t)big + Z2_OFF + 2 * MIB - 1) & ~(2 * MIB - 1));
    madvise(z2, Z2_LEN, MADV_HUGEPAGE);
    fill((uint64_t *)big, size, 1);
    /* The slots, with holes between them so that they never merge. */
    char *slots = map_anon(NULL, 5 * SLOT);
    munmap(slots + SLOT, SLOT);
    munmap(slots + 3 * SLOT, 2 * SLOT);
    slot_a = slots;
    slot_b = slots + 2 * SLOT;
    slot_c = slots + 4 * SLOT;
    fill((uint64_t *)slot_a, SLOT, seed_a);
    fill((uint64_t *)slot_b, SLOT, seed_b);
    long gen = 0;
    dprintf(1, "ready\n");

    for (long n = 0;; n++) {
        if (want_churn) {
            want_churn = 0;
            churn();
            dprintf(1, "churned %ld\n", churns);
        }
        for (int k = 0; always_churn && k < 25; k++) {
            struct timespec ts = {0, 2 * 1000 * 1000};
            churn();
            nanosleep(&ts, NULL);
        }
        if (want_verify) {
            want_verify = 0;
            if (kid) kill(kid, SIGUSR1);
            long bad = -1;
            const char *what = "region";
            size_t z2_off = (size_t)(z2 - big);
            /* Word by word, with the hot part and the zeroed parts as they should be. */
            for (size_t i = 0; i < size / 8 && bad < 0; i++) {
                size_t off = i * 8;
                uint64_t want = pattern(i, 1);
                if (off >= HOT_OFF && off < HOT_OFF + HOT_LEN)
                    want = pattern((off - HOT_OFF) / 8, 1000 + gen);
                else if (zeroed && ((off >= Z1_OFF && off < Z1_OFF + Z1_LEN) ||
                                    (off >= z2_off && off < z2_off + Z2_LEN)))
                    want = 0;
                if (((uint64_t *)big)[i] != want) bad = (long)off;
            }
            if (bad < 0 && (bad = check((uint64_t *)slot_a, SLOT, seed_a)) >= 0) what = "slot A";
            if (bad < 0 && (bad = check((uint64_t *)slot_b, SLOT, seed_b)) >= 0) what = "slot B";
            if (bad < 0 && c_mapped && (bad = check((uint64_t *)slot_c, SLOT, seed_c)) >= 0)
                what = "slot C";
            if (bad < 0 && (bad = check_from(shm, 8, SHM, 7)) >= 0) what = "shared";
            if (bad >= 0) dprintf(1, "verify BAD %s at %ld\n", what, bad);
            else dprintf(1, "verify ok %zu\n", size + 2 * SLOT + SHM);
        }
        fill((uint64_t *)(big + HOT_OFF), HOT_LEN, 1000 + n);
        gen = n;
        shm[0] = (uint64_t)n;
        dprintf(1, "%ld\n", n);
        tick();
    }
}
