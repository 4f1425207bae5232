/* Sockets: unix (stream, dgram, seqpacket; pairs, listeners, bound, unconnected,
 * queued data, shutdown, deleted names, abstract names, fds in flight), inet (TCP
 * listeners, UDP, ICMP, raw, UDP-lite), netlink, packet; socket options, filters. */
#include "zdtm.h"
#include <netinet/udp.h>
#include "net.h"
#include <linux/filter.h>
#include <stddef.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>

static int type_of(const char *m)
{
	if (strstr(m, "seqpacket")) return SOCK_SEQPACKET;
	if (strstr(m, "dgram")) return SOCK_DGRAM;
	return SOCK_STREAM;
}

static socklen_t un_addr(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (abstract) {
		snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s.%d", name, getpid());
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(a->sun_path + 1);
	}
	snprintf(a->sun_path, sizeof(a->sun_path), "%s", name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
}

static void expect_msg(int fd, const char *want, const char *what)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	CHECK(n == (ssize_t)strlen(want) && !memcmp(buf, want, n), "%s: got %zd bytes", what, n);
}

/* A socketpair with messages queued both ways, across two processes. */
static int unix_pair(int type)
{
	int sv[2];
	SYS(socketpair(AF_UNIX, type, 0, sv));
	SYS(send(sv[0], "one", 3, 0));
	SYS(send(sv[0], "two", 3, 0));
	SYS(send(sv[1], "back", 4, 0));
	pid_t c = SYS(fork());
	if (c == 0) {
		close(sv[0]);
		zt_wait();
		char buf[16];
		ssize_t n = recv(sv[1], buf, sizeof(buf), 0);
		if (type == SOCK_STREAM)
			_exit(n == 6 && !memcmp(buf, "onetwo", 6) ? 0 : 1);
		if (n != 3 || memcmp(buf, "one", 3))
			_exit(2);
		n = recv(sv[1], buf, sizeof(buf), 0);
		_exit(n == 3 && !memcmp(buf, "two", 3) ? 0 : 3);
	}
	close(sv[1]);
	zt_ready();
	zt_wait();
	expect_msg(sv[0], "back", "queued to the parent");
	zt_children_verdict(&c, 1);
	int t;
	socklen_t l = sizeof(t);
	getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &t, &l);
	CHECK(t == type, "socket type %d", t);
	zt_pass();
}

/* A listener (path or abstract), a connection accepted, one not yet accepted. */
static int unix_listen(int type, int abstract, int unaccepted)
{
	struct sockaddr_un a;
	socklen_t len = un_addr(&a, "listen.sock", abstract);
	int l = SYS(socket(AF_UNIX, type, 0));
	SYS(bind(l, (void *)&a, len));
	SYS(listen(l, 5));
	int c = SYS(socket(AF_UNIX, type, 0));
	SYS(connect(c, (void *)&a, len));
	int s = -1;
	if (!unaccepted) {
		s = SYS(accept(l, NULL, NULL));
		SYS(send(s, "srv", 3, 0));
	}
	SYS(send(c, "cli", 3, 0));
	zt_ready();
	zt_wait();
	if (unaccepted)
		s = accept(l, NULL, NULL);
	CHECK(s >= 0, "the pending connection was lost");
	expect_msg(s, "cli", "client's bytes");
	if (!unaccepted)
		expect_msg(c, "srv", "server's bytes");
	int n = SYS(socket(AF_UNIX, type, 0));
	CHECK(connect(n, (void *)&a, len) == 0, "cannot connect to the listener again");
	int m = accept(l, NULL, NULL);
	CHECK(m >= 0, "accept after the restore");
	SYS(send(n, "new", 3, 0));
	expect_msg(m, "new", "new connection");
	zt_pass();
}

/* Datagram sockets: bound, a connected sender, messages queued with their senders. */
static int unix_dgram(int abstract)
{
	struct sockaddr_un a, b;
	socklen_t la = un_addr(&a, "dgram.a", abstract), lb = un_addr(&b, "dgram.b", abstract);
	int sa = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	int sb = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	SYS(bind(sa, (void *)&a, la));
	SYS(bind(sb, (void *)&b, lb));
	SYS(connect(sb, (void *)&a, la));
	SYS(send(sb, "m1", 2, 0));
	SYS(sendto(sb, "m2", 2, 0, (void *)&a, la));
	int anon = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	SYS(sendto(anon, "m3", 2, 0, (void *)&a, la));
	zt_ready();
	zt_wait();
	char buf[16];
	struct sockaddr_un from;
	socklen_t fl = sizeof(from);
	ssize_t n = recvfrom(sa, buf, sizeof(buf), MSG_DONTWAIT, (void *)&from, &fl);
	CHECK(n == 2 && !memcmp(buf, "m1", 2), "first message");
	CHECK(fl == lb && !memcmp(&from, &b, lb), "sender of the first message");
	expect_msg(sa, "m2", "second message");
	expect_msg(sa, "m3", "third message");
	SYS(send(sb, "m4", 2, 0));
	expect_msg(sa, "m4", "connected sender after the restore");
	zt_pass();
}

