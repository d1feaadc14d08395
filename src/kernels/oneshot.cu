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
#include "kernels/reduce_ops.cuh"

namespace snap {
namespace {

// Cleared state of a Lamport unit: per 8 bytes, the low and high 32-bit words both hold
// 0x80000000. As fp32 lanes that is -0,-0; as fp16/bf16 lanes it holds -0s; as fp8 bytes
// it holds 0x80 (-0 in both formats). Senders turn those -0s into +0, so no unit they
// write can equal it. As fp64 it is one particular negative denormal, which senders nudge
// by one ulp (an error of 5e-324).
constexpr unsigned long long SENT = 0x8000000080000000ull;

template <int ES> __device__ __forceinline__ unsigned long long canon_unit(unsigned long long u) {
  if (ES == 8) return u == SENT ? u ^ 1ull : u;
  unsigned long long out = 0;
  constexpr int BITS = ES * 8;
  constexpr unsigned long long MASK = BITS == 64 ? ~0ull : ((1ull << BITS) - 1);
  constexpr unsigned long long NEGZ = 1ull << (BITS - 1);
#pragma unroll
  for (int i = 0; i < 64 / BITS; i++) {
    unsigned long long lane = (u >> (i * BITS)) & MASK;
    if (lane == NEGZ) lane = 0;
    out |= lane << (i * BITS);
  }
  return out;
}

template <int ES> __device__ __forceinline__ Pack canon(Pack v) {
  return Pack{canon_unit<ES>(v.lo), canon_unit<ES>(v.hi)};
}

__device__ __forceinline__ void block_range(unsigned long long packs, unsigned long long& p0,
                                            unsigned long long& p1) {
  p0 = packs * blockIdx.x / gridDim.x;
  p1 = packs * (blockIdx.x + 1) / gridDim.x;
}

__device__ __forceinline__ char* oneshot_buf(char* ws, const snapccl_ws_layout& lay,
                                             unsigned long long region, int parity, int src) {
  return ws + region + ((unsigned long long)parity * lay.nranks + src) * lay.oneshot_bytes;
}

template <int DT, int RK> __device__ void flags_body(const Ctx& c, const Reducer<DT>& red) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S), EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, par = (int)(c.epoch & 1);
  const unsigned long long n = a.count, packs = (n + EPP - 1) / EPP;
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  unsigned long long p0, p1;
  block_range(packs, p0, p1);
  auto nbytes = [&](unsigned long long p) {
    return (int)((n - p * EPP < (unsigned long long)EPP ? n - p * EPP : EPP) * ES);
  };
  for (unsigned long long p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    Pack v = red.prescale(ld_n(send + p * SNAPCCL_PACK, nbytes(p)));
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      st_staging(oneshot_buf(a.ws[j], a.lay, a.lay.oneshot_off, par, me) + p * SNAPCCL_PACK, v);
    }
  }
  signal_flags(c, FLAG_ONESHOT, c.epoch);
  if (!wait_flags(c, FLAG_ONESHOT, c.epoch)) return;
  for (unsigned long long p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int nb = nbytes(p);
    A acc[EPP];
    for (int r = 0; r < N; r++) {
      Pack v = r == me ? red.prescale(ld_n(send + p * SNAPCCL_PACK, nb))
                       : ld_staging(oneshot_buf(a.ws[me], a.lay, a.lay.oneshot_off, par, r) + p * SNAPCCL_PACK);
      if (r == 0) red.template first<RK>(acc, v);
      else red.template add<RK>(acc, v);
    }
    st_n(recv + p * SNAPCCL_PACK, red.finish(acc), nb);
  }
}

