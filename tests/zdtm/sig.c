/* Signals and timers: handlers, masks, pending and queued signals, the alternate
 * stack, itimers, POSIX timers, a process traced by another of the tree. */
#include "zdtm.h"
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/time.h>
#include <time.h>

static volatile int hits[65];
static volatile long values[65][8];
static volatile void *where_ran;

static void on_info(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	int n = hits[sig]++;
	if (n < 8)
		values[sig][n] = si->si_value.sival_int;
	where_ran = __builtin_frame_address(0);
}

static void unblock_all_but_term(void)
{
	sigset_t s;
	sigfillset(&s);
	sigdelset(&s, SIGTERM);
	sigprocmask(SIG_UNBLOCK, &s, NULL);
}

/* Handlers with their flags and masks, and the blocked mask. */
static int handlers(void)
{
	struct sigaction sa, want[65], got;
	int sigs[] = { SIGUSR1, SIGUSR2, SIGHUP, SIGALRM, SIGRTMIN, SIGRTMIN + 5, SIGCHLD,
		       SIGPIPE, SIGINT };
	int n = sizeof(sigs) / sizeof(sigs[0]);
	for (int i = 0; i < n; i++) {
		memset(&sa, 0, sizeof(sa));
		if (i == 7)
			sa.sa_handler = SIG_IGN;
		else if (i == 8)
			sa.sa_handler = SIG_DFL;
		else {
			sa.sa_sigaction = on_info;
			sa.sa_flags = SA_SIGINFO | (i % 2 ? SA_RESTART : 0) | (i == 2 ? SA_NODEFER : 0)
				      | (i == 3 ? SA_RESETHAND : 0) | (i == 6 ? SA_NOCLDSTOP : 0);
			sigaddset(&sa.sa_mask, sigs[(i + 1) % n]);
			sigaddset(&sa.sa_mask, SIGRTMAX - i);
		}
		SYS(sigaction(sigs[i], &sa, NULL));
		SYS(sigaction(sigs[i], NULL, &want[i]));
	}
	sigset_t mask, mask2;
	sigemptyset(&mask);
	sigaddset(&mask, SIGWINCH);
	sigaddset(&mask, SIGRTMIN + 3);
	sigaddset(&mask, SIGTERM);
	SYS(sigprocmask(SIG_SETMASK, &mask, NULL));
	zt_ready();
	zt_wait();
	for (int i = 0; i < n; i++) {
		SYS(sigaction(sigs[i], NULL, &got));
		CHECK(got.sa_handler == want[i].sa_handler, "handler of %d", sigs[i]);
		CHECK(got.sa_flags == want[i].sa_flags, "flags of %d: %x, expected %x", sigs[i],
		      got.sa_flags, want[i].sa_flags);
		for (int s = 1; s <= 64; s++)
			CHECK(sigismember(&got.sa_mask, s) == sigismember(&want[i].sa_mask, s),
			      "mask of %d: signal %d", sigs[i], s);
	}
	sigprocmask(SIG_BLOCK, NULL, &mask2);
	for (int s = 1; s <= 64; s++)
		CHECK(sigismember(&mask, s) == sigismember(&mask2, s), "blocked mask: signal %d", s);
	kill(getpid(), SIGUSR1);
	CHECK(hits[SIGUSR1] == 1, "SIGUSR1 handler did not run");
	zt_pass();
}

/* Blocked signals pending for the process and for the thread, standard ones once,
 * real-time ones queued several times with their values, in order. */
