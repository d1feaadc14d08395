/* The bootstrap's wire format and its acceptor (a listener that reads the prefixes of
 * all pending connections at once, so a stalling or lying peer is refused after its own
 * deadline without holding up the honest ones). Internal to src/bootstrap*.c. */
#ifndef SNAPCCL_BOOTSTRAP_WIRE_H
#define SNAPCCL_BOOTSTRAP_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "bootstrap.h"
#include "socket.h"

#define WIRE_MAGIC 0x534e4250u /* "SNBP" */
enum msg_type {
  MSG_HELLO = 1,  /* rank -> root: who I am and where I listen */
  MSG_TABLE,      /* root -> rank: every rank's listener */
  MSG_RING_HELLO, /* rank -> next rank's listener: the ring connection */
  MSG_P2P,        /* rank -> any rank's listener: one tagged message */
  MSG_ALLGATHER,  /* ring data; the type catches ranks calling different collectives */
  MSG_BCAST,
  MSG_BARRIER,
  MSG_REFUSE, /* root -> rank: why it is not admitted (struct refuse, then the text) */
};
#define MAX_P2P_BYTES ((uint64_t)1 << 30) /* largest tagged message we allocate for */
#define MAX_RANKS (1 << 20)
/* Connections whose prefix is being read. When all slots are taken, a new connection
 * evicts the oldest incomplete one, so idle or slow peers can delay an honest rank by
 * one eviction at most, never lock it out; more connections wait in the backlog. */
#define MAX_PENDING 64
/* Connections accepted per wake-up: fewer than MAX_PENDING, so one accepted in a
 * wake-up is read again at the next before newer ones could evict it. */
#define ACCEPT_BATCH 16
/* A peer has this long (or the bootstrap timeout if shorter) to send its prefix after
 * connecting; honest ranks send it at once. */
#define PREFIX_TIMEOUT_MS 5000
/* accept() out of descriptors or memory: the listener rests this long, then tries again. */
#define ACCEPT_BACKOFF_MS 50
/* Refusals: this many WARN lines, then one per interval with the count in between. */
#define REFUSE_LOG_BURST 8
#define REFUSE_LOG_INTERVAL_MS 10000

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

/* What a refused rank is told (MSG_REFUSE's fixed part; up to MAX_REFUSE_TEXT bytes of
 * text follow, not terminated). */
enum refuse_code {
  REFUSE_SILENT = 0, /* not sent: the peer did not speak our protocol, or left */
  REFUSE_FATAL,      /* this rank cannot join: ncclInvalidUsage with the text */
  REFUSE_RETRY,      /* evicted or too slow: connect again */
  REFUSE_GAVE_UP,    /* the root gave up waiting for other ranks: ncclRemoteError */
};
struct refuse {
  uint32_t code;
  uint32_t pad;
};
#define MAX_REFUSE_TEXT 200
_Static_assert(sizeof(struct refuse) == 8, "wire layout");

struct prefix {
  struct wire_hdr h;
  union {
    struct hello hello;
    struct ident id;
  } u;
};


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
  int tell_refused;  /* send MSG_REFUSE to refused peers (the root: its peers are ranks) */
  struct pending_conn* p;
  int n;
  uint64_t seq;
  /* Refused connections: how many were logged, and those since the last line. */
  unsigned long long refused, unlogged;
  int64_t next_log_ms;
  char last_refusal[160];
  /* accept() failures from resource exhaustion: until when the listener rests, how
   * many so far, when the next may be logged. */
  int64_t accept_resume_ms, accept_next_log_ms;
  unsigned long long accept_failures;
};

const char* snapccl_bs_type_name(uint32_t t);
ncclResult_t snapccl_bs_acceptor_init(struct acceptor* a, int fd, const char* role,
                                      const uint64_t nonce[2], unsigned allowed);
void snapccl_bs_acceptor_free(struct acceptor* a);
/* Refusing a peer is not a failure of ours: tell it why (if the acceptor tells and the
 * code is not silent), log it (rate-limited), close, carry on. */
void snapccl_bs_refuse(struct acceptor* a, int fd, const char* peer, enum refuse_code code,
                       const char* why);
/* Sends MSG_REFUSE on fd without waiting (best effort: the peer may be gone). */
void snapccl_bs_send_refusal(int fd, enum refuse_code code, const char* why);
/* Logs the refusals counted but not logged yet. */
void snapccl_bs_refusals_flush(struct acceptor* a);
/* The oldest connection that presented a complete, well-formed prefix with the right
 * nonce; its fd becomes the caller's. On failure writes the reason. */
ncclResult_t snapccl_bs_acceptor_next(struct acceptor* a, int64_t deadline, int abort_fd,
                                      struct pending_conn* out, const char* what, char* reason,
                                      size_t rlen);
void snapccl_bs_id_to_wire(const struct snapccl_unique_id* u, struct snapccl_wire_addr* w);

/* ---- the parsers, without sockets (tests/fuzz drives them with arbitrary bytes) ---- */

/* Checks a connection's prefix after c->got grew (the bytes are in c->m): extends
 * c->want once the header is in. NULL while the prefix is acceptable so far, else why
 * it is refused, with what the peer is told in *code. */
const char* snapccl_bs_prefix_check(const struct acceptor* a, struct pending_conn* c,
                                    enum refuse_code* code);
/* Why the root cannot admit HELLO h (written to buf), or NULL. nranks: 0 until the first
 * admitted rank set it; fds[nranks]: the admitted ranks' connections, -1 for missing. */
const char* snapccl_bs_hello_refusal(int nranks, const int* fds, const struct hello* h, char* buf,
                                     size_t len);
/* A MSG_REFUSE's body of len bytes: its code and its text, made printable and terminated
 * in text[tlen]. 0 if malformed. */
int snapccl_bs_parse_refusal(uint64_t len, const void* body, enum refuse_code* code, char* text,
                             size_t tlen);

#endif