template <int DT, int RK> __device__ void lamport_body(const Ctx& c, const Reducer<DT>& red) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S), EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, par = (int)(c.epoch & 1);
  const unsigned long long n = a.count, packs = (n + EPP - 1) / EPP;
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  unsigned long long p0, p1;
  block_range(packs, p0, p1);
  auto nbytes = [&](unsigned long long p) {
    return (int)((n - p * EPP < (unsigned long long)EPP ? n - p * EPP : EPP) * ES);
  };
  // Push first, for the whole range: peers can start reducing while we still read.
  for (unsigned long long p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    Pack v = canon<ES>(red.prescale(ld_n(send + p * SNAPCCL_PACK, nbytes(p))));
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      st_volatile(oneshot_buf(a.ws[j], a.lay, a.lay.lamport_off, par, me) + p * SNAPCCL_PACK, v);
    }
  }
  const Pack cleared{SENT, SENT};
  for (unsigned long long p = p0 + threadIdx.x; p < p1; p += blockDim.x) {
    const int nb = nbytes(p);
    A acc[EPP];
    for (int r = 0; r < N; r++) {
      Pack v;
      if (r == me) {
        v = canon<ES>(red.prescale(ld_n(send + p * SNAPCCL_PACK, nb))); // what peers received
      } else {
        const char* slotp = oneshot_buf(a.ws[me], a.lay, a.lay.lamport_off, par, r) + p * SNAPCCL_PACK;
        int spins = 0;
        for (;;) {
          v = ld_volatile(slotp);
          if (v.lo != SENT && v.hi != SENT) break;
          if (!keep_waiting(c, spins, r, 3)) return;
        }
      }
      if (r == 0) red.template first<RK>(acc, v);
      else red.template add<RK>(acc, v);
    }
    st_n(recv + p * SNAPCCL_PACK, red.finish(acc), nb);
    // Read by us alone and written again no earlier than two calls on: reset now.
    for (int r = 0; r < N; r++)
      if (r != me) st_volatile(oneshot_buf(a.ws[me], a.lay, a.lay.lamport_off, par, r) + p * SNAPCCL_PACK, cleared);
  }
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
  switch (a->dtype) {
    case ncclFloat16: snap::lamport_kernel<ncclFloat16><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    case ncclFloat32: snap::lamport_kernel<ncclFloat32><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    case ncclFloat64: snap::lamport_kernel<ncclFloat64><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    case ncclBfloat16: snap::lamport_kernel<ncclBfloat16><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    case ncclFloat8e4m3: snap::lamport_kernel<ncclFloat8e4m3><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    case ncclFloat8e5m2: snap::lamport_kernel<ncclFloat8e5m2><<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_launch_ws_init(char* ws, const struct snapccl_ws_layout* lay,
                                              cudaStream_t stream) {
  snap::ws_init_kernel<<<64, 256, 0, stream>>>(ws, *lay);
  return cudaGetLastError();
}

// Ranks sharing a GPU in one process spin on each other's kernels. Under CUDA's lazy
// module loading (the default), a rank's first launch of a kernel may load it and wait
// for the context, hence for another rank's spinning kernel: a deadlock until the
// timeout. So every kernel is loaded here, at init, before any of them can spin.
template <int DT> static void load_dtype(bool& ok) {
  cudaFuncAttributes attr;
  ok &= cudaFuncGetAttributes(&attr, snap::oneshot_kernel<DT>) == cudaSuccess;
}
template <int DT> static void load_float_dtype(bool& ok) {
  cudaFuncAttributes attr;
  ok &= cudaFuncGetAttributes(&attr, snap::lamport_kernel<DT>) == cudaSuccess;
}
extern "C" int snapccl_load_staged_kernels(int* blocks_per_sm);  /* kernels/staged.cu */
extern "C" int snapccl_load_lowprec_kernels(int* blocks_per_sm); /* kernels/lowprec.cu */
extern "C" cudaError_t snapccl_load_fused_kernels(int* blocks_per_sm); /* kernels/fused_rmsnorm.cu */

extern "C" int snapccl_kernels_runnable(int* blocks_per_sm) {
  cudaFuncAttributes attr;
  if (cudaFuncGetAttributes(&attr, snap::ws_init_kernel) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  bool ok = true;
  load_dtype<ncclInt8>(ok), load_dtype<ncclUint8>(ok), load_dtype<ncclInt32>(ok);
  load_dtype<ncclUint32>(ok), load_dtype<ncclInt64>(ok), load_dtype<ncclUint64>(ok);
  load_dtype<ncclFloat16>(ok), load_dtype<ncclFloat32>(ok), load_dtype<ncclFloat64>(ok);
  load_dtype<ncclBfloat16>(ok), load_dtype<ncclFloat8e4m3>(ok), load_dtype<ncclFloat8e5m2>(ok);
  load_float_dtype<ncclFloat16>(ok), load_float_dtype<ncclFloat32>(ok);
  load_float_dtype<ncclFloat64>(ok), load_float_dtype<ncclBfloat16>(ok);
  load_float_dtype<ncclFloat8e4m3>(ok), load_float_dtype<ncclFloat8e5m2>(ok);
  int staged = 0;
  if (!ok || !snapccl_load_staged_kernels(&staged)) {
    (void)cudaGetLastError();
    return 0;
  }
  /* The optional features' kernels load now too, for the same reason; if one cannot
   * load, only that feature fails (at its first use, with the CUDA error), not the
   * collectives every communicator needs. */
  int lowprec = 0, fused_per_sm = 0;
  if (!snapccl_load_lowprec_kernels(&lowprec)) (void)cudaGetLastError();
  if (snapccl_load_fused_kernels(&fused_per_sm) != cudaSuccess) (void)cudaGetLastError();
  /* Every kernel sized by the block cap counts: the fattest one bounds what fits (launch
   * bounds promise at least two). The one-shot kernels fit 3 on an H100, the staged and
   * low-precision ones (108-128 registers) 2: counting only the former let ranks sharing
   * a GPU hold three quarters of it instead of half. */
  int fit = staged;
  if (snap::load_and_fit((const void*)snap::oneshot_kernel<ncclFloat8e4m3>, SNAPCCL_THREADS, 0, fit) != cudaSuccess ||
      snap::load_and_fit((const void*)snap::lamport_kernel<ncclFloat8e4m3>, SNAPCCL_THREADS, 0, fit) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  if (lowprec > 0 && lowprec < fit) fit = lowprec; /* 0: the optional feature did not load */
  *blocks_per_sm = fit;
  return 1;
}
