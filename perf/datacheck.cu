// GPU fill and check of perf buffers (datacheck.h). CUDA C++ only because kernels need
// it; the value logic is datagen.h's, shared with the host.
#include "datacheck.h"

namespace {

// Enough blocks to fill an H100/H200 several times over; larger buffers loop.
constexpr unsigned kThreads = 256;
constexpr size_t kMaxBlocks = 4096;

unsigned blocks_for(size_t count) {
  size_t b = (count + kThreads - 1) / kThreads;
  return (unsigned)(b < kMaxBlocks ? b : kMaxBlocks);
}

template <typename U>
__global__ void fill_kernel(U* buf, size_t count, perf_scheme s, int rank, uint64_t idx0,
                            uint64_t seed) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride)
    buf[i] = (U)perf_encode(s.dt, perf_input(&s, rank, idx0 + i, seed));
}

template <typename U>
__device__ uint64_t expected_bits(const perf_expect& e, size_t i) {
  if (e.mode == PERF_EXPECT_POISON) {
    uint64_t b = perf_poison_byte(e.s.dt);
    return (U)(b * 0x0101010101010101ull);
  }
  if (e.mode == PERF_EXPECT_GATHER) {
    uint64_t r = i / e.block;
    return (U)perf_encode(e.s.dt, perf_input(&e.s, (int)r, i - r * e.block, e.seed));
  }
  return (U)perf_encode(e.s.dt, perf_reduced(&e.s, e.idx0 + i, e.seed));
}

template <typename U>
__global__ void check_kernel(const U* buf, size_t count, perf_expect e,
                             unsigned long long* wrong) {
  size_t stride = (size_t)gridDim.x * blockDim.x;
  unsigned long long bad = 0;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
    uint64_t got = buf[i];
    uint64_t want = expected_bits<U>(e, i);
    // Poison must survive bit for bit, even where it is a NaN.
    int ok = e.mode == PERF_EXPECT_POISON ? got == want
                                          : perf_bits_match(e.s.dt, got, want, e.s.tol_ulps);
    bad += ok ? 0 : 1;
  }
  if (bad) atomicAdd(wrong, bad);
}

}  // namespace

extern "C" cudaError_t perf_dev_fill(void* buf, size_t count, perf_scheme s, int rank,
                                     uint64_t idx0, uint64_t seed, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  unsigned blocks = blocks_for(count);
  switch (perf_dt_size(s.dt)) {
  case 1: fill_kernel<<<blocks, kThreads, 0, stream>>>((uint8_t*)buf, count, s, rank, idx0, seed); break;
  case 2: fill_kernel<<<blocks, kThreads, 0, stream>>>((uint16_t*)buf, count, s, rank, idx0, seed); break;
  case 4: fill_kernel<<<blocks, kThreads, 0, stream>>>((uint32_t*)buf, count, s, rank, idx0, seed); break;
  case 8: fill_kernel<<<blocks, kThreads, 0, stream>>>((uint64_t*)buf, count, s, rank, idx0, seed); break;
  default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t perf_dev_check(const void* buf, size_t count, perf_expect e,
                                      unsigned long long* wrong, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  if (e.mode == PERF_EXPECT_GATHER && e.block == 0) return cudaErrorInvalidValue;
  unsigned blocks = blocks_for(count);
  switch (perf_dt_size(e.s.dt)) {
  case 1: check_kernel<<<blocks, kThreads, 0, stream>>>((const uint8_t*)buf, count, e, wrong); break;
  case 2: check_kernel<<<blocks, kThreads, 0, stream>>>((const uint16_t*)buf, count, e, wrong); break;
  case 4: check_kernel<<<blocks, kThreads, 0, stream>>>((const uint32_t*)buf, count, e, wrong); break;
  case 8: check_kernel<<<blocks, kThreads, 0, stream>>>((const uint64_t*)buf, count, e, wrong); break;
  default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}
