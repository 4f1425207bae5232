/* creds: credentials that are neither root's nor a plain user's, different per thread.
 *
 * Started as root, it sets, with raw syscalls (glibc would copy them to every thread):
 *   loginuid 4321; groups 4242 4243; a bounding set of 7 capabilities; permitted
 *   {chown kill setuid setgid setpcap net_bind_service net_raw}; inheritable
 *   {net_bind_service net_raw}; uids 1000 1001 1002 (fsuid 1002), gids 2000 2001 2002
 *   (fsgid 2001); ambient {net_bind_service}; securebits NO_SETUID_FIXUP; effective
 *   {kill net_raw}; parent-death signal SIGUSR2; dumpable again (the uid change made it
 *   not dumpable, fs.suid_dumpable being 0).
 * A second thread then takes uids 3000 3000 3000, effective {}, no_new_privs and
 * parent-death signal SIGHUP, for itself only.
 *
 * Prints "READY" once set up, then every 50 ms "N main sb=S pd=P dumpable=D" and
 * "N thread sb=S pd=P dumpable=D" (securebits, parent-death signal and the process's
 * dumpable flag as each thread reads them itself).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/capability.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BIT(c) (1ull << (c))

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void setcaps(unsigned eff, unsigned prm, unsigned inh)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {{eff, prm, inh}, {0, 0, 0}};
    if (syscall(SYS_capset, &h, d))
        die("capset");
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int thread_ready;

static void report(long n, const char *who)
{
    int pd = 0;
    prctl(PR_GET_PDEATHSIG, &pd);
    int sb = prctl(PR_GET_SECUREBITS);
    pthread_mutex_lock(&lock);
    printf("%ld %s sb=%d pd=%d dumpable=%d\n", n, who, sb, pd, prctl(PR_GET_DUMPABLE));
    fflush(stdout);
    pthread_mutex_unlock(&lock);
}

static void *other(void *arg)
{
    (void)arg;
    unsigned all = BIT(CAP_CHOWN) | BIT(CAP_KILL) | BIT(CAP_SETUID) | BIT(CAP_SETGID) |
                   BIT(CAP_SETPCAP) | BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_NET_RAW);
    setcaps(BIT(CAP_SETUID), all, BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_NET_RAW));
    if (syscall(SYS_setresuid, 3000, 3000, 3000))
        die("thread setresuid");
    setcaps(0, all, BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_NET_RAW));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_PDEATHSIG, SIGHUP))
        die("thread prctl");
    thread_ready = 1;
    for (long n = 0;; n++) {
        report(n, "thread");
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(void)
{
    int fd = open("/proc/self/loginuid", O_WRONLY);
    if (fd < 0 || write(fd, "4321", 4) != 4)
        die("loginuid");
    close(fd);
    gid_t groups[] = {4242, 4243};
    if (syscall(SYS_setgroups, 2, groups))
        die("setgroups");
    unsigned long long keep = BIT(CAP_CHOWN) | BIT(CAP_KILL) | BIT(CAP_SETUID) | BIT(CAP_SETGID) |
                    BIT(CAP_SETPCAP) | BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_NET_RAW);
    for (int c = 0; c <= 40; c++)
        if (!(keep & BIT(c)) && prctl(PR_CAPBSET_DROP, c, 0, 0, 0))
            die("PR_CAPBSET_DROP");
    unsigned inh = BIT(CAP_NET_BIND_SERVICE) | BIT(CAP_NET_RAW);
    setcaps(keep, keep, inh);
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
        die("keepcaps");
    if (syscall(SYS_setresgid, 2000, 2001, 2002) || syscall(SYS_setresuid, 1000, 1001, 1002))
        die("setres*id");
    setcaps(keep, keep, inh);
    if (syscall(SYS_setfsgid, 2001) < 0 || syscall(SYS_setfsuid, 1002) < 0)
        die("setfs*id");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
        die("ambient");
    if (prctl(PR_SET_SECUREBITS, 1 << 2 /* SECBIT_NO_SETUID_FIXUP */))
        die("securebits");
    setcaps(BIT(CAP_KILL) | BIT(CAP_NET_RAW), keep, inh);
    if (prctl(PR_SET_PDEATHSIG, SIGUSR2))
        die("pdeathsig");
    pthread_t t;
    if (pthread_create(&t, NULL, other, NULL))
        die("pthread_create");
    while (!thread_ready)
        usleep(1000);
    if (prctl(PR_SET_DUMPABLE, 1)) /* after every uid change, which resets it */
        die("dumpable");
    printf("READY\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        report(n, "main");
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
