// Fused all-reduce + residual add + RMSNorm (+ fp8 output), two flavours, and the
// separate residual + RMSNorm kernel (its body is in fused_row.cuh).
//
// One-shot (small token counts): every block pushes its rows of the input into every
// peer's Lamport slots (parity = epoch % 2), then reduces each of its rows in rank
// order from the slots, resetting every slot right after reading it, and normalises
// the row. The Lamport rules of oneshot.cu hold unchanged (docs/ARCHITECTURE.md,
// "Lamport buffers"): the same sentinel and canonicalisation, the same parities, every
// unit a peer writes is read and reset by its owner in the same call.
//
// Two-shot (larger): tokens are cut into nranks slices; each block runs its own
// pipeline of rounds over the rs/ag staging exactly as staged.cu does (slot = round %
// 2, flags per (source, block) carrying the round, the shared per-block round counter
// in the header), docs/ARCHITECTURE.md "Staging slots". A round: push my rows of slice
// j into rank j's rs staging; reduce my slice's rows in rank order and push the sums
// into every rank's ag staging (my own included); then every rank adds its own
// residual and normalises all the round's rows from the gathered sums. Gathering sums
// rather than normalised rows moves one array instead of two when residual_out is
// wanted, gives the same result as the one-shot for any residual_in, and keeps ranks
// bitwise identical because each runs the same row code on identical sums.
//
// Both use begin()/end() (the per-call epoch) and bounded waits from device_common.cuh.
#include "kernels/fused_launch.h"
#include "kernels/fused_row.cuh"
#include "kernels/kernel_load.cuh"
#include "kernels/lamport.cuh"
#include "kernels/launch.h"
#include "kernels/staging.cuh"

