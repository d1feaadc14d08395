// Low-precision two-shot all-reduce (docs/LOWPREC.md): the pipeline of staged.cu's
// two-shot (per-block rounds, slots = round counter % 2, one RS and one AG flag per
// source and block, the epoch), with quantised groups in the staging chunks instead of
// elements:
//
//   1. reduce-scatter push: each rank quantises its piece of every other rank's slice,
//      group by group, into that rank's RS staging (scale words, then codes);
//   2. the owner decodes every rank's groups (its own quantised locally) and sums them in
//      fp32 in rank order 0..N-1 (avg: then divides by N), quantises the result ONCE,
//      pushes those groups into every peer's AG staging and decodes them into its own
//      output;
//   3. all-gather: every rank decodes the peers' groups into its output.
//
// So every rank's output is the decoding of the same codes: bitwise identical, and equal
// to the CPU reference (lp::simulate). Why the slots and counters are safe is argued in
// docs/ARCHITECTURE.md ("Staging slots"); this kernel shares the round counters, the
// flags and the staging regions with staged.cu, and so the argument.
//
// Work split: a warp handles one group at a time. Whole groups of 16-byte aligned user
// buffers move by packs (lane l: 16-byte packs l, l+32, ... of the group); a partial last
// group or an unaligned buffer element by element (lane l: elements l, l+32, ...). The
// codes are built in shared memory and move to and from staging 16 bytes per lane.
#include "coll.h"
#include "kernels/device_common.cuh"
#include "kernels/lowprec.h"
#include "kernels/lowprec_math.cuh"

