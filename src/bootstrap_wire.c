/* The bootstrap's wire format helpers and acceptor (see bootstrap_wire.h). */
#include "bootstrap_wire.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"
#include "error.h"
#include "log.h"

const char* snapccl_bs_type_name(uint32_t t) {
  static const char* const names[] = {"?", "HELLO", "TABLE", "RING_HELLO", "P2P",
                                      "ALLGATHER", "BCAST", "BARRIER", "REFUSE"};
  return t < sizeof names / sizeof names[0] ? names[t] : "?";
}



ncclResult_t snapccl_bs_acceptor_init(struct acceptor* a, int fd, const char* role,
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

void snapccl_bs_refusals_flush(struct acceptor* a) {
  if (!a->unlogged) return;
  WARN("%s: refused %llu more bootstrap connections (%llu in all; the latest: %s)", a->role,
       a->unlogged, a->refused, a->last_refusal);
  a->unlogged = 0;
}

void snapccl_bs_acceptor_free(struct acceptor* a) {
  snapccl_bs_refusals_flush(a); /* before the listener closes: all is logged then */
  for (int i = 0; i < a->n; i++) close(a->p[i].fd);
  if (a->fd >= 0) close(a->fd);
  free(a->p);
  a->p = NULL;
  a->n = 0;
  a->fd = -1;
}

void snapccl_bs_send_refusal(int fd, enum refuse_code code, const char* why) {
  struct {
    struct wire_hdr h;
    struct refuse r;
    char text[MAX_REFUSE_TEXT];
  } m;
  size_t n = strlen(why);
  if (n > MAX_REFUSE_TEXT) n = MAX_REFUSE_TEXT;
  m.h = (struct wire_hdr){WIRE_MAGIC, MSG_REFUSE, sizeof m.r + n};
  m.r = (struct refuse){code, 0};
  memcpy(m.text, why, n);
  /* A few hundred bytes into an empty socket buffer: this never blocks, and a peer
   * that left gets nothing. */
  (void)send(fd, &m, sizeof m.h + sizeof m.r + n, MSG_DONTWAIT | MSG_NOSIGNAL);
  /* Unread input would make close() reset the connection and drop the message. A
   * peer that keeps sending gets no more than 64 KiB read for it. */
  char sink[512];
  for (int i = 0; i < 128 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
  }
  shutdown(fd, SHUT_WR);
}

/* Anyone who can reach the port can make us refuse, as often as they like: the first
 * refusals are logged one by one, later ones as one line per interval with a count. */
void snapccl_bs_refuse(struct acceptor* a, int fd, const char* peer, enum refuse_code code,
                       const char* why) {
  if (a->tell_refused && code != REFUSE_SILENT) snapccl_bs_send_refusal(fd, code, why);
  close(fd);
  a->refused++;
  snprintf(a->last_refusal, sizeof a->last_refusal, "from %s: %s", peer, why);
  if (a->refused <= REFUSE_LOG_BURST) {
    WARN("%s: refused bootstrap connection from %s: %s%s", a->role, peer, why,
         a->refused == REFUSE_LOG_BURST ? " (further refusals are counted, and logged "
                                          "every few seconds)" : "");
    a->next_log_ms = snapccl_now_ms() + REFUSE_LOG_INTERVAL_MS;
    return;
  }
  a->unlogged++;
  if (snapccl_now_ms() >= a->next_log_ms) {
    snapccl_bs_refusals_flush(a);
    a->next_log_ms = snapccl_now_ms() + REFUSE_LOG_INTERVAL_MS;
  }
}

static void pending_drop(struct acceptor* a, int i, enum refuse_code code, const char* why) {
  snapccl_bs_refuse(a, a->p[i].fd, a->p[i].peer, code, why);
  a->p[i] = a->p[--a->n];
}

/* Frees a slot for a new connection: drops the oldest one still without a complete
 * prefix. 0 if every pending connection is complete (they are handed out first). */
static int pending_evict_oldest(struct acceptor* a) {
  int old = -1;
  for (int i = 0; i < a->n; i++)
    if (a->p[i].got < a->p[i].want && (old < 0 || a->p[i].seq < a->p[old].seq)) old = i;
  if (old < 0) return 0;
  pending_drop(a, old, REFUSE_RETRY, "evicted: too many connections without a complete first message");
  return 1;
}

/* Out of descriptors (EMFILE/ENFILE) or kernel memory (ENOBUFS/ENOMEM): a passing
 * condition of this process, not a failure of the rendezvous. Rest the listener
 * briefly and go on; the connection waits in the backlog. (Evicting a pending one to
 * free its descriptor would mostly evict honest ranks accepted a moment earlier: idle
 * ones give theirs back at their own deadline.) 0 if errno is no such condition. */
static int accept_exhausted(struct acceptor* a, int err) {
  if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) return 0;
  int64_t now = snapccl_now_ms();
  a->accept_failures++;
  if (now >= a->accept_next_log_ms) {
    WARN("%s: accept failed: %s; resting the listener %d ms and going on (%llu such "
         "failures so far)", a->role, strerror(err), ACCEPT_BACKOFF_MS, a->accept_failures);
    a->accept_next_log_ms = now + REFUSE_LOG_INTERVAL_MS;
  }
  a->accept_resume_ms = now + ACCEPT_BACKOFF_MS;
  return 1;
}

