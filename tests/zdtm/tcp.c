/* TCP connections inside the process (both ends), dumped with --tcp-established:
 * bytes in flight both ways, big unread buffers, IPv6, v4-mapped, an unconnected
 * socket, a reset connection, a connection still being made. */
#include "zdtm.h"
#include "net.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

/* A socket of LFAMILY listening on a loopback port for clients of CFAMILY (an IPv6
 * listener of IPv4 clients: on every address, both families). */
static int listener(int lfamily, int cfamily, int backlog)
{
	struct sockaddr_storage ss;
	int l = SYS(socket(lfamily, SOCK_STREAM, 0));
	if (lfamily == AF_INET6 && cfamily == AF_INET) {
		struct sockaddr_in6 any = { .sin6_family = AF_INET6, .sin6_addr = in6addr_any };
		SYS(bind(l, (void *)&any, sizeof(any)));
	} else
		SYS(bind(l, (void *)&ss, zt_loopback(&ss, lfamily, 0)));
	SYS(listen(l, backlog));
	return l;
}

/* A connected pair (client, server) over loopback. */
static void pair(int lfamily, int cfamily, int *cli, int *srv)
{
	struct sockaddr_storage ss;
	int l = listener(lfamily, cfamily, 1);
	*cli = SYS(socket(cfamily, SOCK_STREAM, 0));
	SYS(connect(*cli, (void *)&ss, zt_loopback(&ss, cfamily, zt_port_of(l))));
	*srv = SYS(accept(l, NULL, NULL));
	close(l);
}

static void recv_all(int fd, char *buf, size_t len, const char *what)
{
	size_t got = 0;
	while (got < len) {
		ssize_t n = recv(fd, buf + got, len - got, 0);
		CHECK(n > 0, "%s: connection broke after %zu of %zu bytes (%s)", what, got, len,
		      n < 0 ? strerror(errno) : "EOF");
		got += n;
	}
}

/* "ping" from client C to server S and "pong" back: the connection carries on. */
static void ping_pong(int c, int s)
{
	char b[4];
	SYS(send(c, "ping", 4, 0));
	recv_all(s, b, 4, "client to server");
	CHECK(!memcmp(b, "ping", 4), "ping");
	SYS(send(s, "pong", 4, 0));
	recv_all(c, b, 4, "server to client");
	CHECK(!memcmp(b, "pong", 4), "pong");
}

static int established(int lfamily, int cfamily, size_t big)
{
	int c, s;
	pair(lfamily, cfamily, &c, &s);
	size_t len = big ? big : 1000;
	char *out = malloc(len), *in = malloc(len);
	zt_fill(out, len, 17);
	SYS(fcntl(c, F_SETFL, O_NONBLOCK));
	size_t sent = 0; /* fill both queues: unread by the server, some never sent */
	while (sent < len) {
		ssize_t n = send(c, out + sent, len - sent, 0);
		if (n <= 0)
			break;
		sent += n;
	}
	SYS(fcntl(c, F_SETFL, 0));
	SYS(send(s, "reply", 5, 0));
	zt_ready();
	zt_wait();
	if (sent < len) { /* the rest goes once the reader reads */
		pid_t w = SYS(fork());
		if (w == 0) {
			while (sent < len) {
				ssize_t n = send(c, out + sent, len - sent, 0);
				if (n <= 0)
					_exit(1);
				sent += n;
			}
			_exit(0);
		}
		recv_all(s, in, len, "client to server");
		CHECK(zt_reap(w) == 0, "the rest of the bytes could not be sent");
	} else
		recv_all(s, in, len, "client to server");
	CHECK(!memcmp(in, out, len), "bytes differ");
	char r[5];
	recv_all(c, r, 5, "server to client");
	CHECK(!memcmp(r, "reply", 5), "reply");
	SYS(send(c, "more", 4, 0));
	recv_all(s, r, 4, "after the restore");
	zt_pass();
}

static int unconnected(void)
{
	int s = SYS(socket(AF_INET, SOCK_STREAM, 0));
	int b = SYS(socket(AF_INET, SOCK_STREAM, 0));
	struct sockaddr_storage ss;
	SYS(bind(b, (void *)&ss, zt_loopback(&ss, AF_INET, 0)));
	int port = zt_port_of(b);
	zt_ready();
	zt_wait();
	CHECK(zt_port_of(b) == port, "bound port");
	int t;
	socklen_t l = sizeof(t);
	CHECK(getsockopt(s, SOL_SOCKET, SO_TYPE, &t, &l) == 0 && t == SOCK_STREAM, "socket");
	zt_pass();
}

