/* splitshm: one MAP_SHARED|MAP_ANONYMOUS object of 3 pages, split into mappings at
 * non-zero offsets and shared by a parent P and its child C.
 *
 * Page 2 of the object gets a magic value, then is unmapped: the object keeps it,
 * no mapping shows it. After the fork P makes page 1 read-only (P maps page 0 rw
 * at offset 0 and page 1 read-only at offset 4096), C makes page 0 read-only (page
 * 0 read-only, page 1 rw at offset 4096). Every 50 ms P stores its tick N in page
 * 0 and prints "P N c=X", X being the tick C last stored in page 1; C stores its
 * tick in page 1 and prints "C N p=Y", Y read from page 0.
 *
 * On SIGUSR1 P grows its page-1 mapping by a page with mremap, so that it shows
 * page 2 of the object again, and prints "grow HEX" with the value found there.
 * First line: "pids P C".
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x5eedc0ffeeL

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return 1;
    volatile long *p0 = (volatile long *)m;
    volatile long *p1 = (volatile long *)(m + page);
    *p0 = -1;
    *p1 = -1;
    *(volatile long *)(m + 2 * page) = MAGIC;
    if (munmap(m + 2 * page, page)) return 2;
    signal(SIGUSR1, on_usr1);
    pid_t c = fork();
    if (c < 0) return 3;
    if (c == 0) {
        if (mprotect(m, page, PROT_READ)) return 4;
        for (long n = 0;; n++) {
            *p1 = n;
            dprintf(1, "C %ld p=%ld\n", n, *p0);
            tick();
        }
    }
    if (mprotect(m + page, page, PROT_READ)) return 5;
    dprintf(1, "pids %d %d\n", getpid(), c);
    for (long n = 0;; n++) {
        if (got_usr1) {
            got_usr1 = 0;
            char *g = mremap((char *)p1, page, 2 * page, MREMAP_MAYMOVE);
            if (g == MAP_FAILED) {
                dprintf(1, "grow failed\n");
            } else {
                p1 = (volatile long *)g;
                dprintf(1, "grow %lx\n", *(volatile long *)(g + page));
            }
        }
        *p0 = n;
        dprintf(1, "P %ld c=%ld\n", n, *p1);
        tick();
    }
}