static int sigpending_check(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_info;
	sa.sa_flags = SA_SIGINFO;
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	int sigs[] = { SIGUSR1, SIGUSR2, SIGHUP, SIGRTMIN, SIGRTMIN + 1, SIGRTMAX };
	for (int i = 0; i < 6; i++)
		SYS(sigaction(sigs[i], &sa, NULL));
	union sigval v;
	kill(getpid(), SIGUSR1);
	syscall(SYS_tgkill, getpid(), gettid(), SIGUSR2);
	kill(getpid(), SIGHUP);
	kill(getpid(), SIGHUP); /* standard signals merge */
	for (int k = 0; k < 3; k++) {
		v.sival_int = 100 + k;
		SYS(sigqueue(getpid(), SIGRTMIN, v));
		v.sival_int = 200 + k;
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_signo = SIGRTMIN + 1;
		si.si_code = SI_QUEUE;
		si.si_pid = getpid();
		si.si_uid = getuid();
		si.si_value = v;
		SYS(syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGRTMIN + 1, &si));
	}
	v.sival_int = 999;
	SYS(sigqueue(getpid(), SIGRTMAX, v));
	zt_ready();
	zt_wait();
	unblock_all_but_term();
	CHECK(hits[SIGUSR1] == 1 && hits[SIGUSR2] == 1 && hits[SIGHUP] == 1,
	      "standard signals: usr1 %d usr2 %d hup %d", hits[SIGUSR1], hits[SIGUSR2], hits[SIGHUP]);
	CHECK(hits[SIGRTMIN] == 3 && hits[SIGRTMIN + 1] == 3 && hits[SIGRTMAX] == 1,
	      "queued real-time signals: %d %d %d", hits[SIGRTMIN], hits[SIGRTMIN + 1], hits[SIGRTMAX]);
	for (int k = 0; k < 3; k++)
		CHECK(values[SIGRTMIN][k] == 100 + k && values[SIGRTMIN + 1][k] == 200 + k,
		      "queued values out of order at %d: %ld %ld", k, values[SIGRTMIN][k],
		      values[SIGRTMIN + 1][k]);
	CHECK(values[SIGRTMAX][0] == 999, "value of SIGRTMAX %ld", values[SIGRTMAX][0]);
	zt_pass();
}

static int sigaltstack_check(void)
{
	static char stack_mem[65536];
	stack_t ss = { .ss_sp = stack_mem, .ss_size = sizeof(stack_mem), .ss_flags = 0 }, got;
	SYS(sigaltstack(&ss, NULL));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_info;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	SYS(sigaction(SIGUSR1, &sa, NULL));
	zt_ready();
	zt_wait();
	SYS(sigaltstack(NULL, &got));
	CHECK(got.ss_sp == ss.ss_sp && got.ss_size == ss.ss_size && got.ss_flags == 0,
	      "alternate stack %p/%zu/%d", got.ss_sp, got.ss_size, got.ss_flags);
	unblock_all_but_term();
	raise(SIGUSR1);
	CHECK(hits[SIGUSR1] == 1, "handler did not run");
	CHECK((char *)where_ran >= stack_mem && (char *)where_ran < stack_mem + sizeof(stack_mem),
	      "handler ran off the alternate stack");
	zt_pass();
}

static volatile int traps;
static void on_trap(int s) { (void)s; traps++; }

static int sigtrap_check(void)
{
	signal(SIGTRAP, on_trap);
	zt_ready();
	zt_wait();
	raise(SIGTRAP);
	CHECK(traps == 1, "SIGTRAP handler lost (%d)", traps);
	zt_pass();
}

static int itimers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_info;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGVTALRM, &sa, NULL);
	sigaction(SIGPROF, &sa, NULL);
	struct itimerval real = { { 0, 10000 }, { 0, 10000 } }, virt = { { 0, 20000 }, { 0, 20000 } },
			 prof = { { 0, 30000 }, { 0, 30000 } }, got;
	SYS(setitimer(ITIMER_REAL, &real, NULL));
	SYS(setitimer(ITIMER_VIRTUAL, &virt, NULL));
	SYS(setitimer(ITIMER_PROF, &prof, NULL));
	zt_ready();
	volatile unsigned long spin = 0;
	while (!zt_term_pending())
		spin++;
	int before[3] = { hits[SIGALRM], hits[SIGVTALRM], hits[SIGPROF] };
	getitimer(ITIMER_REAL, &got);
	CHECK(got.it_interval.tv_usec == 10000, "ITIMER_REAL interval %ld", got.it_interval.tv_usec);
	getitimer(ITIMER_VIRTUAL, &got);
	CHECK(got.it_interval.tv_usec == 20000, "ITIMER_VIRTUAL interval %ld", got.it_interval.tv_usec);
	getitimer(ITIMER_PROF, &got);
	CHECK(got.it_interval.tv_usec == 30000, "ITIMER_PROF interval %ld", got.it_interval.tv_usec);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do { /* spin: each timer fires again */
		spin++;
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((hits[SIGALRM] <= before[0] + 2 || hits[SIGVTALRM] <= before[1] + 1
		  || hits[SIGPROF] <= before[2] + 1) && t.tv_sec - t0.tv_sec < 10);
	CHECK(hits[SIGALRM] > before[0] + 2 && hits[SIGVTALRM] > before[1] + 1
	      && hits[SIGPROF] > before[2] + 1, "timers stopped firing: %d %d %d",
	      hits[SIGALRM] - before[0], hits[SIGVTALRM] - before[1], hits[SIGPROF] - before[2]);
	zt_pass();
}

