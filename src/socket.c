#include "socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "error.h"
#include "log.h"

int64_t snapccl_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t snapccl_socket_deadline(void) {
  double t = snapccl_env()->bootstrap_timeout_s;
  if (!(t > 0)) t = 0.001; /* a zero or negative setting still means "do not hang" */
  if (t > 1e9) t = 1e9;
  return snapccl_now_ms() + (int64_t)(t * 1000.0);
}

int snapccl_poll_timeout(int64_t deadline_ms) {
  int64_t left = deadline_ms - snapccl_now_ms();
  if (left <= 0) return 0;
  return left > 1000000 ? 1000000 : (int)left;
}

int snapccl_aborted(int abort_fd) {
  if (abort_fd < 0) return 0;
  struct pollfd p = {.fd = abort_fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* ---- addresses ---- */

socklen_t snapccl_sockaddr_len(const union snapccl_sockaddr* a) {
  return a->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

const char* snapccl_sockaddr_str(const union snapccl_sockaddr* a, char* buf, size_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (a->sa.sa_family == AF_INET) {
    inet_ntop(AF_INET, &a->sin.sin_addr, host, sizeof host);
    snprintf(buf, len, "%s:%u", host, ntohs(a->sin.sin_port));
  } else if (a->sa.sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &a->sin6.sin6_addr, host, sizeof host);
    if (a->sin6.sin6_scope_id)
      snprintf(buf, len, "[%s%%%u]:%u", host, a->sin6.sin6_scope_id, ntohs(a->sin6.sin6_port));
    else
      snprintf(buf, len, "[%s]:%u", host, ntohs(a->sin6.sin6_port));
  } else {
    snprintf(buf, len, "<family %d>", a->sa.sa_family);
  }
  return buf;
}

void snapccl_sockaddr_to_wire(const union snapccl_sockaddr* a, struct snapccl_wire_addr* w) {
  memset(w, 0, sizeof *w);
  w->family = a->sa.sa_family;
  if (a->sa.sa_family == AF_INET) {
    w->port = a->sin.sin_port;
    memcpy(w->addr, &a->sin.sin_addr, 4);
  } else if (a->sa.sa_family == AF_INET6) {
    w->port = a->sin6.sin6_port;
    w->scope_id = a->sin6.sin6_scope_id;
    memcpy(w->addr, &a->sin6.sin6_addr, 16);
  }
}

static int all_zero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

int snapccl_sockaddr_from_wire(const struct snapccl_wire_addr* w, union snapccl_sockaddr* a) {
  memset(a, 0, sizeof *a);
  if (w->port == 0) return -1;
  if (w->family == AF_INET) {
    if (all_zero(w->addr, 4) || !all_zero(w->addr + 4, 12)) return -1;
    a->sin.sin_family = AF_INET;
    a->sin.sin_port = w->port;
    memcpy(&a->sin.sin_addr, w->addr, 4);
    return 0;
  }
  if (w->family == AF_INET6) {
    if (all_zero(w->addr, 16)) return -1;
    a->sin6.sin6_family = AF_INET6;
    a->sin6.sin6_port = w->port;
    a->sin6.sin6_scope_id = w->scope_id;
    memcpy(&a->sin6.sin6_addr, w->addr, 16);
    return 0;
  }
  return -1;
}

/* ---- interface choice ---- */

#define IF_MAX_NAMES 16

struct if_filter {
  int exclude; /* "^a,b": everything but prefixes a, b */
  int exact;   /* "=a,b": exactly a or b */
  int n;
  char names[IF_MAX_NAMES][IF_NAMESIZE + 1];
};

static void parse_ifname(const char* s, struct if_filter* f) {
  memset(f, 0, sizeof *f);
  if (*s == '^') f->exclude = 1, s++;
  if (*s == '=') f->exact = 1, s++;
  while (*s && f->n < IF_MAX_NAMES) {
    size_t k = strcspn(s, ",");
    if (k > 0) {
      size_t c = k < IF_NAMESIZE ? k : IF_NAMESIZE;
      memcpy(f->names[f->n], s, c);
      f->names[f->n][c] = 0;
      f->n++;
    }
    s += k;
    if (*s == ',') s++;
  }
}

static int if_matches(const struct if_filter* f, const char* name) {
  int hit = 0;
  for (int i = 0; i < f->n && !hit; i++)
    hit = f->exact ? strcmp(name, f->names[i]) == 0
                   : strncmp(name, f->names[i], strlen(f->names[i])) == 0;
  return f->exclude ? !hit : hit;
}

/* 0: IPv4, 1: global IPv6, 2: link-local IPv6 (needs its scope), -1: unusable. */
static int addr_class(const struct sockaddr* sa) {
  if (sa->sa_family == AF_INET) return 0;
  if (sa->sa_family != AF_INET6) return -1;
  const struct in6_addr* a6 = &((const struct sockaddr_in6*)sa)->sin6_addr;
  if (IN6_IS_ADDR_LINKLOCAL(a6)) return 2;
  return 1;
}

ncclResult_t snapccl_socket_pick_addr(const char* ifname, union snapccl_sockaddr* out) {
  memset(out, 0, sizeof *out);
  if (!ifname || !*ifname) {
    out->sin.sin_family = AF_INET;
    out->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ncclSuccess;
  }
  struct if_filter f;
  parse_ifname(ifname, &f);
  struct ifaddrs* list = NULL;
  SYS_CHECK(getifaddrs(&list));
  /* Preference by class first, then by the kernel's interface order. */
  for (int cls = 0; cls < 3; cls++) {
    for (struct ifaddrs* i = list; i; i = i->ifa_next) {
      if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || !if_matches(&f, i->ifa_name)) continue;
      if (addr_class(i->ifa_addr) != cls) continue;
      if (cls == 0) {
        out->sin = *(const struct sockaddr_in*)i->ifa_addr;
      } else {
        out->sin6 = *(const struct sockaddr_in6*)i->ifa_addr;
        if (cls == 2 && !out->sin6.sin6_scope_id) out->sin6.sin6_scope_id = if_nametoindex(i->ifa_name);
        out->sin6.sin6_port = 0;
      }
      out->sin.sin_port = 0;
      char s[80];
      INFO(SUB_BOOT, "bootstrap interface %s address %s (SNAPCCL_SOCKET_IFNAME=%s)", i->ifa_name,
           snapccl_sockaddr_str(out, s, sizeof s), ifname);
      freeifaddrs(list);
      return ncclSuccess;
    }
  }
  freeifaddrs(list);
  SNAP_FAIL(ncclSystemError, "no up interface with an IPv4/IPv6 address matches "
            "SNAPCCL_SOCKET_IFNAME=%s", ifname);
}

/* ---- sockets ---- */

static void set_nodelay(int fd) {
  int one = 1;
  /* Best effort: a failure costs latency, not correctness. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

ncclResult_t snapccl_socket_listen(union snapccl_sockaddr* addr, int* fd_out) {
  char s[80];
  int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  SYS_CHECK(fd);
  socklen_t len = snapccl_sockaddr_len(addr);
  if (bind(fd, &addr->sa, len) != 0 || listen(fd, SOMAXCONN) != 0 ||
      getsockname(fd, &addr->sa, &len) != 0) {
    int e = errno;
    close(fd);
    SNAP_FAIL(ncclSystemError, "listen on %s failed: %s", snapccl_sockaddr_str(addr, s, sizeof s),
              strerror(e));
  }
  *fd_out = fd;
  return ncclSuccess;
}

int snapccl_socket_try_accept(int listen_fd, int* fd, union snapccl_sockaddr* peer) {
  for (;;) {
    socklen_t len = sizeof *peer;
    memset(peer, 0, sizeof *peer);
    int c = accept4(listen_fd, &peer->sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) {
      set_nodelay(c);
      *fd = c;
      return 1;
    }
    /* That peer gave up, or (Linux passes them on) its connection met a network
     * error before we took it: next. */
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO || errno == ENETDOWN ||
        errno == ENOPROTOOPT || errno == EHOSTDOWN || errno == ENONET || errno == EHOSTUNREACH ||
        errno == EOPNOTSUPP || errno == ENETUNREACH || errno == EPERM)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

/* Waits for events on fd (and the abort fd). 1: ready, 0: deadline, -2: aborted,
 * -1: poll failed (errno). */
static int wait_fd(int fd, short events, int64_t deadline_ms, int abort_fd) {
  for (;;) {
    struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = abort_fd, .events = POLLIN}};
    int r = poll(p, 2, snapccl_poll_timeout(deadline_ms));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (p[1].revents & POLLIN) return -2;
    if (r == 0) {
      if (snapccl_now_ms() >= deadline_ms) return 0;
      continue; /* poll's rounding woke us a little early */
    }
    return 1;
  }
}

