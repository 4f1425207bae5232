/* Anonymous-inode files and notification: eventfd, signalfd, timerfd, epoll, poll,
 * inotify, fanotify; file locks and leases (dumped with --file-locks). */
#include "zdtm.h"
#include <sys/un.h>
#include <stddef.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>

static int eventfds(void)
{
	int a = SYS(eventfd(42, EFD_NONBLOCK));
	int b = SYS(eventfd(3, EFD_SEMAPHORE));
	int z = SYS(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
	zt_ready();
	zt_wait();
	uint64_t v;
	CHECK(read(a, &v, 8) == 8 && v == 42, "counter %llu", (unsigned long long)v);
	CHECK(read(a, &v, 8) < 0 && errno == EAGAIN, "counter not emptied");
	CHECK(read(b, &v, 8) == 8 && v == 1, "semaphore mode lost (%llu)", (unsigned long long)v);
	CHECK(read(z, &v, 8) < 0 && errno == EAGAIN, "empty counter");
	CHECK(fcntl(z, F_GETFD) == FD_CLOEXEC, "close-on-exec");
	zt_pass();
}

static int signalfds(void)
{
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGRTMIN + 1);
	sigprocmask(SIG_BLOCK, &m, NULL);
	int fd = SYS(signalfd(-1, &m, SFD_NONBLOCK));
	union sigval v = { .sival_int = 31337 };
	SYS(sigqueue(getpid(), SIGRTMIN + 1, v));
	kill(getpid(), SIGUSR1);
	zt_ready();
	zt_wait();
	struct signalfd_siginfo si[2];
	ssize_t n = read(fd, si, sizeof(si));
	CHECK(n == 2 * (ssize_t)sizeof(si[0]), "read %zd bytes of signals", n);
	CHECK(si[0].ssi_signo == SIGUSR1 && si[1].ssi_signo == (unsigned)SIGRTMIN + 1
	      && si[1].ssi_int == 31337, "signals %u %u value %d", si[0].ssi_signo, si[1].ssi_signo,
	      si[1].ssi_int);
	kill(getpid(), SIGUSR1);
	CHECK(read(fd, si, sizeof(si)) == sizeof(si[0]) && si[0].ssi_signo == SIGUSR1,
	      "the mask of the signalfd");
	zt_pass();
}

static int timerfds(void)
{
	int periodic = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
	int oneshot = SYS(timerfd_create(CLOCK_REALTIME, 0));
	int boot = SYS(timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK));
	struct itimerspec p = { { 0, 20000000 }, { 0, 20000000 } }, o = { { 0, 0 }, { 300, 0 } };
	SYS(timerfd_settime(periodic, 0, &p, NULL));
	SYS(timerfd_settime(oneshot, 0, &o, NULL));
	struct itimerspec b = { { 0, 0 }, { 0, 1000000 } };
	SYS(timerfd_settime(boot, 0, &b, NULL));
	usleep(10000); /* boot expired, unread */
	zt_ready();
	zt_wait();
	struct itimerspec got;
	SYS(timerfd_gettime(periodic, &got));
	CHECK(got.it_interval.tv_nsec == 20000000, "interval %ld", got.it_interval.tv_nsec);
	SYS(timerfd_gettime(oneshot, &got));
	CHECK(got.it_value.tv_sec > 200 && got.it_value.tv_sec <= 300, "one-shot: %ld s left",
	      (long)got.it_value.tv_sec);
	uint64_t n = 0;
	CHECK(read(boot, &n, 8) == 8 && n == 1, "unread expiration lost (%llu)", (unsigned long long)n);
	struct pollfd pf = { periodic, POLLIN, 0 };
	CHECK(poll(&pf, 1, 5000) == 1, "periodic timer does not fire");
	CHECK(read(periodic, &n, 8) == 8 && n >= 1, "ticks");
	zt_pass();
}

/* epoll watching pipes, an eventfd and a socket, level and edge triggered, with data;
 * a watch on an fd that was dup'ed and closed. */
