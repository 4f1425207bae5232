/* jobstop: a parent and a two-threaded child in its own process group (a job), for
 * job-control stops.
 *
 * Every 50 ms the parent prints "N parent", the child's threads "N child-main" and
 * "N child-thread". The child prints "USR1" when it handles SIGUSR1. The parent
 * reports its child's stops and continues as it waits for them
 * (WUNTRACED | WCONTINUED): "EVENT stopped SIG" and "EVENT continued".
 * The child's PID is printed first: "CHILD PID".
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&lock);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
    pthread_mutex_unlock(&lock);
}

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void on_usr1(int sig)
{
    (void)sig;
    static const char msg[] = "USR1\n";
    write(1, msg, sizeof msg - 1);
}

static void *other(void *arg)
{
    (void)arg;
    for (long n = 0;; n++) {
        say("%ld child-thread\n", n);
        tick();
    }
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    pid_t kid = fork();
    if (kid == 0) {
        setpgid(0, 0);
        signal(SIGUSR1, on_usr1);
        pthread_t t;
        pthread_create(&t, NULL, other, NULL);
        for (long n = 0;; n++) {
            say("%ld child-main\n", n);
            tick();
        }
    }
    setpgid(kid, kid);
    say("CHILD %d\n", (int)kid);
    for (long n = 0;; n++) {
        say("%ld parent\n", n);
        int status;
        pid_t got = waitpid(kid, &status, WNOHANG | WUNTRACED | WCONTINUED);
        if (got == kid && WIFSTOPPED(status))
            say("EVENT stopped %d\n", WSTOPSIG(status));
        else if (got == kid && WIFCONTINUED(status))
            say("EVENT continued\n");
        tick();
    }
}
