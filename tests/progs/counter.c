/* counter: print 0, 1, 2, ... one number per line, every 50 ms (nanosleep).
 *
 * Options:
 *   -n MAX   exit after printing MAX (with the status given by -x, default 0)
 *   -x CODE  exit status used with -n
 *   -s       also hold a socket (AF_UNIX, SOCK_STREAM) on an fd
 *
 * A 4 MiB heap buffer and a static array hold patterns that are checked on every
 * tick; "CORRUPT ..." is printed if they changed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAP_WORDS (4u << 20) / 8
#define STATIC_WORDS 4096

static uint64_t static_area[STATIC_WORDS];

static uint64_t pattern(uint64_t i) { return i * 0x9E3779B97F4A7C15ull ^ 0xC0FFEEull; }

int main(int argc, char **argv)
{
    long max = -1;
    int code = 0, with_socket = 0, opt;
    while ((opt = getopt(argc, argv, "n:x:s")) != -1) {
        if (opt == 'n') max = atol(optarg);
        else if (opt == 'x') code = atoi(optarg);
        else if (opt == 's') with_socket = 1;
        else return 2;
    }
    if (with_socket && socket(AF_UNIX, SOCK_STREAM, 0) < 0) {
        perror("socket");
        return 3;
    }
    uint64_t *heap = malloc(HEAP_WORDS * 8);
    if (!heap) return 4;
    for (uint64_t i = 0; i < HEAP_WORDS; i++) heap[i] = pattern(i);
    for (uint64_t i = 0; i < STATIC_WORDS; i++) static_area[i] = ~pattern(i);

    for (long n = 0;; n++) {
        for (uint64_t i = 0; i < HEAP_WORDS; i++)
            if (heap[i] != pattern(i)) { dprintf(1, "CORRUPT heap %lu\n", (unsigned long)i); break; }
        for (uint64_t i = 0; i < STATIC_WORDS; i++)
            if (static_area[i] != ~pattern(i)) { dprintf(1, "CORRUPT static %lu\n", (unsigned long)i); break; }
        dprintf(1, "%ld\n", n);
        if (n == max) return code;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