/* Sockets never connected: a bare one of each type, one bound. */
static int unix_unconnected(void)
{
	int s1 = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	int s2 = SYS(socket(AF_UNIX, SOCK_SEQPACKET, 0));
	int s3 = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	struct sockaddr_un a;
	socklen_t la = un_addr(&a, "bound.sock", 0);
	int s4 = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	SYS(bind(s4, (void *)&a, la));
	zt_ready();
	zt_wait();
	struct sockaddr_un got;
	socklen_t gl = sizeof(got);
	SYS(getsockname(s4, (void *)&got, &gl));
	CHECK(gl == la && !strcmp(got.sun_path, "bound.sock"), "bound name");
	SYS(listen(s4, 1));
	int t;
	socklen_t l = sizeof(t);
	getsockopt(s2, SOL_SOCKET, SO_TYPE, &t, &l);
	CHECK(t == SOCK_SEQPACKET, "type");
	(void)s1; (void)s3;
	zt_pass();
}

/* Shut down halves of stream pairs. */
static int unix_shutdown(void)
{
	int a[2], b[2];
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, a));
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, b));
	SYS(send(a[0], "bye", 3, 0));
	SYS(shutdown(a[0], SHUT_WR));
	SYS(shutdown(b[1], SHUT_RD));
	zt_ready();
	zt_wait();
	char buf[8];
	CHECK(recv(a[1], buf, 8, MSG_DONTWAIT) == 3, "bytes before the shutdown");
	CHECK(recv(a[1], buf, 8, MSG_DONTWAIT) == 0, "no EOF after the shutdown");
	CHECK(send(a[0], "x", 1, MSG_NOSIGNAL) < 0 && errno == EPIPE, "write after SHUT_WR");
	CHECK(send(b[1], "y", 1, 0) == 1, "SHUT_RD side can write");
	zt_pass();
}

/* A socket bound to a name that was removed (and one replaced by another file). */
static int unix_deleted(int listening)
{
	struct sockaddr_un a;
	socklen_t la = un_addr(&a, "gone.sock", 0);
	int s = SYS(socket(AF_UNIX, listening ? SOCK_STREAM : SOCK_DGRAM, 0));
	SYS(bind(s, (void *)&a, la));
	if (listening)
		SYS(listen(s, 2));
	SYS(unlink("gone.sock"));
	zt_ready();
	zt_wait();
	CHECK(access("gone.sock", F_OK) < 0, "the removed name came back");
	struct sockaddr_un got;
	socklen_t gl = sizeof(got);
	SYS(getsockname(s, (void *)&got, &gl));
	CHECK(!strcmp(got.sun_path, "gone.sock"), "name %s", got.sun_path);
	zt_pass();
}

/* An fd in flight: sent with SCM_RIGHTS, not yet received. */
static int scm_rights(int keep)
{
	int sv[2], p[2];
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	SYS(pipe(p));
	SYS(write(p[1], "through", 7));
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { "x", 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
	SYS(sendmsg(sv[0], &mh, 0));
	if (!keep)
		close(p[0]);
	zt_ready();
	zt_wait();
	char x;
	memset(cbuf, 0, sizeof(cbuf));
	mh.msg_controllen = sizeof(cbuf);
	iov.iov_base = &x;
	CHECK(recvmsg(sv[1], &mh, MSG_DONTWAIT) == 1, "message lost");
	cm = CMSG_FIRSTHDR(&mh);
	CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "the fd in flight was lost");
	int got;
	memcpy(&got, CMSG_DATA(cm), sizeof(int));
	char buf[8];
	CHECK(read(got, buf, 7) == 7 && !memcmp(buf, "through", 7), "the passed pipe");
	zt_pass();
}

/* SO_PEERCRED of a pair and of an accepted connection. */
static int peercred(void)
{
	int sv[2];
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	struct ucred before, after;
	socklen_t l = sizeof(before);
	SYS(getsockopt(sv[0], SOL_SOCKET, SO_PEERCRED, &before, &l));
	zt_ready();
	zt_wait();
	SYS(getsockopt(sv[0], SOL_SOCKET, SO_PEERCRED, &after, &l));
	CHECK(after.pid == before.pid && after.uid == before.uid, "SO_PEERCRED pid %d, was %d",
	      after.pid, before.pid);
	zt_pass();
}

