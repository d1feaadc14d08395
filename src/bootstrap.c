/* The bootstrap protocol, a rank's side (see bootstrap.h for the shape; the root is in
 * bootstrap_root.c, the wire format and the acceptor in bootstrap_wire.[ch]).
 *
 * Every connection starts with a fixed prefix, header {magic, type, len} then a fixed
 * part that carries the id's nonce and the sender's rank. Listeners (the root's and
 * every rank's) read these prefixes from all pending connections at once, with poll,
 * so a peer that connects and then stalls or sends garbage is refused after its own
 * deadline without holding up the honest ones. Payload lengths are checked against the
 * expected size or a hard maximum before anything is allocated or read.
 *
 * Integers travel in host byte order: all ranks of a job share one architecture. */
#include "bootstrap.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "bootstrap_wire.h"
#include "env.h"
#include "error.h"
#include "log.h"
#include "socket.h"


/* ---- a rank ---- */

struct p2p_msg {
  struct p2p_msg* next;
  int from, tag;
  size_t len;
  void* data;
};

struct snapccl_bootstrap {
  int rank, nranks;
  uint64_t nonce[2];
  int abort_fd; /* eventfd, readable once aborted: every poll watches it */
  int aborted;
  struct acceptor acc; /* this rank's listener: ring setup, then tagged messages */
  union snapccl_sockaddr* peers; /* every rank's listener */
  int next_fd, prev_fd;          /* the ring */
  struct p2p_msg *queue, **queue_tail; /* unexpected tagged messages, oldest first */
  /* One ring operation and one receive at a time; send needs neither, so a thread
   * may send while another is blocked receiving. */
  pthread_mutex_t ring_lock, recv_lock;
  char role[24];
};

int snapccl_bootstrap_rank(const struct snapccl_bootstrap* b) { return b->rank; }
int snapccl_bootstrap_nranks(const struct snapccl_bootstrap* b) { return b->nranks; }

static ncclResult_t check_usable(struct snapccl_bootstrap* b, const char* op) {
  if (!b) SNAP_FAIL(ncclInvalidArgument, "%s on a NULL bootstrap", op);
  if (__atomic_load_n(&b->aborted, __ATOMIC_ACQUIRE) || snapccl_aborted(b->abort_fd))
    SNAP_FAIL(ncclRemoteError, "%s: %s after the bootstrap was aborted", b->role, op);
  return ncclSuccess;
}

static void queue_push(struct snapccl_bootstrap* b, struct p2p_msg* m) {
  m->next = NULL;
  *b->queue_tail = m;
  b->queue_tail = &m->next;
}

/* Removes and returns the oldest queued message from (peer, tag), or NULL. */
static struct p2p_msg* queue_take(struct snapccl_bootstrap* b, int peer, int tag) {
  for (struct p2p_msg** pp = &b->queue; *pp; pp = &(*pp)->next) {
    struct p2p_msg* m = *pp;
    if (m->from != peer || m->tag != tag) continue;
    *pp = m->next;
    if (b->queue_tail == &m->next) b->queue_tail = pp;
    return m;
  }
  return NULL;
}

/* Reads the payload of an unexpected tagged message into the queue and closes c. A
 * sender that dies mid-message loses its message but does not fail our receive. */
static void queue_incoming(struct snapccl_bootstrap* b, struct pending_conn* c, size_t len) {
  struct p2p_msg* m = calloc(1, sizeof *m);
  void* data = len ? malloc(len) : NULL;
  char what[256];
  snprintf(what, sizeof what, "%s: receive a message from rank %d tag %d", b->role,
           c->m.u.id.from, c->m.u.id.tag);
  if (!m || (len && !data)) {
    WARN("%s: out of memory (%zu bytes); message dropped", what, len);
  } else if (snapccl_socket_recv_all(c->fd, data, len, snapccl_socket_deadline(), b->abort_fd,
                                     what) != ncclSuccess) {
    WARN("%s: message dropped", what);
  } else {
    m->from = c->m.u.id.from;
    m->tag = c->m.u.id.tag;
    m->len = len;
    m->data = data;
    queue_push(b, m);
    m = NULL;
    data = NULL;
    TRACE(SUB_BOOT, "%s: queued %zu bytes", what, len);
  }
  free(m);
  free(data);
  close(c->fd);
}

/* Takes connections from the listener until the wanted one arrives: the ring
 * connection from rank `peer` (want_ring) or the tagged message (peer, tag), whose
 * payload lands in data. Other tagged messages are queued for later receives. */