static int epolls(int closed)
{
	int ep = SYS(epoll_create1(EPOLL_CLOEXEC));
	int p[2], q[2];
	SYS(pipe(p));
	SYS(pipe(q));
	int ev = SYS(eventfd(0, EFD_NONBLOCK));
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0x1111 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e));
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.u64 = 0x2222 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &e));
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLONESHOT, .data.u64 = 0x3333 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e));
	e = (struct epoll_event){ .events = EPOLLOUT, .data.u64 = 0x4444 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[1], &e));
	if (closed) { /* the watched fd renumbered: watch registered under a closed number */
		int moved = SYS(dup(p[0]));
		close(p[0]);
		p[0] = moved;
	}
	SYS(write(p[1], "a", 1));
	zt_ready();
	zt_wait();
	struct epoll_event out[8];
	int n = epoll_wait(ep, out, 8, 1000);
	uint64_t seen = 0;
	for (int i = 0; i < n; i++)
		seen |= out[i].data.u64;
	CHECK(n == 2 && seen == (0x1111 | 0x4444), "%d events, data %llx", n, (unsigned long long)seen);
	SYS(write(q[1], "b", 1));
	uint64_t one = 1;
	SYS(write(ev, &one, 8));
	n = epoll_wait(ep, out, 8, 1000);
	seen = 0;
	for (int i = 0; i < n; i++)
		seen |= out[i].data.u64;
	CHECK(seen == (0x1111 | 0x2222 | 0x3333 | 0x4444), "after writes: data %llx", (unsigned long long)seen);
	n = epoll_wait(ep, out, 8, 100); /* edge and one-shot report once */
	seen = 0;
	for (int i = 0; i < n; i++)
		seen |= out[i].data.u64;
	CHECK(seen == (0x1111 | 0x4444), "edge/one-shot reported again: %llx", (unsigned long long)seen);
	zt_pass();
}

/* poll() on a pipe, blocked in it during the dump, woken after. */
/* The events mask of the watch of DATA in epoll EP, as /proc/self/fdinfo shows it. */
static unsigned watch_events(int ep, unsigned long long data)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ep);
	FILE *f = fopen(path, "r");
	unsigned ev = 0, found = 0;
	unsigned long long d;
	while (f && fgets(line, sizeof(line), f)) {
		char *t = strstr(line, "events:");
		if (t && sscanf(t, "events: %x data: %llx", &ev, &d) == 2 && d == data) {
			found = 1;
			break;
		}
	}
	if (f)
		fclose(f);
	return found ? ev : 0xdead;
}

/* One-shot watches that fired before the dump (disarmed until the process re-arms them,
 * as a thread pool does while a worker handles the file): a socket, an eventfd. A
 * hang-up of the socket's peer must not wake anyone; re-armed, they report again. */
static int epoll_oneshot(void)
{
	int ep = SYS(epoll_create1(EPOLL_CLOEXEC));
	int sk[2];
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sk));
	int ev = SYS(eventfd(1, EFD_NONBLOCK));
	struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u64 = 0x51 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, sk[0], &e));
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLET | EPOLLONESHOT, .data.u64 = 0x52 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e));
	SYS(write(sk[1], "x", 1));
	struct epoll_event out[4];
	CHECK(epoll_wait(ep, out, 4, 1000) == 2, "set-up: both fire");
	unsigned s0 = watch_events(ep, 0x51), e0 = watch_events(ep, 0x52);
	zt_ready();
	zt_wait();
	CHECK(watch_events(ep, 0x51) == s0 && watch_events(ep, 0x52) == e0,
	      "fired watches' events %x %x, were %x %x", watch_events(ep, 0x51),
	      watch_events(ep, 0x52), s0, e0);
	close(sk[1]); /* a hang-up: a disarmed watch stays quiet */
	int n = epoll_wait(ep, out, 4, 200);
	CHECK(n == 0, "%d events from disarmed watches (data %llx)", n,
	      n > 0 ? (unsigned long long)out[0].data.u64 : 0ULL);
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.u64 = 0x51 };
	SYS(epoll_ctl(ep, EPOLL_CTL_MOD, sk[0], &e));
	n = epoll_wait(ep, out, 4, 1000);
	CHECK(n == 1 && out[0].data.u64 == 0x51, "re-armed: %d events", n);
	zt_pass();
}

