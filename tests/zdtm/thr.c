/* Threads and CPU state: per-thread TLS, names, masks, pending signals, futex
 * waiters, robust lists, credentials per thread, thread timers; FPU/SSE/AVX
 * registers, the vDSO, rseq. */
#include "zdtm.h"
#include <linux/futex.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stddef.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <time.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/msg.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <asm/ldt.h>
#include <semaphore.h>

#define NT 4
static pthread_t th[NT];
static volatile int verdict[NT];
static __thread int tls_value;
static pthread_barrier_t barrier;

static void *tls_thread(void *arg)
{
	long i = (long)arg;
	char name[16];
	tls_value = 1000 + i;
	snprintf(name, sizeof(name), "worker-%ld", i);
	prctl(PR_SET_NAME, name);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1 + (i % 2)); /* each thread a mask of its own */
	sigaddset(&m, SIGRTMIN + i);
	pthread_sigmask(SIG_BLOCK, &m, NULL);
	pid_t tid = gettid();
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(2000);
	char now[16];
	prctl(PR_GET_NAME, now);
	sigset_t after;
	pthread_sigmask(SIG_BLOCK, NULL, &after);
	verdict[i] = tls_value == 1000 + i && !strcmp(now, name) && gettid() == tid
		     && sigismember(&after, SIGUSR1 + (i % 2)) && sigismember(&after, SIGRTMIN + (int)i)
		     && !sigismember(&after, SIGUSR1 + !(i % 2)) ? 1 : 2;
	return NULL;
}

static void join_all(int n)
{
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);
}

static int threads(void)
{
	pthread_barrier_init(&barrier, NULL, NT + 1);
	for (long i = 0; i < NT; i++)
		SYS(-pthread_create(&th[i], NULL, tls_thread, (void *)i));
	pthread_barrier_wait(&barrier);
	tls_value = 7;
	zt_ready();
	zt_wait();
	join_all(NT);
	CHECK(tls_value == 7, "main TLS %d", tls_value);
	for (int i = 0; i < NT; i++)
		CHECK(verdict[i] == 1, "thread %d lost its TLS, name, TID or mask", i);
	zt_pass();
}

/* Signals pending for one thread only, and for the process, while all block them. */
static volatile int thread_got[NT];
static void on_usr(int s) { (void)s; }
static void *pending_thread(void *arg)
{
	long i = (long)arg;
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(2000);
	sigset_t p;
	sigpending(&p); /* the thread's own and the process's */
	thread_got[i] = sigismember(&p, SIGUSR1) && (i == 1 ? sigismember(&p, SIGUSR2)
						     : !sigismember(&p, SIGUSR2)) ? 1 : 2;
	return NULL;
}

static int thread_pending(void)
{
	signal(SIGUSR1, on_usr);
	signal(SIGUSR2, on_usr);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_BLOCK, &m, NULL);
	pthread_barrier_init(&barrier, NULL, 3);
	for (long i = 0; i < 2; i++)
		SYS(-pthread_create(&th[i], NULL, pending_thread, (void *)i));
	pthread_barrier_wait(&barrier);
	kill(getpid(), SIGUSR1);
	pthread_kill(th[1], SIGUSR2);
	zt_ready();
	zt_wait();
	join_all(2);
	CHECK(thread_got[0] == 1 && thread_got[1] == 1, "pending signals: %d %d", thread_got[0],
	      thread_got[1]);
	zt_pass();
}

/* Threads blocked on a mutex, a condition variable and a raw futex. */
static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t cmtx = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile int go, done_count;
static int raw_futex;

static void *mutex_waiter(void *a) { (void)a; pthread_mutex_lock(&mtx); done_count++; pthread_mutex_unlock(&mtx); return NULL; }
static void *cond_waiter(void *a)
{
	(void)a;
	pthread_mutex_lock(&cmtx);
	while (!go)
		pthread_cond_wait(&cond, &cmtx);
	pthread_mutex_unlock(&cmtx);
	__atomic_add_fetch(&done_count, 1, __ATOMIC_SEQ_CST);
	return NULL;
}
static void *futex_waiter(void *a)
{
	(void)a;
	while (__atomic_load_n(&raw_futex, __ATOMIC_SEQ_CST) == 0)
		syscall(SYS_futex, &raw_futex, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
	__atomic_add_fetch(&done_count, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static int futexes(void)
{
	pthread_mutex_lock(&mtx);
	SYS(-pthread_create(&th[0], NULL, mutex_waiter, NULL));
	SYS(-pthread_create(&th[1], NULL, cond_waiter, NULL));
	SYS(-pthread_create(&th[2], NULL, futex_waiter, NULL));
	usleep(100000);
	zt_ready();
	zt_wait();
	pthread_mutex_unlock(&mtx);
	pthread_mutex_lock(&cmtx);
	go = 1;
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&cmtx);
	__atomic_store_n(&raw_futex, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &raw_futex, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0);
	join_all(3);
	CHECK(done_count == 3, "%d of 3 waiters done", done_count);
	zt_pass();
}

/* A robust mutex held by a thread that exits after the restore: the next locker gets
 * EOWNERDEAD (the kernel walks the thread's robust list). */
static pthread_mutex_t robust;
static void *robust_holder(void *a)
{
	(void)a;
	pthread_mutex_lock(&robust);
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(2000);
	return NULL; /* dies holding it */
}

static int robust_list(void)
{
	pthread_mutexattr_t at;
	pthread_mutexattr_init(&at);
	pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&robust, &at);
	pthread_barrier_init(&barrier, NULL, 2);
	struct robust_list_head *head;
	size_t len;
	SYS(syscall(SYS_get_robust_list, 0, &head, &len));
	SYS(-pthread_create(&th[0], NULL, robust_holder, NULL));
	pthread_barrier_wait(&barrier);
	zt_ready();
	zt_wait();
	struct robust_list_head *head2;
	SYS(syscall(SYS_get_robust_list, 0, &head2, &len));
	CHECK(head == head2, "main thread's robust list moved");
	pthread_join(th[0], NULL);
	int r = pthread_mutex_lock(&robust);
	CHECK(r == EOWNERDEAD, "lock after the holder died: %d, expected EOWNERDEAD", r);
	zt_pass();
}

/* Threads with credentials of their own (raw setresuid affects one thread). */
static void *cred_thread(void *arg)
{
	long i = (long)arg;
	if (syscall(SYS_setresgid, 300 + i, 300 + i, 300 + i) || syscall(SYS_setresuid, 200 + i, 200 + i, 0)) {
		verdict[i] = 3;
		return NULL;
	}
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(2000);
	uid_t r, e, s;
	gid_t gr, ge, gs;
	syscall(SYS_getresuid, &r, &e, &s);
	syscall(SYS_getresgid, &gr, &ge, &gs);
	verdict[i] = r == 200 + i && e == 200 + i && s == 0 && gr == 300 + i ? 1 : 2;
	return NULL;
}

static int thread_creds(void)
{
	pthread_barrier_init(&barrier, NULL, 3);
	for (long i = 0; i < 2; i++)
		SYS(-pthread_create(&th[i], NULL, cred_thread, (void *)i));
	pthread_barrier_wait(&barrier);
	zt_ready();
	zt_wait();
	join_all(2);
	CHECK(getuid() == 0, "main thread's uid %d", getuid());
	CHECK(verdict[0] == 1 && verdict[1] == 1, "thread credentials: %d %d", verdict[0], verdict[1]);
	zt_pass();
}

/* POSIX timers aimed at one thread (SIGEV_THREAD_ID). */
static volatile int thread_ticks[NT];
static volatile pid_t thread_tid[NT];
static void on_rt(int s, siginfo_t *si, void *uc)
{
	(void)s; (void)uc;
	int i = si->si_value.sival_int;
	if (i >= 0 && i < NT && gettid() == thread_tid[i])
		thread_ticks[i]++;
}
static void *ticking_thread(void *arg)
{
	long i = (long)arg;
	thread_tid[i] = gettid();
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(1000);
	int before = thread_ticks[i];
	for (int k = 0; k < 3000 && thread_ticks[i] < before + 3; k++)
		usleep(1000);
	verdict[i] = thread_ticks[i] >= before + 3 ? 1 : 2;
	return NULL;
}

static int thread_timers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN, &sa, NULL);
	pthread_barrier_init(&barrier, NULL, 3);
	for (long i = 0; i < 2; i++)
		SYS(-pthread_create(&th[i], NULL, ticking_thread, (void *)i));
	pthread_barrier_wait(&barrier);
	for (int i = 0; i < 2; i++) {
		timer_t t;
		struct sigevent ev;
		memset(&ev, 0, sizeof(ev));
		ev.sigev_notify = SIGEV_THREAD_ID;
		ev._sigev_un._tid = thread_tid[i];
		ev.sigev_signo = SIGRTMIN;
		ev.sigev_value.sival_int = i;
		SYS(timer_create(CLOCK_MONOTONIC, &ev, &t));
		struct itimerspec its = { { 0, 10000000 }, { 0, 10000000 } };
		SYS(timer_settime(t, 0, &its, NULL));
	}
	zt_ready();
	zt_wait();
	join_all(2);
	CHECK(verdict[0] == 1 && verdict[1] == 1, "thread timers: %d %d", verdict[0], verdict[1]);
	zt_pass();
}

