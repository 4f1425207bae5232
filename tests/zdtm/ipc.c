/* IPC and kernel-kept memory: SysV shared memory, semaphores and message queues,
 * POSIX semaphores and message queues, AIO rings, io_uring, userfaultfd. */
#include "zdtm.h"
#include <linux/aio_abi.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <linux/userfaultfd.h>
#include <mqueue.h>
#include <pthread.h>
#include <semaphore.h>
#include <sys/ioctl.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

static int sysv_shm(int detached_child)
{
	int id = SYS(shmget(IPC_PRIVATE, 5000, IPC_CREAT | 0600));
	char *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		zt_setup_fail("shmat");
	zt_fill(p, 5000, 90);
	char *ro = shmat(id, NULL, SHM_RDONLY);
	shmctl(id, IPC_RMID, NULL); /* gone once unmapped */
	pid_t c = 0;
	if (detached_child) {
		c = SYS(fork());
		if (c == 0) {
			zt_wait();
			_exit(zt_diff(p, 5000, 90) < 0 ? 0 : 1);
		}
	}
	zt_ready();
	zt_wait();
	CHECK(zt_diff(p, 5000, 90) < 0 && zt_diff(ro, 5000, 90) < 0, "SysV shm data");
	p[0] = 'S';
	CHECK(ro[0] == 'S', "the two attachments are no longer one segment");
	if (c) {
		p[0] = (char)90;
		zt_children_verdict(&c, 1);
	}
	zt_pass();
}

