/* vforker: print 0, 1, 2, ... one number per line; between numbers, vfork() a child
 * that spins for 20 ms before it execs /bin/true, and wait for it. A dump nearly
 * always finds the child still sharing its parent's memory, on its way to exec. */
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (long i = 0;; i++) {
        printf("%ld\n", i);
        pid_t pid = vfork();
        if (pid == 0) {
            double until = now() + 0.02;
            while (now() < until)
                ;
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (pid < 0) return 1;
        int status;
        if (waitpid(pid, &status, 0) != pid || status != 0) {
            printf("CHILD FAILED %d\n", status);
            return 2;
        }
    }
}