/* The main thread exits while another runs on (a zombie leader). */
static void *survivor(void *a)
{
	(void)a;
	zt_wait();
	zt_pass();
}

static int zombie_leader(void)
{
	SYS(-pthread_create(&th[0], NULL, survivor, NULL));
	zt_ready();
	pthread_exit(NULL);
}

/* Registers of the FPU and vector units hold values across the dump. */
static volatile int asm_stop;
static void on_term_flag(int s) { (void)s; asm_stop = 1; }

/* Say ready; SIGTERM then sets asm_stop, which the register-holding loop polls (the
 * kernel saves and restores the registers around the handler). */
static void ready_for_asm(void)
{
	sigset_t s;
	signal(SIGTERM, on_term_flag);
	sigemptyset(&s);
	sigaddset(&s, SIGTERM);
	zt_ready();
	sigprocmask(SIG_UNBLOCK, &s, NULL);
}

static int sse_regs(void)
{
	static double in[16][2] __attribute__((aligned(16))), out[16][2] __attribute__((aligned(16)));
	for (int i = 0; i < 16; i++)
		in[i][0] = i * 1.5 + 0.25, in[i][1] = -i * 3.75;
	ready_for_asm();
	asm volatile(
		"movapd 0(%0), %%xmm0\n movapd 16(%0), %%xmm1\n movapd 32(%0), %%xmm2\n movapd 48(%0), %%xmm3\n"
		"movapd 64(%0), %%xmm4\n movapd 80(%0), %%xmm5\n movapd 96(%0), %%xmm6\n movapd 112(%0), %%xmm7\n"
		"movapd 128(%0), %%xmm8\n movapd 144(%0), %%xmm9\n movapd 160(%0), %%xmm10\n movapd 176(%0), %%xmm11\n"
		"movapd 192(%0), %%xmm12\n movapd 208(%0), %%xmm13\n movapd 224(%0), %%xmm14\n movapd 240(%0), %%xmm15\n"
		"1: pause\n cmpl $0, %2\n je 1b\n"
		"movapd %%xmm0, 0(%1)\n movapd %%xmm1, 16(%1)\n movapd %%xmm2, 32(%1)\n movapd %%xmm3, 48(%1)\n"
		"movapd %%xmm4, 64(%1)\n movapd %%xmm5, 80(%1)\n movapd %%xmm6, 96(%1)\n movapd %%xmm7, 112(%1)\n"
		"movapd %%xmm8, 128(%1)\n movapd %%xmm9, 144(%1)\n movapd %%xmm10, 160(%1)\n movapd %%xmm11, 176(%1)\n"
		"movapd %%xmm12, 192(%1)\n movapd %%xmm13, 208(%1)\n movapd %%xmm14, 224(%1)\n movapd %%xmm15, 240(%1)\n"
		: : "r"(in), "r"(out), "m"(asm_stop)
		: "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
		  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	CHECK(!memcmp(in, out, sizeof(in)), "SSE registers changed");
	zt_pass();
}

static int avx_regs(void)
{
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx")) {
		zt_ready();
		zt_wait();
		zt_pass(); /* nothing to check here */
	}
	static double in[4][4] __attribute__((aligned(32))), out[4][4] __attribute__((aligned(32)));
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++)
			in[i][j] = i * 10 + j + 0.125;
	ready_for_asm();
	asm volatile(
		"vmovapd 0(%0), %%ymm0\n vmovapd 32(%0), %%ymm7\n vmovapd 64(%0), %%ymm8\n vmovapd 96(%0), %%ymm15\n"
		"1: pause\n cmpl $0, %2\n je 1b\n"
		"vmovapd %%ymm0, 0(%1)\n vmovapd %%ymm7, 32(%1)\n vmovapd %%ymm8, 64(%1)\n vmovapd %%ymm15, 96(%1)\n"
		"vzeroupper\n"
		: : "r"(in), "r"(out), "m"(asm_stop) : "memory", "xmm0", "xmm7", "xmm8", "xmm15");
	CHECK(!memcmp(in, out, sizeof(in)), "AVX registers changed");
	zt_pass();
}

/* AVX-512 state (this kind of CPU has it): full 512-bit zmm registers, the upper
 * sixteen (zmm16-31, in their own XSAVE component) and the opmask registers k1-k7. */