/* A one-shot ITIMER_REAL set far ahead keeps its remaining time. */
static int itimer_oneshot(void)
{
	struct itimerval v = { { 0, 0 }, { 100, 0 } }, got;
	signal(SIGALRM, SIG_IGN);
	SYS(setitimer(ITIMER_REAL, &v, NULL));
	zt_ready();
	zt_wait();
	getitimer(ITIMER_REAL, &got);
	CHECK(got.it_value.tv_sec > 60 && got.it_value.tv_sec <= 100 && got.it_interval.tv_sec == 0,
	      "one-shot timer: %ld s left", (long)got.it_value.tv_sec);
	zt_pass();
}

static int posix_timers(void)
{
	clockid_t clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME,
			       CLOCK_PROCESS_CPUTIME_ID, CLOCK_MONOTONIC };
	int sigs[] = { SIGRTMIN, SIGRTMIN + 1, SIGRTMIN + 2, SIGRTMIN + 3, SIGUSR1 };
	timer_t t[5];
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_info;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	for (int i = 0; i < 5; i++) {
		sigaction(sigs[i], &sa, NULL);
		struct sigevent ev;
		memset(&ev, 0, sizeof(ev));
		ev.sigev_notify = SIGEV_SIGNAL;
		ev.sigev_signo = sigs[i];
		ev.sigev_value.sival_int = 7000 + i;
		SYS(timer_create(clocks[i], &ev, &t[i]));
		struct itimerspec its = { { 0, (i + 1) * 5000000L }, { 0, (i + 1) * 5000000L } };
		if (i == 4) /* one-shot, far away */
			its = (struct itimerspec){ { 0, 0 }, { 200, 0 } };
		SYS(timer_settime(t[i], 0, &its, NULL));
	}
	zt_ready();
	volatile unsigned long spin = 0;
	while (!zt_term_pending())
		spin++;
	int before[5];
	for (int i = 0; i < 5; i++)
		before[i] = hits[sigs[i]];
	struct itimerspec got;
	for (int i = 0; i < 5; i++) {
		SYS(timer_gettime(t[i], &got));
		if (i < 4)
			CHECK(got.it_interval.tv_nsec == (i + 1) * 5000000L, "timer %d interval %ld", i,
			      got.it_interval.tv_nsec);
		else
			CHECK(got.it_value.tv_sec > 100 && got.it_interval.tv_sec == 0,
			      "one-shot timer: %ld s left", (long)got.it_value.tv_sec);
	}
	struct timespec t0, tn;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int ok;
	do {
		spin++;
		ok = 1;
		for (int i = 0; i < 4; i++)
			ok &= hits[sigs[i]] > before[i] + 1;
		clock_gettime(CLOCK_MONOTONIC, &tn);
	} while (!ok && tn.tv_sec - t0.tv_sec < 10);
	for (int i = 0; i < 4; i++) {
		CHECK(hits[sigs[i]] > before[i] + 1, "timer %d stopped firing", i);
		CHECK(values[sigs[i]][0] == 7000 + i, "timer %d value %ld", i, values[sigs[i]][0]);
	}
	zt_pass();
}

/* A child traced by its parent (PTRACE_SEIZE from inside the tree). */
static int ptraced(void)
{
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		_exit(0);
	}
	SYS(ptrace(PTRACE_SEIZE, c, 0, 0));
	zt_ready();
	zt_wait();
	int st;
	ptrace(PTRACE_INTERRUPT, c, 0, 0);
	waitpid(c, &st, 0);
	ptrace(PTRACE_DETACH, c, 0, 0);
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* Asleep in sigsuspend (zt_wait) with SIGUSR1 and SIGTERM blocked outside it: once
 * SIGTERM woke it, its mask is the one it had before, not sigsuspend's own. A second
 * thread sleeps in ppoll with SIGUSR2 let through only there; after it woke (by
 * SIGUSR2), SIGUSR2 is blocked again. */
static volatile int ppoll_woke;
static void on_usr2(int s) { (void)s; }

static void *ppoll_thread(void *arg)
{
	(void)arg;
	sigset_t during;
	pthread_sigmask(SIG_BLOCK, NULL, &during);
	sigdelset(&during, SIGUSR2);
	int r = ppoll(NULL, 0, NULL, &during);
	ppoll_woke = (r < 0 && errno == EINTR) ? 1 : -1;
	sigset_t after;
	pthread_sigmask(SIG_BLOCK, NULL, &after);
	if (!sigismember(&after, SIGUSR2))
		ppoll_woke = -2;  /* ppoll's temporary mask stayed */
	return NULL;
}

