/* Files: regular files (offsets, flags, sharing, gaps in the table), deleted files
 * and directories, FIFOs, pipes, cwd and chroot, /proc files, O_PATH, devices. */
#include "zdtm.h"
#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

#define PG 4096

static int fd_flags(int fd) { return fcntl(fd, F_GETFL) & ~O_LARGEFILE; }

static void check_content(int fd, off_t off, size_t len, unsigned seed, const char *what)
{
	char *buf = malloc(len), *want = malloc(len + off);
	zt_fill(want, len + off, seed);
	CHECK(pread(fd, buf, len, off) == (ssize_t)len, "%s: short read", what);
	CHECK(!memcmp(buf, want + off, len), "%s: content differs", what);
	free(buf);
	free(want);
}

/* fds with gaps and high numbers, their flags and offsets, dups sharing an offset,
 * an O_APPEND writer, close-on-exec per fd. */
static int fd_table(void)
{
	int f = zt_make_file("a.file", 3 * PG, 1);
	SYS(lseek(f, 1234, SEEK_SET));
	int hi = SYS(dup2(f, 1000));
	int cx = SYS(fcntl(f, F_DUPFD_CLOEXEC, 200));
	int ro = SYS(open("a.file", O_RDONLY | O_NONBLOCK | O_NOATIME));
	SYS(lseek(ro, 77, SEEK_SET));
	int ap = SYS(open("a.file", O_WRONLY | O_APPEND));
	int ex = SYS(open("a.file", O_RDONLY | O_CLOEXEC));
	close(zt_make_file("b.file", 10, 2));
	int wr = SYS(open("b.file", O_WRONLY));
	SYS(lseek(wr, 5, SEEK_SET));
	int flags[6] = { fd_flags(f), fd_flags(ro), fd_flags(ap), fd_flags(ex), fd_flags(wr), fd_flags(hi) };
	zt_ready();
	zt_wait();
	CHECK(lseek(f, 0, SEEK_CUR) == 1234 && lseek(hi, 0, SEEK_CUR) == 1234, "shared offset");
	SYS(lseek(hi, 99, SEEK_SET));
	CHECK(lseek(f, 0, SEEK_CUR) == 99 && lseek(cx, 0, SEEK_CUR) == 99, "dup'ed fds no longer share an offset");
	CHECK(lseek(ro, 0, SEEK_CUR) == 77, "offset of a second open");
	int now[6] = { fd_flags(f), fd_flags(ro), fd_flags(ap), fd_flags(ex), fd_flags(wr), fd_flags(hi) };
	for (int i = 0; i < 6; i++)
		CHECK(now[i] == flags[i], "file status flags of #%d: %o, were %o", i, now[i], flags[i]);
	CHECK(fcntl(cx, F_GETFD) == FD_CLOEXEC && fcntl(ex, F_GETFD) == FD_CLOEXEC, "close-on-exec lost");
	CHECK(fcntl(f, F_GETFD) == 0 && fcntl(hi, F_GETFD) == 0, "close-on-exec gained");
	CHECK(fcntl(5, F_GETFD) < 0 || 5 == f || 5 == ro || 5 == ap || 5 == ex || 5 == wr,
	      "an fd appeared");
	SYS(write(ap, "END", 3));
	CHECK(lseek(ap, 0, SEEK_CUR) == 3 * PG + 3, "O_APPEND writer did not append");
	check_content(f, 0, 3 * PG, 1, "a.file");
	zt_pass();
}

/* Data written before the dump is there, writes and reads go on at their offsets. */
static int write_read(void)
{
	int w = SYS(open("wr.file", O_RDWR | O_CREAT | O_TRUNC, 0600));
	char *buf = malloc(8 * PG);
	zt_fill(buf, 8 * PG, 5);
	SYS(write(w, buf, 5 * PG));
	int r = SYS(open("wr.file", O_RDONLY));
	char tmp[2 * PG];
	SYS(read(r, tmp, PG + 10));
	zt_ready();
	zt_wait();
	SYS(write(w, buf + 5 * PG, 3 * PG));
	CHECK(read(r, tmp, PG - 10) == PG - 10 && !memcmp(tmp, buf + PG + 10, PG - 10), "reader's data");
	check_content(w, 0, 8 * PG, 5, "written file");
	zt_pass();
}

/* The file keeps its mode, owner, size and times; a second name (hard link) too. */
static int file_attr(void)
{
	int fd = zt_make_file("attr.file", 1000, 3);
	SYS(fchmod(fd, 04751));
	SYS(fchown(fd, 1234, 5678));
	SYS(link("attr.file", "attr.link"));
	struct timespec ts[2] = { { 1000000, 5 }, { 2000000, 7 } };
	SYS(futimens(fd, ts));
	struct stat a, b;
	SYS(fstat(fd, &a));
	zt_ready();
	zt_wait();
	SYS(fstat(fd, &b));
	CHECK(a.st_mode == b.st_mode && a.st_uid == b.st_uid && a.st_gid == b.st_gid, "mode or owner");
	CHECK(a.st_size == b.st_size && a.st_nlink == b.st_nlink && b.st_nlink == 2, "size or links");
	CHECK(a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec, "mtime");
	CHECK(a.st_ino == b.st_ino, "another file");
	zt_pass();
}

/* Deleted files: opened and unlinked (content, size, holes), a new file under the old
 * name, one written after the unlink, two fds, a mapping only. */