__attribute__((target("avx512f")))
static int avx512_regs(void)
{
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx512f")) {
		zt_ready();
		zt_wait();
		zt_pass(); /* nothing to check here */
	}
	static unsigned long long in[3][8] __attribute__((aligned(64))), out[3][8]
		__attribute__((aligned(64)));
	static unsigned long long k_in[2] = { 0xa5a5, 0x3c3c }, k_out[2];
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 8; j++)
			in[i][j] = 0x0101010101010101ULL * (i * 8 + j + 1);
	ready_for_asm();
	asm volatile(
		"vmovdqa64 0(%0), %%zmm0\n vmovdqa64 64(%0), %%zmm16\n vmovdqa64 128(%0), %%zmm31\n"
		"kmovw 0(%3), %%k1\n kmovw 8(%3), %%k7\n"
		"1: pause\n cmpl $0, %2\n je 1b\n"
		"vmovdqa64 %%zmm0, 0(%1)\n vmovdqa64 %%zmm16, 64(%1)\n vmovdqa64 %%zmm31, 128(%1)\n"
		"kmovw %%k1, 0(%4)\n kmovw %%k7, 8(%4)\n"
		"vzeroupper\n"
		: : "r"(in), "r"(out), "m"(asm_stop), "r"(k_in), "r"(k_out)
		: "memory", "xmm0", "xmm16", "xmm31", "k1", "k7");
	CHECK(!memcmp(in, out, sizeof(in)), "zmm registers changed");
	CHECK(k_out[0] == k_in[0] && k_out[1] == k_in[1], "opmask registers %llx %llx",
	      k_out[0], k_out[1]);
	zt_pass();
}

/* The x87 stack and control word; MMX registers (which alias it) in another mode. */
static int x87_regs(int mmx)
{
	static long double in[4] = { 1.25L, -3.5L, 1e300L, 3.14159265358979323846L }, out[4];
	static unsigned long long mm_in[2] = { 0x0123456789abcdefULL, 0xfedcba9876543210ULL }, mm_out[2];
	unsigned short cw = 0x0f7f, cw_out = 0; /* round toward zero, all exceptions masked */
	ready_for_asm();
	if (mmx) {
		asm volatile("movq 0(%0), %%mm0\n movq 8(%0), %%mm7\n"
			     "1: pause\n cmpl $0, %2\n je 1b\n"
			     "movq %%mm0, 0(%1)\n movq %%mm7, 8(%1)\n emms\n"
			     : : "r"(mm_in), "r"(mm_out), "m"(asm_stop) : "memory", "mm0", "mm7");
		CHECK(!memcmp(mm_in, mm_out, sizeof(mm_in)), "MMX registers changed");
		zt_pass();
	}
	asm volatile("fldcw %3\n fldt 0(%0)\n fldt 16(%0)\n fldt 32(%0)\n fldt 48(%0)\n"
		     "1: pause\n cmpl $0, %2\n je 1b\n"
		     "fstpt 48(%1)\n fstpt 32(%1)\n fstpt 16(%1)\n fstpt 0(%1)\n fnstcw %4\n"
		     : : "r"(in), "r"(out), "m"(asm_stop), "m"(cw), "m"(cw_out) : "memory");
	CHECK(!memcmp(in, out, sizeof(in)), "x87 stack changed");
	CHECK(cw_out == cw, "x87 control word %x, expected %x", cw_out, cw);
	zt_pass();
}

static void *sse_in_thread(void *a)
{
	(void)a;
	sse_regs();
	return NULL;
}

static int fpu_thread(void)
{
	SYS(-pthread_create(&th[0], NULL, sse_in_thread, NULL));
	pthread_join(th[0], NULL);
	return 1;
}

/* The vDSO: time calls keep working and agree with the kernel's syscalls; the vDSO
 * and its data stay where they were. */
static void vdso_maps(char *out, size_t size)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "[vdso]") || strstr(line, "[vvar"))
			strncat(out, line, size - strlen(out) - 1);
	if (f)
		fclose(f);
}

static int vdso(void)
{
	char before[2048], after[2048];
	vdso_maps(before, sizeof(before));
	zt_ready();
	struct timespec a, b;
	struct timeval tv;
	while (!zt_term_pending()) {
		clock_gettime(CLOCK_MONOTONIC, &a);
		usleep(1000);
	}
	for (int i = 0; i < 100; i++) {
		clock_gettime(CLOCK_REALTIME, &a);
		syscall(SYS_clock_gettime, CLOCK_REALTIME, &b);
		long d = (b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec);
		CHECK(d >= 0 && d < 500000000L, "vDSO realtime off the syscall's by %ld ns", d);
		gettimeofday(&tv, NULL);
		CHECK(labs(tv.tv_sec - b.tv_sec) <= 1, "gettimeofday off");
		CHECK(labs(time(NULL) - b.tv_sec) <= 1, "time() off");
	}
	vdso_maps(after, sizeof(after));
	CHECK(!strcmp(before, after), "vDSO mappings moved:\n%s---\n%s", before, after);
	zt_pass();
}

/* rseq, registered by glibc for every thread: the CPU number in it is kept current. */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

static int rseq_check(void)
{
	if (!&__rseq_size || __rseq_size == 0)
		zt_setup_fail("glibc registered no rseq area");
	volatile unsigned int *cpu_id = (void *)((char *)__builtin_thread_pointer() + __rseq_offset + 4);
	zt_ready();
	zt_wait();
	for (int i = 0; i < 100; i++) {
		int now = sched_getcpu();
		unsigned int seen = *cpu_id;
		if ((int)seen == now || (int)*cpu_id == sched_getcpu())
			zt_pass();
	}
	zt_fail("rseq cpu_id %u never matched sched_getcpu %d (unregistered?)", *cpu_id, sched_getcpu());
}

/* Threads asleep across the dump in calls with a timeout far away, which the kernel
 * restarts in its own way when interrupted (restart_syscall with what it kept of the
 * call, or the timeout left written back): a futex wait, poll, select, epoll_wait,
 * sigtimedwait, an absolute clock_nanosleep and a relative nanosleep. After the
 * restore none has returned; each wakes for what it waits for (the sleepers by a
 * signal whose handler has no SA_RESTART: EINTR). */
#define NB 10
static volatile int bl_ret[NB], bl_err[NB];
static volatile int bl_futex;
static int bl_pipe[2], bl_epoll, bl_pair[2], bl_listen;
static pthread_t bl_th[NB];
static void on_usr1_plain(int s) { (void)s; }

