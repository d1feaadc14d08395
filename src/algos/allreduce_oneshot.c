/* All-reduce, one shot with flags: every rank pushes its whole input to every peer and
 * reduces locally; one flag round trip. Small messages of any dtype.
 * Kernel: src/kernels/oneshot.cu. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"

#define BLOCK_BYTES (8u << 10)

static const char* can_run(const struct snapccl_coll* c) {
  const char* why = snapccl_transport_unusable(c);
  if (why) return why;
  return snapccl_oneshot_unfit(c);
}

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  int n = c->comm->nranks;
  return k->launch_us + (n > 1 ? snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_bytes_us(bytes * (n - 1), k->oneshot_link_gbps) +
         snapccl_cost_local_us(k, bytes * (n + 1));
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  struct snapccl_geom g;
  snapccl_oneshot_geometry(c, BLOCK_BYTES, &g);
  return snapccl_launch_coll(c, snapccl_launch_oneshot, &g);
}

const struct snapccl_algo snapccl_allreduce_oneshot = {
    .name = "oneshot", .kind = COLL_ALLREDUCE,
    .can_run = can_run, .cost_us = cost, .launch = launch};
