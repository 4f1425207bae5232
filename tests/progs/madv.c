/* madv: anonymous mappings, each with one madvise flag or lock, for the test to read
 * in /proc/PID/smaps (VmFlags, Rss, Locked) before and after a restore.
 *
 * "sealed" is sealed with mseal (Linux 6.10+).
 * Each mapping is 16 pages, pages 0 and 5 written (the rest never touched); prints
 * "map NAME ADDR" for each, "ready", then "N ok" every 50 ms while every mapping
 * still holds its bytes ("N BAD NAME" else). A NAME whose madvise this kernel
 * refuses is printed as "skip NAME ERRNO".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif

#define PG 4096
#define NPG 16

struct map {
    const char *name;
    int advice[2]; /* applied in order; -1: none */
    int lock;      /* 1: mlock, 2: mlock2(MLOCK_ONFAULT), 3: mseal */
    unsigned char *addr;
};

static struct map maps[] = {
    {"plain", {-1, -1}, 0, NULL},
    {"dontfork", {MADV_DONTFORK, -1}, 0, NULL},
    {"dofork", {MADV_DONTFORK, MADV_DOFORK}, 0, NULL},
    {"dontdump", {MADV_DONTDUMP, -1}, 0, NULL},
    {"dodump", {MADV_DONTDUMP, MADV_DODUMP}, 0, NULL},
    {"hugepage", {MADV_HUGEPAGE, -1}, 0, NULL},
    {"nohugepage", {MADV_NOHUGEPAGE, -1}, 0, NULL},
    {"mergeable", {MADV_MERGEABLE, -1}, 0, NULL},
    {"wipeonfork", {MADV_WIPEONFORK, -1}, 0, NULL},
    {"keeponfork", {MADV_WIPEONFORK, MADV_KEEPONFORK}, 0, NULL},
    {"locked", {-1, -1}, 1, NULL},
    {"onfault", {-1, -1}, 2, NULL},
    {"sealed", {-1, -1}, 3, NULL},
};
#define NMAPS (sizeof maps / sizeof maps[0])

static unsigned char byte_of(size_t m, int page)
{
    return (unsigned char)(m * 16 + page + 1);
}

int main(void)
{
    for (size_t m = 0; m < NMAPS; m++) {
        struct map *mp = &maps[m];
        /* a PROT_NONE page between mappings keeps them from merging */
        unsigned char *a = mmap(NULL, (NPG + 1) * PG, PROT_NONE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED || mprotect(a, NPG * PG, PROT_READ | PROT_WRITE)) return 2;
        mp->addr = a;
        int skipped = 0;
        for (int i = 0; i < 2 && mp->advice[i] >= 0; i++) {
            if (madvise(a, NPG * PG, mp->advice[i])) {
                printf("skip %s %d\n", mp->name, errno);
                skipped = 1;
                break;
            }
        }
        if (mp->lock == 1 && mlock(a, NPG * PG)) return 3;
        if (mp->lock == 2 && syscall(SYS_mlock2, a, NPG * PG, MLOCK_ONFAULT)) return 4;
        memset(a, byte_of(m, 0), PG);
        memset(a + 5 * PG, byte_of(m, 5), PG);
        if (mp->lock == 3 && syscall(462 /* mseal */, a, NPG * PG, 0)) {
            printf("skip %s %d\n", mp->name, errno);
            skipped = 1;
        }
        if (!skipped) printf("map %s %lx\n", mp->name, (unsigned long)a);
    }
    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        const char *bad = NULL;
        for (size_t m = 0; m < NMAPS && !bad; m++) {
            for (int i = 0; i < PG; i++) {
                if (maps[m].addr[i] != byte_of(m, 0) ||
                    maps[m].addr[5 * PG + i] != byte_of(m, 5)) {
                    bad = maps[m].name;
                    break;
                }
            }
        }
        if (bad) printf("%ld BAD %s\n", n, bad);
        else printf("%ld ok\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
