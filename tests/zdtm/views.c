/* What the kernel shows of a process, compared before and after: a process sets up a
 * mix of common state (scheduling and I/O priority, knobs, memory flags, file flags and
 * positions, event files, signals, timers, a thread of its own), reads its /proc views
 * and the values only syscalls tell, and after the restore reads them again: every line
 * must be there as before. What cannot stay the same is left out: inode numbers of new
 * pipes and sockets, times left, counters of things that happened meanwhile. */
#include "zdtm.h"
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>

#define PG 4096

static char *text;
static size_t used, room;

static void add(const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n >= (int)sizeof(line))
		n = sizeof(line) - 1;
	if (used + n + 2 > room) {
		room = (used + n + 2) * 2;
		text = realloc(text, room);
	}
	memcpy(text + used, line, n);
	used += n;
	if (!n || line[n - 1] != '\n')
		text[used++] = '\n';
	text[used] = 0;
}

static int starts(const char *s, const char *const *prefixes)
{
	for (; *prefixes; prefixes++)
		if (!strncmp(s, *prefixes, strlen(*prefixes)))
			return 1;
	return 0;
}

/* Every line of PATH as "TAG: line", but those starting with one of SKIP. */
static void add_file(const char *tag, const char *path, const char *const *skip)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	if (!f) {
		add("%s: (cannot open)", tag);
		return;
	}
	while (fgets(line, sizeof(line), f))
		if (!skip || !starts(line, skip))
			add("%s: %s", tag, line);
	fclose(f);
}

/* Fields of /proc/.../stat that must not change (numbers as in proc(5)). */
static void add_stat(const char *tag, const char *path)
{
	static const int keep[] = { 5, 6, 7, 8, 18, 19, 20, 38, 40, 41, 26, 27, 28,
				    45, 46, 47, 48, 49, 50, 51 };
	char buf[2048];
	int fd = open(path, O_RDONLY), n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	char *p = strrchr(buf, ')');
	int field = 3;
	for (char *t = p ? strtok(p + 2, " \n") : NULL; t; t = strtok(NULL, " \n"), field++)
		for (unsigned i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
			if (keep[i] == field)
				add("%s field %d: %s", tag, field, t);
}

static const char *const status_skip[] = { "State", "FDSize", "Vm", "Rss", "Huge",
	"voluntary", "nonvoluntary", "SigQ", "Threads", "PPid", NULL };

static void add_maps(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[1024];
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e, off, ino;
		char perms[8], dev[16], path[512] = "";
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %511[^\n]", &s, &e, perms, &off, dev,
			   &ino, path) >= 6) {
			const char *name = path;
			while (*name == ' ')
				name++;
			/* a new shared anonymous object is a new inode of the same kind */
			if (!strcmp(name, "/dev/zero (deleted)"))
				ino = 0;
			add("map %lx-%lx %s %lx %lu %s", s, e, perms, off, ino, name);
		} else if (!strncmp(line, "VmFlags", 7) || !strncmp(line, "THPeligible", 11)) {
			add("map   %s", line);
		}
	}
	if (f)
		fclose(f);
}

static void add_fds(void)
{
	static const char *const skip[] = { "ino:", "eventfd-id", "it_value", "ticks", NULL };
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		int fd = atoi(e->d_name);
		if (e->d_name[0] == '.' || fd < 3 || fd == dirfd(d))
			continue;
		char path[300], link[512];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		char *bracket = strchr(link, '[');
		if (bracket && (!strncmp(link, "pipe:", 5) || !strncmp(link, "socket:", 7)))
			*bracket = 0; /* a new pipe or socket: a new inode */
		add("fd %d -> %s", fd, link);
		struct f_owner_ex owner;
		if (fcntl(fd, F_GETOWN_EX, &owner) == 0 && owner.pid)
			add("fd %d owner %d %d signal %d", fd, owner.type, owner.pid,
			    fcntl(fd, F_GETSIG));
		char tag[32];
		snprintf(tag, sizeof(tag), "fdinfo %d", fd);
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
		FILE *f = fopen(path, "r");
		char line[1024];
		while (f && fgets(line, sizeof(line), f)) {
			if (starts(line, skip))
				continue;
			char *ino = strstr(line, " ino:"); /* an epoll watch's file: its inode */
			if (ino && !strncmp(line, "tfd:", 4))
				*ino = 0;
			add("%s: %s", tag, line);
		}
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
}

static void add_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], tag[300];
		snprintf(tag, sizeof(tag), "thread %s", e->d_name);
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		add_file(tag, path, status_skip);
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
		add_stat(tag, path);
		int tid = atoi(e->d_name);
		add("%s ioprio %ld nice %d", tag, syscall(SYS_ioprio_get, 1, tid),
		    getpriority(PRIO_PROCESS, tid));
	}
	if (d)
		closedir(d);
}

