/* State that keeps changing while the dump runs (CRIU's zdtm transition tests): threads
 * and processes made and gone all the time, mappings made, changed and unmapped by
 * threads, numbers going round a ring of pipes, FIFOs or sockets, records written into
 * one pipe by three processes, a file read on through its offset, memory two processes
 * share written in turn. Each checks as it goes and, after SIGTERM, that it still goes
 * on. */
#include "zdtm.h"
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <linux/aio_abi.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/epoll.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/rseq.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Wait up to 10 s for *counter to pass what it is now by ``more``. */
static int goes_on(volatile unsigned long *counter, unsigned long more)
{
	unsigned long from = *counter;
	double end = now() + 10;
	while (now() < end) {
		if (*counter >= from + more)
			return 1;
		usleep(1000);
	}
	return 0;
}

/* The rhythm of a case that checks as it goes: "ready" once it went ``warm`` rounds;
 * after SIGTERM, ``more`` rounds again (within 10 s) before its last checks. */
struct pace {
	unsigned long warm, more, rounds, from;
	int ready;
	double stop_at;
};

/* One more round; 0 once the case went on long enough after SIGTERM. */
static int pace_on(struct pace *p)
{
	p->rounds++;
	if (!p->ready && p->rounds > p->warm) {
		zt_ready();
		p->ready = 1;
	}
	if (p->ready && !p->stop_at && zt_term_pending()) {
		p->stop_at = now();
		p->from = p->rounds;
	}
	if (p->stop_at && p->rounds > p->from + p->more)
		return 0;
	CHECK(!p->stop_at || now() < p->stop_at + 10, "it stopped going on (%lu rounds since "
	      "SIGTERM)", p->rounds - p->from);
	return 1;
}

/* ---------------------------------------------------------------- thread-bomb */
static volatile unsigned long bombs;
static volatile int bomb_stop;
static pthread_attr_t detached;

static void *bomb(void *arg)
{
	pthread_t t;
	(void)arg;
	__atomic_add_fetch(&bombs, 1, __ATOMIC_RELAXED);
	while (!bomb_stop && pthread_create(&t, &detached, bomb, NULL) != 0)
		usleep(100); /* (EAGAIN: the last ones not gone yet) */
	return NULL;
}

/* Two chains of threads, each starting the next and exiting at once. */
static int thread_bomb(void)
{
	pthread_t t;
	pthread_attr_init(&detached);
	pthread_attr_setdetachstate(&detached, PTHREAD_CREATE_DETACHED);
	for (int i = 0; i < 2; i++)
		SYS(-pthread_create(&t, &detached, bomb, NULL));
	while (bombs < 100)
		usleep(1000);
	zt_ready();
	zt_wait();
	CHECK(goes_on(&bombs, 1000), "the threads stopped making threads (%lu made)", bombs);
	bomb_stop = 1;
	zt_pass();
}

/* ---------------------------------------------------------------- fork-churn */
/* Children forked and reaped without end, by the process and by a child of its, each
 * exiting with a code of its number; after the restore both go on. */
static void churn(volatile unsigned long *n, int (*stop)(void))
{
	while (!stop()) {
		pid_t p = fork();
		if (p == 0)
			_exit((int)(*n % 200));
		if (p < 0) {
			usleep(1000);
			continue;
		}
		int code = zt_reap(p);
		if (code != (int)(*n % 200))
			zt_fail("child %d (#%lu) ended with %d", p, *n, code);
		(*n)++;
	}
}

static volatile unsigned long forks;
static int never(void) { return 0; }
static int stop_forks;
static int forks_stopped(void) { return stop_forks; }

static void *fork_thread(void *arg)
{
	(void)arg;
	churn(&forks, forks_stopped);
	return NULL;
}

static int fork_churn(void)
{
	pid_t kid = SYS(fork());
	if (kid == 0) {
		unsigned long n = 0;
		signal(SIGTERM, SIG_DFL); /* killed at the end */
		churn(&n, never);
		_exit(1);
	}
	pthread_t t;
	SYS(-pthread_create(&t, NULL, fork_thread, NULL));
	while (forks < 50)
		usleep(1000);
	zt_ready();
	zt_wait();
	CHECK(goes_on(&forks, 200), "children no longer forked and reaped (%lu)", forks);
	stop_forks = 1;
	pthread_join(t, NULL);
	CHECK(kill(kid, 0) == 0, "the churning child is gone");
	kill(kid, SIGKILL);
	int code = zt_reap(kid);
	CHECK(code == 128 + SIGKILL, "the churning child ended with %d", code);
	zt_pass();
}

