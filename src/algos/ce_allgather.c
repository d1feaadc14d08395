/* All-gather by copy engine (SNAPCCL_ALGO=allgather:ce_allgather): every rank copies its
 * input into its own staging, a sync, and every rank copies each peer's piece from that
 * peer's staging into its output (pull: one NVLink copy per peer, one local copy per
 * rank); in rounds of one staging slot, alternating between two; a last sync so that no
 * rank leaves while a peer still reads its staging. Dtype-blind (bytes). No SM time but
 * the one-warp syncs. Why it is safe: docs/ARCHITECTURE.md ("Copy-engine algorithms"). */
#include "algos/algo.h"
#include "algos/ce_common.h"
#include "algos/cost.h"
#include "comm.h"

static unsigned long long rounds(const struct snapccl_coll* c) {
  struct snapccl_ce_geom g;
  snapccl_ce_geometry(c, 1, &g);
  const unsigned long long bytes = c->count * snapccl_dtype_size(c->dtype);
  return bytes ? (bytes + g.area_bytes - 1) / g.area_bytes : 1;
}

static const char* can_run(const struct snapccl_coll* c) {
  const char* why = snapccl_ce_unusable(c, 0);
  return why ? why : snapccl_ce_too_many(rounds(c) + 1);
}

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  const double n = c->comm->nranks, R = (double)rounds(c);
  const double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  return (R + 1) * (k->launch_us + snapccl_cost_sync_us(c->comm)) +
         snapccl_cost_ce_us(c->comm, 1 + R * n, bytes * (n - 1), 2 * bytes);
}

static void body(struct snapccl_ce* ce) {
  const struct snapccl_coll* c = ce->coll;
  const unsigned long long n = c->count * ce->es, S = ce->g.area_bytes;
  const char* send = c->sendbuff;
  char* recv = c->recvbuff;
  if (send != recv + (unsigned long long)ce->me * n) snapccl_ce_copy(ce, recv + (unsigned long long)ce->me * n, send, n);
  for (unsigned long long off = 0, k = 0; off < n; off += S, k++) {
    const unsigned long long len = n - off < S ? n - off : S;
    const int slot = (int)(k & 1);
    snapccl_ce_copy(ce, snapccl_ce_staging(ce, ce->me, slot, 0), send + off, len);
    snapccl_ce_sync(ce, 0);
    for (int d = 1; d < ce->n; d++) {
      const int j = (ce->me + d) % ce->n; /* staggered: ranks do not all read one peer at once */
      snapccl_ce_copy(ce, recv + (unsigned long long)j * n + off, snapccl_ce_gather_src(ce, j, slot, 0), len);
    }
  }
  snapccl_ce_sync(ce, 1);
}

static ncclResult_t launch(const struct snapccl_coll* c) { return snapccl_ce_run(c, 1, body); }

/* Named only, for now: never run on a GPU when written, and its costs are constants from
 * issue 25, not measurements of ours (src/algos/cost.c). */
const struct snapccl_algo snapccl_allgather_ce = {
    .name = "ce_allgather", .kind = COLL_ALLGATHER, .can_run = can_run, .cost_us = cost,
    .launch = launch, .only_when_named = 1};
