/* guards: guard regions (MADV_GUARD_INSTALL, Linux 6.13+) and other mappings that
 * cannot be read as they are.
 *
 *   guarded  anonymous, 8 pages: pages 0-2 and 6 written, 3-4 made guard pages
 *   gfile    private mapping of FILE (argv[1], 4 pages made here), page 0 written,
 *            page 2 a guard page (file-backed guard regions: Linux 6.15+; "skip" else)
 *   none     PROT_NONE anonymous, 4 pages, never touched
 *   hidden   anonymous, 2 pages written, then made PROT_NONE
 *   xonly    anonymous, 1 page written, then PROT_EXEC only
 * Prints "guard ADDR" (the guarded mapping) and "ready", then every 50 ms "N ok" or
 * "N BAD what": data intact, and touching each guard page raises SIGSEGV.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define PG 4096

static sigjmp_buf env;

static void on_segv(int sig)
{
    (void)sig;
    siglongjmp(env, 1);
}

/* 1 if reading addr faults */
static int faults(volatile unsigned char *addr)
{
    if (sigsetjmp(env, 1)) return 1;
    (void)*addr;
    return 0;
}

static int filled(const unsigned char *p, unsigned char c)
{
    for (int i = 0; i < PG; i++)
        if (p[i] != c) return 0;
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    struct sigaction sa = {.sa_handler = on_segv, .sa_flags = SA_NODEFER};
    sigaction(SIGSEGV, &sa, NULL);

    unsigned char *g = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g == MAP_FAILED) return 3;
    for (int p = 0; p < 3; p++) memset(g + p * PG, 'a' + p, PG);
    memset(g + 6 * PG, 'g', PG);
    if (madvise(g + 3 * PG, 2 * PG, MADV_GUARD_INSTALL)) {
        printf("skip guard regions\n");
        return 4;
    }

    int fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0600);
    unsigned char page[PG];
    for (int p = 0; p < 4; p++) {
        memset(page, 'A' + p, PG);
        if (fd < 0 || write(fd, page, PG) != PG) return 5;
    }
    unsigned char *f = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (f == MAP_FAILED) return 5;
    close(fd);
    memset(f, 'W', PG);
    int fguard = madvise(f + 2 * PG, PG, MADV_GUARD_INSTALL) == 0;
    if (!fguard) printf("skip file guard\n");

    unsigned char *none = mmap(NULL, 4 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *hidden = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *xonly = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (none == MAP_FAILED || hidden == MAP_FAILED || xonly == MAP_FAILED) return 6;
    memset(hidden, 'h', 2 * PG);
    memset(xonly, 0xc3, PG); /* ret */
    if (mprotect(hidden, 2 * PG, PROT_NONE) || mprotect(xonly, PG, PROT_EXEC)) return 6;

    printf("guard %lx\nready\n", (unsigned long)g);
    fflush(stdout);
    for (long n = 0;; n++) {
        const char *bad = NULL;
        if (!filled(g, 'a') || !filled(g + PG, 'b') || !filled(g + 2 * PG, 'c') ||
            !filled(g + 6 * PG, 'g') || !filled(g + 5 * PG, 0))
            bad = "guarded data";
        else if (!faults(g + 3 * PG) || !faults(g + 4 * PG + 100))
            bad = "guard pages readable";
        else if (faults(g + 5 * PG) || faults(g + 7 * PG))
            bad = "pages beside the guards fault";
        else if (!filled(f, 'W') || !filled(f + PG, 'B') || !filled(f + 3 * PG, 'D'))
            bad = "file data";
        else if (fguard && !faults(f + 2 * PG))
            bad = "file guard readable";
        else if (!faults(none) || !faults(hidden))
            bad = "PROT_NONE readable";
        else if (mprotect(hidden, 2 * PG, PROT_READ) || !filled(hidden, 'h') ||
                 !filled(hidden + PG, 'h') || mprotect(hidden, 2 * PG, PROT_NONE))
            bad = "hidden data";
        else
            ((void (*)(void))xonly)();
        if (bad) printf("%ld BAD %s\n", n, bad);
        else printf("%ld ok\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
