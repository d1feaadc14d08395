// The low-precision all-reduce's data path in registers (docs/LOWPREC.md, "The kernel's
// data path"):
// how a warp splits groups among its lanes, loads them, finds each group's scale,
// encodes, moves the codes and decodes. Shared by the all-reduce kernel
// (kernels/lowprec.cu) and the isolated quantise / dequantise benchmark
// (perf/lowprec_kernels.cu), so the benchmark times the very code the
// collective runs. The arithmetic itself (scale words, codes) is lowprec_math.cuh's.
//
// Layout. A group of G = 32 T elements (G a multiple of 32 up to 1024) belongs to a
// team of T consecutive lanes; a warp holds 32 / T teams, so it works on that many
// groups at once (the lanes past the last whole team idle when T does not divide 32).
// Lane t of a team holds the group's 16-byte packs t, t + T, t + 2T, ...: NP packs,
// 32 elements, whatever the dtype (NP = 4 packs of 8 for 16-bit types, 8 of 4 for
// float32). So every load and store instruction of a team touches T consecutive packs,
// every value lives in a register, and the only cross-lane step is the group's absmax
// (a segmented shuffle reduction, one instruction when T = 32).
//
// The codes are the wire format of lowprec_math.cuh (a byte per element, or a nibble:
// element 2i low, 2i + 1 high), so a pack's codes are EPP bytes or nibbles in element
// order, at the pack's place in the group's payload.
#pragma once

#include <type_traits>

#include "kernels/lowprec_math.cuh"

namespace snap {
namespace lp {

using ull = unsigned long long;
constexpr unsigned FULL_MASK = 0xffffffffu;

template <int DT> struct Shape {
  using S = typename Elem<DT>::S;
  static constexpr int ES = (int)sizeof(S); // bytes per element
  static constexpr int EPP = 16 / ES;       // elements per 16-byte pack
  static constexpr int NP = 32 / EPP;       // packs a lane holds of one group
  static constexpr int U = 8 / NP;          // groups a lane moves at once: 8 packs, 128 bytes
                                            // (16 packs spilled at 128 registers)
};

// Bytes of codes per pack: EPP codes of 8 or 4 bits.
template <int DT, int FMT> struct CodeBytes {
  static constexpr int value = FMT == FMT_INT4 ? Shape<DT>::EPP / 2 : Shape<DT>::EPP;
};

// Where one lane works.
struct Team {
  int T;         // lanes per group (G / 32)
  int per_warp;  // groups a warp holds at once
  int idx;       // this lane's group among them (>= per_warp: an idle lane)
  int t;         // this lane within its team
  unsigned mask; // the team's lanes
  __device__ __forceinline__ Team(int G, int lane) {
    T = G / 32;
    per_warp = 32 / T;
    idx = lane / T;
    t = lane - idx * T;
    mask = T == 32 ? FULL_MASK : ((1u << T) - 1u) << ((idx * T) & 31);
  }
  __device__ __forceinline__ bool active() const { return idx < per_warp; }
};

// How the user buffer may be accessed: whole packs (16-byte aligned base), elements
// (element-aligned base), or bytes.
struct Access {
  bool vec, aligned;
};
__device__ __forceinline__ Access access_of(const void* base, int es) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(base);
  return Access{a % 16 == 0, a % (uintptr_t)es == 0};
}

// A lane's share of one group, as the dtype's bits: pack k holds elements
// (k T + t) EPP + i. Kept as bits, not floats, so that a lane can hold several groups
// in flight (16 registers per group for 16-bit types) without spilling.
template <int DT> struct Part {
  uint4 raw[Shape<DT>::NP];
  __device__ __forceinline__ float x(int k, int i) const;
};
// fp32 sums of a lane's share of one group (step 2's accumulator).
template <int DT> struct Acc {
  float x[Shape<DT>::NP][Shape<DT>::EPP];
};
// A lane's codes of one group: pack k's in c[k] (8 bytes only for 16-bit types in
// 8-bit formats; 4 or 2 otherwise, in a 32-bit word).
template <int DT, int FMT> struct Codes {
  using W = typename std::conditional<CodeBytes<DT, FMT>::value == 8, ull, unsigned>::type;
  W c[Shape<DT>::NP];
};

// Element i of a pack, and element bits into a pack (whose words start at 0).
template <int DT> __device__ __forceinline__ uint32_t& word_of(uint4& v, int i) {
  const int wi = i * Shape<DT>::ES / 4;
  return wi == 0 ? v.x : wi == 1 ? v.y : wi == 2 ? v.z : v.w;
}
template <int DT> __device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  const int wi = i * Shape<DT>::ES / 4;
  return wi == 0 ? v.x : wi == 1 ? v.y : wi == 2 ? v.z : v.w;
}
template <int DT> __device__ __forceinline__ float elem_of(const uint4& v, int i) {
  using S = typename Shape<DT>::S;
  const uint32_t w = word_of<DT>(v, i);
  return Elem<DT>::load((S)(sizeof(S) == 4 ? w : (w >> ((i & 1) * 16)) & 0xffffu));
}
template <int DT> __device__ __forceinline__ void put_elem(uint4& v, int i, float x) {
  using S = typename Shape<DT>::S;
  const uint32_t bits = (uint32_t)Elem<DT>::store(x);
  word_of<DT>(v, i) |= sizeof(S) == 4 ? bits : bits << ((i & 1) * 16);
}
template <int DT> __device__ __forceinline__ float Part<DT>::x(int k, int i) const { return elem_of<DT>(raw[k], i); }