/* A TCP listener: clients connect after the restore. */
static int tcp_listen(int family, int v4v6)
{
	int l = SYS(socket(family, SOCK_STREAM, 0));
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_storage ss;
	socklen_t len;
	if (v4v6) { /* IPv6 any address, reached over IPv4 */
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = in6addr_any };
		SYS(bind(l, (void *)&a, sizeof(a)));
	} else {
		len = zt_loopback(&ss, family, 0);
		SYS(bind(l, (void *)&ss, len));
	}
	SYS(listen(l, 10));
	int port = zt_port_of(l);
	zt_ready();
	zt_wait();
	CHECK(zt_port_of(l) == port, "port %d, was %d", zt_port_of(l), port);
	int c = SYS(socket(v4v6 ? AF_INET : family, SOCK_STREAM, 0));
	len = zt_loopback(&ss, v4v6 ? AF_INET : family, port);
	CHECK(connect(c, (void *)&ss, len) == 0, "connect: %s", strerror(errno));
	int s = accept(l, NULL, NULL);
	CHECK(s >= 0, "accept");
	SYS(send(c, "ping", 4, 0));
	char buf[8];
	CHECK(recv(s, buf, 8, 0) == 4, "data over the new connection");
	zt_pass();
}

/* UDP (and UDP-lite, ICMP ping) sockets: bound, connected, options. */
static int udp(int family, int proto, int connected)
{
	int type = proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 ? SOCK_DGRAM : SOCK_DGRAM;
	int a = SYS(socket(family, type, proto));
	int b = SYS(socket(family, type, proto));
	struct sockaddr_storage ss;
	socklen_t len;
	len = zt_loopback(&ss, family, 0);
	SYS(bind(a, (void *)&ss, len));
	SYS(bind(b, (void *)&ss, len));
	int pa = zt_port_of(a), pb = zt_port_of(b);
	if (connected) {
		len = zt_loopback(&ss, family, pa);
		SYS(connect(b, (void *)&ss, len));
	}
	int one = 1;
	SYS(setsockopt(a, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)));
	zt_ready();
	zt_wait();
	CHECK(zt_port_of(a) == pa && zt_port_of(b) == pb, "ports");
	int v = 0;
	socklen_t l = sizeof(v);
	getsockopt(a, SOL_SOCKET, SO_BROADCAST, &v, &l);
	CHECK(v == 1, "SO_BROADCAST lost");
	if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
		zt_pass();
	len = zt_loopback(&ss, family, pa);
	if (connected)
		SYS(send(b, "dg", 2, 0));
	else
		SYS(sendto(b, "dg", 2, 0, (void *)&ss, len));
	char buf[8];
	CHECK(recv(a, buf, 8, 0) == 2, "datagram");
	zt_pass();
}

/* A UDP socket with datagrams queued. */
static int udp_queued(void)
{
	int a = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_storage ss;
	socklen_t len;
	len = zt_loopback(&ss, AF_INET, 0);
	SYS(bind(a, (void *)&ss, len));
	len = zt_loopback(&ss, AF_INET, zt_port_of(a));
	SYS(sendto(a, "q1", 2, 0, (void *)&ss, len));
	zt_ready();
	zt_wait();
	char buf[8];
	CHECK(recv(a, buf, 8, MSG_DONTWAIT) == 2, "queued datagram lost");
	zt_pass();
}

