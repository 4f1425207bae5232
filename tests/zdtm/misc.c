/* Terminals (pty pairs, controlling terminals, sessions on them), seccomp, and the
 * small per-process knobs: personality, name, no_new_privs, affinity, timer slack. */
#include "zdtm.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <termios.h>

static int open_pair(int *master, char *name, size_t size)
{
	*master = SYS(posix_openpt(O_RDWR | O_NOCTTY));
	SYS(grantpt(*master));
	SYS(unlockpt(*master));
	SYS(ptsname_r(*master, name, size));
	return SYS(open(name, O_RDWR | O_NOCTTY));
}

/* A pty pair: settings, window size, bytes waiting both ways. */
static int pty(void)
{
	char name[64];
	int m, s = open_pair(&m, name, sizeof(name));
	struct termios t;
	SYS(tcgetattr(s, &t));
	t.c_lflag &= ~ECHO;
	t.c_cc[VINTR] = 3;
	t.c_cc[VMIN] = 1;
	SYS(tcsetattr(s, TCSANOW, &t));
	struct winsize ws = { 33, 111, 0, 0 };
	SYS(ioctl(m, TIOCSWINSZ, &ws));
	SYS(write(m, "typed\n", 6));
	SYS(write(s, "shown\n", 6));
	zt_ready();
	zt_wait();
	struct termios t2;
	SYS(tcgetattr(s, &t2));
	CHECK(!(t2.c_lflag & ECHO) && t2.c_cc[VINTR] == 3, "termios");
	struct winsize w2;
	SYS(ioctl(s, TIOCGWINSZ, &w2));
	CHECK(w2.ws_row == 33 && w2.ws_col == 111, "window size %dx%d", w2.ws_row, w2.ws_col);
	char buf[16];
	ssize_t n = read(s, buf, sizeof(buf));
	CHECK(n == 6 && !memcmp(buf, "typed\n", 6), "bytes typed: %zd", n);
	n = read(m, buf, sizeof(buf));
	CHECK(n >= 6 && !memcmp(buf, "shown", 5), "bytes shown: %zd", n);
	/* the pair's number may differ: another pair may hold it by then (no devpts of
	 * its own on a shared host); the slave is still the master's */
	char now[64];
	SYS(ptsname_r(m, now, sizeof(now)));
	CHECK(!strncmp(now, "/dev/pts/", 9), "slave %s", now);
	zt_pass();
}

/* A child session leader with a pty as its controlling terminal, a job in the
 * foreground group, and one in the background. */
