/* epoll_loop: one epoll instance over pipes and a unix socketpair, across a checkpoint.
 *
 * Watches, each with its own 64-bit data field:
 *   P  read end of pipe p   EPOLLIN                 data 0x1111111100000001
 *   S  s[0] of a socketpair EPOLLIN                 data 0x2222222200000002
 *   E  read end of pipe q   EPOLLIN | EPOLLET       data 0x3333333300000003
 *   O  read end of pipe o   EPOLLIN | EPOLLONESHOT  data 0x4444444400000004
 *
 * A child (the writer) shares the epoll fd and holds p[1], q[1] and s[1]; on
 * SIGUSR1 it writes "wK\n" (K = 0, 1, ...) into p, s and q, then prints
 * "wrote K". The parent keeps p[1], q[1] and o[1] as well, so that a test can
 * write into the pipes through /proc/PID/fd/N.
 *
 * The parent prints "ready P1 Q1 O1 CHILD" (the write ends' fd numbers and the
 * child's PID), then loops on epoll_wait with a 50 ms timeout: on a timeout it
 * prints the next tick number (0, 1, 2, ...); for each event it prints
 * "ev NAME DATA EVENTS TEXT" (DATA and EVENTS in hex, TEXT what it read, with
 * '\n' shown as '|'). Level-triggered watches read up to 4096 bytes; the
 * edge-triggered one reads at most 4 bytes per event, so bytes may stay unread
 * with no new edge. The one-shot watch is never re-armed.
 *
 * SIGUSR2 toggles a paused mode ("paused" / "resumed") in which the parent
 * does not call epoll_wait, only sleeps 50 ms and prints ticks: events then
 * stay pending in the epoll instance.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define D_P 0x1111111100000001ULL
#define D_S 0x2222222200000002ULL
#define D_E 0x3333333300000003ULL
#define D_O 0x4444444400000004ULL

static volatile sig_atomic_t got_usr1, paused;

static void on_usr1(int sig) { (void)sig; got_usr1 = 1; }
static void on_usr2(int sig) { (void)sig; paused = !paused; }

static void add(int ep, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.u64 = data;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("epoll_ctl");
        _exit(1);
    }
}

static void writer(int p1, int q1, int s1)
{
    for (int k = 0;; ) {
        if (got_usr1) {
            got_usr1 = 0;
            char msg[32];
            int n = snprintf(msg, sizeof msg, "w%d\n", k);
            if (write(p1, msg, n) != n || write(s1, msg, n) != n || write(q1, msg, n) != n)
                dprintf(1, "writer BAD write (%s)\n", strerror(errno));
            else
                dprintf(1, "wrote %d\n", k);
            k++;
        }
        usleep(10000);
    }
}

int main(void)
{
    int p[2], q[2], o[2], s[2];
    if (pipe(p) || pipe(q) || pipe(o) || socketpair(AF_UNIX, SOCK_STREAM, 0, s)) {
        perror("setup");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_create1");
        return 1;
    }
    add(ep, p[0], EPOLLIN, D_P);
    add(ep, s[0], EPOLLIN, D_S);
    add(ep, q[0], EPOLLIN | EPOLLET, D_E);
    add(ep, o[0], EPOLLIN | EPOLLONESHOT, D_O);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);

    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        close(p[0]);
        close(q[0]);
        close(o[0]);
        close(o[1]);
        close(s[0]);
        writer(p[1], q[1], s[1]); /* keeps ep open: the epoll is shared */
    }
    close(s[1]);
    dprintf(1, "ready %d %d %d %d\n", p[1], q[1], o[1], (int)child);

    int tick = 0, was_paused = 0;
    for (;;) {
        if (paused != was_paused) {
            was_paused = paused;
            dprintf(1, "%s\n", was_paused ? "paused" : "resumed");
        }
        if (was_paused) {
            struct timespec ts = {0, 50 * 1000 * 1000};
            if (nanosleep(&ts, NULL) == 0)
                dprintf(1, "%d\n", tick++);
            continue;
        }
        struct epoll_event evs[8];
        int n = epoll_wait(ep, evs, 8, 50);
        if (n < 0) {
            if (errno != EINTR)
                dprintf(1, "epoll_wait BAD %s\n", strerror(errno));
            continue;
        }
        if (n == 0) {
            dprintf(1, "%d\n", tick++);
            continue;
        }
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            const char *name = d == D_P ? "P" : d == D_S ? "S" : d == D_E ? "E"
                             : d == D_O ? "O" : "?";
            int fd = d == D_P ? p[0] : d == D_S ? s[0] : d == D_E ? q[0] : d == D_O ? o[0] : -1;
            char buf[4097];
            ssize_t got = fd < 0 ? 0 : read(fd, buf, d == D_E ? 4 : 4096);
            if (got < 0)
                got = 0;
            buf[got] = 0;
            for (ssize_t j = 0; j < got; j++)
                if (buf[j] == '\n')
                    buf[j] = '|';
            dprintf(1, "ev %s %llx %x %s\n", name, (unsigned long long)d,
                    (unsigned)evs[i].events, buf);
        }
    }
}
