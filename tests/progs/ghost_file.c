/* ghost_file: a file unlinked while open, read, appended to and mapped.
 *
 * Usage: ghost_file PATH [PAD_KIB]
 *
 * PATH is created (page 0 zero, pages 1-2 a pattern, then PAD_KIB KiB of
 * pattern too, default 0), opened three ways, mapped twice, and unlinked:
 *
 *   rd     O_RDWR: read() 64 bytes per tick, cycling over the pattern of pages
 *          1-2 (its file offset matters), pread() of page 0
 *   app    O_WRONLY|O_APPEND: "tick N\n" appended every tick
 *   shared MAP_SHARED of page 0: the tick N is stored in it; pread(rd) of page 0
 *          must see it (the mapping and the fds are one file)
 *   priv   MAP_PRIVATE of pages 1-2; page 1 overwritten with 'P' (copy on write),
 *          page 2 must stay the file's
 *
 * Prints "unlinked" once, then "N ok" every 50 ms, or "N BAD what" when a check
 * fails (the file's size is checked against what was appended too).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PG 4096

static unsigned char pat(long i) { return (unsigned char)(i * 7 + 3); }

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    long pad = argc > 2 ? atol(argv[2]) * 1024 : 0;
    int rd = open(argv[1], O_RDWR | O_CREAT | O_EXCL, 0640);
    if (rd < 0) return 3;
    static unsigned char buf[PG];
    memset(buf, 0, PG);
    if (write(rd, buf, PG) != PG) return 4;
    for (long off = PG; off < 3 * PG + pad; off += PG) {
        for (int i = 0; i < PG; i++) buf[i] = pat(off + i - PG);
        if (write(rd, buf, PG) != PG) return 4;
    }
    int app = open(argv[1], O_WRONLY | O_APPEND);
    if (app < 0) return 5;
    volatile long *shared = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, rd, 0);
    char *priv = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, rd, PG);
    if (shared == MAP_FAILED || priv == MAP_FAILED) return 6;
    memset(priv, 'P', PG);
    if (unlink(argv[1])) return 7;
    if (lseek(rd, PG, SEEK_SET) != PG) return 8;
    long expect = 3 * PG + pad, pos = 0;
    dprintf(1, "unlinked\n");
    for (long n = 0;; n++) {
        const char *bad = NULL;
        unsigned char chunk[64];
        if (read(rd, chunk, 64) != 64) bad = "read";
        for (int i = 0; !bad && i < 64; i++)
            if (chunk[i] != pat(pos + i)) bad = "read-content";
        pos += 64;
        if (pos == 2 * PG) {
            pos = 0;
            lseek(rd, PG, SEEK_SET);
        }
        shared[0] = n;
        long seen = -1;
        if (pread(rd, &seen, sizeof seen, 0) != sizeof seen || seen != n) bad = "shared";
        for (int i = 0; !bad && i < PG; i++)
            if (priv[i] != 'P' || (unsigned char)priv[PG + i] != pat(PG + i)) bad = "private";
        struct stat st;
        if (!bad && (fstat(rd, &st) || st.st_size != expect || st.st_nlink != 0)) bad = "size";
        char line[32];
        int len = snprintf(line, sizeof line, "tick %ld\n", n);
        if (write(app, line, len) != len) bad = "append";
        expect += len;
        if (bad) dprintf(1, "%ld BAD %s\n", n, bad);
        else dprintf(1, "%ld ok\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