// Element bits at any byte address (aligned: at a multiple of the element size).
template <int DT> __device__ __forceinline__ uint32_t load_bits(const char* p, bool aligned) {
  using S = typename Shape<DT>::S;
  if (aligned) return *reinterpret_cast<const S*>(p);
  uint32_t b = 0;
#pragma unroll
  for (int k = 0; k < Shape<DT>::ES; k++) b |= (uint32_t)(unsigned char)p[k] << (8 * k);
  return b;
}
template <int DT> __device__ __forceinline__ void store_bits(char* p, uint32_t b, bool aligned) {
  using S = typename Shape<DT>::S;
  if (aligned) {
    *reinterpret_cast<S*>(p) = (S)b;
    return;
  }
#pragma unroll
  for (int k = 0; k < Shape<DT>::ES; k++) p[k] = (char)(b >> (8 * k));
}

// Loads the lane's share of the group of v valid elements starting at element e0 of
// buf; elements from v on read as 0 (the bits of +0 in every dtype). v = 0 loads
// nothing (idle lanes, absent groups).
template <int DT>
__device__ __forceinline__ void load_part(Part<DT>& p, const char* buf, ull e0, int v, int G, Access acc,
                                          const Team& tm) {
  constexpr int EPP = Shape<DT>::EPP, NP = Shape<DT>::NP, ES = Shape<DT>::ES;
  const char* g0 = buf + e0 * ES;
  if (acc.vec && v == G) { // the common case: every pack whole, one access each
#pragma unroll
    for (int k = 0; k < NP; k++) p.raw[k] = *reinterpret_cast<const uint4*>(g0 + (k * tm.T + tm.t) * 16);
    return;
  }
#pragma unroll
  for (int k = 0; k < NP; k++) {
    p.raw[k] = make_uint4(0, 0, 0, 0);
    const int e = (k * tm.T + tm.t) * EPP;
#pragma unroll
    for (int i = 0; i < EPP; i++) {
      const uint32_t bits = e + i < v ? load_bits<DT>(g0 + (e + i) * ES, acc.aligned) : 0u;
      word_of<DT>(p.raw[k], i) |= ES == 4 ? bits : bits << ((i & 1) * 16);
    }
  }
}