static int unlinked(int variant)
{
	int fd = zt_make_file("gone.file", 5 * PG + 17, 8), fd2 = -1;
	char *map = NULL;
	if (variant == 1)
		fd2 = SYS(open("gone.file", O_RDONLY));
	if (variant == 4) {
		map = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (map == MAP_FAILED)
			zt_setup_fail("mmap");
	}
	SYS(unlink("gone.file"));
	if (variant == 2) /* another file takes the name */
		close(zt_make_file("gone.file", 100, 9));
	if (variant == 3)
		SYS(pwrite(fd, "after", 5, 3));
	if (variant == 4) {
		map[0] = 'M';
		close(fd);
	}
	struct stat a, b;
	if (variant != 4)
		SYS(fstat(fd, &a));
	zt_ready();
	zt_wait();
	if (variant == 4) {
		CHECK(map[0] == 'M', "mapping of a deleted file");
		char want[PG];
		zt_fill(want, PG, 8);
		CHECK(!memcmp(map + 1, want + 1, PG - 1), "mapping's content");
		zt_pass();
	}
	SYS(fstat(fd, &b));
	CHECK(b.st_nlink == 0 && a.st_size == b.st_size && a.st_mode == b.st_mode, "deleted file's stat");
	if (variant == 3) {
		char buf[8];
		SYS(pread(fd, buf, 5, 3));
		CHECK(!memcmp(buf, "after", 5), "write after the unlink lost");
	} else
		check_content(fd, 0, 5 * PG + 17, 8, "deleted file");
	if (variant == 1)
		check_content(fd2, 0, 5 * PG + 17, 8, "second fd");
	if (variant == 2) {
		struct stat c;
		SYS(stat("gone.file", &c));
		CHECK(c.st_size == 100 && c.st_ino != b.st_ino, "the new file under the name was touched");
	}
	char link[512], path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	/* where the name is taken the file comes back under a hidden name (documented) */
	CHECK(strstr(link, variant == 2 ? " (deleted)" : "gone.file (deleted)"),
	      "not shown deleted: %s", link);
	zt_pass();
}

/* A deleted sparse file: holes at the head, in the middle, at the tail; a large one. */
static int ghost_holes(int large)
{
	int fd = SYS(open("holes.file", O_RDWR | O_CREAT | O_TRUNC, 0600));
	off_t size = large ? (off_t)3 << 30 : 64 * PG;
	off_t data_at[3] = { 8 * PG, 20 * PG, size - 20 * PG };
	for (int i = 0; i < 3; i++) {
		char buf[2 * PG];
		zt_fill(buf, sizeof(buf), 40 + i);
		SYS(pwrite(fd, buf, sizeof(buf), data_at[i]));
	}
	SYS(ftruncate(fd, size));
	SYS(unlink("holes.file"));
	zt_ready();
	zt_wait();
	struct stat st;
	SYS(fstat(fd, &st));
	CHECK(st.st_size == size, "size %lld", (long long)st.st_size);
	for (int i = 0; i < 3; i++) {
		char want[2 * PG], got[2 * PG];
		zt_fill(want, sizeof(want), 40 + i);
		CHECK(pread(fd, got, sizeof(got), data_at[i]) == sizeof(got), "short read");
		CHECK(!memcmp(want, got, sizeof(got)), "data between holes (#%d) differs", i);
	}
	CHECK(lseek(fd, 0, SEEK_DATA) == data_at[0], "a hole at the head was filled");
	CHECK(lseek(fd, data_at[0], SEEK_HOLE) == data_at[0] + 2 * PG, "a hole in the middle was filled");
	CHECK(st.st_blocks * 512 <= 64 * PG, "holes filled: %lld blocks", (long long)st.st_blocks);
	zt_pass();
}

/* An fd on a removed directory, and a working directory that was removed. */
static int removed_dir(int cwd)
{
	SYS(mkdir("dir.gone", 0751));
	int fd = SYS(open("dir.gone", O_RDONLY | O_DIRECTORY));
	if (cwd)
		SYS(chdir("dir.gone"));
	SYS(rmdir(cwd ? "../dir.gone" : "dir.gone"));
	struct stat a, b;
	SYS(fstat(fd, &a));
	zt_ready();
	zt_wait();
	SYS(fstat(fd, &b));
	CHECK(a.st_mode == b.st_mode && b.st_nlink == 0, "removed directory: mode %o links %ld",
	      b.st_mode, (long)b.st_nlink);
	if (cwd) {
		char buf[512];
		CHECK(getcwd(buf, sizeof(buf)) == NULL && errno == ENOENT, "cwd not removed");
		SYS(stat(".", &b));
		CHECK(b.st_nlink == 0, "cwd is another directory");
	}
	zt_pass();
}

