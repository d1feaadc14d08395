/* Helpers shared by the bootstrap suites (test_bootstrap_*.c): forked and threaded
 * ranks, a rank program that exercises every operation, and raw TCP peers that
 * mirror the wire format of src/bootstrap_wire.h byte for byte, to forge messages.
 *
 * Multi-process cases create the id in the parent before fork (the root thread lives
 * in the parent) and let each child run one rank and _exit with 0 or a failure code
 * (its stderr names the failed check). */
#ifndef SNAPCCL_TEST_BOOTSTRAP_UTIL_H
#define SNAPCCL_TEST_BOOTSTRAP_UTIL_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bootstrap.h"
#include "error.h"

double now_s(void);
void sleep_ms(int ms);
/* SNAPCCL_BOOTSTRAP_TIMEOUT=seconds, loopback interfaces, environment re-read. */
void set_timeout(const char* seconds);
/* Every suite's .init: a 10 s bootstrap timeout. */
void setup(void);

/* Inside a rank (child process or thread): report the failed check and return its line. */
#define RCHECK(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "rank %d: check `%s` failed at line %d (last error: %s)\n", rank, \
              #cond, __LINE__, snapccl_last_error());                                  \
      return __LINE__;                                                                 \
    }                                                                                  \
  } while (0)

/* Sends what this process writes to stderr (logs included) to a temporary file until
 * stderr_capture_end, which returns it (caller frees). */
int stderr_capture_begin(void);
char* stderr_capture_end(int token);
/* Waits (at most 5 s) until what was captured so far contains needle. */
void stderr_capture_wait(int token, const char* needle);
/* Occurrences of needle in text. */
int count_of(const char* text, const char* needle);

/* Deterministic bytes: every rank can regenerate any rank's payload. */
void fill(void* p, size_t n, uint64_t seed);
uint64_t seed_of(int a, int b, int c);
int same_as(const void* got, size_t n, uint64_t seed);

typedef int (*rank_fn)(const ncclUniqueId* id, int rank, int nranks);
/* Forks nranks children running fn, waits for them at most bound_s seconds (then kills
 * them) and asserts each exited with 0. */
void run_forked(const ncclUniqueId* id, int nranks, rank_fn fn, double bound_s);
/* The same, calling forked(arg) in the parent once the children exist, before they run. */
void run_forked_hook(const ncclUniqueId* id, int nranks, rank_fn fn, double bound_s,
                     void (*forked)(void*), void* arg);
/* Initializes nranks ranks of one id concurrently in threads of this process. */
void init_in_threads(const ncclUniqueId* id, int nranks, struct snapccl_bootstrap** out);

/* The rank program of the functional cases: allgather, bcast, barrier, tagged messages. */
int rank_main_with(struct snapccl_bootstrap* b, int rank, int n);
int rank_main(const ncclUniqueId* id, int rank, int n);
/* A rank that only rendezvouses and runs one allgather (refusal cases). */
int rank_small(const ncclUniqueId* id, int rank, int n);

/* ---- forged peers: raw TCP, mirroring bootstrap_wire.h's format ---- */

#define WIRE_MAGIC 0x534e4250u
enum { MSG_HELLO = 1, MSG_TABLE = 2, MSG_RING_HELLO = 3, MSG_P2P = 4 };
struct wire_hdr {
  uint32_t magic, type;
  uint64_t len;
};
struct wire_addr {
  uint16_t family, port;
  uint32_t scope_id;
  uint8_t addr[16];
};
struct hello_msg {
  struct wire_hdr h;
  uint64_t nonce[2];
  int32_t rank, nranks;
  struct wire_addr listen;
};
struct ident_msg {
  struct wire_hdr h;
  uint64_t nonce[2];
  int32_t from, tag;
};

struct snapccl_unique_id id_fields(const ncclUniqueId* id);
/* A blocking connection to the id's root. */
int raw_connect(const ncclUniqueId* id);
void raw_send(int fd, const void* p, size_t n);
/* A HELLO as a real rank would send it (listener 127.0.0.1:listen_port). */
struct hello_msg forged_hello(const ncclUniqueId* id, int rank, int nranks, uint16_t listen_port);
/* 1 if the peer closed fd (EOF or reset) within ms, 0 if it is still open. */
int closed_within(int fd, int ms);
/* A bound, not listening, port: connecting there is refused. */
int refused_port(uint16_t* port);
/* A loopback listener of the test's own; *a gets its address. */
int raw_listen(struct sockaddr_in* a);
int raw_accept(int lfd);
void raw_read(int fd, void* buf, size_t n);
int raw_connect_to(const struct wire_addr* w);

#endif
