/* knobs: scheduling per thread and the process's kernel knobs.
 *
 * Threads: main SCHED_BATCH nice 7; "fifo" SCHED_FIFO priority 10, machine-check kill
 * early; "rr" nice -3 then SCHED_RR priority 3; "idle" SCHED_IDLE nice 4, timer slack
 * 777000 ns, rdtsc faulting (PR_TSC_SIGSEGV).
 * Process: oom_score_adj 345, THP disabled, child subreaper, membarrier registered
 * for private expedited commands, memory-deny-write-execute, not dumpable.
 * With the argument "drop-nice", every thread then drops CAP_SYS_NICE from all its
 * capability sets (keeping its policy).
 * It forks a child, which forks a grandchild; the child exits on SIGTERM, leaving the
 * grandchild to the subreaper. Prints "CHILD PID" and "GRANDCHILD PID", then every
 * 50 ms "N thp=T sub=S mb=M dumpable=D mdwe=W threads=..." (what the process reads of
 * itself; per thread "slack/tsc/mce" as each thread reads its own).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void tick(void)
{
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void set_sched(int policy, int prio, int nice)
{
    if (setpriority(PRIO_PROCESS, syscall(SYS_gettid), nice))
        die("setpriority");
    struct sched_param p = {prio};
    if (sched_setscheduler(syscall(SYS_gettid), policy, &p))
        die("sched_setscheduler");
}

static int drop_nice;

static void drop_sys_nice(void)
{
    if (!drop_nice)
        return;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_NICE, 0, 0, 0) || syscall(SYS_capget, &h, d))
        die("drop CAP_SYS_NICE");
    d[0].effective &= ~(1u << CAP_SYS_NICE);
    d[0].permitted &= ~(1u << CAP_SYS_NICE);
    d[0].inheritable &= ~(1u << CAP_SYS_NICE);
    if (syscall(SYS_capset, &h, d))
        die("capset");
}

struct spec {
    int policy, prio, nice;
    long slack;
    int tsc, mce;
    volatile long seen_slack;
    volatile int seen_tsc, seen_mce;
};

static volatile int ready;

static void *thread_main(void *arg)
{
    struct spec *s = arg;
    if (s->slack && prctl(PR_SET_TIMERSLACK, s->slack, 0, 0, 0))
        die("timerslack");
    if (s->tsc && prctl(PR_SET_TSC, s->tsc, 0, 0, 0))
        die("tsc");
    if (s->mce >= 0 && prctl(PR_MCE_KILL, PR_MCE_KILL_SET, s->mce, 0, 0))
        die("mce");
    set_sched(s->policy, s->prio, s->nice);
    drop_sys_nice();
    __sync_fetch_and_add(&ready, 1);
    for (;;) {
        int tsc = 0;
        prctl(PR_GET_TSC, &tsc, 0, 0, 0);
        s->seen_tsc = tsc;
        s->seen_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        s->seen_mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
        tick();
    }
    return NULL;
}

int main(int argc, char **argv)
{
    drop_nice = argc > 1 && strcmp(argv[1], "drop-nice") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1))
        die("subreaper");
    pid_t kid = fork();
    if (kid == 0) {
        pid_t grandkid = fork();
        if (grandkid == 0) {
            for (;;)
                pause();
        }
        printf("GRANDCHILD %d\n", grandkid);
        signal(SIGTERM, SIG_DFL);
        for (;;)
            pause();
    }
    printf("CHILD %d\n", kid);
    int fd = open("/proc/self/oom_score_adj", O_WRONLY);
    if (fd < 0 || write(fd, "345", 3) != 3)
        die("oom_score_adj");
    close(fd);
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
        die("thp");
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0))
        die("membarrier");
    static struct spec specs[] = {{SCHED_FIFO, 10, 0, 0, 0, PR_MCE_KILL_EARLY, 0, 0, 0},
                                  {SCHED_RR, 3, -3, 0, 0, -1, 0, 0, 0},
                                  {SCHED_IDLE, 0, 4, 777000, PR_TSC_SIGSEGV, -1, 0, 0, 0}};
    for (int i = 0; i < 3; i++) {
        pthread_t t;
        pthread_create(&t, NULL, thread_main, &specs[i]);
    }
    set_sched(SCHED_BATCH, 0, 7);
    while (ready < 3)
        usleep(1000);
    drop_sys_nice();
    if (prctl(PR_SET_DUMPABLE, 0))
        die("dumpable");
    if (prctl(65 /* PR_SET_MDWE */, 1 /* PR_MDWE_REFUSE_EXEC_GAIN */, 0, 0, 0))
        die("mdwe");
    for (long n = 0;; n++) {
        int sub = 0;
        prctl(PR_GET_CHILD_SUBREAPER, &sub);
        long mb = syscall(SYS_membarrier, 1 << 9 /* MEMBARRIER_CMD_GET_REGISTRATIONS */, 0, 0);
        printf("%ld thp=%d sub=%d mb=%ld dumpable=%d mdwe=%d threads=", n,
               prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), sub, mb, prctl(PR_GET_DUMPABLE),
               prctl(66 /* PR_GET_MDWE */, 0, 0, 0, 0));
        for (int i = 0; i < 3; i++)
            printf("%s%ld/%d/%d", i ? "," : "", specs[i].seen_slack, specs[i].seen_tsc,
                   specs[i].seen_mce);
        printf("\n");
        tick();
    }
}
