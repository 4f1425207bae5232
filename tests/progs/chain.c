/* chain: producer | filter | consumer, three children of a parent that waits.
 *
 * The producer writes "0\n1\n2\n..." as fast as the pipe takes it, the filter
 * copies bytes through in odd-sized chunks, the consumer reads slowly, checks
 * that every number follows the previous one and prints "ok N" every 20000
 * numbers ("BAD ..." and exit 1 on a gap or repeat). Pipes stay full, so a
 * dump catches bytes in both of them. The parent prints "waiting" then blocks
 * in wait(); it prints "child PID STATUS" for each child that ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void producer(int out)
{
    char buf[8192];
    for (unsigned long n = 0;;) {
        size_t len = 0;
        while (len < sizeof buf - 24) len += sprintf(buf + len, "%lu\n", n++);
        for (size_t off = 0; off < len;) {
            ssize_t w = write(out, buf + off, len - off);
            if (w <= 0) _exit(2);
            off += w;
        }
    }
}

static void filter(int in, int out)
{
    char buf[1531];
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r <= 0) _exit(r == 0 ? 0 : 2);
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, r - off);
            if (w <= 0) _exit(2);
            off += w;
        }
    }
}

static void consumer(int in)
{
    char buf[4096];
    unsigned long expect = 0, cur = 0;
    int digits = 0;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r <= 0) _exit(r == 0 ? 0 : 2);
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] == '\n') {
                if (!digits || cur != expect) {
                    dprintf(1, "BAD expected %lu got %lu\n", expect, cur);
                    _exit(1);
                }
                if (expect % 20000 == 0) dprintf(1, "ok %lu\n", expect);
                expect++;
                cur = 0;
                digits = 0;
            } else {
                cur = cur * 10 + (buf[i] - '0');
                digits++;
            }
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(void)
{
    int p1[2], p2[2];
    if (pipe(p1) || pipe(p2)) return 1;
    pid_t kids[3];
    if ((kids[0] = fork()) == 0) {
        close(p1[0]); close(p2[0]); close(p2[1]);
        producer(p1[1]);
    }
    if ((kids[1] = fork()) == 0) {
        close(p1[1]); close(p2[0]);
        filter(p1[0], p2[1]);
    }
    if ((kids[2] = fork()) == 0) {
        close(p1[0]); close(p1[1]); close(p2[1]);
        consumer(p2[0]);
    }
    close(p1[0]); close(p1[1]); close(p2[0]); close(p2[1]);
    dprintf(1, "pids %d %d %d %d\nwaiting\n", getpid(), kids[0], kids[1], kids[2]);
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) return 0;
        dprintf(1, "child %d %d\n", pid, status);
    }
}
