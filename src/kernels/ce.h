/* C entry points of the copy-engine algorithms' two small kernels (src/algos/ce_*.c move
 * the data with cudaMemcpyAsync; these only order the copies and reduce). */
#ifndef SNAPCCL_KERNELS_CE_H
#define SNAPCCL_KERNELS_CE_H

#include <cuda_runtime.h>

#include "kernels/kargs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A copy-engine flag value: the call's epoch above the step of the call's sync (1, 2, ...):
 * values only grow over the calls of a communicator, and within a call over its steps. */
#define SNAPCCL_CE_STEP_BITS 24
#define SNAPCCL_CE_MAX_STEPS ((1ull << SNAPCCL_CE_STEP_BITS) - 1)

/* One warp, one block (kernels/ce_sync.cu): posts `step` of this call to every peer's
 * copy-engine flag for this rank, then waits (bounded, abortable: keep_waiting) until every
 * peer posted it to this rank. `last`: the call's final sync, which publishes the epoch. */
cudaError_t snapccl_launch_ce_sync(const struct snapccl_kargs* a, unsigned long long step, int last,
                                   cudaStream_t stream);

/* The local reduce that completes a copy-engine reduce-scatter (kernels/ce_reduce.cu):
 * out[i] = op over ranks r in rank order of prescale(src[r][i]), i < elems, for this
 * rank's dtype and op (a->dtype, a->devop). src[a->rank] is this rank's own input (any
 * alignment); the others are staging (16-byte aligned, readable up to the next 16 bytes).
 * copy, when not NULL, receives the result too (staging: aligned, whole packs). */
struct snapccl_ce_reduce {
  const char* src[SNAPCCL_MAX_RANKS];
  char* out;
  char* copy;
  unsigned long long elems;
};
cudaError_t snapccl_launch_ce_reduce(const struct snapccl_kargs* a, const struct snapccl_ce_reduce* r,
                                     int blocks, cudaStream_t stream);

/* Loaders, one per file (kernels/kernel_load.cu runs them at init, as every kernel
 * file's; see launch.h). */
cudaError_t snapccl_load_ce_sync_kernel(int* blocks_per_sm);    /* kernels/ce_sync.cu */
cudaError_t snapccl_load_ce_reduce_kernels(int* blocks_per_sm); /* kernels/ce_reduce.cu */

#ifdef __cplusplus
}
#endif

#endif
