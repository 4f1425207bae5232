/* anonfds_shared: one eventfd shared by a parent P and its child C (fork).
 *
 * Every 50 ms C adds 1 to the eventfd and prints "C N" (N = 1, 2, ...: what it has
 * added in all). P blocks in read() on the eventfd and prints "P N total=T" for its
 * N-th read, T being the sum of what it read: it keeps up with C only while both
 * hold the same eventfd. First line: "pids P C".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int main(void)
{
    int efd = eventfd(0, 0);
    if (efd < 0) { perror("eventfd"); return 1; }
    pid_t c = fork();
    if (c < 0) { perror("fork"); return 1; }
    if (c == 0) {
        for (long n = 1;; n++) {
            uint64_t one = 1;
            if (write(efd, &one, sizeof one) != sizeof one) { perror("write"); return 1; }
            dprintf(1, "C %ld\n", n);
            struct timespec ts = {0, 50 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    dprintf(1, "pids %d %d\n", getpid(), c);
    unsigned long long total = 0;
    for (long n = 0;; n++) {
        uint64_t v;
        if (read(efd, &v, sizeof v) != sizeof v) { perror("read"); return 1; }
        total += v;
        dprintf(1, "P %ld total=%llu\n", n, total);
    }
}