static ncclResult_t listen_for(struct snapccl_bootstrap* b, int want_ring, int peer, int tag,
                               void* data, size_t bytes, int64_t deadline) {
  char what[256], reason[512];
  if (want_ring) snprintf(what, sizeof what, "%s: wait for the ring connection of rank %d", b->role, peer);
  else snprintf(what, sizeof what, "%s: receive from rank %d tag %d", b->role, peer, tag);
  for (;;) {
    struct pending_conn c;
    ncclResult_t res = snapccl_bs_acceptor_next(&b->acc, deadline, b->abort_fd, &c, what, reason, sizeof reason);
    if (res != ncclSuccess) SNAP_FAIL(res, "%s", reason);
    const struct ident* id = &c.m.u.id;
    if (id->from < 0 || id->from >= b->nranks) {
      snapccl_bs_refuse(&b->acc, c.fd, c.peer, REFUSE_SILENT, "sender rank out of range");
      continue;
    }
    if (c.m.h.type == MSG_RING_HELLO) {
      if (want_ring && id->from == peer) {
        b->prev_fd = c.fd;
        return ncclSuccess;
      }
      snapccl_bs_refuse(&b->acc, c.fd, c.peer, REFUSE_SILENT, "unexpected ring connection");
      continue;
    }
    size_t len = (size_t)(c.m.h.len - sizeof(struct ident));
    if (want_ring || id->from != peer || id->tag != tag) {
      queue_incoming(b, &c, len);
      continue;
    }
    if (len != bytes) {
      close(c.fd);
      SNAP_FAIL(ncclInvalidUsage, "%s: the message has %zu bytes, the receive expects %zu", what,
                len, bytes);
    }
    res = snapccl_socket_recv_all(c.fd, data, bytes, snapccl_socket_deadline(), b->abort_fd, what);
    close(c.fd);
    return res;
  }
}

/* Sends a header and then a fixed part or payload on fd. */
static ncclResult_t send_msg(struct snapccl_bootstrap* b, int fd, uint32_t type, const void* body,
                             size_t body_len, const void* payload, size_t payload_len,
                             const char* what) {
  struct wire_hdr h = {WIRE_MAGIC, type, body_len + payload_len};
  int64_t deadline = snapccl_socket_deadline();
  SNAP_CHECK(snapccl_socket_send_all(fd, &h, sizeof h, deadline, b->abort_fd, what));
  SNAP_CHECK(snapccl_socket_send_all(fd, body, body_len, deadline, b->abort_fd, what));
  return snapccl_socket_send_all(fd, payload, payload_len, deadline, b->abort_fd, what);
}

/* Checks a received header against what this step expects. */
static ncclResult_t expect_hdr(const struct wire_hdr* h, uint32_t type, uint64_t len,
                               const char* what) {
  if (h->magic != WIRE_MAGIC)
    SNAP_FAIL(ncclRemoteError, "%s: garbage instead of a message header (magic %#x)", what, h->magic);
  if (h->type != type)
    SNAP_FAIL(ncclRemoteError, "%s: got a %s message, expected %s (ranks called different "
              "bootstrap operations?)", what, snapccl_bs_type_name(h->type), snapccl_bs_type_name(type));
  if (h->len != len)
    SNAP_FAIL(ncclRemoteError, "%s: message carries %llu bytes, expected %llu (ranks passed "
              "different sizes?)", what, (unsigned long long)h->len, (unsigned long long)len);
  return ncclSuccess;
}

/* The root's MSG_REFUSE after header h: its reason becomes ours (retry: 1). */
static ncclResult_t read_refusal(struct snapccl_bootstrap* b, int fd, const struct wire_hdr* h,
                                 int64_t deadline, const char* what, int* retry) {
  char body[sizeof(struct refuse) + MAX_REFUSE_TEXT], text[MAX_REFUSE_TEXT + 1];
  enum refuse_code code;
  *retry = 0;
  if (h->len > sizeof body)
    SNAP_FAIL(ncclRemoteError, "%s: the root refused this rank, with a malformed reason (%llu "
              "bytes)", what, (unsigned long long)h->len);
  SNAP_CHECK(snapccl_socket_recv_all(fd, body, (size_t)h->len, deadline, b->abort_fd, what));
  if (!snapccl_bs_parse_refusal(h->len, body, &code, text, sizeof text))
    SNAP_FAIL(ncclRemoteError, "%s: the root refused this rank, with a malformed reason", what);
  if (code == REFUSE_RETRY) {
    *retry = 1;
    INFO(SUB_BOOT, "%s: the root asks to connect again: %s", what, text);
    return ncclSuccess;
  }
  SNAP_FAIL(code == REFUSE_GAVE_UP ? ncclRemoteError : ncclInvalidUsage,
            "%s: the root refused this rank: %s", what, text);
}

