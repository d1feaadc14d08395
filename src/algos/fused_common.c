/* What the fused algorithms share: geometry, kernel arguments, the launch through the
 * common launch path, the separate kernel, kernel loading, and the real-NCCL route. */
#include <pthread.h>
#include <string.h>

#include "algos/launch.h"
#include "comm.h"
#include "error.h"
#include "fused.h"
#include "interpose.h"
#include "kernels/fused_launch.h"
#include "log.h"
#include "real_nccl.h"
#include "transport/transport.h"

unsigned long long snapccl_fused_stride(const struct snapccl_fused* f) {
  unsigned long long rb = (unsigned long long)f->hidden * snapccl_dtype_size(f->dtype);
  return (rb + SNAPCCL_PACK - 1) / SNAPCCL_PACK * SNAPCCL_PACK;
}

int snapccl_fused_block_cap(const struct snapccl_comm* comm) {
  int cap = snapccl_transport_max_blocks(comm);
  if (comm->peers) {
    int min_sm = 0, share = 1;
    for (int r = 0; r < comm->nranks; r++) {
      const struct snapccl_peer_info* p = &comm->peers[r];
      if (!min_sm || p->sm_count < min_sm) min_sm = p->sm_count;
      int same = 0;
      for (int q = 0; q < comm->nranks; q++)
        same += comm->peers[q].proc_hash == p->proc_hash &&
                !memcmp(comm->peers[q].gpu_uuid, p->gpu_uuid, sizeof p->gpu_uuid);
      if (same > share) share = same;
    }
    /* Launch bounds promise two blocks per SM; the row cache (64 KiB at most) leaves
     * room for two on sm_80 and sm_90. Half of that is kept for the application. */
    int mine = min_sm > 0 ? min_sm * SNAPCCL_MIN_BLOCKS_PER_SM / 2 / share : cap;
    if (mine < cap) cap = mine;
  }
  return cap < 1 ? 1 : cap;
}

void snapccl_fused_kargs_fill(const struct snapccl_fused* f, struct snapccl_fused_kargs* k) {
  memset(k, 0, sizeof *k);
  k->k.send = f->input;
  k->k.recv = f->norm_out;
  k->k.dtype = (int)f->dtype;
  k->k.count = (unsigned long long)f->tokens * f->hidden;
  k->residual_in = f->residual_in;
  k->gamma = f->gamma;
  k->norm_out = f->norm_out;
  k->residual_out = f->residual_out;
  k->sum_out = f->sum_out;
  k->scale = f->scale;
  k->scale_out = f->scale_out;
  k->tokens = f->tokens;
  k->hidden = f->hidden;
  k->eps = f->eps;
  k->quant = f->quant;
  k->cache_row = snapccl_fused_stride(f) <= SNAPCCL_FUSED_ROW_CACHE_MAX;
}

/* The fused part of the arguments and the fused kernel, carried through the common launch
 * path, which completes the common part. */
struct fused_launch {
  const struct snapccl_fused_kargs* x;
  snapccl_fused_launcher_fn fn;
};

static cudaError_t launch_fused(const struct snapccl_kargs* k, const void* extra, int blocks,
                                cudaStream_t s) {
  const struct fused_launch* l = extra;
  struct snapccl_fused_kargs f = *l->x;
  f.k = *k;
  return l->fn(&f, blocks, s);
}

ncclResult_t snapccl_fused_launch_comm(const struct snapccl_fused* f, snapccl_fused_launcher_fn fn,
                                       int blocks, unsigned long long rows_per_chunk) {
  struct snapccl_coll coll;
  memset(&coll, 0, sizeof coll);
  coll.kind = COLL_ALLREDUCE;
  coll.sendbuff = f->input;
  coll.recvbuff = f->norm_out;
  coll.count = f->tokens * f->hidden;
  coll.dtype = f->dtype;
  coll.op = ncclSum;
  coll.devop = DEVOP_SUM;
  coll.comm = f->comm;
  coll.stream = f->stream;
  struct snapccl_fused_kargs x;
  snapccl_fused_kargs_fill(f, &x);
  x.rows_per_chunk = rows_per_chunk;
  struct snapccl_geom g = {.blocks = blocks, .count = coll.count};
  const struct fused_launch l = {&x, fn};
  return snapccl_launch_coll_ex(&coll, launch_fused, &l, &g);
}

/* The separate kernel does not spin: any grid; a few rows per block amortise nothing,
 * so one block per row up to a bound, then grid-stride. */
#define NORM_MAX_GRID 8192