static int polling(void)
{
	int p[2];
	SYS(pipe(p));
	pid_t c = SYS(fork());
	if (c == 0) {
		struct pollfd pf = { p[0], POLLIN, 0 };
		int r;
		do
			r = poll(&pf, 1, -1);
		while (r < 0 && errno == EINTR);
		char x;
		_exit(r == 1 && read(p[0], &x, 1) == 1 && x == 'w' ? 0 : 1);
	}
	usleep(50000);
	zt_ready();
	zt_wait();
	SYS(write(p[1], "w", 1));
	CHECK(zt_reap(c) == 0, "the poller did not wake with the byte");
	zt_pass();
}

/* inotify watches on a directory and a file: events after the restore carry the
 * same watch descriptors. */
static int inotifies(int deleted_watch)
{
	SYS(mkdir("watched", 0755));
	int f = SYS(open("watched/file", O_CREAT | O_RDWR, 0644));
	close(f);
	int in = SYS(inotify_init1(IN_NONBLOCK));
	int wd_dir = SYS(inotify_add_watch(in, "watched", IN_CREATE | IN_DELETE));
	int wd_file = SYS(inotify_add_watch(in, "watched/file", IN_MODIFY | IN_CLOSE_WRITE));
	int wd_gone = -1;
	if (deleted_watch) {
		SYS(mkdir("watched/sub", 0755));
		wd_gone = SYS(inotify_add_watch(in, "watched/sub", IN_ALL_EVENTS));
		SYS(rmdir("watched/sub"));
		char buf[4096];
		usleep(10000);
		while (read(in, buf, sizeof(buf)) > 0)
			;
	}
	zt_ready();
	zt_wait();
	int fd = SYS(open("watched/new", O_CREAT | O_WRONLY, 0644));
	close(fd);
	fd = SYS(open("watched/file", O_WRONLY));
	SYS(write(fd, "x", 1));
	close(fd);
	char buf[4096] __attribute__((aligned(8)));
	int got_create = 0, got_modify = 0;
	for (int tries = 0; tries < 100 && !(got_create && got_modify); tries++) {
		ssize_t n = read(in, buf, sizeof(buf));
		if (n <= 0) {
			usleep(10000);
			continue;
		}
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (void *)p;
			if (e->wd == wd_dir && (e->mask & IN_CREATE) && !strcmp(e->name, "new"))
				got_create = 1;
			if (e->wd == wd_file && (e->mask & IN_MODIFY))
				got_modify = 1;
			CHECK(e->wd == wd_dir || e->wd == wd_file || e->wd == wd_gone,
			      "event with unknown wd %d", e->wd);
			p += sizeof(*e) + e->len;
		}
	}
	CHECK(got_create && got_modify, "events: create %d modify %d", got_create, got_modify);
	zt_pass();
}

static int fanotifies(void)
{
	SYS(mkdir("fan", 0755));
	int fd = SYS(fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY));
	SYS(fanotify_mark(fd, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_EVENT_ON_CHILD, AT_FDCWD, "fan"));
	zt_ready();
	zt_wait();
	int w = SYS(open("fan/f", O_CREAT | O_WRONLY, 0644));
	close(w);
	char buf[4096] __attribute__((aligned(8)));
	for (int i = 0; i < 100; i++) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n > 0) {
			struct fanotify_event_metadata *m = (void *)buf;
			CHECK(m->mask & FAN_CLOSE_WRITE, "mask %llx", (unsigned long long)m->mask);
			zt_pass();
		}
		usleep(10000);
	}
	zt_fail("no fanotify event after the restore");
}

/* Whether a child can take the lock (0: it can, 1: it cannot). */
static int child_can(int (*try)(const char *, int), const char *path, int arg)
{
	pid_t c = fork();
	if (c == 0)
		_exit(try(path, arg));
	return zt_reap(c);
}

static int try_flock(const char *path, int how)
{
	int fd = open(path, O_RDWR);
	return flock(fd, how | LOCK_NB) == 0 ? 0 : 1;
}