/* ---------------------------------------------------------------- maps-churn */
static volatile unsigned long maps_rounds;
static volatile int maps_stop;
static char maps_error[200];

static void *map_churn(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	while (!maps_stop) {
		size_t pages = 1 + rand_r(&seed) % 64, len = pages * 4096;
		unsigned fill = rand_r(&seed);
		unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			continue;
		zt_fill(p, len, fill);
		size_t mapped = len;
		if (rand_r(&seed) % 3 == 0) {
			unsigned char *q = mremap(p, len, len * 2, MREMAP_MAYMOVE);
			if (q != MAP_FAILED) {
				p = q;
				mapped = len * 2;
				memset(p + len, 0x5a, len);
			}
		}
		if (rand_r(&seed) % 2)
			mprotect(p, len / 2, PROT_READ);
		sched_yield();
		long bad = zt_diff(p, len, fill);
		if (bad >= 0 && !maps_error[0])
			snprintf(maps_error, sizeof(maps_error), "byte %ld of a mapping of %zu "
				 "pages changed", bad, pages);
		munmap(p, mapped);
		__atomic_add_fetch(&maps_rounds, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* Three threads mapping, filling, protecting, moving and unmapping memory. */
static int maps_churn(void)
{
	pthread_t t[3];
	for (int i = 0; i < 3; i++)
		SYS(-pthread_create(&t[i], NULL, map_churn, (void *)(uintptr_t)(i + 1)));
	while (maps_rounds < 100)
		usleep(1000);
	zt_ready();
	zt_wait();
	CHECK(goes_on(&maps_rounds, 1000), "the threads stopped (%lu rounds)", maps_rounds);
	maps_stop = 1;
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	CHECK(!maps_error[0], "%s", maps_error);
	zt_pass();
}

/* ---------------------------------------------------------------- rings */
/* Numbers go round a ring of three processes (0 -> 1 -> 2 -> 0) through pipes, FIFOs or
 * stream sockets, 64 of them on their way at any time: each process checks that it
 * gets them in order and passes them on; the first makes new ones. At the end it stops
 * making them and closes its end: the others see the end, pass it on and exit 0 when
 * every number came in order. */
#define RING 3
#define IN_FLIGHT 64

static int read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += n;
	}
	return 1;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += n;
	}
	return 0;
}

/* Links: fds[i][0] read by process i, fds[i][1] written by process i-1. */
static void ring_links(const char *kind, int fds[RING][2])
{
	for (int i = 0; i < RING; i++) {
		if (!strcmp(kind, "pipe")) {
			SYS(pipe(fds[i]));
		} else if (!strcmp(kind, "socket")) {
			SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, fds[i]));
		} else {
			char name[32];
			snprintf(name, sizeof(name), "ring-%d", i);
			SYS(mkfifo(name, 0600));
			fds[i][0] = SYS(open(name, O_RDONLY | O_NONBLOCK));
			fds[i][1] = SYS(open(name, O_WRONLY));
			SYS(fcntl(fds[i][0], F_SETFL, 0));
		}
	}
}

static void ring_member(int i, int fds[RING][2])
{
	int in = fds[i][0], out = fds[(i + 1) % RING][1];
	for (int j = 0; j < RING; j++)
		for (int k = 0; k < 2; k++)
			if (fds[j][k] != in && fds[j][k] != out)
				close(fds[j][k]);
	uint64_t want = 0, got;
	int r;
	while ((r = read_full(in, &got, sizeof(got))) == 1) {
		if (got != want) {
			zt_print("FAIL: process %d of the ring got %llu, not %llu", i,
				 (unsigned long long)got, (unsigned long long)want);
			_exit(1);
		}
		want++;
		if (write_full(out, &got, sizeof(got)) < 0)
			_exit(2);
	}
	_exit(r == 0 ? 0 : 3);
}