static double timeout_s(void) { return snapccl_env()->bootstrap_timeout_s; }

/* Errors that mean "nobody there yet" or a transient path problem: try again. */
static int retryable(int e) {
  return e == ECONNREFUSED || e == ETIMEDOUT || e == ECONNRESET || e == EHOSTUNREACH ||
         e == ENETUNREACH || e == EAGAIN || e == ECONNABORTED || e == EINTR;
}

/* One connect attempt. Returns 0 with *fd on success, else the errno (-2 aborted,
 * -3 deadline). */
static int connect_once(const union snapccl_sockaddr* addr, int64_t deadline_ms, int abort_fd,
                        int* fd_out) {
  int fd = socket(addr->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = 0;
  if (connect(fd, &addr->sa, snapccl_sockaddr_len(addr)) != 0) {
    err = errno;
    if (err == EINPROGRESS || err == EINTR) {
      int w = wait_fd(fd, POLLOUT, deadline_ms, abort_fd);
      socklen_t l = sizeof err;
      if (w == 1) err = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &l) == 0 ? err : errno;
      else err = w == 0 ? -3 : w == -2 ? -2 : errno;
    }
  }
  if (err == 0) {
    /* Loopback to a free port in the ephemeral range can "connect" to itself (TCP
     * simultaneous open); that is nobody listening, so treat it as refused. */
    union snapccl_sockaddr me, peer;
    socklen_t a = sizeof me, b = sizeof peer;
    if (getsockname(fd, &me.sa, &a) == 0 && getpeername(fd, &peer.sa, &b) == 0 && a == b &&
        memcmp(&me, &peer, a) == 0)
      err = ECONNREFUSED;
  }
  if (err != 0) {
    close(fd);
    return err;
  }
  set_nodelay(fd);
  *fd_out = fd;
  return 0;
}