/* One connection to the root: HELLO out, then the table (or a refusal) in. */
static ncclResult_t rendezvous_once(struct snapccl_bootstrap* b, const union snapccl_sockaddr* root,
                                    const struct hello* h, int64_t deadline, int* retry) {
  char what[256], s[80];
  int fd = -1;
  snprintf(what, sizeof what, "%s: connect to the root %s (a root stops listening once "
           "its rendezvous has ended or given up)", b->role, snapccl_sockaddr_str(root, s, sizeof s));
  SNAP_CHECK(snapccl_socket_connect(root, snapccl_socket_deadline(), b->abort_fd, &fd, what));

  struct wire_hdr th;
  struct snapccl_wire_addr* table = NULL;
  size_t tlen = (size_t)b->nranks * sizeof *table;
  ncclResult_t res = ncclSuccess;
  snprintf(what, sizeof what, "%s: send HELLO to the root %s", b->role, s);
  res = send_msg(b, fd, MSG_HELLO, h, sizeof *h, NULL, 0, what);
  /* The root closes a connection before reading it only when it evicted it: again. */
  if (res == ncclRemoteError && !snapccl_aborted(b->abort_fd)) {
    *retry = 1;
    res = ncclSuccess;
  }
  if (res != ncclSuccess || *retry) goto out;
  snprintf(what, sizeof what, "%s: wait for the address table from the root %s (all %d ranks "
           "must arrive)", b->role, s, b->nranks);
  SNAP_CHECK_GOTO(snapccl_socket_recv_all(fd, &th, sizeof th, deadline, b->abort_fd, what), res, out);
  if (th.magic == WIRE_MAGIC && th.type == MSG_REFUSE) {
    res = read_refusal(b, fd, &th, deadline, what, retry);
    goto out;
  }
  SNAP_CHECK_GOTO(expect_hdr(&th, MSG_TABLE, tlen, what), res, out);
  table = malloc(tlen);
  if (!table) {
    res = snapccl_error(ncclSystemError, __func__, "%s: out of memory", what);
    goto out;
  }
  SNAP_CHECK_GOTO(snapccl_socket_recv_all(fd, table, tlen, deadline, b->abort_fd, what), res, out);
  for (int i = 0; i < b->nranks; i++) {
    if (snapccl_sockaddr_from_wire(&table[i], &b->peers[i]) != 0) {
      res = snapccl_error(ncclRemoteError, __func__, "%s: rank %d's address is unusable", what, i);
      goto out;
    }
  }
out:
  free(table);
  close(fd);
  return res;
}

/* Registers with the root and receives every rank's listener address. A root that
 * evicted us (its pending set was full of idle connections) asks us to come again. */
static ncclResult_t rendezvous(struct snapccl_bootstrap* b, const union snapccl_sockaddr* root,
                               const union snapccl_sockaddr* me) {
  struct hello h = {{b->nonce[0], b->nonce[1]}, b->rank, b->nranks, {0}};
  snapccl_sockaddr_to_wire(me, &h.listen);
  /* The table comes when the last rank arrives: one timeout from our first HELLO. */
  int64_t deadline = snapccl_socket_deadline();
  for (;;) {
    int retry = 0;
    ncclResult_t res = rendezvous_once(b, root, &h, deadline, &retry);
    if (res != ncclSuccess || !retry) return res;
    if (snapccl_now_ms() >= deadline)
      SNAP_FAIL(ncclRemoteError, "%s: the root kept asking to connect again until the timeout "
                "(SNAPCCL_BOOTSTRAP_TIMEOUT=%g s)", b->role, snapccl_env()->bootstrap_timeout_s);
    struct pollfd p = {.fd = b->abort_fd, .events = POLLIN};
    if (poll(&p, 1, 10) > 0) SNAP_FAIL(ncclRemoteError, "%s: rendezvous aborted", b->role);
  }
}

