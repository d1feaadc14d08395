/* The fused call as two kernels: snapccl's own all-reduce (whatever the all-reduce
 * selector picks, SNAPCCL_ALGO=allreduce:... included) into a sum buffer, then the
 * separate residual + RMSNorm kernel on the same stream. Runs whatever the fused
 * kernels cannot (rows larger than a staging chunk). And "local": one rank, the
 * separate kernel on the input itself. Kernel: src/kernels/fused_row.cuh. */
#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/cost.h"
#include "comm.h"
#include "error.h"
#include "fused.h"
#include "transport/transport.h"

/* The all-reduce as a collective call of ours, into `sum` (any non-NULL pointer for
 * selection: it never depends on buffer addresses). */
static int ar_coll(const struct snapccl_fused* f, void* sum, struct snapccl_coll* coll) {
  return snapccl_coll_prepare_quiet(COLL_ALLREDUCE, f->input ? f->input : sum, sum,
                                    f->tokens * f->hidden, f->dtype, ncclSum, f->comm, f->stream,
                                    coll);
}

static const struct snapccl_algo* ar_algo(const struct snapccl_fused* f, struct snapccl_coll* coll) {
  static char dummy;
  void* sum = snapccl_fused_sum_buffer(f);
  const struct snapccl_algo* a = NULL;
  if (!ar_coll(f, sum ? sum : &dummy, coll) || snapccl_algo_choose(coll, &a) != ncclSuccess) return NULL;
  return a;
}

static const char* can_run(const struct snapccl_fused* f, char* buf, size_t len) {
  struct snapccl_coll coll;
  if (ar_algo(f, &coll)) return NULL;
  /* The selector's reason, without recording an error. */
  const char* why = snapccl_transport_unusable_reason(f->comm);
  snprintf(buf, len, "snapccl's all-reduce cannot run it: %s",
           why ? why : "no all-reduce algorithm takes it (see SNAPCCL_ALGO)");
  return buf;
}

static double cost(const struct snapccl_fused* f) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(f->comm);
  struct snapccl_coll coll;
  const struct snapccl_algo* a = ar_algo(f, &coll);
  double bytes = (double)f->tokens * (double)f->hidden * (double)snapccl_dtype_size(f->dtype);
  /* The sum written and read back once more than fused, and a second launch. */
  return (a ? a->cost_us(&coll) : 1e30) + k->launch_us + snapccl_cost_local_us(k, bytes * 5.0);
}

static ncclResult_t launch(const struct snapccl_fused* f) {
  struct snapccl_coll coll;
  const struct snapccl_algo* a = ar_algo(f, &coll);
  if (!a) SNAP_FAIL(ncclInvalidUsage, "snapccl's all-reduce cannot run this call any more");
  void* sum = snapccl_fused_sum_buffer(f);
  int scratch = 0, dev = -1, cdev = f->comm->cuda_dev;
  size_t bytes = f->tokens * f->hidden * snapccl_dtype_size(f->dtype);
  if (!sum) {
    /* fp8 output and no buffer of the caller's to hold the sum: stream-ordered scratch
     * (a memory node when captured in a graph). */
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev != cdev) CUDA_CHECK(cudaSetDevice(cdev));
    cudaError_t e = cudaMallocAsync(&sum, bytes, f->stream);
    if (dev != cdev) cudaSetDevice(dev);
    if (e != cudaSuccess) SNAP_FAIL(ncclUnhandledCudaError, "cudaMallocAsync of %zu B: %s", bytes, cudaGetErrorString(e));
    scratch = 1;
  }
  coll.recvbuff = sum;
  ncclResult_t r = a->launch(&coll);
  if (r == ncclSuccess) r = snapccl_fused_launch_norm(f, sum, cdev);
  if (scratch) {
    if (dev != cdev) cudaSetDevice(cdev);
    cudaFreeAsync(sum, f->stream);
    if (dev != cdev) cudaSetDevice(dev);
  }
  return r;
}

const struct snapccl_fused_algo snapccl_fused_unfused = {"unfused", can_run, cost, launch};

static const char* local_can_run(const struct snapccl_fused* f, char* buf, size_t len) {
  (void)buf, (void)len;
  return f->comm->nranks == 1 ? NULL : "more than one rank";
}

static double local_cost(const struct snapccl_fused* f) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(f->comm);
  double bytes = (double)f->tokens * (double)f->hidden * (double)snapccl_dtype_size(f->dtype);
  return k->launch_us + snapccl_cost_local_us(k, bytes * 4.0);
}

static ncclResult_t local_launch(const struct snapccl_fused* f) {
  return snapccl_fused_launch_norm(f, f->input, f->comm->cuda_dev);
}

const struct snapccl_fused_algo snapccl_fused_local = {"local", local_can_run, local_cost, local_launch};