ncclResult_t snapccl_socket_connect(const union snapccl_sockaddr* addr, int64_t deadline_ms,
                                    int abort_fd, int* fd, const char* what) {
  int backoff_ms = 5, last = 0, tries = 0;
  for (;;) {
    int err = connect_once(addr, deadline_ms, abort_fd, fd);
    tries++;
    if (err == 0) return ncclSuccess;
    if (err == -2) SNAP_FAIL(ncclRemoteError, "%s: aborted", what);
    if (err > 0 && !retryable(err))
      SNAP_FAIL(ncclSystemError, "%s: connect failed: %s", what, strerror(err));
    if (err > 0) last = err;
    if (err == -3 || snapccl_now_ms() >= deadline_ms)
      SNAP_FAIL(ncclRemoteError, "%s: no connection within SNAPCCL_BOOTSTRAP_TIMEOUT=%g s "
                "(%d attempts, last: %s)", what, timeout_s(), tries,
                last ? strerror(last) : "timed out");
    /* The peer may simply not listen yet: wait a little (abortably) and retry. */
    int64_t until = snapccl_now_ms() + backoff_ms;
    if (until > deadline_ms) until = deadline_ms;
    if (abort_fd >= 0) {
      struct pollfd p = {.fd = abort_fd, .events = POLLIN};
      if (poll(&p, 1, snapccl_poll_timeout(until)) == 1 && (p.revents & POLLIN))
        SNAP_FAIL(ncclRemoteError, "%s: aborted", what);
    } else {
      poll(NULL, 0, snapccl_poll_timeout(until));
    }
    if (backoff_ms < 100) backoff_ms *= 2;
  }
}

