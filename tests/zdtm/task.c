/* Processes and trees: busy and sleeping tasks, PIDs, sessions and groups, waiting
 * parents, zombies, stopped children, credentials, limits, scheduling, prctl knobs. */
#include "zdtm.h"
#include <pthread.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/fsuid.h>
#include <linux/securebits.h>
#include <sys/resource.h>
#include <time.h>

static int busyloop(void)
{
	volatile unsigned long n = 0, sum = 0;
	zt_ready();
	while (!zt_term_pending()) {
		n++;
		sum += n * 7;
	}
	CHECK(sum == 7 * (n * (n + 1) / 2), "sum %lu of %lu steps is wrong", sum, n);
	zt_pass();
}

static int sleeping(void)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	int rounds = 0;
	zt_ready();
	while (!zt_term_pending()) {
		nanosleep(&ts, NULL);
		rounds++;
	}
	CHECK(rounds > 0, "never slept");
	zt_pass();
}

/* A child that waits for SIGTERM, then exits 0 when its ids are as they were. */
static pid_t waiting_child(void (*setup)(int), int arg)
{
	pid_t pid = SYS(fork());
	if (pid == 0) {
		if (setup)
			setup(arg);
		pid_t me = getpid(), pp = getppid(), pg = getpgrp(), sid = getsid(0);
		zt_wait();
		_exit(getpid() == me && getppid() == pp && getpgrp() == pg && getsid(0) == sid
		      ? 0 : 1);
	}
	return pid;
}

static int pid_tree(void)
{
	pid_t kids[3], me = getpid();
	for (int i = 0; i < 3; i++) {
		kids[i] = SYS(fork());
		if (kids[i] == 0) {
			pid_t self = getpid(), grand = 0;
			if (i == 2)
				grand = waiting_child(NULL, 0);
			zt_wait();
			if (getpid() != self || getppid() != me)
				_exit(1);
			if (grand) {
				kill(grand, SIGTERM);
				_exit(zt_reap(grand));
			}
			_exit(0);
		}
	}
	zt_ready();
	zt_wait();
	CHECK(getpid() == me, "pid changed");
	zt_children_verdict(kids, 3);
	zt_pass();
}

/* A deeper tree: a chain of 4 and a fan of 4 under its middle. */
static int chain_level(int depth)
{
	pid_t kid = 0, fan[4];
	int nfan = 0;
	if (depth < 4)
		kid = SYS(fork());
	if (kid == 0 && depth < 4)
		_exit(chain_level(depth + 1));
	if (depth == 2)
		for (; nfan < 4; nfan++)
			fan[nfan] = waiting_child(NULL, 0);
	if (depth == 0)
		zt_ready();
	zt_wait();
	for (int i = 0; i < nfan; i++)
		kill(fan[i], SIGTERM);
	if (kid)
		kill(kid, SIGTERM);
	int bad = 0;
	for (int i = 0; i < nfan; i++)
		bad |= zt_reap(fan[i]) != 0;
	if (kid)
		bad |= zt_reap(kid) != 0;
	return bad;
}

static int pstree(void)
{
	int bad = chain_level(0);
	CHECK(!bad, "a process of the tree failed its checks");
	zt_pass();
}

static void become_leader(int how)
{
	if (how == 1)
		setsid();
	else if (how == 2)
		setpgid(0, 0);
}

/* Sessions and groups: new sessions, groups in the root's session, a child in a
 * session whose group it shares with a grandchild, a child left in the root's group. */
static int sessions(void)
{
	pid_t kids[5];
	kids[0] = waiting_child(become_leader, 1);
	kids[1] = waiting_child(become_leader, 2);
	kids[2] = waiting_child(NULL, 0);
	kids[3] = SYS(fork());
	if (kids[3] == 0) { /* a session leader with a child in its group and one in another */
		setsid();
		pid_t g[2];
		g[0] = waiting_child(NULL, 0);
		g[1] = waiting_child(become_leader, 2);
		zt_wait();
		zt_children_verdict(g, 2);
		_exit(getsid(0) == getpid() ? 0 : 1);
	}
	kids[4] = SYS(fork());
	if (kids[4] == 0) { /* a group leader whose child joins a sibling's group */
		setpgid(0, 0);
		pid_t g = waiting_child(NULL, 0);
		zt_wait();
		zt_children_verdict(&g, 1);
		_exit(getpgrp() == getpid() ? 0 : 1);
	}
	pid_t sid = getsid(0), pg = getpgrp();
	zt_ready();
	zt_wait();
	CHECK(getsid(0) == sid && getpgrp() == pg, "root's session or group changed");
	zt_children_verdict(kids, 5);
	zt_pass();
}

/* A parent blocked in waitpid() on its child during the dump. */
static int wait_blocked(void)
{
	pid_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		zt_setup_fail("mmap");
	pid_t a = SYS(fork());
	if (a == 0) {
		pid_t b = SYS(fork());
		if (b == 0) {
			zt_wait();
			_exit(5);
		}
		shared[0] = b;
		int st;
		if (waitpid(b, &st, 0) != b)
			_exit(10);
		_exit(WIFEXITED(st) && WEXITSTATUS(st) == 5 ? 0 : 11);
	}
	while (!shared[0])
		usleep(1000);
	usleep(50000); /* a is now in waitpid */
	zt_ready();
	zt_wait();
	kill(shared[0], SIGTERM);
	int code = zt_reap(a);
	CHECK(code == 0, "the waiting parent got %d", code);
	zt_pass();
}

