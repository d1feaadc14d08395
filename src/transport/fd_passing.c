/* File descriptors between processes of one host: see fd_passing.h. */
#include "transport/fd_passing.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "log.h"

struct snapccl_fd_server {
  int fd;
  struct snapccl_fd_address addr;
};

/* A one-byte message with room for one descriptor (SCM_RIGHTS), for sendmsg / recvmsg.
 * The pointers inside point into the struct itself: initialise it where it lives. */
struct fd_msg {
  char byte;
  struct iovec iov;
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg;
};

static void fd_msg_init(struct fd_msg* m, char byte) {
  memset(m, 0, sizeof *m);
  m->byte = byte;
  m->iov.iov_base = &m->byte;
  m->iov.iov_len = 1;
  m->msg.msg_iov = &m->iov;
  m->msg.msg_iovlen = 1;
  m->msg.msg_control = m->ctl.buf;
  m->msg.msg_controllen = sizeof m->ctl.buf;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int ms_left(double deadline) {
  double left = deadline - now_s();
  if (left <= 0) return 0;
  return left > 1e6 ? 1000000000 : (int)(left * 1000.0) + 1;
}

static socklen_t make_sockaddr(struct sockaddr_un* sa, const char* name) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  size_t n = strnlen(name, sizeof sa->sun_path - 2);
  memcpy(sa->sun_path + 1, name, n); /* sun_path[0] = 0: the abstract namespace */
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* Waits until fd is ready for `events` or the deadline passes; 1 ready, 0 timed out. */
static int wait_ready(int fd, short events, double deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    int ms = ms_left(deadline);
    if (ms == 0) return 0;
    int r = poll(&p, 1, ms);
    if (r > 0) return 1;
    if (r < 0 && errno != EINTR) return 0;
  }
}

static int peer_pid(int fd, int32_t* pid) {
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  *pid = (int32_t)cred.pid;
  return 1;
}

/* Reads exactly n bytes before the deadline (non-blocking socket). */
static int read_full(int fd, void* buf, size_t n, double deadline) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = recv(fd, (char*)buf + got, n - got, 0);
    if (r > 0) {
      got += (size_t)r;
    } else if (r == 0) {
      return 0;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!wait_ready(fd, POLLIN, deadline)) return 0;
    } else {
      return 0;
    }
  }
  return 1;
}

ncclResult_t snapccl_fd_server_open(struct snapccl_fd_server** out, struct snapccl_fd_address* addr) {
  struct snapccl_fd_server* s = calloc(1, sizeof *s);
  if (!s) SNAP_FAIL(ncclSystemError, "out of memory");
  uint8_t rnd[24];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
    free(s);
    SNAP_FAIL(ncclSystemError, "getrandom failed: %s", strerror(errno));
  }
  s->addr.pid = (int32_t)getpid();
  memcpy(s->addr.nonce, rnd, sizeof s->addr.nonce);
  unsigned long long tag;
  memcpy(&tag, rnd + 16, sizeof tag);
  snprintf(s->addr.name, sizeof s->addr.name, "snapccl-fd-%d-%016llx", (int)s->addr.pid, tag);
  s->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s->fd < 0) {
    free(s);
    SNAP_FAIL(ncclSystemError, "socket(AF_UNIX) failed: %s", strerror(errno));
  }
  struct sockaddr_un sa;
  socklen_t len = make_sockaddr(&sa, s->addr.name);
  if (bind(s->fd, (struct sockaddr*)&sa, len) != 0 || listen(s->fd, 64) != 0) {
    int e = errno;
    close(s->fd);
    free(s);
    SNAP_FAIL(ncclSystemError, "binding the fd-passing socket failed: %s", strerror(e));
  }
  *addr = s->addr;
  *out = s;
  return ncclSuccess;
}

/* One accepted connection: check who it is and hand over the descriptor. */
static int serve_one(const struct snapccl_fd_server* s, int conn, const int* fds, int nfds,
                     const int32_t* pids, int npids, double deadline) {
  int32_t pid = -1;
  if (!peer_pid(conn, &pid)) return 0;
  int known = 0;
  for (int i = 0; i < npids && !known; i++) known = pids[i] == pid;
  if (!known) {
    INFO(SUB_TRANSPORT, "fd passing: refused a connection from pid %d (not a rank of this communicator)",
         (int)pid);
    return 0;
  }
  uint8_t nonce[16];
  if (!read_full(conn, nonce, sizeof nonce, deadline) || memcmp(nonce, s->addr.nonce, sizeof nonce) != 0) {
    INFO(SUB_TRANSPORT, "fd passing: pid %d did not present the nonce", (int)pid);
    return 0;
  }
  /* Which of the served descriptors the client asks for: the registration of a buffer
   * spanning several cuMem segments serves one per segment from one address. */
  uint32_t index = 0;
  if (!read_full(conn, &index, sizeof index, deadline) || index >= (uint32_t)nfds) {
    INFO(SUB_TRANSPORT, "fd passing: pid %d asked for no valid descriptor", (int)pid);
    return 0;
  }
  const int fd = fds[index];
  struct fd_msg m;
  fd_msg_init(&m, 'F');
  struct cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof fd);
  for (;;) {
    ssize_t r = sendmsg(conn, &m.msg, MSG_NOSIGNAL);
    if (r == 1) return 1;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_ready(conn, POLLOUT, deadline)) return 0;
      continue;
    }
    return 0;
  }
}

