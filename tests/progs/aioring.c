/* aioring: a Linux AIO context (io_setup) with completed events not yet reaped.
 *
 * Sets up a context for 16 requests (a ring of 127 events on a machine of up to 15
 * CPUs), goes round it almost once (15 batches of 8 writes of one byte to a pipe,
 * each reaped: they complete at once), then submits 9 more (data 1..9) and reaps 2:
 * the 7 left go round the end of the ring. Prints "ctx ADDR" and "ready" and waits
 * for SIGUSR1. Then it reaps the 7 left (their data fields must be 3..9, in order),
 * checks that no more is there, submits 40 more writes in batches of 8 reaping each
 * batch, and prints "aio ok" or "aio BAD what". Then "N tick" lines every 50 ms.
 */
#define _GNU_SOURCE
#include <linux/aio_abi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static aio_context_t ctx;
static int pfd[2];
static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
    (void)sig;
    go = 1;
}

static int submit(int n, int first)
{
    struct iocb cbs[8], *ptrs[8];
    static char byte = 'x';
    memset(cbs, 0, sizeof cbs);
    for (int i = 0; i < n; i++) {
        cbs[i].aio_data = first + (first < 1000 ? i : 0);
        cbs[i].aio_lio_opcode = IOCB_CMD_PWRITE;
        cbs[i].aio_fildes = pfd[1];
        cbs[i].aio_buf = (unsigned long)&byte;
        cbs[i].aio_nbytes = 1;
        ptrs[i] = &cbs[i];
    }
    return syscall(SYS_io_submit, ctx, n, ptrs) == n ? 0 : -1;
}

/* Reap exactly n events, whose data must be first, first+1, ... */
static const char *reap(int n, int first)
{
    struct io_event ev[16];
    struct timespec ts = {5, 0};
    long got = syscall(SYS_io_getevents, ctx, n, n, ev, &ts);
    if (got != n) return "count";
    for (int i = 0; i < n; i++)
        if ((int)ev[i].data != first + (first < 1000 ? i : 0) || ev[i].res != 1) return "event";
    return NULL;
}

int main(void)
{
    char sink[64];
    if (pipe(pfd) || syscall(SYS_io_setup, 16, &ctx)) return 2;
    signal(SIGUSR1, on_usr1);
    for (int b = 0; b < 15; b++) {
        if (submit(8, 1000) || reap(8, 1000)) return 3;
        if (read(pfd[0], sink, sizeof sink) <= 0) return 3;
    }
    if (submit(8, 1) || submit(1, 9) || reap(2, 1)) return 3;
    printf("ctx %lx\nready\n", (unsigned long)ctx);
    fflush(stdout);
    while (!go) pause();

    const char *bad = reap(7, 3);
    struct io_event ev;
    struct timespec zero = {0, 0};
    if (!bad && syscall(SYS_io_getevents, ctx, 0, 1, &ev, &zero) != 0) bad = "extra";
    for (int b = 0; !bad && b < 5; b++) {
        if (submit(8, 100 + 8 * b)) bad = "submit";
        else bad = reap(8, 100 + 8 * b);
        if (read(pfd[0], sink, sizeof sink) <= 0) bad = "pipe";
    }
    printf("aio %s%s\n", bad ? "BAD " : "ok", bad ? bad : "");
    fflush(stdout);
    for (long n = 0;; n++) {
        printf("%ld tick\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