namespace snap {
namespace {

constexpr int WARPS = SNAPCCL_THREADS / 32;
constexpr unsigned FULL = 0xffffffffu;
using ull = unsigned long long;

__device__ __forceinline__ ull ceil_div(ull x, ull y) { return (x + y - 1) / y; }
__device__ __forceinline__ ull clamp_len(ull total, ull off, ull cap) {
  return off >= total ? 0 : (total - off < cap ? total - off : cap);
}

// Chunk (slot, src, block) of the RS or AG staging region of workspace ws (as staged.cu).
__device__ __forceinline__ char* chunk(char* ws, const snapccl_ws_layout& lay, ull region_off,
                                       int slot, int src, int b) {
  return ws + region_off + (((ull)slot * lay.nranks + src) * lay.max_blocks + b) * lay.chunk_bytes;
}

__device__ __forceinline__ ull load_round(const snapccl_kargs& a, ull* sh) {
  if (threadIdx.x == 0) *sh = header(a.ws[a.rank])->block_round[blockIdx.x];
  __syncthreads();
  return *sh;
}
__device__ __forceinline__ void store_round(const snapccl_kargs& a, ull v) {
  if (threadIdx.x == 0) header(a.ws[a.rank])->block_round[blockIdx.x] = v;
}

// Elements of the user buffers, which may sit at any byte address.
template <int DT> struct Io {
  using S = typename lp::Elem<DT>::S;
  static constexpr int ES = sizeof(S);
  __device__ static float load(const char* base, ull i, bool aligned) {
    const char* p = base + i * ES;
    S b;
    if (aligned) {
      b = *reinterpret_cast<const S*>(p);
    } else {
      unsigned char t[ES];
#pragma unroll
      for (int k = 0; k < ES; k++) t[k] = p[k];
      memcpy(&b, t, ES);
    }
    return lp::Elem<DT>::load(b);
  }
  __device__ static void store(char* base, ull i, float v, bool aligned) {
    char* p = base + i * ES;
    const S b = lp::Elem<DT>::store(v);
    if (aligned) {
      *reinterpret_cast<S*>(p) = b;
    } else {
      unsigned char t[ES];
      memcpy(t, &b, ES);
#pragma unroll
      for (int k = 0; k < ES; k++) p[k] = t[k];
    }
  }
};

// Codes in shared memory: a byte per element, or a nibble (int4: element 2t in the low
// nibble of byte t, 2t+1 in the high one). Every lane of the warp calls put_code.
template <int FMT> __device__ __forceinline__ void put_code(unsigned char* cw, int e, unsigned c, int lane) {
  if (FMT == lp::FMT_INT4) {
    const unsigned o = __shfl_xor_sync(FULL, c, 1); // element e ^ 1 sits in lane ^ 1
    if (!(lane & 1)) cw[e >> 1] = (unsigned char)((c & 0xFu) | (o << 4));
  } else {
    cw[e] = (unsigned char)c;
  }
}
template <int FMT> __device__ __forceinline__ uint8_t get_code(const unsigned char* cw, int e) {
  if (FMT == lp::FMT_INT4) return (uint8_t)((cw[e >> 1] >> ((e & 1) * 4)) & 0xF);
  return cw[e];
}

// Quantises one group (elements value(0..v), zeros up to G) into cw; returns the scale
// word. Lane l only reads value(l + 32 i).
template <int FMT, typename F>
__device__ __forceinline__ uint32_t quantise(const F& value, int v, int G, unsigned char* cw, int lane) {
  float amax = 0.0f;
  int nonfinite = 0;
  for (int e = lane; e < v; e += 32) {
    const float x = value(e);
    if (lp::finite(x)) amax = fmaxf(amax, fabsf(x));
    else nonfinite = 1;
  }
  amax = __uint_as_float(__reduce_max_sync(FULL, __float_as_uint(amax))); // amax >= 0
  const uint32_t w = lp::scale_word<FMT>(amax, __any_sync(FULL, nonfinite) != 0);
  const float inv = lp::word_inverse(w);
  for (int e = lane; e < G; e += 32)
    put_code<FMT>(cw, e, lp::encode<FMT>(e < v ? value(e) : 0.0f, w, inv), lane);
  __syncwarp();
  return w;
}

// Whole groups at 16-byte aligned addresses take a faster path: a group starts at a
// multiple of G elements and G * sizeof(S) is a multiple of 64 bytes, so only the
// buffer's base decides. Lane l moves the group's 16-byte packs l, l+32, ... in one
// access each, eight (fp32: four) elements per load instead of one: the element path
// above keeps too few bytes in flight per warp to approach the memory's bandwidth. The
// codes and the scale are the same bits: the absmax is order-free and every element is
// encoded on its own.
template <int DT> struct Vec {
  using S = typename lp::Elem<DT>::S;
  static constexpr int EPP = 16 / (int)sizeof(S);       // elements per pack
  static constexpr int MAXP = lp::GROUP_MAX / EPP / 32; // packs per lane, at most
  __device__ static uint32_t word(const uint4& v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
  }
  __device__ static void load(const char* p, float (&x)[EPP]) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int k = 0; k < EPP; k++) {
      const uint32_t bits = sizeof(S) == 4 ? word(v, k) : (word(v, k >> 1) >> ((k & 1) * 16)) & 0xffffu;
      x[k] = lp::Elem<DT>::load((S)bits);
    }
  }
  __device__ static void store(char* p, const float (&x)[EPP]) {
    uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int k = 0; k < EPP; k++) {
      const uint32_t bits = (uint32_t)lp::Elem<DT>::store(x[k]);
      if (sizeof(S) == 4) w[k] = bits;
      else w[k >> 1] |= bits << ((k & 1) * 16);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  }
};

// The codes of one pack (EPP elements) into cw at the pack's place: a byte per element,
// or for int4 element 2t in the low nibble of byte t and 2t+1 in the high one, as put_code.
template <int DT, int FMT>
__device__ __forceinline__ void put_pack_codes(unsigned char* cw, int p, const uint8_t (&c)[Vec<DT>::EPP]) {
  constexpr int EPP = Vec<DT>::EPP;
  if (FMT == lp::FMT_INT4) {
    uint32_t b = 0;
#pragma unroll
    for (int k = 0; k < EPP; k++) b |= (uint32_t)(c[k] & 0xFu) << (4 * k);
    if (EPP == 8) reinterpret_cast<uint32_t*>(cw)[p] = b;
    else reinterpret_cast<uint16_t*>(cw)[p] = (uint16_t)b;
  } else {
    uint32_t lo = 0, hi = 0;
#pragma unroll
    for (int k = 0; k < EPP; k++) {
      if (k < 4) lo |= (uint32_t)c[k] << (8 * k);
      else hi |= (uint32_t)c[k] << (8 * (k - 4));
    }
    if (EPP == 8) reinterpret_cast<uint2*>(cw)[p] = make_uint2(lo, hi);
    else reinterpret_cast<uint32_t*>(cw)[p] = lo;
  }
}