/* Connects to the next rank's listener and takes the previous rank's connection. */
static ncclResult_t ring_connect(struct snapccl_bootstrap* b) {
  int next = (b->rank + 1) % b->nranks, prev = (b->rank + b->nranks - 1) % b->nranks;
  char what[256], s[80];
  snprintf(what, sizeof what, "%s: connect the ring to rank %d at %s", b->role, next,
           snapccl_sockaddr_str(&b->peers[next], s, sizeof s));
  SNAP_CHECK(snapccl_socket_connect(&b->peers[next], snapccl_socket_deadline(), b->abort_fd,
                                    &b->next_fd, what));
  struct ident id = {{b->nonce[0], b->nonce[1]}, b->rank, 0};
  SNAP_CHECK(send_msg(b, b->next_fd, MSG_RING_HELLO, &id, sizeof id, NULL, 0, what));
  return listen_for(b, 1, prev, 0, NULL, 0, snapccl_socket_deadline());
}

static ncclResult_t init_steps(struct snapccl_bootstrap* b, const struct snapccl_unique_id* u) {
  union snapccl_sockaddr me, root;
  struct snapccl_wire_addr w;
  int fd = -1;
  snapccl_bs_id_to_wire(u, &w);
  snapccl_sockaddr_from_wire(&w, &root); /* check_id vetted it */
  SNAP_CHECK(snapccl_socket_pick_addr(snapccl_env()->socket_ifname, &me));
  SNAP_CHECK(snapccl_socket_listen(&me, &fd));
  ncclResult_t res = snapccl_bs_acceptor_init(&b->acc, fd, b->role, b->nonce,
                                   (1u << MSG_RING_HELLO) | (1u << MSG_P2P));
  if (res != ncclSuccess) {
    close(fd);
    return res;
  }
  b->peers = calloc((size_t)b->nranks, sizeof *b->peers);
  if (!b->peers) SNAP_FAIL(ncclSystemError, "%s: out of memory for %d addresses", b->role, b->nranks);
  SNAP_CHECK(rendezvous(b, &root, &me));
  if (b->nranks > 1) SNAP_CHECK(ring_connect(b));
  b->acc.allowed = 1u << MSG_P2P; /* the ring is complete: no more RING_HELLOs */
  char s[80];
  INFO(SUB_BOOT, "%s/%d: bootstrap ready, listening on %s", b->role, b->nranks,
       snapccl_sockaddr_str(&me, s, sizeof s));
  return ncclSuccess;
}

ncclResult_t snapccl_bootstrap_init(const ncclUniqueId* id, int rank, int nranks,
                                    struct snapccl_bootstrap** out) {
  return snapccl_bootstrap_init_abortable(id, rank, nranks, -1, out);
}

ncclResult_t snapccl_bootstrap_init_abortable(const ncclUniqueId* id, int rank, int nranks,
                                              int abort_fd, struct snapccl_bootstrap** out) {
  if (!out) SNAP_FAIL(ncclInvalidArgument, "bootstrap output pointer is NULL");
  *out = NULL;
  SNAP_CHECK(snapccl_bootstrap_check_id(id));
  if (nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks)
    SNAP_FAIL(ncclInvalidArgument, "rank %d of %d ranks is out of range", rank, nranks);
  struct snapccl_unique_id u;
  memcpy(&u, id->internal, sizeof u);

  struct snapccl_bootstrap* b = calloc(1, sizeof *b);
  if (!b) SNAP_FAIL(ncclSystemError, "out of memory for the bootstrap");
  b->rank = rank;
  b->nranks = nranks;
  memcpy(b->nonce, u.nonce, sizeof b->nonce);
  b->acc.fd = b->next_fd = b->prev_fd = -1;
  b->queue_tail = &b->queue;
  snprintf(b->role, sizeof b->role, "rank %d", rank);
  pthread_mutex_init(&b->ring_lock, NULL);
  pthread_mutex_init(&b->recv_lock, NULL);
  /* A duplicate of the owner's eventfd is the same object: a signal through either
   * reaches every wait, and each side closes its own descriptor. */
  b->abort_fd = abort_fd >= 0 ? fcntl(abort_fd, F_DUPFD_CLOEXEC, 0)
                              : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (b->abort_fd < 0) {
    ncclResult_t res = snapccl_error(ncclSystemError, __func__, "%s failed: %s",
                                     abort_fd >= 0 ? "dup of the abort eventfd" : "eventfd",
                                     strerror(errno));
    snapccl_bootstrap_destroy(b);
    return res;
  }
  ncclResult_t res = init_steps(b, &u);
  if (res != ncclSuccess) {
    snapccl_bootstrap_destroy(b);
    return res;
  }
  *out = b;
  return ncclSuccess;
}

/* ---- ring collectives ---- */