static int pty_session(void)
{
	char name[64];
	int m, s = open_pair(&m, name, sizeof(name));
	close(s);
	pid_t c = SYS(fork());
	if (c == 0) {
		setsid();
		int t = SYS(open(name, O_RDWR)); /* becomes the controlling terminal */
		pid_t bg = SYS(fork());
		if (bg == 0) {
			setpgid(0, 0);
			zt_wait();
			_exit(tcgetpgrp(t) != getpgrp() ? 0 : 1);
		}
		setpgid(bg, bg);
		pid_t fg = SYS(fork());
		if (fg == 0) {
			setpgid(0, 0);
			zt_wait();
			_exit(tcgetpgrp(t) == getpgrp() && tcgetsid(t) == getsid(0) ? 0 : 1);
		}
		setpgid(fg, fg);
		signal(SIGTTOU, SIG_IGN);
		SYS(tcsetpgrp(t, fg));
		zt_wait();
		kill(bg, SIGTERM);
		kill(fg, SIGTERM);
		int a = zt_reap(bg), b = zt_reap(fg);
		_exit(a == 0 && b == 0 && tcgetsid(t) == getpid() ? 0 : 1);
	}
	usleep(100000);
	zt_ready();
	zt_wait();
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* A pty whose master was closed (hung up slave). */
static int pty_hungup(void)
{
	char name[64];
	int m, s = open_pair(&m, name, sizeof(name));
	close(m);
	zt_ready();
	zt_wait();
	char b;
	CHECK(read(s, &b, 1) <= 0, "a hung-up slave reads data");
	zt_pass();
}

/* A pty pair where the child holds the master and the parent the slave. */
static int pty_split(void)
{
	char name[64];
	int m, s = open_pair(&m, name, sizeof(name));
	pid_t c = SYS(fork());
	if (c == 0) {
		close(s);
		zt_wait();
		char buf[8];
		ssize_t n = read(m, buf, sizeof(buf));
		_exit(n >= 4 && !memcmp(buf, "from", 4) ? 0 : 1);
	}
	close(m);
	zt_ready();
	zt_wait();
	SYS(write(s, "from", 4));
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* A pty's modes beyond its settings: packet mode, exclusive use (TIOCEXCL), settings
 * locked against change (TIOCSLCKTRMIOS), and every field of its termios. */
static int pty_modes(void)
{
	char name[64];
	int m, s = open_pair(&m, name, sizeof(name));
	struct termios t;
	SYS(tcgetattr(s, &t));
	t.c_iflag = (t.c_iflag | IUTF8 | IXOFF) & ~ICRNL;
	t.c_oflag &= ~OPOST;
	t.c_cflag = (t.c_cflag & ~CSIZE) | CS7 | PARENB;
	t.c_lflag &= ~(ICANON | ECHO);
	t.c_cc[VMIN] = 3;
	t.c_cc[VTIME] = 7;
	t.c_cc[VERASE] = 8;
	cfsetospeed(&t, B9600);
	cfsetispeed(&t, B9600);
	SYS(tcsetattr(s, TCSANOW, &t));
	int one = 1;
	SYS(ioctl(m, TIOCPKT, &one));
	SYS(ioctl(s, TIOCEXCL));
	struct termios lock;
	memset(&lock, 0, sizeof(lock));
	lock.c_cflag = CSIZE; /* the character size may not change */
	SYS(ioctl(s, TIOCSLCKTRMIOS, &lock));
	struct termios before, after;
	memset(&before, 0, sizeof(before));
	memset(&after, 0, sizeof(after));
	SYS(tcgetattr(s, &before));
	zt_ready();
	zt_wait();
	SYS(tcgetattr(s, &after));
	CHECK(before.c_iflag == after.c_iflag && before.c_oflag == after.c_oflag
	      && before.c_cflag == after.c_cflag && before.c_lflag == after.c_lflag
	      && before.c_line == after.c_line && !memcmp(before.c_cc, after.c_cc, NCCS)
	      && cfgetospeed(&after) == B9600, "termios changed");
	int v = 0;
	SYS(ioctl(m, TIOCGPKT, &v));
	CHECK(v == 1, "packet mode lost");
	v = 0;
	SYS(ioctl(s, TIOCGEXCL, &v));
	CHECK(v == 1, "exclusive mode (TIOCEXCL) lost");
	memset(&lock, 0, sizeof(lock));
	SYS(ioctl(s, TIOCGLCKTRMIOS, &lock));
	CHECK(lock.c_cflag == CSIZE && !lock.c_iflag && !lock.c_lflag,
	      "locked settings (TIOCSLCKTRMIOS) %x, expected %x", lock.c_cflag, CSIZE);
	zt_pass();
}

/* A process confined by Landlock (here: it may not make directories): refused by
 * design (no one can read its rules back), and it runs on confined. */
static int landlocked(void)
{
	struct { unsigned long long fs, net, scoped; } attr = { 1ULL << 7 /* MAKE_DIR */, 0, 0 };
	int rules = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr.fs), 0);
	if (rules < 0)
		zt_setup_fail("landlock_create_ruleset");
	SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	SYS(syscall(SYS_landlock_restrict_self, rules, 0));
	close(rules);
	CHECK(mkdir("made", 0755) < 0 && errno == EACCES, "set-up: not confined");
	zt_ready();
	zt_wait();
	CHECK(mkdir("made", 0755) < 0 && errno == EACCES, "no longer confined");
	zt_pass();
}

