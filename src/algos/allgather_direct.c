/* All-gather, direct: every rank pushes its input into every peer's staging, pipelined
 * in rounds; dtype-blind (moves bytes). Kernel: src/kernels/staged.cu. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"

static const char* can_run(const struct snapccl_coll* c) { return snapccl_transport_unusable(c); }

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  int n = c->comm->nranks;
  double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  double rounds = snapccl_staged_rounds(c, c->count * snapccl_dtype_size(c->dtype), 1);
  return k->launch_us + (n > 1 ? rounds * snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_link_us(k, bytes * (n - 1)) + snapccl_cost_local_us(k, bytes * 2 * n);
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  unsigned long long bytes = c->count * snapccl_dtype_size(c->dtype);
  struct snapccl_geom g = {.mode = STAGED_ALLGATHER, .count = bytes};
  snapccl_staged_geometry(c, bytes, 1, &g);
  return snapccl_launch_coll(c, snapccl_launch_staged, &g);
}

const struct snapccl_algo snapccl_allgather_direct = {
    .name = "direct", .kind = COLL_ALLGATHER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