ncclResult_t snapccl_fd_server_serve_many(struct snapccl_fd_server* s, const int* fds, int nfds, int clients,
                                          const int32_t* pids, int npids, double timeout_s) {
  const double deadline = now_s() + timeout_s;
  const long want = (long)clients * nfds;
  long served = 0;
  while (served < want) {
    if (!wait_ready(s->fd, POLLIN, deadline))
      SNAP_FAIL(ncclSystemError, "fd passing: %ld of %ld descriptors were fetched within %.0f s", served, want,
                timeout_s);
    int conn = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (conn < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) continue;
      SNAP_FAIL(ncclSystemError, "fd passing: accept failed: %s", strerror(errno));
    }
    served += serve_one(s, conn, fds, nfds, pids, npids, deadline);
    close(conn);
  }
  return ncclSuccess;
}

ncclResult_t snapccl_fd_server_serve(struct snapccl_fd_server* s, int fd, int clients,
                                     const int32_t* pids, int npids, double timeout_s) {
  return snapccl_fd_server_serve_many(s, &fd, 1, clients, pids, npids, timeout_s);
}

void snapccl_fd_server_close(struct snapccl_fd_server* s) {
  if (!s) return;
  if (s->fd >= 0) close(s->fd);
  free(s);
}

ncclResult_t snapccl_fd_receive(const struct snapccl_fd_address* addr, double timeout_s, int* fd_out) {
  return snapccl_fd_receive_index(addr, 0, timeout_s, fd_out);
}

ncclResult_t snapccl_fd_receive_index(const struct snapccl_fd_address* addr, uint32_t index, double timeout_s,
                                      int* fd_out) {
  const double deadline = now_s() + timeout_s;
  struct sockaddr_un sa;
  socklen_t len = make_sockaddr(&sa, addr->name);
  int s = -1;
  for (;;) {
    s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) SNAP_FAIL(ncclSystemError, "socket(AF_UNIX) failed: %s", strerror(errno));
    if (connect(s, (struct sockaddr*)&sa, len) == 0) break;
    int e = errno;
    close(s);
    s = -1;
    if ((e != ECONNREFUSED && e != ENOENT && e != EAGAIN && e != EINTR) || ms_left(deadline) == 0)
      SNAP_FAIL(ncclSystemError, "fd passing: connecting to pid %d failed: %s (different network namespaces?)",
                (int)addr->pid, strerror(e));
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  ncclResult_t res = ncclSuccess;
  int32_t pid = -1;
  if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK) != 0 || !peer_pid(s, &pid)) {
    res = snapccl_error(ncclSystemError, __func__, "fd passing: socket setup failed: %s", strerror(errno));
    goto out;
  }
  if (pid != addr->pid) {
    res = snapccl_error(ncclSystemError, __func__,
                        "fd passing: the server is pid %d, not the creator's pid %d (different PID namespaces?)",
                        (int)pid, (int)addr->pid);
    goto out;
  }
  {
    uint8_t ask[sizeof addr->nonce + sizeof index];
    memcpy(ask, addr->nonce, sizeof addr->nonce);
    memcpy(ask + sizeof addr->nonce, &index, sizeof index);
    size_t sent = 0;
    while (sent < sizeof ask) {
      ssize_t r = send(s, ask + sent, sizeof ask - sent, MSG_NOSIGNAL);
      if (r > 0) {
        sent += (size_t)r;
      } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        if (!wait_ready(s, POLLOUT, deadline)) break;
      } else {
        break;
      }
    }
    if (sent < sizeof ask) {
      res = snapccl_error(ncclSystemError, __func__, "fd passing: sending the nonce to pid %d failed",
                          (int)addr->pid);
      goto out;
    }
  }
  for (;;) {
    struct fd_msg m;
    fd_msg_init(&m, 0);
    ssize_t r = recvmsg(s, &m.msg, MSG_CMSG_CLOEXEC);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (wait_ready(s, POLLIN, deadline)) continue;
      res = snapccl_error(ncclSystemError, __func__, "fd passing: pid %d sent nothing within %.0f s",
                          (int)addr->pid, timeout_s);
      goto out;
    }
    struct cmsghdr* c = r == 1 && !(m.msg.msg_flags & MSG_CTRUNC) ? CMSG_FIRSTHDR(&m.msg) : NULL;
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof(int))) {
      res = snapccl_error(ncclSystemError, __func__, "fd passing: pid %d's message carried no descriptor",
                          (int)addr->pid);
      goto out;
    }
    memcpy(fd_out, CMSG_DATA(c), sizeof(int));
    break;
  }
out:
  close(s);
  return res;
}
