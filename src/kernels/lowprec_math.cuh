// The arithmetic of the low-precision all-reduce (docs/LOWPREC.md), written once for the
// GPU and the CPU: every function here is __host__ __device__, so the kernels
// (src/kernels/lowprec.cu), the CPU reference the tests compare the GPU with
// (src/kernels/lowprec_ref.cu) and the accuracy tool (perf/lowprec_accuracy.cu) compute
// the very same bits.
//
// A group is G consecutive elements (G a multiple of 32 from 32 to 1024; the last group
// of a buffer may be shorter). It travels as one 32-bit scale word and one code per
// element:
//
//   scale word   bit 31: the group holds non-finite values ("flagged");
//                bits 0..30: the fp32 scale s = absmax / qmax (absmax over the FINITE
//                elements only, so one Inf does not wipe out the group's precision).
//   fp8 E4M3     code = e4m3(x * (1/s)), round to nearest even, saturating at +-448;
//                x ~= e4m3_value(code) * s
//   int8         code = clamp(rint(x * (1/s)), -qmax, qmax), qmax = 127;  x ~= code * s
//   int4         the same with qmax = 7 (one nibble per element)
//
// Flagged groups reserve three codes for the non-finite elements (the reduction only
// needs their class: any NaN, or +Inf with -Inf, makes NaN; otherwise the infinity
// wins), and their finite elements keep out of those codes:
//
//   format  +Inf   -Inf   NaN    finite elements of a flagged group
//   fp8     0x7F   0xFF   0x80   as usual (never 0x7F/0xFF: saturating); -0 becomes +0
//   int8    +127   -127   -128   qmax = 126
//   int4    +7     -7     -8     qmax = 6
//
// In unflagged groups those codes are ordinary values or never produced (the flag
// decides). Zero groups (absmax 0) and groups whose scale underflows to 0 encode every
// finite element as 0. 1/s is computed once per group (and x / s divided out where 1/s
// would overflow: denormal scales).
//
// Every floating-point operation that decides a bit is an explicit IEEE single-precision
// operation rounded to nearest (the *_rn intrinsics on the GPU; on the CPU a volatile
// temporary keeps the compiler from fusing a multiply and an add into an FMA), so the
// CPU and the GPU agree bit for bit.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "kernels/lowprec.h"
#include "nccl.h"

#define LP_HD __host__ __device__ __forceinline__

namespace snap {
namespace lp {

constexpr int FMT_OFF = SNAPCCL_LP_OFF;
constexpr int FMT_FP8 = SNAPCCL_LP_FP8;
constexpr int FMT_INT8 = SNAPCCL_LP_INT8;
constexpr int FMT_INT4 = SNAPCCL_LP_INT4;
constexpr int GROUP_MIN = SNAPCCL_LP_GROUP_MIN;
constexpr int GROUP_MAX = SNAPCCL_LP_GROUP_MAX;
constexpr uint32_t FLAG = 0x80000000u;

// ---------------------------------------------------------------- IEEE single operations

LP_HD uint32_t f2u(float x) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(x);
#else
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
#endif
}
LP_HD float u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
#endif
}
LP_HD float mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  volatile float r = a * b;
  return r;
#endif
}
LP_HD float add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  volatile float r = a + b;
  return r;
#endif
}
LP_HD float div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  volatile float r = a / b;
  return r;
#endif
}
// Round to the nearest integer, ties to even (the CPU's default rounding mode).
LP_HD float rne(float x) { return rintf(x); }
LP_HD bool finite(float x) { return (f2u(x) & 0x7f800000u) != 0x7f800000u; }

// ---------------------------------------------------------------- fp8 E4M3

// Finite y to E4M3: round to nearest even, saturating at +-448 (0x7E). Bit operations
// only; tiny values (below 2^-6, the subnormal range) round as y * 2^9 to an integer.
LP_HD uint8_t e4m3_encode(float y) {
  const uint32_t u = f2u(y);
  const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
  const uint32_t ua = u & 0x7fffffffu;
  const float a = u2f(ua);
  if (a >= 448.0f) return sign | 0x7E;
  if (a < 0.015625f) return sign | (uint8_t)rne(mul(a, 512.0f)); // 0..8; 8 is 2^-6 (0x08)
  const uint32_t e = (ua >> 23) - 127u + 7u; // biased E4M3 exponent, 1..15
  const uint32_t keep = (ua >> 20) & 7u, rem = ua & 0xfffffu;
  const uint32_t up = rem > 0x80000u || (rem == 0x80000u && (keep & 1u));
  return sign | (uint8_t)((e << 3) + keep + up); // a carry moves into the exponent
}

// E4M3 to float, exact (0x7F and 0xFF, E4M3's NaNs, are never decoded this way).
LP_HD float e4m3_decode(uint8_t c) {
  const uint32_t e = (c >> 3) & 15u, m = c & 7u;
  float v = e ? u2f(((e + 120u) << 23) | (m << 20)) : mul((float)m, 0.001953125f);
  return (c & 0x80) ? -v : v;
}

