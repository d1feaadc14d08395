// One-shot all-reduce for small messages, two flavours.
//
// Flags (every dtype): each block pushes its range of the input into every peer's
// one-shot buffer (parity = epoch % 2), raises one flag per peer, waits for the peers'
// flags and reduces all ranks' copies in rank order.
//
// Lamport (floating types): the buffers hold a sentinel no real value carries, so data
// and "ready" arrive in one store and no flag round trip is needed. The reader resets
// each slot to the sentinel right after reading it. Why two parities suffice, and the
// sentinel, are in docs/ARCHITECTURE.md ("Lamport buffers").
#include "kernels/device_common.cuh"
#include "kernels/kernel_load.cuh"
#include "kernels/launch.h"
#include "kernels/lamport.cuh"
#include "kernels/reduce_ops.cuh"
#include "kernels/staging.cuh"

namespace snap {
namespace {

// This block's share of the message: bytes [off, off + bytes) of it.
template <int ES> __device__ __forceinline__ void block_bytes(ull n, ull& off, ull& bytes) {
  const ull total = n * ES;
  ull p0, p1;
  block_range(ceil_div(total, SNAPCCL_PACK), p0, p1);
  off = p0 * SNAPCCL_PACK;
  bytes = (p1 * SNAPCCL_PACK < total ? p1 * SNAPCCL_PACK : total) - off;
}

template <int DT, int RK> __device__ void flags_body(const Ctx& c, const Reducer<DT>& red) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S), EPP = SNAPCCL_PACK / ES, KR = reduce_batch<DT>(), T = SNAPCCL_THREADS;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, par = (int)(c.epoch & 1);
  ull off, bytes;
  block_bytes<ES>(a.count, off, bytes);
  const char* in = static_cast<const char*>(a.send) + off;
  char* out = static_cast<char*>(a.recv) + off;
  move_piece(
      bytes, [&](ull p, int nb) { return red.prescale(ld_n(in + p * SNAPCCL_PACK, nb)); },
      [&](ull p, Pack v, int) {
        for (int d = 1; d < N; d++) {
          const int j = (me + d) % N;
          st_staging(oneshot_slot(a.ws[j], a.lay, a.lay.oneshot_off, par, me) + off + p * SNAPCCL_PACK, v);
        }
      });
  signal_flags(c, FLAG_ONESHOT, c.epoch);
  if (!wait_flags(c, FLAG_ONESHOT, c.epoch)) return;
  for_packs<KR>(bytes, [&](ull p, auto batch, int nb) {
    constexpr int K = decltype(batch)::n;
    A acc[K][EPP];
    for (int r = 0; r < N; r++) {
      Pack v[K];
      if (r == me) {
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_n(in + (p + i * T) * SNAPCCL_PACK, nb);
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = red.prescale(v[i]);
      } else {
        const char* slot = oneshot_slot(a.ws[me], a.lay, a.lay.oneshot_off, par, r) + off;
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_staging(slot + (p + i * T) * SNAPCCL_PACK);
      }
#pragma unroll
      for (int i = 0; i < K; i++) {
        if (r == 0) red.template first<RK>(acc[i], v[i]);
        else red.template add<RK>(acc[i], v[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < K; i++) st_n(out + (p + i * T) * SNAPCCL_PACK, red.finish(acc[i]), nb);
  });
}

template <int DT, int RK> __device__ void lamport_body(const Ctx& c, const Reducer<DT>& red) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S), EPP = SNAPCCL_PACK / ES, KR = reduce_batch<DT>(), T = SNAPCCL_THREADS;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, par = (int)(c.epoch & 1);
  ull off, bytes;
  block_bytes<ES>(a.count, off, bytes);
  const char* in = static_cast<const char*>(a.send) + off;
  char* out = static_cast<char*>(a.recv) + off;
  // Push first, for the whole range: peers can start reducing while we still read.
  move_piece(
      bytes, [&](ull p, int nb) { return canon<ES>(red.prescale(ld_n(in + p * SNAPCCL_PACK, nb))); },
      [&](ull p, Pack v, int) {
        for (int d = 1; d < N; d++) {
          const int j = (me + d) % N;
          st_volatile(oneshot_slot(a.ws[j], a.lay, a.lay.lamport_off, par, me) + off + p * SNAPCCL_PACK, v);
        }
      });
  const Pack cleared{SENT, SENT};
  bool ok = true;
  for_packs<KR>(bytes, [&](ull p, auto batch, int nb) {
    constexpr int K = decltype(batch)::n;
    if (!ok) return;
    A acc[K][EPP];
    for (int r = 0; r < N; r++) {
      Pack v[K];
      if (r == me) { // what the peers received
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_n(in + (p + i * T) * SNAPCCL_PACK, nb);
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = canon<ES>(red.prescale(v[i]));
      } else {
        const char* slot = oneshot_slot(a.ws[me], a.lay, a.lay.lamport_off, par, r) + off;
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_volatile(slot + (p + i * T) * SNAPCCL_PACK);
#pragma unroll
        for (int i = 0; i < K; i++) {
          int spins = 0;
          while (lamport_pending(v[i])) {
            if (!keep_waiting(c, spins, r, 3)) {
              ok = false;
              return;
            }
            v[i] = ld_volatile(slot + (p + i * T) * SNAPCCL_PACK);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < K; i++) {
        if (r == 0) red.template first<RK>(acc[i], v[i]);
        else red.template add<RK>(acc[i], v[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < K; i++) st_n(out + (p + i * T) * SNAPCCL_PACK, red.finish(acc[i]), nb);
    // Read by us alone and written again no earlier than two calls on: reset now.
    for (int r = 0; r < N; r++) {
      if (r == me) continue;
      char* slot = oneshot_slot(a.ws[me], a.lay, a.lay.lamport_off, par, r) + off;
#pragma unroll
      for (int i = 0; i < K; i++) st_volatile(slot + (p + i * T) * SNAPCCL_PACK, cleared);
    }
  });
}

#define SNAP_RED_SWITCH(BODY)                                                 \
  switch (red_kind(a.devop)) {                                                \
    case RED_SUM: BODY<DT, RED_SUM>(c, red); break;                           \
    case RED_PROD: BODY<DT, RED_PROD>(c, red); break;                         \
    case RED_MAX: BODY<DT, RED_MAX>(c, red); break;                           \
    default: BODY<DT, RED_MIN>(c, red); break;                                \
  }

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) oneshot_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const Reducer<DT> red = make_reducer<DT>(a);
    SNAP_RED_SWITCH(flags_body)
  }
  end(c);
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) lamport_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const Reducer<DT> red = make_reducer<DT>(a);
    SNAP_RED_SWITCH(lamport_body)
  }
  end(c);
}

__global__ void ws_init_kernel(char* ws, snapccl_ws_layout lay) {
  unsigned long long* p = reinterpret_cast<unsigned long long*>(ws + lay.lamport_off);
  const unsigned long long units = 2ull * lay.nranks * lay.oneshot_bytes / 8;
  for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < units;
       i += (unsigned long long)gridDim.x * blockDim.x)
    p[i] = SENT;
}

} // namespace
} // namespace snap

