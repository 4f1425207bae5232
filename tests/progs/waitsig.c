/* waitsig CALL RESTART: wait in one blocking syscall that nothing but a signal ends,
 * with a SIGUSR1 handler (SA_RESTART when RESTART is 1) that writes "handler".
 *
 * CALL: select (a pipe nobody writes), pselect, poll, pause, nanosleep (an hour),
 * read (a pipe nobody writes). When the call returns, prints "woke ERRNO-NAME" and
 * waits again; so after a signal the output shows whether the call was interrupted
 * (EINTR, as the kernel does for a handler that ran while the process slept in it)
 * or restarted (no "woke"; read with SA_RESTART).
 * CALL thread-select: the same select in a second thread, the first one waiting for it
 * (pthread_join) with SIGUSR1 blocked, so that the process's signal goes to the second.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

static void on_usr1(int sig)
{
    (void)sig;
    static const char msg[] = "handler\n";
    (void)!write(1, msg, sizeof msg - 1);
}

static int wait_once(const char *call, int fd)
{
    if (!strcmp(call, "select")) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        return select(fd + 1, &set, NULL, NULL, NULL);
    }
    if (!strcmp(call, "pselect")) {
        fd_set set;
        FD_ZERO(&set);
        FD_SET(fd, &set);
        return pselect(fd + 1, &set, NULL, NULL, NULL, NULL);
    }
    if (!strcmp(call, "poll")) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        return poll(&p, 1, -1);
    }
    if (!strcmp(call, "pause"))
        return pause();
    if (!strcmp(call, "nanosleep")) {
        struct timespec t = { .tv_sec = 3600 };
        return nanosleep(&t, NULL);
    }
    char c;
    return (int)read(fd, &c, 1);
}

static int pipe_rd;

static void *waiter(void *call)
{
    for (;;) {
        int r = wait_once(call, pipe_rd);
        printf("woke %s\n", r < 0 ? strerrorname_np(errno) : "0");
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    struct sigaction sa = { .sa_handler = on_usr1 };
    sa.sa_flags = argv[2][0] == '1' ? SA_RESTART : 0;
    sigaction(SIGUSR1, &sa, NULL);
    int p[2];
    if (pipe(p))
        return 1;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (!strncmp(argv[1], "thread-", 7)) {
        pthread_t t;
        sigset_t usr1;
        pipe_rd = p[0];
        if (pthread_create(&t, NULL, waiter, argv[1] + 7))
            return 1;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);
        printf("waiting\n");
        pthread_join(t, NULL);
        return 0;
    }
    printf("waiting\n");
    for (;;) {
        int r = wait_once(argv[1], p[0]);
        printf("woke %s\n", r < 0 ? strerrorname_np(errno) : "0");
    }
}
