// The separate residual + RMSNorm kernel of snapccl (src/kernels/fused_row.cuh), compiled
// into fused_rmsnorm_bench itself: its unfused baseline must run the very same kernel
// after NVIDIA's all-reduce too, when the loaded libnccl is NVIDIA's.
#include "kernels/fused_row.cuh"
#include "fused_bench.h"

extern "C" cudaError_t bench_rmsnorm_load(void) {
  const void* fns[3] = {(const void*)snap::fused::rmsnorm_kernel<ncclBfloat16>,
                        (const void*)snap::fused::rmsnorm_kernel<ncclFloat16>,
                        (const void*)snap::fused::rmsnorm_kernel<ncclFloat32>};
  for (const void* fn : fns) {
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)SNAPCCL_FUSED_ROW_CACHE_MAX);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

extern "C" cudaError_t bench_rmsnorm(const void* sum, const void* residual_in, const void* gamma,
                                     void* norm_out, void* residual_out, unsigned long long tokens,
                                     unsigned long long hidden, float eps, int dtype,
                                     cudaStream_t stream) {
  snapccl_fused_kargs f;
  memset(&f, 0, sizeof f);
  f.k.dtype = dtype;
  f.sum_src = sum;
  f.residual_in = residual_in;
  f.gamma = gamma;
  f.norm_out = norm_out;
  f.residual_out = residual_out;
  f.tokens = tokens;
  f.hidden = hidden;
  f.eps = eps;
  f.quant = FUSED_QUANT_NONE;
  const unsigned long long es = dtype == ncclFloat32 ? 4 : 2;
  const unsigned long long stride = (hidden * es + SNAPCCL_PACK - 1) / SNAPCCL_PACK * SNAPCCL_PACK;
  f.cache_row = stride <= SNAPCCL_FUSED_ROW_CACHE_MAX;
  const size_t smem = f.cache_row ? (size_t)stride : 0;
  const int blocks = tokens < 8192 ? (int)tokens : 8192;
  switch (dtype) {
    case ncclBfloat16: snap::fused::rmsnorm_kernel<ncclBfloat16><<<blocks, SNAPCCL_THREADS, smem, stream>>>(f); break;
    case ncclFloat16: snap::fused::rmsnorm_kernel<ncclFloat16><<<blocks, SNAPCCL_THREADS, smem, stream>>>(f); break;
    case ncclFloat32: snap::fused::rmsnorm_kernel<ncclFloat32><<<blocks, SNAPCCL_THREADS, smem, stream>>>(f); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
