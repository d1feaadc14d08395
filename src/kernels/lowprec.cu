// Low-precision two-shot all-reduce (docs/LOWPREC.md): the pipeline of staged.cu's
// two-shot (per-block rounds, slots = round counter % 2, one RS and one AG flag per
// source and block, the epoch), with quantised groups in the staging chunks instead of
// elements:
//
//   1. reduce-scatter push: each rank quantises its piece of every other rank's slice,
//      group by group, into that rank's RS staging (scale words, then codes);
//   2. the owner sums, in fp32, its own input as it is (never quantised: it does not
//      travel) and then every peer's decoded groups in rank order (avg: then divides by
//      N), quantises the result ONCE, pushes those groups into every peer's AG staging
//      and decodes them into its own output;
//   3. all-gather: every rank decodes the peers' groups into its output.
//
// So every rank's output is the decoding of the same codes: bitwise identical, and equal
// to the CPU reference (lp::simulate). Why the slots and counters are safe is argued in
// docs/ARCHITECTURE.md ("Staging slots"); this kernel shares the round counters, the
// flags and the staging regions with staged.cu, and so the argument.
//
// Work split (kernels/lowprec_tile.cuh): a group belongs to a team of G / 32 lanes, each
// lane holding 32 of its elements in registers; the warp works on 32 / (G / 32) groups
// at once, and in steps 1 and 3 on twice that for 16-bit types, so each lane has 128
// bytes of input or output in flight. No shared memory: the group's absmax is a
// shuffle reduction, codes go from registers straight to the peer's staging. A block has
// 8 warps (two blocks per SM), or 16 when the call may give every block an SM of its own
// (the "wide" mode bit, algos/allreduce_lowprec.c): the same work per warp, twice the
// bytes in flight per SM.
#include <cstring>

#include "coll.h"
#include "kernels/device_common.cuh"
#include "kernels/kernel_load.cuh"
#include "kernels/lowprec.h"
#include "kernels/lowprec_tile.cuh"
#include "kernels/staging.cuh"

