/* memfd_kinds: memfds executed, mapped executable, and sealed every way, checked on
 * every tick.
 *
 *   script  memfd "script" (no flags) holding "#!/bin/true", also reopened read-only
 *           and mapped private through it, and mapped shared read-write: a child
 *           execveat()s it (AT_EMPTY_PATH) on every tick, which fails (ETXTBSY) if
 *           any description of it is open for writing but the first one
 *   code    memfd "code" holding x86-64 code (mov eax, 42; ret), mapped PROT_READ |
 *           PROT_EXEC with its fd closed: called on every tick
 *   future  memfd "future" mapped shared read-write, then sealed F_SEAL_FUTURE_WRITE |
 *           F_SEAL_SHRINK | F_SEAL_GROW: the old mapping still writes, a new writable
 *           mapping and write() are refused
 *   wseal   memfd "wseal" sealed F_SEAL_WRITE | F_SEAL_SEAL, mapped shared read-only
 *   noexec  memfd "noexec" made with MFD_NOEXEC_SEAL (F_SEAL_EXEC, mode 0666)
 *   exec    memfd "exec" made with MFD_EXEC | MFD_ALLOW_SEALING, then F_SEAL_EXEC (which
 *           on an executable memfd brings every write seal with it)
 * Prints "ready", then "N ok" or "N BAD what" every 50 ms.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#define MFD_EXEC 0x0010U
#endif
#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif

#define PG 4096
#define FUTURE (F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)
#define WSEAL (F_SEAL_WRITE | F_SEAL_SEAL)

static int run_script(int fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"true", NULL}, *envp[] = {NULL};
        syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
        _exit(100 + errno);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static mode_t mode_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) ? 0 : st.st_mode & 07777;
}

static int seals(int fd)
{
    return fcntl(fd, F_GET_SEALS);
}

int main(void)
{
    static const char script[] = "#!/bin/true\n";
    static const unsigned char code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
    char path[64];

    int sfd = memfd_create("script", 0);
    if (sfd < 0 || write(sfd, script, sizeof script - 1) != sizeof script - 1) return 2;
    snprintf(path, sizeof path, "/proc/self/fd/%d", sfd);
    int ro = open(path, O_RDONLY);
    char *sp = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ro, 0);
    char *ss = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    if (ro < 0 || sp == MAP_FAILED || ss == MAP_FAILED) return 3;
    if (run_script(sfd)) return 4;

    int cfd = memfd_create("code", MFD_CLOEXEC);
    if (cfd < 0 || write(cfd, code, sizeof code) != sizeof code) return 2;
    int (*fn)(void) = (int (*)(void))mmap(NULL, PG, PROT_READ | PROT_EXEC, MAP_PRIVATE, cfd, 0);
    if ((void *)fn == MAP_FAILED) return 3;
    close(cfd);

    int ffd = memfd_create("future", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (ffd < 0 || ftruncate(ffd, PG)) return 2;
    volatile long *fm = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, ffd, 0);
    if (fm == MAP_FAILED || fcntl(ffd, F_ADD_SEALS, FUTURE)) return 5;

    int wfd = memfd_create("wseal", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (wfd < 0 || write(wfd, "sealed", 6) != 6 || fcntl(wfd, F_ADD_SEALS, WSEAL)) return 5;
    char *wm = mmap(NULL, PG, PROT_READ, MAP_SHARED, wfd, 0);
    if (wm == MAP_FAILED) return 3;

    int nfd = memfd_create("noexec", MFD_CLOEXEC | MFD_NOEXEC_SEAL);
    int efd = memfd_create("exec", MFD_CLOEXEC | MFD_EXEC | MFD_ALLOW_SEALING);
    if (nfd < 0 || efd < 0 || fcntl(efd, F_ADD_SEALS, F_SEAL_EXEC)) return 6;
    int nseals = seals(nfd), eseals = seals(efd);
    mode_t nmode = mode_of(nfd), emode = mode_of(efd);

    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        const char *bad = NULL;
        int r;
        fm[0] = n;
        long seen = -1;
        if ((r = run_script(sfd)) != 0) {
            static char why[32];
            snprintf(why, sizeof why, "exec %d", r);
            bad = why;
        } else if (memcmp(sp, script, sizeof script - 1) || memcmp(ss, script, sizeof script - 1))
            bad = "script mappings";
        else if (fn() != 42)
            bad = "code";
        else if (seals(ffd) != FUTURE)
            bad = "future seals";
        else if (pread(ffd, &seen, sizeof seen, 0) != sizeof seen || seen != n)
            bad = "future mapping";
        else if (write(ffd, "x", 1) != -1 || errno != EPERM)
            bad = "future write";
        else if (mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, ffd, 0) != MAP_FAILED)
            bad = "future mmap";
        else if (seals(wfd) != WSEAL || memcmp(wm, "sealed", 6))
            bad = "wseal";
        else if (write(wfd, "x", 1) != -1 || errno != EPERM)
            bad = "wseal write";
        else if (seals(nfd) != nseals || !(nseals & F_SEAL_EXEC) || mode_of(nfd) != nmode)
            bad = "noexec";
        else if (fchmod(nfd, 0755) != -1)
            bad = "noexec chmod";
        else if (seals(efd) != eseals || !(eseals & F_SEAL_EXEC) || mode_of(efd) != emode
                 || !(emode & 0111))
            bad = "exec";
        if (bad) printf("%ld BAD %s\n", n, bad);
        else printf("%ld ok\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
