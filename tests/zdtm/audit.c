/* State found by going field by field through what the kernel keeps for a process
 * (prctl's getters, /proc/PID/status and stat, criu's images): each mode sets one
 * piece up and checks it after the restore. */
#include "zdtm.h"
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ucontext.h>

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#define PR_SYS_DISPATCH_OFF 0
#define PR_SYS_DISPATCH_ON 1
#endif
#define SYSCALL_DISPATCH_FILTER_ALLOW 0
#define SYSCALL_DISPATCH_FILTER_BLOCK 1
#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31)
#endif

/* ---------------------------------------------------------------- syscall user dispatch */
static volatile char sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
static volatile int sud_caught, sud_nr;

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)uc;
	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;  /* the handler's own calls run */
	sud_caught++;
	sud_nr = si->si_syscall;
	((ucontext_t *)uc)->uc_mcontext.gregs[REG_RAX] = 4242;  /* the call's "result" */
}

/* A raw getppid (not glibc's, which may cache) under the selector BLOCK. */
static long blocked_getppid(void)
{
	long r;
	sud_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
	__asm__ volatile ("syscall" : "=a"(r) : "0"((long)SYS_getppid) : "rcx", "r11", "memory");
	sud_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	return r;
}

static volatile int spin_go = 1;
static volatile unsigned long spins;

/* A thread spinning in user code with its selector on BLOCK (as Wine runs Windows
 * code): any syscall it made would be a SIGSYS. */
static volatile char spin_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
static void spin_sigsys(int sig, siginfo_t *si, void *uc)
{
	(void)sig; (void)si; (void)uc;
	spin_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	sud_caught += 100;
}

static void *spinner(void *arg)
{
	(void)arg;
	if (prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, 0, 0, (char *)&spin_selector))
		return (void *)1;
	spin_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
	while (spin_go)
		spins++;
	spin_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	long r;
	spin_selector = SYSCALL_DISPATCH_FILTER_BLOCK;
	__asm__ volatile ("syscall" : "=a"(r) : "0"((long)SYS_getppid) : "rcx", "r11", "memory");
	spin_selector = SYSCALL_DISPATCH_FILTER_ALLOW;
	return r == 4242 || sud_caught >= 100 ? NULL : (void *)2;
}

static int sud(int spinning)
{
	struct sigaction sa = { 0 };
	sa.sa_sigaction = spinning ? spin_sigsys : on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	SYS(sigaction(SIGSYS, &sa, NULL));
	pthread_t t;
	if (spinning) {
		SYS(-pthread_create(&t, NULL, spinner, NULL));
		while (spins < 1000)
			;
	} else {
		SYS(prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, 0, 0, (char *)&sud_selector));
		long r = blocked_getppid();
		if (r != 4242 || sud_caught != 1)
			zt_setup_fail("dispatch not working: %ld, %d", r, sud_caught);
	}
	zt_ready();
	zt_wait();
	if (spinning) {
		unsigned long before = spins;
		for (int i = 0; i < 1000 && spins == before; i++)
			usleep(1000);
		CHECK(spins != before, "the spinning thread does not run");
		spin_go = 0;
		void *res;
		pthread_join(t, &res);
		CHECK(res == NULL, "the thread's dispatch after the restore: %ld", (long)res);
		CHECK(sud_caught == 100, "SIGSYS caught %d times", sud_caught);
		zt_pass();
	}
	long r = blocked_getppid();
	CHECK(r == 4242 && sud_caught == 2, "dispatch lost: getppid gave %ld, %d SIGSYS", r,
	      sud_caught);
	CHECK(sud_nr == SYS_getppid, "SIGSYS for call %d", sud_nr);
	zt_pass();
}

/* ---------------------------------------------------------------- a thread's own fs, fds */
static volatile int th_stop, th_set;  /* the thread's state set up: 1, or -1 (failed) */
static pthread_t th;
static int th_fd = -1;

/* In the thread: its own state is set up; wait for the verdict's turn. */
static void th_wait(void)
{
	th_set = 1;
	while (!th_stop)
		usleep(1000);
}

static void *th_setup_failed(void)
{
	th_set = -1;
	return (void *)1;
}

