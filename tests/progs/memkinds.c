/* memkinds: every byte of many kinds of mappings, checked on every tick.
 *
 * Usage: memkinds DIR   (DIR: a folder for a regular file, "DIR/file")
 *
 * Each region is a table of pages; each page's expected content is a seed (0: all
 * zeros), and a page of seed S holds 8-byte words S * K ^ (word index). Pages may be
 * written partly: then the first PART bytes hold the pattern and the rest zeros.
 * The regions:
 *   memfd private  memfd "mk" of 8 pages with data on pages 0,1,2,5 and holes
 *                  3,4,6,7; mapped MAP_PRIVATE; then pages 1,3 written through the
 *                  mapping, page 4 partly, page 2 and 6 read; then pages 5 and 7
 *                  written through the fd (the private mapping sees them: not copied)
 *   memfd shared   the same memfd, MAP_SHARED at page offset 2, 4 pages; page 3 of
 *                  it written through the mapping
 *   memfd private2 the same memfd again, MAP_PRIVATE at page offset 4, 4 pages;
 *                  its page 1 written (copy), page 0 only read
 *   memfd only     a second memfd "mk2" of 4 pages, mapped private and shared, its
 *                  fd closed; the private mapping's page 2 written, the shared
 *                  mapping's page 0 and 3
 *   file private   DIR/file of 6 pages mapped MAP_PRIVATE over 8 pages; page 1
 *                  written partly; then the file grows to 8 pages (page 7 written by
 *                  pwrite) and page 6 of the mapping is written (a copy of a page
 *                  that was beyond the end when mapped)
 *   mremap         anonymous, 4 pages filled, grown to 8 by mremap (moved), page 6
 *                  filled; and the memfd private mapping's copy moved by mremap
 *   split          anonymous, 6 pages filled, pages 2-3 made read-only, page 5
 *                  PROT_NONE (mprotect splits it in three)
 *   populate       MAP_POPULATE anonymous, 4 pages, page 1 written; MAP_POPULATE
 *                  private file mapping of DIR/file, page 0 written
 *   noreserve      MAP_NORESERVE anonymous, 64 pages, pages 0, 33, 63 written
 *   memfd tail     memfd "mt" of 10000 bytes mapped shared and private over 3
 *                  pages: the shared mapping fills the 3 pages (past the end of
 *                  the file in the last one), the private one sees them; the same
 *                  for a deleted file of 5000 bytes in /dev/shm, mapped shared
 *   stack          96 KiB of the main stack filled (below the first pages)
 * Prints "ready" once set up, then "N ok" every 50 ms, or "N BAD REGION page P
 * offset O" for the first wrong byte.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096
#define K 0x9E3779B97F4A7C15ull
#define PART 100

struct region {
    const char *name;
    unsigned char *addr;
    int npages;
    uint64_t seed[64];
    int part[64]; /* bytes of the pattern, then rest's; 0: the whole page */
    uint64_t rest[64];
};

static struct region regions[32];
static int nregions;

static struct region *region(const char *name, void *addr, int npages)
{
    if (addr == MAP_FAILED) {
        dprintf(2, "mmap %s failed\n", name);
        exit(3);
    }
    struct region *r = &regions[nregions++];
    r->name = name;
    r->addr = addr;
    r->npages = npages;
    return r;
}

static void pattern(unsigned char *page, uint64_t seed, int len)
{
    uint64_t w[PG / 8];
    for (int i = 0; i < PG / 8; i++)
        w[i] = seed ? (seed * K) ^ i : 0;
    memcpy(page, w, len ? len : PG);
}

static void expected(unsigned char *page, uint64_t seed, int part, uint64_t rest)
{
    pattern(page, rest, 0);
    pattern(page, seed, part);
}

/* Write page p of r through the mapping, and record it. */
static void put(struct region *r, int p, uint64_t seed, int part)
{
    pattern(r->addr + (size_t)p * PG, seed, part);
    if (part) r->rest[p] = r->seed[p];
    r->seed[p] = seed;
    r->part[p] = part;
}