template <int DT>
__device__ __forceinline__ void store_part(const Part<DT>& p, char* buf, ull e0, int v, int G, Access acc,
                                           const Team& tm) {
  constexpr int EPP = Shape<DT>::EPP, NP = Shape<DT>::NP, ES = Shape<DT>::ES;
  char* g0 = buf + e0 * ES;
  if (acc.vec && v == G) {
#pragma unroll
    for (int k = 0; k < NP; k++) *reinterpret_cast<uint4*>(g0 + (k * tm.T + tm.t) * 16) = p.raw[k];
    return;
  }
#pragma unroll
  for (int k = 0; k < NP; k++) {
    const int e = (k * tm.T + tm.t) * EPP;
#pragma unroll
    for (int i = 0; i < EPP; i++) {
      const uint32_t w = word_of<DT>(p.raw[k], i);
      if (e + i < v) store_bits<DT>(g0 + (e + i) * ES, ES == 4 ? w : (w >> ((i & 1) * 16)) & 0xffffu, acc.aligned);
    }
  }
}

// The largest of v over the team, on every lane of it (v >= 0, so the bits order as
// the floats).
__device__ __forceinline__ float team_max(float v, const Team& tm) {
  unsigned u = __float_as_uint(v);
  if (tm.T == 32) return __uint_as_float(__reduce_max_sync(FULL_MASK, u));
  for (int off = 1; off < tm.T; off <<= 1) { // lane t ends with the max of t .. T-1
    const unsigned o = __shfl_down_sync(FULL_MASK, u, off);
    if (tm.t + off < tm.T) u = max(u, o);
  }
  return __uint_as_float(__shfl_sync(FULL_MASK, u, (tm.idx * tm.T) & 31));
}

// One float32's bits into a running maximum of finite |x| bits and a non-finite mark.
__device__ __forceinline__ void absmax_f32(uint32_t bits, uint32_t& mx, uint32_t& bad) {
  const uint32_t a = bits & 0x7fffffffu;
  const bool b = a >= 0x7f800000u;
  bad |= b;
  mx = b ? mx : max(mx, a);
}

// The largest |x| over a lane's finite elements, and whether any is not finite, from
// the bits: integer operations (the bits of non-negative floats order as their values),
// two 16-bit elements per instruction. The same maximum as fmaxf over fabsf.
template <int DT> __device__ __forceinline__ float lane_absmax(const Part<DT>& p, bool& nonfinite) {
  using S = typename Shape<DT>::S;
  uint32_t mx = 0, bad = 0;
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    const uint32_t ws[4] = {p.raw[k].x, p.raw[k].y, p.raw[k].z, p.raw[k].w};
#pragma unroll
    for (int q = 0; q < 4; q++) {
      if (sizeof(S) == 2) {
        constexpr uint32_t INF2 = DT == ncclFloat16 ? 0x7c007c00u : 0x7f807f80u;
        const uint32_t a = ws[q] & 0x7fff7fffu, b = __vcmpgeu2(a, INF2); // 0xffff per non-finite half
        bad |= b;
        mx = __vmaxu2(mx, a & ~b);
      } else {
        absmax_f32(ws[q], mx, bad);
      }
    }
  }
  nonfinite = bad != 0;
  if (sizeof(S) == 2) return Elem<DT>::load((S)max(mx & 0xffffu, mx >> 16));
  return __uint_as_float(mx);
}
template <int DT> __device__ __forceinline__ float lane_absmax(const Acc<DT>& p, bool& nonfinite) {
  uint32_t mx = 0, bad = 0;
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++)
#pragma unroll
    for (int i = 0; i < Shape<DT>::EPP; i++) absmax_f32(__float_as_uint(p.x[k][i]), mx, bad);
  nonfinite = bad != 0;
  return __uint_as_float(mx);
}

// The group's scale word (lowprec_math.cuh): every lane of the warp calls it.
// P: a Part or an Acc.
template <int DT, int FMT, typename P> __device__ __forceinline__ uint32_t part_scale(const P& p, const Team& tm) {
  bool nonfinite;
  const float amax = team_max(lane_absmax<DT>(p, nonfinite), tm);
  const bool flagged = (__ballot_sync(FULL_MASK, nonfinite) & tm.mask) != 0;
  return scale_word<FMT>(amax, flagged);
}

template <int DT> __device__ __forceinline__ float at(const Part<DT>& p, int k, int i) { return p.x(k, i); }
template <int DT> __device__ __forceinline__ float at(const Acc<DT>& p, int k, int i) { return p.x[k][i]; }