static int ring(const char *kind)
{
	int fds[RING][2];
	pid_t kids[RING - 1];
	ring_links(kind, fds);
	for (int i = 1; i < RING; i++) {
		kids[i - 1] = SYS(fork());
		if (kids[i - 1] == 0)
			ring_member(i, fds);
	}
	int in = fds[0][0], out = fds[1][1];
	for (int j = 0; j < RING; j++)
		for (int k = 0; k < 2; k++)
			if (fds[j][k] != in && fds[j][k] != out)
				close(fds[j][k]);
	uint64_t next = 0, want = 0, got;
	for (; next < IN_FLIGHT; next++)
		SYS(write_full(out, &next, sizeof(next)));
	struct pace pace = { .warm = 1000, .more = 1000 };
	while (pace_on(&pace)) {
		int r = read_full(in, &got, sizeof(got));
		CHECK(r == 1, "the ring broke: read %d (errno %d)", r, errno);
		CHECK(got == want, "the ring gave back %llu, not %llu", (unsigned long long)got,
		      (unsigned long long)want);
		want++;
		SYS(write_full(out, &next, sizeof(next)));
		next++;
	}
	close(out);
	while (read_full(in, &got, sizeof(got)) == 1) {
		CHECK(got == want, "the ring gave back %llu, not %llu at its end",
		      (unsigned long long)got, (unsigned long long)want);
		want++;
	}
	CHECK(want == next, "%llu numbers lost in the ring", (unsigned long long)(next - want));
	for (int i = 0; i < RING - 1; i++) {
		int code = zt_reap(kids[i]);
		CHECK(code == 0, "ring process %d ended with %d", i + 1, code);
	}
	zt_pass();
}

/* ---------------------------------------------------------------- pipe-shared */
/* Three children write numbered records into one pipe they share with the process,
 * which reads them: each writer's records in order, none lost or torn (8 bytes, below
 * PIPE_BUF: each write whole). */
static int pipe_shared(void)
{
	int p[2];
	pid_t kids[3];
	SYS(pipe(p));
	for (int w = 0; w < 3; w++) {
		kids[w] = SYS(fork());
		if (kids[w] == 0) {
			signal(SIGTERM, SIG_DFL);
			close(p[0]);
			for (uint64_t n = 0;; n++) {
				uint64_t rec = (uint64_t)w << 56 | n;
				if (write(p[1], &rec, sizeof(rec)) != sizeof(rec))
					_exit(1);
			}
		}
	}
	close(p[1]);
	uint64_t want[3] = { 0 };
	struct pace pace = { .warm = 3000, .more = 3000 };
	while (pace_on(&pace)) {
		uint64_t rec;
		int r = read_full(p[0], &rec, sizeof(rec));
		CHECK(r == 1, "read: %d (errno %d)", r, errno);
		unsigned w = rec >> 56;
		CHECK(w < 3, "a torn record %#llx", (unsigned long long)rec);
		uint64_t n = rec & ((1ULL << 56) - 1);
		CHECK(n == want[w], "writer %u's record %llu, not %llu", w, (unsigned long long)n,
		      (unsigned long long)want[w]);
		want[w]++;
	}
	for (int w = 0; w < 3; w++) {
		kill(kids[w], SIGKILL);
		int code = zt_reap(kids[w]);
		CHECK(code == 128 + SIGKILL, "writer %d ended with %d", w, code);
	}
	zt_pass();
}

/* ---------------------------------------------------------------- file-read */
/* A file read on and on through its offset (read, then lseek back to 0 at its end),
 * and at random places (pread): every byte as written. */
static int file_read(void)
{
	const size_t len = 1 << 20;
	int fd = zt_make_file("data", len, 33);
	SYS(lseek(fd, 0, SEEK_SET));
	unsigned char *want = malloc(len), buf[7777];
	zt_fill(want, len, 33);
	size_t at = 0;
	unsigned seed = 5;
	struct pace pace = { .warm = 100, .more = 1000 };
	while (pace_on(&pace)) {
		ssize_t n = read(fd, buf, sizeof(buf));
		CHECK(n >= 0, "read: %s", strerror(errno));
		if (n == 0) {
			CHECK(at == len, "end of file at %zu, not %zu", at, len);
			SYS(lseek(fd, 0, SEEK_SET));
			at = 0;
			continue;
		}
		CHECK(!memcmp(buf, want + at, n), "read %zd bytes at %zu: not the file's", n, at);
		at += n;
		off_t pos = rand_r(&seed) % (len - 100);
		CHECK(pread(fd, buf, 100, pos) == 100 && !memcmp(buf, want + pos, 100),
		      "pread at %lld: not the file's", (long long)pos);
		CHECK(lseek(fd, 0, SEEK_CUR) == (off_t)at, "the offset is %lld, not %zu",
		      (long long)lseek(fd, 0, SEEK_CUR), at);
	}
	zt_pass();
}

