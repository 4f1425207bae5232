/* zombie_leader: a parent and a child whose main thread has exited (pthread_exit) while
 * its second thread runs on: the child shows as a zombie but is not one.
 * Prints "CHILD PID", then "N parent" and "N thread" every 50 ms.
 */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static void loop(const char *role)
{
    for (long n = 0;; n++) {
        printf("%ld %s\n", n, role);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void *other(void *arg)
{
    (void)arg;
    loop("thread");
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t kid = fork();
    if (kid == 0) {
        pthread_t t;
        pthread_create(&t, NULL, other, NULL);
        pthread_exit(NULL);
    }
    printf("CHILD %d\n", (int)kid);
    loop("parent");
}
