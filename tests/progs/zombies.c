/* zombies: a parent holding three zombies that ended three ways, reaped on SIGUSR1.
 *
 *   E exits with status 7;
 *   K is killed by its parent with SIGKILL ("a zombie whose parent killed it");
 *   T dies of SIGTERM it sends itself.
 * Prints "pids E K T" once all three are zombies, then "N" every 50 ms; on SIGUSR1 it
 * reaps them and prints "reaped PID exited CODE" or "reaped PID killed SIG".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
    (void)sig;
    got_usr1 = 1;
}

static int is_zombie(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    return p && p[2] == 'Z';
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGUSR1, on_usr1);
    pid_t e = fork();
    if (e == 0)
        _exit(7);
    pid_t k = fork();
    if (k == 0)
        for (;;)
            pause();
    pid_t t = fork();
    if (t == 0) {
        raise(SIGTERM);
        _exit(1);
    }
    kill(k, SIGKILL);
    while (!is_zombie(e) || !is_zombie(k) || !is_zombie(t))
        usleep(1000);
    printf("pids %d %d %d\n", (int)e, (int)k, (int)t);
    for (long n = 0;; n++) {
        if (got_usr1) {
            got_usr1 = 0;
            pid_t pids[] = {e, k, t};
            for (int i = 0; i < 3; i++) {
                int status;
                if (waitpid(pids[i], &status, 0) != pids[i])
                    printf("reaped %d failed\n", (int)pids[i]);
                else if (WIFEXITED(status))
                    printf("reaped %d exited %d\n", (int)pids[i], WEXITSTATUS(status));
                else
                    printf("reaped %d killed %d\n", (int)pids[i], WTERMSIG(status));
            }
        }
        printf("%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