/* A connection the peer reset: reads report the reset (or EOF) as before. */
static int reset(void)
{
	int c, s;
	pair(AF_INET, AF_INET, &c, &s);
	struct linger lg = { 1, 0 };
	SYS(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)));
	close(s); /* RST */
	usleep(20000);
	zt_ready();
	zt_wait();
	char b;
	ssize_t n = recv(c, &b, 1, 0);
	CHECK(n <= 0, "a reset connection reads data");
	zt_pass();
}

/* A connect() in SYN_SENT: to a loopback listener whose queue is full, which drops
 * the SYN (nothing leaves the machine). After the restore the listener accepts what
 * its queue holds, and the connect that was under way completes: the restored socket
 * sent its SYN again, and it carries bytes both ways. */
static int syn_sent(int family)
{
	struct sockaddr_storage ss;
	int l = listener(family, family, 0);
	socklen_t len = zt_loopback(&ss, family, zt_port_of(l));
	int s = -1;
	for (int i = 0; i < 16 && s < 0; i++) {
		int c = SYS(socket(family, SOCK_STREAM, 0));
		SYS(fcntl(c, F_SETFL, O_NONBLOCK));
		connect(c, (void *)&ss, len);
		usleep(20000);
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		SYS(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tl));
		if (ti.tcpi_state == TCP_SYN_SENT)
			s = c;
	}
	if (s < 0)
		zt_setup_fail("no connection stayed in SYN_SENT");
	zt_ready();
	zt_wait();
	SYS(fcntl(l, F_SETFL, O_NONBLOCK));
	int mine = -1, port = zt_port_of(s);
	for (int tries = 0; tries < 600 && mine < 0; tries++) { /* 60 s */
		int a = accept(l, (void *)&ss, &(socklen_t){ sizeof(ss) });
		if (a >= 0 && zt_peer_port_of(a) == port)
			mine = a;
		else if (a < 0)
			usleep(100000);
	}
	CHECK(mine >= 0, "the connect under way never reached the listener");
	struct pollfd p = { .fd = s, .events = POLLOUT };
	CHECK(poll(&p, 1, 30000) == 1, "the connect under way did not complete");
	int err = 0;
	SYS(getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &(socklen_t){ sizeof(err) }));
	CHECK(err == 0, "the connect under way failed: %s", strerror(err));
	SYS(fcntl(s, F_SETFL, 0));
	ping_pong(s, mine);
	zt_pass();
}

/* TCP options the process set on an established connection (both ends), each read
 * back after the restore as it was, and the connection carrying bytes both ways; the
 * client's segment size (TCP_MAXSEG, which it had lowered before connecting) too. */
