/* fuzzee: a process whose images hold a bit of everything, for the fuzz test of images.
 *
 * Usage: fuzzee DIR    (DIR holds map.bin, priv.bin and log, made by the test)
 *
 * It maps DIR/map.bin MAP_SHARED read-only (its pages are the file's, never in the
 * images) and DIR/priv.bin MAP_PRIVATE, writing into the private copy (its pages are
 * in the images); holds DIR/log open read-only, a pipe with bytes in it, a socket pair
 * with a message queued, an eventfd, a memfd with data and a file of DIR unlinked
 * while open (a ghost); runs a second thread. Prints "ready", then sleeps; it never
 * writes to a file, so any change to DIR's files after a restore was made by ckpt.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;) pause();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) return 2;
    char path[4096];
    snprintf(path, sizeof path, "%s/map.bin", argv[1]);
    int m = open(path, O_RDONLY);
    snprintf(path, sizeof path, "%s/priv.bin", argv[1]);
    int p = open(path, O_RDONLY);
    snprintf(path, sizeof path, "%s/log", argv[1]);
    int log = open(path, O_RDONLY);
    if (m < 0 || p < 0 || log < 0) return 3;
    char *shared = mmap(NULL, 8192, PROT_READ, MAP_SHARED, m, 0);
    char *priv = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE, p, 0);
    if (shared == MAP_FAILED || priv == MAP_FAILED) return 4;
    memset(priv, 'P', 4096);
    int pfd[2], sv[2];
    if (pipe(pfd) || write(pfd[1], "pipe bytes", 10) != 10) return 5;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || write(sv[0], "queued", 6) != 6) return 6;
    if (eventfd(7, 0) < 0) return 7;
    int mfd = memfd_create("fuzz", 0);
    if (mfd < 0 || write(mfd, "memfd data", 10) != 10) return 8;
    snprintf(path, sizeof path, "%s/ghost", argv[1]);
    int g = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (g < 0 || write(g, "ghost data", 10) != 10 || unlink(path)) return 9;
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, NULL)) return 10;
    dprintf(1, "ready %c\n", shared[0]);
    for (;;) pause();
}
