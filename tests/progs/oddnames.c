/* oddnames: a process whose name and files are not valid UTF-8.
 *
 * Usage: oddnames DIR
 *   Renames itself (PR_SET_NAME) to "a\xffb) (x"; maps DIR/"map\xff\xfe.bin" (one page,
 *   created with 'm' bytes) MAP_SHARED read-write and opens DIR/"log\xe9\x80.txt"
 *   O_WRONLY|O_APPEND. Every 50 ms it prints "N map=ok|BAD", appends "N\n" to the log
 *   and stores N (a long) at offset 8 of the mapping (page bytes 16.. stay 'm').
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define PG 4096

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char path[4096];
    snprintf(path, sizeof(path), "%s/map\xff\xfe.bin", argv[1]);
    int mfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[PG];
    memset(page, 'm', PG);
    if (mfd < 0 || write(mfd, page, PG) != PG)
        return 3;
    char *map = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (map == MAP_FAILED)
        return 4;
    close(mfd);
    snprintf(path, sizeof(path), "%s/log\xe9\x80.txt", argv[1]);
    int log = open(path, O_WRONLY | O_APPEND | O_CREAT, 0600);
    if (log < 0)
        return 5;
    if (prctl(PR_SET_NAME, "a\xff" "b) (x", 0, 0, 0) < 0)
        return 6;
    for (long n = 0;; n++) {
        int ok = 1;
        for (int i = 16; i < PG; i++)
            ok &= map[i] == 'm';
        printf("%ld map=%s\n", n, ok ? "ok" : "BAD");
        fflush(stdout);
        dprintf(log, "%ld\n", n);
        memcpy(map + 8, &n, sizeof(n));
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