static void expect(struct region *r, int p, uint64_t seed, int part)
{
    r->seed[p] = seed;
    r->part[p] = part;
}

static void pwrite_page(int fd, int p, uint64_t seed)
{
    unsigned char buf[PG];
    pattern(buf, seed, 0);
    if (pwrite(fd, buf, PG, (off_t)p * PG) != PG) exit(4);
}

static volatile unsigned char sink;

static int check(long n)
{
    unsigned char want[PG];
    for (int i = 0; i < nregions; i++) {
        struct region *r = &regions[i];
        for (int p = 0; p < r->npages; p++) {
            expected(want, r->seed[p], r->part[p], r->rest[p]);
            const unsigned char *have = r->addr + (size_t)p * PG;
            if (memcmp(have, want, PG)) {
                int o = 0;
                while (have[o] == want[o]) o++;
                printf("%ld BAD %s page %d offset %d\n", n, r->name, p, o);
                return 1;
            }
        }
    }
    return 0;
}

static void fill_stack(void)
{
    unsigned char deep[96 * 1024];
    struct region *r = region("stack", deep, sizeof deep / PG);
    for (int p = 0; p < r->npages; p++)
        put(r, p, 0x5000 + p, 0);
    for (long n = 0;; n++) {
        if (!check(n)) printf("%ld ok\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/file", argv[1]);

    /* memfd "mk": file pages 0,1,2,5 hold data, the rest are holes */
    int mfd = memfd_create("mk", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, 8 * PG)) return 5;
    int data[] = {0, 1, 2, 5};
    for (int i = 0; i < 4; i++) pwrite_page(mfd, data[i], 0x100 + data[i]);
    struct region *mp = region("memfd-private",
        mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0), 8);
    for (int i = 0; i < 4; i++) expect(mp, data[i], 0x100 + data[i], 0);
    put(mp, 1, 0x111, 0);            /* copies: 1, 3, 4 (partly, over a hole) */
    put(mp, 3, 0x113, 0);
    put(mp, 4, 0x114, PART);
    sink = mp->addr[2 * PG] + mp->addr[6 * PG];   /* read only */
    pwrite_page(mfd, 5, 0x205);      /* seen by the mapping: not copied */
    pwrite_page(mfd, 7, 0x207);
    expect(mp, 5, 0x205, 0);
    expect(mp, 7, 0x207, 0);

    struct region *ms = region("memfd-shared",   /* file pages 2..5 */
        mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 2 * PG), 4);
    expect(ms, 0, 0x102, 0);
    put(ms, 3, 0x305, 0);            /* file page 5: the private mapping sees it */
    expect(mp, 5, 0x305, 0);

    struct region *mp2 = region("memfd-private2",   /* file pages 4..7 */
        mmap(NULL, 4 * PG, PROT_READ, MAP_PRIVATE, mfd, 4 * PG), 4);
    if (mprotect(mp2->addr, 4 * PG, PROT_READ | PROT_WRITE)) return 6;
    sink = mp2->addr[0];
    expect(mp2, 1, 0x305, 0);
    expect(mp2, 3, 0x207, 0);
    put(mp2, 2, 0x402, PART);        /* a copy of file page 6, a hole */

    /* memfd "mk2", only mapped */
    int m2 = memfd_create("mk2", 0);
    if (m2 < 0 || ftruncate(m2, 4 * PG)) return 5;
    for (int p = 0; p < 4; p++) pwrite_page(m2, p, 0x600 + p);
    struct region *op = region("memfd-only-private",
        mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, m2, 0), 4);
    struct region *os_ = region("memfd-only-shared",
        mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, m2, 0), 4);
    close(m2);
    for (int p = 0; p < 4; p++) {
        expect(op, p, 0x600 + p, 0);
        expect(os_, p, 0x600 + p, 0);
    }
    put(op, 2, 0x702, 0);
    put(os_, 0, 0x800, 0);
    put(os_, 3, 0x803, 0);
    expect(op, 0, 0x800, 0);
    expect(op, 3, 0x803, 0);

    /* memfd "mt" of 10000 bytes: its mappings write past the end in the last page
     * (every mapping of the page shows those bytes); the same with a deleted file of
     * 5000 bytes in /dev/shm */
    int mt = memfd_create("mt", MFD_CLOEXEC);
    if (mt < 0 || ftruncate(mt, 10000)) return 5;
    struct region *ts = region("memfd-tail-shared",
        mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mt, 0), 3);
    struct region *tp = region("memfd-tail-private",
        mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mt, 0), 3);
    for (int p = 0; p < 3; p++) {
        put(ts, p, 0x1000 + p, 0);
        expect(tp, p, 0x1000 + p, 0);
    }
    put(tp, 0, 0x1100, PART);
    char shm[64];
    snprintf(shm, sizeof shm, "/dev/shm/memkinds-%d", getpid());
    int sfd = open(shm, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (sfd < 0 || unlink(shm) || ftruncate(sfd, 5000)) return 5;
    struct region *dt = region("deleted-tmpfs-tail",
        mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0), 2);
    close(sfd);
    put(dt, 0, 0x1200, 0);
    put(dt, 1, 0x1201, 0);

    /* file private, mapped beyond its end, then grown */
    int ffd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (ffd < 0) return 7;
    for (int p = 0; p < 6; p++) pwrite_page(ffd, p, 0x900 + p);
    struct region *fp = region("file-private",
        mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ffd, 0), 6);
    for (int p = 0; p < 6; p++) expect(fp, p, 0x900 + p, 0);
    put(fp, 1, 0xa01, PART);
    if (ftruncate(ffd, 8 * PG)) return 7;
    pwrite_page(ffd, 7, 0x907);
    fp->npages = 8;
    expect(fp, 7, 0x907, 0);
    put(fp, 6, 0xa06, 0);

    /* mremap: grown and moved (a page above it stops growth in place) */
    unsigned char *a = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) return 8;
    for (int p = 0; p < 4; p++) pattern(a + p * PG, 0xb00 + p, 0);
    if (mprotect(a + 4 * PG, PG, PROT_NONE)) return 8;
    struct region *mr = region("mremap", mremap(a, 4 * PG, 8 * PG, MREMAP_MAYMOVE), 8);
    for (int p = 0; p < 4; p++) expect(mr, p, 0xb00 + p, 0);
    put(mr, 6, 0xb06, 0);
    unsigned char *far = mmap(NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *moved = mremap(mp->addr, 8 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, far);
    if (moved == MAP_FAILED) return 8;
    mp->addr = moved;

    /* split by mprotect */
    struct region *sp = region("split",
        mmap(NULL, 6 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), 5);
    for (int p = 0; p < 6; p++) put(sp, p, 0xc00 + p, 0);
    if (mprotect(sp->addr + 2 * PG, 2 * PG, PROT_READ)) return 9;
    if (mprotect(sp->addr + 5 * PG, PG, PROT_NONE)) return 9;

    /* MAP_POPULATE */
    struct region *pa = region("populate-anon",
        mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0), 4);
    put(pa, 1, 0xd01, 0);
    struct region *pf = region("populate-file",
        mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_POPULATE, ffd, 0), 8);
    for (int p = 0; p < 6; p++) expect(pf, p, 0x900 + p, 0);
    expect(pf, 7, 0x907, 0);
    put(pf, 0, 0xd10, PART);
    close(ffd);

    /* MAP_NORESERVE */
    struct region *nr = region("noreserve",
        mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0), 64);
    put(nr, 0, 0xe00, 0);
    put(nr, 33, 0xe21, 0);
    put(nr, 63, 0xe3f, PART);

    if (check(-1)) return 10;
    printf("ready\n");
    fflush(stdout);
    fill_stack();
    return 0;
}