static int sysv_sem_msg(int undo)
{
	int sem = SYS(semget(IPC_PRIVATE, 3, IPC_CREAT | 0600));
	unsigned short vals[3] = { 4, 0, 9 };
	SYS(semctl(sem, 0, SETALL, vals));
	struct sembuf op = { 1, 2, undo ? SEM_UNDO : 0 };
	SYS(semop(sem, &op, 1));
	int q = SYS(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
	struct { long type; char text[8]; } msg = { 7, "queued" };
	SYS(msgsnd(q, &msg, 7, 0));
	zt_ready();
	zt_wait();
	unsigned short now[3];
	SYS(semctl(sem, 0, GETALL, now));
	CHECK(now[0] == 4 && now[1] == 2 && now[2] == 9, "semaphores %d %d %d", now[0], now[1], now[2]);
	CHECK(msgrcv(q, &msg, 8, 7, IPC_NOWAIT) == 7 && !strcmp(msg.text, "queued"), "message");
	semctl(sem, 0, IPC_RMID);
	msgctl(q, IPC_RMID, NULL);
	zt_pass();
}

static int posix_sem(void)
{
	char name[64];
	snprintf(name, sizeof(name), "/zdtm-sem-%d", getpid());
	sem_t *s = sem_open(name, O_CREAT | O_EXCL, 0600, 3);
	if (s == SEM_FAILED)
		zt_setup_fail("sem_open");
	sem_wait(s);
	sem_t *shared = mmap(NULL, sizeof(sem_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	sem_init(shared, 1, 5);
	zt_ready();
	zt_wait();
	int v = -1, w = -1;
	sem_getvalue(s, &v);
	sem_getvalue(shared, &w);
	CHECK(v == 2 && w == 5, "semaphore values %d %d", v, w);
	/* The name still leads to the mapped semaphore, and the mapping shows the
	 * temporary name sem_open removed. */
	sem_t *again = sem_open(name, 0);
	CHECK(again != SEM_FAILED, "sem_open of %s again", name);
	sem_post(again);
	sem_getvalue(s, &v);
	CHECK(v == 3, "the name leads to another semaphore (%d)", v);
	char line[512];
	int deleted = 0;
	FILE *maps = fopen("/proc/self/maps", "r");
	while (maps && fgets(line, sizeof(line), maps))
		if (strstr(line, "/dev/shm/sem.") && strstr(line, " (deleted)"))
			deleted = 1;
	if (maps)
		fclose(maps);
	CHECK(deleted, "no mapping of a removed /dev/shm/sem.* name");
	sem_unlink(name);
	zt_pass();
}

/* A new queue of 4 messages of 32 bytes, named /zdtm-KIND-PID (in NAME). */
static mqd_t new_queue(char *name, size_t size, const char *kind)
{
	snprintf(name, size, "/zdtm-%s-%d", kind, getpid());
	struct mq_attr at = { .mq_maxmsg = 4, .mq_msgsize = 32 };
	mqd_t q = mq_open(name, O_CREAT | O_RDWR | O_NONBLOCK, 0600, &at);
	if (q < 0)
		zt_setup_fail("mq_open");
	return q;
}

static volatile sig_atomic_t mq_signalled;
static void on_mq(int sig) { (void)sig; mq_signalled = 1; }

/* A queue with a notification registered (mq_notify): refused by design (the
 * registration's signal value cannot be read back); the process runs on and is
 * notified still. */
static int posix_mq_notify(void)
{
	char name[64];
	mqd_t q = new_queue(name, sizeof(name), "mqn");
	signal(SIGUSR1, on_mq);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGUSR1;
	SYS(mq_notify(q, &ev));
	zt_ready();
	zt_wait();
	SYS(mq_send(q, "note", 4, 0));
	for (int i = 0; i < 500 && !mq_signalled; i++)
		usleep(10000);
	mq_unlink(name);
	CHECK(mq_signalled, "no notification");
	zt_pass();
}

static int posix_mq(void)
{
	char name[64];
	mqd_t q = new_queue(name, sizeof(name), "mq");
	SYS(mq_send(q, "hello mq", 8, 3));
	zt_ready();
	zt_wait();
	char buf[32];
	unsigned prio;
	ssize_t n = mq_receive(q, buf, sizeof(buf), &prio);
	mq_unlink(name);
	CHECK(n == 8 && prio == 3 && !memcmp(buf, "hello mq", 8), "message %zd", n);
	zt_pass();
}

static int aio(void)
{
	aio_context_t ctx = 0;
	SYS(syscall(SYS_io_setup, 16, &ctx));
	int fd = SYS(open("aio.file", O_CREAT | O_RDWR | O_TRUNC, 0600));
	SYS(write(fd, "aiodata", 7));
	char buf[8] = "";
	struct iocb cb = { .aio_fildes = fd, .aio_lio_opcode = IOCB_CMD_PREAD,
			   .aio_buf = (uint64_t)(uintptr_t)buf, .aio_nbytes = 7, .aio_offset = 0 };
	struct iocb *cbs[1] = { &cb };
	SYS(syscall(SYS_io_submit, ctx, 1, cbs));
	struct io_event ev;
	SYS(syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL));
	zt_ready();
	zt_wait();
	memset(buf, 0, sizeof(buf));
	CHECK(syscall(SYS_io_submit, ctx, 1, cbs) == 1, "io_submit on the restored context: %s",
	      strerror(errno));
	CHECK(syscall(SYS_io_getevents, ctx, 1, 1, &ev, NULL) == 1 && !memcmp(buf, "aiodata", 7),
	      "AIO read");
	zt_pass();
}

static int io_uring(void)
{
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	int fd = SYS(syscall(SYS_io_uring_setup, 4, &p));
	(void)fd;
	zt_ready();
	zt_wait();
	zt_pass();
}

static int uffd(void)
{
	int fd = SYS(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
	struct uffdio_api api = { .api = UFFD_API };
	SYS(ioctl(fd, UFFDIO_API, &api));
	zt_ready();
	zt_wait();
	zt_pass();
}

/* Processes asleep on objects in shared anonymous memory across the dump (prefork
 * servers' and databases' locks): a raw shared futex, a process-shared POSIX
 * semaphore, a process-shared mutex and condition variable. After the restore none
 * woke; each wakes for its parent's post, so the memory is still one object. */
static int shared_waits(void)
{
	struct shared {
		int word, flag;
		sem_t sem;
		pthread_mutex_t mu;
		pthread_cond_t cv;
	} *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		zt_setup_fail("mmap");
	SYS(sem_init(&sh->sem, 1, 0));
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_condattr_init(&ca);
	pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
	SYS(-pthread_mutex_init(&sh->mu, &ma));
	SYS(-pthread_cond_init(&sh->cv, &ca));
	pid_t kids[3];
	for (int k = 0; k < 3; k++) {
		kids[k] = SYS(fork());
		if (kids[k])
			continue;
		int ok = 0;
		if (k == 0) {
			while (__atomic_load_n(&sh->word, __ATOMIC_SEQ_CST) == 0)
				syscall(SYS_futex, &sh->word, FUTEX_WAIT, 0, NULL, NULL, 0);
			ok = 1;
		} else if (k == 1) {
			ok = sem_wait(&sh->sem) == 0;
		} else {
			pthread_mutex_lock(&sh->mu);
			while (!sh->flag)
				pthread_cond_wait(&sh->cv, &sh->mu);
			ok = sh->flag == 1;
			pthread_mutex_unlock(&sh->mu);
		}
		_exit(ok ? 0 : 1);
	}
	usleep(300000);
	zt_ready();
	zt_wait();
	usleep(100000);
	for (int k = 0; k < 3; k++)
		CHECK(waitpid(kids[k], NULL, WNOHANG) == 0, "waiter %d woke before its post", k);
	__atomic_store_n(&sh->word, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &sh->word, FUTEX_WAKE, 1, NULL, NULL, 0);
	SYS(sem_post(&sh->sem));
	pthread_mutex_lock(&sh->mu);
	sh->flag = 1;
	pthread_cond_broadcast(&sh->cv);
	pthread_mutex_unlock(&sh->mu);
	alarm(30);  /* a waiter that never wakes */
	for (int k = 0; k < 3; k++)
		CHECK(zt_reap(kids[k]) == 0, "waiter %d", k);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "sysv-shm")) return sysv_shm(0);
	if (!strcmp(m, "sysv-shm-child")) return sysv_shm(1);
	if (!strcmp(m, "sysv-sem-msg")) return sysv_sem_msg(0);
	if (!strcmp(m, "sysv-sem-undo")) return sysv_sem_msg(1);
	if (!strcmp(m, "posix-sem")) return posix_sem();
	if (!strcmp(m, "shared-waits")) return shared_waits();
	if (!strcmp(m, "posix-mq")) return posix_mq();
	if (!strcmp(m, "posix-mq-notify")) return posix_mq_notify();
	if (!strcmp(m, "aio")) return aio();
	if (!strcmp(m, "io-uring")) return io_uring();
	if (!strcmp(m, "uffd")) return uffd();
	zt_setup_fail("unknown mode %s", m);
}
