/* sigstate DIR: set up per-process state, then tick every 50 ms.
 *
 * State: SIGUSR2 and SIGRTMIN+3 blocked, SIGHUP ignored, a SIGUSR1 handler running on
 * an alternate stack, umask 027, cwd DIR, comm "sigstate-x", RLIMIT_NOFILE soft limit
 * 123 and RLIMIT_CORE soft limit 4096.
 * On SIGUSR1 the handler notes whether it ran on the alternate stack, and the main loop
 * prints one line "STATE key=value ..." read from syscalls and /proc/self/status.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char altstack[64 * 1024];
static volatile sig_atomic_t want_report, on_altstack;

static void on_usr1(int sig)
{
    char local;
    (void)sig;
    on_altstack = &local >= altstack && &local < altstack + sizeof altstack;
    want_report = 1;
}

static void status_field(const char *key, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t klen = strlen(key);
    strcpy(out, "?");
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            char *v = line + klen + 1;
            while (*v == ' ' || *v == '\t') v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(out, len, "%s", v);
        }
    }
    if (f) fclose(f);
}

static void report(void)
{
    char cwd[512], comm[17] = {0}, blk[32], ign[32], pnd[32], shd[32], um[16];
    stack_t ss;
    struct rlimit nofile, core;
    if (!getcwd(cwd, sizeof cwd)) strcpy(cwd, "?");
    prctl(PR_GET_NAME, comm);
    status_field("SigBlk", blk, sizeof blk);
    status_field("SigIgn", ign, sizeof ign);
    status_field("SigPnd", pnd, sizeof pnd);
    status_field("ShdPnd", shd, sizeof shd);
    status_field("Umask", um, sizeof um);
    sigaltstack(NULL, &ss);
    getrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_CORE, &core);
    dprintf(1, "STATE blk=%s ign=%s pnd=%s shdpnd=%s umask=%s cwd=%s comm=%s "
            "altstack=%d,%zu,%d onstack=%d nofile=%llu,%llu core=%llu,%llu\n",
            blk, ign, pnd, shd, um, cwd, comm,
            ss.ss_sp == altstack, ss.ss_size, ss.ss_flags, (int)on_altstack,
            (unsigned long long)nofile.rlim_cur, (unsigned long long)nofile.rlim_max,
            (unsigned long long)core.rlim_cur, (unsigned long long)core.rlim_max);
}

int main(int argc, char **argv)
{
    if (argc != 2 || chdir(argv[1]) < 0) return 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, SIGRTMIN + 3);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGHUP, SIG_IGN);
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    umask(027);
    prctl(PR_SET_NAME, "sigstate-x");
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 123;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = 4096;
    setrlimit(RLIMIT_CORE, &rl);

    for (long n = 0;; n++) {
        if (want_report) { want_report = 0; report(); }
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