extern "C" cudaError_t snapccl_launch_oneshot(const struct snapccl_kargs* a, int blocks,
                                              cudaStream_t stream) {
  SNAP_DTYPE_SWITCH(a->dtype, snap::oneshot_kernel, <<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a))
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_launch_lamport(const struct snapccl_kargs* a, int blocks,
                                              cudaStream_t stream) {
  SNAP_FLOAT_DTYPE_SWITCH(a->dtype, snap::lamport_kernel, <<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a))
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_launch_ws_init(char* ws, const struct snapccl_ws_layout* lay,
                                              cudaStream_t stream) {
  snap::ws_init_kernel<<<64, 256, 0, stream>>>(ws, *lay);
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_load_oneshot_kernels(int* blocks_per_sm) {
  static const void* const fns[] = {SNAP_FOR_EACH_DTYPE(SNAP_KERNEL_OF, snap::oneshot_kernel)
                                        SNAP_FOR_EACH_FLOAT_DTYPE(SNAP_KERNEL_OF, snap::lamport_kernel)};
  int fit = 1 << 30;
  cudaFuncAttributes attr;
  cudaError_t e = cudaFuncGetAttributes(&attr, snap::ws_init_kernel);
  if (e == cudaSuccess) e = snap::load_all_and_fit(fns, sizeof fns / sizeof fns[0], SNAPCCL_THREADS, 0, fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
}