static int try_posix(const char *path, int start)
{
	int fd = open(path, O_RDWR);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = 10 };
	return fcntl(fd, F_SETLK, &fl) == 0 ? 0 : 1;
}

static int try_ofd(const char *path, int type)
{
	int fd = open(path, O_RDWR);
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	return fcntl(fd, F_OFD_SETLK, &fl) == 0 ? 0 : 1;
}

static int locks(void)
{
	close(open("flock.file", O_CREAT | O_RDWR, 0644));
	close(open("posix.file", O_CREAT | O_RDWR, 0644));
	close(open("ofd.file", O_CREAT | O_RDWR, 0644));
	close(open("shared.file", O_CREAT | O_RDWR, 0644));
	int a = SYS(open("flock.file", O_RDWR));
	SYS(flock(a, LOCK_EX));
	int s = SYS(open("shared.file", O_RDWR));
	SYS(flock(s, LOCK_SH));
	int b = SYS(open("posix.file", O_RDWR));
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 10 };
	SYS(fcntl(b, F_SETLK, &fl));
	fl.l_type = F_RDLCK;
	fl.l_start = 200;
	SYS(fcntl(b, F_SETLK, &fl));
	int c = SYS(open("ofd.file", O_RDWR));
	struct flock ofd = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	SYS(fcntl(c, F_OFD_SETLK, &ofd));
	zt_ready();
	zt_wait();
	CHECK(child_can(try_flock, "flock.file", LOCK_SH) == 1, "flock exclusive lock lost");
	CHECK(child_can(try_flock, "shared.file", LOCK_SH) == 0, "shared flock");
	CHECK(child_can(try_flock, "shared.file", LOCK_EX) == 1, "shared flock lost");
	CHECK(child_can(try_posix, "posix.file", 100) == 1, "POSIX write lock lost");
	CHECK(child_can(try_posix, "posix.file", 200) == 1, "POSIX read lock lost");
	CHECK(child_can(try_posix, "posix.file", 300) == 0, "POSIX lock grew");
	CHECK(child_can(try_ofd, "ofd.file", F_RDLCK) == 0, "OFD read lock excludes readers");
	CHECK(child_can(try_ofd, "ofd.file", F_WRLCK) == 1, "OFD read lock lost");
	zt_pass();
}

/* A lock the parent and child share through one open file (flock), and a POSIX lock
 * of the child's own. */
static int locks_shared(void)
{
	close(open("sh.file", O_CREAT | O_RDWR, 0644));
	int fd = SYS(open("sh.file", O_RDWR));
	SYS(flock(fd, LOCK_EX));
	pid_t c = SYS(fork());
	if (c == 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
		if (fcntl(fd, F_SETLK, &fl) < 0)
			_exit(5);
		zt_wait();
		_exit(0);
	}
	usleep(20000);
	zt_ready();
	zt_wait();
	CHECK(child_can(try_flock, "sh.file", LOCK_SH) == 1, "shared flock lost");
	CHECK(child_can(try_posix, "sh.file", 0) == 1, "the child's POSIX lock lost");
	zt_children_verdict(&c, 1);
	zt_pass();
}

static int lease(int type)
{
	close(open("lease.file", O_CREAT | O_RDWR, 0644));
	int fd = SYS(open("lease.file", type == F_WRLCK ? O_RDWR : O_RDONLY));
	SYS(fcntl(fd, F_SETLEASE, type));
	zt_ready();
	zt_wait();
	CHECK(fcntl(fd, F_GETLEASE) == type, "lease %d, expected %d", fcntl(fd, F_GETLEASE), type);
	zt_pass();
}

static int lock_refused(void)
{
	close(open("r.file", O_CREAT | O_RDWR, 0644));
	int fd = SYS(open("r.file", O_RDWR));
	SYS(flock(fd, LOCK_EX));
	zt_ready();
	zt_wait();
	CHECK(child_can(try_flock, "r.file", LOCK_SH) == 1, "lock lost");
	zt_pass();
}

/* Leases being broken at the dump: a read lease a writer's open is breaking (to none)
 * and a write lease a reader's open is breaking (to a read lease). After the restore
 * each is still being broken, the same way: readers may open the first file, writers
 * still may not; nobody may open the second; and no break signal came twice. */
