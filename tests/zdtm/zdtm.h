/* The frame every program of tests/zdtm shares: set state up, say "ready", wait for
 * SIGTERM (sent after the restore), check the state, say "PASS" or "FAIL: why".
 *
 * A setup step that fails says "SETUP: why" (the harness fails before any dump).
 * SIGTERM is blocked outside zt_wait(), so it cannot interrupt a check half-way; a
 * program that looks at its signal mask must leave SIGTERM out of its comparison. */
#ifndef ZDTM_H
#define ZDTM_H
#pragma GCC diagnostic ignored "-Wunused-function"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t zt_stopped;

static void zt_on_term(int sig) { (void)sig; zt_stopped = 1; }

static void zt_say(const char *fmt, va_list ap)
{
	char buf[512];
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	if (write(1, buf, n) < 0)
		_exit(3);
}

static void zt_print(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	zt_say(fmt, ap);
	va_end(ap);
}

/* A setup step failed: nothing was dumped yet. */
__attribute__((noreturn, format(printf, 1, 2)))
static void zt_setup_fail(const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	int err = errno;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	zt_print("SETUP: %s (errno %d %s)", msg, err, strerror(err));
	exit(2);
}

__attribute__((noreturn, format(printf, 1, 2)))
static void zt_fail(const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	zt_print("FAIL: %s", msg);
	exit(1);
}

__attribute__((noreturn))
static void zt_pass(void)
{
	zt_print("PASS");
	exit(0);
}

/* SYS(call): a setup call that must not fail (returns its value). */
#define SYS(x) ({ long _r = (long)(x); if (_r < 0) zt_setup_fail("%s", #x); _r; })
/* CHECK(cond, fmt...): after the restore, a property that must hold. */
#define CHECK(c, ...) do { if (!(c)) zt_fail(__VA_ARGS__); } while (0)

static void zt_init(void)
{
	struct sigaction sa;
	sigset_t set;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = zt_on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

static void zt_ready(void) { zt_print("ready"); }

/* Sleep until SIGTERM (no race: it is blocked except inside sigsuspend). */
static void zt_wait(void)
{
	sigset_t set;
	sigprocmask(SIG_BLOCK, NULL, &set);
	sigdelset(&set, SIGTERM);
	while (!zt_stopped)
		sigsuspend(&set);
}

/* For busy programs: whether SIGTERM came (polls the pending set). */
static int zt_term_pending(void)
{
	sigset_t set;
	if (zt_stopped)
		return 1;
	sigpending(&set);
	if (sigismember(&set, SIGTERM)) {
		zt_stopped = 1;
		return 1;
	}
	return 0;
}

static void zt_fill(void *p, size_t len, unsigned seed)
{
	unsigned char *c = p;
	for (size_t i = 0; i < len; i++)
		c[i] = (unsigned char)(seed + i * 31 + (i >> 12));
}

static long zt_diff(const void *p, size_t len, unsigned seed)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < len; i++)
		if (c[i] != (unsigned char)(seed + i * 31 + (i >> 12)))
			return (long)i;
	return -1;
}

/* A file NAME of LEN bytes of the zt_fill pattern SEED, open read-write. */
static int zt_make_file(const char *name, size_t len, unsigned seed)
{
	int fd = SYS(open(name, O_RDWR | O_CREAT | O_TRUNC, 0640));
	char *buf = malloc(len);
	zt_fill(buf, len, seed);
	SYS(write(fd, buf, len));
	free(buf);
	return fd;
}

/* Reap a child; its exit code (0..255), 128+signal, or -1. */
static int zt_reap(pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) != pid)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return -1;
}

/* Pass SIGTERM to children and collect their verdicts (0 = their checks held). */
static void zt_children_verdict(const pid_t *kids, int n)
{
	for (int i = 0; i < n; i++)
		kill(kids[i], SIGTERM);
	for (int i = 0; i < n; i++) {
		int code = zt_reap(kids[i]);
		CHECK(code == 0, "child %d (#%d) ended with %d", kids[i], i, code);
	}
}

/* The mode argument: argv[1] or "" */
static const char *zt_mode(int argc, char **argv) { return argc > 1 ? argv[1] : ""; }

#endif
