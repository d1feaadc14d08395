/* Reduce-scatter, direct: every rank pushes each peer's slice of its input into that
 * peer's staging; each reduces its own slice in rank order. Kernel: src/kernels/staged.cu. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"

static const char* can_run(const struct snapccl_coll* c) { return snapccl_transport_unusable(c); }

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  int n = c->comm->nranks;
  size_t es = snapccl_dtype_size(c->dtype);
  double slice = (double)c->count * (double)es;
  double rounds = snapccl_staged_rounds(c, c->count, es);
  return k->launch_us + (n > 1 ? rounds * snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_link_us(k, slice * (n - 1)) + snapccl_cost_local_us(k, slice * (n + 1));
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  struct snapccl_geom g = {.mode = STAGED_REDUCESCATTER, .count = c->count};
  snapccl_staged_geometry(c, c->count, snapccl_dtype_size(c->dtype), &g);
  return snapccl_launch_coll(c, snapccl_launch_staged, &g);
}

const struct snapccl_algo snapccl_reducescatter_direct = {
    .name = "direct", .kind = COLL_REDUCESCATTER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
