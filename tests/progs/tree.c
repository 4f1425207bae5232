/* tree: a small process tree that exercises what a tree restore must keep.
 *
 *   P (root) ── A   increments a MAP_SHARED|MAP_ANONYMOUS counter P prints
 *            ├─ B   its own process group
 *            ├─ C   its own session; blocked in waitpid() on G
 *            │   └─ G  exits with status 3 on SIGUSR2
 *            └─ Z   exits with status 5 at once; P reaps it on SIGUSR1
 *
 * Every live process prints "ROLE N" with N = 0, 1, 2, ... every 50 ms to the
 * shared stdout (one open file description, one offset). P's lines are
 * "P N a=X" with X the value A last stored in the shared page. C prints
 * "C waited G STATUS" when G is reaped, P prints "P reaped Z STATUS".
 * Before the loop P prints "pids P A B C G Z".
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr;

static void on_usr(int sig) { (void)sig; got_usr = 1; }

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void loop(const char *role, volatile long *shared)
{
    for (long n = 0;; n++) {
        if (shared) *shared = n;
        dprintf(1, "%s %ld\n", role, n);
        tick();
    }
}

int main(void)
{
    volatile long *shm = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                              -1, 0);
    if (shm == MAP_FAILED) return 1;
    *shm = -1;
    pid_t a = fork();
    if (a == 0) loop("A", shm);
    pid_t b = fork();
    if (b == 0) {
        setpgid(0, 0);
        loop("B", NULL);
    }
    int gpipe[2];
    if (pipe(gpipe)) return 1;
    pid_t c = fork();
    if (c == 0) {
        setsid();
        pid_t g = fork();
        if (g == 0) {
            signal(SIGUSR2, on_usr);
            dprintf(gpipe[1], "%d\n", getpid());
            for (long n = 0;; n++) {
                if (got_usr) _exit(3);
                dprintf(1, "G %ld\n", n);
                tick();
            }
        }
        int status;
        while (waitpid(g, &status, 0) < 0) ;
        dprintf(1, "C waited G %d\n", WEXITSTATUS(status));
        loop("C", NULL);
    }
    char buf[32] = {0};
    if (read(gpipe[0], buf, sizeof buf - 1) <= 0) return 1;
    pid_t g = atoi(buf);
    pid_t z = fork();
    if (z == 0) _exit(5);
    signal(SIGUSR1, on_usr);
    dprintf(1, "pids %d %d %d %d %d %d\n", getpid(), a, b, c, g, z);
    for (long n = 0;; n++) {
        if (got_usr) {
            int status;
            got_usr = 0;
            if (waitpid(z, &status, 0) == z)
                dprintf(1, "P reaped Z %d\n", WEXITSTATUS(status));
        }
        dprintf(1, "P %ld a=%ld\n", n, *shm);
        tick();
    }
}
