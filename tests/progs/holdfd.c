/* holdfd: hold one resource ckpt may refuse to dump, then print 0, 1, 2, ...
 * one number per line every 50 ms (nanosleep), like counter.
 *
 * Usage: holdfd KIND
 *   KIND is one of: inotify eventfd signalfd timerfd epoll pidfd memfd
 *                   tcp-listen tcp udp netlink unix-listen unix-dgram-bound
 *                   unix-unconnected posix-timer thread-pidfd opath none
 *   (opath: an O_PATH fd on /etc/hostname; pidfd: a pidfd on PID 1, outside any
 *   dumped tree)
 *
 * Before counting it blocks SIGUSR2 and SIGRTMIN+2 (so the signal mask is not
 * empty) and prints "ready FD", FD being the fd of the resource (-1 when the
 * resource is not an fd). With "thread-pidfd", a second thread sleeps
 * forever besides the pidfd: a refused dump must leave both threads as they were.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static int unix_bound(int type, const char *name)
{
    int fd = socket(AF_UNIX, type, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    /* an abstract name, unique per process */
    int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "ckpt-test-%s-%d", name, getpid());
    if (bind(fd, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 1 + n) < 0)
        return -1;
    return fd;
}

static int make(const char *kind)
{
    if (!strcmp(kind, "inotify")) {
        int fd = inotify_init1(0);
        if (fd >= 0 && inotify_add_watch(fd, "/tmp", IN_CREATE) < 0)
            return -1;
        return fd;
    }
    if (!strcmp(kind, "eventfd"))
        return eventfd(3, 0);
    if (!strcmp(kind, "signalfd")) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGUSR2);
        return signalfd(-1, &s, 0);
    }
    if (!strcmp(kind, "timerfd")) {
        int fd = timerfd_create(CLOCK_MONOTONIC, 0);
        struct itimerspec it = {{100, 0}, {100, 0}};
        if (fd >= 0 && timerfd_settime(fd, 0, &it, NULL) < 0)
            return -1;
        return fd;
    }
    if (!strcmp(kind, "epoll"))
        return epoll_create1(0);
    if (!strcmp(kind, "opath"))
        return open("/etc/hostname", O_PATH);
    if (!strcmp(kind, "pidfd"))
        return (int)syscall(SYS_pidfd_open, 1, 0);
    if (!strcmp(kind, "memfd")) {
        int fd = memfd_create("ckpt-test", 0);
        if (fd >= 0 && write(fd, "data", 4) != 4)
            return -1;
        return fd;
    }
    if (!strcmp(kind, "tcp-listen") || !strcmp(kind, "tcp") || !strcmp(kind, "udp")) {
        int udp = !strcmp(kind, "udp");
        int fd = socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        if (fd < 0 || !strcmp(kind, "tcp"))
            return fd;
        struct sockaddr_in a;
        memset(&a, 0, sizeof(a));
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
            return -1;
        if (!udp && listen(fd, 4) < 0)
            return -1;
        return fd;
    }
    if (!strcmp(kind, "netlink"))
        return socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (!strcmp(kind, "unix-listen")) {
        int fd = unix_bound(SOCK_STREAM, "listen");
        if (fd >= 0 && listen(fd, 4) < 0)
            return -1;
        return fd;
    }
    if (!strcmp(kind, "unix-dgram-bound"))
        return unix_bound(SOCK_DGRAM, "dgram");
    if (!strcmp(kind, "unix-unconnected"))
        return socket(AF_UNIX, SOCK_STREAM, 0);
    fprintf(stderr, "holdfd: unknown kind %s\n", kind);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: holdfd KIND\n");
        return 2;
    }
    const char *kind = argv[1];
    int fd = -1;
    if (!strcmp(kind, "posix-timer")) {
        timer_t t;
        struct sigevent ev;
        memset(&ev, 0, sizeof(ev));
        ev.sigev_notify = SIGEV_NONE;
        if (timer_create(CLOCK_MONOTONIC, &ev, &t) < 0) {
            perror("timer_create");
            return 3;
        }
    } else if (!strcmp(kind, "thread-pidfd")) {
        pthread_t th;
        if (pthread_create(&th, NULL, sleeper, NULL) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 3;
        }
        fd = make("pidfd");
    } else if (strcmp(kind, "none")) {
        fd = make(kind);
        if (fd < 0) {
            perror(kind);
            return 3;
        }
    }
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    sigaddset(&s, SIGRTMIN + 2);
    sigprocmask(SIG_BLOCK, &s, NULL);
    dprintf(1, "ready %d\n", fd);
    for (long n = 0;; n++) {
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