/* Run thread FN through the dump: its result once stopped (NULL: its checks held). */
static void *th_through(void *(*fn)(void *))
{
	SYS(-pthread_create(&th, NULL, fn, NULL));
	while (!th_set)
		usleep(1000);
	if (th_set < 0)
		zt_setup_fail("the thread's own state");
	zt_ready();
	zt_wait();
	th_stop = 1;
	void *res;
	pthread_join(th, &res);
	return res;
}

static void *own_fs(void *arg)
{
	(void)arg;
	if (unshare(CLONE_FS) || chdir("/tmp"))
		return th_setup_failed();
	umask(0077);
	th_wait();
	char cwd[256];
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/tmp"))
		return (void *)2;
	if (umask(0) != 0077)
		return (void *)3;
	return NULL;
}

static void *own_files(void *arg)
{
	(void)arg;
	if (unshare(CLONE_FILES))
		return th_setup_failed();
	close(th_fd);  /* gone from this thread's table only */
	if (open("/dev/null", O_RDONLY) != th_fd)
		return th_setup_failed();
	th_wait();
	char path[64];
	snprintf(path, sizeof(path), "/proc/thread-self/fd/%d", th_fd);
	char link[64] = "";
	if (readlink(path, link, sizeof(link) - 1) < 0 || strcmp(link, "/dev/null"))
		return (void *)2;
	return NULL;
}

static int thread_own(int files)
{
	char cwd[256];
	if (files)
		th_fd = SYS(open("/dev/zero", O_RDONLY));
	void *res = th_through(files ? own_files : own_fs);
	CHECK(res == NULL, "the thread's own %s: %ld", files ? "fd table" : "fs", (long)res);
	if (files) {
		char link[64] = "", path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", th_fd);
		CHECK(readlink(path, link, sizeof(link) - 1) > 0 && !strcmp(link, "/dev/zero"),
		      "the process's fd %d is %s", th_fd, link);
	} else {
		CHECK(getcwd(cwd, sizeof(cwd)) && strcmp(cwd, "/tmp"), "the process's cwd %s", cwd);
	}
	zt_pass();
}

/* ---------------------------------------------------------------- small knobs */
static int altstack_autodisarm(void)
{
	static char stack[65536];
	stack_t ss = { .ss_sp = stack, .ss_size = sizeof(stack), .ss_flags = SS_AUTODISARM };
	SYS(sigaltstack(&ss, NULL));
	zt_ready();
	zt_wait();
	stack_t now;
	SYS(sigaltstack(NULL, &now));
	CHECK(now.ss_sp == stack && now.ss_size == sizeof(stack), "stack %p %zu", now.ss_sp,
	      now.ss_size);
	CHECK((unsigned)now.ss_flags == SS_AUTODISARM, "flags %#x", now.ss_flags);
	zt_pass();
}

static int autogroup(void)
{
	SYS(setsid());
	int fd = SYS(open("/proc/self/autogroup", O_RDWR));
	SYS(write(fd, "7", 1));
	close(fd);
	char before[128] = "";
	fd = SYS(open("/proc/self/autogroup", O_RDONLY));
	SYS(read(fd, before, sizeof(before) - 1));
	close(fd);
	zt_ready();
	zt_wait();
	char now[128] = "";
	fd = SYS(open("/proc/self/autogroup", O_RDONLY));
	SYS(read(fd, now, sizeof(now) - 1));
	close(fd);
	CHECK(strstr(now, "nice 7"), "autogroup %s, was %s", now, before);
	zt_pass();
}

struct epoll_params_ {
	uint32_t busy_poll_usecs;
	uint16_t busy_poll_budget;
	uint8_t prefer_busy_poll;
	uint8_t pad;
};
#define EPIOCSPARAMS_ _IOW(0x8A, 0x01, struct epoll_params_)
#define EPIOCGPARAMS_ _IOR(0x8A, 0x02, struct epoll_params_)

static int epoll_params(void)
{
	int ep = SYS(epoll_create1(0));
	struct epoll_params_ p = { 25, 16, 1, 0 };
	SYS(ioctl(ep, EPIOCSPARAMS_, &p));
	zt_ready();
	zt_wait();
	struct epoll_params_ q = { 0 };
	SYS(ioctl(ep, EPIOCGPARAMS_, &q));
	CHECK(q.busy_poll_usecs == 25 && q.busy_poll_budget == 16 && q.prefer_busy_poll == 1,
	      "epoll params %u %u %u", q.busy_poll_usecs, q.busy_poll_budget, q.prefer_busy_poll);
	zt_pass();
}