static void wait_zombie(pid_t pid)
{
	siginfo_t si;
	if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT) < 0)
		zt_setup_fail("waitid");
}

/* Whether /proc/PID/status of zombie ``pid`` has line ``line`` (with its newline). */
static int status_has(pid_t pid, const char *line)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	int n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return strstr(buf, line) != NULL;
}

/* Zombies: an exit code, a kill by SIGKILL, a kill by SIGUSR1, an exit of 0; each with a
 * name of its own, the last as another user with other groups: what its parent sees of
 * it (ps, kill(2) from a parent of that user, waitid's si_uid). */
static int zombies(void)
{
	pid_t z[4];
	for (int i = 0; i < 4; i++) {
		z[i] = SYS(fork());
		if (z[i] == 0) {
			char name[16];
			snprintf(name, sizeof(name), "zombie-%d", i);
			prctl(PR_SET_NAME, name);
			signal(SIGUSR1, SIG_DFL);
			if (i == 3) {
				gid_t g = 4321;
				if (setgroups(1, &g) || setresgid(2345, 2346, 2347) ||
				    setresuid(1234, 1235, 1236))
					_exit(99);
			}
			if (i == 0) _exit(42);
			if (i == 1) raise(SIGKILL);
			if (i == 2) { sigset_t s; sigemptyset(&s); sigprocmask(SIG_SETMASK, &s, NULL); raise(SIGUSR1); }
			_exit(0);
		}
		wait_zombie(z[i]);
	}
	zt_ready();
	zt_wait();
	int want[4] = { 42, 128 + SIGKILL, 128 + SIGUSR1, 0 };
	for (int i = 0; i < 4; i++) {
		char line[32];
		snprintf(line, sizeof(line), "Name:\tzombie-%d\n", i);
		CHECK(status_has(z[i], line), "zombie %d lost its name", i);
	}
	CHECK(status_has(z[3], "Uid:\t1234\t1235\t1236\t1235\n"), "a zombie's uids changed");
	CHECK(status_has(z[3], "Gid:\t2345\t2346\t2347\t2346\n"), "a zombie's gids changed");
	CHECK(status_has(z[3], "Groups:\t4321 \n"), "a zombie's groups changed");
	siginfo_t si = { 0 };
	CHECK(waitid(P_PID, z[3], &si, WEXITED | WNOWAIT) == 0 && si.si_uid == 1234,
	      "waitid says zombie 3 was uid %d, not 1234", (int)si.si_uid);
	for (int i = 0; i < 4; i++) {
		int code = zt_reap(z[i]);
		CHECK(code == want[i], "zombie %d: status %d, expected %d", i, code, want[i]);
	}
	zt_pass();
}

/* A zombie in the group of a child that made it with CLONE_PARENT (so it is ours). */
static int zombie_pgid(void)
{
	pid_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t a = SYS(fork());
	if (a == 0) {
		setpgid(0, 0);
		pid_t z = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, 0, 0, 0);
		if (z == 0)
			_exit(0);
		shared[0] = z;
		zt_wait();
		_exit(0);
	}
	while (!shared[0])
		usleep(1000);
	wait_zombie(shared[0]);
	if (getpgid(shared[0]) != a)
		zt_setup_fail("zombie's group %d before the dump", getpgid(shared[0]));
	zt_ready();
	zt_wait();
	CHECK(getpgid(shared[0]) == a, "zombie's group %d, expected %d", getpgid(shared[0]), a);
	kill(a, SIGTERM);
	CHECK(zt_reap(a) == 0, "group leader failed");
	CHECK(zt_reap(shared[0]) == 0, "zombie's status");
	zt_pass();
}

/* A zombie whose parent (a session leader) exited: it is ours (a subreaper). */
static int helper_zombie(void)
{
	pid_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
	pid_t h = SYS(fork());
	if (h == 0) {
		setsid();
		pid_t z = SYS(fork());
		if (z == 0)
			_exit(0);
		wait_zombie(z);
		shared[0] = z;
		_exit(0);
	}
	CHECK(zt_reap(h) == 0, "helper");
	wait_zombie(shared[0]);
	zt_ready();
	zt_wait();
	CHECK(kill(shared[0], 0) == 0, "the zombie is gone");
	CHECK(zt_reap(shared[0]) == 0, "zombie's status");
	zt_pass();
}

static void stop_and_wait(pid_t pid, int sig)
{
	siginfo_t si;
	kill(pid, sig);
	if (waitid(P_PID, pid, &si, WSTOPPED | WNOWAIT) < 0)
		zt_setup_fail("waitid stopped");
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	int n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p ? p[2] : '?';
}

/* A child stopped by SIG (in its own group, so a job-control stop counts), maybe with
 * signals sent to it while stopped; after the restore it is still stopped, and at
 * SIGCONT it handles those signals and exits. */
static volatile sig_atomic_t got_usr1;
static void on_usr1(int s) { (void)s; got_usr1 = 1; }

