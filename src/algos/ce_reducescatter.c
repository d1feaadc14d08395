/* Reduce-scatter by copy engine (SNAPCCL_ALGO=reducescatter:ce_reducescatter): a sync
 * (every rank left its previous call, so its staging is free), then per round every
 * rank copies each peer's piece of its input into that peer's staging (push: one NVLink
 * copy per peer, none local), a sync, and the local reduce kernel sums its own piece and
 * the N-1 received ones in rank order into its output; two slots alternate; a last sync
 * so that no rank's next call writes into staging a peer still reduces from. Every dtype;
 * sum, prod, max, min, ncclAvg; not a PreMulSum with each rank's own scalar. Why it is
 * safe: docs/ARCHITECTURE.md ("Copy-engine algorithms"). */
#include "algos/algo.h"
#include "algos/ce_common.h"
#include "algos/cost.h"
#include "comm.h"

/* Elements of a slice per round: one staging area per source. */
static unsigned long long piece_elems(const struct snapccl_coll* c) {
  struct snapccl_ce_geom g;
  snapccl_ce_geometry(c, c->comm->nranks, &g);
  return g.area_bytes / snapccl_dtype_size(c->dtype);
}

static unsigned long long rounds(const struct snapccl_coll* c) {
  const unsigned long long P = piece_elems(c);
  return c->count ? (c->count + P - 1) / P : 1;
}

static const char* can_run(const struct snapccl_coll* c) {
  const char* why = snapccl_ce_unusable(c, 1);
  return why ? why : snapccl_ce_too_many(rounds(c) + 2);
}

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  const double n = c->comm->nranks, R = (double)rounds(c);
  const double slice = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  return (R + 2) * (k->launch_us + snapccl_cost_sync_us(c->comm)) + R * k->launch_us +
         snapccl_cost_ce_us(c->comm, R * (n - 1), slice * (n - 1), 0) + snapccl_cost_local_us(k, slice * (n + 1));
}

static void body(struct snapccl_ce* ce) {
  const struct snapccl_coll* c = ce->coll;
  const unsigned long long m = c->count, P = ce->g.area_bytes / ce->es;
  const char* send = c->sendbuff;
  snapccl_ce_sync(ce, 0);
  for (unsigned long long off = 0, k = 0; off < m; off += P, k++) {
    const unsigned long long len = m - off < P ? m - off : P;
    const int slot = (int)(k & 1);
    for (int d = 1; d < ce->n; d++) {
      const int j = (ce->me + d) % ce->n; /* staggered: ranks do not all write one peer at once */
      snapccl_ce_copy(ce, snapccl_ce_staging(ce, j, slot, ce->me), send + ((unsigned long long)j * m + off) * ce->es,
                      len * ce->es);
    }
    snapccl_ce_sync(ce, 0);
    struct snapccl_ce_reduce r = {.out = (char*)c->recvbuff + off * ce->es, .copy = NULL, .elems = len};
    for (int s = 0; s < ce->n; s++)
      r.src[s] = s == ce->me ? send + ((unsigned long long)ce->me * m + off) * ce->es
                             : snapccl_ce_staging(ce, ce->me, slot, s);
    snapccl_ce_reduce(ce, &r);
  }
  snapccl_ce_sync(ce, 1);
}

static ncclResult_t launch(const struct snapccl_coll* c) { return snapccl_ce_run(c, c->comm->nranks, body); }

/* Named only, for now: never run on a GPU when written, and its costs are constants from
 * issue 25, not measurements of ours (src/algos/cost.c). */
const struct snapccl_algo snapccl_reducescatter_ce = {
    .name = "ce_reducescatter", .kind = COLL_REDUCESCATTER, .can_run = can_run, .cost_us = cost,
    .launch = launch, .only_when_named = 1};