// quantise() for a whole group of the user buffer at g0 (16-byte aligned).
template <int DT, int FMT>
__device__ __forceinline__ uint32_t quantise_vec(const char* g0, int G, unsigned char* cw, int lane) {
  using V = Vec<DT>;
  constexpr int EPP = V::EPP;
  const int np = G / EPP;
  float x[V::MAXP][EPP];
  float amax = 0.0f;
  int nonfinite = 0;
#pragma unroll
  for (int i = 0; i < V::MAXP; i++) {
    const int p = lane + 32 * i;
    if (p < np) {
      V::load(g0 + (size_t)p * 16, x[i]);
#pragma unroll
      for (int k = 0; k < EPP; k++) {
        if (lp::finite(x[i][k])) amax = fmaxf(amax, fabsf(x[i][k]));
        else nonfinite = 1;
      }
    }
  }
  amax = __uint_as_float(__reduce_max_sync(FULL, __float_as_uint(amax))); // amax >= 0
  const uint32_t w = lp::scale_word<FMT>(amax, __any_sync(FULL, nonfinite) != 0);
  const float inv = lp::word_inverse(w);
#pragma unroll
  for (int i = 0; i < V::MAXP; i++) {
    const int p = lane + 32 * i;
    if (p < np) {
      uint8_t c[EPP];
#pragma unroll
      for (int k = 0; k < EPP; k++) c[k] = lp::encode<FMT>(x[i][k], w, inv);
      put_pack_codes<DT, FMT>(cw, p, c);
    }
  }
  __syncwarp();
  return w;
}

// Decodes a whole group's codes from cw into the user buffer at g0 (16-byte aligned).
template <int DT, int FMT>
__device__ __forceinline__ void store_vec(char* g0, int G, const unsigned char* cw, uint32_t w, int lane) {
  using V = Vec<DT>;
  constexpr int EPP = V::EPP;
  for (int p = lane; p < G / EPP; p += 32) {
    float x[EPP];
#pragma unroll
    for (int k = 0; k < EPP; k++) x[k] = lp::decode<FMT>(get_code<FMT>(cw, p * EPP + k), w);
    V::store(g0 + (size_t)p * 16, x);
  }
}

// Group g of a chunk holding m groups: scale word g, then the codes.
__device__ __forceinline__ void put_group(char* ck, ull m, ull g, int P, const unsigned char* cw,
                                          uint32_t w, int lane) {
  char* pay = ck + snapccl_lp_scales_bytes(m) + g * (ull)P;
  for (int o = lane * SNAPCCL_PACK; o < P; o += 32 * SNAPCCL_PACK)
    st_staging(pay + o, *reinterpret_cast<const Pack*>(cw + o));
  if (lane == 0) __stcg(reinterpret_cast<unsigned*>(ck) + g, w);
}
__device__ __forceinline__ uint32_t get_group(const char* ck, ull m, ull g, int P, unsigned char* cw,
                                              int lane) {
  const char* pay = ck + snapccl_lp_scales_bytes(m) + g * (ull)P;
  for (int o = lane * SNAPCCL_PACK; o < P; o += 32 * SNAPCCL_PACK)
    *reinterpret_cast<Pack*>(cw + o) = ld_staging(pay + o);
  const uint32_t w = __ldcg(reinterpret_cast<const unsigned*>(ck) + g);
  __syncwarp();
  return w;
}

