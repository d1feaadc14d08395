/* All-reduce by copy engine (SNAPCCL_ALGO=allreduce:ce_allreduce): the copy-engine
 * reduce-scatter (ce_reducescatter.c) whose reduce also writes its result into the
 * rank's own area of its staging, then a sync, and the all-gather half by copy engine:
 * every rank copies each peer's reduced piece from that peer's staging into its output.
 * Slice j of the message is rank j's; rounds over two slots; a first sync (staging free)
 * and a last one (no rank leaves while a peer still reads its staging). The same dtypes
 * and ops as the reduce-scatter. Each slice is reduced by one rank and copied, so all
 * ranks hold bitwise-identical results. Why it is safe: docs/ARCHITECTURE.md
 * ("Copy-engine algorithms"). */
#include "algos/algo.h"
#include "algos/ce_common.h"
#include "algos/cost.h"
#include "comm.h"

static unsigned long long slice_elems(const struct snapccl_coll* c) {
  const unsigned long long n = (unsigned long long)c->comm->nranks;
  return (c->count + n - 1) / n;
}

static unsigned long long piece_elems(const struct snapccl_coll* c) {
  struct snapccl_ce_geom g;
  snapccl_ce_geometry(c, c->comm->nranks, &g);
  return g.area_bytes / snapccl_dtype_size(c->dtype);
}

static unsigned long long rounds(const struct snapccl_coll* c) {
  const unsigned long long P = piece_elems(c), sl = slice_elems(c);
  return sl ? (sl + P - 1) / P : 1;
}

static const char* can_run(const struct snapccl_coll* c) {
  const char* why = snapccl_ce_unusable(c, 1);
  return why ? why : snapccl_ce_too_many(2 * rounds(c) + 2);
}

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  const double n = c->comm->nranks, R = (double)rounds(c);
  const double slice = (double)slice_elems(c) * (double)snapccl_dtype_size(c->dtype);
  return (2 * R + 2) * (k->launch_us + snapccl_cost_sync_us(c->comm)) + R * k->launch_us +
         snapccl_cost_ce_us(c->comm, 2 * R * (n - 1), 2 * slice * (n - 1), 0) + snapccl_cost_local_us(k, slice * (n + 2));
}

/* Elements of slice j at offset off, at most P. */
static unsigned long long piece(const struct snapccl_coll* c, unsigned long long sl, int j, unsigned long long off,
                                unsigned long long P) {
  const unsigned long long start = (unsigned long long)j * sl + off, end = (unsigned long long)(j + 1) * sl;
  const unsigned long long stop = end < c->count ? end : c->count;
  if (start >= stop) return 0;
  return stop - start < P ? stop - start : P;
}

static void body(struct snapccl_ce* ce) {
  const struct snapccl_coll* c = ce->coll;
  const unsigned long long sl = slice_elems(c), P = ce->g.area_bytes / ce->es, es = ce->es;
  const char* send = c->sendbuff;
  char* recv = c->recvbuff;
  snapccl_ce_sync(ce, 0);
  for (unsigned long long off = 0, k = 0; off < sl; off += P, k++) {
    const int slot = (int)(k & 1);
    for (int d = 1; d < ce->n; d++) {
      const int j = (ce->me + d) % ce->n;
      snapccl_ce_copy(ce, snapccl_ce_staging(ce, j, slot, ce->me), send + ((unsigned long long)j * sl + off) * es,
                      piece(c, sl, j, off, P) * es);
    }
    snapccl_ce_sync(ce, 0);
    const unsigned long long mine = ((unsigned long long)ce->me * sl + off) * es;
    struct snapccl_ce_reduce r = {.out = recv + mine, .copy = snapccl_ce_staging(ce, ce->me, slot, ce->me),
                                  .elems = piece(c, sl, ce->me, off, P)};
    for (int s = 0; s < ce->n; s++) r.src[s] = s == ce->me ? send + mine : snapccl_ce_staging(ce, ce->me, slot, s);
    snapccl_ce_reduce(ce, &r);
    snapccl_ce_sync(ce, 0);
    for (int d = 1; d < ce->n; d++) {
      const int j = (ce->me + d) % ce->n;
      snapccl_ce_copy(ce, recv + ((unsigned long long)j * sl + off) * es, snapccl_ce_gather_src(ce, j, slot, j),
                      piece(c, sl, j, off, P) * es);
    }
  }
  snapccl_ce_sync(ce, 1);
}

static ncclResult_t launch(const struct snapccl_coll* c) { return snapccl_ce_run(c, c->comm->nranks, body); }

/* Named only, for now: never run on a GPU when written, and its costs are constants from
 * issue 25, not measurements of ours (src/algos/cost.c). */
const struct snapccl_algo snapccl_allreduce_ce = {
    .name = "ce_allreduce", .kind = COLL_ALLREDUCE, .can_run = can_run, .cost_us = cost,
    .launch = launch, .only_when_named = 1};