/* ---------------------------------------------------------------- probes */
#include <linux/perf_event.h>
#include <linux/bpf.h>

static int kept_fd(int fd)
{
	zt_ready();
	zt_wait();
	CHECK(fcntl(fd, F_GETFD) >= 0, "fd %d lost", fd);
	zt_pass();
}

static int perf_fd(void)
{
	struct perf_event_attr a = { 0 };
	a.size = sizeof(a);
	a.type = PERF_TYPE_SOFTWARE;
	a.config = PERF_COUNT_SW_TASK_CLOCK;
	a.exclude_kernel = 1;
	return kept_fd(SYS(syscall(SYS_perf_event_open, &a, 0, -1, -1, 0)));
}

static int bpf_map_fd(void)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 4;
	return kept_fd(SYS(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a))));
}

static int fsopen_fd(void)
{
	return kept_fd(SYS(syscall(SYS_fsopen, "tmpfs", 0)));
}

static void *own_uts(void *arg)
{
	(void)arg;
	if (unshare(CLONE_NEWUTS) || sethostname("audit-thread", 12))
		return th_setup_failed();
	th_wait();
	char name[64] = "";
	gethostname(name, sizeof(name));
	return strcmp(name, "audit-thread") ? (void *)2 : NULL;
}

static int thread_own_ns(void)
{
	void *res = th_through(own_uts);
	CHECK(res == NULL, "the thread's own uts namespace: %ld", (long)res);
	zt_pass();
}

#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif
static int thp_except_advised(void)
{
	SYS(prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0));
	int before = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	zt_ready();
	zt_wait();
	int now = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	CHECK(now == before, "THP disable %d, was %d", now, before);
	zt_pass();
}

static int autogroup_child(void)
{
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_stopped = 0;
		if (autogroup() == 0)
			_exit(0);
		_exit(1);
	}
	zt_wait();
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* Socket options newer than the others: SO_RCVPRIORITY (6.14), SO_PASSRIGHTS (6.16). */
#include <sys/socket.h>
static int sock_opts_new(void)
{
	int sv[2], one = 1, zero = 0, v;
	socklen_t len = sizeof(v);
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	int udp = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	SYS(setsockopt(sv[0], SOL_SOCKET, 83 /* SO_PASSRIGHTS */, &zero, sizeof(zero)));
	SYS(setsockopt(udp, SOL_SOCKET, 82 /* SO_RCVPRIORITY */, &one, sizeof(one)));
	zt_ready();
	zt_wait();
	SYS(getsockopt(sv[0], SOL_SOCKET, 83, &v, &len));
	CHECK(v == 0, "SO_PASSRIGHTS %d", v);
	SYS(getsockopt(sv[1], SOL_SOCKET, 83, &v, &len));
	CHECK(v == 1, "the peer's SO_PASSRIGHTS %d", v);
	SYS(getsockopt(udp, SOL_SOCKET, 82, &v, &len));
	CHECK(v == 1, "SO_RCVPRIORITY %d", v);
	/* the socket refuses fds: a message carrying one fails */
	char c = 'x';
	struct iovec iov = { &c, 1 };
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &udp, sizeof(int));
	CHECK(sendmsg(sv[1], &msg, 0) < 0, "an fd was sent to a socket refusing them");
	zt_pass();
}

#include <sys/personality.h>
static void *own_personality(void *arg)
{
	(void)arg;
	if (personality(PER_LINUX | ADDR_NO_RANDOMIZE) < 0)
		return th_setup_failed();
	th_wait();
	return personality(0xffffffff) == (PER_LINUX | ADDR_NO_RANDOMIZE) ? NULL : (void *)2;
}

static int thread_personality(void)
{
	void *res = th_through(own_personality);
	CHECK(res == NULL, "the thread's own personality: %ld", (long)res);
	CHECK(personality(0xffffffff) == PER_LINUX, "the process's personality %#x",
	      personality(0xffffffff));
	zt_pass();
}

/* A GDT TLS entry (set_thread_area, as 32-bit code and Wine's use) and %gs on it. */
#include <asm/ldt.h>
#include <sys/mman.h>
static unsigned gs_read(void)
{
	unsigned v;
	__asm__ volatile ("movl %%gs:0, %0" : "=r"(v));
	return v;
}

