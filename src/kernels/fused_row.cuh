// The row arithmetic of the fused all-reduce + residual + RMSNorm kernels, and the
// separate residual + RMSNorm kernel (used by the unfused and fallback paths, and
// compiled into perf/fused_rmsnorm_bench for its NCCL baseline).
//
// One row t, given its all-reduced sum (already rounded to the dtype, as an all-reduce
// leaves it):
//   r = dtype(sum + residual_in)                      -> residual_out
//   inv = 1 / sqrt(sum_i r_i^2 / hidden + eps)        (fp32)
//   y = r * inv * gamma                               -> norm_out (dtype, or fp8)
// Every kernel runs a row with the same thread mapping (pack p of the row by thread
// p % SNAPCCL_THREADS, increasing p) and the same reduction tree, with every floating
// operation written as an explicit _rn intrinsic (no contraction the compiler might do
// differently in different kernels): the one-shot, two-shot and separate paths give
// bitwise-identical rows for the same sums, on every rank.
#pragma once

#include "kernels/device_common.cuh"
#include "kernels/fused_kargs.h"
#include "kernels/reduce_ops.cuh"

namespace snap {
namespace fused {

constexpr int WARPS = SNAPCCL_THREADS / 32;

struct RowShared {
  float part[WARPS];
};

__device__ __forceinline__ int pack_bytes(unsigned long long row_bytes, unsigned long long p) {
  const unsigned long long left = row_bytes - p * SNAPCCL_PACK;
  return left < SNAPCCL_PACK ? (int)left : SNAPCCL_PACK;
}

// Block-wide sum, the same value in every thread: butterflies give every lane of a warp
// the same bits (x + y == y + x), then every thread adds the warp sums in one order.
__device__ __forceinline__ float block_sum(float v, RowShared& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = __fadd_rn(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh.part[threadIdx.x >> 5] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; w++) s = __fadd_rn(s, sh.part[w]);
  __syncthreads(); // part[] is free again
  return s;
}

__device__ __forceinline__ float block_max(float v, RowShared& sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if ((threadIdx.x & 31) == 0) sh.part[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; w++) m = fmaxf(m, sh.part[w]);
  __syncthreads();
  return m;
}

// n (<= 8) bytes of v at p, whatever p's alignment.
__device__ __forceinline__ void st_bytes(char* p, unsigned long long v, int n) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (n == 8 && (a & 7) == 0) {
    *reinterpret_cast<unsigned long long*>(p) = v;
  } else if (n == 4 && (a & 3) == 0) {
    *reinterpret_cast<unsigned*>(p) = (unsigned)v;
  } else {
    for (int i = 0; i < n; i++) p[i] = (char)(v >> (8 * i));
  }
}

// A pack's elements as fp32, and back (rounded to nearest even, as the all-reduce does).
template <int DT> struct Elems {
  using T = Type<DT>;
  using S = typename T::Storage;
  static constexpr int ES = sizeof(S);
  static constexpr int EPP = SNAPCCL_PACK / ES;

  __device__ static __forceinline__ void unpack(const Pack& p, float (&x)[EPP]) {
    S e[EPP];
    memcpy(e, &p, sizeof e);
#pragma unroll
    for (int i = 0; i < EPP; i++) x[i] = T::to(e[i]);
  }
  __device__ static __forceinline__ Pack pack(const float (&x)[EPP]) {
    S e[EPP];
#pragma unroll
    for (int i = 0; i < EPP; i++) e[i] = T::from(x[i]);
    Pack p;
    memcpy(&p, e, sizeof e);
    return p;
  }
  // dtype(s + r), element-wise.
  __device__ static __forceinline__ Pack add(const Pack& s, const Pack& r) {
    float x[EPP], y[EPP];
    unpack(s, x);
    unpack(r, y);
#pragma unroll
    for (int i = 0; i < EPP; i++) x[i] = __fadd_rn(x[i], y[i]);
    return pack(x);
  }
  __device__ static __forceinline__ float sumsq(const Pack& r, float acc) {
    float x[EPP];
    unpack(r, x);
#pragma unroll
    for (int i = 0; i < EPP; i++) acc = __fmaf_rn(x[i], x[i], acc);
    return acc;
  }
};

// Row t of the call. get_sum(p, nb, Pack& s) -> bool yields pack p of the row's sum
// (false: a bounded wait failed and the block must leave); again(p, nb) -> Pack yields
// the residual pack once more when the row is not cached (cache == nullptr). `bail` is
// the block's shared bail flag (nullptr for kernels that never wait). Returns false
// when the block must leave.
template <int DT, class GetSum, class Again>
__device__ __forceinline__ bool row(const snapccl_fused_kargs& f, unsigned long long t, Pack* cache,
                                    RowShared& sh, const int* bail, GetSum get_sum, Again again) {
  using E = Elems<DT>;
  constexpr int ES = E::ES, EPP = E::EPP;
  const unsigned long long H = f.hidden, rb = H * ES, P = (rb + SNAPCCL_PACK - 1) / SNAPCCL_PACK;
  const char* rin = f.residual_in ? static_cast<const char*>(f.residual_in) + t * rb : nullptr;
  char* rout = f.residual_out ? static_cast<char*>(f.residual_out) + t * rb : nullptr;
  char* sout = f.sum_out ? static_cast<char*>(f.sum_out) + t * rb : nullptr;

  // Pass 1: residual, its sum of squares; the residual row stays in the cache.
  float sq = 0.f;
  for (unsigned long long p = threadIdx.x; p < P; p += SNAPCCL_THREADS) {
    const int nb = pack_bytes(rb, p);
    Pack s;
    if (!get_sum(p, nb, s)) break;
    if (sout) st_n(sout + p * SNAPCCL_PACK, s, nb);
    Pack r = rin ? E::add(s, ld_n(rin + p * SNAPCCL_PACK, nb)) : s;
    if (rout) st_n(rout + p * SNAPCCL_PACK, r, nb);
    if (cache) cache[p] = r;
    sq = E::sumsq(r, sq);
  }
  const float total = block_sum(sq, sh);
  if (bail && *(volatile const int*)bail) return false; // set before the barrier: uniform
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(total, (float)H), f.eps)));

  // Each thread only reads back packs it wrote itself: no barrier needed for the cache,
  // and in-place outputs (norm_out == input, residual_out == residual_in) are safe.
  const char* g = static_cast<const char*>(f.gamma);
  auto value = [&](unsigned long long p, int nb, float (&y)[EPP]) {
    E::unpack(cache ? cache[p] : again(p, nb), y);
#pragma unroll
    for (int i = 0; i < EPP; i++) y[i] = __fmul_rn(y[i], inv);
    if (g) {
      float gv[EPP];
      E::unpack(ld_n(g + p * SNAPCCL_PACK, nb), gv);
#pragma unroll
      for (int i = 0; i < EPP; i++) y[i] = __fmul_rn(y[i], gv[i]);
    }
  };

  if (f.quant == FUSED_QUANT_NONE) {
    char* out = static_cast<char*>(f.norm_out) + t * rb;
    for (unsigned long long p = threadIdx.x; p < P; p += SNAPCCL_THREADS) {
      const int nb = pack_bytes(rb, p);
      float y[EPP];
      value(p, nb, y);
      st_n(out + p * SNAPCCL_PACK, E::pack(y), nb);
    }
    return true;
  }

  float qs;
  if (f.quant == FUSED_QUANT_FP8_STATIC) {
    qs = __fdiv_rn(1.0f, *f.scale);
  } else {
    float m = 0.f;
    for (unsigned long long p = threadIdx.x; p < P; p += SNAPCCL_THREADS) {
      float y[EPP];
      value(p, pack_bytes(rb, p), y);
#pragma unroll
      for (int i = 0; i < EPP; i++) m = fmaxf(m, fabsf(y[i])); // the tail is zero
    }
    m = block_max(m, sh);
    const float sc = fmaxf(__fdiv_rn(m, SNAPCCL_FP8_E4M3_MAX), SNAPCCL_FUSED_MIN_SCALE);
    if (threadIdx.x == 0) f.scale_out[t] = sc;
    qs = __fdiv_rn(1.0f, sc);
  }
  char* out = static_cast<char*>(f.norm_out) + t * H;
  for (unsigned long long p = threadIdx.x; p < P; p += SNAPCCL_THREADS) {
    const int nb = pack_bytes(rb, p);
    float y[EPP];
    value(p, nb, y);
    unsigned long long bits = 0;
#pragma unroll
    for (int i = 0; i < EPP; i++)
      bits |= (unsigned long long)__nv_cvt_float_to_fp8(__fmul_rn(y[i], qs), __NV_SATFINITE, __NV_E4M3)
              << (8 * i);
    st_bytes(out + p * EPP, bits, nb / ES);
  }
  return true;
}

