// What every kernel that moves data through the workspace shares: the staging chunk and
// one-shot slot addresses, the per-block round counter, piece arithmetic, and the batched
// pack loop that keeps several independent accesses in flight per thread.
#pragma once

#include "kernels/device_common.cuh"

namespace snap {

using ull = unsigned long long;

__device__ __forceinline__ ull ceil_div(ull x, ull y) { return (x + y - 1) / y; }

// Length of the piece [off, off + cap) of [0, total), 0 past the end.
__device__ __forceinline__ ull clamp_len(ull total, ull off, ull cap) {
  return off >= total ? 0 : (total - off < cap ? total - off : cap);
}

// Offset of chunk (slot, src, block) of the RS or AG staging region, in any rank's
// workspace (the layout is identical on every rank).
__device__ __forceinline__ ull chunk_off(const snapccl_ws_layout& lay, ull region_off, int slot,
                                         int src, int b) {
  return region_off + (((ull)slot * lay.nranks + src) * lay.max_blocks + b) * lay.chunk_bytes;
}
__device__ __forceinline__ char* chunk(char* ws, const snapccl_ws_layout& lay, ull region_off,
                                       int slot, int src, int b) {
  return ws + chunk_off(lay, region_off, slot, src, b);
}

// Slot (parity, src) of a one-shot region (flags or Lamport) of workspace ws.
__device__ __forceinline__ char* oneshot_slot(char* ws, const snapccl_ws_layout& lay, ull region_off,
                                              int parity, int src) {
  return ws + region_off + ((ull)parity * lay.nranks + src) * lay.oneshot_bytes;
}

// This block's share [p0, p1) of `packs`, for kernels that split one piece over the grid.
__device__ __forceinline__ void block_range(ull packs, ull& p0, ull& p1) {
  p0 = packs * blockIdx.x / gridDim.x;
  p1 = packs * (blockIdx.x + 1) / gridDim.x;
}

// The per-block round counter every staged protocol continues (docs/ARCHITECTURE.md,
// "Staging slots"): read once per call by thread 0 and shared, stored back at the end.
__device__ __forceinline__ ull load_round(const snapccl_kargs& a, ull* sh) {
  if (threadIdx.x == 0) *sh = header(a.ws[a.rank])->block_round[blockIdx.x];
  __syncthreads();
  return *sh;
}
__device__ __forceinline__ void store_round(const snapccl_kargs& a, ull v) {
  if (threadIdx.x == 0) header(a.ws[a.rank])->block_round[blockIdx.x] = v;
}

// ---------------------------------------------------------------- batched pack loops

// A block moves what its threads keep in flight per memory round trip (Little's law):
// one 16-byte load per thread at a time is ~4 KiB per block, about 4 GB/s against a
// remote or HBM latency of about a microsecond. So every loop below hands its body K
// packs at once (K = the batch), and the bodies issue all K loads before the first store
// or reduction that uses them. The compiler cannot hoist loads across stores through
// char pointers itself (they may alias), so the order in the source is the order issued.
template <int K> struct Batch {
  static constexpr int n = K;
};

// What is left of a thread's packs after its whole batches (fewer than K of them): one
// batch each of K/2, K/4, ..., 1 packs where that many remain, so the remainder of a
// piece smaller than K x T packs still goes in few round trips, and no batch needs
// per-pack guards (which cost registers).
template <int K, int T, class Body>
__device__ __forceinline__ void remainder_packs(ull& p, ull full, Body& body) {
  if constexpr (K >= 1) {
    if (p + (ull)(K - 1) * T < full) {
      body(p, Batch<K>{}, SNAPCCL_PACK);
      p += (ull)K * T;
    }
    remainder_packs<K / 2, T>(p, full, body);
  }
}

// Runs body(p, Batch<K>{}, nb) over the 16-byte packs of a piece of `bytes` bytes, T
// threads striding: the thread's packs p, p + T, ..., p + (K-1)T at once while whole
// batches remain, then smaller batches; nb is 16 for every pack but a partial last one,
// which goes alone to the thread that would own it. T is a constant (every kernel using
// this runs SNAPCCL_THREADS threads), so a batch's K addresses are one register plus
// immediates.
template <int K, int T = SNAPCCL_THREADS, class Body>
__device__ __forceinline__ void for_packs(ull bytes, Body&& body) {
  const ull full = bytes / SNAPCCL_PACK;
  ull p = threadIdx.x;
  for (; p + (ull)(K - 1) * T < full; p += (ull)K * T) body(p, Batch<K>{}, SNAPCCL_PACK);
  remainder_packs<K / 2, T>(p, full, body);
  const int tail = (int)(bytes % SNAPCCL_PACK);
  if (tail && threadIdx.x == full % T) body(full, Batch<1>{}, tail);
}

// Packs per thread in flight for plain moves (copy, push, gather): 8 x 16 B x 256
// threads = 32 KiB per block and round trip, 48 registers.
constexpr int MOVE_BATCH = 8;

// Copies a piece of `bytes` bytes: a batch's loads through ld(p, nb) first, then its
// stores through st(p, v, nb), p the pack index.
template <class Load, class Store>
__device__ __forceinline__ void move_piece(ull bytes, Load&& ld, Store&& st) {
  for_packs<MOVE_BATCH>(bytes, [&](ull p, auto batch, int nb) {
    constexpr int K = decltype(batch)::n;
    Pack v[K];
#pragma unroll
    for (int i = 0; i < K; i++) v[i] = ld(p + i * SNAPCCL_THREADS, nb);
#pragma unroll
    for (int i = 0; i < K; i++) st(p + i * SNAPCCL_THREADS, v[i], nb);
  });
}

} // namespace snap
