/* sockq: messages left unread in unix socket pairs across a checkpoint.
 *
 * Three socketpairs are filled, then not read until SIGUSR1:
 *   SOCK_DGRAM      d[0] -> d[1]: 5 datagrams of 1, 0, 100000, 3 and 77 bytes,
 *                   d[1] -> d[0]: 2 datagrams of 0 and 9 bytes;
 *   SOCK_SEQPACKET  s[0] -> s[1]: 4 records of 10, 0, 5000 and 1 bytes;
 *   SOCK_STREAM     t[0] -> t[1]: 5000 then 7345 bytes.
 * Byte i of message k of a queue is (SEED + 7 * k + i) & 0xff (bytes count on
 * through the whole stream).
 *
 * It prints "ready", then 0, 1, 2, ... every 50 ms. On SIGUSR1 it reads every
 * queue with MSG_DONTWAIT until EAGAIN and prints one line per queue:
 * "dgram ok 5", "dgram-back ok 2", "seqpacket ok 4", "stream ok 12345", or the
 * queue's name and "BAD ..." telling what differed.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }

static unsigned char buf[200000];

static void fill(int seed, int k, size_t len)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (unsigned char)(seed + 7 * k + i);
}

static int send_all(int fd, int seed, const size_t *sizes, int n)
{
    for (int k = 0; k < n; k++) {
        fill(seed, k, sizes[k]);
        if (send(fd, buf, sizes[k], MSG_DONTWAIT) != (ssize_t)sizes[k])
            return -1;
    }
    return 0;
}

/* Read messages until EAGAIN; each must have its size and bytes. */
static void check_msgs(const char *name, int fd, int seed, const size_t *sizes, int n)
{
    for (int k = 0;; k++) {
        ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT | MSG_TRUNC);
        if (got < 0) {
            if (errno == EAGAIN && k == n)
                dprintf(1, "%s ok %d\n", name, n);
            else
                dprintf(1, "%s BAD only %d messages of %d (%s)\n", name, k, n,
                        strerror(errno));
            return;
        }
        if (k >= n) {
            dprintf(1, "%s BAD extra message %d of %zd bytes\n", name, k, got);
            return;
        }
        if ((size_t)got != sizes[k]) {
            dprintf(1, "%s BAD message %d has %zd bytes, not %zu\n", name, k, got, sizes[k]);
            return;
        }
        for (size_t i = 0; i < sizes[k]; i++) {
            if (buf[i] != (unsigned char)(seed + 7 * k + i)) {
                dprintf(1, "%s BAD message %d byte %zu\n", name, k, i);
                return;
            }
        }
    }
}

static void check_stream(int fd, int seed, size_t total)
{
    size_t pos = 0;
    for (;;) {
        ssize_t got = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (got < 0 && errno == EAGAIN)
            break;
        if (got <= 0) {
            dprintf(1, "stream BAD recv %zd (%s)\n", got, strerror(errno));
            return;
        }
        for (ssize_t i = 0; i < got; i++, pos++) {
            /* the stream carries messages 0 and 1 of 5000 and 7345 bytes */
            int k = pos >= 5000;
            size_t j = k ? pos - 5000 : pos;
            if (buf[i] != (unsigned char)(seed + 7 * k + j)) {
                dprintf(1, "stream BAD byte %zu\n", pos);
                return;
            }
        }
    }
    if (pos == total)
        dprintf(1, "stream ok %zu\n", pos);
    else
        dprintf(1, "stream BAD %zu bytes, not %zu\n", pos, total);
}

int main(void)
{
    static const size_t dsz[] = {1, 0, 100000, 3, 77};
    static const size_t bsz[] = {0, 9};
    static const size_t ssz[] = {10, 0, 5000, 1};
    static const size_t tsz[] = {5000, 7345};
    int d[2], s[2], t[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, d) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s)
        || socketpair(AF_UNIX, SOCK_STREAM, 0, t))
        return 1;
    if (send_all(d[0], 11, dsz, 5) || send_all(d[1], 22, bsz, 2)
        || send_all(s[0], 33, ssz, 4) || send_all(t[0], 44, tsz, 2)) {
        perror("send");
        return 2;
    }
    signal(SIGUSR1, on_usr1);
    dprintf(1, "ready\n");
    for (long n = 0;; n++) {
        if (got_usr1) {
            got_usr1 = 0;
            check_msgs("dgram", d[1], 11, dsz, 5);
            check_msgs("dgram-back", d[0], 22, bsz, 2);
            check_msgs("seqpacket", s[1], 33, ssz, 4);
            check_stream(t[1], 44, 12345);
        }
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