static int masks_around(sigset_t *before, const char *who)
{
	sigset_t now;
	pthread_sigmask(SIG_BLOCK, NULL, &now);
	for (int s = 1; s < 65; s++)
		if (sigismember(&now, s) != sigismember(before, s))
			zt_fail("%s: signal %d %s after the temporary mask", who, s,
				sigismember(&now, s) ? "blocked" : "unblocked");
	return 0;
}

static int temp_masks(void)
{
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGRTMIN + 3);
	SYS(sigprocmask(SIG_BLOCK, &block, NULL));
	signal(SIGUSR2, on_usr2);
	sigset_t before;
	sigprocmask(SIG_BLOCK, NULL, &before);
	pthread_t th;
	if (pthread_create(&th, NULL, ppoll_thread, NULL))
		zt_setup_fail("pthread_create");
	usleep(100000);  /* (the thread reaches ppoll; checked below either way) */
	zt_ready();
	zt_wait();
	masks_around(&before, "sigsuspend");
	CHECK(ppoll_woke == 0, "ppoll returned before its signal (%d)", ppoll_woke);
	pthread_kill(th, SIGUSR2);
	pthread_join(th, NULL);
	CHECK(ppoll_woke != -2, "the ppoll thread kept ppoll's mask: SIGUSR2 unblocked");
	CHECK(ppoll_woke == 1, "ppoll did not return EINTR on SIGUSR2");
	zt_pass();
}

/* A thread asleep inside a handler running on its own alternate stack (SS_ONSTACK) at
 * the dump: it wakes there, its stack as it was, returns, and the next signal runs on
 * the alternate stack again; the main thread has another alternate stack. */
static char alt_main[65536], alt_thread[65536];
static volatile int in_handler, handler_ok, handler_done;
static volatile sig_atomic_t let_go;

static void on_usr1_onstack(int s)
{
	(void)s;
	char here;
	stack_t ss;
	sigaltstack(NULL, &ss);
	int ok = &here >= alt_thread && &here < alt_thread + sizeof(alt_thread)
		 && (ss.ss_flags & SS_ONSTACK) && ss.ss_sp == alt_thread;
	if (in_handler++ == 0) {
		while (!let_go)
			usleep(10000);
		sigaltstack(NULL, &ss);
		handler_ok = ok && (ss.ss_flags & SS_ONSTACK) && ss.ss_sp == alt_thread
			     && ss.ss_size == sizeof(alt_thread);
	} else {
		handler_done = ok ? 1 : -1;
	}
}

static void *onstack_thread(void *arg)
{
	(void)arg;
	stack_t ss = { .ss_sp = alt_thread, .ss_size = sizeof(alt_thread) };
	sigaltstack(&ss, NULL);
	sigset_t u;
	sigemptyset(&u);
	sigaddset(&u, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &u, NULL);
	raise(SIGUSR1);  /* sleeps in the handler until let go */
	stack_t now;
	sigaltstack(NULL, &now);
	if (now.ss_flags != 0 || now.ss_sp != alt_thread)
		handler_ok = 0;
	raise(SIGUSR1);  /* on the alternate stack again */
	return NULL;
}

static int altstack_onstack(void)
{
	stack_t ss = { .ss_sp = alt_main, .ss_size = sizeof(alt_main) }, got;
	SYS(sigaltstack(&ss, NULL));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1_onstack;
	sa.sa_flags = SA_ONSTACK;
	SYS(sigaction(SIGUSR1, &sa, NULL));
	sigset_t b;
	sigemptyset(&b);
	sigaddset(&b, SIGUSR1);
	SYS(sigprocmask(SIG_BLOCK, &b, NULL));
	pthread_t th;
	if (pthread_create(&th, NULL, onstack_thread, NULL))
		zt_setup_fail("pthread_create");
	for (int i = 0; i < 500 && !in_handler; i++)
		usleep(10000);
	if (!in_handler)
		zt_setup_fail("the thread's handler did not run");
	zt_ready();
	zt_wait();
	let_go = 1;
	pthread_join(th, NULL);
	CHECK(handler_ok, "the thread's alternate stack was not as it was in its handler");
	CHECK(handler_done == 1, "second handler: %d (not on the alternate stack?)",
	      handler_done);
	SYS(sigaltstack(NULL, &got));
	CHECK(got.ss_sp == alt_main && got.ss_size == sizeof(alt_main) && got.ss_flags == 0,
	      "main thread's alternate stack %p/%zu/%d", got.ss_sp, got.ss_size, got.ss_flags);
	zt_pass();
}