static volatile int lease_signals;
static void on_lease_break(int s) { (void)s; lease_signals++; }

static int lease_broken(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_lease_break;
	sa.sa_flags = SA_RESTART;
	SYS(sigaction(SIGIO, &sa, NULL));
	close(open("rd.lease", O_CREAT | O_RDWR, 0644));
	close(open("wr.lease", O_CREAT | O_RDWR, 0644));
	int rd = SYS(open("rd.lease", O_RDONLY));
	int wr = SYS(open("wr.lease", O_RDONLY));
	SYS(fcntl(rd, F_SETLEASE, F_RDLCK));
	SYS(fcntl(wr, F_SETLEASE, F_WRLCK));
	CHECK(open("rd.lease", O_WRONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK,
	      "set-up: no break of the read lease");
	CHECK(open("wr.lease", O_RDONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK,
	      "set-up: no break of the write lease");
	for (int i = 0; i < 200 && lease_signals < 2; i++)
		usleep(5000);
	int seen = lease_signals;
	zt_ready();
	zt_wait();
	CHECK(lease_signals == seen, "%d break signals after the restore", lease_signals - seen);
	CHECK(fcntl(rd, F_GETLEASE) == F_UNLCK, "read lease breaking to %d", fcntl(rd, F_GETLEASE));
	CHECK(fcntl(wr, F_GETLEASE) == F_RDLCK, "write lease breaking to %d", fcntl(wr, F_GETLEASE));
	int r = open("rd.lease", O_RDONLY | O_NONBLOCK);
	CHECK(r >= 0, "a reader conflicts with the read lease: %s", strerror(errno));
	close(r);
	CHECK(open("rd.lease", O_WRONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK,
	      "a writer does not conflict with the read lease being broken");
	CHECK(open("wr.lease", O_RDONLY | O_NONBLOCK) < 0 && errno == EWOULDBLOCK,
	      "a reader does not conflict with the write lease being broken");
	zt_pass();
}

/* The "settime flags" line of FD's fdinfo (TFD_TIMER_ABSTIME, CANCEL_ON_SET). */
static void settime_flags(int fd, char *out, size_t size)
{
	char path[64], line[128];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "settime flags:", 14))
			snprintf(out, size, "%.31s", line + 14);
	if (f)
		fclose(f);
}

/* Timers armed for a time of day or of the clock (absolute): a timerfd of
 * CLOCK_REALTIME that is cancelled when the clock is set (TFD_TIMER_CANCEL_ON_SET, as
 * cron-like daemons and systemd use), a periodic one of CLOCK_MONOTONIC, and a POSIX
 * timer of CLOCK_REALTIME with TIMER_ABSTIME: same expiry, flags and period after. */
static int timerfd_abs(void)
{
	struct timespec now;
	int wall = SYS(timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK));
	int mono = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
	SYS(clock_gettime(CLOCK_REALTIME, &now));
	struct itimerspec w = { { 0, 0 }, { now.tv_sec + 500, 0 } };
	SYS(timerfd_settime(wall, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &w, NULL));
	SYS(clock_gettime(CLOCK_MONOTONIC, &now));
	struct itimerspec m = { { 3600, 0 }, { now.tv_sec + 400, 0 } };
	SYS(timerfd_settime(mono, TFD_TIMER_ABSTIME, &m, NULL));
	timer_t pt;
	struct sigevent sev = { .sigev_notify = SIGEV_NONE };
	SYS(timer_create(CLOCK_REALTIME, &sev, &pt));
	struct itimerspec p = { { 0, 0 }, { w.it_value.tv_sec + 100, 0 } };
	SYS(timer_settime(pt, TIMER_ABSTIME, &p, NULL));
	char wall_flags[32], mono_flags[32], now_flags[32];
	settime_flags(wall, wall_flags, sizeof(wall_flags));
	settime_flags(mono, mono_flags, sizeof(mono_flags));
	zt_ready();
	zt_wait();
	struct itimerspec got;
	SYS(clock_gettime(CLOCK_REALTIME, &now));
	SYS(timerfd_gettime(wall, &got));
	CHECK(labs(now.tv_sec + got.it_value.tv_sec - w.it_value.tv_sec) <= 2,
	      "wall timer due in %ld s, at %ld, now %ld", (long)got.it_value.tv_sec,
	      (long)w.it_value.tv_sec, (long)now.tv_sec);
	settime_flags(wall, now_flags, sizeof(now_flags));
	CHECK(!strcmp(now_flags, wall_flags), "wall timer flags%s, were%s", now_flags, wall_flags);
	SYS(timer_gettime(pt, &got));
	CHECK(labs(now.tv_sec + got.it_value.tv_sec - p.it_value.tv_sec) <= 2,
	      "POSIX timer due in %ld s", (long)got.it_value.tv_sec);
	SYS(clock_gettime(CLOCK_MONOTONIC, &now));
	SYS(timerfd_gettime(mono, &got));
	CHECK(got.it_interval.tv_sec == 3600 && got.it_value.tv_sec <= 400, "monotonic: %ld s "
	      "left, period %ld", (long)got.it_value.tv_sec, (long)got.it_interval.tv_sec);
	settime_flags(mono, now_flags, sizeof(now_flags));
	CHECK(!strcmp(now_flags, mono_flags), "monotonic flags%s, were%s", now_flags, mono_flags);
	uint64_t n;
	CHECK(read(wall, &n, 8) < 0 && errno == EAGAIN, "the wall timer fired or was cancelled");
	zt_pass();
}