static void *blocked(void *arg)
{
	long i = (long)arg;
	long r = -1;
	struct timespec far = { 100000, 0 };
	if (i == 0) {
		r = syscall(SYS_futex, &bl_futex, FUTEX_WAIT_PRIVATE, 0, &far, NULL, 0);
	} else if (i == 1) {
		struct pollfd p = { bl_pipe[0], POLLIN, 0 };
		r = poll(&p, 1, 100000000);
	} else if (i == 2) {
		fd_set rd;
		FD_ZERO(&rd);
		FD_SET(bl_pipe[0], &rd);
		struct timeval tv = { 100000, 0 };
		r = select(bl_pipe[0] + 1, &rd, NULL, NULL, &tv);
	} else if (i == 3) {
		struct epoll_event ev;
		r = epoll_wait(bl_epoll, &ev, 1, 100000000);
	} else if (i == 4) {
		sigset_t w;
		sigemptyset(&w);
		sigaddset(&w, SIGUSR2);
		siginfo_t si;
		r = sigtimedwait(&w, &si, &far);
	} else if (i == 7) {
		char c;
		r = recv(bl_pair[0], &c, 1, 0);
	} else if (i == 9) {
		char c;
		r = read(bl_pair[1], &c, 1);  /* read(2) of a socket with a timeout */
	} else if (i == 8) {
		r = accept(bl_listen, NULL, NULL);
		if (r >= 0)
			r = 0;
	} else if (i == 5) {
		struct timespec t;
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_sec += 100000;
		r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
		if (r) {
			errno = (int)r;
			r = -1;
		}
	} else if (i == 6) {
		r = nanosleep(&far, NULL);
	}
	bl_err[i] = errno;
	__atomic_store_n(&bl_ret[i], (int)r, __ATOMIC_SEQ_CST);
	return NULL;
}

/* The result *ret of a thread's call once it returned (-100 until then), or after 10 s. */
static int returned(volatile int *ret)
{
	for (int k = 0; k < 1000 && *ret == -100; k++)
		usleep(10000);
	return *ret;
}
#define wait_ret(i) returned(&bl_ret[i])

static int blocked_calls(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1_plain;  /* no SA_RESTART */
	SYS(sigaction(SIGUSR1, &sa, NULL));
	sigset_t b;
	sigemptyset(&b);
	sigaddset(&b, SIGUSR2);
	SYS(sigprocmask(SIG_BLOCK, &b, NULL));
	SYS(pipe(bl_pipe));
	bl_epoll = SYS(epoll_create1(0));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 77 };
	SYS(epoll_ctl(bl_epoll, EPOLL_CTL_ADD, bl_pipe[0], &ev));
	/* sockets with receive timeouts: their waits return EINTR on a mere stop */
	struct timeval tmo = { 100000, 0 };
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, bl_pair));
	SYS(setsockopt(bl_pair[0], SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)));
	SYS(setsockopt(bl_pair[1], SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)));
	bl_listen = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "zdtm-blocked-%d", getpid());
	socklen_t ul = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1);
	SYS(bind(bl_listen, (void *)&un, ul));
	SYS(listen(bl_listen, 4));
	SYS(setsockopt(bl_listen, SOL_SOCKET, SO_RCVTIMEO, &tmo, sizeof(tmo)));
	for (long i = 0; i < NB; i++) {
		bl_ret[i] = -100;
		SYS(-pthread_create(&bl_th[i], NULL, blocked, (void *)i));
	}
	usleep(200000);
	zt_ready();
	zt_wait();
	usleep(100000);  /* (a call the restore broke would return now) */
	for (int i = 0; i < NB; i++)
		CHECK(bl_ret[i] == -100, "call %d returned %d (errno %d) after the restore", i,
		      bl_ret[i], bl_err[i]);
	__atomic_store_n(&bl_futex, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &bl_futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	CHECK(wait_ret(0) == 0, "futex wait: %d errno %d", bl_ret[0], bl_err[0]);
	SYS(write(bl_pipe[1], "x", 1));
	CHECK(wait_ret(1) == 1, "poll: %d errno %d", bl_ret[1], bl_err[1]);
	CHECK(wait_ret(2) == 1, "select: %d errno %d", bl_ret[2], bl_err[2]);
	CHECK(wait_ret(3) == 1, "epoll_wait: %d errno %d", bl_ret[3], bl_err[3]);
	pthread_kill(bl_th[4], SIGUSR2);
	CHECK(wait_ret(4) == SIGUSR2, "sigtimedwait: %d errno %d", bl_ret[4], bl_err[4]);
	SYS(send(bl_pair[1], "y", 1, 0));
	CHECK(wait_ret(7) == 1, "recv with a timeout: %d errno %d", bl_ret[7], bl_err[7]);
	SYS(send(bl_pair[0], "z", 1, 0));
	CHECK(wait_ret(9) == 1, "read with a timeout: %d errno %d", bl_ret[9], bl_err[9]);
	int cl = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	SYS(connect(cl, (void *)&un, ul));
	CHECK(wait_ret(8) == 0, "accept with a timeout: %d errno %d", bl_ret[8], bl_err[8]);
	for (int i = 5; i < 7; i++) {
		pthread_kill(bl_th[i], SIGUSR1);
		CHECK(wait_ret(i) == -1 && bl_err[i] == EINTR, "sleep %d: %d errno %d", i,
		      bl_ret[i], bl_err[i]);
	}
	for (int i = 0; i < NB; i++)
		pthread_join(bl_th[i], NULL);
	zt_pass();
}

/* Threads asleep in waits that the kernel goes on with through restart_syscall once a
 * stop interrupted them, and that are the same wait when run again: poll without a
 * timeout, a futex FUTEX_WAIT_BITSET until an absolute time, sem_timedwait (which
 * returns EINTR to its caller), and an absolute clock_nanosleep. Pre-dumped twice (each
 * lets them go on) before the dump, none has returned after the restore; each wakes
 * for what it waits for. */
#define NA 4
static volatile int ag_ret[NA], ag_err[NA];
static volatile int ag_futex;
static int ag_pipe[2];
static sem_t ag_sem;
static pthread_t ag_th[NA];

static void *waits_again_thread(void *arg)
{
	long i = (long)arg;
	long r = -1;
	struct timespec t;
	clock_gettime(i == 2 ? CLOCK_REALTIME : CLOCK_MONOTONIC, &t);
	t.tv_sec += 100000;
	if (i == 0) {
		struct pollfd p = { ag_pipe[0], POLLIN, 0 };
		r = poll(&p, 1, -1);
	} else if (i == 1) {
		r = syscall(SYS_futex, &ag_futex, FUTEX_WAIT_BITSET_PRIVATE, 0, &t, NULL,
			    FUTEX_BITSET_MATCH_ANY);
	} else if (i == 2) {
		r = sem_timedwait(&ag_sem, &t);
	} else if (i == 3) {
		r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL);
		if (r) {
			errno = (int)r;
			r = -1;
		}
	}
	ag_err[i] = errno;
	__atomic_store_n(&ag_ret[i], (int)r, __ATOMIC_SEQ_CST);
	return NULL;
}

