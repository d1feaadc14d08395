/* All-reduce, two shot: reduce-scatter then all-gather through the staging buffers,
 * pipelined in rounds so any size runs; on registered buffers, in place. Kernel:
 * src/kernels/staged.cu. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"
#include "transport/registration.h"

static unsigned long long slice_elems(const struct snapccl_coll* c) {
  unsigned long long n = (unsigned long long)c->comm->nranks;
  unsigned long long epp = SNAPCCL_PACK / snapccl_dtype_size(c->dtype);
  return ((c->count + n - 1) / n + epp - 1) / epp * epp;
}

static const char* can_run(const struct snapccl_coll* c) { return snapccl_transport_unusable(c); }

static double cost(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  int n = c->comm->nranks;
  size_t es = snapccl_dtype_size(c->dtype);
  double bytes = (double)c->count * (double)es;
  double rounds = snapccl_staged_rounds(c, slice_elems(c), es);
  return k->launch_us + (n > 1 ? 2.0 * rounds * snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_link_us(k, 2.0 * bytes * (n - 1) / n) + snapccl_cost_local_us(k, bytes * 3);
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  struct snapccl_geom g = {.mode = STAGED_ALLREDUCE, .count = c->count};
  snapccl_staged_geometry(c, slice_elems(c), snapccl_dtype_size(c->dtype), &g);
  /* Registered buffers: read in place from every rank's input and written into every
   * rank's output when every rank's are registered alike (decided in the kernel). A
   * PreMulSum with each rank's own scalar stages: a reader would scale a peer's input
   * with its own scalar. */
  struct snapccl_reg_args reg;
  const int scalable = c->devop != DEVOP_PREMULSUM || c->scalar_mode == SCALAR_RECIPROCAL;
  snapccl_reg_call(c->comm, c->sendbuff, c->recvbuff, c->count * snapccl_dtype_size(c->dtype), scalable, &reg);
  return snapccl_launch_coll_ex(c, snapccl_launch_twoshot_reg, &reg, &g);
}

const struct snapccl_algo snapccl_allreduce_twoshot = {
    .name = "twoshot", .kind = COLL_ALLREDUCE,
    .can_run = can_run, .cost_us = cost, .launch = launch};
