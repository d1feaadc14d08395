/* All-reduce, one shot on Lamport buffers: the lowest latency for small floating-point
 * messages (no flag round trip). Kernel: src/kernels/oneshot.cu. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"

/* Bytes each block starts with: small messages use few blocks, so few SMs spin. */
#define BLOCK_BYTES (8u << 10)

static const char* can_run(const struct snapccl_coll* c) {
  const char* why = snapccl_transport_unusable(c);
  if (why) return why;
  if (!snapccl_dtype_is_float(c->dtype))
    return "integer types have no free bit pattern to serve as the Lamport sentinel";
  return snapccl_oneshot_unfit(c);
}

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  int n = c->comm->nranks;
  return k->launch_us + (n > 1 ? k->lamport_poll_us : 0) +
         snapccl_cost_bytes_us(bytes * (n - 1), k->lamport_link_gbps) +
         snapccl_cost_local_us(k, bytes * (2 * n + 1));
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  struct snapccl_geom g;
  snapccl_oneshot_geometry(c, BLOCK_BYTES, &g);
  return snapccl_launch_coll(c, snapccl_launch_lamport, &g);
}

const struct snapccl_algo snapccl_allreduce_lamport = {
    .name = "lamport", .kind = COLL_ALLREDUCE,
    .can_run = can_run, .cost_us = cost, .launch = launch};