ncclResult_t snapccl_fused_launch_norm(const struct snapccl_fused* f, const void* sum_src, int device) {
  struct snapccl_fused_kargs k;
  snapccl_fused_kargs_fill(f, &k);
  k.sum_src = sum_src;
  if (k.sum_out == sum_src) k.sum_out = NULL; /* the reduction already wrote it */
  int blocks = f->tokens < NORM_MAX_GRID ? (int)f->tokens : NORM_MAX_GRID;
  int dev = -1;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (device >= 0 && dev != device) CUDA_CHECK(cudaSetDevice(device));
  cudaError_t e = snapccl_launch_rmsnorm(&k, blocks, f->stream);
  if (device >= 0 && dev != device) cudaSetDevice(dev);
  if (e != cudaSuccess)
    SNAP_FAIL(ncclUnhandledCudaError, "residual+RMSNorm kernel launch failed: %s", cudaGetErrorString(e));
  return ncclSuccess;
}

#define MAX_DEVICES 256
static pthread_mutex_t g_load_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_loaded[MAX_DEVICES];

ncclResult_t snapccl_fused_ensure_loaded(int device) {
  if (device < 0 || device >= MAX_DEVICES) SNAP_FAIL(ncclInvalidArgument, "CUDA device %d out of range", device);
  if (__atomic_load_n(&g_loaded[device], __ATOMIC_ACQUIRE)) return ncclSuccess;
  pthread_mutex_lock(&g_load_lock);
  ncclResult_t res = ncclSuccess;
  if (!g_loaded[device]) {
    int dev = -1, per_sm = 0;
    cudaError_t e = CUDA_TRY(cudaGetDevice(&dev));
    if (e == cudaSuccess && dev != device) e = CUDA_TRY(cudaSetDevice(device));
    if (e == cudaSuccess) e = CUDA_TRY(snapccl_load_fused_kernels(&per_sm));
    if (dev >= 0 && dev != device) (void)CUDA_TRY(cudaSetDevice(dev));
    if (e != cudaSuccess) {
      res = snapccl_error(ncclUnhandledCudaError, __func__,
                          "loading the fused kernels on device %d failed: %s", device,
                          cudaGetErrorString(e));
    } else {
      if (per_sm < SNAPCCL_MIN_BLOCKS_PER_SM)
        WARN("fused kernels keep only %d block(s) per SM resident on device %d; ranks sharing "
             "this GPU may wait for each other until the timeout", per_sm, device);
      INFO(SUB_ALGO, "fused kernels loaded on device %d (%d blocks per SM)", device, per_sm);
      __atomic_store_n(&g_loaded[device], 1, __ATOMIC_RELEASE);
    }
  }
  pthread_mutex_unlock(&g_load_lock);
  return res;
}

void* snapccl_fused_sum_buffer(const struct snapccl_fused* f) {
  if (f->sum_out) return f->sum_out;
  if (f->quant == FUSED_QUANT_NONE) return f->norm_out;
  if (f->residual_out && f->residual_out != f->residual_in) return f->residual_out;
  return NULL;
}

ncclResult_t snapccl_fused_run_real(const struct snapccl_fused* f, ncclComm_t real, int device) {
  const struct snapccl_real* rl = snapccl_real();
  if (!rl || !rl->ncclAllReduce) SNAP_FAIL(ncclInvalidUsage, "there is no NVIDIA NCCL to reduce with");
  SNAP_CHECK(snapccl_fused_ensure_loaded(device));
  void* sum = snapccl_fused_sum_buffer(f);
  int scratch = 0;
  size_t bytes = f->tokens * f->hidden * snapccl_dtype_size(f->dtype);
  int dev = -1;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (!sum) {
    /* fp8 norm output with neither sumOut nor a residual_out we may use: a stream-ordered
     * scratch buffer (capturable: it becomes a graph memory node). */
    if (dev != device) CUDA_CHECK(cudaSetDevice(device));
    cudaError_t e = cudaMallocAsync(&sum, bytes, f->stream);
    if (dev != device) cudaSetDevice(dev);
    if (e != cudaSuccess) SNAP_FAIL(ncclUnhandledCudaError, "cudaMallocAsync of %zu B: %s", bytes, cudaGetErrorString(e));
    scratch = 1;
  }
  ncclResult_t r = snapccl_forwarded(
      rl->ncclAllReduce(f->input, sum, f->tokens * f->hidden, f->dtype, ncclSum, real, f->stream));
  if (r == ncclSuccess) r = snapccl_fused_launch_norm(f, sum, device);
  if (scratch) {
    if (dev != device) cudaSetDevice(device);
    cudaFreeAsync(sum, f->stream);
    if (dev != device) cudaSetDevice(dev);
  }
  return r;
}
