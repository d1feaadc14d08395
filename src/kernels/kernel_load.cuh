// Host side of every kernel file's loader (snapccl_kernels_runnable in kernels/oneshot.cu):
// each instantiation is loaded at init, because a lazy load at a rank's first launch can
// deadlock ranks sharing a GPU, and the block cap is sized by the fattest kernel it governs.
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

} // namespace snap