/* ---------------------------------------------------------------- shmem-pingpong */
/* Two processes take turns through memory they share (MAP_SHARED|MAP_ANONYMOUS): the
 * parent writes an odd number, the child the next even one, each spinning until its
 * turn, and each also fills a block of the page with its number; a copy in place of
 * the shared memory would stop them. */
struct turns {
	volatile uint64_t turn;
	volatile uint64_t block[2][64];
};

static int check_block(volatile uint64_t *b, uint64_t v)
{
	for (int i = 0; i < 64; i++)
		if (b[i] != v)
			return 0;
	return 1;
}

static void take_turns(struct turns *t, int me, volatile int *stop)
{
	while (!*stop) {
		uint64_t v = t->turn;
		if ((v & 1) != (uint64_t)me) { /* the other's turn */
			sched_yield();
			continue;
		}
		if (v && !check_block(t->block[!me], v)) {
			zt_print("FAIL: process %d saw turn %llu without its block", me,
				 (unsigned long long)v);
			_exit(1);
		}
		for (int i = 0; i < 64; i++)
			t->block[me][i] = v + 1;
		__atomic_store_n(&t->turn, v + 1, __ATOMIC_RELEASE);
	}
}

static volatile int child_never_stops;

/* The parent's turn when it is its (the number even): 1 if it took it. */
static int parent_turn(struct turns *t)
{
	uint64_t v = t->turn;
	if (v & 1) {
		sched_yield();
		return 0;
	}
	CHECK(!v || check_block(t->block[1], v), "turn %llu without the child's block",
	      (unsigned long long)v);
	for (int i = 0; i < 64; i++)
		t->block[0][i] = v + 1;
	__atomic_store_n(&t->turn, v + 1, __ATOMIC_RELEASE);
	return 1;
}

static int shmem_turns(void)
{
	struct turns *t = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (t == MAP_FAILED)
		zt_setup_fail("mmap");
	pid_t kid = SYS(fork());
	if (kid == 0) {
		signal(SIGTERM, SIG_DFL);
		take_turns(t, 1, &child_never_stops);
		_exit(1);
	}
	struct pace pace = { .warm = 500, .more = 1000 };
	while (pace_on(&pace)) {
		double end = now() + 10;
		while (!parent_turn(t))
			CHECK(now() < end, "the child no longer takes its turns (turn %llu)",
			      (unsigned long long)t->turn);
	}
	kill(kid, SIGKILL);
	int code = zt_reap(kid);
	CHECK(code == 128 + SIGKILL, "the child ended with %d", code);
	zt_pass();
}

/* ---------------------------------------------------------------- aio-churn */
/* Reads of a file submitted 8 at a time through an AIO context, their events reaped
 * in two calls (some events wait in the ring between them): every event once, every
 * buffer the file's bytes. */