namespace snap {
namespace {

using fused::Elems;
using fused::pack_bytes;

__device__ __forceinline__ char* lamport_slot(const snapccl_kargs& a, int owner, int par, int src) {
  return oneshot_slot(a.ws[owner], a.lay, a.lay.lamport_off, par, src);
}

// The plain sum, as every all-reduce kernel computes it (fp32, rank order, then dtype).
template <int DT> __device__ __forceinline__ Reducer<DT> sum_reducer() {
  Reducer<DT> r;
  r.scale = 1.0f;
  r.premul = 0;
  r.postdiv = 0;
  return r;
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    fused_oneshot_kernel(const __grid_constant__ snapccl_fused_kargs f) {
  extern __shared__ Pack row_cache[];
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch;
  __shared__ fused::RowShared sh;
  const snapccl_kargs& a = f.k;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    using E = Elems<DT>;
    constexpr int ES = E::ES, EPP = E::EPP;
    const int me = a.rank, N = a.nranks, par = (int)(c.epoch & 1);
    const unsigned long long rb = f.hidden * ES, P = ceil_div(rb, SNAPCCL_PACK), stride = P * SNAPCCL_PACK;
    const char* in = static_cast<const char*>(a.send);
    // Push every row of this block first: peers can reduce while we still read.
    for (unsigned long long t = blockIdx.x; t < f.tokens; t += gridDim.x)
      for (unsigned long long p = threadIdx.x; p < P; p += SNAPCCL_THREADS) {
        const Pack v = canon<ES>(ld_n(in + t * rb + p * SNAPCCL_PACK, pack_bytes(rb, p)));
        for (int d = 1; d < N; d++)
          st_volatile(lamport_slot(a, (me + d) % N, par, me) + t * stride + p * SNAPCCL_PACK, v);
      }
    const Reducer<DT> red = sum_reducer<DT>();
    const Pack cleared{SENT, SENT};
    for (unsigned long long t = blockIdx.x; t < f.tokens; t += gridDim.x) {
      const char* row_in = in + t * rb;
      const unsigned long long base = t * stride;
      const bool ok = fused::row<DT>(
          f, t, row_cache, sh, &bail,
          [&](unsigned long long p, int nb, Pack& s) -> bool {
            float acc[EPP];
            for (int r = 0; r < N; r++) {
              Pack v;
              if (r == me) {
                v = canon<ES>(ld_n(row_in + p * SNAPCCL_PACK, nb)); // what the peers received
              } else {
                const char* sp = lamport_slot(a, me, par, r) + base + p * SNAPCCL_PACK;
                int spins = 0;
                for (;;) {
                  v = ld_volatile(sp);
                  if (v.lo != SENT && v.hi != SENT) break;
                  if (!keep_waiting(c, spins, r, 3)) return false;
                }
              }
              if (r == 0) red.template first<RED_SUM>(acc, v);
              else red.template add<RED_SUM>(acc, v);
            }
            s = red.finish(acc);
            // Read by us alone, written again two calls on at the earliest: reset now.
            for (int r = 0; r < N; r++)
              if (r != me) st_volatile(lamport_slot(a, me, par, r) + base + p * SNAPCCL_PACK, cleared);
            return true;
          },
          [](unsigned long long, int) { return Pack{0, 0}; }); // rows are always cached here
      if (!ok) break;
    }
  }
  end(c);
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    fused_twoshot_kernel(const __grid_constant__ snapccl_fused_kargs f) {
  extern __shared__ Pack row_cache[];
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch, sh_round;
  __shared__ fused::RowShared sh;
  const snapccl_kargs& a = f.k;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    using E = Elems<DT>;
    constexpr int ES = E::ES, EPP = E::EPP;
    const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
    const unsigned long long T = f.tokens, rb = f.hidden * ES, stride = ceil_div(rb, SNAPCCL_PACK) * SNAPCCL_PACK;
    const unsigned P = (unsigned)(stride / SNAPCCL_PACK);
    const unsigned long long ts = ceil_div(T, N), rpc = f.rows_per_chunk, R = ceil_div(ts, (unsigned long long)B * rpc);
    const char* in = static_cast<const char*>(a.send);
    const Reducer<DT> red = sum_reducer<DT>();
    // Rows of slice j this block handles in the round starting at row o of the slice.
    auto rows_of = [&](int j, unsigned long long o) -> unsigned {
      const unsigned long long first = (unsigned long long)j * ts + o;
      const unsigned long long last = (unsigned long long)(j + 1) * ts < T ? (unsigned long long)(j + 1) * ts : T;
      return first >= last ? 0u : (unsigned)(last - first < rpc ? last - first : rpc);
    };
    if (threadIdx.x == 0) sh_round = header(a.ws[me])->block_round[b];
    __syncthreads();
    const unsigned long long c0 = sh_round;
    bool ok = true;
    for (unsigned long long k = 0; k < R && ok; k++) {
      const unsigned long long round = c0 + k + 1;
      const int slot = (int)(round & 1);
      const unsigned long long o = (k * B + b) * rpc;

      // Reduce-scatter push: my rows of every other slice into its owner's staging.
      for (int d = 1; d < N; d++) {
        const int j = (me + d) % N;
        const unsigned n = rows_of(j, o) * P;
        const char* src = in + ((unsigned long long)j * ts + o) * rb;
        char* dst = chunk(a.ws[j], a.lay, a.lay.rs_off, slot, me, b);
        for (unsigned idx = threadIdx.x; idx < n; idx += SNAPCCL_THREADS) {
          const unsigned i = idx / P, p = idx % P;
          st_staging(dst + (unsigned long long)idx * SNAPCCL_PACK,
                     ld_n(src + i * rb + (unsigned long long)p * SNAPCCL_PACK, pack_bytes(rb, p)));
        }
      }
      signal_flags(c, FLAG_RS, round);
      if (!(ok = wait_flags(c, FLAG_RS, round))) break;

      // My slice's rows, reduced in rank order; the sums go to every rank's ag staging.
      {
        const unsigned n = rows_of(me, o) * P;
        const char* src = in + ((unsigned long long)me * ts + o) * rb;
        for (unsigned idx = threadIdx.x; idx < n; idx += SNAPCCL_THREADS) {
          const unsigned i = idx / P, p = idx % P;
          float acc[EPP];
          for (int r = 0; r < N; r++) {
            const Pack v = r == me ? ld_n(src + i * rb + (unsigned long long)p * SNAPCCL_PACK, pack_bytes(rb, p))
                                   : ld_staging(chunk(a.ws[me], a.lay, a.lay.rs_off, slot, r, b) +
                                                (unsigned long long)idx * SNAPCCL_PACK);
            if (r == 0) red.template first<RED_SUM>(acc, v);
            else red.template add<RED_SUM>(acc, v);
          }
          const Pack s = red.finish(acc);
          for (int d = 0; d < N; d++)
            st_staging(chunk(a.ws[(me + d) % N], a.lay, a.lay.ag_off, slot, me, b) +
                           (unsigned long long)idx * SNAPCCL_PACK, s);
        }
      }
      signal_flags(c, FLAG_AG, round);
      if (!(ok = wait_flags(c, FLAG_AG, round))) break;

      // Every row of the round, from the gathered sums (mine written by this block
      // before the barrier in wait_flags).
      for (int j = 0; j < N; j++) {
        const unsigned n = rows_of(j, o);
        const char* sums = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
        for (unsigned i = 0; i < n; i++) {
          const unsigned long long t = (unsigned long long)j * ts + o + i;
          const char* srow = sums + (unsigned long long)i * stride;
          const char* rin = f.residual_in ? static_cast<const char*>(f.residual_in) + t * rb : nullptr;
          const char* rout = f.residual_out ? static_cast<const char*>(f.residual_out) + t * rb : nullptr;
          fused::row<DT>(
              f, t, f.cache_row ? row_cache : nullptr, sh, nullptr,
              [&](unsigned long long p, int, Pack& s) {
                s = ld_staging(srow + p * SNAPCCL_PACK);
                return true;
              },
              [&](unsigned long long p, int nb) {
                if (rout) return ld_n(rout + p * SNAPCCL_PACK, nb); // this thread wrote it
                const Pack s = ld_staging(srow + p * SNAPCCL_PACK);
                return rin ? E::add(s, ld_n(rin + p * SNAPCCL_PACK, nb)) : s;
              });
        }
      }
    }
    if (ok) {
      __syncthreads(); // every thread is done with this call's slots before the counter moves
      if (threadIdx.x == 0) header(a.ws[me])->block_round[b] = c0 + R;
    }
  }
  end(c);
}

unsigned long long stride_of(const snapccl_fused_kargs* f) {
  const unsigned long long es = f->k.dtype == ncclFloat32 ? 4 : 2;
  return (f->hidden * es + SNAPCCL_PACK - 1) / SNAPCCL_PACK * SNAPCCL_PACK;
}

size_t smem_of(const snapccl_fused_kargs* f) { return f->cache_row ? (size_t)stride_of(f) : 0; }

#define SNAP_FUSED_SWITCH(dtype, KERNEL, ...)                                     \
  switch (dtype) {                                                                \
    case ncclBfloat16: KERNEL<ncclBfloat16> __VA_ARGS__; break;                   \
    case ncclFloat16: KERNEL<ncclFloat16> __VA_ARGS__; break;                     \
    case ncclFloat32: KERNEL<ncclFloat32> __VA_ARGS__; break;                     \
    default: return cudaErrorInvalidValue;                                        \
  }

template <int DT> cudaError_t load_one(int* per_sm) {
  const void* fns[3] = {(const void*)fused_oneshot_kernel<DT>, (const void*)fused_twoshot_kernel<DT>,
                        (const void*)fused::rmsnorm_kernel<DT>};
  for (const void* fn : fns) {
    cudaError_t e = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)SNAPCCL_FUSED_ROW_CACHE_MAX);
    if (e == cudaSuccess) e = load_and_fit(fn, SNAPCCL_THREADS, SNAPCCL_FUSED_ROW_CACHE_MAX, *per_sm);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

} // namespace
} // namespace snap