/* The watches of epoll FD from its fdinfo, "fd events data" each, sorted by fd (the
 * kernel lists them in the order of its tree, by file address). */
static void epoll_watches(int fd, char *out, size_t size)
{
	char path[64], line[256], items[16][64];
	int n = 0;
	size_t used = 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(path, "r");
	while (f && n < 16 && fgets(line, sizeof(line), f)) {
		int tfd;
		unsigned events;
		unsigned long long data;
		if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &events, &data) == 3)
			snprintf(items[n++], sizeof(items[0]), "%4d %x %llx;", tfd, events, data);
	}
	if (f)
		fclose(f);
	qsort(items, n, sizeof(items[0]), (int (*)(const void *, const void *))strcmp);
	out[0] = 0;
	for (int i = 0; i < n && used < size; i++)
		used += snprintf(out + used, size - used, "%s", items[i]);
}

/* Watches added with EPOLLEXCLUSIVE (nginx's workers share a listener this way) and
 * EPOLLWAKEUP-less EPOLLRDHUP|EPOLLPRI: the same events after, each waking once. */
static int epoll_exclusive(void)
{
	int p[2], q[2];
	SYS(pipe(p));
	SYS(pipe(q));
	int ep = SYS(epoll_create1(EPOLL_CLOEXEC));
	struct epoll_event e = { .events = EPOLLIN | EPOLLEXCLUSIVE, .data.u64 = 0x71 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e));
	e = (struct epoll_event){ .events = EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLET, .data.u64 = 0x72 };
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &e));
	char before[512], after[512];
	epoll_watches(ep, before, sizeof(before));
	zt_ready();
	zt_wait();
	epoll_watches(ep, after, sizeof(after));
	CHECK(!strcmp(before, after), "watches %s, were %s", after, before);
	e.events = EPOLLIN;  /* EPOLL_CTL_MOD of an exclusive watch: EINVAL */
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &e) < 0 && errno == EINVAL,
	      "the watch is not exclusive");
	SYS(write(p[1], "x", 1));
	struct epoll_event got[2];
	CHECK(epoll_wait(ep, got, 2, 5000) == 1 && got[0].data.u64 == 0x71, "exclusive watch");
	zt_pass();
}

/* An epoll set inside another, one file watched under two fds, a signalfd, a timerfd
 * and a unix listener in the outer set, which a child shares (a prefork server): each
 * wakes it for its own event after the restore, the child for the listener. */
static unsigned long long epoll_seen(int ep, int ms)
{
	struct epoll_event o[16];
	int n = epoll_wait(ep, o, 16, ms);
	unsigned long long seen = 0;
	for (int i = 0; i < n; i++)
		seen |= o[i].data.u64;
	return seen;
}