static int waits_again(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1_plain;  /* no SA_RESTART */
	SYS(sigaction(SIGUSR1, &sa, NULL));
	SYS(pipe(ag_pipe));
	SYS(sem_init(&ag_sem, 0, 0));
	for (long i = 0; i < NA; i++) {
		ag_ret[i] = -100;
		SYS(-pthread_create(&ag_th[i], NULL, waits_again_thread, (void *)i));
	}
	usleep(200000);
	zt_ready();
	zt_wait();
	usleep(100000);  /* (a call the dumps broke would return now) */
	for (int i = 0; i < NA; i++)
		CHECK(ag_ret[i] == -100, "wait %d returned %d (errno %d) after the restore", i,
		      ag_ret[i], ag_err[i]);
	SYS(write(ag_pipe[1], "x", 1));
	CHECK(returned(&ag_ret[0]) == 1, "poll: %d errno %d", ag_ret[0], ag_err[0]);
	__atomic_store_n(&ag_futex, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &ag_futex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	CHECK(returned(&ag_ret[1]) == 0, "futex wait: %d errno %d", ag_ret[1], ag_err[1]);
	SYS(sem_post(&ag_sem));
	CHECK(returned(&ag_ret[2]) == 0, "sem_timedwait: %d errno %d", ag_ret[2], ag_err[2]);
	pthread_kill(ag_th[3], SIGUSR1);
	CHECK(returned(&ag_ret[3]) == -1 && ag_err[3] == EINTR, "sleep: %d errno %d", ag_ret[3],
	      ag_err[3]);
	for (int i = 0; i < NA; i++)
		pthread_join(ag_th[i], NULL);
	zt_pass();
}

/* The 128 bytes under the stack pointer (the x86-64 red zone) belong to the code
 * running, which may keep data there without moving %rsp: nothing ckpt does in a
 * frozen task may write there (criu's transition/stack). The leader and a thread spin
 * in red_zone_spin, which fills its red zone with the zone's own addresses and checks
 * them over and over until *stop; it returns the number of words found changed. */
__asm__(".text\n"
	".globl red_zone_spin\n"
	"red_zone_spin:\n"
	"	lea -128(%rsp), %rax\n"
	"1:	mov %rax, (%rax)\n"
	"	add $8, %rax\n"
	"	cmp %rsp, %rax\n"
	"	jne 1b\n"
	"	xor %edx, %edx\n"
	"2:	lea -128(%rsp), %rax\n"
	"3:	cmp %rax, (%rax)\n"
	"	je 4f\n"
	"	inc %rdx\n"
	"	mov %rax, (%rax)\n"
	"4:	add $8, %rax\n"
	"	cmp %rsp, %rax\n"
	"	jne 3b\n"
	"	cmpl $0, (%rdi)\n"
	"	je 2b\n"
	"	mov %rdx, %rax\n"
	"	ret\n");
long red_zone_spin(volatile int *stop);

static volatile int rz_stop;
static long rz_thread_bad = -1;

static void *red_zone_thread(void *arg)
{
	(void)arg;
	rz_thread_bad = red_zone_spin(&rz_stop);
	return NULL;
}

static void *red_zone_waiter(void *arg)
{
	(void)arg;
	zt_ready();
	zt_wait();  /* SIGTERM comes here: the spinners block it */
	rz_stop = 1;
	return NULL;
}

static int red_zone(void)
{
	pthread_t spinner, waiter;
	SYS(-pthread_create(&spinner, NULL, red_zone_thread, NULL));
	SYS(-pthread_create(&waiter, NULL, red_zone_waiter, NULL));
	long bad = red_zone_spin(&rz_stop);
	pthread_join(spinner, NULL);
	pthread_join(waiter, NULL);
	CHECK(bad == 0, "%ld words of the leader's red zone changed", bad);
	CHECK(rz_thread_bad == 0, "%ld words of a thread's red zone changed", rz_thread_bad);
	zt_pass();
}

/* A POSIX timer that signals one thread (SIGEV_THREAD_ID), whose thread exited before
 * the dump: the timer is still there after the restore (timer_gettime works, it is
 * disarmed), and the process's other timer, armed, still fires. */
static timer_t orphan_timer;
static volatile int orphan_ok;

static void *timer_maker(void *arg)
{
	(void)arg;
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 1;
	ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	orphan_ok = timer_create(CLOCK_MONOTONIC, &ev, &orphan_timer) == 0;
	return NULL;
}

static volatile int alarm_hits;
static void on_alarm_rt(int s) { (void)s; alarm_hits++; }

static int dead_thread_timer(void)
{
	pthread_t t;
	SYS(-pthread_create(&t, NULL, timer_maker, NULL));
	pthread_join(t, NULL);
	if (!orphan_ok)
		zt_setup_fail("timer_create");
	signal(SIGRTMIN + 2, on_alarm_rt);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 2;
	timer_t live;
	SYS(timer_create(CLOCK_MONOTONIC, &ev, &live));
	struct itimerspec its = { { 0, 0 }, { 1000, 0 } };
	SYS(timer_settime(live, 0, &its, NULL));
	zt_ready();
	zt_wait();
	struct itimerspec got;
	CHECK(timer_gettime(orphan_timer, &got) == 0, "the dead thread's timer is gone: %s",
	      strerror(errno));
	CHECK(got.it_value.tv_sec == 0 && got.it_value.tv_nsec == 0, "it is armed");
	CHECK(timer_gettime(live, &got) == 0 && got.it_value.tv_sec > 900, "the live timer");
	struct itimerspec soon = { { 0, 0 }, { 0, 1000000 } };
	SYS(timer_settime(live, 0, &soon, NULL));
	for (int i = 0; i < 500 && !alarm_hits; i++)
		usleep(10000);
	CHECK(alarm_hits == 1, "the live timer did not fire");
	zt_pass();
}

/* Knobs each thread sets for itself (thread pools name and tune their workers): its
 * name, nice value, CPU affinity, timer slack, scheduling policy and I/O priority. */
struct knobs { char name[16]; int nice, policy, cpu; unsigned long slack; long ioprio; };
static struct knobs knobs_of(long i)
{
	static const int policies[] = { SCHED_OTHER, SCHED_BATCH, SCHED_IDLE, SCHED_BATCH };
	struct knobs k;
	snprintf(k.name, sizeof(k.name), "pool-%ld", i);
	k.nice = (int)(i % 2 ? 3 + i : 1 + i);
	k.policy = policies[i % 4];
	k.cpu = (int)(i % sysconf(_SC_NPROCESSORS_ONLN));
	k.slack = 10000 + 1000 * i;
	k.ioprio = (2L << 13) | (i % 8);  /* best effort, level i */
	return k;
}

static struct knobs knobs_now(void)
{
	struct knobs k;
	cpu_set_t set;
	prctl(PR_GET_NAME, k.name);
	errno = 0;
	k.nice = getpriority(PRIO_PROCESS, gettid());
	k.policy = sched_getscheduler(0);
	k.cpu = -1;
	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) == 1)
		for (int c = 0; c < CPU_SETSIZE; c++)
			if (CPU_ISSET(c, &set))
				k.cpu = c;
	k.slack = (unsigned long)prctl(PR_GET_TIMERSLACK);
	k.ioprio = syscall(SYS_ioprio_get, 1, 0);
	return k;
}

