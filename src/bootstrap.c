/* The bootstrap protocol over the helpers of socket.c (see bootstrap.h for the shape).
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
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "env.h"
#include "error.h"
#include "log.h"
#include "socket.h"

/* ---- wire format ---- */

#define WIRE_MAGIC 0x534e4250u /* "SNBP" */
enum msg_type {
  MSG_HELLO = 1,  /* rank -> root: who I am and where I listen */
  MSG_TABLE,      /* root -> rank: every rank's listener */
  MSG_RING_HELLO, /* rank -> next rank's listener: the ring connection */
  MSG_P2P,        /* rank -> any rank's listener: one tagged message */
  MSG_ALLGATHER,  /* ring data; the type catches ranks calling different collectives */
  MSG_BCAST,
  MSG_BARRIER,
};
#define MAX_P2P_BYTES ((uint64_t)1 << 30) /* largest tagged message we allocate for */
#define MAX_RANKS (1 << 20)
#define MAX_PENDING 256 /* connections whose prefix is being read; more wait in the backlog */

struct wire_hdr {
  uint32_t magic;
  uint32_t type;
  uint64_t len; /* bytes after the header */
};
/* HELLO's body. nonce and rank first, at the same offsets as in struct ident. */
struct hello {
  uint64_t nonce[2];
  int32_t rank;
  int32_t nranks;
  struct snapccl_wire_addr listen;
};
/* Fixed part of RING_HELLO and P2P (P2P's payload follows it). */
struct ident {
  uint64_t nonce[2];
  int32_t from;
  int32_t tag;
};
_Static_assert(sizeof(struct wire_hdr) == 16 && sizeof(struct hello) == 48 &&
               sizeof(struct ident) == 24, "wire layout");

struct prefix {
  struct wire_hdr h;
  union {
    struct hello hello;
    struct ident id;
  } u;
};

static const char* type_name(uint32_t t) {
  static const char* const names[] = {"?", "HELLO", "TABLE", "RING_HELLO", "P2P",
                                      "ALLGATHER", "BCAST", "BARRIER"};
  return t < sizeof names / sizeof names[0] ? names[t] : "?";
}

/* ---- acceptor: a listener and the connections whose prefix is being read ---- */

struct pending_conn {
  int fd;
  uint64_t seq; /* accept order: complete prefixes are handed out oldest first */
  int64_t deadline;
  size_t got, want;
  struct prefix m;
  char peer[80];
};

struct acceptor {
  int fd;
  char role[24]; /* "root" or "rank 3", for logs */
  uint64_t nonce[2];
  unsigned allowed; /* bit (1u << type) per message type a connection may open with */
  struct pending_conn* p;
  int n;
  uint64_t seq;
};

static ncclResult_t acceptor_init(struct acceptor* a, int fd, const char* role,
                                  const uint64_t nonce[2], unsigned allowed) {
  memset(a, 0, sizeof *a);
  a->fd = fd;
  snprintf(a->role, sizeof a->role, "%s", role);
  memcpy(a->nonce, nonce, sizeof a->nonce);
  a->allowed = allowed;
  a->p = calloc(MAX_PENDING, sizeof *a->p);
  if (!a->p) SNAP_FAIL(ncclSystemError, "%s: out of memory for the listener", role);
  return ncclSuccess;
}

static void acceptor_free(struct acceptor* a) {
  for (int i = 0; i < a->n; i++) close(a->p[i].fd);
  if (a->fd >= 0) close(a->fd);
  free(a->p);
  a->p = NULL;
  a->n = 0;
  a->fd = -1;
}

/* Refusing a peer is not a failure of ours: log it, close, carry on. */
static void refuse(const char* role, int fd, const char* peer, const char* why) {
  WARN("%s: refused bootstrap connection from %s: %s", role, peer, why);
  close(fd);
}

