/* What the multicast tests share (test_nvls_gate.c, test_nvls_stub.c and nvls_stub.c, one
 * binary): the stub driver's per-rank state and counters, fake communicators ("worlds" of
 * ranks, each set up through the real bootstrap and the real multicast setup), and the
 * checks on what they did.
 *
 * Safety: SNAPCCL_NVLS=1 is set only inside the stub tests, after the stub table is
 * installed, and those tests skip themselves when a GPU is visible (REQUIRE_NO_GPU), so no
 * real driver can ever be reached from here. */
#ifndef SNAPCCL_TEST_NVLS_STUB_H
#define SNAPCCL_TEST_NVLS_STUB_H

#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdint.h>

#include "nccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MAXR 8
#define GRAN (2u << 20)

int gpu_visible(void);
/* Every test that opens the gate (stubs only) starts here. */
#define REQUIRE_NO_GPU()                                                                    \
  do {                                                                                      \
    if (gpu_visible())                                                                      \
      cr_skip_test("a GPU is visible: the stubbed multicast tests run only where none is"); \
  } while (0)

double now_s(void);
/* Sets (v NULL: unsets) a variable and re-reads the settings. */
void env_set(const char* name, const char* v);

/* ---- the stub driver (nvls_stub.c) ---- */

/* Per rank (thread-local in threads; the only rank in a forked child). */
struct stub_rank {
  char log[4096];
  int ordinal;
  int attr_mc, attr_posix, attr_fabric;
  const char* fail; /* a table member name to fail on this rank */
  /* NVML answer */
  int fabric_ok;
  unsigned clique;
  unsigned char uuid0;
  int fabric_state;
};
extern struct stub_rank g_rank[MAXR];
extern int64_t g_expect_creator_pid; /* a forked importer checks the exporter's tag */
extern int g_all_in_process;         /* every rank is a thread here: device counts are visible */
extern atomic_int g_mc_releases, g_inits;

void stub_reset(void);
/* The stub suite's init and fini: the stub tables in, the settings they need. */
void stub_install(void);
void stub_remove(void);

/* ---- fake communicators ---- */

struct rank_cfg {
  uint64_t host, proc; /* 0: the real ones */
  int gpu;             /* GPU identity (ranks with the same value share a GPU) */
  int usable;
};

struct rank_out {
  int rc;   /* 0 ok, else the failing line */
  int open;
  int handle;
  char reason[200];
  char log_setup[4096];
  char log_free[4096];
  int sentinel_ok;
};

struct world {
  int n;
  ncclUniqueId id;
  struct rank_cfg cfg[MAXR];
  struct rank_out out[MAXR];
};

/* One rank: rendezvous, peer table, setup, verdict, free; 0, or the failing line. */
int run_rank(struct world* w, int rank);
void world_init(struct world* w, int n);
/* Every rank a thread of this process. */
void run_threads(struct world* w);

/* Whether a rank's call log holds `call`. */
int has(const char* log, const char* call);
void assert_no_multicast_calls(const struct world* w);
/* No handle, address range, mapping or binding left. */
void assert_balanced(void);
void assert_closed(const struct world* w, const char* why);

#endif
