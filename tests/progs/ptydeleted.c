/* ptydeleted: keeps a pty slave whose master it closed (/dev/pts/N (deleted), hung up)
 * as fd 5, and prints "N read=R write=E" every 50 ms: what read and write on it give
 * (0 and EIO on a hung-up terminal). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) return 1;
    int s = open(ptsname(master), O_RDWR | O_NOCTTY);
    if (s < 0 || dup2(s, 5) != 5) return 1;
    close(s);
    close(master);
    for (long n = 0;; n++) {
        char c;
        ssize_t r = read(5, &c, 1);
        int w = write(5, "x", 1) < 0 ? errno : 0;
        printf("%ld read=%zd write=%d\n", n, r, w);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