static int conn_opts(int family)
{
	struct sockaddr_storage ss;
	int l = listener(family, family, 1);
	int c = SYS(socket(family, SOCK_STREAM, 0)), mss = 1200;
	SYS(setsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof(mss)));
	SYS(connect(c, (void *)&ss, zt_loopback(&ss, family, zt_port_of(l))));
	int s = SYS(accept(l, NULL, NULL));
	struct { int level, name, val; const char *what; } opts[] = {
		{ IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY" },
		{ SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE" },
		{ IPPROTO_TCP, TCP_KEEPIDLE, 55, "TCP_KEEPIDLE" },
		{ IPPROTO_TCP, TCP_KEEPINTVL, 7, "TCP_KEEPINTVL" },
		{ IPPROTO_TCP, TCP_KEEPCNT, 3, "TCP_KEEPCNT" },
		{ IPPROTO_TCP, TCP_USER_TIMEOUT, 12345, "TCP_USER_TIMEOUT" },
		{ IPPROTO_TCP, TCP_WINDOW_CLAMP, 40000, "TCP_WINDOW_CLAMP" },
		{ IPPROTO_TCP, TCP_NOTSENT_LOWAT, 16384, "TCP_NOTSENT_LOWAT" },
		{ IPPROTO_TCP, TCP_LINGER2, 9, "TCP_LINGER2" },
		{ IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, 1, "TCP_THIN_LINEAR_TIMEOUTS" },
		{ SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR" },
		{ SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT" },
	};
	int n = sizeof(opts) / sizeof(opts[0]), fds[2] = { c, s };
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < n; i++)
			SYS(setsockopt(fds[k], opts[i].level, opts[i].name, &opts[i].val, sizeof(int)));
	int one = 1; /* corked: the bytes wait until uncorked (or 200 ms) */
	SYS(setsockopt(s, IPPROTO_TCP, TCP_CORK, &one, sizeof(one)));
	char cc[16] = "", cc2[16] = "";
	int reno = setsockopt(c, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0;
	int seg = 0;
	SYS(getsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &seg, &(socklen_t){ sizeof(seg) }));
	CHECK(seg <= 1200, "TCP_MAXSEG %d before the dump", seg);
	SYS(send(c, "before", 6, 0));
	struct tcp_info was[2], now;
	for (int k = 0; k < 2; k++)
		SYS(getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &was[k], &(socklen_t){ sizeof(was[k]) }));
	zt_ready();
	zt_wait();
	for (int k = 0; k < 2; k++) { /* what the handshake negotiated */
		SYS(getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &now, &(socklen_t){ sizeof(now) }));
		CHECK(now.tcpi_options == was[k].tcpi_options, "end %d: options %#x, were %#x", k,
		      now.tcpi_options, was[k].tcpi_options);
		CHECK(now.tcpi_snd_wscale == was[k].tcpi_snd_wscale &&
		      now.tcpi_rcv_wscale == was[k].tcpi_rcv_wscale,
		      "end %d: window scales %d/%d, were %d/%d", k, now.tcpi_snd_wscale,
		      now.tcpi_rcv_wscale, was[k].tcpi_snd_wscale, was[k].tcpi_rcv_wscale);
	}
	for (int k = 0; k < 2; k++)
		for (int i = 0; i < n; i++) {
			int v = -1;
			getsockopt(fds[k], opts[i].level, opts[i].name, &v, &(socklen_t){ sizeof(v) });
			CHECK(v == opts[i].val, "%s %s: %d, expected %d", k ? "server" : "client",
			      opts[i].what, v, opts[i].val);
		}
	int v = 0;
	getsockopt(s, IPPROTO_TCP, TCP_CORK, &v, &(socklen_t){ sizeof(v) });
	CHECK(v == 1, "TCP_CORK %d", v);
	if (reno) {
		getsockopt(c, IPPROTO_TCP, TCP_CONGESTION, cc, &(socklen_t){ sizeof(cc) });
		getsockopt(s, IPPROTO_TCP, TCP_CONGESTION, cc2, &(socklen_t){ sizeof(cc2) });
		CHECK(!strcmp(cc, "reno"), "client TCP_CONGESTION %s", cc);
	}
	getsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &v, &(socklen_t){ sizeof(v) });
	CHECK(v == seg, "client TCP_MAXSEG %d, was %d", v, seg);
	char b[8];
	recv_all(s, b, 6, "before the dump");
	CHECK(!memcmp(b, "before", 6), "before");
	SYS(send(s, "after", 5, 0));
	int zero = 0;
	SYS(setsockopt(s, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero)));
	recv_all(c, b, 5, "after the restore");
	CHECK(!memcmp(b, "after", 5), "after");
	zt_pass();
}

/* Both ends closed their side of a connection (each sent a FIN, each acknowledged):
 * both sockets are in CLOSE. After the restore each reads the end of file, a write
 * fails, and each keeps its own address and its peer's (SO_PEERNAME tells it even in
 * CLOSE, where getpeername says ENOTCONN). */
