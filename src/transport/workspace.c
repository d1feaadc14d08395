/* The workspace every rank allocates and every peer maps: layout and initial state. */
#include <string.h>

#include "error.h"
#include "kernels/launch.h"
#include "log.h"
#include "transport/transport_impl.h"

static unsigned long long align_up(unsigned long long x, unsigned long long a) {
  return (x + a - 1) / a * a;
}

/* Identical on every rank: all inputs are agreed at setup. */
void snapccl_ws_layout_compute(struct snapccl_ws_layout* lay, int nranks, int max_blocks,
                               int64_t buffsize) {
  memset(lay, 0, sizeof *lay);
  lay->nranks = nranks;
  lay->max_blocks = max_blocks;
  lay->oneshot_bytes = snapccl_oneshot_slot_bytes(nranks);
  /* SNAPCCL_BUFFSIZE covers the two staging regions (reduce-scatter and all-gather),
   * two slots each, one chunk per (source, block). */
  unsigned long long per = (unsigned long long)(buffsize > 0 ? buffsize : 0) /
                           (4ull * (unsigned long long)nranks * (unsigned long long)max_blocks);
  /* Whole 4 KiB pieces: a block's chunk, and its piece of the user buffers, then start on
   * a page of their own (with 66 blocks per rank, 127,088-byte chunks made the staged
   * kernels and a plain copy 5-8% slower than 64 blocks' 128 KiB ones on an H100). */
  per = per / SNAPCCL_STAGING_ALIGN * SNAPCCL_STAGING_ALIGN;
  if (per < 4096) per = 4096; /* below this, flag round trips dominate every round */
  if (per > (4u << 20)) per = 4u << 20;
  lay->chunk_bytes = per;
  unsigned long long off = align_up(sizeof(struct snapccl_ws_header), 4096);
  lay->flags_off = off;
  off += align_up((unsigned long long)FLAG_KINDS * SNAPCCL_MAX_RANKS * SNAPCCL_MAX_BLOCKS * 8, 4096);
  lay->probe_off = off;
  off += align_up(SNAPCCL_MAX_RANKS * 64, 4096);
  lay->ce_flags_off = off;
  off += align_up(SNAPCCL_MAX_RANKS * 8, 4096);
  lay->reg_off = off;
  off += align_up((unsigned long long)SNAPCCL_MAX_RANKS * SNAPCCL_MAX_BLOCKS * SNAPCCL_REG_DESC_WORDS * 8, 4096);
  lay->lamport_off = off;
  off += align_up(2ull * nranks * lay->oneshot_bytes, 4096);
  lay->oneshot_off = off;
  off += align_up(2ull * nranks * lay->oneshot_bytes, 4096);
  lay->rs_off = off;
  off += align_up(2ull * nranks * max_blocks * per, 4096);
  lay->ag_off = off;
  off += align_up(2ull * nranks * max_blocks * per, 4096);
  lay->total = off;
}

ncclResult_t snapccl_ws_alloc(struct snapccl_transport* t, int cuda_dev) {
  (void)cuda_dev;
  void* p = NULL;
  cudaStream_t s;
  ncclResult_t res = ncclSuccess;
  CUDA_CHECK(cudaMalloc(&p, t->lay.total));
  t->ws_local = p;
  /* A private non-blocking stream: a device-wide sync here could wait for kernels of
   * other communicators that wait, in turn, for this thread. */
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  /* Zero flags, counters and epoch; then the Lamport buffers get their sentinel. */
  CUDA_CHECK_GOTO(cudaMemsetAsync(p, 0, t->lay.total, s), res, out);
  CUDA_CHECK_GOTO(snapccl_launch_ws_init(t->ws_local, &t->lay, s), res, out);
  CUDA_CHECK_GOTO(cudaStreamSynchronize(s), res, out);
out:
  cudaStreamDestroy(s);
  return res;
}
