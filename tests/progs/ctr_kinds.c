/* Resources a container's process holds by path, for tests/test_runc_kinds.py (run
 * static inside a busybox container). Prints a tick number every 0.1 s, and:
 *
 *   ctr_kinds ghost FILE...    makes each FILE with its own content, keeps it open (the
 *                              first one mapped shared too) and unlinks it; each tick
 *                              re-reads every one from offset 0, and the mapping ("N"
 *                              if all match, "bad FILE" else).
 *   ctr_kinds open FILE...     the same, the files kept.
 *   ctr_kinds unix PATH...     a stream listener bound to each PATH; a client's line
 *                              is answered "echo PATH LINE", then closed.
 *   ctr_kinds inotify DIR...   an inotify watch (IN_CREATE) on each DIR; each event is
 *                              printed "event DIR NAME".
 *   ctr_kinds fanotify DIR...  the same with a fanotify group (unprivileged: reporting
 *                              directory handles and names) marking each DIR.
 *   ctr_kinds pending -        SIGUSR1 blocked; "pending" before each tick once one
 *                              is queued.
 *
 * "ready" once everything is set up. Each line is one write (stdout is a pipe).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX 16

__attribute__((format(printf, 1, 2)))
static void say(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(1, line, n) < 0)
		exit(3);
}

static void die(const char *what, const char *arg)
{
	say("error %s %s: %s", what, arg, strerror(errno));
	exit(2);
}

static void content(char *buf, size_t size, const char *path)
{
	snprintf(buf, size, "the content of %s, deleted while open\n", path);
}

static __attribute__((noreturn)) void ghost(int argc, char **argv, int keep)
{
	int fds[MAX];
	int n = argc < MAX ? argc : MAX;
	char want[256], got[256];
	for (int i = 0; i < n; i++) {
		fds[i] = open(argv[i], O_RDWR | O_CREAT | O_TRUNC, 0640);
		if (fds[i] < 0)
			die("open", argv[i]);
		content(want, sizeof(want), argv[i]);
		if (write(fds[i], want, strlen(want)) != (ssize_t)strlen(want))
			die("write", argv[i]);
		if (!keep && unlink(argv[i]) < 0)
			die("unlink", argv[i]);
	}
	const char *map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[0], 0);
	if (map == MAP_FAILED)
		die("mmap", argv[0]);
	say("ready");
	for (long tick = 1;; tick++) {
		int bad = -1;
		for (int i = 0; i < n && bad < 0; i++) {
			content(want, sizeof(want), argv[i]);
			ssize_t r = pread(fds[i], got, sizeof(got), 0);
			if (r != (ssize_t)strlen(want) || memcmp(got, want, r) != 0)
				bad = i;
		}
		content(want, sizeof(want), argv[0]);
		if (bad < 0 && memcmp(map, want, strlen(want)) != 0)
			say("bad mapping of %s", argv[0]);
		else if (bad >= 0)
			say("bad %s", argv[bad]);
		else
			say("%ld", tick);
		usleep(100000);
	}
}

static __attribute__((noreturn)) void unix_listeners(int argc, char **argv)
{
	struct pollfd pfd[MAX];
	int n = argc < MAX ? argc : MAX;
	for (int i = 0; i < n; i++) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		strncpy(a.sun_path, argv[i], sizeof(a.sun_path) - 1);
		int s = socket(AF_UNIX, SOCK_STREAM, 0);
		if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 8) < 0)
			die("listen", argv[i]);
		pfd[i] = (struct pollfd){.fd = s, .events = POLLIN};
	}
	say("ready");
	for (long tick = 1;; tick++) {
		if (poll(pfd, n, 100) < 0 && errno != EINTR)
			die("poll", "");
		for (int i = 0; i < n; i++) {
			if (!(pfd[i].revents & POLLIN))
				continue;
			int c = accept(pfd[i].fd, NULL, NULL);
			if (c < 0)
				continue;
			char line[128] = {0};
			ssize_t r = read(c, line, sizeof(line) - 1);
			if (r > 0) {
				line[strcspn(line, "\n")] = 0;
				char reply[256];
				int m = snprintf(reply, sizeof(reply), "echo %s %s\n", argv[i], line);
				if (write(c, reply, m) < 0)
					say("write failed");
			}
			close(c);
		}
		say("%ld", tick);
	}
}

static __attribute__((noreturn)) void watcher(int argc, char **argv)
{
	int n = argc < MAX ? argc : MAX;
	int in = inotify_init1(IN_NONBLOCK);
	int wds[MAX];
	if (in < 0)
		die("inotify_init1", "");
	for (int i = 0; i < n; i++) {
		wds[i] = inotify_add_watch(in, argv[i], IN_CREATE);
		if (wds[i] < 0)
			die("inotify_add_watch", argv[i]);
	}
	say("ready");
	for (long tick = 1;; tick++) {
		struct pollfd p = {.fd = in, .events = POLLIN};
		poll(&p, 1, 100);
		char buf[4096] __attribute__((aligned(8)));
		ssize_t r = read(in, buf, sizeof(buf));
		for (char *at = buf; r > 0 && at < buf + r;) {
			struct inotify_event *ev = (struct inotify_event *)at;
			const char *dir = "?";
			for (int i = 0; i < n; i++)
				if (wds[i] == ev->wd)
					dir = argv[i];
			say("event %s %s", dir, ev->len ? ev->name : "");
			at += sizeof(*ev) + ev->len;
		}
		say("%ld", tick);
	}
}

struct handle {
	struct file_handle fh;
	unsigned char bytes[MAX_HANDLE_SZ];
};

static void handles(struct handle *dirs, int n, char **paths)
{
	for (int i = 0; i < n; i++) {
		int mnt;
		dirs[i].fh.handle_bytes = MAX_HANDLE_SZ;
		if (name_to_handle_at(AT_FDCWD, paths[i], &dirs[i].fh, &mnt, 0) < 0)
			die("name_to_handle_at", paths[i]);
	}
}

static int which(struct handle *dirs, int n, struct file_handle *fh)
{
	for (int i = 0; i < n; i++)
		if (dirs[i].fh.handle_bytes == fh->handle_bytes &&
		    !memcmp(dirs[i].fh.f_handle, fh->f_handle, fh->handle_bytes))
			return i;
	return -1;
}

static __attribute__((noreturn)) void fan(int argc, char **argv)
{
	int n = argc < MAX ? argc : MAX;
	static struct handle dirs[MAX];
	int g = fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_DFID_NAME | FAN_NONBLOCK, O_RDONLY);
	if (g < 0)
		die("fanotify_init", "");
	for (int i = 0; i < n; i++) {
		if (fanotify_mark(g, FAN_MARK_ADD, FAN_CREATE, AT_FDCWD, argv[i]) < 0)
			die("fanotify_mark", argv[i]);
	}
	handles(dirs, n, argv);
	say("ready");
	for (long tick = 1;; tick++) {
		struct pollfd p = {.fd = g, .events = POLLIN};
		poll(&p, 1, 100);
		char buf[4096] __attribute__((aligned(8)));
		ssize_t r = read(g, buf, sizeof(buf));
		struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
		for (; r > 0 && FAN_EVENT_OK(m, r); m = FAN_EVENT_NEXT(m, r)) {
			struct fanotify_event_info_fid *fid = (struct fanotify_event_info_fid *)(m + 1);
			if (fid->hdr.info_type != FAN_EVENT_INFO_TYPE_DFID_NAME)
				continue;
			struct file_handle *fh = (struct file_handle *)fid->handle;
			const char *name = (const char *)fh->f_handle + fh->handle_bytes;
			int i = which(dirs, n, fh);
			if (i < 0) { /* a folder made again (a new tmpfs): new handles */
				handles(dirs, n, argv);
				i = which(dirs, n, fh);
			}
			say("event %s %s", i < 0 ? "?" : argv[i], name);
		}
		say("%ld", tick);
	}
}

static __attribute__((noreturn)) void pending(void)
{
	sigset_t usr1, now;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	say("ready");
	for (long tick = 1;; tick++) {
		if (sigpending(&now) == 0 && sigismember(&now, SIGUSR1))
			say("pending");
		say("%ld", tick);
		usleep(100000);
	}
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 1;
	if (!strcmp(argv[1], "ghost"))
		ghost(argc - 2, argv + 2, 0);
	if (!strcmp(argv[1], "open"))
		ghost(argc - 2, argv + 2, 1);
	if (!strcmp(argv[1], "unix"))
		unix_listeners(argc - 2, argv + 2);
	if (!strcmp(argv[1], "inotify"))
		watcher(argc - 2, argv + 2);
	if (!strcmp(argv[1], "fanotify"))
		fan(argc - 2, argv + 2);
	if (!strcmp(argv[1], "pending"))
		pending();
	return 1;
}
