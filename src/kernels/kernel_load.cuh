// What every kernel file's loader (kernels/launch.h, snapccl_load_*_kernels) shares: each
// instantiation is loaded at init, because a lazy load at a rank's first launch can
// deadlock ranks sharing a GPU, and the block cap is sized by the fattest kernel it
// governs (kernels/kernel_load.cu).
#pragma once

#include <cuda_runtime.h>
#include <stddef.h>

namespace snap {

// Loads fn now and lowers fit to how many of its blocks (threads each, smem bytes of
// dynamic shared memory) an SM holds.
inline cudaError_t load_and_fit(const void* fn, int threads, size_t smem, int& fit) {
  cudaFuncAttributes attr;
  int n = 0;
  cudaError_t e = cudaFuncGetAttributes(&attr, fn);
  if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, threads, smem);
  if (e == cudaSuccess && n < fit) fit = n;
  return e;
}

// Loads every kernel of a list (n entries, each launched with `threads` threads and
// `smem` bytes of dynamic shared memory), lowering fit to the fewest blocks per SM.
inline cudaError_t load_all_and_fit(const void* const* fns, size_t n, int threads, size_t smem, int& fit) {
  for (size_t i = 0; i < n; i++) {
    cudaError_t e = load_and_fit(fns[i], threads, smem, fit);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

} // namespace snap

// An entry of such a list, for SNAP_FOR_EACH_DTYPE (kernels/reduce_ops.cuh).
#define SNAP_KERNEL_OF(DT, KERNEL) (const void*)KERNEL<DT>,
