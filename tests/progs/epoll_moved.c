/* epoll_moved MODE: epoll watches whose fd number no longer names their file, the
 * file still open elsewhere (the kernel keeps such a watch, keyed by its old number).
 *
 *   closed   pipe A's read end R watched (data 0xa), dup'ed to D, R closed.
 *   reused   as closed, then pipe B's read end put at R and watched too (data 0xb):
 *            two watches under fd R, on two files.
 *   child    an eventfd at R watched edge-triggered (data 0xe), held by a child;
 *            the parent closes R.
 *   outside  as child, but the eventfd is held by a grandchild that left the tree
 *            (its parent exited); the parent closes R.
 *
 * SIGUSR1 to the parent writes into pipe A, SIGUSR2 into pipe B; SIGUSR1 to the
 * child adds 1 to the eventfd. The parent prints "ready EPFD R D KID" (KID: the
 * child or grandchild, else 0), then per event "ev DATA" (hex; it drains the pipes
 * through D and R), and N = 0, 1, 2, ... every 50 ms.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_usr2(int s) { (void)s; usr2 = 1; }

static void watch(int ep, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) { perror("epoll_ctl"); _exit(1); }
}

static void hold(int efd, int count)
{
    for (;;) {
        pause();
        if (count && usr1) {
            usr1 = 0;
            uint64_t one = 1;
            if (write(efd, &one, 8) != 8) perror("eventfd write");
        }
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "closed";
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int a[2] = {-1, -1}, b[2] = {-1, -1}, R, D = -1;
    pid_t kid = 0;
    if (!strcmp(mode, "closed") || !strcmp(mode, "reused")) {
        if (pipe(a)) return 1;
        R = a[0];
        watch(ep, R, EPOLLIN, 0xa);
        D = dup(R);
        close(R);
        if (!strcmp(mode, "reused")) {
            if (pipe(b)) return 1;
            if (b[0] != R) {  /* pipe() took the lowest free number: R, most likely */
                dup2(b[0], R);
                close(b[0]);
            }
            watch(ep, R, EPOLLIN, 0xb);
        }
    } else {
        R = eventfd(0, 0);
        watch(ep, R, EPOLLIN | EPOLLET, 0xe);
        int p[2];
        if (pipe(p)) return 1;
        kid = fork();
        if (kid == 0) {
            close(ep);
            close(p[0]);
            if (!strcmp(mode, "outside")) {
                pid_t g = fork();
                if (g) {
                    if (write(p[1], &g, sizeof g) != sizeof g) _exit(1);
                    _exit(0);  /* the grandchild leaves the tree */
                }
            } else {
                pid_t me = getpid();
                if (write(p[1], &me, sizeof me) != sizeof me) _exit(1);
            }
            close(p[1]);
            hold(R, 1);
        }
        close(p[1]);
        if (read(p[0], &kid, sizeof kid) != sizeof kid) return 1;
        close(p[0]);
        if (!strcmp(mode, "outside")) waitpid(-1, NULL, 0);
        close(R);
    }
    dprintf(1, "ready %d %d %d %d\n", ep, R, D, (int)kid);
    for (long n = 0;; n++) {
        struct epoll_event evs[4];
        int k = epoll_wait(ep, evs, 4, 50);
        for (int i = 0; i < k; i++) {
            char buf[64];
            dprintf(1, "ev %llx\n", (unsigned long long)evs[i].data.u64);
            if (evs[i].data.u64 == 0xa && read(D, buf, sizeof buf) < 0) perror("read A");
            if (evs[i].data.u64 == 0xb && read(R, buf, sizeof buf) < 0) perror("read B");
        }
        if (usr1 && a[1] >= 0) { usr1 = 0; if (write(a[1], "x", 1) != 1) perror("write A"); }
        if (usr2 && b[1] >= 0) { usr2 = 0; if (write(b[1], "y", 1) != 1) perror("write B"); }
        dprintf(1, "%ld\n", n);
    }
}