extern "C" cudaError_t snapccl_launch_fused_oneshot(const struct snapccl_fused_kargs* f, int blocks,
                                                    cudaStream_t stream) {
  const size_t smem = snap::smem_of(f);
  SNAP_FUSED_SWITCH(f->k.dtype, snap::fused_oneshot_kernel, <<<blocks, SNAPCCL_THREADS, smem, stream>>>(*f))
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_launch_fused_twoshot(const struct snapccl_fused_kargs* f, int blocks,
                                                    cudaStream_t stream) {
  const size_t smem = snap::smem_of(f);
  SNAP_FUSED_SWITCH(f->k.dtype, snap::fused_twoshot_kernel, <<<blocks, SNAPCCL_THREADS, smem, stream>>>(*f))
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_launch_rmsnorm(const struct snapccl_fused_kargs* f, int blocks,
                                              cudaStream_t stream) {
  const size_t smem = snap::smem_of(f);
  SNAP_FUSED_SWITCH(f->k.dtype, snap::fused::rmsnorm_kernel, <<<blocks, SNAPCCL_THREADS, smem, stream>>>(*f))
  return cudaGetLastError();
}

extern "C" cudaError_t snapccl_load_fused_kernels(int* blocks_per_sm) {
  int n = 1 << 30;
  cudaError_t e = snap::load_one<ncclBfloat16>(&n);
  if (e == cudaSuccess) e = snap::load_one<ncclFloat16>(&n);
  if (e == cudaSuccess) e = snap::load_one<ncclFloat32>(&n);
  *blocks_per_sm = e == cudaSuccess ? n : 0;
  return e;
}