// The separate kernel: rows of f.sum_src (reduced already), no communication, no epoch.
// When the row is not cached, the residual comes back from residual_out (written by this
// very thread) or is recomputed from sum_src and residual_in, which are then intact:
// residual_out == residual_in implies residual_out is written, and sum_src may be
// norm_out (the unfused path reduces into it) only because each pack of norm_out is
// written after the same thread's last read of it.
template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    rmsnorm_kernel(const __grid_constant__ snapccl_fused_kargs f) {
  extern __shared__ Pack row_cache[];
  __shared__ RowShared sh;
  using E = Elems<DT>;
  const unsigned long long rb = f.hidden * E::ES;
  Pack* cache = f.cache_row ? row_cache : nullptr;
  for (unsigned long long t = blockIdx.x; t < f.tokens; t += gridDim.x) {
    const char* src = static_cast<const char*>(f.sum_src) + t * rb;
    const char* rin = f.residual_in ? static_cast<const char*>(f.residual_in) + t * rb : nullptr;
    const char* rout = f.residual_out ? static_cast<const char*>(f.residual_out) + t * rb : nullptr;
    row<DT>(
        f, t, cache, sh, nullptr,
        [&](unsigned long long p, int nb, Pack& s) {
          s = ld_n(src + p * SNAPCCL_PACK, nb);
          return true;
        },
        [&](unsigned long long p, int nb) {
          if (rout) return ld_n(rout + p * SNAPCCL_PACK, nb);
          Pack s = ld_n(src + p * SNAPCCL_PACK, nb);
          return rin ? E::add(s, ld_n(rin + p * SNAPCCL_PACK, nb)) : s;
        });
  }
}

} // namespace fused
} // namespace snap