static int knobs_differ(const struct knobs *a, const struct knobs *b, char *why, size_t n)
{
	snprintf(why, n, "name %s/%s nice %d/%d policy %d/%d cpu %d/%d slack %lu/%lu io %lx/%lx",
		 a->name, b->name, a->nice, b->nice, a->policy, b->policy, a->cpu, b->cpu,
		 a->slack, b->slack, (unsigned long)a->ioprio, (unsigned long)b->ioprio);
	return strcmp(a->name, b->name) || a->nice != b->nice || a->policy != b->policy
	       || a->cpu != b->cpu || a->slack != b->slack || a->ioprio != b->ioprio;
}

static char knob_why[NT][200];
static void *knob_thread(void *arg)
{
	long i = (long)arg;
	struct knobs want = knobs_of(i);
	struct sched_param sp = { 0 };
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(want.cpu, &set);
	prctl(PR_SET_NAME, want.name);
	int ok = setpriority(PRIO_PROCESS, gettid(), want.nice) == 0
		 && sched_setscheduler(0, want.policy, &sp) == 0
		 && sched_setaffinity(0, sizeof(set), &set) == 0
		 && prctl(PR_SET_TIMERSLACK, want.slack) == 0
		 && syscall(SYS_ioprio_set, 1, 0, want.ioprio) == 0;
	/* SCHED_IDLE keeps the nice value set before it */
	want.nice = getpriority(PRIO_PROCESS, gettid());
	pthread_barrier_wait(&barrier);
	while (!zt_stopped)
		usleep(2000);
	struct knobs now = knobs_now();
	verdict[i] = !ok ? 3 : knobs_differ(&now, &want, knob_why[i], sizeof(knob_why[i])) ? 2 : 1;
	return NULL;
}

static int thread_knobs(void)
{
	pthread_barrier_init(&barrier, NULL, NT + 1);
	for (long i = 0; i < NT; i++)
		SYS(-pthread_create(&th[i], NULL, knob_thread, (void *)i));
	pthread_barrier_wait(&barrier);
	struct knobs main_before = knobs_now();
	for (int i = 0; i < NT; i++)
		if (verdict[i] == 3)
			zt_setup_fail("thread %d could not set its knobs", i);
	zt_ready();
	zt_wait();
	join_all(NT);
	char why[200];
	struct knobs main_now = knobs_now();
	CHECK(!knobs_differ(&main_now, &main_before, why, sizeof(why)), "main thread: %s", why);
	for (int i = 0; i < NT; i++)
		CHECK(verdict[i] == 1, "thread %d: %s", i, knob_why[i]);
	zt_pass();
}

/* Threads asleep across the dump in reads and waits on kernel objects: an eventfd,
 * inotify, signalfd and timerfd read, msgrcv, mq_receive, a write to a full pipe, a
 * UDP recv, accept, the open of a FIFO with no writer yet, a POSIX lock held by a child
 * (F_SETLKW) and epoll_wait. After the restore none has returned; each returns what
 * it waited for once it comes. */
#define NW 12
static volatile long bw_ret[NW];
static volatile int bw_err[NW];
static int bw_evfd, bw_ino, bw_sfd, bw_tfd, bw_msq = -1, bw_full[2], bw_udp, bw_lst, bw_ep;
static int bw_ep_pipe[2];
static mqd_t bw_mq;

static void *waiter(void *arg)
{
	long i = (long)arg, r = -1;
	char buf[4096];
	uint64_t v = 0;
	if (i == 0) {
		r = read(bw_evfd, &v, 8);
		r = r == 8 ? (long)v : r;
	} else if (i == 1) {
		r = read(bw_ino, buf, sizeof(buf));
	} else if (i == 2) {
		struct signalfd_siginfo si;
		r = read(bw_sfd, &si, sizeof(si));
		r = r == sizeof(si) ? (long)si.ssi_signo : r;
	} else if (i == 3) {
		r = read(bw_tfd, &v, 8);
	} else if (i == 4) {
		struct { long type; char text[8]; } m;
		r = msgrcv(bw_msq, &m, sizeof(m.text), 0, 0);
	} else if (i == 5) {
		unsigned prio;
		r = mq_receive(bw_mq, buf, sizeof(buf), &prio);
	} else if (i == 6) {
		memset(buf, 'w', sizeof(buf));
		r = write(bw_full[1], buf, sizeof(buf));
	} else if (i == 7) {
		r = recv(bw_udp, buf, sizeof(buf), 0);
	} else if (i == 8) {
		r = accept(bw_lst, NULL, NULL);
		r = r >= 0 ? 0 : r;
	} else if (i == 9) {
		int fd = open("waited.fifo", O_RDONLY);
		r = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
	} else if (i == 10) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 10 };
		int fd = open("waited.lock", O_RDWR);
		r = fd < 0 ? -1 : fcntl(fd, F_SETLKW, &fl);
	} else if (i == 11) {
		struct epoll_event e;
		r = epoll_wait(bw_ep, &e, 1, -1);
	}
	bw_err[i] = errno;
	__atomic_store_n(&bw_ret[i], r, __ATOMIC_SEQ_CST);
	return NULL;
}

static long waited(int i)
{
	for (int k = 0; k < 1000 && bw_ret[i] == -100; k++)
		usleep(10000);
	return bw_ret[i];
}

static void remove_queue(void)
{
	if (bw_msq >= 0)
		msgctl(bw_msq, IPC_RMID, NULL);
}

