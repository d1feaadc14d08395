#include "algos/launch.h"

#include <stdatomic.h>
#include <string.h>

#include "comm.h"
#include "error.h"
#include "host_profile.h"
#include "transport/transport.h"

const char* snapccl_transport_unusable(const struct snapccl_coll* coll) {
  return snapccl_transport_unusable_reason(coll->comm);
}

int snapccl_coll_max_blocks(const struct snapccl_coll* coll) {
  return snapccl_transport_max_blocks(coll->comm);
}

int snapccl_coll_whole_sms(const struct snapccl_coll* coll) {
  return snapccl_transport_whole_sms(coll->comm);
}

const struct snapccl_ws_layout* snapccl_coll_layout(const struct snapccl_coll* coll) {
  return snapccl_transport_layout(coll->comm);
}

const char* snapccl_oneshot_unfit(const struct snapccl_coll* coll) {
  return coll->count * snapccl_dtype_size(coll->dtype) > snapccl_coll_layout(coll)->oneshot_bytes
             ? "the message is larger than the one-shot buffer"
             : NULL;
}

void snapccl_oneshot_geometry(const struct snapccl_coll* coll, unsigned block_bytes,
                              struct snapccl_geom* g) {
  unsigned long long bytes = coll->count * snapccl_dtype_size(coll->dtype);
  unsigned long long want = (bytes + block_bytes - 1) / block_bytes;
  int cap = snapccl_coll_max_blocks(coll);
  memset(g, 0, sizeof *g);
  g->blocks = want < 1 ? 1 : want > (unsigned long long)cap ? cap : (int)want;
  g->count = coll->count;
}

/* The staged kernels' grids: enough blocks that each starts with at least 8 KiB of its
 * slice (one or two batches of its threads: small calls spread over SMs instead of
 * queueing batches on one block), the whole slice in as few rounds as the staging
 * allows, and rounds balanced across blocks. */
#define STAGED_MIN_BLOCK_BYTES (8u << 10)

unsigned long long snapccl_split_rounds(const struct snapccl_coll* coll, unsigned long long units,
                                        unsigned long long unit_bytes, unsigned long long cap,
                                        unsigned long long quantum, unsigned long long min_block_bytes,
                                        int* blocks) {
  unsigned long long want = (units * unit_bytes + min_block_bytes - 1) / min_block_bytes;
  int b = snapccl_coll_max_blocks(coll);
  if (want < (unsigned long long)b) b = want ? (int)want : 1;
  unsigned long long per_round = (unsigned long long)b * cap;
  unsigned long long rounds = (units + per_round - 1) / per_round;
  if (rounds == 0) rounds = 1;
  unsigned long long share = (units + rounds * b - 1) / (rounds * b);
  share = (share + quantum - 1) / quantum * quantum;
  *blocks = b;
  return share > cap ? cap : share;
}

void snapccl_staged_geometry(const struct snapccl_coll* coll, unsigned long long slice_elems,
                             size_t esize, struct snapccl_geom* g) {
  const unsigned long long epp = SNAPCCL_PACK / esize;
  const unsigned long long cap_elems = snapccl_coll_layout(coll)->chunk_bytes / esize / epp * epp;
  /* Shares of whole 4 KiB pages where the chunk holds pages (every staging chunk does),
   * so that blocks' pieces of the user buffers start on page boundaries too. */
  const unsigned long long page = SNAPCCL_STAGING_ALIGN / esize;
  const unsigned long long quantum = cap_elems % page == 0 ? page : epp;
  unsigned long long chunk = snapccl_split_rounds(coll, slice_elems, esize, cap_elems, quantum,
                                                  STAGED_MIN_BLOCK_BYTES, &g->blocks);
  g->chunk_elems = chunk ? chunk : epp;
}

double snapccl_staged_rounds(const struct snapccl_coll* coll, unsigned long long slice_elems,
                             size_t esize) {
  struct snapccl_geom g;
  snapccl_staged_geometry(coll, slice_elems, esize, &g);
  const unsigned long long per = (unsigned long long)g.blocks * g.chunk_elems;
  return (double)((slice_elems + per - 1) / per);
}

/* One launch, as the transport's call order runs it (transport/order.c). */
struct launch {
  const struct snapccl_kargs* k;
  snapccl_launcher_ex_fn fn;
  const void* extra;
  int blocks;
  cudaStream_t stream;
};

static cudaError_t enqueue(void* p) {
  const struct launch* l = p;
  return l->fn(l->k, l->extra, l->blocks, l->stream);
}

/* Visible GPUs, asked once (0: not yet). With one, the current device can only be the
 * communicator's, and a call asks the runtime nothing about devices. */
static atomic_int g_ndev;

ncclResult_t snapccl_device_enter(const struct snapccl_comm* comm, int* prev) {
  int n = atomic_load_explicit(&g_ndev, memory_order_relaxed);
  if (n == 0) {
    CUDA_CHECK(cudaGetDeviceCount(&n));
    atomic_store_explicit(&g_ndev, n, memory_order_relaxed);
  }
  *prev = comm->cuda_dev;
  if (n == 1) return ncclSuccess;
  CUDA_CHECK(cudaGetDevice(prev));
  if (*prev != comm->cuda_dev) CUDA_CHECK(cudaSetDevice(comm->cuda_dev));
  return ncclSuccess;
}

void snapccl_device_leave(const struct snapccl_comm* comm, int prev) {
  if (prev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(prev));
}

ncclResult_t snapccl_launch_coll_ex(const struct snapccl_coll* coll, snapccl_launcher_ex_fn fn,
                                    const void* extra, const struct snapccl_geom* g) {
  struct snapccl_comm* comm = coll->comm;
  struct snapccl_kargs k = *snapccl_transport_kargs(comm);
  k.send = coll->sendbuff;
  k.recv = coll->recvbuff;
  k.count = g->count;
  k.dtype = coll->dtype;
  k.devop = coll->devop;
  k.scalar_mode = coll->scalar_mode;
  k.scalar_bits = coll->scalar_bits;
  k.scalar_dev = coll->scalar_dev;
  k.mode = g->mode;
  k.chunk_elems = g->chunk_elems;

  struct launch l = {&k, fn, extra, g->blocks, coll->stream};
  int dev;
  SNAP_PROF_MARK(PROF_ARGS);
  SNAP_CHECK(snapccl_device_enter(comm, &dev));
  ncclResult_t res = snapccl_transport_ordered(comm, coll->stream, enqueue, &l);
  snapccl_device_leave(comm, dev);
  SNAP_PROF_END(PROF_LAUNCH);
  return res;
}

/* A launcher of the common shape, carried as the extra argument. */
static cudaError_t plain(const struct snapccl_kargs* k, const void* fn, int blocks, cudaStream_t s) {
  return (*(const snapccl_launcher_fn*)fn)(k, blocks, s);
}

ncclResult_t snapccl_launch_coll(const struct snapccl_coll* coll, snapccl_launcher_fn fn,
                                 const struct snapccl_geom* g) {
  return snapccl_launch_coll_ex(coll, plain, &fn, g);
}