/* Socket options that differ from a new socket's. */
static int sock_opts(int family)
{
	int s = SYS(socket(family, SOCK_STREAM, 0));
	int u = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	int one = 1, snd = 65536, rcv = 90000, prio = 5, mark = 77;
	struct linger lg = { 1, 7 };
	struct timeval tv = { 3, 500000 };
	SYS(setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)));
	SYS(setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)));
	SYS(setsockopt(s, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)));
	SYS(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)));

	SYS(setsockopt(s, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)));
	SYS(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	SYS(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	SYS(setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)));
	SYS(setsockopt(s, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)));
	SYS(setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)));
	SYS(setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)));
	int idle = 77, cnt = 4, intvl = 9;
	SYS(setsockopt(s, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)));
	SYS(setsockopt(s, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)));
	SYS(setsockopt(s, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)));
	if (family == AF_INET) {
		int tos = 0x10, ttl = 33;
		SYS(setsockopt(s, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)));
		SYS(setsockopt(s, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl)));
		SYS(setsockopt(s, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one)));
	} else {
		SYS(setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)));
	}
	/* after IP_TOS, which sets the priority too */
	SYS(setsockopt(s, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio)));
	SYS(setsockopt(u, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)));
	SYS(setsockopt(u, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)));
	struct { int level, name, want; const char *what; } opts[] = {
		{ SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR" }, { SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE" },
		{ SOL_SOCKET, SO_SNDBUF, 2 * snd, "SO_SNDBUF" }, { SOL_SOCKET, SO_RCVBUF, 2 * rcv, "SO_RCVBUF" },
		{ SOL_SOCKET, SO_PRIORITY, prio, "SO_PRIORITY" }, { SOL_SOCKET, SO_MARK, mark, "SO_MARK" },
		{ SOL_SOCKET, SO_OOBINLINE, 1, "SO_OOBINLINE" }, { SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT" },
		{ IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY" }, { IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE" },
		{ IPPROTO_TCP, TCP_KEEPCNT, 4, "TCP_KEEPCNT" }, { IPPROTO_TCP, TCP_KEEPINTVL, 9, "TCP_KEEPINTVL" },
	};
	zt_ready();
	zt_wait();
	for (unsigned i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		int v = -1;
		socklen_t l = sizeof(v);
		getsockopt(s, opts[i].level, opts[i].name, &v, &l);
		CHECK(v == opts[i].want, "%s: %d, expected %d", opts[i].what, v, opts[i].want);
	}
	struct linger lg2;
	socklen_t l = sizeof(lg2);
	getsockopt(s, SOL_SOCKET, SO_LINGER, &lg2, &l);
	CHECK(lg2.l_onoff == 1 && lg2.l_linger == 7, "SO_LINGER");
	struct timeval tv2;
	l = sizeof(tv2);
	getsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv2, &l);
	CHECK(tv2.tv_sec == 3 && tv2.tv_usec == 500000, "SO_RCVTIMEO %ld.%06ld", (long)tv2.tv_sec,
	      (long)tv2.tv_usec);
	int v = 0;
	l = sizeof(v);
	if (family == AF_INET) {
		getsockopt(s, IPPROTO_IP, IP_TOS, &v, &l);
		CHECK(v == 0x10, "IP_TOS %x", v);
		getsockopt(s, IPPROTO_IP, IP_TTL, &v, &l);
		CHECK(v == 33, "IP_TTL %d", v);
		getsockopt(s, IPPROTO_IP, IP_FREEBIND, &v, &l);
		CHECK(v == 1, "IP_FREEBIND");
	} else {
		getsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l);
		CHECK(v == 1, "IPV6_V6ONLY");
	}
	getsockopt(u, SOL_SOCKET, SO_PASSCRED, &v, &l);
	CHECK(v == 1, "unix SO_PASSCRED");
	getsockopt(u, SOL_SOCKET, SO_SNDBUF, &v, &l);
	CHECK(v == 2 * snd, "unix SO_SNDBUF %d", v);
	zt_pass();
}

/* A classic BPF filter attached to a socket (and locked). */
static int sock_filter(int lock)
{
	int s = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sock_filter code[] = { { BPF_RET | BPF_K, 0, 0, 0 } }; /* drop everything */
	struct sock_fprog prog = { 1, code };
	SYS(setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)));
	if (lock) {
		int one = 1;
		SYS(setsockopt(s, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)));
	}
	struct sockaddr_storage ss;
	socklen_t len;
	len = zt_loopback(&ss, AF_INET, 0);
	SYS(bind(s, (void *)&ss, len));
	zt_ready();
	zt_wait();
	struct sock_filter got[4];
	socklen_t n = 4;
	CHECK(getsockopt(s, SOL_SOCKET, SO_GET_FILTER, got, &n) == 0 && n == 1, "filter lost (%u)", n);
	len = zt_loopback(&ss, AF_INET, zt_port_of(s));
	sendto(s, "f", 1, 0, (void *)&ss, len);
	char b;
	CHECK(recv(s, &b, 1, MSG_DONTWAIT) < 0, "the filter no longer drops");
	zt_pass();
}

static int other_family(int family, int type, int proto)
{
	int s = SYS(socket(family, type, proto));
	if (family == AF_NETLINK) {
		struct sockaddr_nl a = { .nl_family = AF_NETLINK };
		SYS(bind(s, (void *)&a, sizeof(a)));
	}
	zt_ready();
	zt_wait();
	int t;
	socklen_t l = sizeof(t);
	CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &t, &l) == 0 && t == type, "socket type");
	zt_pass();
}

/* A datagram socket bound to a name, and one connected to it; the name removed and a
 * FIFO made in its place, open. RELATIVE: the name was relative to a working directory
 * the process left since. */