static int blocked_waits(void)
{
	sigset_t usr2;
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	SYS(sigprocmask(SIG_BLOCK, &usr2, NULL));
	bw_evfd = SYS(eventfd(0, 0));
	SYS(mkdir("watched", 0700));
	bw_ino = SYS(inotify_init());
	SYS(inotify_add_watch(bw_ino, "watched", IN_CREATE));
	bw_sfd = SYS(signalfd(-1, &usr2, 0));
	bw_tfd = SYS(timerfd_create(CLOCK_MONOTONIC, 0));
	bw_msq = SYS(msgget(IPC_PRIVATE, 0600));
	atexit(remove_queue);
	char qname[64];
	snprintf(qname, sizeof(qname), "/zdtm-waits-%d", getpid());
	struct mq_attr attr = { .mq_maxmsg = 4, .mq_msgsize = 16 };
	bw_mq = SYS(mq_open(qname, O_RDWR | O_CREAT | O_EXCL, 0600, &attr));
	SYS(mq_unlink(qname));
	SYS(pipe(bw_full));
	SYS(fcntl(bw_full[1], F_SETFL, O_NONBLOCK));
	static char filler[65536];
	while (write(bw_full[1], filler, sizeof(filler)) > 0)
		;
	SYS(fcntl(bw_full[1], F_SETFL, 0));
	bw_udp = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t inl = sizeof(in);
	SYS(bind(bw_udp, (void *)&in, inl));
	SYS(getsockname(bw_udp, (void *)&in, &inl));
	bw_lst = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path + 1, sizeof(un.sun_path) - 1, "zdtm-waits-%d", getpid());
	socklen_t ul = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(un.sun_path + 1);
	SYS(bind(bw_lst, (void *)&un, ul));
	SYS(listen(bw_lst, 4));
	SYS(mkfifo("waited.fifo", 0600));
	int lock = SYS(open("waited.lock", O_RDWR | O_CREAT, 0600));
	int ready[2];
	SYS(pipe(ready));
	pid_t holder = SYS(fork());
	if (holder == 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_len = 10 };
		bw_msq = -1;  /* the parent's to remove */
		if (fcntl(lock, F_SETLK, &fl) < 0)
			_exit(2);
		close(ready[1]);
		zt_wait();
		_exit(0);
	}
	close(ready[1]);
	char c;
	SYS(read(ready[0], &c, 1) == 0 ? 0 : -1);  /* the child holds the lock */
	bw_ep = SYS(epoll_create1(0));
	SYS(pipe(bw_ep_pipe));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 5 };
	SYS(epoll_ctl(bw_ep, EPOLL_CTL_ADD, bw_ep_pipe[0], &ev));
	pthread_t t[NW];
	for (long i = 0; i < NW; i++) {
		bw_ret[i] = -100;
		SYS(-pthread_create(&t[i], NULL, waiter, (void *)i));
	}
	usleep(300000);
	for (int i = 0; i < NW; i++)
		if (bw_ret[i] != -100)
			zt_setup_fail("call %d returned %ld before the dump", i, bw_ret[i]);
	zt_ready();
	zt_wait();
	usleep(100000);  /* (a call the restore broke would return now) */
	for (int i = 0; i < NW; i++)
		CHECK(bw_ret[i] == -100, "call %d returned %ld (errno %d) after the restore", i,
		      bw_ret[i], bw_err[i]);
	uint64_t five = 5;
	SYS(write(bw_evfd, &five, 8));
	CHECK(waited(0) == 5, "eventfd read: %ld errno %d", bw_ret[0], bw_err[0]);
	close(SYS(open("watched/new", O_CREAT | O_WRONLY, 0600)));
	CHECK(waited(1) > 0, "inotify read: %ld errno %d", bw_ret[1], bw_err[1]);
	SYS(kill(getpid(), SIGUSR2));
	CHECK(waited(2) == SIGUSR2, "signalfd read: %ld errno %d", bw_ret[2], bw_err[2]);
	struct itimerspec soon = { .it_value = { 0, 1000000 } };
	SYS(timerfd_settime(bw_tfd, 0, &soon, NULL));
	CHECK(waited(3) == 8, "timerfd read: %ld errno %d", bw_ret[3], bw_err[3]);
	struct { long type; char text[8]; } m = { 1, "message" };
	SYS(msgsnd(bw_msq, &m, sizeof(m.text), 0));
	CHECK(waited(4) == 8, "msgrcv: %ld errno %d", bw_ret[4], bw_err[4]);
	SYS(mq_send(bw_mq, "hi", 2, 1));
	CHECK(waited(5) == 2, "mq_receive: %ld errno %d", bw_ret[5], bw_err[5]);
	SYS(fcntl(bw_full[0], F_SETFL, O_NONBLOCK));
	for (int k = 0; k < 500 && bw_ret[6] == -100; k++) {
		while (read(bw_full[0], filler, sizeof(filler)) > 0)
			;
		usleep(10000);
	}
	CHECK(waited(6) == 4096, "write to a full pipe: %ld errno %d", bw_ret[6], bw_err[6]);
	int u = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	SYS(sendto(u, "dgram", 5, 0, (void *)&in, inl));
	CHECK(waited(7) == 5, "UDP recv: %ld errno %d", bw_ret[7], bw_err[7]);
	int cl = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	SYS(connect(cl, (void *)&un, ul));
	CHECK(waited(8) == 0, "accept: %ld errno %d", bw_ret[8], bw_err[8]);
	int w = SYS(open("waited.fifo", O_WRONLY));
	SYS(write(w, "fifo", 4));
	CHECK(waited(9) == 4, "FIFO open and read: %ld errno %d", bw_ret[9], bw_err[9]);
	CHECK(bw_ret[10] == -100, "F_SETLKW returned while the child holds the lock");
	SYS(kill(holder, SIGTERM));
	CHECK(zt_reap(holder) == 0, "the lock holder");
	CHECK(waited(10) == 0, "F_SETLKW: %ld errno %d", bw_ret[10], bw_err[10]);
	SYS(write(bw_ep_pipe[1], "e", 1));
	CHECK(waited(11) == 1, "epoll_wait: %ld errno %d", bw_ret[11], bw_err[11]);
	for (int i = 0; i < NW; i++)
		pthread_join(t[i], NULL);
	zt_pass();
}

/* The x86 LDT (modify_ldt: Wine, DOSEMU): a process's entries of every kind (32-bit and
 * 16-bit data, read-only data, code, conforming code not present, one written and
 * cleared, the last of the 8192), %gs on one of them and a thread's %es on another; a
 * child forked with the table that changed its own; a child forked before there was
 * one, which still has none. */
#define LDT_ENTRIES_MAX 8192
#define LDT_BYTES (LDT_ENTRIES_MAX * 8)
#define LDT_SEL(i) ((unsigned short)(((i) << 3) | 7)) /* TI=1 (the LDT), RPL 3 */
static uint64_t ldt_saved[LDT_ENTRIES_MAX], ldt_now[LDT_ENTRIES_MAX];
static volatile int ldt_stop, ldt_es_ok = -1;

/* modify_ldt returns an int in rax (0xfffffff2 for -EFAULT): sign it as one. */
static int ldt_call(int func, void *ptr, unsigned long n)
{
	return (int)syscall(SYS_modify_ldt, func, ptr, n);
}

/* Whether the process has an LDT: reading one byte of it to NULL faults only then. */
static int ldt_present(void) { return ldt_call(0, NULL, 1) == -EFAULT; }