static int64_t prefix_deadline(void) {
  int64_t bootstrap = snapccl_socket_deadline(), prefix = snapccl_now_ms() + PREFIX_TIMEOUT_MS;
  return prefix < bootstrap ? prefix : bootstrap;
}

/* Size of the fixed part that follows a header, or 0 with *why if the header is bad
 * (*why NULL: not our protocol at all). */
static size_t fixed_size(const struct acceptor* a, const struct wire_hdr* h, const char** why) {
  if (h->magic != WIRE_MAGIC) return *why = NULL, 0; /* not our protocol: nothing to tell */
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

const char* snapccl_bs_prefix_check(const struct acceptor* a, struct pending_conn* c,
                                    enum refuse_code* code) {
  *code = REFUSE_FATAL;
  if (c->want == sizeof(struct wire_hdr) && c->got >= sizeof(struct wire_hdr)) {
    const char* why = NULL;
    size_t f = fixed_size(a, &c->m.h, &why);
    if (!f) {
      if (!why) *code = REFUSE_SILENT;
      return why ? why : "bad magic (not a snapccl bootstrap peer)";
    }
    c->want += f;
  }
  /* Both HELLO and ident start with the nonce. */
  if (c->want > sizeof(struct wire_hdr) && c->got == c->want &&
      memcmp(c->m.u.id.nonce, a->nonce, sizeof a->nonce) != 0)
    return "wrong nonce: this listener belongs to another unique id (the id's own root "
           "is gone: used up, given up, or its process exited)";
  return NULL;
}

/* Reads what is available of connection i's prefix (never beyond it). May drop it. */
static void pending_read(struct acceptor* a, int i) {
  struct pending_conn* c = &a->p[i];
  while (c->got < c->want) {
    ssize_t k = recv(c->fd, (char*)&c->m + c->got, c->want - c->got, MSG_DONTWAIT);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (k <= 0) {
      pending_drop(a, i, REFUSE_SILENT,
                   k == 0 ? "closed before a complete message (truncated)" : strerror(errno));
      return;
    }
    c->got += (size_t)k;
    enum refuse_code code;
    const char* why = snapccl_bs_prefix_check(a, c, &code);
    if (why) {
      pending_drop(a, i, code, why);
      return;
    }
  }
}

const char* snapccl_bs_hello_refusal(int nranks, const int* fds, const struct hello* h, char* buf,
                                     size_t len) {
  union snapccl_sockaddr a;
  if (h->nranks <= 0 || h->nranks > MAX_RANKS)
    return snprintf(buf, len, "nranks %d is out of range [1, %d]", h->nranks, MAX_RANKS), buf;
  if (nranks && h->nranks != nranks)
    return snprintf(buf, len, "nranks differs: this rank says %d, the ranks that came first %d",
                    h->nranks, nranks), buf;
  if (h->rank < 0 || h->rank >= h->nranks)
    return snprintf(buf, len, "rank %d is out of range for %d ranks", h->rank, h->nranks), buf;
  if (nranks && fds[h->rank] >= 0)
    return snprintf(buf, len, "duplicate rank: rank %d of %d has arrived already", h->rank,
                    h->nranks), buf;
  if (snapccl_sockaddr_from_wire(&h->listen, &a) != 0)
    return snprintf(buf, len, "the rank's listener address is unusable"), buf;
  return NULL;
}

int snapccl_bs_parse_refusal(uint64_t len, const void* body, enum refuse_code* code, char* text,
                             size_t tlen) {
  struct refuse r;
  if (len < sizeof r || len > sizeof r + MAX_REFUSE_TEXT || tlen == 0) return 0;
  memcpy(&r, body, sizeof r);
  if (r.code != REFUSE_FATAL && r.code != REFUSE_RETRY && r.code != REFUSE_GAVE_UP) return 0;
  size_t n = (size_t)len - sizeof r;
  if (n >= tlen) n = tlen - 1;
  const char* raw = (const char*)body + sizeof r;
  for (size_t i = 0; i < n; i++) /* it ends up in logs */
    text[i] = raw[i] >= 0x20 && raw[i] <= 0x7e ? raw[i] : '?';
  text[n] = 0;
  *code = (enum refuse_code)r.code;
  return 1;
}

static int pending_complete(const struct pending_conn* c) {
  return c->got == c->want && c->want > sizeof(struct wire_hdr);
}

/* Returns the oldest connection that presented a complete, well-formed prefix with
 * the right nonce; its fd becomes the caller's. On failure writes the reason. */
ncclResult_t snapccl_bs_acceptor_next(struct acceptor* a, int64_t deadline, int abort_fd,
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
      if (a->p[i].deadline <= now)
        pending_drop(a, i, REFUSE_RETRY, "no complete first message within its deadline");
      else if (a->p[i].deadline < wake) wake = a->p[i].deadline;
    }
    if (now >= deadline) {
      snprintf(reason, rlen, "%s: timed out (SNAPCCL_BOOTSTRAP_TIMEOUT=%g s)", what,
               snapccl_env()->bootstrap_timeout_s);
      return ncclRemoteError;
    }
    /* The listener is always polled (a full set evicts rather than stops accepting),
     * except for a short rest after accept ran out of resources. */
    int resting = now < a->accept_resume_ms;
    if (resting && a->accept_resume_ms < wake) wake = a->accept_resume_ms;
    struct pollfd fds[2 + MAX_PENDING];
    int nf = 0;
    fds[nf++] = (struct pollfd){.fd = abort_fd, .events = POLLIN};
    fds[nf++] = (struct pollfd){.fd = resting ? -1 : a->fd, .events = POLLIN};
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
    /* Backwards: a drop moves the last entry (already read) into the freed slot. */
    for (int i = a->n - 1; i >= 0; i--)
      if (fds[2 + i].revents) pending_read(a, i);
    for (int accepted = 0; accepted < ACCEPT_BATCH && (fds[1].revents & POLLIN); accepted++) {
      if (a->n == MAX_PENDING && !pending_evict_oldest(a)) break;
      struct pending_conn* c = &a->p[a->n];
      union snapccl_sockaddr peer;
      int r = snapccl_socket_try_accept(a->fd, &c->fd, &peer);
      if (r == 0) break;
      if (r < 0 && accept_exhausted(a, errno)) break;
      if (r < 0) {
        snprintf(reason, rlen, "%s: accept failed: %s", what, strerror(errno));
        return ncclSystemError;
      }
      c->seq = a->seq++;
      c->deadline = prefix_deadline();
      c->got = 0;
      c->want = sizeof(struct wire_hdr);
      snapccl_sockaddr_str(&peer, c->peer, sizeof c->peer);
      a->n++;
      /* Honest peers send their prefix right after connecting: often it is here. */
      pending_read(a, a->n - 1);
    }
  }
}

void snapccl_bs_id_to_wire(const struct snapccl_unique_id* u, struct snapccl_wire_addr* w) {
  memset(w, 0, sizeof *w);
  w->family = u->family;
  w->port = u->port;
  w->scope_id = u->scope_id;
  memcpy(w->addr, u->addr, sizeof w->addr);
}