static void pending_drop(struct acceptor* a, int i, const char* why) {
  refuse(a->role, a->p[i].fd, a->p[i].peer, why);
  a->p[i] = a->p[--a->n];
}

/* Size of the fixed part that follows a header, or 0 with *why if the header is bad. */
static size_t fixed_size(const struct acceptor* a, const struct wire_hdr* h, const char** why) {
  if (h->magic != WIRE_MAGIC) return *why = "bad magic (not a snapccl bootstrap peer)", 0;
  if (h->type >= 32 || !(a->allowed & (1u << h->type))) return *why = "unexpected message type", 0;
  switch (h->type) {
    case MSG_HELLO:
      if (h->len != sizeof(struct hello)) return *why = "HELLO length field is wrong", 0;
      return sizeof(struct hello);
    case MSG_RING_HELLO:
      if (h->len != sizeof(struct ident)) return *why = "RING_HELLO length field is wrong", 0;
      return sizeof(struct ident);
    case MSG_P2P:
      if (h->len < sizeof(struct ident) || h->len - sizeof(struct ident) > MAX_P2P_BYTES)
        return *why = "P2P length field out of range", 0;
      return sizeof(struct ident);
  }
  return *why = "unexpected message type", 0;
}

/* Reads what is available of connection i's prefix (never beyond it). May drop it. */
static void pending_read(struct acceptor* a, int i) {
  struct pending_conn* c = &a->p[i];
  while (c->got < c->want) {
    ssize_t k = recv(c->fd, (char*)&c->m + c->got, c->want - c->got, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (k <= 0) {
      pending_drop(a, i, k == 0 ? "closed before a complete message (truncated)" : strerror(errno));
      return;
    }
    c->got += (size_t)k;
    if (c->got == sizeof(struct wire_hdr) && c->want == sizeof(struct wire_hdr)) {
      const char* why = NULL;
      size_t f = fixed_size(a, &c->m.h, &why);
      if (!f) {
        pending_drop(a, i, why);
        return;
      }
      c->want += f;
    }
  }
  /* Both HELLO and ident start with the nonce. */
  if (memcmp(c->m.u.id.nonce, a->nonce, sizeof a->nonce) != 0)
    pending_drop(a, i, "wrong nonce (belongs to another unique id)");
}

static int pending_complete(const struct pending_conn* c) {
  return c->got == c->want && c->want > sizeof(struct wire_hdr);
}

/* Returns the oldest connection that presented a complete, well-formed prefix with
 * the right nonce; its fd becomes the caller's. On failure writes the reason. */
static ncclResult_t acceptor_next(struct acceptor* a, int64_t deadline, int abort_fd,
                                  struct pending_conn* out, const char* what, char* reason,
                                  size_t rlen) {
  for (;;) {
    int best = -1;
    for (int i = 0; i < a->n; i++)
      if (pending_complete(&a->p[i]) && (best < 0 || a->p[i].seq < a->p[best].seq)) best = i;
    if (best >= 0) {
      *out = a->p[best];
      a->p[best] = a->p[--a->n];
      return ncclSuccess;
    }
    int64_t now = snapccl_now_ms(), wake = deadline;
    for (int i = a->n - 1; i >= 0; i--) {
      if (a->p[i].deadline <= now) pending_drop(a, i, "no complete message before the timeout");
      else if (a->p[i].deadline < wake) wake = a->p[i].deadline;
    }
    if (now >= deadline) {
      snprintf(reason, rlen, "%s: timed out (SNAPCCL_BOOTSTRAP_TIMEOUT=%g s)", what,
               snapccl_env()->bootstrap_timeout_s);
      return ncclRemoteError;
    }
    struct pollfd fds[2 + MAX_PENDING];
    int nf = 0;
    fds[nf++] = (struct pollfd){.fd = abort_fd, .events = POLLIN};
    fds[nf++] = (struct pollfd){.fd = a->n < MAX_PENDING ? a->fd : -1, .events = POLLIN};
    for (int i = 0; i < a->n; i++) fds[nf++] = (struct pollfd){.fd = a->p[i].fd, .events = POLLIN};
    int k = poll(fds, nf, snapccl_poll_timeout(wake));
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) {
      snprintf(reason, rlen, "%s: poll failed: %s", what, strerror(errno));
      return ncclSystemError;
    }
    if (fds[0].revents & POLLIN) {
      snprintf(reason, rlen, "%s: aborted", what);
      return ncclRemoteError;
    }
    if (k == 0) continue;
    /* Read every pending connection (cheap when nothing is there), newest-accepted
     * ones included, so prefixes that arrived together complete together. */
    for (int i = a->n - 1; i >= 0; i--) pending_read(a, i);
    while (a->n < MAX_PENDING) {
      struct pending_conn* c = &a->p[a->n];
      union snapccl_sockaddr peer;
      int r = snapccl_socket_try_accept(a->fd, &c->fd, &peer);
      if (r == 0) break;
      if (r < 0) {
        snprintf(reason, rlen, "%s: accept failed: %s", what, strerror(errno));
        return ncclSystemError;
      }
      c->seq = a->seq++;
      c->deadline = snapccl_socket_deadline();
      c->got = 0;
      c->want = sizeof(struct wire_hdr);
      snapccl_sockaddr_str(&peer, c->peer, sizeof c->peer);
      a->n++;
      pending_read(a, a->n - 1);
    }
  }
}