static int closed(int lfamily, int cfamily)
{
	int c, s;
	pair(lfamily, cfamily, &c, &s);
	SYS(shutdown(c, SHUT_WR));
	SYS(shutdown(s, SHUT_WR));
	int fds[2] = { c, s }, fams[2] = { cfamily, lfamily };
	struct sockaddr_storage me[2], peer[2], now;
	socklen_t ml[2], pl[2];
	for (int k = 0; k < 2; k++) {
		for (int tries = 0;; tries++) { /* the FINs and ACKs go through loopback */
			struct tcp_info ti;
			SYS(getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &ti, &(socklen_t){ sizeof(ti) }));
			if (ti.tcpi_state == TCP_CLOSE)
				break;
			if (tries == 500)
				zt_setup_fail("end %d not in CLOSE (state %d)", k, ti.tcpi_state);
			usleep(10000);
		}
		/* SO_PEERNAME wants a buffer no longer than the address */
		ml[k] = pl[k] = fams[k] == AF_INET ? sizeof(struct sockaddr_in)
						   : sizeof(struct sockaddr_in6);
		SYS(getsockname(fds[k], (void *)&me[k], &ml[k]));
		SYS(getsockopt(fds[k], SOL_SOCKET, SO_PEERNAME, &peer[k], &pl[k]));
	}
	zt_ready();
	zt_wait();
	for (int k = 0; k < 2; k++) {
		char b;
		CHECK(recv(fds[k], &b, 1, MSG_DONTWAIT) == 0, "end %d: no end of file", k);
		CHECK(send(fds[k], "x", 1, MSG_NOSIGNAL) < 0, "end %d writes", k);
		socklen_t l = sizeof(now);
		SYS(getsockname(fds[k], (void *)&now, &l));
		CHECK(l == ml[k] && !memcmp(&now, &me[k], l), "end %d: its address changed", k);
		l = pl[k];
		SYS(getsockopt(fds[k], SOL_SOCKET, SO_PEERNAME, &now, &l));
		CHECK(l == pl[k] && !memcmp(&now, &peer[k], l), "end %d: its peer's address changed",
		      k);
	}
	zt_pass();
}

/* A connection not accepted yet whose client (in the process) sent nothing: after the
 * restore the listener accepts it and bytes go both ways. */
static int unaccepted(int lfamily, int cfamily)
{
	struct sockaddr_storage ss;
	int l = listener(lfamily, cfamily, 4);
	int c = SYS(socket(cfamily, SOCK_STREAM, 0));
	SYS(connect(c, (void *)&ss, zt_loopback(&ss, cfamily, zt_port_of(l))));
	zt_ready();
	zt_wait();
	SYS(fcntl(l, F_SETFL, O_NONBLOCK));
	int a = accept(l, NULL, NULL);
	CHECK(a >= 0, "no connection to accept: %s", strerror(errno));
	CHECK(zt_peer_port_of(a) == zt_port_of(c), "accepted another connection");
	ping_pong(c, a);
	zt_pass();
}

/* An end shut down for reading only (shutdown(SHUT_RD): no packet, the socket reads
 * the end of file once its queue is empty; its peer can still write to it). */
static int shut_rd(int family)
{
	int c, s;
	pair(family, family, &c, &s);
	SYS(shutdown(s, SHUT_RD));
	zt_ready();
	zt_wait();
	char b[4];
	struct pollfd p = { .fd = s, .events = POLLIN | POLLRDHUP };
	CHECK(poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP), "not shut down for reading (%#x)",
	      p.revents);
	ssize_t n = recv(s, b, sizeof(b), MSG_DONTWAIT);
	CHECK(n == 0, "recv gave %zd (%s), not the end of file", n, n < 0 ? strerror(errno) : "data");
	SYS(send(s, "out", 3, 0)); /* it still writes */
	recv_all(c, b, 3, "from the end shut down for reading");
	CHECK(!memcmp(b, "out", 3), "out");
	zt_pass();
}

/* Small buffers the process set (SO_RCVBUF, SO_SNDBUF), both full: after the restore
 * each reads back the size it had, and every byte queued arrives. */
static int small_bufs(int family)
{
	struct sockaddr_storage ss;
	int l = listener(family, family, 1), small = 4096;
	int c = SYS(socket(family, SOCK_STREAM, 0));
	SYS(setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)));
	SYS(connect(c, (void *)&ss, zt_loopback(&ss, family, zt_port_of(l))));
	int s = SYS(accept(l, NULL, NULL));
	SYS(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)));
	SYS(fcntl(c, F_SETFL, O_NONBLOCK));
	char out[1 << 16], in[1 << 16];
	zt_fill(out, sizeof(out), 5);
	size_t sent = 0;
	for (int idle = 0; idle < 20 && sent < sizeof(out);) {
		ssize_t n = send(c, out + sent, sizeof(out) - sent, 0);
		if (n > 0) {
			sent += n;
			idle = 0;
		} else {
			idle++;
			usleep(10000);
		}
	}
	SYS(fcntl(c, F_SETFL, 0));
	int snd = 0, rcv = 0;
	SYS(getsockopt(c, SOL_SOCKET, SO_SNDBUF, &snd, &(socklen_t){ sizeof(snd) }));
	SYS(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcv, &(socklen_t){ sizeof(rcv) }));
	zt_ready();
	zt_wait();
	int v = 0;
	SYS(getsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, &(socklen_t){ sizeof(v) }));
	CHECK(v == snd, "SO_SNDBUF %d, was %d", v, snd);
	SYS(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &(socklen_t){ sizeof(v) }));
	CHECK(v == rcv, "SO_RCVBUF %d, was %d", v, rcv);
	recv_all(s, in, sent, "the bytes queued both sides");
	CHECK(!memcmp(in, out, sent), "bytes differ");
	zt_pass();
}