template <int DT, int FMT>
__device__ void lowprec_rounds(const Ctx& c, unsigned char* cw, float* acc, ull* sh) {
  using S = typename lp::Elem<DT>::S;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int G = SNAPCCL_LP_MODE_GROUP(a.mode);
  const int P = (int)snapccl_lp_payload_bytes(FMT, G);
  const ull count = a.count;
  const ull sl = ceil_div(ceil_div(count, N), G) * G; // slices start on group boundaries
  const ull m = a.chunk_elems / G;                   // groups per (block, round)
  const ull R = ceil_div(sl / G, (ull)B * m);
  const bool avg = a.devop == DEVOP_PREMULSUM;       // by 1/nranks: the host takes no other
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  const bool al_s = reinterpret_cast<uintptr_t>(send) % sizeof(S) == 0;
  const bool al_r = reinterpret_cast<uintptr_t>(recv) % sizeof(S) == 0;
  const bool vec_s = reinterpret_cast<uintptr_t>(send) % 16 == 0; // whole groups: Vec path
  const bool vec_r = reinterpret_cast<uintptr_t>(recv) % 16 == 0;
  constexpr ull ES = sizeof(S);
  // Quantises / stores group [e0, e0 + v) of the user buffers, by packs where it can.
  auto quantise_send = [&](ull e0, int v) -> uint32_t {
    if (vec_s && v == G) return quantise_vec<DT, FMT>(send + e0 * ES, G, cw, lane);
    return quantise<FMT>([&](int e) { return Io<DT>::load(send, e0 + e, al_s); }, v, G, cw, lane);
  };
  auto store_recv = [&](ull e0, int v, uint32_t w) {
    if (vec_r && v == G) {
      store_vec<DT, FMT>(recv + e0 * ES, G, cw, w, lane);
    } else {
      for (int e = lane; e < v; e += 32)
        Io<DT>::store(recv, e0 + e, lp::decode<FMT>(get_code<FMT>(cw, e), w), al_r);
    }
  };
  auto slice_len = [&](int j) -> ull { return clamp_len(count, (ull)j * sl, sl); };
  // Groups of slice j among the m starting at group og, and the elements of group gi.
  auto groups_in = [&](int j, ull og) -> ull {
    return ceil_div(clamp_len(slice_len(j), og * G, m * G), G);
  };
  auto valid = [&](int j, ull gi) -> int { return (int)clamp_len(slice_len(j), gi * G, G); };
  const ull c0 = load_round(a, sh);

  for (ull k = 0; k < R; k++) {
    const ull round = c0 + k + 1;
    const int slot = (int)(round & 1);
    const ull og = (k * B + b) * m;

    // 1. Reduce-scatter push: my groups of every other rank's slice into its staging.
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N; // staggered so ranks do not all hit one peer at once
      const ull ng = groups_in(j, og);
      char* ck = chunk(a.ws[j], a.lay, a.lay.rs_off, slot, me, b);
      for (ull g = warp; g < ng; g += WARPS) {
        const ull e0 = (ull)j * sl + (og + g) * G;
        const uint32_t w = quantise_send(e0, valid(j, og + g));
        put_group(ck, m, g, P, cw, w, lane);
        __syncwarp();
      }
    }
    signal_flags(c, FLAG_RS, round);
    if (!wait_flags(c, FLAG_RS, round)) return;

    // 2. My slice: decode and sum in rank order, quantise once, push, decode my output.
    {
      const ull ng = groups_in(me, og);
      for (ull g = warp; g < ng; g += WARPS) {
        const ull e0 = (ull)me * sl + (og + g) * G;
        const int v = valid(me, og + g);
        for (int r = 0; r < N; r++) {
          const uint32_t w = r == me ? quantise_send(e0, v)
                                     : get_group(chunk(a.ws[me], a.lay, a.lay.rs_off, slot, r, b), m, g, P, cw, lane);
          for (int e = lane; e < G; e += 32) {
            const float x = lp::decode<FMT>(get_code<FMT>(cw, e), w);
            acc[e] = r == 0 ? x : lp::add(acc[e], x);
          }
          __syncwarp();
        }
        if (avg)
          for (int e = lane; e < G; e += 32) acc[e] = lp::div(acc[e], (float)N);
        const uint32_t w = quantise<FMT>([&](int e) { return acc[e]; }, v, G, cw, lane);
        for (int d = 1; d < N; d++) {
          const int j = (me + d) % N;
          put_group(chunk(a.ws[j], a.lay, a.lay.ag_off, slot, me, b), m, g, P, cw, w, lane);
        }
        store_recv(e0, v, w);
        __syncwarp();
      }
    }

    // 3. All-gather: decode every peer's reduced groups.
    signal_flags(c, FLAG_AG, round);
    if (!wait_flags(c, FLAG_AG, round)) return;
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      const ull ng = groups_in(j, og);
      const char* ck = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
      for (ull g = warp; g < ng; g += WARPS) {
        const ull e0 = (ull)j * sl + (og + g) * G;
        const int v = valid(j, og + g);
        const uint32_t w = get_group(ck, m, g, P, cw, lane);
        store_recv(e0, v, w);
        __syncwarp();
      }
    }
  }
  __syncthreads(); // every thread is done with this call's slots before the counter moves
  store_round(a, c0 + R);
}