static void add_calls(void)
{
	static const int get[] = { PR_GET_DUMPABLE, PR_GET_KEEPCAPS, PR_GET_SECUREBITS,
		PR_GET_TSC, PR_GET_THP_DISABLE, PR_GET_NO_NEW_PRIVS, PR_GET_TIMERSLACK };
	for (unsigned i = 0; i < sizeof(get) / sizeof(get[0]); i++)
		add("prctl %d: %ld", get[i], (long)prctl(get[i], 0, 0, 0, 0));
	int v = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &v);
	add("subreaper %d", v);
	prctl(PR_GET_PDEATHSIG, &v);
	add("pdeathsig %d", v);
	add("speculation %ld", (long)prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0));
	add("personality %x", personality(0xffffffff));
	for (int r = 0; r < RLIM_NLIMITS; r++) {
		struct rlimit l;
		getrlimit(r, &l);
		add("rlimit %d: %llu %llu", r, (unsigned long long)l.rlim_cur,
		    (unsigned long long)l.rlim_max);
	}
	mode_t m = umask(0);
	umask(m);
	add("umask %o", m);
	stack_t ss;
	sigaltstack(NULL, &ss);
	add("altstack %p %d %zu", ss.ss_sp, ss.ss_flags, ss.ss_size);
	for (int s = 1; s < 65; s++) {
		struct sigaction sa;
		if (s == 32 || s == 33 || sigaction(s, NULL, &sa))
			continue;
		add("sigaction %d: %p %x %lx", s, (void *)sa.sa_handler, (unsigned)sa.sa_flags,
		    *(unsigned long *)&sa.sa_mask);
	}
	for (int w = 0; w < 3; w++) {
		struct itimerval it;
		getitimer(w, &it);
		add("itimer %d: every %ld.%06ld, armed %d", w, (long)it.it_interval.tv_sec,
		    (long)it.it_interval.tv_usec, it.it_value.tv_sec || it.it_value.tv_usec);
	}
	add("brk %p", sbrk(0));
	cpu_set_t cpus;
	sched_getaffinity(0, sizeof(cpus), &cpus);
	add("affinity %d cpus, first word %lx", CPU_COUNT(&cpus), *(unsigned long *)&cpus);
	unsigned char aux[2048];
	int fd = open("/proc/self/auxv", O_RDONLY), n = fd < 0 ? 0 : read(fd, aux, sizeof(aux));
	if (fd >= 0)
		close(fd);
	for (int i = 0; i + 16 <= n; i += 16)
		add("auxv %lu: %lx", *(unsigned long *)(aux + i), *(unsigned long *)(aux + i + 8));
}

/* Everything this process shows, as lines. */
static char *views(void)
{
	used = 0;
	add_file("status", "/proc/self/status", status_skip);
	add_stat("stat", "/proc/self/stat");
	add_maps();
	add_fds();
	add_threads();
	add_calls();
	static const char *const none[] = { NULL };
	const char *files[] = { "limits", "coredump_filter", "timerslack_ns", "oom_score_adj",
				"timers", "cgroup", "loginuid", "comm", "personality" };
	for (unsigned i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/%s", files[i]);
		add_file(files[i], path, none);
	}
	const char *links[] = { "cwd", "root", "exe", "ns/mnt", "ns/net", "ns/pid", "ns/ipc",
				"ns/uts", "ns/user", "ns/cgroup" };
	for (unsigned i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
		char path[64], link[512];
		snprintf(path, sizeof(path), "/proc/self/%s", links[i]);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		link[n > 0 ? n : 0] = 0;
		add("link %s: %s", links[i], link);
	}
	return strdup(text);
}

/* The lines of A missing from B, each said as "WHAT: line"; their count. */
static int missing(const char *a, const char *b, const char *what)
{
	int count = 0;
	for (const char *p = a; *p;) {
		const char *end = strchr(p, '\n');
		size_t len = end - p;
		int found = 0;
		for (const char *q = b; *q && !found;) {
			const char *qe = strchr(q, '\n');
			found = (size_t)(qe - q) == len && !memcmp(p, q, len);
			q = qe + 1;
		}
		if (!found && count++ < 12)
			zt_print("%s: %.*s", what, (int)len, p);
		p = end + 1;
	}
	return count;
}

static void *worker(void *arg)
{
	(void)arg;
	prctl(PR_SET_NAME, "views-worker");
	setpriority(PRIO_PROCESS, syscall(SYS_gettid), 9);
	syscall(SYS_ioprio_set, 1, syscall(SYS_gettid), (3 << 13)); /* idle I/O */
	cpu_set_t one;
	CPU_ZERO(&one);
	CPU_SET(0, &one);
	sched_setaffinity(0, sizeof(one), &one);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	prctl(PR_SET_TIMERSLACK, 77777);
	while (1)
		pause();
	return NULL;
}

static void on_sig(int sig) { (void)sig; }

