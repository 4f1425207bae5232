/* Loopback addresses and ports for the socket programs of tests/zdtm. */
#ifndef ZDTM_NET_H
#define ZDTM_NET_H
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* The loopback address of FAMILY at PORT in SS; its length. */
static socklen_t zt_loopback(struct sockaddr_storage *ss, int family, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (void *)ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		return sizeof(*a);
	}
	struct sockaddr_in6 *a = (void *)ss;
	a->sin6_family = AF_INET6;
	a->sin6_port = htons(port);
	a->sin6_addr = in6addr_loopback;
	return sizeof(*a);
}

/* The port of an IPv4 or IPv6 address. */
static int zt_port_in(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
					      : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* The local port of an IPv4 or IPv6 socket. */
static int zt_port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	getsockname(fd, (void *)&ss, &l);
	return zt_port_in(&ss);
}

/* The port of the peer of a connected IPv4 or IPv6 socket. */
static int zt_peer_port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t l = sizeof(ss);
	getpeername(fd, (void *)&ss, &l);
	return zt_port_in(&ss);
}
#endif