/* Asleep in read() of an empty pipe, with a handler installed without SA_RESTART: the
 * dump and restore interrupt nothing the program sees; the read gets the data written
 * after the restore, and a signal after that still interrupts a second read (EINTR). */
static volatile int usr2_hits;
static void on_usr2_count(int s) { (void)s; usr2_hits++; }
static int rd_pipe[2];
static volatile long read_got = -2, read2_got = -2;
static volatile int read2_errno;

static void *reader_thread(void *arg)
{
	(void)arg;
	char buf[16];
	read_got = read(rd_pipe[0], buf, sizeof(buf));
	if (read_got == 5 && memcmp(buf, "after", 5))
		read_got = -3;
	read2_got = read(rd_pipe[0], buf, sizeof(buf));
	read2_errno = errno;
	return NULL;
}

static int read_norestart(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr2_count;  /* no SA_RESTART */
	SYS(sigaction(SIGUSR2, &sa, NULL));
	SYS(pipe(rd_pipe));
	pthread_t th;
	if (pthread_create(&th, NULL, reader_thread, NULL))
		zt_setup_fail("pthread_create");
	usleep(100000);
	zt_ready();
	zt_wait();
	CHECK(read_got == -2, "read returned %ld before anything was written (errno %d)",
	      read_got, errno);
	SYS(write(rd_pipe[1], "after", 5));
	for (int i = 0; i < 500 && read_got == -2; i++)
		usleep(10000);
	CHECK(read_got == 5, "read got %ld", read_got);
	for (int i = 0; i < 500 && read2_got == -2; i++) {
		pthread_kill(th, SIGUSR2);
		usleep(10000);
	}
	pthread_join(th, NULL);
	CHECK(read2_got == -1 && read2_errno == EINTR && usr2_hits >= 1,
	      "second read: %ld errno %d, %d signals", read2_got, read2_errno, usr2_hits);
	CHECK(usr2_hits >= 1, "no SIGUSR2");
	zt_pass();
}

/* Whole siginfos queued with codes and payloads of the sender's choice
 * (rt_sigqueueinfo, rt_tgsigqueueinfo): many for the main thread, some for another
 * thread, some for the process, and a SIGCHLD of a child that exited (left a zombie);
 * each is delivered after the restore byte for byte as sent, in order. */
#define SI_SELF 40
#define SI_BYTES (offsetof(siginfo_t, _sifields) + 16)  /* signo, errno, code, pid, uid, value */
static siginfo_t si_sent[SI_SELF + 5], si_got[SI_SELF + 5];
static volatile int si_count[3], si_chld;
static pid_t si_main, si_child, si_thread;
static pthread_barrier_t si_barrier;
static volatile int si_go;

static void on_siginfo(int s, siginfo_t *i, void *u)
{
	(void)u;
	if (s == SIGCHLD) {
		si_chld = i->si_code == CLD_EXITED && i->si_pid == si_child && i->si_status == 5
			  ? 1 : 2;
		return;
	}
	int who = s == SIGRTMAX ? 2 : gettid() == si_main ? 0 : 1;
	int base = who == 0 ? 0 : who == 1 ? SI_SELF : SI_SELF + 3;
	if (si_count[who] < (who == 0 ? SI_SELF : who == 1 ? 3 : 2))
		si_got[base + si_count[who]++] = *i;
}

static void *siginfo_thread(void *arg)
{
	(void)arg;
	si_thread = gettid();
	pthread_barrier_wait(&si_barrier);
	while (!si_go)
		usleep(1000);
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN);
	pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
	return NULL;
}

static void queue_info(int i, int signo, pid_t tid)
{
	memset(&si_sent[i], 0, sizeof(si_sent[i]));
	si_sent[i].si_signo = signo;
	si_sent[i].si_code = -10 - i;  /* below zero: the sender's own */
	zt_fill(&si_sent[i]._sifields, 16, 40 + i);
	if (tid)
		SYS(syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, signo, &si_sent[i]));
	else
		SYS(syscall(SYS_rt_sigqueueinfo, getpid(), signo, &si_sent[i]));
}