/* Sends `bytes` of sbuf to the next rank while receiving `bytes` into rbuf from the
 * previous one (either may be NULL: that direction is skipped). */
static ncclResult_t ring_step(struct snapccl_bootstrap* b, uint32_t type, const void* sbuf,
                              void* rbuf, size_t bytes, const char* what) {
  struct wire_hdr hs = {WIRE_MAGIC, type, bytes}, hr;
  int64_t deadline = snapccl_socket_deadline();
  struct snapccl_xfer s = {b->next_fd, &hs, sizeof hs, 0}, r = {b->prev_fd, &hr, sizeof hr, 0};
  struct snapccl_xfer *sp = sbuf ? &s : NULL, *rp = rbuf ? &r : NULL;
  SNAP_CHECK(snapccl_socket_xfer(sp, rp, deadline, b->abort_fd, what));
  if (rp) SNAP_CHECK(expect_hdr(&hr, type, bytes, what));
  s = (struct snapccl_xfer){b->next_fd, (void*)sbuf, bytes, 0};
  r = (struct snapccl_xfer){b->prev_fd, rbuf, bytes, 0};
  return snapccl_socket_xfer(sp, rp, deadline, b->abort_fd, what);
}

static ncclResult_t ring_allgather(struct snapccl_bootstrap* b, uint32_t type, void* data,
                                   size_t bytes) {
  int n = b->nranks, prev = (b->rank + n - 1) % n;
  char what[256];
  ncclResult_t res = ncclSuccess;
  /* Step s forwards the slot that arrived in step s-1 (our own first). */
  pthread_mutex_lock(&b->ring_lock);
  for (int s = 0; s < n - 1 && res == ncclSuccess; s++) {
    int sslot = (b->rank - s + n) % n, rslot = (b->rank - s - 1 + 2 * n) % n;
    snprintf(what, sizeof what, "%s: %s step %d of %d (to rank %d, from rank %d)", b->role,
             snapccl_bs_type_name(type), s + 1, n - 1, (b->rank + 1) % n, prev);
    res = ring_step(b, type, (char*)data + (size_t)sslot * bytes, (char*)data + (size_t)rslot * bytes,
                    bytes, what);
  }
  pthread_mutex_unlock(&b->ring_lock);
  return res;
}

ncclResult_t snapccl_bootstrap_allgather(struct snapccl_bootstrap* b, void* data, size_t bytes) {
  SNAP_CHECK(check_usable(b, "allgather"));
  if (bytes && !data) SNAP_FAIL(ncclInvalidArgument, "%s: allgather of %zu bytes into NULL", b->role, bytes);
  if (bytes > SIZE_MAX / (size_t)b->nranks)
    SNAP_FAIL(ncclInvalidArgument, "%s: allgather of %zu bytes per rank overflows", b->role, bytes);
  char dummy;
  return ring_allgather(b, MSG_ALLGATHER, bytes ? data : &dummy, bytes);
}

ncclResult_t snapccl_bootstrap_barrier(struct snapccl_bootstrap* b) {
  SNAP_CHECK(check_usable(b, "barrier"));
  /* A zero-byte ring allgather: the last step's message cannot leave rank r-1 before
   * every rank has entered. */
  char dummy;
  return ring_allgather(b, MSG_BARRIER, &dummy, 0);
}

ncclResult_t snapccl_bootstrap_bcast(struct snapccl_bootstrap* b, void* data, size_t bytes,
                                     int root) {
  SNAP_CHECK(check_usable(b, "bcast"));
  if (root < 0 || root >= b->nranks)
    SNAP_FAIL(ncclInvalidArgument, "%s: bcast root %d out of range", b->role, root);
  if (bytes && !data) SNAP_FAIL(ncclInvalidArgument, "%s: bcast of %zu bytes from NULL", b->role, bytes);
  int n = b->nranks, next = (b->rank + 1) % n;
  char what[256], dummy;
  void* buf = bytes ? data : &dummy;
  ncclResult_t res = ncclSuccess;
  snprintf(what, sizeof what, "%s: BCAST from root %d", b->role, root);
  /* Along the ring from root; the rank before root does not send. */
  pthread_mutex_lock(&b->ring_lock);
  if (n > 1 && b->rank != root) res = ring_step(b, MSG_BCAST, NULL, buf, bytes, what);
  if (n > 1 && res == ncclSuccess && next != root) res = ring_step(b, MSG_BCAST, buf, NULL, bytes, what);
  pthread_mutex_unlock(&b->ring_lock);
  return res;
}

/* ---- tagged point to point ---- */

