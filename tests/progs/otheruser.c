/* otheruser: a root parent and a child that runs as nobody (65534:65534, no groups) with
 * limits of its own, as a server's workers do.
 *
 * The child lowers its open-files limit to 512 (hard 1024) and its core limit to 0
 * before dropping root, so that only it, or a process with CAP_SYS_RESOURCE, may read
 * them with prlimit64. Both print "N parent" / "N child" every 50 ms; the child's PID
 * is printed first: "CHILD PID".
 */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
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

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    pid_t kid = fork();
    if (kid == 0) {
        struct rlimit nofile = {512, 1024}, core = {0, 0};
        if (setrlimit(RLIMIT_NOFILE, &nofile) || setrlimit(RLIMIT_CORE, &core) ||
            setgroups(0, NULL) || setgid(65534) || setuid(65534))
            return 1;
        loop("child");
    }
    printf("CHILD %d\n", (int)kid);
    loop("parent");
}