// ---------------------------------------------------------------- scale words and codes

// Largest code magnitude of a finite element.
template <int FMT> LP_HD float qmax(bool flagged) {
  if (FMT == FMT_FP8) return 448.0f;
  if (FMT == FMT_INT8) return flagged ? 126.0f : 127.0f;
  return flagged ? 6.0f : 7.0f;
}

// absmax: the largest |x| over the group's finite elements (0 if none).
template <int FMT> LP_HD uint32_t scale_word(float absmax, bool flagged) {
  return f2u(div(absmax, qmax<FMT>(flagged))) | (flagged ? FLAG : 0u);
}
LP_HD float word_scale(uint32_t w) { return u2f(w & ~FLAG); }
LP_HD bool word_flagged(uint32_t w) { return (w & FLAG) != 0; }

// What encode multiplies by: 1 / s, or 0 where that is not finite (a denormal scale;
// encode then divides). One division per group instead of one per element.
LP_HD float word_inverse(uint32_t w) {
  const float s = u2f(w & ~FLAG);
  if (s == 0.0f) return 0.0f;
  const float inv = div(1.0f, s);
  return finite(inv) ? inv : 0.0f;
}

// E4M3 of a finite y: the hardware conversion on the GPU (cvt.rn.satfinite.e4m3x2.f32),
// the bit-exact software one above on the CPU (the unit tests check it against
// NVIDIA's own CPU emulation of that instruction). SNAPCCL_LP_SOFT_FP8 makes the GPU
// use the software one too.
LP_HD uint8_t e4m3_rn(float y) {
#if defined(__CUDA_ARCH__) && !defined(SNAPCCL_LP_SOFT_FP8)
  return (uint8_t)__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
#else
  return e4m3_encode(y);
#endif
}

// One element's code (int4: in the low nibble). inv = word_inverse(w).
template <int FMT> LP_HD uint8_t encode(float x, uint32_t w, float inv) {
  const uint32_t ux = f2u(x);
  if ((ux & 0x7f800000u) == 0x7f800000u) { // only in flagged groups
    const bool nan = (ux & 0x7fffffu) != 0, neg = (ux >> 31) != 0;
    if (FMT == FMT_FP8) return nan ? 0x80 : neg ? 0xFF : 0x7F;
    if (FMT == FMT_INT8) return nan ? 0x80 : neg ? 0x81 : 0x7F;
    return nan ? 0x8 : neg ? 0x9 : 0x7;
  }
  const bool flagged = word_flagged(w);
  const float s = word_scale(w);
  if (s == 0.0f) return 0;
  const float y = inv != 0.0f ? mul(x, inv) : div(x, s);
  if (FMT == FMT_FP8) {
    const uint8_t c = e4m3_rn(y);
    return flagged && c == 0x80 ? 0 : c;
  }
  const float lim = qmax<FMT>(flagged);
  float q = rne(y);
  q = q > lim ? lim : q < -lim ? -lim : q;
  const int qi = (int)q;
  return FMT == FMT_INT8 ? (uint8_t)(int8_t)qi : (uint8_t)(qi & 0xF);
}

template <int FMT> LP_HD float decode(uint8_t c, uint32_t w) {
  if (word_flagged(w)) {
    const float inf = u2f(0x7f800000u);
    if (FMT == FMT_FP8) {
      if (c == 0x7F) return inf;
      if (c == 0xFF) return -inf;
      if (c == 0x80) return u2f(0x7fffffffu);
    } else if (FMT == FMT_INT8) {
      if (c == 0x7F) return inf;
      if (c == 0x81) return -inf;
      if (c == 0x80) return u2f(0x7fffffffu);
    } else {
      if (c == 0x7) return inf;
      if (c == 0x9) return -inf;
      if (c == 0x8) return u2f(0x7fffffffu);
    }
  }
  const float s = word_scale(w);
  if (FMT == FMT_FP8) return mul(e4m3_decode(c), s);
  const int q = FMT == FMT_INT8 ? (int)(int8_t)c : ((c & 0x8) ? (int)(c & 0xF) - 16 : (int)(c & 0xF));
  return mul((float)q, s);
}

// Bytes of a group's codes on the wire: one per element, or one per two (int4).
LP_HD int payload_bytes(int fmt, int group) { return fmt == FMT_INT4 ? group / 2 : group; }

// ---------------------------------------------------------------- the data types