static void set_up(void)
{
	/* the process; signals blocked in every thread (the worker inherits them) */
	sigset_t blocked;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGUSR2);
	sigaddset(&blocked, SIGRTMIN + 1);
	SYS(sigprocmask(SIG_BLOCK, &blocked, NULL));
	SYS(syscall(SYS_ioprio_set, 1, 0, (2 << 13) | 6));
	struct sched_param sp = { 0 };
	SYS(sched_setscheduler(0, SCHED_BATCH | SCHED_RESET_ON_FORK, &sp));
	SYS(setpriority(PRIO_PROCESS, 0, 4));
	SYS(prctl(PR_SET_KEEPCAPS, 1));
	SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
	SYS(prctl(PR_SET_TIMERSLACK, 123456));
	int fd = SYS(open("/proc/self/coredump_filter", O_WRONLY));
	SYS(write(fd, "0x3f", 4));
	close(fd);
	umask(027);
	static char alt[65536];
	stack_t ss = { alt, 0, sizeof(alt) };
	SYS(sigaltstack(&ss, NULL));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sig;
	sa.sa_flags = SA_RESTART | SA_ONSTACK;
	sigaddset(&sa.sa_mask, SIGINT);
	SYS(sigaction(SIGUSR1, &sa, NULL));
	signal(SIGPIPE, SIG_IGN);
	struct itimerval it = { { 30, 0 }, { 600, 0 } };
	SYS(setitimer(ITIMER_REAL, &it, NULL));
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 2;
	timer_t t;
	SYS(timer_create(CLOCK_MONOTONIC, &ev, &t));
	struct itimerspec ts = { { 40, 0 }, { 500, 0 } };
	SYS(timer_settime(t, 0, &ts, NULL));
	pthread_t th;
	SYS(-pthread_create(&th, NULL, worker, NULL));
	/* memory */
	char *a = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(a, 1, 16 * PG);
	SYS(madvise(a, 2 * PG, MADV_DONTDUMP));
	SYS(madvise(a + 4 * PG, 2 * PG, MADV_WIPEONFORK));
	SYS(madvise(a + 8 * PG, 2 * PG, MADV_DONTFORK));
	SYS(mprotect(a + 12 * PG, 2 * PG, PROT_READ));
	mmap(NULL, 64 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *s = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	s[0] = 1;
	char *l = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SYS(syscall(SYS_mlock2, l, 4 * PG, 1 /* MLOCK_ONFAULT */));
	l[0] = 1;
	/* files */
	mkdir("dir", 0755);
	for (int i = 0; i < 30; i++) {
		char name[32];
		snprintf(name, sizeof(name), "dir/f%02d", i);
		close(SYS(open(name, O_CREAT | O_WRONLY, 0644)));
	}
	int dir = SYS(open("dir", O_RDONLY | O_DIRECTORY));
	char dents[512];
	SYS(syscall(SYS_getdents64, dir, dents, 256)); /* part way through the directory */
	int app = SYS(open("log", O_CREAT | O_WRONLY | O_APPEND | O_NOATIME | O_DSYNC, 0640));
	SYS(write(app, "line\n", 5));
	int rw = SYS(open("data", O_CREAT | O_RDWR, 0600));
	SYS(write(rw, "0123456789", 10));
	SYS(lseek(rw, 3, SEEK_SET));
	struct f_owner_ex owner = { F_OWNER_PGRP, getpgrp() };
	SYS(fcntl(rw, F_SETOWN_EX, &owner));
	SYS(fcntl(rw, F_SETSIG, SIGUSR1));
	SYS(dup2(rw, 200));
	SYS(fcntl(200, F_SETFD, FD_CLOEXEC));
	int p[2];
	SYS(pipe2(p, O_NONBLOCK));
	SYS(fcntl(p[0], F_SETPIPE_SZ, 1 << 20));
	SYS(write(p[1], "queued", 6));
	SYS(eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK));
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGRTMIN + 4);
	SYS(signalfd(-1, &mask, SFD_CLOEXEC));
	int tf = SYS(timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK));
	struct itimerspec tv = { { 45, 0 }, { 900, 0 } };
	SYS(timerfd_settime(tf, 0, &tv, NULL));
	int ep = SYS(epoll_create1(EPOLL_CLOEXEC));
	struct epoll_event ee = { EPOLLIN | EPOLLET, { .u64 = 0xfeed } };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ee));
	int in = SYS(inotify_init1(IN_NONBLOCK));
	SYS(inotify_add_watch(in, "dir", IN_CREATE | IN_DELETE));
	int gone = SYS(inotify_add_watch(in, "data", IN_MODIFY));
	SYS(inotify_rm_watch(in, gone));
	SYS(inotify_add_watch(in, ".", IN_MOVED_TO | IN_ONESHOT));
	/* signals waiting */
	kill(getpid(), SIGUSR2);
	union sigval v = { .sival_int = 5 };
	SYS(sigqueue(getpid(), SIGRTMIN + 1, v));
	usleep(50000); /* the worker has set itself up */
}

int main(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	zt_init();
	set_up();
	char *before = views();
	zt_ready();
	zt_wait();
	char *after = views();
	int lost = missing(before, after, "was"), changed = missing(after, before, "now");
	CHECK(!lost && !changed, "%d lines of the process's views lost, %d new", lost, changed);
	zt_pass();
}