static int stopped(int sig, int kill_too, int tkill_too)
{
	int ready[2];
	SYS(pipe(ready));
	pid_t c = SYS(fork());
	if (c == 0) {
		setpgid(0, 0);
		signal(SIGUSR1, on_usr1);
		close(ready[1]); /* set up: the parent may stop it now */
		for (;;) {
			if (got_usr1)
				_exit(7);
			if (!kill_too && !tkill_too && zt_term_pending())
				_exit(0);
			usleep(1000);
		}
	}
	setpgid(c, c);
	close(ready[1]);
	char x;
	if (read(ready[0], &x, 1) != 0)
		zt_setup_fail("child set-up");
	stop_and_wait(c, sig);
	if (kill_too)
		kill(c, SIGUSR1);
	if (tkill_too)
		syscall(SYS_tgkill, c, c, SIGUSR1);
	zt_ready();
	zt_wait();
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PID, c, &si, WSTOPPED | WNOWAIT | WNOHANG) == 0 && si.si_pid == c
	      && si.si_status == sig, "no stop (%d) reported for the child", sig);
	/* ckpt let it go from a ptrace stop: it passes through R on its way back into the
	 * group stop */
	for (int i = 0; i < 2000 && proc_state(c) != 'T'; i++)
		usleep(1000);
	CHECK(proc_state(c) == 'T', "child state %c, expected stopped", proc_state(c));
	if (!kill_too && !tkill_too)
		kill(c, SIGTERM);
	kill(c, SIGCONT);
	int code = zt_reap(c);
	int want = (kill_too || tkill_too) ? 7 : 0;
	CHECK(code == want, "child exited %d, expected %d", code, want);
	zt_pass();
}

static int caps(int ambient)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2], after[2];
	SYS(syscall(SYS_capget, &h, d));
	/* drop a few from each set: effective < permitted, some inheritable */
	d[0].effective &= ~((1u << CAP_CHOWN) | (1u << CAP_KILL) | (1u << CAP_NET_RAW));
	d[0].permitted &= ~((1u << CAP_KILL));
	d[0].inheritable = (1u << CAP_NET_BIND_SERVICE) | (1u << CAP_DAC_OVERRIDE);
	d[1].effective &= ~(1u << (CAP_AUDIT_READ - 32));
	SYS(syscall(SYS_capset, &h, d));
	if (ambient)
		SYS(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0));
	SYS(prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT));
	SYS(syscall(SYS_capget, &h, d));
	zt_ready();
	zt_wait();
	SYS(syscall(SYS_capget, &h, after));
	CHECK(!memcmp(d, after, sizeof(d)), "capabilities changed: eff %x/%x prm %x/%x inh %x/%x",
	      d[0].effective, after[0].effective, d[0].permitted, after[0].permitted,
	      d[0].inheritable, after[0].inheritable);
	CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_BOOT) == 0, "CAP_SYS_BOOT back in the bounding set");
	CHECK(prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN) == 1, "CAP_SYS_ADMIN left the bounding set");
	if (ambient)
		CHECK(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) == 1,
		      "ambient capability lost");
	zt_pass();
}

/* Children under other uids and gids (real, effective, saved differ), and groups. */
static void take_ids(int i)
{
	gid_t groups[3] = { 10 + i, 20 + i, 30 + i };
	if (setgroups(3, groups) < 0 || setresgid(100 + i, 200 + i, 300 + i) < 0
	    || setresuid(1000 + i, 2000 + i, 0) < 0)
		_exit(20);
}

static int xids(void)
{
	pid_t kids[3];
	for (int i = 0; i < 3; i++) {
		kids[i] = SYS(fork());
		if (kids[i] == 0) {
			take_ids(i);
			uid_t r, e, s;
			gid_t gr, ge, gs, g[8];
			zt_wait();
			getresuid(&r, &e, &s);
			getresgid(&gr, &ge, &gs);
			int n = getgroups(8, g);
			_exit(r == (uid_t)(1000 + i) && e == (uid_t)(2000 + i) && s == 0
			      && gr == (gid_t)(100 + i) && ge == (gid_t)(200 + i) && gs == (gid_t)(300 + i)
			      && n == 3 && g[0] == (gid_t)(10 + i) && g[2] == (gid_t)(30 + i) ? 0 : 1);
		}
	}
	zt_ready();
	zt_wait();
	zt_children_verdict(kids, 3);
	zt_pass();
}

static int groups(void)
{
	gid_t g[5] = { 5, 77, 1000, 65534, 4 }, after[16];
	SYS(setgroups(5, g));
	SYS(getgroups(5, g)); /* the kernel sorts them */
	zt_ready();
	zt_wait();
	int n = getgroups(16, after);
	CHECK(n == 5 && !memcmp(g, after, sizeof(g)), "supplementary groups changed (%d)", n);
	zt_pass();
}

static int rlimits(void)
{
	int res[] = { RLIMIT_NOFILE, RLIMIT_CORE, RLIMIT_STACK, RLIMIT_NPROC, RLIMIT_FSIZE,
		      RLIMIT_MSGQUEUE, RLIMIT_SIGPENDING, RLIMIT_CPU, RLIMIT_DATA, RLIMIT_AS };
	struct rlimit want[10], got;
	for (int i = 0; i < 10; i++) {
		SYS(getrlimit(res[i], &want[i]));
		if (want[i].rlim_max == RLIM_INFINITY)
			want[i].rlim_max = (rlim_t)1 << 40;
		want[i].rlim_max -= 1;
		want[i].rlim_cur = want[i].rlim_max / 2 + i;
		SYS(setrlimit(res[i], &want[i]));
	}
	zt_ready();
	zt_wait();
	for (int i = 0; i < 10; i++) {
		SYS(getrlimit(res[i], &got));
		CHECK(got.rlim_cur == want[i].rlim_cur && got.rlim_max == want[i].rlim_max,
		      "rlimit %d: %llu/%llu, expected %llu/%llu", res[i],
		      (unsigned long long)got.rlim_cur, (unsigned long long)got.rlim_max,
		      (unsigned long long)want[i].rlim_cur, (unsigned long long)want[i].rlim_max);
	}
	zt_pass();
}