static void ldt_set(unsigned idx, unsigned base, unsigned limit, int bits32, int contents,
		    int rx_only, int pages, int absent, int usable)
{
	struct user_desc d = {
		.entry_number = idx, .base_addr = base, .limit = limit, .seg_32bit = bits32,
		.contents = contents, .read_exec_only = rx_only, .limit_in_pages = pages,
		.seg_not_present = absent, .useable = usable,
	};
	if (ldt_call(0x11, &d, sizeof(d)) != 0)
		zt_setup_fail("modify_ldt(1) of entry %u", idx);
}

static void ldt_clear(unsigned idx) { ldt_set(idx, 0, 0, 0, 0, 1, 0, 1, 0); }

static void ldt_take(uint64_t *into)
{
	memset(into, 0xa5, LDT_BYTES);
	int n = ldt_call(0, into, LDT_BYTES);
	if (n != LDT_BYTES)
		zt_fail("modify_ldt(0) read %d bytes, not %d", n, LDT_BYTES);
}

static void ldt_check(const char *who)
{
	CHECK(ldt_present(), "%s: no LDT", who);
	ldt_take(ldt_now);
	for (int i = 0; i < LDT_ENTRIES_MAX; i++)
		CHECK(ldt_now[i] == ldt_saved[i], "%s: LDT entry %d is %016llx, was %016llx", who,
		      i, (unsigned long long)ldt_now[i], (unsigned long long)ldt_saved[i]);
}

static unsigned short seg_gs(void) { unsigned short v; asm volatile("mov %%gs, %0" : "=r"(v)); return v; }
static unsigned short seg_es(void) { unsigned short v; asm volatile("mov %%es, %0" : "=r"(v)); return v; }

static void *ldt_es_thread(void *arg)
{
	(void)arg;
	unsigned short sel = LDT_SEL(3);
	asm volatile("mov %0, %%es" : : "r"(sel));
	ldt_es_ok = 0;
	while (!ldt_stop)
		usleep(1000);
	ldt_es_ok = seg_es() == sel;
	return NULL;
}

static int ldt(void)
{
	int ready[2];
	SYS(pipe(ready));
	pid_t kids[2];
	kids[0] = SYS(fork());
	if (kids[0] == 0) {
		SYS(write(ready[1], "n", 1));
		zt_wait();
		CHECK(!ldt_present(), "child forked before the LDT has one now");
		_exit(0);
	}
	unsigned char *area = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
	if (area == MAP_FAILED)
		zt_setup_fail("mmap MAP_32BIT");
	zt_fill(area, 4096, 77);
	unsigned base = (unsigned)(uintptr_t)area;
	ldt_set(0, base, 0xfff, 1, 0, 0, 0, 0, 1);       /* 32-bit data, writable, AVL */
	ldt_set(3, 0x12340, 0xf, 0, 0, 1, 1, 0, 0);      /* 16-bit read-only data, pages */
	ldt_set(5, 0x1000, 0xfffff, 1, 2, 0, 1, 0, 0);   /* 32-bit readable code, 4 GiB */
	ldt_set(6, 0x2000, 0x100, 1, 3, 1, 0, 1, 1);     /* conforming code, not present */
	ldt_set(9, base, 0x10, 1, 1, 0, 0, 0, 0);        /* expand-down data */
	ldt_set(12, 0xdead000, 0x77, 1, 0, 0, 0, 0, 0);
	ldt_clear(12);                                   /* written, then cleared */
	ldt_set(LDT_ENTRIES_MAX - 1, 0xfeed0000, 0xabcde, 1, 0, 0, 1, 0, 1);
	ldt_take(ldt_saved);
	kids[1] = SYS(fork());
	if (kids[1] == 0) { /* its own table, from its parent's */
		ldt_set(3, 0x5550, 0x20, 1, 0, 0, 0, 0, 1);
		ldt_set(20, 0x7770000, 0x300, 0, 0, 1, 0, 0, 0);
		ldt_take(ldt_saved);
		SYS(write(ready[1], "o", 1));
		zt_wait();
		ldt_check("child");
		_exit(0);
	}
	char c;
	for (int i = 0; i < 2; i++)
		if (read(ready[0], &c, 1) != 1)
			zt_setup_fail("children not ready");
	SYS(-pthread_create(&th[0], NULL, ldt_es_thread, NULL));
	while (ldt_es_ok < 0)
		usleep(1000);
	unsigned short gs = LDT_SEL(0);
	asm volatile("mov %0, %%gs" : : "r"(gs));
	zt_ready();
	zt_wait();
	CHECK(seg_gs() == gs, "%%gs is %#x, was %#x", seg_gs(), gs);
	ldt_check("process");
	/* the segment works: loaded again from the table, it reaches the area */
	unsigned got;
	asm volatile("mov %1, %%gs\n movl %%gs:8, %0" : "=r"(got) : "r"(gs));
	CHECK(got == *(unsigned *)(area + 8), "%%gs:8 reads %#x, not %#x", got,
	      *(unsigned *)(area + 8));
	unsigned short zero = 0;
	asm volatile("mov %0, %%gs" : : "r"(zero));
	ldt_stop = 1;
	pthread_join(th[0], NULL);
	CHECK(ldt_es_ok == 1, "the thread's %%es is no longer its LDT selector");
	zt_children_verdict(kids, 2);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "threads")) return threads();
	if (!strcmp(m, "thread-knobs")) return thread_knobs();
	if (!strcmp(m, "blocked-waits")) return blocked_waits();
	if (!strcmp(m, "thread-pending")) return thread_pending();
	if (!strcmp(m, "futex")) return futexes();
	if (!strcmp(m, "blocked-calls")) return blocked_calls();
	if (!strcmp(m, "waits-again")) return waits_again();
	if (!strcmp(m, "red-zone")) return red_zone();
	if (!strcmp(m, "dead-thread-timer")) return dead_thread_timer();
	if (!strcmp(m, "robust-list")) return robust_list();
	if (!strcmp(m, "thread-creds")) return thread_creds();
	if (!strcmp(m, "thread-timers")) return thread_timers();
	if (!strcmp(m, "zombie-leader")) return zombie_leader();
	if (!strcmp(m, "sse")) return sse_regs();
	if (!strcmp(m, "avx")) return avx_regs();
	if (!strcmp(m, "avx512")) return avx512_regs();
	if (!strcmp(m, "x87")) return x87_regs(0);
	if (!strcmp(m, "mmx")) return x87_regs(1);
	if (!strcmp(m, "fpu-thread")) return fpu_thread();
	if (!strcmp(m, "vdso")) return vdso();
	if (!strcmp(m, "rseq")) return rseq_check();
	if (!strcmp(m, "ldt")) return ldt();
	zt_setup_fail("unknown mode %s", m);
}
