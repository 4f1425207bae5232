/* mappings: file mappings of every sort, checked on every tick.
 *
 * Usage: mappings FILE   (FILE: 4 pages, created by the test, page i filled with 'a'+i)
 *
 *   shared  = MAP_SHARED of FILE, read-write: the tick number is stored in page 0
 *   private = MAP_PRIVATE of FILE, read-write: page 1 overwritten with 'P' (copy on write)
 *   ro      = MAP_PRIVATE of FILE, read-only, from page 2 (a non-zero file offset)
 *   guard   = PROT_NONE anonymous page
 * Prints "N shared=S private=ok|BAD ro=ok|BAD" every 50 ms, S being what page 0 of
 * the shared mapping holds (the tick of the previous line).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PG 4096

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) return 3;
    long *shared = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *private = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    char *ro = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 2 * PG);
    char *guard = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED || private == MAP_FAILED || ro == MAP_FAILED || guard == MAP_FAILED)
        return 4;
    close(fd);
    memset(private + PG, 'P', PG);
    for (long n = 0;; n++) {
        int priv_ok = 1, ro_ok = 1;
        for (int i = 0; i < PG; i++) {
            priv_ok &= private[PG + i] == 'P' && private[2 * PG + i] == 'c';
            ro_ok &= ro[i] == 'c' && ro[PG + i] == 'd';
        }
        printf("%ld shared=%ld private=%s ro=%s\n", n, shared[0], priv_ok ? "ok" : "BAD",
               ro_ok ? "ok" : "BAD");
        fflush(stdout);
        shared[0] = n;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