template <int DT, int FMT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    lowprec_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ ull sh_epoch, sh_round;
  __shared__ __align__(16) unsigned char codes[WARPS][lp::GROUP_MAX];
  __shared__ float accs[WARPS][lp::GROUP_MAX];
  Ctx c;
  const int warp = threadIdx.x >> 5;
  if (begin(c, a, &bail, &sh_epoch)) lowprec_rounds<DT, FMT>(c, codes[warp], accs[warp], &sh_round);
  end(c);
}

template <int DT> cudaError_t launch_dt(const snapccl_kargs* a, int blocks, cudaStream_t s) {
  switch (SNAPCCL_LP_MODE_FORMAT(a->mode)) {
    case lp::FMT_FP8: lowprec_kernel<DT, lp::FMT_FP8><<<blocks, SNAPCCL_THREADS, 0, s>>>(*a); break;
    case lp::FMT_INT8: lowprec_kernel<DT, lp::FMT_INT8><<<blocks, SNAPCCL_THREADS, 0, s>>>(*a); break;
    case lp::FMT_INT4: lowprec_kernel<DT, lp::FMT_INT4><<<blocks, SNAPCCL_THREADS, 0, s>>>(*a); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <int DT> bool load_dt() {
  cudaFuncAttributes attr;
  return cudaFuncGetAttributes(&attr, lowprec_kernel<DT, lp::FMT_FP8>) == cudaSuccess &&
         cudaFuncGetAttributes(&attr, lowprec_kernel<DT, lp::FMT_INT8>) == cudaSuccess &&
         cudaFuncGetAttributes(&attr, lowprec_kernel<DT, lp::FMT_INT4>) == cudaSuccess;
}

} // namespace
} // namespace snap

extern "C" int snapccl_load_lowprec_kernels(void) {
  return snap::load_dt<ncclFloat16>() && snap::load_dt<ncclBfloat16>() && snap::load_dt<ncclFloat32>();
}

extern "C" cudaError_t snapccl_launch_lowprec(const struct snapccl_kargs* a, int blocks,
                                              cudaStream_t stream) {
  const int group = SNAPCCL_LP_MODE_GROUP(a->mode);
  if (group < SNAPCCL_LP_GROUP_MIN || group > SNAPCCL_LP_GROUP_MAX || group % 32 ||
      a->chunk_elems < (unsigned long long)group || a->chunk_elems % group)
    return cudaErrorInvalidValue;
  switch (a->dtype) {
    case ncclFloat16: return snap::launch_dt<ncclFloat16>(a, blocks, stream);
    case ncclBfloat16: return snap::launch_dt<ncclBfloat16>(a, blocks, stream);
    case ncclFloat32: return snap::launch_dt<ncclFloat32>(a, blocks, stream);
    default: return cudaErrorInvalidValue;
  }
}