static int siginfo_queued(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_siginfo;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigset_t all;
	sigfillset(&all);
	sigdelset(&all, SIGTERM);
	sigprocmask(SIG_BLOCK, &all, NULL);
	SYS(sigaction(SIGRTMIN, &sa, NULL));
	SYS(sigaction(SIGRTMAX, &sa, NULL));
	SYS(sigaction(SIGCHLD, &sa, NULL));
	si_main = gettid();
	pthread_t t;
	pthread_barrier_init(&si_barrier, NULL, 2);
	SYS(-pthread_create(&t, NULL, siginfo_thread, NULL));
	pthread_barrier_wait(&si_barrier);
	si_child = SYS(fork());
	if (si_child == 0)
		_exit(5);
	siginfo_t w;
	SYS(waitid(P_PID, si_child, &w, WEXITED | WNOWAIT));
	for (int i = 0; i < SI_SELF; i++)
		queue_info(i, SIGRTMIN, si_main);
	for (int i = 0; i < 3; i++)
		queue_info(SI_SELF + i, SIGRTMIN, si_thread);
	for (int i = 0; i < 2; i++)
		queue_info(SI_SELF + 3 + i, SIGRTMAX, 0);
	zt_ready();
	zt_wait();
	sigset_t keep;  /* the process's SIGRTMAX for the main thread, after its own */
	sigemptyset(&keep);
	sigaddset(&keep, SIGTERM);
	sigaddset(&keep, SIGRTMAX);
	sigprocmask(SIG_SETMASK, &keep, NULL);
	si_go = 1;
	pthread_join(t, NULL);
	sigdelset(&keep, SIGRTMAX);
	sigprocmask(SIG_SETMASK, &keep, NULL);
	CHECK(si_chld == 1, "SIGCHLD of the zombie child: %d", si_chld);
	CHECK(si_count[0] == SI_SELF && si_count[1] == 3 && si_count[2] == 2,
	      "delivered: main thread %d, other thread %d, process %d", si_count[0], si_count[1],
	      si_count[2]);
	for (int i = 0; i < SI_SELF + 5; i++)
		CHECK(!memcmp(&si_got[i], &si_sent[i], SI_BYTES), "siginfo %d: code %d, was %d", i,
		      si_got[i].si_code, si_sent[i].si_code);
	zt_pass();
}

/* A POSIX timer that runs a function in a thread (SIGEV_THREAD: glibc's helper thread
 * waits for its signal): it goes on firing after the restore. */
static volatile int sigev_ticks;
static void on_sigev_tick(union sigval v)
{
	(void)v;
	__atomic_add_fetch(&sigev_ticks, 1, __ATOMIC_SEQ_CST);
}

static int sigev_thread(void)
{
	timer_t t;
	struct sigevent sev;
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_THREAD;
	sev.sigev_notify_function = on_sigev_tick;
	SYS(timer_create(CLOCK_MONOTONIC, &sev, &t));
	struct itimerspec its = { { 0, 20000000 }, { 0, 20000000 } };
	SYS(timer_settime(t, 0, &its, NULL));
	for (int i = 0; i < 500 && sigev_ticks < 3; i++)
		usleep(10000);
	if (sigev_ticks < 3)
		zt_setup_fail("the timer does not fire");
	zt_ready();
	zt_wait();
	int before = sigev_ticks;
	for (int i = 0; i < 1000 && sigev_ticks < before + 5; i++)
		usleep(10000);
	CHECK(sigev_ticks >= before + 5, "ticks %d, then %d: the timer's thread is silent",
	      before, sigev_ticks);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "handlers")) return handlers();
	if (!strcmp(m, "sigpending")) return sigpending_check();
	if (!strcmp(m, "siginfo-queued")) return siginfo_queued();
	if (!strcmp(m, "sigaltstack")) return sigaltstack_check();
	if (!strcmp(m, "sigtrap")) return sigtrap_check();
	if (!strcmp(m, "temp-masks")) return temp_masks();
	if (!strcmp(m, "altstack-onstack")) return altstack_onstack();
	if (!strcmp(m, "read-norestart")) return read_norestart();
	if (!strcmp(m, "itimers")) return itimers();
	if (!strcmp(m, "itimer-oneshot")) return itimer_oneshot();
	if (!strcmp(m, "posix-timers")) return posix_timers();
	if (!strcmp(m, "sigev-thread")) return sigev_thread();
	if (!strcmp(m, "ptraced")) return ptraced();
	zt_setup_fail("unknown mode %s", m);
}
