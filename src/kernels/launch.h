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
/* One-shot all-reduce with per-block flags (every dtype). */
cudaError_t snapccl_launch_oneshot(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);
/* One-shot all-reduce on Lamport buffers (floating types only). */
cudaError_t snapccl_launch_lamport(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);
/* Fills the workspace's Lamport buffers with the sentinel and zeroes the rest. */
cudaError_t snapccl_launch_ws_init(char* ws, const struct snapccl_ws_layout* lay, cudaStream_t stream);
/* Whether the library has kernels for the current GPU (e.g. built for sm_90, run on
 * sm_90); if so, *blocks_per_sm is how many blocks of the largest kernel fit on an SM. */
int snapccl_kernels_runnable(int* blocks_per_sm);

#ifdef __cplusplus
}
#endif

#endif