ncclResult_t snapccl_bootstrap_send(struct snapccl_bootstrap* b, int peer, int tag,
                                    const void* data, size_t bytes) {
  SNAP_CHECK(check_usable(b, "send"));
  if (peer < 0 || peer >= b->nranks)
    SNAP_FAIL(ncclInvalidArgument, "%s: send to rank %d of %d", b->role, peer, b->nranks);
  if (bytes > MAX_P2P_BYTES || (bytes && !data))
    SNAP_FAIL(ncclInvalidArgument, "%s: send of %zu bytes from %p", b->role, bytes, data);
  if (peer == b->rank) {
    /* To ourselves: straight into the queue (a socket could block before our recv). */
    struct p2p_msg* m = calloc(1, sizeof *m);
    void* copy = bytes ? malloc(bytes) : NULL;
    if (!m || (bytes && !copy)) {
      free(m);
      free(copy);
      SNAP_FAIL(ncclSystemError, "%s: out of memory for a message to itself", b->role);
    }
    if (bytes) memcpy(copy, data, bytes);
    *m = (struct p2p_msg){NULL, peer, tag, bytes, copy};
    pthread_mutex_lock(&b->recv_lock);
    queue_push(b, m);
    pthread_mutex_unlock(&b->recv_lock);
    return ncclSuccess;
  }
  char what[256], s[80];
  int fd = -1;
  snprintf(what, sizeof what, "%s: send %zu bytes tag %d to rank %d at %s", b->role, bytes, tag,
           peer, snapccl_sockaddr_str(&b->peers[peer], s, sizeof s));
  SNAP_CHECK(snapccl_socket_connect(&b->peers[peer], snapccl_socket_deadline(), b->abort_fd, &fd, what));
  struct ident id = {{b->nonce[0], b->nonce[1]}, b->rank, tag};
  ncclResult_t res = send_msg(b, fd, MSG_P2P, &id, sizeof id, data, bytes, what);
  /* close() still delivers what the kernel holds; the receiver reads it at its pace. */
  close(fd);
  return res;
}

ncclResult_t snapccl_bootstrap_recv(struct snapccl_bootstrap* b, int peer, int tag, void* data,
                                    size_t bytes) {
  SNAP_CHECK(check_usable(b, "recv"));
  if (peer < 0 || peer >= b->nranks)
    SNAP_FAIL(ncclInvalidArgument, "%s: recv from rank %d of %d", b->role, peer, b->nranks);
  if (bytes && !data) SNAP_FAIL(ncclInvalidArgument, "%s: recv of %zu bytes into NULL", b->role, bytes);
  ncclResult_t res = ncclSuccess;
  pthread_mutex_lock(&b->recv_lock);
  struct p2p_msg* m = queue_take(b, peer, tag);
  if (m) {
    if (m->len == bytes) {
      if (bytes) memcpy(data, m->data, bytes);
    } else {
      res = snapccl_error(ncclInvalidUsage, __func__, "%s: the message from rank %d tag %d has "
                          "%zu bytes, the receive expects %zu", b->role, peer, tag, m->len, bytes);
    }
    free(m->data);
    free(m);
  } else {
    res = listen_for(b, 0, peer, tag, data, bytes, snapccl_socket_deadline());
  }
  pthread_mutex_unlock(&b->recv_lock);
  return res;
}

/* ---- teardown ---- */

void snapccl_bootstrap_abort(struct snapccl_bootstrap* b) {
  if (!b) return;
  __atomic_store_n(&b->aborted, 1, __ATOMIC_RELEASE);
  uint64_t one = 1;
  /* eventfd stays readable (nobody reads it): every current and later poll sees it. */
  if (b->abort_fd >= 0 && write(b->abort_fd, &one, sizeof one) < 0 && errno != EAGAIN)
    WARN("%s: signalling the bootstrap abort failed: %s", b->role, strerror(errno));
}

void snapccl_bootstrap_destroy(struct snapccl_bootstrap* b) {
  if (!b) return;
  snapccl_bs_acceptor_free(&b->acc);
  if (b->next_fd >= 0) close(b->next_fd);
  if (b->prev_fd >= 0) close(b->prev_fd);
  if (b->abort_fd >= 0) close(b->abort_fd);
  while (b->queue) {
    struct p2p_msg* m = b->queue;
    b->queue = m->next;
    free(m->data);
    free(m);
  }
  free(b->peers);
  pthread_mutex_destroy(&b->ring_lock);
  pthread_mutex_destroy(&b->recv_lock);
  free(b);
}