/* Two listeners sharing a port (SO_REUSEPORT). */
static int reuseport(void)
{
	int one = 1, l[2];
	struct sockaddr_storage ss;
	for (int i = 0; i < 2; i++) {
		l[i] = SYS(socket(AF_INET, SOCK_STREAM, 0));
		SYS(setsockopt(l[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)));
		SYS(bind(l[i], (void *)&ss, zt_loopback(&ss, AF_INET, i ? zt_port_of(l[0]) : 0)));
		SYS(listen(l[i], 4));
	}
	zt_ready();
	zt_wait();
	CHECK(zt_port_of(l[0]) == zt_port_of(l[1]), "ports differ");
	int c = SYS(socket(AF_INET, SOCK_STREAM, 0));
	CHECK(connect(c, (void *)&ss, zt_loopback(&ss, AF_INET, zt_port_of(l[0]))) == 0, "connect");
	zt_pass();
}

/* Dumped with --tcp-close: the connection comes back closed. */
static int closed_on_restore(void)
{
	struct sockaddr_storage ss;
	int l = listener(AF_INET, AF_INET, 1);
	socklen_t len = zt_loopback(&ss, AF_INET, zt_port_of(l));
	int c = SYS(socket(AF_INET, SOCK_STREAM, 0));
	SYS(connect(c, (void *)&ss, len));
	int s = SYS(accept(l, NULL, NULL));
	SYS(send(c, "lost", 4, 0));
	zt_ready();
	zt_wait();
	/* as criu's socket-tcp-close0 wants it: closed, the end of file, a hang-up and
	 * no error, writes failing with EPIPE */
	int fds[2] = { c, s };
	for (int k = 0; k < 2; k++) {
		struct tcp_info ti;
		char b[8];
		SYS(getsockopt(fds[k], IPPROTO_TCP, TCP_INFO, &ti, &(socklen_t){ sizeof(ti) }));
		CHECK(ti.tcpi_state == TCP_CLOSE, "end %d in state %d, not CLOSE", k, ti.tcpi_state);
		ssize_t n = recv(fds[k], b, sizeof(b), MSG_DONTWAIT);
		CHECK(n == 0, "end %d: recv gave %zd (%s), not the end of file", k, n,
		      n < 0 ? strerror(errno) : "data");
		struct pollfd p = { .fd = fds[k], .events = POLLHUP };
		CHECK(poll(&p, 1, 0) == 1 && p.revents == POLLHUP, "end %d: poll gave %#x", k,
		      p.revents);
		CHECK(send(fds[k], "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE,
		      "end %d: a write did not fail with EPIPE", k);
	}
	int n = SYS(socket(AF_INET, SOCK_STREAM, 0)); /* the listener listens on */
	CHECK(connect(n, (void *)&ss, len) == 0, "connect");
	CHECK(accept(l, NULL, NULL) >= 0, "accept");
	zt_pass();
}

/* A connection not yet accepted, dumped with --skip-in-flight: the listener comes
 * back without it and accepts new ones. */
static int in_flight(void)
{
	struct sockaddr_storage ss;
	int l = SYS(socket(AF_INET, SOCK_STREAM, 0));
	SYS(bind(l, (void *)&ss, zt_loopback(&ss, AF_INET, 0)));
	SYS(listen(l, 4));
	int c = SYS(socket(AF_INET, SOCK_STREAM, 0));
	SYS(connect(c, (void *)&ss, zt_loopback(&ss, AF_INET, zt_port_of(l))));
	close(c);
	usleep(20000);
	zt_ready();
	zt_wait();
	int n = SYS(socket(AF_INET, SOCK_STREAM, 0));
	CHECK(connect(n, (void *)&ss, zt_loopback(&ss, AF_INET, zt_port_of(l))) == 0, "connect");
	int a = accept(l, NULL, NULL);
	CHECK(a >= 0, "accept");
	zt_pass();
}

/* Urgent data (MSG_OOB; telnet, ftp's ABOR): a byte waiting at its mark (PENDING) is
 * refused at dump; one read already, and one sent to a socket taking it inline
 * (SO_OOBINLINE), come back as plain data with the rest. */
static int urgent(int pending)
{
	int c, s, c2, s2, one = 1;
	char u = 0, buf[16];
	pair(AF_INET, AF_INET, &c, &s);
	pair(AF_INET, AF_INET, &c2, &s2);
	SYS(setsockopt(s2, SOL_SOCKET, SO_OOBINLINE, &one, sizeof(one)));
	SYS(send(c, "ab", 2, 0));
	SYS(send(c, "U", 1, MSG_OOB));
	SYS(send(c, "cd", 2, 0));
	SYS(send(c2, "xY", 2, MSG_OOB));
	for (int i = 0; i < 500; i++) {  /* the urgent byte is there */
		if (recv(s, &u, 1, MSG_OOB | MSG_PEEK | MSG_DONTWAIT) == 1)
			break;
		usleep(10000);
	}
	if (u != 'U')
		zt_setup_fail("no urgent byte arrived");
	if (!pending)
		SYS(recv(s, &u, 1, MSG_OOB));
	zt_ready();
	zt_wait();
	if (pending)
		CHECK(recv(s, &u, 1, MSG_OOB | MSG_DONTWAIT) == 1 && u == 'U', "the urgent byte");
	else
		CHECK(recv(s, &u, 1, MSG_OOB | MSG_DONTWAIT) < 0, "an urgent byte came back");
	recv_all(s, buf, 4, "the stream around the mark");
	CHECK(!memcmp(buf, "abcd", 4), "stream %.4s", buf);
	recv_all(s2, buf, 2, "inline urgent byte");
	CHECK(!memcmp(buf, "xY", 2), "inline stream %.2s", buf);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "tcp")) return established(AF_INET, AF_INET, 0);
	if (!strcmp(m, "tcp6")) return established(AF_INET6, AF_INET6, 0);
	if (!strcmp(m, "tcp4v6")) return established(AF_INET6, AF_INET, 0);
	if (!strcmp(m, "tcpbuf")) return established(AF_INET, AF_INET, 4 << 20);
	if (!strcmp(m, "tcpbuf6")) return established(AF_INET6, AF_INET6, 4 << 20);
	if (!strcmp(m, "tcp-unconn")) return unconnected();
	if (!strcmp(m, "tcp-oob")) return urgent(1);
	if (!strcmp(m, "tcp-oob-read")) return urgent(0);
	if (!strcmp(m, "tcp-reset")) return reset();
	if (!strcmp(m, "tcp-syn-sent")) return syn_sent(AF_INET);
	if (!strcmp(m, "tcp6-syn-sent")) return syn_sent(AF_INET6);
	if (!strcmp(m, "tcp-reuseport")) return reuseport();
	if (!strcmp(m, "tcp-small-bufs")) return small_bufs(AF_INET);
	if (!strcmp(m, "tcp-shut-rd")) return shut_rd(AF_INET);
	if (!strcmp(m, "tcp6-shut-rd")) return shut_rd(AF_INET6);
	if (!strcmp(m, "tcp-unaccepted")) return unaccepted(AF_INET, AF_INET);
	if (!strcmp(m, "tcp6-unaccepted")) return unaccepted(AF_INET6, AF_INET6);
	if (!strcmp(m, "tcp4v6-unaccepted")) return unaccepted(AF_INET6, AF_INET);
	if (!strcmp(m, "tcp-closed")) return closed(AF_INET, AF_INET);
	if (!strcmp(m, "tcp6-closed")) return closed(AF_INET6, AF_INET6);
	if (!strcmp(m, "tcp4v6-closed")) return closed(AF_INET6, AF_INET);
	if (!strcmp(m, "tcp-conn-opts")) return conn_opts(AF_INET);
	if (!strcmp(m, "tcp6-conn-opts")) return conn_opts(AF_INET6);
	if (!strcmp(m, "tcp-no-flag")) return established(AF_INET, AF_INET, 0);
	if (!strcmp(m, "tcp-close")) return closed_on_restore();
	if (!strcmp(m, "tcp-skip-in-flight")) return in_flight();
	zt_setup_fail("unknown mode %s", m);
}
