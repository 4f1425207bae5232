/* ptypair: a tree with its own pseudo-terminal, like `script` or a terminal multiplexer.
 *
 * The parent opens /dev/ptmx and forks a child that starts a session whose
 * controlling terminal is the slave, with stdin/stdout/stderr on it. The child
 * turns ECHO off, sets a window size, forks a grandchild into its own process group
 * and makes that group the terminal's foreground. Both print "ROLE N STATE" every
 * 50 ms to the terminal, STATE being what they see of it: "lflag=... rows=... fg=...
 * tty=/dev/pts/N ok|BAD". The parent copies whatever the master gives to its stdout.
 * The child also opens /dev/tty as its fd 7; the grandchild shares it, and prints
 * through it (its stdout).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void loop(const char *role)
{
    for (long n = 0;; n++) {
        struct termios t;
        struct winsize ws;
        int ok = tcgetattr(0, &t) == 0 && ioctl(0, TIOCGWINSZ, &ws) == 0;
        pid_t fg = tcgetpgrp(0);
        const char *name = ttyname(0);
        /* The foreground group is the grandchild's; /dev/tty opens: the session's ctty. */
        int tty = open("/dev/tty", O_RDWR | O_NOCTTY);
        if (tty < 0) ok = 0; else close(tty);
        printf("%s %ld lflag=%o rows=%d cols=%d fg=%d tty=%s %s\n", role, n,
               ok ? (unsigned)(t.c_lflag & (ECHO | ICANON | ISIG)) : 0u, ok ? ws.ws_row : 0,
               ok ? ws.ws_col : 0, (int)fg, name ? name : "?", ok ? "ok" : "BAD");
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(void)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) return 1;
    char *slave_name = strdup(ptsname(master));
    pid_t child = fork();
    if (child == 0) {
        setsid();
        int s = open(slave_name, O_RDWR);  /* the first tty a leader opens: its ctty */
        if (s < 0) return 1;
        dup2(s, 0); dup2(s, 1); dup2(s, 2);
        if (s > 2) close(s);
        close(master);
        int ctty = open("/dev/tty", O_RDWR);
        if (ctty < 0 || dup2(ctty, 7) != 7) return 1;
        close(ctty);
        struct termios t;
        tcgetattr(0, &t);
        t.c_lflag &= ~ECHO;
        tcsetattr(0, TCSANOW, &t);
        struct winsize ws = {33, 101, 0, 0};
        ioctl(0, TIOCSWINSZ, &ws);
        pid_t g = fork();
        if (g == 0) {
            setpgid(0, 0);
            dup2(7, 1);
            loop("G");
        }
        setpgid(g, g);
        signal(SIGTTOU, SIG_IGN);
        tcsetpgrp(0, g);
        printf("pids %d %d %d\n", getppid(), getpid(), g);
        fflush(stdout);
        loop("C");
    }
    char buf[4096];
    for (;;) {
        ssize_t r = read(master, buf, sizeof buf);
        if (r <= 0) return 2;
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(1, buf + off, r - off);
            if (w <= 0) return 3;
            off += w;
        }
    }
}
