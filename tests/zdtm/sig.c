/* Signals and timers: handlers, masks, pending and queued signals, the alternate
 * stack, itimers, POSIX timers, a process traced by another of the tree. */
#include "zdtm.h"
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

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "handlers")) return handlers();
	if (!strcmp(m, "sigpending")) return sigpending_check();
	if (!strcmp(m, "sigaltstack")) return sigaltstack_check();
	if (!strcmp(m, "sigtrap")) return sigtrap_check();
	if (!strcmp(m, "itimers")) return itimers();
	if (!strcmp(m, "itimer-oneshot")) return itimer_oneshot();
	if (!strcmp(m, "posix-timers")) return posix_timers();
	if (!strcmp(m, "ptraced")) return ptraced();
	zt_setup_fail("unknown mode %s", m);
}