static int gdt_tls(void)
{
	unsigned *area = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (area == MAP_FAILED)
		zt_setup_fail("mmap");
	area[0] = 0x5eed1234;
	/* int $0x80 takes 32-bit pointers: the descriptors live in the low area too */
	struct user_desc *dp = (struct user_desc *)(area + 64), *gp = dp + 1;
	*dp = (struct user_desc){ .entry_number = -1, .base_addr = (unsigned long)area,
				  .limit = 0xfff, .seg_32bit = 1, .useable = 1 };
	struct user_desc d;
	long r;  /* the 64-bit syscall does not exist: the 32-bit one, by int $0x80 */
	__asm__ volatile ("int $0x80" : "=a"(r) : "0"(243L), "b"(dp) : "memory");
	if (r < 0) {
		errno = -r;
		zt_setup_fail("set_thread_area");
	}
	d = *dp;
	unsigned short sel = (unsigned short)(d.entry_number << 3 | 3);
	__asm__ volatile ("movw %0, %%gs" : : "r"(sel));
	if (gs_read() != 0x5eed1234)
		zt_setup_fail("%%gs does not reach the entry");
	zt_ready();
	zt_wait();
	*gp = (struct user_desc){ .entry_number = d.entry_number };
	__asm__ volatile ("int $0x80" : "=a"(r) : "0"(244L), "b"(gp) : "memory");
	CHECK(r == 0, "get_thread_area: %ld", r);
	struct user_desc got = *gp;
	CHECK(got.base_addr == d.base_addr && got.limit == d.limit && got.seg_32bit == 1 &&
	      got.useable == 1, "entry %u: base %#x limit %#x", got.entry_number, got.base_addr,
	      got.limit);
	unsigned short now;
	__asm__ volatile ("movw %%gs, %0" : "=r"(now));
	CHECK(now == sel, "%%gs %#x, was %#x", now, sel);
	CHECK(gs_read() == 0x5eed1234, "%%gs:0 reads %#x", gs_read());
	zt_pass();
}

/* A pty whose slave has another line discipline than N_TTY (N_NULL: input dropped). */
#include <termios.h>
static int pty_ldisc(void)
{
	int m = SYS(posix_openpt(O_RDWR | O_NOCTTY)), ld = 27 /* N_NULL */, now = -1;
	SYS(grantpt(m));
	SYS(unlockpt(m));
	int s = SYS(open(ptsname(m), O_RDWR | O_NOCTTY));
	SYS(ioctl(s, TIOCSETD, &ld));
	zt_ready();
	zt_wait();
	SYS(ioctl(s, TIOCGETD, &now));
	CHECK(now == ld, "line discipline %d, was %d", now, ld);
	zt_pass();
}

/* A seccomp filter returning SECCOMP_RET_USER_NOTIF for getppid, its listener (the
 * supervisor's end) closed: the call fails with ENOSYS. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
static int seccomp_notify(void)
{
	struct sock_filter insns[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(insns) / sizeof(insns[0]), insns };
	SYS(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
	int listener = SYS(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				   SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog));
	close(listener);
	zt_ready();
	zt_wait();
	CHECK(syscall(SYS_getppid) < 0 && errno == ENOSYS, "getppid not handed over");
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "syscall-dispatch")) return sud(0);
	if (!strcmp(m, "syscall-dispatch-blocked")) return sud(1);
	if (!strcmp(m, "thread-own-fs")) return thread_own(0);
	if (!strcmp(m, "thread-own-files")) return thread_own(1);
	if (!strcmp(m, "altstack-autodisarm")) return altstack_autodisarm();
	if (!strcmp(m, "epoll-params")) return epoll_params();
	if (!strcmp(m, "sock-opts-new")) return sock_opts_new();
	if (!strcmp(m, "thread-personality")) return thread_personality();
	if (!strcmp(m, "gdt-tls")) return gdt_tls();
	if (!strcmp(m, "pty-ldisc")) return pty_ldisc();
	if (!strcmp(m, "seccomp-notify")) return seccomp_notify();
	if (!strcmp(m, "perf-fd")) return perf_fd();
	if (!strcmp(m, "bpf-map-fd")) return bpf_map_fd();
	if (!strcmp(m, "fsopen-fd")) return fsopen_fd();
	if (!strcmp(m, "thread-own-ns")) return thread_own_ns();
	if (!strcmp(m, "thp-except-advised")) return thp_except_advised();
	if (!strcmp(m, "autogroup-child")) return autogroup_child();
	zt_setup_fail("unknown mode %s", m);
}