namespace snap {
namespace {

// What every step of a call needs: the call's geometry and this lane's place. The steps
// are separate non-inlined functions taking it by reference, so that each one's
// registers go to its own loop (one function holding all three spilled).
template <int DT, int FMT> struct Call {
  static constexpr int U = lp::Shape<DT>::U; // groups per lane in flight in steps 1 and 3
  const snapccl_kargs* a;
  int me, N, G, P, warp, warps;
  lp::Team tm;
  ull count, sl, m, sb;
  const char* send;
  char* recv;
  lp::Access in_acc, out_acc;

  __device__ Call(const snapccl_kargs& k) : a(&k), tm(SNAPCCL_LP_MODE_GROUP(k.mode), threadIdx.x & 31) {
    me = k.rank;
    N = k.nranks;
    G = SNAPCCL_LP_MODE_GROUP(k.mode);
    P = (int)snapccl_lp_payload_bytes(FMT, G);
    warp = threadIdx.x >> 5;
    warps = blockDim.x >> 5;
    count = k.count;
    sl = snapccl_lp_slice_elems(count, N, G);
    m = k.chunk_elems / G;           // groups per (block, round)
    sb = snapccl_lp_scales_bytes(m); // a chunk: m scale words, then m payloads
    send = static_cast<const char*>(k.send);
    recv = static_cast<char*>(k.recv);
    in_acc = lp::access_of(send, lp::Shape<DT>::ES);
    out_acc = lp::access_of(recv, lp::Shape<DT>::ES);
  }
  __device__ ull slice_len(int j) const { return clamp_len(count, (ull)j * sl, sl); }
  // Groups of slice j among the m starting at group og.
  __device__ ull groups_in(int j, ull og) const { return ceil_div(clamp_len(slice_len(j), og * G, m * G), G); }
  // Elements of this lane's group g of slice j (0: an idle lane or no such group).
  __device__ int valid(int j, ull og, ull g, ull ng) const {
    return tm.active() && g < ng ? (int)clamp_len(slice_len(j), (og + g) * G, G) : 0;
  }
  // This lane's U groups of a warp step starting at group gs of slice j's ng.
  __device__ void place(int j, ull og, ull gs, ull ng, ull (&gi)[U], int (&v)[U], ull (&e0)[U]) const {
#pragma unroll
    for (int u = 0; u < U; u++) {
      gi[u] = gs + u * tm.per_warp + tm.idx;
      v[u] = valid(j, og, gi[u], ng);
      e0[u] = (ull)j * sl + (og + gi[u]) * G;
    }
  }
  __device__ char* rs_chunk(int owner, int slot, int src) const {
    return chunk(a->ws[owner], a->lay, a->lay.rs_off, slot, src, blockIdx.x);
  }
  __device__ char* ag_chunk(int owner, int slot, int src) const {
    return chunk(a->ws[owner], a->lay, a->lay.ag_off, slot, src, blockIdx.x);
  }
};

// 1. Reduce-scatter push: my groups of every other rank's slice into its staging.
template <int DT, int FMT> __device__ __noinline__ void push_slices(const Call<DT, FMT>& c, ull og, int slot) {
  constexpr int U = Call<DT, FMT>::U;
  const ull step = (ull)U * c.tm.per_warp;
  for (int d = 1; d < c.N; d++) {
    const int j = (c.me + d) % c.N; // staggered so ranks do not all hit one peer at once
    const ull ng = c.groups_in(j, og);
    char* ck = c.rs_chunk(j, slot, c.me);
    for (ull gs = (ull)c.warp * step; gs < ng; gs += (ull)c.warps * step) {
      ull gi[U], e0[U];
      int v[U];
      c.place(j, og, gs, ng, gi, v, e0);
      lp::quantise_put<DT, FMT>(c.send, c.in_acc, c.G, e0, v, gi, reinterpret_cast<unsigned*>(ck), ck + c.sb,
                                c.P, c.tm);
    }
  }
}

// 2. My slice: my own input as it is, plus every peer's decoded groups in rank order,
//    in fp32; quantise once, push the codes to every peer and decode my own output.
template <int DT, int FMT> __device__ __noinline__ void reduce_slice(const Call<DT, FMT>& c, ull og, int slot, bool avg) {
  using namespace lp;
  using Sh = Shape<DT>;
  const ull ng = c.groups_in(c.me, og);
  for (ull gs = (ull)c.warp * c.tm.per_warp; gs < ng; gs += (ull)c.warps * c.tm.per_warp) {
    const ull g = gs + c.tm.idx;
    const int v = c.valid(c.me, og, g, ng);
    const ull e0 = (ull)c.me * c.sl + (og + g) * c.G;
    // My input and the first peer's codes load together; each next peer's codes load
    // while the current peer's are decoded (the peers still sum in rank order).
    auto next_peer = [&](int r) { return r + 1 == c.me ? r + 2 : r + 1; };
    auto fetch = [&](int r, Codes<DT, FMT>& cd) -> uint32_t {
      if (!v || r >= c.N) return 0;
      const char* ck = c.rs_chunk(c.me, slot, r);
      get_codes<DT, FMT>(ck + c.sb + g * c.P, cd, c.tm);
      return __ldcg(reinterpret_cast<const unsigned*>(ck) + g);
    };
    Codes<DT, FMT> nxt = {};
    int rn = next_peer(-1);
    Acc<DT> acc;
    {
      Part<DT> x;
      load_part<DT>(x, c.send, e0, v, c.G, c.in_acc, c.tm);
      uint32_t wn = fetch(rn, nxt);
      to_acc<DT>(x, acc);
      for (int d = 1; d < c.N; d++) {
        const Codes<DT, FMT> cd = nxt;
        const uint32_t w = wn;
        rn = next_peer(rn);
        wn = fetch(rn, nxt);
        decode_add<DT, FMT>(cd, w, acc);
      }
    }
    if (avg)
#pragma unroll
      for (int p = 0; p < Sh::NP; p++)
#pragma unroll
        for (int i = 0; i < Sh::EPP; i++) acc.x[p][i] = div(acc.x[p][i], (float)c.N);
    const uint32_t w = part_scale<DT, FMT>(acc, c.tm);
    Codes<DT, FMT> cd;
    encode_part<DT, FMT>(acc, w, cd);
    if (v)
      for (int d = 1; d < c.N; d++) {
        char* ck = c.ag_chunk((c.me + d) % c.N, slot, c.me);
        put_codes<DT, FMT>(ck + c.sb + g * c.P, cd, c.tm);
        if (c.tm.t == 0) __stcg(reinterpret_cast<unsigned*>(ck) + g, w);
      }
    Part<DT> out;
    decode_part<DT, FMT>(cd, w, out);
    store_part<DT>(out, c.recv, e0, v, c.G, c.out_acc, c.tm);
  }
}

// 3. All-gather: decode every peer's reduced groups into my output.
template <int DT, int FMT> __device__ __noinline__ void gather_slices(const Call<DT, FMT>& c, ull og, int slot) {
  constexpr int U = Call<DT, FMT>::U;
  const ull step = (ull)U * c.tm.per_warp;
  for (int d = 1; d < c.N; d++) {
    const int j = (c.me + d) % c.N;
    const ull ng = c.groups_in(j, og);
    const char* ck = c.ag_chunk(c.me, slot, j);
    for (ull gs = (ull)c.warp * step; gs < ng; gs += (ull)c.warps * step) {
      ull gi[U], e0[U];
      int v[U];
      c.place(j, og, gs, ng, gi, v, e0);
      lp::get_dequantise<DT, FMT>(reinterpret_cast<const unsigned*>(ck), ck + c.sb, c.P, gi, v, c.recv, c.out_acc,
                                  c.G, e0, c.tm);
    }
  }
}

#ifdef SNAPCCL_LP_TRACE // diagnostics only (kernels/lowprec.h): the block's time after each step
__device__ snapccl_lp_trace_t lp_trace;
__device__ __forceinline__ void trace(int rank, ull k, int ev) {
  __syncthreads(); // the whole block's step, not thread 0's
  if (threadIdx.x == 0 && rank < SNAPCCL_LP_TR_RANKS && blockIdx.x < SNAPCCL_LP_TR_BLOCKS && k < SNAPCCL_LP_TR_ROUNDS)
    lp_trace[rank][blockIdx.x][k][ev] = globaltimer();
}
#else
__device__ __forceinline__ void trace(int, ull, int) {}
#endif

template <int DT, int FMT>
__device__ void lowprec_rounds(const Ctx& ctx, ull* sh) {
  const snapccl_kargs& a = *ctx.a;
  const Call<DT, FMT> c(a);
  const int b = blockIdx.x, B = gridDim.x;
  const ull R = ceil_div(c.sl / c.G, (ull)B * c.m);
  const bool avg = a.devop == DEVOP_PREMULSUM; // by 1/nranks: the host takes no other
  const ull c0 = load_round(a, sh);
  for (ull k = 0; k < R; k++) {
    const ull round = c0 + k + 1;
    const int slot = (int)(round & 1);
    const ull og = (k * B + b) * c.m;
    trace(c.me, k, SNAPCCL_LP_TR_ROUND);
    push_slices<DT, FMT>(c, og, slot);
    signal_flags(ctx, FLAG_RS, round);
    trace(c.me, k, SNAPCCL_LP_TR_PUSHED);
    if (!wait_flags(ctx, FLAG_RS, round)) return;
    trace(c.me, k, SNAPCCL_LP_TR_RS_MET);
    reduce_slice<DT, FMT>(c, og, slot, avg);
    signal_flags(ctx, FLAG_AG, round);
    trace(c.me, k, SNAPCCL_LP_TR_REDUCED);
    if (!wait_flags(ctx, FLAG_AG, round)) return;
    trace(c.me, k, SNAPCCL_LP_TR_AG_MET);
    gather_slices<DT, FMT>(c, og, slot);
    trace(c.me, k, SNAPCCL_LP_TR_GATHERED);
  }
  trace(c.me, 0, SNAPCCL_LP_TR_EXIT);
  __syncthreads(); // every thread is done with this call's slots before the counter moves
  store_round(a, c0 + R);
}

// THREADS: SNAPCCL_THREADS (two blocks per SM) or SNAPCCL_LP_WIDE_THREADS (one), the
// same 128 registers per thread; the steps are shared, sized by blockDim at run time.
template <int DT, int FMT, int THREADS>
__global__ void __launch_bounds__(THREADS, THREADS == SNAPCCL_THREADS ? SNAPCCL_MIN_BLOCKS_PER_SM : 1)
    lowprec_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ ull sh_epoch, sh_round;
  Ctx c;
  trace(a.rank, 0, SNAPCCL_LP_TR_ENTRY);
  if (begin(c, a, &bail, &sh_epoch)) lowprec_rounds<DT, FMT>(c, &sh_round);
  end(c);
}

template <int DT, int FMT> cudaError_t launch_fmt(const snapccl_kargs* a, int blocks, cudaStream_t s) {
  if (SNAPCCL_LP_MODE_WIDE(a->mode))
    lowprec_kernel<DT, FMT, SNAPCCL_LP_WIDE_THREADS><<<blocks, SNAPCCL_LP_WIDE_THREADS, 0, s>>>(*a);
  else
    lowprec_kernel<DT, FMT, SNAPCCL_THREADS><<<blocks, SNAPCCL_THREADS, 0, s>>>(*a);
  return cudaGetLastError();
}

template <int DT> cudaError_t launch_dt(const snapccl_kargs* a, int blocks, cudaStream_t s) {
  switch (SNAPCCL_LP_MODE_FORMAT(a->mode)) {
    case lp::FMT_FP8: return launch_fmt<DT, lp::FMT_FP8>(a, blocks, s);
    case lp::FMT_INT8: return launch_fmt<DT, lp::FMT_INT8>(a, blocks, s);
    case lp::FMT_INT4: return launch_fmt<DT, lp::FMT_INT4>(a, blocks, s);
    default: return cudaErrorInvalidValue;
  }
}

// Both widths are loaded; fit is lowered to the 256-thread kernel's blocks per SM (the
// wide one is counted in whole SMs).
template <int DT, int FMT> cudaError_t load_fmt(int& fit) {
  cudaFuncAttributes attr;
  cudaError_t e = cudaFuncGetAttributes(&attr, lowprec_kernel<DT, FMT, SNAPCCL_LP_WIDE_THREADS>);
  if (e == cudaSuccess) e = load_and_fit((const void*)lowprec_kernel<DT, FMT, SNAPCCL_THREADS>, SNAPCCL_THREADS, 0, fit);
  return e;
}
template <int DT> cudaError_t load_dt(int& fit) {
  cudaError_t e = load_fmt<DT, lp::FMT_FP8>(fit);
  if (e == cudaSuccess) e = load_fmt<DT, lp::FMT_INT8>(fit);
  if (e == cudaSuccess) e = load_fmt<DT, lp::FMT_INT4>(fit);
  return e;
}

} // namespace
} // namespace snap