static int cwd_check(void)
{
	char before[512], after[512];
	SYS(mkdir("sub", 0755));
	SYS(mkdir("sub/deeper dir", 0755));
	SYS(chdir("sub/deeper dir"));
	SYS((long)getcwd(before, sizeof(before)) ? 0 : -1);
	pid_t c = SYS(fork());
	if (c == 0) {
		SYS(chdir(".."));
		char mine[512];
		getcwd(mine, sizeof(mine));
		zt_wait();
		char now[512];
		_exit(getcwd(now, sizeof(now)) && !strcmp(now, mine) ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	CHECK(getcwd(after, sizeof(after)) && !strcmp(before, after), "cwd %s, was %s", after, before);
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* A process in a chroot, with a file open inside and one outside it. */
static int chrooted(void)
{
	SYS(mkdir("root", 0755));
	SYS(mkdir("root/inner", 0755));
	int inside = zt_make_file("root/inner/in.file", 100, 4);
	int outside = zt_make_file("out.file", 200, 5);
	SYS(chroot("root"));
	SYS(chdir("/inner"));
	zt_ready();
	zt_wait();
	struct stat st;
	CHECK(stat("/inner/in.file", &st) == 0 && st.st_size == 100, "not in the chroot");
	CHECK(access("/out.file", F_OK) < 0, "out of the chroot");
	check_content(inside, 0, 100, 4, "file inside");
	check_content(outside, 0, 200, 5, "file outside");
	char buf[64];
	CHECK(getcwd(buf, sizeof(buf)) && !strcmp(buf, "/inner"), "cwd %s", buf);
	zt_pass();
}

/* FIFOs: read-write, read-only and write-only ends (with bytes in them), deleted. */
static int fifos(int variant)
{
	SYS(mkfifo("the.fifo", 0640));
	int rw = -1, r = -1, w = -1;
	if (variant == 0) {
		rw = SYS(open("the.fifo", O_RDWR));
		SYS(write(rw, "hello fifo", 10));
	} else {
		r = SYS(open("the.fifo", O_RDONLY | O_NONBLOCK));
		w = SYS(open("the.fifo", O_WRONLY));
		SYS(write(w, "0123456789", 10));
		if (variant == 1) { close(w); w = -1; } /* read end alone, bytes buffered */
		if (variant == 2) { /* write end alone */
			int keep = SYS(open("the.fifo", O_RDWR)); /* holds the data */
			char x[10];
			SYS(read(r, x, 10));
			close(r);
			r = -1;
			close(keep);
		}
	}
	if (variant == 3 || variant == 4)
		SYS(unlink("the.fifo"));
	if (variant == 4) { close(w); w = -1; }
	zt_ready();
	zt_wait();
	char buf[16] = "";
	if (variant == 0) {
		CHECK(read(rw, buf, 10) == 10 && !memcmp(buf, "hello fifo", 10), "bytes in the FIFO");
	} else if (r >= 0) {
		CHECK(read(r, buf, 10) == 10 && !memcmp(buf, "0123456789", 10), "bytes in the FIFO");
	}
	if (w >= 0) {
		if (r < 0) {
			char path[64];
			snprintf(path, sizeof(path), "/proc/self/fd/%d", w);
			r = SYS(open(path, O_RDONLY | O_NONBLOCK));
		}
		SYS(write(w, "more", 4));
		CHECK(read(r, buf, 4) == 4 && !memcmp(buf, "more", 4), "FIFO no longer connects");
	}
	zt_pass();
}

/* A FIFO opened by two processes, one reading one writing, bytes in between. */
static int fifo_pair(void)
{
	SYS(mkfifo("pair.fifo", 0600));
	pid_t c = SYS(fork());
	if (c == 0) {
		int w = SYS(open("pair.fifo", O_WRONLY));
		SYS(write(w, "from child", 10));
		zt_wait();
		_exit(write(w, "again", 5) == 5 ? 0 : 1);
	}
	int r = SYS(open("pair.fifo", O_RDONLY));
	char buf[16];
	while (1) { /* wait for the bytes to be there, unread */
		int n;
		if (ioctl(r, FIONREAD, &n) == 0 && n == 10)
			break;
		usleep(1000);
	}
	zt_ready();
	zt_wait();
	CHECK(read(r, buf, 10) == 10 && !memcmp(buf, "from child", 10), "bytes in the FIFO");
	kill(c, SIGTERM);
	CHECK(read(r, buf, 5) == 5 && !memcmp(buf, "again", 5), "the writer's next bytes");
	CHECK(zt_reap(c) == 0, "writer");
	zt_pass();
}

/* Pipes: between processes with bytes in them, a big buffer, flags of each end,
 * a pipe both ends of which one process holds, an end shared by two processes. */
static int pipes(int variant)
{
	int p[2];
	SYS(pipe2(p, variant == 2 ? O_NONBLOCK : 0));
	if (variant == 1) {
		SYS(fcntl(p[1], F_SETPIPE_SZ, 1 << 20));
		char *big = malloc(600000);
		zt_fill(big, 600000, 33);
		SYS(fcntl(p[1], F_SETFL, O_NONBLOCK));
		size_t done = 0;
		while (done < 600000) {
			ssize_t n = write(p[1], big + done, 600000 - done);
			if (n <= 0)
				zt_setup_fail("fill the pipe");
			done += n;
		}
		SYS(fcntl(p[1], F_SETFL, 0));
		zt_ready();
		zt_wait();
		CHECK(fcntl(p[1], F_GETPIPE_SZ) == 1 << 20, "pipe size %d", fcntl(p[1], F_GETPIPE_SZ));
		char *back = malloc(600000);
		size_t got = 0;
		while (got < 600000) {
			ssize_t n = read(p[0], back + got, 600000 - got);
			CHECK(n > 0, "pipe ran dry at %zu", got);
			got += n;
		}
		CHECK(!memcmp(big, back, 600000), "pipe data differs");
		zt_pass();
	}
	if (variant == 3)
		SYS(pipe2(p, O_DIRECT)); /* packet mode: each write a message */
	pid_t c = SYS(fork());
	if (c == 0) {
		close(p[0]);
		SYS(write(p[1], "abc", 3));
		SYS(write(p[1], "defg", 4));
		zt_wait();
		_exit(write(p[1], "X", 1) == 1 ? 0 : 1);
	}
	int fl = fcntl(p[0], F_GETFL);
	while (1) {
		int n;
		if (ioctl(p[0], FIONREAD, &n) == 0 && n == 7)
			break;
		usleep(1000);
	}
	zt_ready();
	zt_wait();
	CHECK(fcntl(p[0], F_GETFL) == fl, "flags of the read end %o, were %o", fcntl(p[0], F_GETFL), fl);
	char buf[8] = "";
	if (variant == 3) {
		CHECK(read(p[0], buf, 8) == 3 && !memcmp(buf, "abc", 3), "packet 1: %s", buf);
		CHECK(read(p[0], buf, 8) == 4 && !memcmp(buf, "defg", 4), "packet 2");
	} else
		CHECK(read(p[0], buf, 7) == 7 && !memcmp(buf, "abcdefg", 7), "pipe bytes %s", buf);
	kill(c, SIGTERM);
	if (variant == 2) {
		int fl2 = fcntl(p[0], F_GETFL);
		fcntl(p[0], F_SETFL, fl2 & ~O_NONBLOCK);
	}
	CHECK(read(p[0], buf, 1) == 1 && buf[0] == 'X', "the writer's next byte");
	CHECK(zt_reap(c) == 0, "writer");
	zt_pass();
}

/* O_ASYNC on a pipe: its owner and signal (F_SETOWN, F_SETSIG) still deliver. */
static volatile int sigio_fd = -1;
static void on_io(int s, siginfo_t *si, void *uc) { (void)s; (void)uc; sigio_fd = si->si_fd; }

static int file_fown(void)
{
	int p[2];
	SYS(pipe(p));
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_io;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGRTMIN + 2, &sa, NULL);
	SYS(fcntl(p[0], F_SETOWN, getpid()));
	SYS(fcntl(p[0], F_SETSIG, SIGRTMIN + 2));
	SYS(fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK));
	zt_ready();
	zt_wait();
	CHECK(fcntl(p[0], F_GETOWN) == getpid(), "owner %d", fcntl(p[0], F_GETOWN));
	CHECK(fcntl(p[0], F_GETSIG) == SIGRTMIN + 2, "signal %d", fcntl(p[0], F_GETSIG));
	SYS(write(p[1], "x", 1));
	for (int i = 0; i < 1000 && sigio_fd < 0; i++)
		usleep(1000);
	CHECK(sigio_fd == p[0], "no SIGIO-style signal for the fd (%d)", sigio_fd);
	zt_pass();
}

/* /proc files: of this process, of a child, folders; names the restored processes. */
static int proc_files(int child)
{
	pid_t c = 0;
	if (child) {
		c = SYS(fork());
		if (c == 0) {
			zt_wait();
			_exit(0);
		}
	}
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", child ? c : getpid());
	int stat_fd = SYS(open(path, O_RDONLY));
	snprintf(path, sizeof(path), "/proc/%d", child ? c : getpid());
	int dir_fd = SYS(open(path, O_RDONLY | O_DIRECTORY));
	int self_fd = SYS(open("/proc/self/status", O_RDONLY));
	zt_ready();
	zt_wait();
	char buf[512];
	ssize_t n = pread(stat_fd, buf, sizeof(buf) - 1, 0);
	CHECK(n > 0, "read the stat file");
	buf[n] = 0;
	CHECK(atoi(buf) == (child ? c : getpid()), "stat file of another process: %s", buf);
	int in = openat(dir_fd, "comm", O_RDONLY);
	CHECK(in >= 0, "the /proc folder fd is stale");
	n = pread(self_fd, buf, sizeof(buf) - 1, 0);
	CHECK(n > 0, "read status");
	if (child)
		zt_children_verdict(&c, 1);
	zt_pass();
}

/* An fd on /proc/1/... (outside the tree: refused), one on a process reaped already,
 * a working directory in /proc of a dead process. */
static int proc_outside(int what)
{
	int keep = -1;
	if (what == 0)
		keep = SYS(open("/proc/1/status", O_RDONLY));
	else {
		pid_t c = SYS(fork());
		if (c == 0)
			_exit(0);
		char path[64];
		snprintf(path, sizeof(path), "/proc/%d", c);
		keep = SYS(open(path, O_RDONLY | O_DIRECTORY));
		if (what == 2)
			SYS(fchdir(keep));
		zt_reap(c);
	}
	zt_ready();
	zt_wait();
	CHECK(fcntl(keep, F_GETFD) >= 0, "fd lost");
	zt_pass();
}

/* O_PATH fds on a file, a directory, a symlink (O_NOFOLLOW), a deleted symlink. */
static int opath(int deleted)
{
	close(zt_make_file("target.file", 10, 1));
	SYS(mkdir("adir", 0700));
	SYS(symlink("target.file", "the.link"));
	int f = SYS(open("target.file", O_PATH));
	int d = SYS(open("adir", O_PATH | O_DIRECTORY));
	int l = SYS(open("the.link", O_PATH | O_NOFOLLOW));
	if (deleted)
		SYS(unlink("the.link"));
	zt_ready();
	zt_wait();
	struct stat st;
	CHECK(fstat(f, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 10, "O_PATH file");
	CHECK(fstat(d, &st) == 0 && S_ISDIR(st.st_mode), "O_PATH directory");
	CHECK(fstatat(d, "", &st, AT_EMPTY_PATH) == 0, "O_PATH directory usable");
	CHECK(fstat(l, &st) == 0 && S_ISLNK(st.st_mode), "O_PATH symlink");
	char buf[64];
	ssize_t n = readlinkat(l, "", buf, sizeof(buf));
	CHECK(n == 11 && !memcmp(buf, "target.file", 11), "symlink target");
	CHECK((fcntl(f, F_GETFL) & O_PATH) && (fcntl(l, F_GETFL) & O_PATH), "O_PATH flag lost");
	zt_pass();
}

/* Device files: /dev/null, /dev/zero and a device node of our own, deleted. */
static int devices(int deleted)
{
	int null = SYS(open("/dev/null", O_WRONLY));
	int zero = SYS(open("/dev/zero", O_RDONLY));
	SYS(mknod("my.null", S_IFCHR | 0600, makedev(1, 3)));
	int mine = SYS(open("my.null", O_RDWR));
	if (deleted)
		SYS(unlink("my.null"));
	zt_ready();
	zt_wait();
	char buf[8] = "xxxxxxx";
	CHECK(read(zero, buf, 8) == 8 && buf[3] == 0, "/dev/zero");
	CHECK(write(null, buf, 8) == 8, "/dev/null");
	struct stat st;
	CHECK(fstat(mine, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3), "device node");
	CHECK(write(mine, buf, 8) == 8, "device node writable");
	zt_pass();
}

/* pidfds: on a child, on ourselves, on a zombie child; one on a thread. */
static int pidfds(int variant)
{
	pid_t c = SYS(fork());
	if (c == 0) {
		if (variant >= 1)
			_exit(3);
		zt_wait();
		_exit(0);
	}
	int pfd = SYS(syscall(SYS_pidfd_open, c, 0));
	int self = SYS(syscall(SYS_pidfd_open, getpid(), 0));
	if (variant == 1) {
		siginfo_t si;
		waitid(P_PID, c, &si, WEXITED | WNOWAIT);
	}
	if (variant == 2) /* of a process reaped already */
		zt_reap(c);
	zt_ready();
	zt_wait();
	CHECK(syscall(SYS_pidfd_send_signal, self, 0, NULL, 0) == 0, "pidfd on ourselves");
	if (variant == 0) {
		SYS(syscall(SYS_pidfd_send_signal, pfd, SIGTERM, NULL, 0));
		siginfo_t si;
		CHECK(waitid(P_PIDFD, pfd, &si, WEXITED) == 0 && si.si_pid == c && si.si_status == 0,
		      "waitid on the pidfd");
	}
	if (variant == 1) {
		siginfo_t si;
		CHECK(waitid(P_PIDFD, pfd, &si, WEXITED) == 0 && si.si_status == 3, "zombie via pidfd");
	}
	zt_pass();
}

/* A pidfd on one of our threads (PIDFD_THREAD). */
static void *idle_thread(void *a) { (void)a; for (;;) pause(); return NULL; }

static int pidfd_thread(void)
{
	pthread_t t;
	SYS(-pthread_create(&t, NULL, idle_thread, NULL));
	usleep(20000);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task");
	DIR *d = opendir(path);
	struct dirent *e;
	pid_t tid = 0;
	while ((e = readdir(d)))
		if (atoi(e->d_name) > 0 && atoi(e->d_name) != getpid())
			tid = atoi(e->d_name);
	closedir(d);
	int pfd = SYS(syscall(SYS_pidfd_open, tid, O_EXCL)); /* PIDFD_THREAD */
	zt_ready();
	zt_wait();
	CHECK(fcntl(pfd, F_GETFD) >= 0, "pidfd lost");
	zt_pass();
}

/* An fd taken from a child with pidfd_getfd: one open file, shared with the child. */
static int fd_from_pidfd(void)
{
	int p[2];
	SYS(pipe(p));
	pid_t c = SYS(fork());
	if (c == 0) {
		int f = SYS(open("child.file", O_CREAT | O_RDWR | O_TRUNC, 0600));
		SYS(write(p[1], &f, sizeof(f)));
		zt_wait();
		_exit(lseek(f, 0, SEEK_CUR) == 5 ? 0 : 1);
	}
	int f;
	SYS(read(p[0], &f, sizeof(f)));
	int pfd = SYS(syscall(SYS_pidfd_open, c, 0));
	int mine = SYS(syscall(SYS_pidfd_getfd, pfd, f, 0));
	zt_ready();
	zt_wait();
	SYS(write(mine, "12345", 5)); /* moves the child's offset too */
	zt_children_verdict(&c, 1);
	zt_pass();
}

/* fds at high numbers, 2^k - 1 up to the last the raised limit allows (RLIMIT_NOFILE
 * soft raised to hard): each the same file at its own offset. */
static int fd_high(void)
{
	struct rlimit r;
	SYS(getrlimit(RLIMIT_NOFILE, &r));
	r.rlim_cur = r.rlim_max;
	SYS(setrlimit(RLIMIT_NOFILE, &r));
	int f = zt_make_file("hi.file", PG, 3);
	int fds[40], n = 0;
	for (long k = 2; (1L << k) - 1 < (long)r.rlim_cur && n < 38; k++)
		fds[n++] = SYS(dup2(f, (int)((1L << k) - 1)));
	fds[n++] = SYS(fcntl(f, F_DUPFD, (int)r.rlim_cur - 1));
	SYS(lseek(f, 321, SEEK_SET));
	zt_ready();
	zt_wait();
	struct rlimit now;
	SYS(getrlimit(RLIMIT_NOFILE, &now));
	CHECK(now.rlim_cur == r.rlim_cur && now.rlim_max == r.rlim_max, "RLIMIT_NOFILE");
	for (int i = 0; i < n; i++)
		CHECK(lseek(fds[i], 0, SEEK_CUR) == 321, "fd %d: offset %ld", fds[i],
		      (long)lseek(fds[i], 0, SEEK_CUR));
	CHECK(fds[n - 1] == (int)r.rlim_cur - 1, "last fd %d", fds[n - 1]);
	CHECK(fcntl(fds[n - 1] - 1, F_GETFD) < 0 || fds[n - 1] - 1 == fds[n - 2],
	      "an fd appeared below the last");
	zt_pass();
}

/* Files opened with the rarer status flags: O_DIRECT, O_SYNC, O_DSYNC, O_NOATIME,
 * O_NONBLOCK on a regular file, and O_DIRECT set later by fcntl; each keeps its flags
 * and its offset, and an O_DIRECT write of an aligned block still works. */
static int fd_rare_flags(void)
{
	int want[] = { O_RDWR | O_DIRECT, O_WRONLY | O_SYNC, O_WRONLY | O_DSYNC,
		       O_RDONLY | O_NOATIME, O_RDWR | O_NONBLOCK };
	enum { N = sizeof(want) / sizeof(want[0]) };
	close(zt_make_file("rare.file", 16 * PG, 6));
	int fds[N + 1], flags[N + 1];
	for (int i = 0; i < N; i++) {
		fds[i] = open("rare.file", want[i]);
		if (fds[i] < 0)
			zt_setup_fail("open #%d: %s", i, strerror(errno));
		SYS(lseek(fds[i], (i + 1) * PG, SEEK_SET));
	}
	fds[N] = SYS(open("rare.file", O_RDONLY));
	SYS(fcntl(fds[N], F_SETFL, O_DIRECT));
	for (int i = 0; i <= N; i++)
		flags[i] = fd_flags(fds[i]);
	zt_ready();
	zt_wait();
	for (int i = 0; i <= N; i++) {
		CHECK(fd_flags(fds[i]) == flags[i], "#%d: flags %o, were %o", i, fd_flags(fds[i]),
		      flags[i]);
		if (i < N)
			CHECK(lseek(fds[i], 0, SEEK_CUR) == (i + 1) * PG, "#%d: offset", i);
	}
	void *block;
	CHECK(!posix_memalign(&block, PG, PG), "memalign");
	memset(block, 0x5a, PG);
	CHECK(pwrite(fds[0], block, PG, 2 * PG) == PG, "O_DIRECT write: %s", strerror(errno));
	zt_pass();
}

/* The names getdents64 gives from FD's position on, joined by '/'. */
static void names_from(int fd, char *out, size_t size)
{
	char buf[8192];
	size_t used = 0;
	long n;
	out[0] = 0;
	while ((n = syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0)
		for (long at = 0; at < n;) {
			struct dirent64 *e = (void *)(buf + at);
			if (used < size)
				used += snprintf(out + used, size - used, "%s/", e->d_name);
			at += e->d_reclen;
		}
}

/* A directory read half-way (find, du, rm -r, rsync scanning): through readdir's DIR
 * (its position from telldir) and a raw fd after one getdents64, in a folder of the
 * work directory and one of /dev/shm (tmpfs counts positions otherwise): the rest
 * of the entries come after, in the same order, none twice, none missed. */
static int dir_position(void)
{
	char shm[64], path[128];
	snprintf(shm, sizeof(shm), "/dev/shm/zdtm-dir-%d", getpid());
	const char *dirs[] = { "many", shm };
	DIR *d[2];
	int raw[2];
	long pos[2];
	static char rest[2][2048], now[2048];
	for (int k = 0; k < 2; k++) {
		SYS(mkdir(dirs[k], 0700));
		for (int i = 0; i < 60; i++) {
			snprintf(path, sizeof(path), "%s/entry-%02d", dirs[k], i);
			close(SYS(open(path, O_CREAT | O_WRONLY, 0600)));
		}
		d[k] = opendir(dirs[k]);
		if (!d[k])
			zt_setup_fail("opendir %s", dirs[k]);
		for (int i = 0; i < 25; i++)
			readdir(d[k]);
		pos[k] = telldir(d[k]);
		raw[k] = SYS(open(dirs[k], O_RDONLY | O_DIRECTORY));
		char first[300];
		SYS(syscall(SYS_getdents64, raw[k], first, sizeof(first)));
		off_t at = SYS(lseek(raw[k], 0, SEEK_CUR));
		names_from(raw[k], rest[k], sizeof(rest[k]));
		SYS(lseek(raw[k], at, SEEK_SET));
	}
	zt_ready();
	zt_wait();
	int failed = 0;
	char why[300] = "";
	for (int k = 0; k < 2 && !failed; k++) {
		long at = telldir(d[k]);
		int count = 0;
		while (readdir(d[k]))
			count++;
		names_from(raw[k], now, sizeof(now));
		if (at != pos[k] || count != 62 - 25) {
			snprintf(why, sizeof(why), "%s: telldir %ld, was %ld; %d entries left", dirs[k],
				 at, pos[k], count);
			failed = 1;
		} else if (strcmp(now, rest[k])) {
			snprintf(why, sizeof(why), "%s: getdents64 gave %.100s, before %.100s", dirs[k],
				 now, rest[k]);
			failed = 1;
		}
	}
	snprintf(path, sizeof(path), "rm -rf %s", shm);
	CHECK(system(path) == 0, "could not remove %s", shm);
	CHECK(!failed, "%s", why);
	zt_pass();
}

/* A pipe opened again through /proc/self/fd (as "/dev/stdin" and "/dev/stdout" are
 * when they are pipes, and "exec 3<>/proc/self/fd/N" in a shell): read-write, and
 * read-only, each its own open file (its own flags); the bytes in the pipe. */
static int pipe_reopened(void)
{
	int p[2];
	char path[64], buf[8];
	SYS(pipe(p));
	snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
	int rw = SYS(open(path, O_RDWR));
	int ro = SYS(open(path, O_RDONLY | O_NONBLOCK));
	SYS(write(p[1], "abc", 3));
	int rw_flags = fcntl(rw, F_GETFL), ro_flags = fcntl(ro, F_GETFL);
	zt_ready();
	zt_wait();
	CHECK(fcntl(rw, F_GETFL) == rw_flags, "read-write end: flags %o, were %o",
	      fcntl(rw, F_GETFL), rw_flags);
	CHECK(fcntl(ro, F_GETFL) == ro_flags, "read-only end: flags %o, were %o",
	      fcntl(ro, F_GETFL), ro_flags);
	CHECK(read(rw, buf, 1) == 1 && buf[0] == 'a', "read through the read-write end");
	CHECK(read(ro, buf, 1) == 1 && buf[0] == 'b', "read through the read-only end");
	CHECK(write(rw, "d", 1) == 1, "write through the read-write end");
	CHECK(read(p[0], buf, 8) == 2 && !memcmp(buf, "cd", 2), "the same pipe");
	CHECK(read(ro, buf, 1) < 0 && errno == EAGAIN, "empty, non-blocking");
	zt_pass();
}

/* Owners of O_ASYNC files of every kind (F_SETOWN_EX): a thread (F_OWNER_TID), the
 * process group (F_OWNER_PGRP), the process for a socket; each signal goes to its
 * owner, the thread's to that thread. */
static volatile pid_t owned_tid, owner_thread;
static volatile int owned_fd = -1, owner_stop;
static void on_owned(int s, siginfo_t *i, void *u)
{
	(void)s;
	(void)u;
	owned_tid = gettid();
	owned_fd = i->si_fd;
}

static void *owner_loop(void *arg)
{
	(void)arg;
	owner_thread = gettid();
	while (!owner_stop)
		usleep(1000);
	return NULL;
}

static int signalled_by(int fd, int wfd, const char *how)
{
	owned_fd = -1;
	if (how[0] == 's')
		SYS(send(wfd, "x", 1, 0));
	else
		SYS(write(wfd, "x", 1));
	for (int i = 0; i < 5000 && owned_fd < 0; i++)
		usleep(1000);
	return owned_fd == fd;
}

static int file_owners(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_owned;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	SYS(sigaction(SIGRTMIN + 3, &sa, NULL));
	pthread_t t;
	SYS(-pthread_create(&t, NULL, owner_loop, NULL));
	while (!owner_thread)
		usleep(1000);
	int a[2], b[2], sv[2];
	SYS(pipe(a));
	SYS(pipe(b));
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	struct f_owner_ex thread = { F_OWNER_TID, owner_thread }, group = { F_OWNER_PGRP, getpgrp() };
	SYS(fcntl(a[0], F_SETOWN_EX, &thread));
	SYS(fcntl(b[0], F_SETOWN_EX, &group));
	SYS(fcntl(sv[0], F_SETOWN, getpid()));
	int fds[] = { a[0], b[0], sv[0] };
	for (int i = 0; i < 3; i++) {
		SYS(fcntl(fds[i], F_SETSIG, SIGRTMIN + 3));
		SYS(fcntl(fds[i], F_SETFL, O_ASYNC | O_NONBLOCK));
	}
	zt_ready();
	zt_wait();
	struct f_owner_ex x;
	SYS(fcntl(a[0], F_GETOWN_EX, &x));
	CHECK(x.type == F_OWNER_TID && x.pid == owner_thread, "thread owner: %d %d", x.type, x.pid);
	SYS(fcntl(b[0], F_GETOWN_EX, &x));
	CHECK(x.type == F_OWNER_PGRP && x.pid == getpgrp(), "group owner: %d %d", x.type, x.pid);
	CHECK(fcntl(sv[0], F_GETOWN) == getpid(), "socket owner %d", fcntl(sv[0], F_GETOWN));
	CHECK(signalled_by(a[0], a[1], "write") && owned_tid == owner_thread,
	      "the thread's file: fd %d to %d", owned_fd, owned_tid);
	CHECK(signalled_by(b[0], b[1], "write"), "the group's file: fd %d", owned_fd);
	CHECK(signalled_by(sv[0], sv[1], "send"), "the socket: fd %d", owned_fd);
	owner_stop = 1;
	pthread_join(t, NULL);
	zt_pass();
}

/* The next record of /dev/kmsg reader FD that carries TAG (others skipped), as the
 * text after TAG (so "" when none comes before EAGAIN). */
static const char *kmsg_next(int fd, const char *tag)
{
	static char rec[8192];
	ssize_t n;
	while ((n = read(fd, rec, sizeof(rec) - 1)) > 0 || (n < 0 && errno == EPIPE)) {
		if (n <= 0)
			continue;  /* overwritten before it was read */
		rec[n] = 0;
		char *at = strstr(rec, tag);
		if (at) {
			at[strcspn(at, "\n")] = 0;
			return at + strlen(tag);
		}
	}
	return "";
}

/* Readers of the kernel's log (/dev/kmsg: dmesg -w, journald) keep their place: one
 * that read everything reads only what came after; one that left records unread
 * reads those first. Neither reads the old records again. */
static int kmsg_readers(void)
{
	char tag[64];
	snprintf(tag, sizeof(tag), "zdtm-kmsg-%d-", getpid());
	int w = open("/dev/kmsg", O_WRONLY);
	int done = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	int behind = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
	if (w < 0 || done < 0 || behind < 0)
		zt_setup_fail("/dev/kmsg");
	char line[96];
	for (int i = 1; i <= 3; i++) {  /* one write each (dprintf seeks: EINVAL) */
		snprintf(line, sizeof(line), "%sA%d\n", tag, i);
		SYS(write(w, line, strlen(line)));
	}
	while (*kmsg_next(done, tag) || errno == EPIPE)
		;
	if (strcmp(kmsg_next(behind, tag), "A1"))
		zt_setup_fail("A1 was not logged");
	zt_ready();
	zt_wait();
	snprintf(line, sizeof(line), "%sB\n", tag);
	CHECK(write(w, line, strlen(line)) > 0, "write to /dev/kmsg");
	const char *got = kmsg_next(done, tag);
	CHECK(!strcmp(got, "B"), "the reader that read everything got '%s' before B", got);
	for (int i = 2; i <= 3; i++) {
		char want[4];
		snprintf(want, sizeof(want), "A%d", i);
		got = kmsg_next(behind, tag);
		CHECK(!strcmp(got, want), "the reader behind got '%s', not %s", got, want);
	}
	got = kmsg_next(behind, tag);
	CHECK(!strcmp(got, "B"), "the reader behind got '%s', not B", got);
	zt_pass();
}

/* Devices whose open file holds state: /dev/fuse (a FUSE daemon's channel), and a
 * /dev/net/tun file attached to an interface (TUNSETIFF) are refused at dump; a tun
 * file attached to nothing yet and /dev/kvm (stateless until a VM is made) are not
 * (the "stateless" variant). */
static int stateful_devices(int stateless)
{
	int tun = SYS(open("/dev/net/tun", O_RDWR));
	int kvm = open("/dev/kvm", O_RDWR);
	int fuse = -1;
	if (!stateless) {
		fuse = SYS(open("/dev/fuse", O_RDWR));
		struct ifreq ifr;
		memset(&ifr, 0, sizeof(ifr));
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "zt%d", getpid() % 100000);
		SYS(ioctl(tun, TUNSETIFF, &ifr));
	}
	zt_ready();
	zt_wait();
	struct stat st;
	CHECK(fstat(tun, &st) == 0 && st.st_rdev == makedev(10, 200), "/dev/net/tun");
	CHECK(kvm < 0 || (fstat(kvm, &st) == 0 && st.st_rdev == makedev(10, 232)), "/dev/kvm");
	if (!stateless) {
		struct ifreq now;
		memset(&now, 0, sizeof(now));
		CHECK(ioctl(tun, TUNGETIFF, &now) == 0 && !strncmp(now.ifr_name, "zt", 2),
		      "the tap interface is gone");
		CHECK(fstat(fuse, &st) == 0 && st.st_rdev == makedev(10, 229), "/dev/fuse");
	}
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "fd-table")) return fd_table();
	if (!strcmp(m, "fd-high")) return fd_high();
	if (!strcmp(m, "fd-rare-flags")) return fd_rare_flags();
	if (!strcmp(m, "write-read")) return write_read();
	if (!strcmp(m, "file-attr")) return file_attr();
	if (!strcmp(m, "unlinked")) return unlinked(0);
	if (!strcmp(m, "unlinked-two-fds")) return unlinked(1);
	if (!strcmp(m, "unlinked-over")) return unlinked(2);
	if (!strcmp(m, "unlinked-written")) return unlinked(3);
	if (!strcmp(m, "unlinked-mmap")) return unlinked(4);
	if (!strcmp(m, "ghost-holes")) return ghost_holes(0);
	if (!strcmp(m, "ghost-large")) return ghost_holes(1);
	if (!strcmp(m, "rmdir-open")) return removed_dir(0);
	if (!strcmp(m, "cwd-removed")) return removed_dir(1);
	if (!strcmp(m, "cwd")) return cwd_check();
	if (!strcmp(m, "dir-position")) return dir_position();
	if (!strcmp(m, "chroot")) return chrooted();
	if (!strcmp(m, "fifo")) return fifos(0);
	if (!strcmp(m, "fifo-ro")) return fifos(1);
	if (!strcmp(m, "fifo-wronly")) return fifos(2);
	if (!strcmp(m, "fifo-unlinked")) return fifos(3);
	if (!strcmp(m, "fifo-unlinked-ro")) return fifos(4);
	if (!strcmp(m, "fifo-pair")) return fifo_pair();
	if (!strcmp(m, "pipe")) return pipes(0);
	if (!strcmp(m, "pipe-big")) return pipes(1);
	if (!strcmp(m, "pipe-nonblock")) return pipes(2);
	if (!strcmp(m, "pipe-packet")) return pipes(3);
	if (!strcmp(m, "pipe-reopened")) return pipe_reopened();
	if (!strcmp(m, "file-fown")) return file_fown();
	if (!strcmp(m, "file-owners")) return file_owners();
	if (!strcmp(m, "proc-self")) return proc_files(0);
	if (!strcmp(m, "proc-child")) return proc_files(1);
	if (!strcmp(m, "proc-init")) return proc_outside(0);
	if (!strcmp(m, "proc-dead")) return proc_outside(1);
	if (!strcmp(m, "proc-dead-cwd")) return proc_outside(2);
	if (!strcmp(m, "opath")) return opath(0);
	if (!strcmp(m, "opath-deleted-link")) return opath(1);
	if (!strcmp(m, "devices")) return devices(0);
	if (!strcmp(m, "devices-deleted")) return devices(1);
	if (!strcmp(m, "kmsg-readers")) return kmsg_readers();
	if (!strcmp(m, "devices-stateful")) return stateful_devices(0);
	if (!strcmp(m, "devices-stateless")) return stateful_devices(1);
	if (!strcmp(m, "pidfd")) return pidfds(0);
	if (!strcmp(m, "pidfd-zombie")) return pidfds(1);
	if (!strcmp(m, "pidfd-dead")) return pidfds(2);
	if (!strcmp(m, "pidfd-thread")) return pidfd_thread();
	if (!strcmp(m, "fd-from-pidfd")) return fd_from_pidfd();
	zt_setup_fail("unknown mode %s", m);
}