static int sched_prio(void)
{
	pid_t kids[3];
	int nice_of[3] = { 3, 10, 19 };
	for (int i = 0; i < 3; i++) {
		kids[i] = SYS(fork());
		if (kids[i] == 0) {
			setpriority(PRIO_PROCESS, 0, nice_of[i]);
			zt_wait();
			errno = 0;
			_exit(getpriority(PRIO_PROCESS, 0) == nice_of[i] ? 0 : 1);
		}
	}
	SYS(setpriority(PRIO_PROCESS, 0, -5));
	zt_ready();
	zt_wait();
	errno = 0;
	CHECK(getpriority(PRIO_PROCESS, 0) == -5, "root's nice %d", getpriority(PRIO_PROCESS, 0));
	zt_children_verdict(kids, 3);
	zt_pass();
}

static int sched_policy(void)
{
	pid_t kids[3];
	int pol[3] = { SCHED_BATCH, SCHED_IDLE, SCHED_RR };
	for (int i = 0; i < 3; i++) {
		kids[i] = SYS(fork());
		if (kids[i] == 0) {
			struct sched_param p = { pol[i] == SCHED_RR ? 7 : 0 };
			if (sched_setscheduler(0, pol[i], &p) < 0)
				_exit(20);
			zt_wait();
			struct sched_param q;
			sched_getparam(0, &q);
			_exit(sched_getscheduler(0) == pol[i] && q.sched_priority == p.sched_priority
			      ? 0 : 1);
		}
	}
	zt_ready();
	zt_wait();
	zt_children_verdict(kids, 3);
	zt_pass();
}

static int pdeath_sig(void)
{
	pid_t c = SYS(fork());
	if (c == 0) {
		prctl(PR_SET_PDEATHSIG, SIGUSR2);
		zt_wait();
		int s = 0;
		prctl(PR_GET_PDEATHSIG, &s);
		_exit(s == SIGUSR2 ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	zt_children_verdict(&c, 1);
	zt_pass();
}

static int read_file(const char *path, char *buf, int size)
{
	int fd = open(path, O_RDONLY), n = 0, r;
	if (fd < 0)
		return -1;
	while (n < size && (r = read(fd, buf + n, size - n)) > 0)
		n += r;
	close(fd);
	return n;
}

static int selfexe(void)
{
	char a[4096], b[4096];
	struct stat s1, s2;
	ssize_t n = SYS(readlink("/proc/self/exe", a, sizeof(a)));
	SYS(stat("/proc/self/exe", &s1));
	zt_ready();
	zt_wait();
	ssize_t m = readlink("/proc/self/exe", b, sizeof(b));
	CHECK(m == n && !memcmp(a, b, n), "exe link changed");
	SYS(stat("/proc/self/exe", &s2));
	CHECK(s1.st_ino == s2.st_ino && s1.st_dev == s2.st_dev, "exe is another file");
	zt_pass();
}

/* Arguments and environment, as the kernel shows them and as the program sees them. */
static int cmdline_env(void)
{
	static char c1[8192], e1[65536], c2[8192], e2[65536];
	setenv("ZDTM_ENV_CHECK", "value-42", 1);
	int nc = read_file("/proc/self/cmdline", c1, sizeof(c1));
	int ne = read_file("/proc/self/environ", e1, sizeof(e1));
	zt_ready();
	zt_wait();
	CHECK(read_file("/proc/self/cmdline", c2, sizeof(c2)) == nc && !memcmp(c1, c2, nc),
	      "cmdline changed");
	CHECK(read_file("/proc/self/environ", e2, sizeof(e2)) == ne && !memcmp(e1, e2, ne),
	      "environ changed");
	const char *v = getenv("ZDTM_ENV_CHECK");
	CHECK(v && !strcmp(v, "value-42"), "getenv lost the variable");
	zt_pass();
}

static int umask_check(void)
{
	umask(0345);
	zt_ready();
	zt_wait();
	mode_t m = umask(0);
	CHECK(m == 0345, "umask %o", m);
	zt_pass();
}

static int uptime_grow(void)
{
	struct timespec last, now, b0, b1;
	clock_gettime(CLOCK_MONOTONIC, &last);
	clock_gettime(CLOCK_BOOTTIME, &b0);
	zt_ready();
	while (!zt_term_pending()) {
		clock_gettime(CLOCK_MONOTONIC, &now);
		CHECK(now.tv_sec > last.tv_sec || (now.tv_sec == last.tv_sec && now.tv_nsec >= last.tv_nsec),
		      "CLOCK_MONOTONIC went back");
		last = now;
		usleep(1000);
	}
	clock_gettime(CLOCK_BOOTTIME, &b1);
	CHECK(b1.tv_sec >= b0.tv_sec, "CLOCK_BOOTTIME went back");
	zt_pass();
}

static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	int r = write(fd, s, strlen(s));
	close(fd);
	return r;
}

static int oom_score_adj(void)
{
	char buf[32];
	SYS(write_str("/proc/self/oom_score_adj", "345"));
	zt_ready();
	zt_wait();
	int n = read_file("/proc/self/oom_score_adj", buf, sizeof(buf) - 1);
	CHECK(n > 0, "read oom_score_adj");
	buf[n] = 0;
	CHECK(atoi(buf) == 345, "oom_score_adj %s", buf);
	zt_pass();
}

static int loginuid(void)
{
	char a[32], b[32];
	int n = SYS(read_file("/proc/self/loginuid", a, sizeof(a)));
	zt_ready();
	zt_wait();
	int m = read_file("/proc/self/loginuid", b, sizeof(b));
	CHECK(m == n && !memcmp(a, b, n), "loginuid changed");
	zt_pass();
}

static int dumpable(int value)
{
	SYS(prctl(PR_SET_DUMPABLE, value));
	zt_ready();
	zt_wait();
	CHECK(prctl(PR_GET_DUMPABLE) == value, "dumpable %d", prctl(PR_GET_DUMPABLE));
	zt_pass();
}

static int thp_disable(void)
{
	SYS(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0));
	zt_ready();
	zt_wait();
	CHECK(prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1, "THP disable lost");
	zt_pass();
}