#ifdef SNAPCCL_LP_TRACE
// The trace array is per device: ranks on different GPUs record into their own device's
// copy (each into its own [rank] rows), so every device's copy is merged.
extern "C" __attribute__((visibility("default"))) int snapccl_lp_trace_take(snapccl_lp_trace_t* host) {
  static snapccl_lp_trace_t zero, one;
  int n = 0, cur = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || cudaGetDevice(&cur) != cudaSuccess) return 0;
  memset(host, 0, sizeof zero);
  bool ok = true;
  for (int d = 0; d < n && ok; d++) {
    ok = cudaSetDevice(d) == cudaSuccess && cudaMemcpyFromSymbol(&one, snap::lp_trace, sizeof one) == cudaSuccess &&
         cudaMemcpyToSymbol(snap::lp_trace, &zero, sizeof zero) == cudaSuccess;
    const unsigned long long* src = &one[0][0][0][0];
    unsigned long long* dst = &(*host)[0][0][0][0];
    for (size_t i = 0; ok && i < sizeof one / sizeof one[0][0][0][0]; i++)
      if (src[i]) dst[i] = src[i];
  }
  return cudaSetDevice(cur) == cudaSuccess && ok;
}
#endif

extern "C" cudaError_t snapccl_load_lowprec_kernels(int* blocks_per_sm) {
  int fit = 1 << 30;
  cudaError_t e = snap::load_dt<ncclFloat16>(fit);
  if (e == cudaSuccess) e = snap::load_dt<ncclBfloat16>(fit);
  if (e == cudaSuccess) e = snap::load_dt<ncclFloat32>(fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
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
