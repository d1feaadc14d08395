/* C entry points of the kernels (src/kernels/ *.cu). Each returns the launch's
 * cudaError_t; the grid is `blocks` x SNAPCCL_THREADS. */
#ifndef SNAPCCL_LAUNCH_H
#define SNAPCCL_LAUNCH_H

#include <cuda_runtime.h>

#include "kernels/kargs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Two-shot all-reduce, direct reduce-scatter and direct all-gather (a.mode). */
cudaError_t snapccl_launch_staged(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);
/* The two-shot all-reduce (a.mode STAGED_ALLREDUCE) with the registered-buffer arguments
 * (`reg`: a struct snapccl_reg_args): without their exchange the staged kernel; with it,
 * in place when every rank's buffers are registered alike, else staged. */
cudaError_t snapccl_launch_twoshot_reg(const struct snapccl_kargs* a, const void* reg, int blocks,
                                       cudaStream_t stream);
/* One-shot all-reduce with per-block flags (every dtype). */
cudaError_t snapccl_launch_oneshot(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);
/* One-shot all-reduce on Lamport buffers (floating types only). */
cudaError_t snapccl_launch_lamport(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);
/* Fills the workspace's Lamport buffers with the sentinel and zeroes the rest. */
cudaError_t snapccl_launch_ws_init(char* ws, const struct snapccl_ws_layout* lay, cudaStream_t stream);

/* Loaders, one per kernel file: each loads every instantiation of its file on the
 * current device now (a lazy load at a rank's first launch can deadlock ranks sharing a
 * GPU, kernels/kernel_load.cu) and sets *blocks_per_sm to the fewest blocks per SM any
 * of them keeps resident at its launch shape (0 on failure). */
cudaError_t snapccl_load_oneshot_kernels(int* blocks_per_sm);  /* kernels/oneshot.cu */
cudaError_t snapccl_load_staged_kernels(int* blocks_per_sm);   /* kernels/staged.cu */
cudaError_t snapccl_load_lowprec_kernels(int* blocks_per_sm);  /* kernels/lowprec.cu */
/* kernels/fused_rmsnorm.cu; also allows the fused kernels their row cache of shared memory. */
cudaError_t snapccl_load_fused_kernels(int* blocks_per_sm);
cudaError_t snapccl_load_multimem_kernels(int* blocks_per_sm); /* kernels/multimem.cu */
/* Whether the library has kernels for the current GPU (e.g. built for sm_90, run on
 * sm_90): the collectives' loaders succeeded; the optional features' were tried too.
 * If so, *blocks_per_sm is how many blocks of the fattest kernel the block cap sizes fit
 * on an SM. Clears the CUDA error of a loader that failed. */
int snapccl_kernels_runnable(int* blocks_per_sm);

#ifdef __cplusplus
}
#endif

#endif
