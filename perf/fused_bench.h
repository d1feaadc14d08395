/* fused_rmsnorm_bench's own copy of snapccl's separate residual + RMSNorm kernel
 * (perf/fused_bench_norm.cu). */
#ifndef PERF_FUSED_BENCH_H_
#define PERF_FUSED_BENCH_H_

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Allows the kernels their shared-memory row cache on the current device. */
cudaError_t bench_rmsnorm_load(void);
/* residual_out = sum + residual_in; norm_out = RMSNorm(residual_out) * gamma, per row. */
cudaError_t bench_rmsnorm(const void* sum, const void* residual_in, const void* gamma,
                          void* norm_out, void* residual_out, unsigned long long tokens,
                          unsigned long long hidden, float eps, int dtype, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
