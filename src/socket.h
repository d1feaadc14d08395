/* TCP helpers of the bootstrap: address conversion, interface choice, and connect /
 * send / receive that never block past a deadline.
 *
 * Every socket made here is non-blocking, close-on-exec and TCP_NODELAY (bootstrap
 * messages are small and latency bound); all waiting happens in poll() against a
 * deadline on the monotonic clock, alongside an optional abort fd that, once readable,
 * makes the wait fail at once. Sends use MSG_NOSIGNAL so a vanished peer is an error
 * code, never SIGPIPE. */
#ifndef SNAPCCL_SOCKET_H
#define SNAPCCL_SOCKET_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nccl.h"

union snapccl_sockaddr {
  struct sockaddr sa;
  struct sockaddr_in sin;
  struct sockaddr_in6 sin6;
};

/* The address as it travels in ids and bootstrap messages (same fields as the id). */
struct snapccl_wire_addr {
  uint16_t family;   /* AF_INET or AF_INET6 */
  uint16_t port;     /* network byte order */
  uint32_t scope_id; /* IPv6 scope */
  uint8_t addr[16];  /* IPv4 in the first 4 bytes */
};
_Static_assert(sizeof(struct snapccl_wire_addr) == 24, "wire address layout");

/* Milliseconds on the monotonic clock. */
int64_t snapccl_now_ms(void);
/* now + SNAPCCL_BOOTSTRAP_TIMEOUT: the deadline of one bootstrap step. */
int64_t snapccl_socket_deadline(void);

socklen_t snapccl_sockaddr_len(const union snapccl_sockaddr* a);
/* "1.2.3.4:5" or "[fe80::1%2]:5"; always terminated, returns buf. */
const char* snapccl_sockaddr_str(const union snapccl_sockaddr* a, char* buf, size_t len);
void snapccl_sockaddr_to_wire(const union snapccl_sockaddr* a, struct snapccl_wire_addr* w);
/* 0 on success, -1 if the family is not AF_INET/AF_INET6 or the port or address is
 * zero (nothing could listen there). */
int snapccl_sockaddr_from_wire(const struct snapccl_wire_addr* w, union snapccl_sockaddr* a);

/* The local address bootstrap listeners bind to (port 0): 127.0.0.1 if ifname is
 * empty, else the first address of the first interface that ifname selects, NCCL
 * style: "eth,ib" prefixes, "^docker,lo" excludes prefixes, "=eth0" exact names.
 * IPv4 addresses are preferred, then global IPv6, then link-local IPv6. */
ncclResult_t snapccl_socket_pick_addr(const char* ifname, union snapccl_sockaddr* out);

/* Binds a listener to *addr (port 0 = ephemeral) and writes the bound address back. */
ncclResult_t snapccl_socket_listen(union snapccl_sockaddr* addr, int* fd);

/* Accepts one pending connection without waiting. Returns 1 with *fd set (made
 * non-blocking and TCP_NODELAY) and *peer filled, 0 if none is pending, -1 with errno
 * on failure (connections that failed before we took them are skipped). */
int snapccl_socket_try_accept(int listen_fd, int* fd, union snapccl_sockaddr* peer);

/* Connects to addr, retrying while the peer refuses (it may not listen yet) until the
 * deadline. `what` names the step in the error reason (e.g. "rank 3: connect to root
 * 10.0.0.1:5000"). Timeout -> ncclRemoteError, local failures -> ncclSystemError. */
ncclResult_t snapccl_socket_connect(const union snapccl_sockaddr* addr, int64_t deadline_ms,
                                    int abort_fd, int* fd, const char* what);

/* One direction of a transfer: len bytes of buf, done of them moved so far. */
struct snapccl_xfer {
  int fd;
  void* buf;
  size_t len;
  size_t done;
};

/* Moves the rest of *send and *recv (either may be NULL) at the same time, so two
 * peers exchanging large buffers over a ring cannot block each other in send().
 * Peer closed / reset / deadline -> ncclRemoteError, abort -> ncclRemoteError,
 * anything else -> ncclSystemError; each with a reason starting with `what`. */
ncclResult_t snapccl_socket_xfer(struct snapccl_xfer* send, struct snapccl_xfer* recv,
                                 int64_t deadline_ms, int abort_fd, const char* what);
ncclResult_t snapccl_socket_send_all(int fd, const void* buf, size_t len, int64_t deadline_ms,
                                     int abort_fd, const char* what);
ncclResult_t snapccl_socket_recv_all(int fd, void* buf, size_t len, int64_t deadline_ms,
                                     int abort_fd, const char* what);

/* Milliseconds poll() may wait before deadline_ms (0 if it passed). */
int snapccl_poll_timeout(int64_t deadline_ms);
/* 1 if abort_fd (>= 0) is readable, i.e. the owner was aborted. */
int snapccl_aborted(int abort_fd);

#endif