/* ---- the root ---- */

struct root {
  struct acceptor acc;
  int nranks; /* 0 until the first acceptable HELLO sets it */
  int arrived;
  int* fds;   /* per rank, -1 until it arrived */
  struct snapccl_wire_addr* table;
};

/* Why HELLO h cannot join (NULL: it can). */
static const char* hello_refusal(const struct root* r, const struct hello* h) {
  union snapccl_sockaddr a;
  if (h->nranks <= 0 || h->nranks > MAX_RANKS) return "nranks out of range";
  if (r->nranks && h->nranks != r->nranks) return "nranks differs from the other ranks'";
  if (h->rank < 0 || h->rank >= h->nranks) return "rank out of range";
  if (r->nranks && r->fds[h->rank] >= 0) return "duplicate rank";
  if (snapccl_sockaddr_from_wire(&h->listen, &a) != 0) return "unusable listener address";
  return NULL;
}

static int root_admit(struct root* r, const struct pending_conn* c) {
  const struct hello* h = &c->m.u.hello;
  if (!r->nranks) {
    r->fds = malloc(sizeof *r->fds * (size_t)h->nranks);
    r->table = calloc((size_t)h->nranks, sizeof *r->table);
    if (!r->fds || !r->table) return -1;
    for (int i = 0; i < h->nranks; i++) r->fds[i] = -1;
    r->nranks = h->nranks;
  }
  r->fds[h->rank] = c->fd;
  r->table[h->rank] = h->listen;
  r->arrived++;
  TRACE(SUB_BOOT, "root: rank %d/%d arrived from %s (%d so far)", h->rank, h->nranks, c->peer,
        r->arrived);
  return 0;
}

static void root_send_tables(struct root* r) {
  struct wire_hdr h = {WIRE_MAGIC, MSG_TABLE, (uint64_t)r->nranks * sizeof *r->table};
  for (int i = 0; i < r->nranks; i++) {
    char what[96];
    snprintf(what, sizeof what, "root: send the address table to rank %d", i);
    int64_t deadline = snapccl_socket_deadline();
    /* A failure concerns that rank alone (it will time out); the others go on. */
    if (snapccl_socket_send_all(r->fds[i], &h, sizeof h, deadline, -1, what) == ncclSuccess)
      snapccl_socket_send_all(r->fds[i], r->table, h.len, deadline, -1, what);
  }
}