static int epoll_nested(void)
{
	int inner = SYS(epoll_create1(0)), outer = SYS(epoll_create1(0)), p[2];
	SYS(pipe(p));
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = 1 };
	SYS(epoll_ctl(inner, EPOLL_CTL_ADD, p[0], &e));
	int again = SYS(dup(p[0]));
	e.data.u64 = 2;
	SYS(epoll_ctl(inner, EPOLL_CTL_ADD, again, &e));
	e.data.u64 = 4;
	SYS(epoll_ctl(outer, EPOLL_CTL_ADD, inner, &e));
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	SYS(sigprocmask(SIG_BLOCK, &usr1, NULL));
	int sfd = SYS(signalfd(-1, &usr1, SFD_NONBLOCK));
	e.data.u64 = 8;
	SYS(epoll_ctl(outer, EPOLL_CTL_ADD, sfd, &e));
	int tfd = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK));
	e.data.u64 = 16;
	SYS(epoll_ctl(outer, EPOLL_CTL_ADD, tfd, &e));
	int lst = SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0));
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "zdtm-nested-%d", getpid());
	socklen_t ul = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1);
	SYS(bind(lst, (void *)&un, ul));
	SYS(listen(lst, 8));
	e.data.u64 = 32;
	SYS(epoll_ctl(outer, EPOLL_CTL_ADD, lst, &e));
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		for (int i = 0; i < 500; i++)  /* the others' events (level) come too */
			if (epoll_seen(outer, 10) & 32)
				_exit(0);
		_exit(1);
	}
	zt_ready();
	zt_wait();
	unsigned long long seen = epoll_seen(outer, 100);
	CHECK(seen == 0, "events before any: %llx", seen);
	SYS(write(p[1], "x", 1));
	CHECK((seen = epoll_seen(inner, 1000)) == 3, "inner set: %llx", seen);
	CHECK((seen = epoll_seen(outer, 1000)) == 4, "outer set: %llx", seen);
	SYS(kill(getpid(), SIGUSR1));
	CHECK((seen = epoll_seen(outer, 1000)) & 8, "signalfd: %llx", seen);
	struct itimerspec soon = { .it_value = { 0, 1000000 } };
	SYS(timerfd_settime(tfd, 0, &soon, NULL));
	usleep(20000);
	CHECK((seen = epoll_seen(outer, 1000)) & 16, "timerfd: %llx", seen);
	int cl = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	SYS(connect(cl, (void *)&un, ul));
	SYS(kill(c, SIGTERM));
	CHECK(zt_reap(c) == 0, "the child saw no connection");
	CHECK((seen = epoll_seen(outer, 1000)) & 32, "listener: %llx", seen);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "eventfd")) return eventfds();
	if (!strcmp(m, "signalfd")) return signalfds();
	if (!strcmp(m, "timerfd")) return timerfds();
	if (!strcmp(m, "timerfd-abs")) return timerfd_abs();
	if (!strcmp(m, "epoll-exclusive")) return epoll_exclusive();
	if (!strcmp(m, "epoll")) return epolls(0);
	if (!strcmp(m, "epoll-moved")) return epolls(1);
	if (!strcmp(m, "epoll-oneshot")) return epoll_oneshot();
	if (!strcmp(m, "epoll-nested")) return epoll_nested();
	if (!strcmp(m, "poll")) return polling();
	if (!strcmp(m, "inotify")) return inotifies(0);
	if (!strcmp(m, "inotify-removed")) return inotifies(1);
	if (!strcmp(m, "fanotify")) return fanotifies();
	if (!strcmp(m, "locks")) return locks();
	if (!strcmp(m, "locks-shared")) return locks_shared();
	if (!strcmp(m, "lease-read")) return lease(F_RDLCK);
	if (!strcmp(m, "lease-write")) return lease(F_WRLCK);
	if (!strcmp(m, "lease-broken")) return lease_broken();
	if (!strcmp(m, "locks-no-flag")) return lock_refused();
	zt_setup_fail("unknown mode %s", m);
}