/* I/O priorities (ionice): the process's, and a child's of another class. */
static int ioprio(void)
{
	long mine = (2L << 13) | 6, kids = (3L << 13); /* best-effort level 6; idle */
	pid_t c = SYS(fork());
	if (c == 0) {
		SYS(syscall(SYS_ioprio_set, 1, 0, kids));
		zt_wait();
		_exit(syscall(SYS_ioprio_get, 1, 0) == kids ? 0 : 1);
	}
	SYS(syscall(SYS_ioprio_set, 1, 0, mine));
	zt_ready();
	zt_wait();
	long now = syscall(SYS_ioprio_get, 1, 0);
	CHECK(now == mine, "I/O priority %#lx, expected %#lx", now, mine);
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* Which mappings a core dump would hold (/proc/self/coredump_filter). */
static int coredump_filter(void)
{
	SYS(write_str("/proc/self/coredump_filter", "0x7b"));
	zt_ready();
	zt_wait();
	char buf[32];
	int n = read_file("/proc/self/coredump_filter", buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	CHECK(strtoul(buf, NULL, 16) == 0x7b, "coredump_filter %s", buf);
	zt_pass();
}

static int clone_kid(void *arg)
{
	(void)arg;
	zt_wait();
	return 0;
}

/* The signal a child sends its parent when it ends, as /proc shows it (field 38). */
static int exit_signal_of(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int n = read_file(path, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = 0;
	char *p = strrchr(buf, ')');
	for (int field = 2; p && field < 38; field++)
		p = strchr(p + 1, ' ');
	return p ? atoi(p + 1) : -1;
}

static volatile int policy_of_thread[2] = { -1, -1 };

/* A thread that sets its own policy (WHICH 0: back to the default, 1: bind) and, after
 * the restore, says which it has. */
static void *policy_thread(void *arg)
{
	long which = (long)arg;
	unsigned long nodes = 1;
	if (which == 0)
		syscall(SYS_set_mempolicy, 0 /* MPOL_DEFAULT */, NULL, 0);
	else
		syscall(SYS_set_mempolicy, 2 /* MPOL_BIND */, &nodes, 64);
	while (!zt_stopped)
		usleep(2000);
	int mode = -1;
	syscall(SYS_get_mempolicy, &mode, NULL, 0, NULL, 0);
	policy_of_thread[which] = mode;
	return NULL;
}

/* NUMA memory policies, on node 0: the process's (interleave), a range's (bind), a
 * thread's back to the default and another's bind. */
static int mempolicy(void)
{
	unsigned long nodes = 1;
	SYS(syscall(SYS_set_mempolicy, 3 /* MPOL_INTERLEAVE */, &nodes, 64));
	pthread_t threads[2];
	for (long i = 0; i < 2; i++)
		SYS(-pthread_create(&threads[i], NULL, policy_thread, (void *)i));
	char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		zt_setup_fail("mmap");
	SYS(syscall(SYS_mbind, p, 1 << 20, 2 /* MPOL_BIND */, &nodes, 64, 0));
	p[0] = 1;
	zt_ready();
	zt_wait();
	int mode = -1;
	unsigned long got = 0;
	SYS(syscall(SYS_get_mempolicy, &mode, &got, 64, NULL, 0));
	CHECK(mode == 3 && got == 1, "process policy %d nodes %lx", mode, got);
	SYS(syscall(SYS_get_mempolicy, &mode, &got, 64, p, 2 /* MPOL_F_ADDR */));
	CHECK(mode == 2 && got == 1, "range policy %d nodes %lx", mode, got);
	for (int i = 0; i < 2; i++)
		pthread_join(threads[i], NULL);
	CHECK(policy_of_thread[0] == 0 && policy_of_thread[1] == 2, "threads' policies %d %d",
	      policy_of_thread[0], policy_of_thread[1]);
	zt_pass();
}

/* keyctl(2) by number: no libkeyutils. */
static long kctl(long op, long a, long b, long c, long d)
{
	return syscall(SYS_keyctl, op, a, b, c, d);
}

/* What a session keyring must be after the restore: its description (type, owner,
 * permissions and name) and a user key found in it by search, with its payload. */
static void check_ring(const char *who, const char *want, const char *key,
		       const char *payload)
{
	char desc[256], buf[64];
	long n = kctl(6 /* KEYCTL_DESCRIBE */, -3, (long)desc, sizeof(desc), 0);
	CHECK(n > 0 && !strcmp(desc, want), "%s: session keyring '%s', expected '%s'", who,
	      n > 0 ? desc : strerror(errno), want);
	long k = kctl(10 /* KEYCTL_SEARCH */, -3, (long)"user", (long)key, 0);
	CHECK(k > 0, "%s: key %s not found: %s", who, key, strerror(errno));
	n = kctl(11 /* KEYCTL_READ */, k, (long)buf, sizeof(buf), 0);
	CHECK(n == (long)strlen(payload) && !memcmp(buf, payload, n), "%s: key %s reads %ld bytes",
	      who, key, n);
	n = kctl(6, k, (long)desc, sizeof(desc), 0);
	snprintf(buf, sizeof(buf), "user;0;0;3f3b0000;%s", key);
	CHECK(n > 0 && !strcmp(desc, buf), "%s: key described '%s', expected '%s'", who, desc,
	      buf);
}

static long ring_id(void) { return kctl(0 /* KEYCTL_GET_KEYRING_ID */, -3, 0, 0, 0); }

static void *keyring_thread(void *arg)
{
	*(long *)arg = ring_id();
	return NULL;
}

/* A session keyring of the process's own (named, its permissions changed) with a user
 * key in it, shared by a thread made after the restore; a child that joined an
 * anonymous one of its own with its own key. Serials are new after a restore: names,
 * permissions and keys are compared. */
static int session_keyring(void)
{
	if (kctl(1 /* KEYCTL_JOIN_SESSION_KEYRING */, (long)"zdtm-ring", 0, 0, 0) < 0)
		zt_setup_fail("keyctl join");
	long key = syscall(SYS_add_key, "user", "zdtm-key", "secret", 6, -3 /* @s */);
	if (key < 0 || kctl(5 /* KEYCTL_SETPERM */, key, 0x3f3b0000, 0, 0) < 0
	    || kctl(5, -3, 0x3f1b0000, 0, 0) < 0)
		zt_setup_fail("add_key/setperm");
	int go[2], done[2];
	if (pipe(go) || pipe(done))
		zt_setup_fail("pipe");
	pid_t kid = fork();
	if (kid == 0) {
		if (kctl(1, 0, 0, 0, 0) < 0
		    || syscall(SYS_add_key, "user", "kid-key", "kidsecret", 9, -3) < 0
		    || kctl(5, syscall(SYS_keyctl, 10, -3, "user", "kid-key", 0), 0x3f3b0000, 0, 0))
			_exit(2);
		char c = 0;
		if (write(done[1], &c, 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		check_ring("child", "keyring;0;0;3f030000;_ses", "kid-key", "kidsecret");
		long k = kctl(10, -3, (long)"user", (long)"zdtm-key", 0);
		CHECK(k < 0, "child: its parent's key is in its keyring");
		_exit(0);
	}
	char c;
	if (read(done[0], &c, 1) != 1)
		zt_setup_fail("child set-up");
	int share[2];
	if (pipe(share))
		zt_setup_fail("pipe");
	pid_t sharer = fork();  /* on its parent's keyring */
	if (sharer == 0) {
		long parents;
		if (read(share[0], &parents, sizeof(parents)) != sizeof(parents))
			_exit(3);
		_exit(ring_id() == parents ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	check_ring("process", "keyring;0;0;3f1b0000;zdtm-ring", "zdtm-key", "secret");
	long mine = ring_id();
	CHECK(write(share[1], &mine, sizeof(mine)) == sizeof(mine), "pipe");
	int sst;
	CHECK(waitpid(sharer, &sst, 0) == sharer && WIFEXITED(sst) && WEXITSTATUS(sst) == 0,
	      "the child that shared its parent's keyring has another (status %#x)", sst);
	pthread_t th;
	long theirs = 0;
	CHECK(!pthread_create(&th, NULL, keyring_thread, &theirs) && !pthread_join(th, NULL),
	      "thread");
	CHECK(theirs == ring_id(), "a new thread's session keyring %ld, the process's %ld",
	      theirs, ring_id());
	CHECK(write(go[1], "g", 1) == 1, "pipe");
	int st;
	CHECK(waitpid(kid, &st, 0) == kid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "the child's keyring check failed (status %#x)", st);
	zt_pass();
}

/* The same as an unprivileged user: a keyring and a key it owns. */
static int keyring_user(void)
{
	if (setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000))
		zt_setup_fail("setresuid");
	if (kctl(1, (long)"zdtm-user-ring", 0, 0, 0) < 0)
		zt_setup_fail("keyctl join: %s", strerror(errno));
	long key = syscall(SYS_add_key, "user", "zdtm-ukey", "usecret", 7, -3);
	if (key < 0 || kctl(5, key, 0x3f3b0000, 0, 0) < 0)
		zt_setup_fail("add_key: %s", strerror(errno));
	zt_ready();
	zt_wait();
	char desc[256], buf[32];
	long n = kctl(6, -3, (long)desc, sizeof(desc), 0);
	CHECK(n > 0 && !strcmp(desc, "keyring;1000;1000;3f130000;zdtm-user-ring"),
	      "session keyring '%s'", n > 0 ? desc : strerror(errno));
	long k = kctl(10, -3, (long)"user", (long)"zdtm-ukey", 0);
	CHECK(k > 0, "key not found: %s", strerror(errno));
	n = kctl(6, k, (long)desc, sizeof(desc), 0);
	CHECK(n > 0 && !strcmp(desc, "user;1000;1000;3f3b0000;zdtm-ukey"), "key '%s'", desc);
	n = kctl(11, k, (long)buf, sizeof(buf), 0);
	CHECK(n == 7 && !memcmp(buf, "usecret", 7), "key reads %ld bytes", n);
	zt_pass();
}

/* 900 supplementary groups with large ids (the Groups: line of /proc/PID/status is
 * long), in order. */
static int massive_groups(void)
{
	enum { N = 900 };
	static gid_t want[N], got[N + 1];
	for (int i = 0; i < N; i++)
		want[i] = 1000000000u + i;
	SYS(setgroups(N, want));
	zt_ready();
	zt_wait();
	int n = getgroups(N + 1, got);
	CHECK(n == N, "%d groups, were %d", n, N);
	for (int i = 0; i < N; i++)
		CHECK(got[i] == want[i], "group %d: %u, was %u", i, got[i], want[i]);
	zt_pass();
}

/* A process keyring (@p) with a key: refused (only a session keyring comes back). */
static int keyring_process(void)
{
	long ring = kctl(0, -2 /* @p */, 1 /* create */, 0, 0);
	if (ring < 0 || syscall(SYS_add_key, "user", "zdtm-pkey", "p", 1, -2) < 0)
		zt_setup_fail("process keyring: %s", strerror(errno));
	zt_ready();
	zt_wait();
	CHECK(kctl(0, -2, 0, 0, 0) == ring, "process keyring");
	CHECK(kctl(10, -2, (long)"user", (long)"zdtm-pkey", 0) > 0, "key lost");
	zt_pass();
}

/* A session keyring holding a logon key, whose payload no process can read: refused. */
static int keyring_logon(void)
{
	if (kctl(1, (long)"zdtm-logon", 0, 0, 0) < 0)
		zt_setup_fail("keyctl join");
	if (syscall(SYS_add_key, "logon", "zdtm:pass", "hidden", 6, -3) < 0)
		zt_setup_fail("add_key logon: %s", strerror(errno));
	zt_ready();
	zt_wait();
	char desc[128];
	CHECK(kctl(6, -3, (long)desc, sizeof(desc), 0) > 0 && strstr(desc, ";zdtm-logon"),
	      "session keyring %s", desc);
	CHECK(kctl(10, -3, (long)"logon", (long)"zdtm:pass", 0) > 0, "logon key lost");
	zt_pass();
}

static volatile sig_atomic_t usr1_got;
static void count_usr1(int sig) { (void)sig; usr1_got++; }

/* Children cloned with another exit signal than SIGCHLD (SIGUSR1) and with none:
 * "clone" children, which only waitpid with __WCLONE reaps; the first one's end
 * sends SIGUSR1. */
static int exit_signal(void)
{
	static char stacks[2][65536];
	signal(SIGUSR1, count_usr1);
	int sigs[2] = { SIGUSR1, 0 };
	pid_t kids[2];
	for (int i = 0; i < 2; i++)
		kids[i] = SYS(clone(clone_kid, stacks[i] + sizeof(stacks[i]), sigs[i], NULL));
	zt_ready();
	zt_wait();
	for (int i = 0; i < 2; i++) {
		int sig = exit_signal_of(kids[i]);
		CHECK(sig == sigs[i], "child %d: exit signal %d, expected %d", i, sig, sigs[i]);
	}
	CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD,
	      "a clone child is seen by a plain waitpid");
	for (int i = 0; i < 2; i++) {
		int st;
		kill(kids[i], SIGTERM);
		CHECK(waitpid(kids[i], &st, __WCLONE) == kids[i] && WIFEXITED(st)
		      && WEXITSTATUS(st) == 0, "child %d: not reaped as a clone child", i);
		CHECK(usr1_got == 1, "%d SIGUSR1 after child %d ended", (int)usr1_got, i);
	}
	zt_pass();
}

/* A subreaper: a grandchild orphaned before the dump is ours, and one orphaned after
 * the restore becomes ours too. */
static int subreaper(int existing, int reparent)
{
	pid_t *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
	pid_t mid = SYS(fork());
	if (mid == 0) {
		pid_t g = SYS(fork());
		if (g == 0) {
			zt_wait();
			_exit(getppid() == shared[1] ? 0 : 1);
		}
		shared[0] = g;
		if (existing)
			_exit(0);
		zt_wait();
		_exit(0); /* orphans g after the restore */
	}
	while (!shared[0])
		usleep(1000);
	shared[1] = getpid();
	if (existing)
		CHECK(zt_reap(mid) == 0, "middle");
	zt_ready();
	zt_wait();
	int v = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &v);
	CHECK(v == 1, "no longer a child subreaper");
	if (reparent) {
		kill(mid, SIGTERM);
		CHECK(zt_reap(mid) == 0, "middle");
	}
	for (int i = 0; i < 2000; i++) { /* the orphan reaches us */
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d/stat", shared[0]);
		FILE *f = fopen(path, "r");
		int ppid = 0;
		if (f) { if (fscanf(f, "%*d %*s %*c %d", &ppid) != 1) ppid = 0; fclose(f); }
		if (ppid == getpid())
			break;
		usleep(1000);
	}
	kill(shared[0], SIGTERM);
	int code = zt_reap(shared[0]);
	CHECK(code == 0, "orphan grandchild: %d (not re-parented to us?)", code);
	zt_pass();
}

static int membarrier_check(void)
{
	/* MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED = 16, PRIVATE_EXPEDITED = 8 */
	SYS(syscall(SYS_membarrier, 16, 0, 0));
	zt_ready();
	zt_wait();
	CHECK(syscall(SYS_membarrier, 8, 0, 0) == 0, "private expedited barrier refused: %s",
	      strerror(errno));
	zt_pass();
}

/* Whether SIGTERM is pending for PID (the vfork child watches its blocked parent). */
static int term_pending_in(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	int n = read_file(path, buf, sizeof(buf) - 1);
	if (n <= 0)
		return 1;
	buf[n] = 0;
	char *p = strstr(buf, "ShdPnd:");
	return p && (strtoull(p + 7, NULL, 16) & (1ull << (SIGTERM - 1)));
}

/* A parent blocked in vfork() while its child runs on its memory. */
static int vfork_child(void)
{
	pid_t parent = getpid();
	pid_t c = vfork();
	if (c == 0) {
		zt_ready();
		while (!term_pending_in(parent))
			usleep(2000);
		_exit(getppid() == parent ? 0 : 1);
	}
	CHECK(zt_reap(c) == 0, "vfork child failed");
	zt_pass();
}

/* Credentials file servers use (NFS, Samba, FTP daemons): file-system ids apart from
 * the effective ones (setfsuid, setfsgid), and securebits, some locked. */
static int fs_ids(void)
{
	setfsuid(1234);
	setfsgid(4321);
	int bits = SECBIT_KEEP_CAPS | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED;
	SYS(prctl(PR_SET_SECUREBITS, bits, 0, 0, 0));
	zt_ready();
	zt_wait();
	int fsuid = setfsuid(-1), fsgid = setfsgid(-1);
	CHECK(fsuid == 1234 && fsgid == 4321, "fsuid %d, fsgid %d", fsuid, fsgid);
	CHECK(geteuid() == 0 && getegid() == 0, "effective ids %d %d", geteuid(), getegid());
	CHECK(prctl(PR_GET_SECUREBITS) == bits, "securebits %#x, were %#x",
	      prctl(PR_GET_SECUREBITS), bits);
	CHECK(prctl(PR_GET_KEEPCAPS) == 1, "keep-caps");
	CHECK(prctl(PR_SET_SECUREBITS, SECBIT_KEEP_CAPS, 0, 0, 0) < 0, "the lock is gone");
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "busyloop")) return busyloop();
	if (!strcmp(m, "sleeping")) return sleeping();
	if (!strcmp(m, "pid")) return pid_tree();
	if (!strcmp(m, "pstree")) return pstree();
	if (!strcmp(m, "sessions")) return sessions();
	if (!strcmp(m, "wait")) return wait_blocked();
	if (!strcmp(m, "zombies")) return zombies();
	if (!strcmp(m, "zombie-pgid")) return zombie_pgid();
	if (!strcmp(m, "helper-zombie")) return helper_zombie();
	if (!strcmp(m, "stopped")) return stopped(SIGSTOP, 0, 0);
	if (!strcmp(m, "stopped-kill")) return stopped(SIGSTOP, 1, 0);
	if (!strcmp(m, "stopped-tkill")) return stopped(SIGSTOP, 0, 1);
	if (!strcmp(m, "stopped-both")) return stopped(SIGSTOP, 1, 1);
	if (!strcmp(m, "stopped-tstp")) return stopped(SIGTSTP, 0, 0);
	if (!strcmp(m, "stopped-ttin")) return stopped(SIGTTIN, 1, 0);
	if (!strcmp(m, "caps")) return caps(0);
	if (!strcmp(m, "fs-ids")) return fs_ids();
	if (!strcmp(m, "caps-ambient")) return caps(1);
	if (!strcmp(m, "xids")) return xids();
	if (!strcmp(m, "groups")) return groups();
	if (!strcmp(m, "rlimits")) return rlimits();
	if (!strcmp(m, "sched-prio")) return sched_prio();
	if (!strcmp(m, "sched-policy")) return sched_policy();
	if (!strcmp(m, "pdeath-sig")) return pdeath_sig();
	if (!strcmp(m, "selfexe")) return selfexe();
	if (!strcmp(m, "cmdline-env")) return cmdline_env();
	if (!strcmp(m, "umask")) return umask_check();
	if (!strcmp(m, "uptime-grow")) return uptime_grow();
	if (!strcmp(m, "oom-score-adj")) return oom_score_adj();
	if (!strcmp(m, "loginuid")) return loginuid();
	if (!strcmp(m, "dumpable0")) return dumpable(0);
	if (!strcmp(m, "dumpable1")) return dumpable(1);
	if (!strcmp(m, "thp-disable")) return thp_disable();
	if (!strcmp(m, "subreaper-existing")) return subreaper(1, 0);
	if (!strcmp(m, "subreaper-reparent")) return subreaper(0, 1);
	if (!strcmp(m, "membarrier")) return membarrier_check();
	if (!strcmp(m, "ioprio")) return ioprio();
	if (!strcmp(m, "coredump-filter")) return coredump_filter();
	if (!strcmp(m, "exit-signal")) return exit_signal();
	if (!strcmp(m, "mempolicy")) return mempolicy();
	if (!strcmp(m, "session-keyring")) return session_keyring();
	if (!strcmp(m, "keyring-logon")) return keyring_logon();
	if (!strcmp(m, "keyring-user")) return keyring_user();
	if (!strcmp(m, "keyring-process")) return keyring_process();
	if (!strcmp(m, "massive-groups")) return massive_groups();
	if (!strcmp(m, "vfork")) return vfork_child();
	zt_setup_fail("unknown mode %s", m);
}