static int aio_churn(void)
{
	const size_t len = 256 << 10, chunk = 8192;
	int fd = zt_make_file("aio-data", len, 44);
	unsigned char *want = malloc(len), *bufs = malloc(8 * chunk);
	zt_fill(want, len, 44);
	aio_context_t ctx = 0;
	SYS(syscall(SYS_io_setup, 32, &ctx));
	struct iocb cbs[8], *ptrs[8];
	unsigned seed = 9;
	struct pace pace = { .warm = 100, .more = 300 };
	while (pace_on(&pace)) {
		off_t at[8];
		for (int i = 0; i < 8; i++) {
			at[i] = (rand_r(&seed) % (len / chunk)) * chunk;
			memset(&cbs[i], 0, sizeof(cbs[i]));
			cbs[i].aio_fildes = fd;
			cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
			cbs[i].aio_buf = (uint64_t)(uintptr_t)(bufs + i * chunk);
			cbs[i].aio_nbytes = chunk;
			cbs[i].aio_offset = at[i];
			cbs[i].aio_data = i;
			ptrs[i] = &cbs[i];
		}
		long n = syscall(SYS_io_submit, ctx, 8, ptrs);
		CHECK(n == 8, "io_submit: %ld (%s)", n, strerror(errno));
		struct io_event ev[8];
		int seen = 0, got = 0;
		while (got < 8) {
			long k = syscall(SYS_io_getevents, ctx, got ? 8 - got : 3, 8 - got, ev, NULL);
			if (k < 0 && errno == EINTR)
				continue;
			CHECK(k > 0, "io_getevents: %ld (%s)", k, strerror(errno));
			for (long e = 0; e < k; e++) {
				int i = (int)ev[e].data;
				CHECK(i >= 0 && i < 8 && !(seen & (1 << i)), "event %d twice or unknown", i);
				seen |= 1 << i;
				CHECK(ev[e].res == (int64_t)chunk, "read %d gave %lld", i,
				      (long long)ev[e].res);
				CHECK(!memcmp(bufs + i * chunk, want + at[i], chunk),
				      "read %d at %lld: not the file's bytes", i, (long long)at[i]);
			}
			got += k;
		}
	}
	zt_pass();
}

/* ---------------------------------------------------------------- ipc-churn */
/* Two processes take turns through a SysV semaphore pair, and the one whose turn it is
 * sends the other a message with the turn's number (msgsnd), which the other reads on
 * its next turn: numbers in order, no turn lost. */
union semun_ { int val; };

static void sem_op(int sem, int num, int delta)
{
	struct sembuf op = { (unsigned short)num, (short)delta, 0 };
	while (semop(sem, &op, 1) < 0)
		if (errno != EINTR)
			zt_fail("semop %d %+d: %s", num, delta, strerror(errno));
}

struct turn_msg { long type; uint64_t n; };

static void ipc_turns(int sem, int q, int me, uint64_t *turns, int (*stop)(void))
{
	uint64_t want = me;
	while (!stop()) {
		sem_op(sem, me, -1);
		struct turn_msg m;
		if (want) {
			if (msgrcv(q, &m, sizeof(m.n), me + 1, 0) < 0)
				zt_fail("msgrcv: %s", strerror(errno));
			if (m.n != want - 1)
				zt_fail("process %d got message %llu, not %llu", me,
					(unsigned long long)m.n, (unsigned long long)(want - 1));
		}
		m.type = 2 - me;
		m.n = want;
		if (msgsnd(q, &m, sizeof(m.n), 0) < 0)
			zt_fail("msgsnd: %s", strerror(errno));
		want += 2;
		(*turns)++;
		sem_op(sem, 1 - me, 1);
	}
}

static int ipc_churn(void)
{
	int sem = SYS(semget(IPC_PRIVATE, 2, 0600));
	int q = SYS(msgget(IPC_PRIVATE, 0600));
	union semun_ one = { 1 };
	SYS(semctl(sem, 0, SETVAL, one));
	pid_t kid = SYS(fork());
	if (kid == 0) {
		uint64_t n = 0;
		signal(SIGTERM, SIG_DFL);
		ipc_turns(sem, q, 1, &n, never);
		_exit(1);
	}
	uint64_t want = 0;
	struct pace pace = { .warm = 1000, .more = 1000 };
	while (pace_on(&pace)) {
		sem_op(sem, 0, -1);
		struct turn_msg m;
		if (want) {
			CHECK(msgrcv(q, &m, sizeof(m.n), 1, 0) >= 0, "msgrcv: %s", strerror(errno));
			CHECK(m.n == want - 1, "the parent got message %llu, not %llu",
			      (unsigned long long)m.n, (unsigned long long)(want - 1));
		}
		m.type = 2;
		m.n = want;
		CHECK(msgsnd(q, &m, sizeof(m.n), 0) == 0, "msgsnd: %s", strerror(errno));
		want += 2;
		sem_op(sem, 1, 1);
	}
	kill(kid, SIGKILL);
	zt_reap(kid);
	semctl(sem, 0, IPC_RMID);
	msgctl(q, IPC_RMID, NULL);
	zt_pass();
}