static int seccomp_strict(void)
{
	int p[2];
	SYS(pipe(p));
	pid_t c = SYS(fork());
	if (c == 0) {
		close(p[1]);
		SYS(prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT));
		char x = 0;
		ssize_t n = read(p[0], &x, 1); /* blocks until the parent writes */
		syscall(SYS_exit, n == 1 && x == 'g' ? 0 : 1);
	}
	close(p[0]);
	usleep(50000);
	zt_ready();
	zt_wait();
	char path[64], buf[2048];
	snprintf(path, sizeof(path), "/proc/%d/status", c);
	int fd = SYS(open(path, O_RDONLY));
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	char *sc = strstr(buf, "Seccomp:");
	CHECK(sc && atoi(sc + 8) == 1, "child's seccomp mode lost");
	SYS(write(p[1], "g", 1));
	int code = zt_reap(c);
	CHECK(code == 0, "strict child ended with %d", code);
	zt_pass();
}

/* A filter that fails getppid() with errno 77, inherited by a child and
 * installed in all threads with TSYNC. */
static void install_filter(unsigned flags)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 77),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { 4, code };
	SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	SYS(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog));
}

static int filtered(void) { return syscall(SYS_getppid) < 0 && errno == 77; }

static volatile int thread_ok;
static void *filter_thread(void *a)
{
	(void)a;
	while (!zt_stopped)
		usleep(2000);
	thread_ok = filtered() ? 1 : 2;
	return NULL;
}

static int seccomp_filter(int tsync)
{
	pthread_t t;
	if (tsync)
		SYS(-pthread_create(&t, NULL, filter_thread, NULL));
	install_filter(tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0);
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		_exit(filtered() ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	CHECK(filtered(), "the filter is gone");
	CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs lost");
	if (tsync) {
		pthread_join(t, NULL);
		CHECK(thread_ok == 1, "the thread's filter is gone");
	}
	zt_children_verdict(&c, 1);
	zt_pass();
}

static int knobs(void)
{
	SYS(personality(PER_LINUX | ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC));
	int pers = personality(0xffffffff);
	SYS(prctl(PR_SET_NAME, "zdtm-named"));
	SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	SYS(prctl(PR_SET_TIMERSLACK, 123456));
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	SYS(sched_setaffinity(0, sizeof(set), &set));
	zt_ready();
	zt_wait();
	CHECK(personality(0xffffffff) == pers, "personality %x, was %x", personality(0xffffffff), pers);
	char name[16];
	prctl(PR_GET_NAME, name);
	CHECK(!strcmp(name, "zdtm-named"), "name %s", name);
	CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs");
	CHECK(prctl(PR_GET_TIMERSLACK) == 123456, "timer slack %d", prctl(PR_GET_TIMERSLACK));
	cpu_set_t now;
	SYS(sched_getaffinity(0, sizeof(now), &now));
	CHECK(CPU_EQUAL(&now, &set), "CPU affinity");
	zt_pass();
}

/* A child in a mount namespace of its own, a file of a tmpfs mounted there mapped
 * (as criu's mapfile_priv): ckpt restores a tree in its own namespaces only and
 * refuses it, naming the child; the child runs on, its mapping intact. */
static int mntns_child(void)
{
	int sync[2];
	SYS(pipe(sync));
	SYS(mkdir("ns-mnt", 0700));
	pid_t c = SYS(fork());
	if (c == 0) {
		if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_PRIVATE | MS_REC, NULL)
		    || mount("zdtm", "ns-mnt", "tmpfs", 0, NULL))
			_exit(10);
		int fd = open("ns-mnt/f", O_RDWR | O_CREAT, 0600);
		if (fd < 0 || ftruncate(fd, 4096))
			_exit(11);
		volatile unsigned *a = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (a == MAP_FAILED)
			_exit(12);
		close(fd);
		a[0] = 0xdeadbeef;
		char ok = 1;
		if (write(sync[1], &ok, 1) != 1)
			_exit(13);
		zt_wait();
		_exit(a[0] == 0xdeadbeef ? 0 : 14);
	}
	char ok;
	if (read(sync[0], &ok, 1) != 1)
		zt_setup_fail("the child's set-up failed (%d)", zt_reap(c));
	zt_ready();
	zt_wait();
	kill(c, SIGTERM);
	int code = zt_reap(c);
	CHECK(code == 0, "child: %d", code);
	zt_pass();
}

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#define PR_GET_MDWE 66
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

