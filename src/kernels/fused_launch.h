/* C entry points of the fused kernels (src/kernels/fused_rmsnorm.cu). Each returns the
 * launch's cudaError_t; the grid is `blocks` x SNAPCCL_THREADS, with the padded row as
 * dynamic shared memory when f->cache_row is set. dtype (f->k.dtype) is ncclBfloat16,
 * ncclFloat16 or ncclFloat32. */
#ifndef SNAPCCL_FUSED_LAUNCH_H
#define SNAPCCL_FUSED_LAUNCH_H

#include <cuda_runtime.h>

#include "kernels/fused_kargs.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One shot on the Lamport buffers; rows must be cached (f->cache_row). */
cudaError_t snapccl_launch_fused_oneshot(const struct snapccl_fused_kargs* f, int blocks,
                                         cudaStream_t stream);
/* Two shot through the rs/ag staging; f->rows_per_chunk rows of `stride` bytes fit a chunk. */
cudaError_t snapccl_launch_fused_twoshot(const struct snapccl_fused_kargs* f, int blocks,
                                         cudaStream_t stream);
/* The separate residual + RMSNorm on f->sum_src; any grid. */
cudaError_t snapccl_launch_rmsnorm(const struct snapccl_fused_kargs* f, int blocks,
                                   cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
