/* mqueues: POSIX message queues, one with messages, one unlinked, one a child is
 * blocked on.
 *
 *   A  "/ckmq-PID-a", mode 0640, up to 8 messages of 128 bytes: "low" (priority 1),
 *      "high" (5), "mid" (3), "high2" (5) queued; held read-write and read-only
 *   B  "/ckmq-PID-b", unlinked after opening, "lone" (priority 2) queued
 *   C  "/ckmq-PID-c", empty: the child blocks in mq_receive on it
 * Prints "names A B C" and "ready", then "N tick" every 50 ms. On SIGUSR1 the parent
 * takes A's messages (they must come as high, high2, mid, low) and B's ("lone"),
 * checks A's limits and mode, prints "state ok" (or "state BAD what"), and sends
 * "wake" to C: the child prints "child got wake".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <mqueue.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t woken;

static void on_usr1(int sig)
{
    (void)sig;
    woken = 1;
}

static const char *take(mqd_t q, const char *want, unsigned prio)
{
    char buf[128];
    unsigned got;
    ssize_t n = mq_receive(q, buf, sizeof buf, &got);
    if (n < 0 || (size_t)n != strlen(want) + 1 || strcmp(buf, want) || got != prio)
        return want;
    return NULL;
}

int main(void)
{
    char a[64], b[64], c[64];
    snprintf(a, sizeof a, "/ckmq-%d-a", getpid());
    snprintf(b, sizeof b, "/ckmq-%d-b", getpid());
    snprintf(c, sizeof c, "/ckmq-%d-c", getpid());
    struct mq_attr attr = {.mq_maxmsg = 8, .mq_msgsize = 128};
    umask(0);
    mqd_t qa = mq_open(a, O_CREAT | O_EXCL | O_RDWR, 0640, &attr);
    mqd_t qa_ro = mq_open(a, O_RDONLY | O_NONBLOCK);
    mqd_t qb = mq_open(b, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    mqd_t qc = mq_open(c, O_CREAT | O_EXCL | O_RDWR, 0600, &attr);
    if (qa < 0 || qa_ro < 0 || qb < 0 || qc < 0) return 2;
    if (mq_unlink(b)) return 3;
    if (mq_send(qa, "low", 4, 1) || mq_send(qa, "high", 5, 5) || mq_send(qa, "mid", 4, 3) ||
        mq_send(qa, "high2", 6, 5) || mq_send(qb, "lone", 5, 2)) return 4;
    signal(SIGUSR1, on_usr1);
    printf("names %s %s %s\n", a, b, c);
    fflush(stdout);
    if (fork() == 0) {
        char buf[128];
        ssize_t n = mq_receive(qc, buf, sizeof buf, NULL);
        printf("child %s %s\n", n > 0 ? "got" : "BAD", n > 0 ? buf : "receive");
        fflush(stdout);
        for (;;) pause();
    }
    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        printf("%ld tick\n", n);
        fflush(stdout);
        if (woken == 1) {
            woken = 2;
            struct mq_attr now;
            struct stat st;
            const char *bad = take(qa, "high", 5);
            if (!bad) bad = take(qa, "high2", 5);
            if (!bad) bad = take(qa, "mid", 3);
            if (!bad) bad = take(qa_ro, "low", 1);
            if (!bad) bad = take(qb, "lone", 2);
            if (!bad && (mq_getattr(qa, &now) || now.mq_maxmsg != 8 || now.mq_msgsize != 128 ||
                         now.mq_curmsgs != 0)) bad = "limits";
            if (!bad && (fstat(qa, &st) || (st.st_mode & 0777) != 0640)) bad = "mode";
            if (!bad && mq_getattr(qa_ro, &now) == 0 && !(now.mq_flags & O_NONBLOCK))
                bad = "nonblock";
            printf("state %s%s\n", bad ? "BAD " : "ok", bad ? bad : "");
            if (mq_send(qc, "wake", 5, 0)) printf("state BAD wake\n");
            fflush(stdout);
        }
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