// The three dtypes low precision takes, as raw bits in memory. Loads are exact; stores
// round to nearest even and write one fixed NaN pattern for any NaN (all mantissa bits
// set), so NaN outputs are bitwise reproducible too.
template <int DT> struct Elem;
template <> struct Elem<ncclFloat32> {
  using S = uint32_t;
  LP_HD static float load(S b) { return u2f(b); }
  LP_HD static S store(float v) { return finite(v) || !(f2u(v) & 0x7fffffu) ? f2u(v) : 0x7fffffffu; }
};
template <> struct Elem<ncclFloat16> {
  using S = uint16_t;
  LP_HD static float load(S b) { return __half2float(__ushort_as_half(b)); }
  LP_HD static S store(float v) {
    if (!finite(v) && (f2u(v) & 0x7fffffu)) return 0x7fff;
    return __half_as_ushort(__float2half_rn(v));
  }
};
template <> struct Elem<ncclBfloat16> {
  using S = uint16_t;
  LP_HD static float load(S b) { return __bfloat162float(__ushort_as_bfloat16(b)); }
  LP_HD static S store(float v) {
    if (!finite(v) && (f2u(v) & 0x7fffffu)) return 0x7fff;
    return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
};

// ---------------------------------------------------------------- the CPU side

// Host functions (never compiled for the device).
// Quantises x[0..n) (n <= GROUP_MAX) as one group: one code per element into codes,
// returns the scale word. The kernels do the same per element, with the absmax reduced
// across a warp instead of in this loop (a maximum is exact in any order).
template <int FMT> inline uint32_t quant_group(const float* x, int n, uint8_t* codes) {
  float amax = 0.0f;
  bool flagged = false;
  for (int i = 0; i < n; i++) {
    if (!finite(x[i])) flagged = true;
    else if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
  }
  const uint32_t w = scale_word<FMT>(amax, flagged);
  const float inv = word_inverse(w);
  for (int i = 0; i < n; i++) codes[i] = encode<FMT>(x[i], w, inv);
  return w;
}

// The whole algorithm on the CPU: per group, the owner's input (the rank whose slice
// holds the group, snapccl_lp_slice_elems) as it is, then every other rank's input
// quantised and decoded, in rank order, summed in fp32; for avg the sum divided by
// nranks; the result quantised once; that decoded and rounded to the dtype. This is
// what every rank's output must equal, bit for bit. Groups are global (element k*G
// onwards): slices start at multiples of G, so the partition into slices, blocks and
// rounds never changes a group, only which rank owns it.
template <int DT, int FMT>
inline void simulate(int group, int nranks, bool avg, size_t count, const void* const* inputs,
                     void* output) {
  using S = typename Elem<DT>::S;
  float x[GROUP_MAX], acc[GROUP_MAX];
  uint8_t codes[GROUP_MAX];
  S* out = static_cast<S*>(output);
  const size_t slice = (size_t)snapccl_lp_slice_elems(count, nranks, group);
  for (size_t g0 = 0; g0 < count; g0 += (size_t)group) {
    const int n = count - g0 < (size_t)group ? (int)(count - g0) : group;
    const int owner = (int)(g0 / slice);
    const S* own = static_cast<const S*>(inputs[owner]) + g0;
    for (int i = 0; i < n; i++) acc[i] = Elem<DT>::load(own[i]);
    for (int r = 0; r < nranks; r++) {
      if (r == owner) continue;
      const S* in = static_cast<const S*>(inputs[r]) + g0;
      for (int i = 0; i < n; i++) x[i] = Elem<DT>::load(in[i]);
      const uint32_t w = quant_group<FMT>(x, n, codes);
      for (int i = 0; i < n; i++) acc[i] = add(acc[i], decode<FMT>(codes[i], w));
    }
    if (avg)
      for (int i = 0; i < n; i++) acc[i] = div(acc[i], (float)nranks);
    const uint32_t w = quant_group<FMT>(acc, n, codes);
    for (int i = 0; i < n; i++) out[g0 + i] = Elem<DT>::store(decode<FMT>(codes[i], w));
  }
}

template <int DT>
inline bool simulate_dt(int fmt, int group, int nranks, bool avg, size_t count,
                        const void* const* inputs, void* output) {
  switch (fmt) {
    case FMT_FP8: simulate<DT, FMT_FP8>(group, nranks, avg, count, inputs, output); return true;
    case FMT_INT8: simulate<DT, FMT_INT8>(group, nranks, avg, count, inputs, output); return true;
    case FMT_INT4: simulate<DT, FMT_INT4>(group, nranks, avg, count, inputs, output); return true;
    default: return false;
  }
}

// Run-time dispatch; false for a format, group size, dtype or rank count the algorithm
// does not take.
inline bool simulate_any(int fmt, int group, int dtype, int nranks, bool avg, size_t count,
                         const void* const* inputs, void* output) {
  if (group < GROUP_MIN || group > GROUP_MAX || group % 32 || nranks < 1) return false;
  switch (dtype) {
    case ncclFloat32: return simulate_dt<ncclFloat32>(fmt, group, nranks, avg, count, inputs, output);
    case ncclFloat16: return simulate_dt<ncclFloat16>(fmt, group, nranks, avg, count, inputs, output);
    case ncclBfloat16: return simulate_dt<ncclBfloat16>(fmt, group, nranks, avg, count, inputs, output);
    default: return false;
  }
}

} // namespace lp
} // namespace snap