/* ---- data ---- */

static int pending(const struct snapccl_xfer* x) { return x && x->done < x->len; }

/* Moves what the socket takes / has now. 1: moved bytes, 0: would block, -1: peer gone
 * (errno 0 means orderly close), -2: local error (errno). */
static int step(struct snapccl_xfer* x, int is_send) {
  for (;;) {
    char* p = (char*)x->buf + x->done;
    ssize_t k = is_send ? send(x->fd, p, x->len - x->done, MSG_NOSIGNAL | MSG_DONTWAIT)
                        : recv(x->fd, p, x->len - x->done, MSG_DONTWAIT);
    if (k > 0) {
      x->done += (size_t)k;
      return 1;
    }
    if (k == 0 && !is_send) {
      errno = 0;
      return -1;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (k < 0 && (errno == EPIPE || errno == ECONNRESET || errno == ETIMEDOUT ||
                  errno == EHOSTUNREACH || errno == ENETUNREACH))
      return -1;
    return -2;
  }
}

ncclResult_t snapccl_socket_xfer(struct snapccl_xfer* s, struct snapccl_xfer* r,
                                 int64_t deadline_ms, int abort_fd, const char* what) {
  for (;;) {
    int progress = 0;
    for (int dir = 0; dir < 2; dir++) {
      struct snapccl_xfer* x = dir == 0 ? s : r;
      if (!pending(x)) continue;
      int k = step(x, dir == 0);
      if (k == 1) progress = 1;
      if (k == -1)
        SNAP_FAIL(ncclRemoteError, "%s: peer %s after %zu of %zu bytes%s%s", what,
                  dir == 0 ? "went away" : "closed the connection", x->done, x->len,
                  errno ? ": " : "", errno ? strerror(errno) : "");
      if (k == -2)
        SNAP_FAIL(ncclSystemError, "%s: %s failed: %s", what, dir == 0 ? "send" : "recv",
                  strerror(errno));
    }
    if (!pending(s) && !pending(r)) return ncclSuccess;
    if (progress) continue;
    struct pollfd p[3];
    int n = 0;
    p[n++] = (struct pollfd){.fd = abort_fd, .events = POLLIN};
    if (pending(s)) p[n++] = (struct pollfd){.fd = s->fd, .events = POLLOUT};
    if (pending(r)) p[n++] = (struct pollfd){.fd = r->fd, .events = POLLIN};
    int k = poll(p, n, snapccl_poll_timeout(deadline_ms));
    if (k < 0 && errno != EINTR) SNAP_FAIL(ncclSystemError, "%s: poll failed: %s", what, strerror(errno));
    if (k > 0 && (p[0].revents & POLLIN)) SNAP_FAIL(ncclRemoteError, "%s: aborted", what);
    if (k == 0 && snapccl_now_ms() >= deadline_ms) {
      const struct snapccl_xfer* x = pending(r) ? r : s;
      SNAP_FAIL(ncclRemoteError, "%s: timed out (SNAPCCL_BOOTSTRAP_TIMEOUT=%g s) after %zu of "
                "%zu bytes %s", what, timeout_s(), x->done, x->len, x == r ? "received" : "sent");
    }
    /* Readiness (or an error/hangup, which the next step() reports) -> loop. */
  }
}

ncclResult_t snapccl_socket_send_all(int fd, const void* buf, size_t len, int64_t deadline_ms,
                                     int abort_fd, const char* what) {
  struct snapccl_xfer x = {.fd = fd, .buf = (void*)buf, .len = len};
  return snapccl_socket_xfer(&x, NULL, deadline_ms, abort_fd, what);
}

ncclResult_t snapccl_socket_recv_all(int fd, void* buf, size_t len, int64_t deadline_ms,
                                     int abort_fd, const char* what) {
  struct snapccl_xfer x = {.fd = fd, .buf = buf, .len = len};
  return snapccl_socket_xfer(NULL, &x, deadline_ms, abort_fd, what);
}
