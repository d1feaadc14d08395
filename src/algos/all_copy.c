/* The copy algorithm of all three collectives: with one rank every collective is a copy
 * (or nothing, in place), as in NCCL. Only when the reduction leaves a lone input
 * unchanged; a PreMulSum by a user scalar still needs the kernels. */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/launch.h"
#include "comm.h"
#include "error.h"
#include "host_profile.h"

static const char* can_run(const struct snapccl_coll* c) {
  if (c->comm->nranks != 1) return "more than one rank";
  if (c->devop == DEVOP_PREMULSUM && c->scalar_mode != SCALAR_RECIPROCAL)
    return "a PreMulSum by a user scalar changes the data";
  return NULL;
}

static double cost(const struct snapccl_coll* c) {
  (void)c;
  return 0.0; /* never slower than a kernel doing the same copy */
}

static ncclResult_t launch(const struct snapccl_coll* c) {
  size_t bytes = c->count * snapccl_dtype_size(c->dtype);
  if (c->sendbuff == c->recvbuff || bytes == 0) return ncclSuccess;
  int dev;
  SNAP_PROF_MARK(PROF_ARGS);
  SNAP_CHECK(snapccl_device_enter(c->comm, &dev));
  cudaError_t e = cudaMemcpyAsync(c->recvbuff, c->sendbuff, bytes, cudaMemcpyDeviceToDevice, c->stream);
  snapccl_device_leave(c->comm, dev);
  SNAP_PROF_END(PROF_LAUNCH);
  if (e != cudaSuccess) SNAP_FAIL(ncclUnhandledCudaError, "cudaMemcpyAsync: %s", cudaGetErrorString(e));
  return ncclSuccess;
}

const struct snapccl_algo snapccl_allreduce_copy = {
    .name = "copy", .kind = COLL_ALLREDUCE,
    .can_run = can_run, .cost_us = cost, .launch = launch};
const struct snapccl_algo snapccl_allgather_copy = {
    .name = "copy", .kind = COLL_ALLGATHER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
const struct snapccl_algo snapccl_reducescatter_copy = {
    .name = "copy", .kind = COLL_REDUCESCATTER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