/* Process knobs services get from their manager (systemd's MemoryKSM=,
 * MemoryDenyWriteExecute=, CPUSchedulingResetOnFork=) or set themselves: KSM for all
 * memory, memory-deny-write-execute, SCHED_RESET_ON_FORK, early machine-check kills. */
static int knobs_more(void)
{
	struct sched_param sp = { 0 };
	SYS(sched_setscheduler(0, SCHED_BATCH | SCHED_RESET_ON_FORK, &sp));
	SYS(prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0));
	if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0))
		zt_setup_fail("PR_SET_MEMORY_MERGE");
	char *later = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			   -1, 0);
	if (later == MAP_FAILED)
		zt_setup_fail("mmap");
	memset(later, 7, 4 * 4096);
	if (prctl(PR_SET_MDWE, 1 /* PR_MDWE_REFUSE_EXEC_GAIN */, 0, 0, 0))
		zt_setup_fail("PR_SET_MDWE");
	int mdwe = prctl(PR_GET_MDWE, 0, 0, 0, 0);
	zt_ready();
	zt_wait();
	CHECK(sched_getscheduler(0) == (SCHED_BATCH | SCHED_RESET_ON_FORK), "policy %#x",
	      sched_getscheduler(0));
	CHECK(prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) == PR_MCE_KILL_EARLY, "MCE kill %d",
	      prctl(PR_MCE_KILL_GET, 0, 0, 0, 0));
	CHECK(prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 1, "memory merge lost");
	CHECK(prctl(PR_GET_MDWE, 0, 0, 0, 0) == mdwe, "MDWE %d, was %d",
	      prctl(PR_GET_MDWE, 0, 0, 0, 0), mdwe);
	CHECK(later[4 * 4096 - 1] == 7, "memory");
	CHECK(mprotect(later, 4096, PROT_READ | PROT_EXEC) < 0, "MDWE let memory become executable");
	pid_t c = SYS(fork());
	if (c == 0)  /* the flag resets itself in a child (a real-time policy too) */
		_exit(sched_getscheduler(0) == SCHED_BATCH ? 0 : 1);
	CHECK(zt_reap(c) == 0, "the child's policy: reset-on-fork kept or batch lost");
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "pty")) return pty();
	if (!strcmp(m, "mntns-child")) return mntns_child();
	if (!strcmp(m, "pty-session")) return pty_session();
	if (!strcmp(m, "pty-hungup")) return pty_hungup();
	if (!strcmp(m, "pty-split")) return pty_split();
	if (!strcmp(m, "pty-modes")) return pty_modes();
	if (!strcmp(m, "landlock")) return landlocked();
	if (!strcmp(m, "seccomp-strict")) return seccomp_strict();
	if (!strcmp(m, "seccomp-filter")) return seccomp_filter(0);
	if (!strcmp(m, "seccomp-tsync")) return seccomp_filter(1);
	if (!strcmp(m, "knobs")) return knobs();
	if (!strcmp(m, "knobs-more")) return knobs_more();
	zt_setup_fail("unknown mode %s", m);
}
