/* howto_pipe: the HOWTO's second example (external unnamed pipes), for ckpt.
 *
 * Usage: howto_pipe [-s] CKPT IMAGES_DIR
 *
 * The parent, a child subreaper, forks a child that writes "hello 1" .. "hello 4"
 * to it through a pipe (-s: a unix socketpair) on the child's fd 4. After two
 * messages the child waits for SIGUSR1 (so no message can race the dump, however
 * loaded the machine), and the parent runs `CKPT dump` on the child, makes a new pipe,
 * and runs `CKPT restore -d ... --inherit-fd fd[3]:pipe:[OLD]` with the new pipe's
 * write end as fd 3, sends the restored child SIGUSR1. It reads messages 3 and 4 from
 * the new pipe, reaps the child
 * and exits 0 if all went as it should (1 otherwise).
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int use_socket;
static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
    (void)sig;
    go = 1;
}

static void make_pair(int fds[2])
{
    if (use_socket ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : pipe(fds)) {
        perror("pipe");
        exit(1);
    }
}

static const char *name_of(int fd, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, buf, len - 1);
    buf[n < 0 ? 0 : n] = 0;
    return buf;
}

static int read_line(int fd, char *buf, size_t len)
{
    size_t n = 0;
    while (n < len - 1) {
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0) return -1;
        if (buf[n] == '\n') break;
        n++;
    }
    buf[n] = 0;
    return 0;
}

static int run(char *const argv[], int keep_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (keep_fd >= 0 && keep_fd != 3) {
            dup2(keep_fd, 3);
            close(keep_fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    dprintf(1, "[%s %d]", argv[1], pid);
    for (int i = 0; argv[i]; i++) dprintf(1, " %s", argv[i]);
    dprintf(1, "\n");
    int status;
    waitpid(pid, &status, 0);
    dprintf(1, "[parent %d] [%s %d] exited with status %d\n", getpid(), argv[1], pid,
            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int main(int argc, char **argv)
{
    int opt;
    while ((opt = getopt(argc, argv, "s")) != -1) use_socket = 1;
    if (argc - optind != 2) return 2;
    char *ckpt = argv[optind], *dir = argv[optind + 1];
    const char *kind = use_socket ? "socket" : "pipe";
    fcntl(1, F_SETFL, fcntl(1, F_GETFL) | O_APPEND);  /* shared with ckpt and the child */
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    int old[2];
    make_pair(old);
    pid_t child = fork();
    if (child == 0) {
        dup2(old[1], 4);
        close(old[0]);
        if (old[1] != 4) close(old[1]);
        char name[64];
        signal(SIGUSR1, on_usr1);
        for (int i = 1; i <= 4; i++) {
            if (i == 3)
                while (!go) pause();  /* dumped and restored meanwhile */
            dprintf(1, "[child %d] writing hello %d to %s via fd 4\n", getpid(), i,
                    name_of(4, name, sizeof name));
            dprintf(4, "hello %d\n", i);
            struct timespec ts = {0, 400 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        return 0;
    }
    close(old[1]);
    char line[128], name[64], oldname[64];
    name_of(old[0], oldname, sizeof oldname);
    for (int i = 1; i <= 2; i++) {
        if (read_line(old[0], line, sizeof line)) return 1;
        dprintf(1, "[parent %d] read %s from %s\n", getpid(), line, oldname);
    }
    /* The child's end: for a pipe both ends share the inode, a socket has its own. */
    char inode[32];
    if (use_socket) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/fd/4", child);
        struct stat st;
        if (stat(path, &st)) return 1;
        snprintf(inode, sizeof inode, "%lu", (unsigned long)st.st_ino);
    } else {
        snprintf(inode, sizeof inode, "%s", strchr(oldname, '[') + 1);
        *strchr(inode, ']') = 0;
    }
    char pidstr[16], ext[64];
    snprintf(pidstr, sizeof pidstr, "%d", child);
    snprintf(ext, sizeof ext, "unix[%s]", inode);
    char *dump_sock[] = {ckpt, "dump", "-D", dir, "-o", "dump.log", "-v4", "-j", "-t", pidstr,
                         "--external", ext, NULL};
    char *dump_pipe[] = {ckpt, "dump", "-D", dir, "-o", "dump.log", "-v4", "-j", "-t", pidstr,
                         NULL};
    if (run(use_socket ? dump_sock : dump_pipe, -1)) return 1;
    int status;
    waitpid(child, &status, 0);
    dprintf(1, "[parent %d] [child %d] exited with status %d\n", getpid(), child,
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    fcntl(old[0], F_SETFL, O_NONBLOCK);
    ssize_t left = read(old[0], line, sizeof line);
    if (left > 0) dprintf(1, "LEFTOVER %zd bytes in the old %s\n", left, kind);
    close(old[0]);

    dprintf(1, "[parent %d] creating a new %s\n", getpid(), kind);
    int new[2];
    make_pair(new);
    char inherit[96];
    snprintf(inherit, sizeof inherit, "fd[3]:%s:[%s]", kind, inode);
    char *restore[] = {ckpt, "restore", "-d", "-D", dir, "-o", "restore.log", "--pidfile",
                       "restore.pid", "-v4", "-j", "--inherit-fd", inherit, NULL};
    if (run(restore, new[1])) return 1;
    close(new[1]);
    kill(child, SIGUSR1);
    name_of(new[0], name, sizeof name);
    int ok = 1;
    for (int i = 3; i <= 4; i++) {
        if (read_line(new[0], line, sizeof line)) return 1;
        dprintf(1, "[parent %d] read %s from %s\n", getpid(), line, name);
        char want[16];
        snprintf(want, sizeof want, "hello %d", i);
        ok &= strcmp(line, want) == 0;
    }
    if (waitpid(child, &status, 0) != child) {
        perror("waitpid");
        return 1;
    }
    dprintf(1, "[parent %d] [child %d] exited with status %d\n", getpid(), child,
            WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return ok && WIFEXITED(status) && WEXITSTATUS(status) == 0 && left <= 0 ? 0 : 1;
}