static void* root_main(void* arg) {
  struct root* r = arg;
  /* The give-up clock restarts whenever a rank arrives. */
  int64_t deadline = snapccl_socket_deadline();
  while (!r->nranks || r->arrived < r->nranks) {
    struct pending_conn c;
    char reason[256];
    if (acceptor_next(&r->acc, deadline, -1, &c, "root: waiting for ranks", reason,
                      sizeof reason) != ncclSuccess) {
      WARN("%s; giving up with %d of %d ranks arrived", reason, r->arrived, r->nranks);
      goto done;
    }
    const char* why = hello_refusal(r, &c.m.u.hello);
    if (why) {
      refuse("root", c.fd, c.peer, why);
      continue;
    }
    if (root_admit(r, &c) != 0) {
      WARN("root: out of memory for %d ranks; giving up", c.m.u.hello.nranks);
      close(c.fd);
      goto done;
    }
    deadline = snapccl_socket_deadline();
  }
  INFO(SUB_BOOT, "root: all %d ranks arrived; sending the address table", r->nranks);
  root_send_tables(r);
done:
  for (int i = 0; i < r->nranks; i++)
    if (r->fds[i] >= 0) close(r->fds[i]);
  acceptor_free(&r->acc);
  free(r->fds);
  free(r->table);
  free(r);
  return NULL;
}

static void id_to_wire(const struct snapccl_unique_id* u, struct snapccl_wire_addr* w) {
  memset(w, 0, sizeof *w);
  w->family = u->family;
  w->port = u->port;
  w->scope_id = u->scope_id;
  memcpy(w->addr, u->addr, sizeof w->addr);
}

ncclResult_t snapccl_bootstrap_create_root(ncclUniqueId* id) {
  if (!id) SNAP_FAIL(ncclInvalidArgument, "unique id pointer is NULL");
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  if (getrandom(u.nonce, sizeof u.nonce, 0) != (ssize_t)sizeof u.nonce)
    SNAP_FAIL(ncclSystemError, "getrandom for the id's nonce failed: %s", strerror(errno));

  union snapccl_sockaddr addr;
  int fd = -1;
  SNAP_CHECK(snapccl_socket_pick_addr(snapccl_env()->socket_ifname, &addr));
  SNAP_CHECK(snapccl_socket_listen(&addr, &fd));
  struct snapccl_wire_addr w;
  snapccl_sockaddr_to_wire(&addr, &w);
  u.family = w.family;
  u.port = w.port;
  u.scope_id = w.scope_id;
  memcpy(u.addr, w.addr, sizeof u.addr);

  struct root* r = calloc(1, sizeof *r);
  if (!r) {
    close(fd);
    SNAP_FAIL(ncclSystemError, "out of memory for the bootstrap root");
  }
  ncclResult_t res = acceptor_init(&r->acc, fd, "root", u.nonce, 1u << MSG_HELLO);
  if (res != ncclSuccess) {
    close(fd);
    free(r);
    return res;
  }
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int e = pthread_create(&th, &attr, root_main, r);
  pthread_attr_destroy(&attr);
  if (e != 0) {
    acceptor_free(&r->acc);
    free(r);
    SNAP_FAIL(ncclSystemError, "starting the bootstrap root thread failed: %s", strerror(e));
  }
  char s[80];
  INFO(SUB_BOOT, "bootstrap root listening on %s", snapccl_sockaddr_str(&addr, s, sizeof s));
  memcpy(id->internal, &u, sizeof u);
  return ncclSuccess;
}