static int fifo_over_socket(int relative)
{
	char cwd[PATH_MAX], name[PATH_MAX + 16];
	SYS(getcwd(cwd, sizeof(cwd)) ? 0 : -1);
	snprintf(name, sizeof(name), relative ? "sock-then-fifo" : "%s/sock-then-fifo", cwd);
	struct sockaddr_un a;
	socklen_t len = un_addr(&a, name, 0);
	int server = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	SYS(bind(server, (void *)&a, len));
	int client = SYS(socket(AF_UNIX, SOCK_DGRAM, 0));
	SYS(connect(client, (void *)&a, len));
	SYS(unlink(name));
	SYS(mkfifo(name, 0600));
	int fifo = SYS(open(name, O_RDWR));
	if (relative)
		SYS(chdir("/"));
	zt_ready();
	zt_wait();
	SYS(send(client, "dgram", 5, 0));
	expect_msg(server, "dgram", "the socket whose name became a FIFO");
	SYS(write(fifo, "fifo", 4));
	char buf[8];
	CHECK(read(fifo, buf, sizeof(buf)) == 4 && !memcmp(buf, "fifo", 4), "the FIFO");
	if (relative)
		SYS(chdir(cwd));
	struct stat st;
	CHECK(stat(name, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO's name");
	zt_pass();
}

/* The multicast groups of SOCK (NETLINK_LIST_MEMBERSHIPS), as a bit mask of the first 64. */
static unsigned long long nl_groups(int sock)
{
	unsigned int mask[2] = { 0, 0 };
	socklen_t len = sizeof(mask);
	if (getsockopt(sock, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, mask, &len) < 0)
		return 0;
	return mask[0] | (unsigned long long)mask[1] << 32;
}

/* Netlink sockets as daemons use them: an rtnetlink one bound to groups at bind time
 * and one joined later (above 32, with NETLINK_ADD_MEMBERSHIP), and a uevent listener
 * (udev's), each under its port id. */
static int netlink_groups(void)
{
	int rt = SYS(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE));
	struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR };
	SYS(bind(rt, (void *)&a, sizeof(a)));
	int late = RTNLGRP_IPV6_RULE, high = 36; /* RTNLGRP_STATS */
	SYS(setsockopt(rt, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &late, sizeof(late)));
	SYS(setsockopt(rt, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &high, sizeof(high)));
	int ue = SYS(socket(AF_NETLINK, SOCK_DGRAM, NETLINK_KOBJECT_UEVENT));
	struct sockaddr_nl u = { .nl_family = AF_NETLINK, .nl_groups = 1 };
	SYS(bind(ue, (void *)&u, sizeof(u)));
	struct sockaddr_nl before[2], after[2];
	socklen_t len = sizeof(before[0]);
	SYS(getsockname(rt, (void *)&before[0], &len));
	SYS(getsockname(ue, (void *)&before[1], &len));
	unsigned long long g_rt = nl_groups(rt), g_ue = nl_groups(ue);
	zt_ready();
	zt_wait();
	SYS(getsockname(rt, (void *)&after[0], &len));
	SYS(getsockname(ue, (void *)&after[1], &len));
	CHECK(after[0].nl_pid == before[0].nl_pid && after[1].nl_pid == before[1].nl_pid,
	      "port ids %u %u, were %u %u", after[0].nl_pid, after[1].nl_pid, before[0].nl_pid,
	      before[1].nl_pid);
	CHECK(nl_groups(rt) == g_rt, "rtnetlink groups %llx, were %llx", nl_groups(rt), g_rt);
	CHECK(nl_groups(ue) == g_ue, "uevent groups %llx, were %llx", nl_groups(ue), g_ue);
	zt_pass();
}

/* A datagram sent from a socket of ours to GROUP:PORT on the loopback interface. */
static void send_group(int family, const char *group, int port, const char *from,
		       const char *msg)
{
	int s = SYS(socket(family, SOCK_DGRAM, 0));
	if (family == AF_INET) {
		struct in_addr lo = { htonl(INADDR_LOOPBACK) };
		SYS(setsockopt(s, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof(lo)));
		struct sockaddr_in src = { AF_INET, 0, { inet_addr(from) }, { 0 } };
		SYS(bind(s, (void *)&src, sizeof(src)));
		struct sockaddr_in to = { AF_INET, htons(port), { inet_addr(group) }, { 0 } };
		SYS(sendto(s, msg, strlen(msg), 0, (void *)&to, sizeof(to)));
	}
	close(s);
}

/* Whether FD has joined GROUP on interface IFINDEX, and its filter: MCAST_MSFILTER
 * gives the mode and the sources (EADDRNOTAVAIL: not joined). */
static int group_filter(int fd, int family, const char *group, int ifindex, int *mode,
			struct sockaddr_storage *src)
{
	char buf[sizeof(struct group_filter) + 4 * sizeof(struct sockaddr_storage)];
	struct group_filter *gf = (void *)buf;
	memset(buf, 0, sizeof(buf));
	gf->gf_interface = ifindex;
	gf->gf_numsrc = 4;
	gf->gf_group.ss_family = family;
	if (family == AF_INET)
		inet_pton(AF_INET, group, &((struct sockaddr_in *)&gf->gf_group)->sin_addr);
	else
		inet_pton(AF_INET6, group, &((struct sockaddr_in6 *)&gf->gf_group)->sin6_addr);
	socklen_t len = sizeof(buf);
	if (getsockopt(fd, family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6, MCAST_MSFILTER,
		       buf, &len) < 0)
		return -1;
	*mode = gf->gf_fmode;
	if (gf->gf_numsrc && src)
		*src = gf->gf_slist[0];
	return gf->gf_numsrc;
}

