/* cowtree: a parent that fills 64 MiB and forks 3 workers sharing it copy-on-write.
 *
 *   P (root) fills BUF (64 MiB, private anonymous) with its pattern, then forks
 *   ├ W0, W1, W2: each writes its own pattern over OWN pages of its own (at
 *   │             OWN_BASE + i * OWN), and leaves the rest shared with P.
 *
 * LATE (64 pages) has its first page written before the forks; P writes pages 1 to 31
 * after them, which the workers never had (they read zeros there). FMAP is a private
 * mapping of the program's own file, whose first 8 bytes P wrote before the forks.
 *
 * Before the loop P prints "pids P W0 W1 W2", "buf ADDR PAGES OWN_BASE OWN", "late ADDR"
 * and "fmap ADDR".
 * Every process prints "ROLE N" (ROLE = P, W0, W1, W2) every 50 ms.
 * SIGUSR1: the process checks every page of BUF, LATE and FMAP and prints
 *          "ROLE check ok" or "ROLE check BAD ...".
 * SIGUSR2: the process writes its pattern over page DIRTY (P with a new pattern of
 *          its own) and prints "ROLE wrote"; its checks expect that from then on.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SIZE (64UL << 20)
#define PAGE 4096UL
#define PAGES (SIZE / PAGE)
#define OWN_BASE 100UL
#define OWN 16UL
#define DIRTY (PAGES - 50)
#define WORKERS 3
#define LATE_PAGES 64
#define LATE_WRITTEN 32
#define MAGIC 0x434f57cafe0042ULL

static volatile sig_atomic_t want_check, want_write;
static uint64_t *buf, *late;
static unsigned char *fmap;
static int exe_fd;
static long role;             /* -1 for P, else the worker's index */
static int dirty_written;

static void on_usr1(int sig) { (void)sig; want_check = 1; }
static void on_usr2(int sig) { (void)sig; want_write = 1; }

/* The 64-bit word W of page K in the pattern of SEED. */
static uint64_t word(uint64_t seed, uint64_t k, uint64_t w)
{
    return (seed << 48) ^ (k << 16) ^ w;
}

static void fill(uint64_t seed, uint64_t k)
{
    uint64_t *p = buf + k * (PAGE / 8);
    for (uint64_t w = 0; w < PAGE / 8; w++) p[w] = word(seed, k, w);
}

static uint64_t expected_seed(uint64_t k)
{
    if (role >= 0 && k >= OWN_BASE + role * OWN && k < OWN_BASE + (role + 1) * OWN)
        return 2 + role;
    if (k == DIRTY && dirty_written) return role >= 0 ? 2 + role : 9;
    return 1;
}

static const char *name(void)
{
    static char s[24];
    if (role < 0) return "P";
    snprintf(s, sizeof s, "W%ld", role);
    return s;
}

/* LATE and FMAP: 0 when right, else prints why. */
static int check_others(void)
{
    for (uint64_t k = 0; k < LATE_PAGES; k++) {
        int parents = k > 0 && k < LATE_WRITTEN && role < 0;
        const uint64_t *p = late + k * (PAGE / 8);
        for (uint64_t w = 0; w < PAGE / 8; w++) {
            uint64_t want = k == 0 ? word(1, k, w) : parents ? word(9, k, w) : 0;
            if (p[w] != want) {
                dprintf(1, "%s check BAD late page %lu\n", name(), (unsigned long)k);
                return 1;
            }
        }
    }
    unsigned char file[PAGE];
    if (pread(exe_fd, file, PAGE, PAGE) != (ssize_t)PAGE
        || *(uint64_t *)fmap != MAGIC || memcmp(fmap + PAGE, file, PAGE) != 0) {
        dprintf(1, "%s check BAD fmap\n", name());
        return 1;
    }
    return 0;
}

static void check(void)
{
    if (check_others()) return;
    for (uint64_t k = 0; k < PAGES; k++) {
        uint64_t seed = expected_seed(k);
        const uint64_t *p = buf + k * (PAGE / 8);
        for (uint64_t w = 0; w < PAGE / 8; w++) {
            if (p[w] != word(seed, k, w)) {
                dprintf(1, "%s check BAD page %lu\n", name(), (unsigned long)k);
                return;
            }
        }
    }
    dprintf(1, "%s check ok\n", name());
}

static void loop(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    for (long n = 0;; n++) {
        if (want_check) {
            want_check = 0;
            check();
        }
        if (want_write) {
            want_write = 0;
            dirty_written = 1;
            fill(role >= 0 ? 2 + role : 9, DIRTY);
            dprintf(1, "%s wrote\n", name());
        }
        dprintf(1, "%s %ld\n", name(), n);
        nanosleep(&ts, NULL);
    }
}

int main(void)
{
    buf = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    late = mmap(NULL, LATE_PAGES * PAGE, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    fmap = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, exe_fd, 0);
    if (buf == MAP_FAILED || late == MAP_FAILED || fmap == MAP_FAILED) return 1;
    role = -1;
    for (uint64_t k = 0; k < PAGES; k++) fill(1, k);
    for (uint64_t w = 0; w < PAGE / 8; w++) late[w] = word(1, 0, w);
    *(uint64_t *)fmap = MAGIC;
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    pid_t kids[WORKERS];
    for (long i = 0; i < WORKERS; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            role = i;
            for (uint64_t k = OWN_BASE + i * OWN; k < OWN_BASE + (i + 1) * OWN; k++)
                fill(2 + i, k);
            loop();
        }
    }
    for (uint64_t k = 1; k < LATE_WRITTEN; k++)
        for (uint64_t w = 0; w < PAGE / 8; w++) late[k * (PAGE / 8) + w] = word(9, k, w);
    dprintf(1, "pids %d %d %d %d\n", getpid(), kids[0], kids[1], kids[2]);
    dprintf(1, "buf %lx %lu %lu %lu\n", (unsigned long)buf, PAGES, OWN_BASE, OWN);
    dprintf(1, "late %lx\n", (unsigned long)late);
    dprintf(1, "fmap %lx\n", (unsigned long)fmap);
    loop();
}