/* ---------------------------------------------------------------- epoll-churn */
/* A child writes numbers into four pipes in turn; the process takes them as an epoll
 * set says they are there: each pipe's numbers in order, none lost. */
static int epoll_churn(void)
{
	int p[4][2];
	for (int i = 0; i < 4; i++)
		SYS(pipe(p[i]));
	pid_t kid = SYS(fork());
	if (kid == 0) {
		signal(SIGTERM, SIG_DFL);
		for (int i = 0; i < 4; i++)
			close(p[i][0]);
		for (uint32_t n = 0;; n++)
			for (int i = 0; i < 4; i++)
				if (write(p[i][1], &n, sizeof(n)) != sizeof(n))
					_exit(1);
	}
	int ep = SYS(epoll_create1(0));
	for (int i = 0; i < 4; i++) {
		close(p[i][1]);
		struct epoll_event e = { .events = EPOLLIN, .data.u32 = i };
		SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[i][0], &e));
	}
	uint32_t want[4] = { 0 };
	struct pace pace = { .warm = 1000, .more = 1000 };
	while (pace_on(&pace)) {
		struct epoll_event ev[4];
		int n = epoll_wait(ep, ev, 4, 5000);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "epoll_wait: %d (%s)", n, strerror(errno));
		for (int e = 0; e < n; e++) {
			int i = ev[e].data.u32;
			uint32_t buf[64];
			ssize_t got = read(p[i][0], buf, sizeof(buf));
			CHECK(got > 0, "read of pipe %d: %zd", i, got);
			/* (a number may come in two reads: keep the tail for the next) */
			static unsigned char tail[4][4];
			static int tail_len[4];
			unsigned char all[sizeof(buf) + 4];
			memcpy(all, tail[i], tail_len[i]);
			memcpy(all + tail_len[i], buf, got);
			size_t have = tail_len[i] + got, k;
			for (k = 0; k + 4 <= have; k += 4) {
				uint32_t v;
				memcpy(&v, all + k, 4);
				CHECK(v == want[i], "pipe %d gave %u, not %u", i, v, want[i]);
				want[i]++;
			}
			tail_len[i] = (int)(have - k);
			memcpy(tail[i], all + k, tail_len[i]);
		}
	}
	kill(kid, SIGKILL);
	zt_reap(kid);
	zt_pass();
}

/* ---------------------------------------------------------------- netlink-churn */
/* Questions asked every millisecond over a NETLINK_ROUTE socket (a daemon polling), each
 * answer read before the next question (as ip does): the loopback link by its index (one
 * message), and every 20th time the list of all links (an answer in several parts, to
 * its NLMSG_DONE). Every message carries its question's sequence number. (A dump that
 * finds an answer waiting is tried again: errors.TransientError.) */
static int netlink_ask(int sk, uint32_t seq, int all)
{
	static char buf[1 << 16];
	struct { struct nlmsghdr h; struct ifinfomsg i; } req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK,
		       .nlmsg_flags = NLM_F_REQUEST | (all ? NLM_F_DUMP : 0), .nlmsg_seq = seq },
		.i = { .ifi_family = AF_UNSPEC, .ifi_index = all ? 0 : 1 },
	};
	CHECK(send(sk, &req, sizeof(req), 0) == sizeof(req), "send: %s", strerror(errno));
	int parts = 0;
	for (;;) {
		ssize_t n = recv(sk, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "recv of answer %u (after %d parts): %s", seq, parts,
		      n < 0 ? strerror(errno) : "end");
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, n);
		     h = NLMSG_NEXT(h, n)) {
			CHECK(h->nlmsg_seq == seq, "a part of answer %u for question %u",
			      h->nlmsg_seq, seq);
			CHECK(h->nlmsg_type != NLMSG_ERROR, "answer %u: an error", seq);
			if (h->nlmsg_type == NLMSG_DONE)
				return parts;
			CHECK(h->nlmsg_type == RTM_NEWLINK, "answer %u: message type %d", seq,
			      h->nlmsg_type);
			parts++;
			if (!all)
				return parts;
		}
	}
}