static int bound_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	SYS(getsockname(fd, (void *)&a, &len));
	return ntohs(a.sin_port);
}

/* Multicast groups joined on the loopback interface: one any-source group, one with a
 * source filter (source-specific: only 127.0.0.1), and an IPv6 group. */
static int multicast(void)
{
	const char *any = "239.7.7.7", *ssm = "232.7.7.7", *v6 = "ff15::7:7";
	int a = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_in at = { AF_INET, 0, { inet_addr(any) }, { 0 } };
	SYS(bind(a, (void *)&at, sizeof(at)));
	struct ip_mreqn mr = { { inet_addr(any) }, { htonl(INADDR_LOOPBACK) }, 0 };
	SYS(setsockopt(a, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mr, sizeof(mr)));
	int s = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_in st = { AF_INET, 0, { inet_addr(ssm) }, { 0 } };
	SYS(bind(s, (void *)&st, sizeof(st)));
	struct ip_mreq_source ms = { { inet_addr(ssm) }, { htonl(INADDR_LOOPBACK) },
				     { inet_addr("127.0.0.1") } };
	SYS(setsockopt(s, IPPROTO_IP, IP_ADD_SOURCE_MEMBERSHIP, &ms, sizeof(ms)));
	int six = SYS(socket(AF_INET6, SOCK_DGRAM, 0));
	struct ipv6_mreq m6 = { .ipv6mr_interface = 1 };
	inet_pton(AF_INET6, v6, &m6.ipv6mr_multiaddr);
	SYS(setsockopt(six, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m6, sizeof(m6)));
	int pa = bound_port(a), ps = bound_port(s);
	zt_ready();
	zt_wait();
	int mode = -1;
	struct sockaddr_storage src;
	CHECK(group_filter(a, AF_INET, any, 1, &mode, NULL) == 0 && mode == MCAST_EXCLUDE,
	      "group %s: not joined (mode %d)", any, mode);
	CHECK(group_filter(s, AF_INET, ssm, 1, &mode, &src) == 1 && mode == MCAST_INCLUDE
	      && ((struct sockaddr_in *)&src)->sin_addr.s_addr == inet_addr("127.0.0.1"),
	      "group %s: its source filter is lost (mode %d)", ssm, mode);
	CHECK(group_filter(six, AF_INET6, v6, 1, &mode, NULL) == 0 && mode == MCAST_EXCLUDE,
	      "group %s: not joined", v6);
	CHECK(group_filter(a, AF_INET, ssm, 1, &mode, NULL) < 0 && errno == EADDRNOTAVAIL,
	      "a socket joined a group it had not");
	struct timeval tv = { 5, 0 };
	SYS(setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	SYS(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
	send_group(AF_INET, any, pa, "127.0.0.1", "to-any");
	send_group(AF_INET, ssm, ps, "127.0.0.2", "filtered");
	send_group(AF_INET, ssm, ps, "127.0.0.1", "to-ssm");
	char buf[32];
	ssize_t n = recv(a, buf, sizeof(buf), 0);
	CHECK(n == 6 && !memcmp(buf, "to-any", 6), "group %s: no datagram (%zd)", any, n);
	n = recv(s, buf, sizeof(buf), 0);
	CHECK(n == 6 && !memcmp(buf, "to-ssm", 6), "group %s: %zd bytes, not its source's", ssm, n);
	zt_pass();
}

/* A connected UDP socket with UDP_CORK set: after the restore, pieces sent while
 * corked leave as one datagram once uncorked. With ``pending`` the cork already holds
 * a piece at the dump (refused: no interface reads it; criu refuses it too). */
static int udp_corked(int pending)
{
	int a = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	int b = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_storage ss;
	socklen_t len = zt_loopback(&ss, AF_INET, 0);
	SYS(bind(a, (void *)&ss, len));
	len = zt_loopback(&ss, AF_INET, zt_port_of(a));
	SYS(connect(b, (void *)&ss, len));
	int one = 1, zero = 0;
	SYS(setsockopt(b, IPPROTO_UDP, UDP_CORK, &one, sizeof(one)));
	if (pending)
		SYS(send(b, "pre-", 4, 0));
	zt_ready();
	zt_wait();
	int v = 0;
	socklen_t l = sizeof(v);
	SYS(getsockopt(b, IPPROTO_UDP, UDP_CORK, &v, &l));
	CHECK(v == 1, "UDP_CORK lost");
	SYS(send(b, "one+", 4, 0));
	SYS(send(b, "two", 3, 0));
	char buf[32];
	CHECK(recv(a, buf, sizeof(buf), MSG_DONTWAIT) < 0, "a corked piece left alone");
	SYS(setsockopt(b, IPPROTO_UDP, UDP_CORK, &zero, sizeof(zero)));
	const char *want = pending ? "pre-one+two" : "one+two";
	ssize_t n = recv(a, buf, sizeof(buf), 0);
	CHECK(n == (ssize_t)strlen(want) && !memcmp(buf, want, n), "got %zd bytes '%.*s'", n,
	      (int)(n > 0 ? n : 0), buf);
	zt_pass();
}

/* Everything queued on stream FD (a read stops at an urgent byte's mark). */
static ssize_t drain(int fd, char *buf, size_t size)
{
	ssize_t got = 0, n;
	while ((size_t)got < size && (n = recv(fd, buf + got, size - got, MSG_DONTWAIT)) > 0)
		got += n;
	return got;
}

/* Out-of-band bytes on a unix stream (MSG_OOB, Linux 5.15+): one read already with
 * MSG_OOB and one sent on a socket that takes them inline (SO_OOBINLINE) come back as
 * plain data; one still waiting at its mark (PENDING) is refused at dump. */
static int unix_oob(int pending)
{
	int sv[2], in[2], one = 1;
	char c = 0, buf[16];
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, in));
	SYS(setsockopt(in[1], SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)));
	SYS(send(sv[0], "ab", 2, 0));
	if (send(sv[0], "U", 1, MSG_OOB) != 1)
		zt_setup_fail("MSG_OOB on a unix stream");
	SYS(send(sv[0], "cd", 2, 0));
	if (!pending && (recv(sv[1], &c, 1, MSG_OOB) != 1 || c != 'U'))
		zt_setup_fail("the urgent byte");
	SYS(send(in[0], "x", 1, 0));
	SYS(send(in[0], "Y", 1, MSG_OOB));
	zt_ready();
	zt_wait();
	if (pending) {
		CHECK(recv(sv[1], &c, 1, MSG_OOB | MSG_DONTWAIT) == 1 && c == 'U',
		      "the urgent byte is gone");
	} else {
		CHECK(recv(sv[1], &c, 1, MSG_OOB | MSG_DONTWAIT) < 0, "an urgent byte came back");
	}
	ssize_t n = drain(sv[1], buf, sizeof(buf));
	CHECK(n == 4 && !memcmp(buf, "abcd", 4), "queued: %zd bytes '%.*s'", n,
	      (int)(n > 0 ? n : 0), buf);
	n = drain(in[1], buf, sizeof(buf));
	CHECK(n == 2 && !memcmp(buf, "xY", 2), "inline urgent byte: %zd bytes '%.*s'", n,
	      (int)(n > 0 ? n : 0), buf);
	zt_pass();
}