// encode<FMT> for every element. Groups without non-finite values and with a normal
// scale (all but a few) take a shorter path with the same bits: no special codes to
// test, two fp8 conversions per instruction, integer rounding (cvt.rni equals rintf
// for these magnitudes) and an integer clamp.
template <int DT, int FMT, typename P>
__device__ __forceinline__ void encode_part(const P& p, uint32_t w, Codes<DT, FMT>& c) {
  using W = typename Codes<DT, FMT>::W;
  constexpr int BITS = FMT == FMT_INT4 ? 4 : 8, EPP = Shape<DT>::EPP;
  const float inv = word_inverse(w);
  if (!word_flagged(w) && inv != 0.0f) {
#pragma unroll
    for (int k = 0; k < Shape<DT>::NP; k++) {
      W v = 0;
      if (FMT == FMT_FP8) {
#pragma unroll
        for (int i = 0; i < EPP; i += 2) {
          const float2 y = make_float2(mul(at<DT>(p, k, i), inv), mul(at<DT>(p, k, i + 1), inv));
          v |= (W)__nv_cvt_float2_to_fp8x2(y, __NV_SATFINITE, __NV_E4M3) << (8 * i);
        }
      } else {
        const int lim = (int)qmax<FMT>(false);
#pragma unroll
        for (int i = 0; i < EPP; i++) {
          const int q = min(max(__float2int_rn(mul(at<DT>(p, k, i), inv)), -lim), lim);
          v |= (W)((unsigned)q & ((1u << BITS) - 1u)) << (BITS * i);
        }
      }
      c.c[k] = v;
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    W v = 0;
#pragma unroll
    for (int i = 0; i < EPP; i++) v |= (W)(encode<FMT>(at<DT>(p, k, i), w, inv) & ((1u << BITS) - 1u)) << (BITS * i);
    c.c[k] = v;
  }
}

// decode<FMT> of one pack's codes. Unflagged groups: no special codes, and fp8 through
// the hardware's exact E4M3 -> half conversion, two per instruction.
template <int DT, int FMT>
__device__ __forceinline__ void decode_pack(typename Codes<DT, FMT>::W v, uint32_t w, float (&x)[Shape<DT>::EPP]) {
  constexpr int BITS = FMT == FMT_INT4 ? 4 : 8, EPP = Shape<DT>::EPP;
  if (!word_flagged(w)) {
    const float s = word_scale(w);
#pragma unroll
    for (int i = 0; i < EPP; i += (FMT == FMT_FP8 ? 2 : 1)) {
      if (FMT == FMT_FP8) {
        const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)((v >> (8 * i)) & 0xffffu), __NV_E4M3);
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
        x[i] = mul(f.x, s);
        x[i + 1] = mul(f.y, s);
      } else {
        const unsigned b = (unsigned)(v >> (BITS * i)) & ((1u << BITS) - 1u);
        const int q = FMT == FMT_INT8 ? (int)(int8_t)b : (int)(b ^ 8u) - 8; // sign-extend
        x[i] = mul((float)q, s);
      }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < EPP; i++) x[i] = decode<FMT>((uint8_t)((v >> (BITS * i)) & ((1u << BITS) - 1u)), w);
}

// Decoded and rounded to the dtype.
template <int DT, int FMT> __device__ __forceinline__ void decode_part(const Codes<DT, FMT>& c, uint32_t w, Part<DT>& p) {
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    float x[Shape<DT>::EPP];
    decode_pack<DT, FMT>(c.c[k], w, x);
    p.raw[k] = make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int i = 0; i < Shape<DT>::EPP; i++) put_elem<DT>(p.raw[k], i, x[i]);
  }
}
// acc = a lane's share of a group as fp32 (exact: every dtype widens to fp32 exactly).
template <int DT> __device__ __forceinline__ void to_acc(const Part<DT>& p, Acc<DT>& acc) {
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++)
#pragma unroll
    for (int i = 0; i < Shape<DT>::EPP; i++) acc.x[k][i] = p.x(k, i);
}
// acc += decoded codes, one IEEE fp32 add per element.
template <int DT, int FMT>
__device__ __forceinline__ void decode_add(const Codes<DT, FMT>& c, uint32_t w, Acc<DT>& acc) {
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    float x[Shape<DT>::EPP];
    decode_pack<DT, FMT>(c.c[k], w, x);
#pragma unroll
    for (int i = 0; i < Shape<DT>::EPP; i++) acc.x[k][i] = add(acc.x[k][i], x[i]);
  }
}

