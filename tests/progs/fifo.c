/* fifo: a parent and child talking through a named pipe, with bytes left in it.
 *
 * Usage: fifo PATH   (PATH: a FIFO made by the test)
 * The child opens PATH for writing, the parent for reading. Before the loop the child
 * writes "early 0".."early 99" (unread until SIGUSR1 reaches the parent). Then every
 * 50 ms the child writes nothing and both print "ROLE N". On SIGUSR1 the parent reads
 * everything buffered and prints "drained ok K" if it is exactly the 100 early lines in
 * order ("drained BAD ..." otherwise); then the child's later "late N" lines, sent on
 * SIGUSR2 to the child, are read and printed by the parent as "got late N".
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t usr1, usr2;
static void on1(int s) { (void)s; usr1 = 1; }
static void on2(int s) { (void)s; usr2 = 1; }

static void tick(void) { struct timespec ts = {0, 50 * 1000 * 1000}; nanosleep(&ts, NULL); }

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    signal(SIGUSR1, on1);
    signal(SIGUSR2, on2);
    pid_t child = fork();
    if (child == 0) {
        int w = open(argv[1], O_WRONLY);
        if (w < 0) return 3;
        for (int i = 0; i < 100; i++) dprintf(w, "early %d\n", i);
        for (long n = 0, late = 0;; n++) {
            if (usr2) { usr2 = 0; dprintf(w, "late %ld\n", late++); }
            dprintf(1, "C %ld\n", n);
            tick();
        }
    }
    int r = open(argv[1], O_RDONLY);
    if (r < 0) return 3;
    dprintf(1, "pids %d %d\n", getpid(), child);
    char buf[8192];
    size_t have = 0;
    int drained = 0;
    for (long n = 0;; n++) {
        if (usr1 && !drained) {
            fcntl(r, F_SETFL, O_NONBLOCK);
            ssize_t got;
            while ((got = read(r, buf + have, sizeof buf - 1 - have)) > 0) have += got;
            buf[have] = 0;
            char want[8192];
            size_t len = 0;
            for (int i = 0; i < 100; i++) len += sprintf(want + len, "early %d\n", i);
            dprintf(1, "drained %s %zu\n", have == len && !memcmp(buf, want, len) ? "ok" : "BAD", have);
            drained = 1;
        } else if (drained) {
            ssize_t got = read(r, buf, sizeof buf - 1);
            if (got > 0) { buf[got] = 0; dprintf(1, "got %s", buf); }
        }
        dprintf(1, "P %ld\n", n);
        tick();
    }
}