/* Datagrams queued on a UDP socket bound to every address: each comes back from its
 * sender's address and port (one sender closed since, one bound to 127.0.0.2) and to
 * the address it was sent to (IP_PKTINFO: 127.0.0.1, 127.0.0.3), in order. */
static int udp_sources(void)
{
	int r = SYS(socket(AF_INET, SOCK_DGRAM, 0)), one = 1;
	SYS(setsockopt(r, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one)));
	struct sockaddr_in any = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	socklen_t l = sizeof(any);
	SYS(bind(r, (void *)&any, l));
	SYS(getsockname(r, (void *)&any, &l));
	int s1 = SYS(socket(AF_INET, SOCK_DGRAM, 0)), s2 = SYS(socket(AF_INET, SOCK_DGRAM, 0));
	struct sockaddr_in from[2] = { { .sin_family = AF_INET },
				       { .sin_family = AF_INET, .sin_addr.s_addr = inet_addr("127.0.0.2") } };
	SYS(bind(s1, (void *)&from[0], sizeof(from[0])));
	SYS(bind(s2, (void *)&from[1], sizeof(from[1])));
	struct sockaddr_in to[2] = { { .sin_family = AF_INET, .sin_port = any.sin_port,
				       .sin_addr.s_addr = inet_addr("127.0.0.1") },
				     { .sin_family = AF_INET, .sin_port = any.sin_port,
				       .sin_addr.s_addr = inet_addr("127.0.0.3") } };
	for (int i = 0; i < 2; i++) {
		l = sizeof(from[i]);
		SYS(getsockname(i ? s2 : s1, (void *)&from[i], &l));
	}
	SYS(sendto(s1, "one", 3, 0, (void *)&to[0], sizeof(to[0])));
	SYS(sendto(s2, "two", 3, 0, (void *)&to[1], sizeof(to[1])));
	close(s1);
	usleep(50000);
	zt_ready();
	zt_wait();
	for (int i = 0; i < 2; i++) {
		char buf[16], cbuf[256];
		struct sockaddr_in src;
		struct iovec io = { buf, sizeof(buf) };
		struct msghdr mh = { .msg_name = &src, .msg_namelen = sizeof(src), .msg_iov = &io,
				     .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		ssize_t n = recvmsg(r, &mh, MSG_DONTWAIT);
		CHECK(n == 3 && !memcmp(buf, i ? "two" : "one", 3), "datagram %d: %zd bytes", i, n);
		CHECK(src.sin_port == from[i].sin_port
		      && (i == 0 || src.sin_addr.s_addr == from[i].sin_addr.s_addr),
		      "datagram %d: from %#x:%d", i, ntohl(src.sin_addr.s_addr), ntohs(src.sin_port));
		struct in_pktinfo *pi = NULL;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
			if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO)
				pi = (void *)CMSG_DATA(c);
		CHECK(pi && pi->ipi_addr.s_addr == to[i].sin_addr.s_addr,
		      "datagram %d: sent to %#x", i, pi ? ntohl(pi->ipi_addr.s_addr) : 0);
	}
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strncmp(m, "unix-pair", 9)) return unix_pair(type_of(m));
	if (!strcmp(m, "unix-listen")) return unix_listen(SOCK_STREAM, 0, 0);
	if (!strcmp(m, "udp-corked")) return udp_corked(0);
	if (!strcmp(m, "udp-corked-data")) return udp_corked(1);
	if (!strcmp(m, "unix-listen-seqpacket")) return unix_listen(SOCK_SEQPACKET, 0, 0);
	if (!strcmp(m, "unix-listen-abstract")) return unix_listen(SOCK_STREAM, 1, 0);
	if (!strcmp(m, "unix-unaccepted")) return unix_listen(SOCK_STREAM, 0, 1);
	if (!strcmp(m, "unix-dgram")) return unix_dgram(0);
	if (!strcmp(m, "unix-dgram-abstract")) return unix_dgram(1);
	if (!strcmp(m, "unix-unconnected")) return unix_unconnected();
	if (!strcmp(m, "unix-shutdown")) return unix_shutdown();
	if (!strcmp(m, "unix-oob")) return unix_oob(1);
	if (!strcmp(m, "unix-oob-read")) return unix_oob(0);
	if (!strcmp(m, "unix-deleted")) return unix_deleted(1);
	if (!strcmp(m, "unix-deleted-dgram")) return unix_deleted(0);
	if (!strcmp(m, "scm-rights")) return scm_rights(0);
	if (!strcmp(m, "scm-rights-kept")) return scm_rights(1);
	if (!strcmp(m, "peercred")) return peercred();
	if (!strcmp(m, "tcp-listen")) return tcp_listen(AF_INET, 0);
	if (!strcmp(m, "tcp6-listen")) return tcp_listen(AF_INET6, 0);
	if (!strcmp(m, "tcp4v6-listen")) return tcp_listen(AF_INET6, 1);
	if (!strcmp(m, "udp")) return udp(AF_INET, 0, 0);
	if (!strcmp(m, "udp-connected")) return udp(AF_INET, 0, 1);
	if (!strcmp(m, "udp6")) return udp(AF_INET6, 0, 1);
	if (!strcmp(m, "udplite")) return udp(AF_INET, IPPROTO_UDPLITE, 0);
	if (!strcmp(m, "icmp")) return udp(AF_INET, IPPROTO_ICMP, 0);
	if (!strcmp(m, "udp-queued")) return udp_queued();
	if (!strcmp(m, "udp-sources")) return udp_sources();
	if (!strcmp(m, "multicast")) return multicast();
	if (!strcmp(m, "fifo-over-socket")) return fifo_over_socket(0);
	if (!strcmp(m, "fifo-over-socket-relative")) return fifo_over_socket(1);
	if (!strcmp(m, "sock-opts")) return sock_opts(AF_INET);
	if (!strcmp(m, "sock-opts6")) return sock_opts(AF_INET6);
	if (!strcmp(m, "sock-filter")) return sock_filter(0);
	if (!strcmp(m, "sock-filter-locked")) return sock_filter(1);
	if (!strcmp(m, "netlink-groups")) return netlink_groups();
	if (!strcmp(m, "netlink")) return other_family(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (!strcmp(m, "packet")) return other_family(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (!strcmp(m, "raw")) /* protocol 253 (for experiments): no packets arrive */
		return other_family(AF_INET, SOCK_RAW, 253);
	zt_setup_fail("unknown mode %s", m);
}
