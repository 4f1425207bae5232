/* ptybuf: bytes left waiting in a pseudo-terminal pair, both ways.
 *
 * The parent opens a pair, gives the slave to uid 4321, group 5, mode 0620, and
 * forks a child: a session leader whose controlling terminal and stdio are the
 * slave (canonical mode, no echo). The child writes lines and a partial line to
 * the terminal, nobody reading them yet; the parent writes two lines and a partial
 * one to the master, which the child does not read yet. Then the parent prints
 * "pids PARENT CHILD" to its stdout and both wait for SIGUSR1.
 *
 * On SIGUSR1 the parent copies everything the master gives to its stdout, and
 * writes " tail\n" to the master; the child (on its own SIGUSR1) reads its
 * terminal line by line and writes back "got <line>" for each.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr(int sig) { (void)sig; go = 1; }

static void wait_go(void)
{
    sigset_t none;
    sigemptyset(&none);
    while (!go) sigsuspend(&none);
}

static void put(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) != (ssize_t)strlen(s)) exit(3);
}

int main(void)
{
    sigset_t usr;
    sigemptyset(&usr);
    sigaddset(&usr, SIGUSR1);
    sigaddset(&usr, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr, NULL);
    signal(SIGUSR1, on_usr);
    signal(SIGUSR2, on_usr);
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) return 1;
    char *name = strdup(ptsname(master));
    if (chown(name, 4321, 5) || chmod(name, 0620)) return 1;
    pid_t child = fork();
    if (child == 0) {
        setsid();
        int s = open(name, O_RDWR);
        if (s < 0) return 1;
        dup2(s, 0); dup2(s, 1); dup2(s, 2);
        if (s > 2) close(s);
        close(master);
        struct termios t;
        tcgetattr(0, &t);
        t.c_lflag &= ~ECHO;
        tcsetattr(0, TCSANOW, &t);
        for (int i = 0; i < 5; i++) printf("out %d\n", i);
        printf("out partial ");
        fflush(stdout);
        kill(getppid(), SIGUSR2);
        wait_go();
        char line[256];
        while (fgets(line, sizeof line, stdin)) {
            printf("got %s", line);
            fflush(stdout);
        }
        return 0;
    }
    wait_go();  /* the child wrote its lines */
    go = 0;
    put(master, "line one\nline two\npartial");
    printf("pids %d %d\n", getpid(), child);
    fflush(stdout);
    wait_go();
    put(master, " tail\n");
    kill(child, SIGUSR1);
    char buf[4096];
    for (;;) {
        ssize_t r = read(master, buf, sizeof buf);
        if (r <= 0) return 2;
        if (write(1, buf, r) != r) return 3;
    }
}