static int netlink_churn(void)
{
	int sk = SYS(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
	struct timeval tv = { 5, 0 };
	SYS(setsockopt(sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	SYS(bind(sk, (struct sockaddr *)&sa, sizeof(sa)));
	struct pace pace = { .warm = 100, .more = 100 };
	for (uint32_t seq = 1; pace_on(&pace); seq++) {
		CHECK(netlink_ask(sk, seq, seq % 20 == 0) > 0, "answer %u lists no link", seq);
		usleep(1000);
	}
	zt_pass();
}

/* ---------------------------------------------------------------- rseq-churn */
/* Three threads add 1 to the counter of the CPU they run on in an rseq critical section
 * (load, a pause, store), counting what they committed; a thread stopped in the middle
 * of one must come back to its abort handler (the kernel moves it there on its way back
 * to user space while it is registered): resumed in the middle, it would store a
 * stale count over another thread's. The counters add up to the commits. */
#define RSEQ_THREADS 3
static volatile uint64_t per_cpu[256][8];
static volatile int rseq_stop;
static volatile unsigned long rseq_commits[RSEQ_THREADS], rseq_aborts[RSEQ_THREADS];

static struct rseq *rseq_area(void)
{
	return (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
}

/* 0 committed, 1 aborted (preempted, migrated, signalled, stopped in the middle). */
static int per_cpu_add(struct rseq *rs)
{
	unsigned cpu = rs->cpu_id_start;
	if (cpu >= 256)
		zt_fail("CPU %u", cpu);
	asm goto(".pushsection __rseq_cs, \"aw\"\n\t"
		 ".balign 32\n\t"
		 "3: .long 0, 0\n\t"
		 ".quad 1f, (2f - 1f), 4f\n\t"
		 ".popsection\n\t"
		 "leaq 3b(%%rip), %%rax\n\t"
		 "movq %%rax, %[cs]\n\t"
		 "1:\n\t"
		 "cmpl %[cpu], %[cpu_id]\n\t"
		 "jnz 4f\n\t"
		 "movq (%[at]), %%rax\n\t"
		 "addq $1, %%rax\n\t"
		 ".rept 40\n\tpause\n\t.endr\n\t"
		 "movq %%rax, (%[at])\n\t"
		 "2:\n\t"
		 ".pushsection __rseq_failure, \"ax\"\n\t"
		 ".long 0x53053053\n\t"
		 "4:\n\t"
		 "jmp %l[aborted]\n\t"
		 ".popsection\n\t"
		 : : [cs] "m" (rs->rseq_cs), [cpu_id] "m" (rs->cpu_id), [cpu] "r" (cpu),
		     [at] "r" (&per_cpu[cpu][0])
		 : "rax", "memory", "cc" : aborted);
	return 0;
aborted:
	return 1;
}

static void *rseq_adder(void *arg)
{
	int me = (int)(uintptr_t)arg;
	struct rseq *rs = rseq_area();
	while (!rseq_stop) {
		if (per_cpu_add(rs))
			rseq_aborts[me]++;
		else
			rseq_commits[me]++;
	}
	return NULL;
}

static unsigned long rseq_total(void)
{
	unsigned long n = 0;
	for (int i = 0; i < RSEQ_THREADS; i++)
		n += rseq_commits[i];
	return n;
}

static int rseq_churn(void)
{
	if (__rseq_size == 0)
		zt_setup_fail("glibc did not register rseq");
	pthread_t t[RSEQ_THREADS];
	for (int i = 0; i < RSEQ_THREADS; i++)
		SYS(-pthread_create(&t[i], NULL, rseq_adder, (void *)(uintptr_t)i));
	while (rseq_total() < 10000)
		usleep(1000);
	zt_ready();
	zt_wait();
	unsigned long from = rseq_total();
	double end = now() + 10;
	while (rseq_total() < from + 100000 && now() < end)
		usleep(1000);
	rseq_stop = 1;
	for (int i = 0; i < RSEQ_THREADS; i++)
		pthread_join(t[i], NULL);
	CHECK(rseq_total() >= from + 100000, "the threads stopped adding (%lu)", rseq_total());
	uint64_t sum = 0;
	for (int c = 0; c < 256; c++)
		sum += per_cpu[c][0];
	CHECK(sum == rseq_total(), "the counters add up to %llu, the threads committed %lu",
	      (unsigned long long)sum, rseq_total());
	zt_pass();
}

/* rseq-spin: two threads spin inside an rseq critical section until told to leave it,
 * checking as they spin that their rseq area still names the section: the kernel sends
 * a thread preempted there to the abort handler, and only something that made it
 * forget the section (ckpt's injected calls, returning to user space elsewhere) would
 * let it spin on with the section no longer named (CRIU's rseq03). */
static volatile int spin_stay = 1, spin_stop;
static volatile unsigned long spin_aborts[2], spin_forgotten[2];

/* 0: left the section when told; 1: aborted; 2: found it forgotten. */
static int spin_in_section(struct rseq *rs)
{
	asm goto(".pushsection __rseq_cs, \"aw\"\n\t"
		 ".balign 32\n\t"
		 "5: .long 0, 0\n\t"
		 ".quad 1f, (2f - 1f), 4f\n\t"
		 ".popsection\n\t"
		 "leaq 5b(%%rip), %%rax\n\t"
		 "movq %%rax, %[cs]\n\t"
		 "1:\n\t"
		 "cmpq %%rax, %[cs]\n\t"
		 "jne %l[forgotten]\n\t"
		 "cmpl $0, %[stay]\n\t"
		 "jne 1b\n\t"
		 "2:\n\t"
		 ".pushsection __rseq_failure, \"ax\"\n\t"
		 ".long 0x53053053\n\t"
		 "4:\n\t"
		 "jmp %l[aborted]\n\t"
		 ".popsection\n\t"
		 : : [cs] "m" (rs->rseq_cs), [stay] "m" (spin_stay)
		 : "rax", "memory", "cc" : forgotten, aborted);
	return 0;
forgotten:
	return 2;
aborted:
	return 1;
}

static void *spinner(void *arg)
{
	int me = (int)(uintptr_t)arg;
	struct rseq *rs = rseq_area();
	while (!spin_stop) {
		int r = spin_in_section(rs);
		if (r == 1)
			spin_aborts[me]++;
		else if (r == 2)
			spin_forgotten[me]++;
	}
	return NULL;
}

static int rseq_spin(void)
{
	if (__rseq_size == 0)
		zt_setup_fail("glibc did not register rseq");
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		SYS(-pthread_create(&t[i], NULL, spinner, (void *)(uintptr_t)i));
	while (spin_aborts[0] + spin_aborts[1] < 10)
		usleep(1000);
	zt_ready();
	zt_wait();
	unsigned long from = spin_aborts[0] + spin_aborts[1];
	double end = now() + 10;
	while (spin_aborts[0] + spin_aborts[1] < from + 10 && now() < end)
		usleep(1000);
	spin_stop = 1;
	spin_stay = 0;
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHECK(!spin_forgotten[0] && !spin_forgotten[1], "a thread spun on in a critical "
	      "section its rseq area no longer named (%lu, %lu times)", spin_forgotten[0],
	      spin_forgotten[1]);
	CHECK(spin_aborts[0] + spin_aborts[1] >= from + 10, "the threads were no longer "
	      "aborted out of the section (%lu)", spin_aborts[0] + spin_aborts[1] - from);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "thread-bomb")) return thread_bomb();
	if (!strcmp(m, "fork-churn")) return fork_churn();
	if (!strcmp(m, "maps-churn")) return maps_churn();
	if (!strcmp(m, "pipe-ring")) return ring("pipe");
	if (!strcmp(m, "fifo-ring")) return ring("fifo");
	if (!strcmp(m, "socket-ring")) return ring("socket");
	if (!strcmp(m, "pipe-shared")) return pipe_shared();
	if (!strcmp(m, "file-read")) return file_read();
	if (!strcmp(m, "shmem-turns")) return shmem_turns();
	if (!strcmp(m, "aio-churn")) return aio_churn();
	if (!strcmp(m, "ipc-churn")) return ipc_churn();
	if (!strcmp(m, "epoll-churn")) return epoll_churn();
	if (!strcmp(m, "netlink-churn")) return netlink_churn();
	if (!strcmp(m, "rseq-churn")) return rseq_churn();
	if (!strcmp(m, "rseq-spin")) return rseq_spin();
	zt_setup_fail("unknown mode %s", m);
}