ncclResult_t snapccl_bootstrap_check_id(const ncclUniqueId* id) {
  if (!id) SNAP_FAIL(ncclInvalidArgument, "unique id pointer is NULL");
  struct snapccl_unique_id u;
  memcpy(&u, id->internal, sizeof u); /* internal[] need not be aligned for u */
  if (u.magic != SNAPCCL_ID_MAGIC)
    SNAP_FAIL(ncclInvalidArgument, "unique id was not made by snapccl's ncclGetUniqueId "
              "(magic %#llx)", (unsigned long long)u.magic);
  struct snapccl_wire_addr w;
  union snapccl_sockaddr a;
  id_to_wire(&u, &w);
  if (snapccl_sockaddr_from_wire(&w, &a) != 0)
    SNAP_FAIL(ncclInvalidArgument, "unique id holds no usable root address (family %u, port %u)",
              u.family, ntohs(u.port));
  return ncclSuccess;
}

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
  if (__atomic_load_n(&b->aborted, __ATOMIC_ACQUIRE))
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
    ncclResult_t res = acceptor_next(&b->acc, deadline, b->abort_fd, &c, what, reason, sizeof reason);
    if (res != ncclSuccess) SNAP_FAIL(res, "%s", reason);
    const struct ident* id = &c.m.u.id;
    if (id->from < 0 || id->from >= b->nranks) {
      refuse(b->role, c.fd, c.peer, "sender rank out of range");
      continue;
    }
    if (c.m.h.type == MSG_RING_HELLO) {
      if (want_ring && id->from == peer) {
        b->prev_fd = c.fd;
        return ncclSuccess;
      }
      refuse(b->role, c.fd, c.peer, "unexpected ring connection");
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
              "bootstrap operations?)", what, type_name(h->type), type_name(type));
  if (h->len != len)
    SNAP_FAIL(ncclRemoteError, "%s: message carries %llu bytes, expected %llu (ranks passed "
              "different sizes?)", what, (unsigned long long)h->len, (unsigned long long)len);
  return ncclSuccess;
}

/* Registers with the root and receives every rank's listener address. */
static ncclResult_t rendezvous(struct snapccl_bootstrap* b, const union snapccl_sockaddr* root,
                               const union snapccl_sockaddr* me) {
  char what[256], s[80];
  int fd = -1;
  snprintf(what, sizeof what, "%s: connect to the root %s", b->role,
           snapccl_sockaddr_str(root, s, sizeof s));
  SNAP_CHECK(snapccl_socket_connect(root, snapccl_socket_deadline(), b->abort_fd, &fd, what));

  struct hello h = {{b->nonce[0], b->nonce[1]}, b->rank, b->nranks, {0}};
  snapccl_sockaddr_to_wire(me, &h.listen);
  struct wire_hdr th;
  struct snapccl_wire_addr* table = NULL;
  size_t tlen = (size_t)b->nranks * sizeof *table;
  ncclResult_t res = ncclSuccess;
  snprintf(what, sizeof what, "%s: send HELLO to the root %s", b->role, s);
  SNAP_CHECK_GOTO(send_msg(b, fd, MSG_HELLO, &h, sizeof h, NULL, 0, what), res, out);
  /* This wait lasts until the last rank arrives: one timeout from our HELLO. */
  snprintf(what, sizeof what, "%s: wait for the address table from the root %s (all %d ranks "
           "must arrive)", b->role, s, b->nranks);
  int64_t deadline = snapccl_socket_deadline();
  SNAP_CHECK_GOTO(snapccl_socket_recv_all(fd, &th, sizeof th, deadline, b->abort_fd, what), res, out);
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
  id_to_wire(u, &w);
  snapccl_sockaddr_from_wire(&w, &root); /* check_id vetted it */
  SNAP_CHECK(snapccl_socket_pick_addr(snapccl_env()->socket_ifname, &me));
  SNAP_CHECK(snapccl_socket_listen(&me, &fd));
  ncclResult_t res = acceptor_init(&b->acc, fd, b->role, b->nonce,
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
  b->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (b->abort_fd < 0) {
    ncclResult_t res = snapccl_error(ncclSystemError, __func__, "eventfd failed: %s", strerror(errno));
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
             type_name(type), s + 1, n - 1, (b->rank + 1) % n, prev);
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
  acceptor_free(&b->acc);
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