// Codes to and from a group's payload (16-byte aligned), through L2 (.cg): payloads
// are staging other ranks write and read.
template <int DT, int FMT> __device__ __forceinline__ void put_codes(char* pay, const Codes<DT, FMT>& c, const Team& tm) {
  constexpr int CB = CodeBytes<DT, FMT>::value;
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    char* q = pay + (k * tm.T + tm.t) * CB;
    if (CB == 8) __stcg(reinterpret_cast<ull*>(q), c.c[k]);
    else if (CB == 4) __stcg(reinterpret_cast<unsigned*>(q), (unsigned)c.c[k]);
    else __stcg(reinterpret_cast<unsigned short*>(q), (unsigned short)c.c[k]);
  }
}
template <int DT, int FMT> __device__ __forceinline__ void get_codes(const char* pay, Codes<DT, FMT>& c, const Team& tm) {
  constexpr int CB = CodeBytes<DT, FMT>::value;
#pragma unroll
  for (int k = 0; k < Shape<DT>::NP; k++) {
    const char* q = pay + (k * tm.T + tm.t) * CB;
    if (CB == 8) c.c[k] = __ldcg(reinterpret_cast<const ull*>(q));
    else if (CB == 4) c.c[k] = __ldcg(reinterpret_cast<const unsigned*>(q));
    else c.c[k] = __ldcg(reinterpret_cast<const unsigned short*>(q));
  }
}

// The two halves of the data path as the all-reduce's steps 1 and 3 run them, and the
// benchmark times them: a lane's U groups (gi[u], v[u] valid elements from element
// e0[u] of buf; v[u] = 0: none) between the user buffer and code storage (scale word
// of group g at scales[g], its codes at pay + g P). All loads are issued before the
// first group is encoded or stored: bytes in flight are what a memory-bound loop runs on.
template <int DT, int FMT>
__device__ __forceinline__ void quantise_put(const char* buf, Access acc, int G, const ull (&e0)[Shape<DT>::U],
                                             const int (&v)[Shape<DT>::U], const ull (&gi)[Shape<DT>::U],
                                             unsigned* scales, char* pay, int P, const Team& tm) {
  constexpr int U = Shape<DT>::U;
  Part<DT> x[U];
#pragma unroll
  for (int u = 0; u < U; u++) load_part<DT>(x[u], buf, e0[u], v[u], G, acc, tm);
#pragma unroll
  for (int u = 0; u < U; u++) {
    const uint32_t w = part_scale<DT, FMT>(x[u], tm);
    Codes<DT, FMT> cd;
    encode_part<DT, FMT>(x[u], w, cd);
    if (v[u]) {
      put_codes<DT, FMT>(pay + gi[u] * (ull)P, cd, tm);
      if (tm.t == 0) __stcg(scales + gi[u], w);
    }
  }
}

template <int DT, int FMT>
__device__ __forceinline__ void get_dequantise(const unsigned* scales, const char* pay, int P,
                                               const ull (&gi)[Shape<DT>::U], const int (&v)[Shape<DT>::U],
                                               char* buf, Access acc, int G, const ull (&e0)[Shape<DT>::U],
                                               const Team& tm) {
  constexpr int U = Shape<DT>::U;
  Codes<DT, FMT> cd[U];
  uint32_t w[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    w[u] = 0;
    if (v[u]) {
      get_codes<DT, FMT>(pay + gi[u] * (ull)P, cd[u], tm);
      w[u] = __ldcg(scales + gi[u]);
    }
  }
#pragma unroll
  for (int u = 0; u < U; u++) {
    if (!v[u]) continue;
    Part<DT> x;
    decode_part<DT, FMT>(cd[u], w[u], x);
    store_part<DT>(x, buf, e0[u], v[u], G, acc, tm);
  }
}

} // namespace lp
} // namespace snap
