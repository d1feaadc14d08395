// Staged collectives: two-shot all-reduce, direct reduce-scatter and direct all-gather.
//
// Every block runs its own pipeline of rounds; block b of every rank handles the same
// sub-ranges, so flags are per (source rank, block) and blocks never wait for each
// other. A round pushes data into the receivers' staging (slot = round counter % 2),
// raises one flag per receiver, and consumes what the peers pushed. Why two slots are
// enough, and why the round counter persists across calls, is argued in
// docs/ARCHITECTURE.md ("Staging slots").
#include "kernels/device_common.cuh"
#include "kernels/kernel_load.cuh"
#include "kernels/launch.h"
#include "kernels/reduce_ops.cuh"

namespace snap {
namespace {

__device__ __forceinline__ unsigned long long ceil_div(unsigned long long x, unsigned long long y) {
  return (x + y - 1) / y;
}
__device__ __forceinline__ unsigned long long clamp_len(unsigned long long total,
                                                        unsigned long long off,
                                                        unsigned long long cap) {
  return off >= total ? 0 : (total - off < cap ? total - off : cap);
}

// Chunk (slot, src, block) of the RS or AG staging region of workspace ws.
__device__ __forceinline__ char* chunk(char* ws, const snapccl_ws_layout& lay,
                                       unsigned long long region_off, int slot, int src, int b) {
  return ws + region_off +
         (((unsigned long long)slot * lay.nranks + src) * lay.max_blocks + b) * lay.chunk_bytes;
}

__device__ __forceinline__ unsigned long long load_round(const snapccl_kargs& a,
                                                          unsigned long long* sh) {
  if (threadIdx.x == 0) *sh = header(a.ws[a.rank])->block_round[blockIdx.x];
  __syncthreads();
  return *sh;
}

__device__ __forceinline__ void store_round(const snapccl_kargs& a, unsigned long long v) {
  if (threadIdx.x == 0) header(a.ws[a.rank])->block_round[blockIdx.x] = v;
}

template <int DT, int RK>
__device__ void reduce_rounds(const Ctx& c, const Reducer<DT>& red, unsigned long long* sh) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S);
  constexpr int EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
  const bool ar = a.mode == STAGED_ALLREDUCE;
  const unsigned long long count = a.count;
  // Slice j of the input goes to rank j. All-reduce slices start on pack boundaries.
  const unsigned long long sl = ar ? ceil_div(ceil_div(count, N), EPP) * EPP : count;
  const unsigned long long C = a.chunk_elems;
  const unsigned long long R = ceil_div(sl, (unsigned long long)B * C);
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  auto slice_len = [&](int j) -> unsigned long long {
    return ar ? clamp_len(count, (unsigned long long)j * sl, sl) : count;
  };
  const unsigned long long c0 = load_round(a, sh);

  for (unsigned long long k = 0; k < R; k++) {
    const unsigned long long round = c0 + k + 1;
    const int slot = (int)(round & 1);
    const unsigned long long o = (k * B + b) * C;

    // Reduce-scatter push: my piece of every other rank's slice into its staging.
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N; // staggered so ranks do not all hit one peer at once
      const unsigned long long len = clamp_len(slice_len(j), o, C);
      const char* src = send + ((unsigned long long)j * sl + o) * ES;
      char* dst = chunk(a.ws[j], a.lay, a.lay.rs_off, slot, me, b);
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x) {
        const int nb = (int)((len - p * EPP < (unsigned long long)EPP ? len - p * EPP : EPP) * ES);
        st_staging(dst + p * SNAPCCL_PACK, red.prescale(ld_n(src + p * SNAPCCL_PACK, nb)));
      }
    }
    signal_flags(c, FLAG_RS, round);
    if (!wait_flags(c, FLAG_RS, round)) return;

    // Reduce my slice in rank order (identical on every rank, so results are bitwise
    // equal everywhere), write it out, and for all-reduce push it to every peer.
    {
      const unsigned long long len = clamp_len(slice_len(me), o, C);
      const char* in = send + ((unsigned long long)me * sl + o) * ES;
      char* out = recv + (ar ? (unsigned long long)me * sl + o : o) * ES;
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x) {
        const int nb = (int)((len - p * EPP < (unsigned long long)EPP ? len - p * EPP : EPP) * ES);
        A acc[EPP];
        for (int r = 0; r < N; r++) {
          Pack v = r == me ? red.prescale(ld_n(in + p * SNAPCCL_PACK, nb))
                           : ld_staging(chunk(a.ws[me], a.lay, a.lay.rs_off, slot, r, b) + p * SNAPCCL_PACK);
          if (r == 0) red.template first<RK>(acc, v);
          else red.template add<RK>(acc, v);
        }
        Pack res = red.finish(acc);
        st_n(out + p * SNAPCCL_PACK, res, nb);
        if (ar)
          for (int d = 1; d < N; d++) {
            const int j = (me + d) % N;
            st_staging(chunk(a.ws[j], a.lay, a.lay.ag_off, slot, me, b) + p * SNAPCCL_PACK, res);
          }
      }
    }
    if (!ar) continue;

    // All-gather of the reduced slices.
    signal_flags(c, FLAG_AG, round);
    if (!wait_flags(c, FLAG_AG, round)) return;
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      const unsigned long long len = clamp_len(slice_len(j), o, C);
      const char* src = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
      char* dst = recv + ((unsigned long long)j * sl + o) * ES;
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x) {
        const int nb = (int)((len - p * EPP < (unsigned long long)EPP ? len - p * EPP : EPP) * ES);
        st_n(dst + p * SNAPCCL_PACK, ld_staging(src + p * SNAPCCL_PACK), nb);
      }
    }
  }
  __syncthreads(); // every thread is done with this call's slots before the counter moves
  store_round(a, c0 + R);
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) staged_reduce_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch, sh_round;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const Reducer<DT> red = make_reducer<DT>(a);
    switch (red_kind(a.devop)) {
      case RED_SUM: reduce_rounds<DT, RED_SUM>(c, red, &sh_round); break;
      case RED_PROD: reduce_rounds<DT, RED_PROD>(c, red, &sh_round); break;
      case RED_MAX: reduce_rounds<DT, RED_MAX>(c, red, &sh_round); break;
      default: reduce_rounds<DT, RED_MIN>(c, red, &sh_round); break;
    }
  }
  end(c);
}

// All-gather moves bytes: count is sendcount * element size.
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) allgather_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch, sh_round;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
    const unsigned long long n = a.count, C = a.chunk_elems;
    const unsigned long long R = ceil_div(n, (unsigned long long)B * C);
    const char* send = static_cast<const char*>(a.send);
    char* recv = static_cast<char*>(a.recv);
    const bool in_place = send == recv + (unsigned long long)me * n;
    const unsigned long long c0 = load_round(a, &sh_round);
    bool ok = true;
    for (unsigned long long k = 0; k < R && ok; k++) {
      const unsigned long long round = c0 + k + 1;
      const int slot = (int)(round & 1);
      const unsigned long long o = (k * B + b) * C;
      const unsigned long long len = clamp_len(n, o, C);
      for (unsigned long long p = threadIdx.x; p * SNAPCCL_PACK < len; p += blockDim.x) {
        const int nb = (int)(len - p * SNAPCCL_PACK < SNAPCCL_PACK ? len - p * SNAPCCL_PACK : SNAPCCL_PACK);
        Pack v = ld_n(send + o + p * SNAPCCL_PACK, nb);
        for (int d = 1; d < N; d++) {
          const int j = (me + d) % N;
          st_staging(chunk(a.ws[j], a.lay, a.lay.ag_off, slot, me, b) + p * SNAPCCL_PACK, v);
        }
        if (!in_place) st_n(recv + (unsigned long long)me * n + o + p * SNAPCCL_PACK, v, nb);
      }
      signal_flags(c, FLAG_AG, round);
      if (!(ok = wait_flags(c, FLAG_AG, round))) break;
      for (int d = 1; d < N; d++) {
        const int j = (me + d) % N;
        const char* src = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
        char* dst = recv + (unsigned long long)j * n + o;
        for (unsigned long long p = threadIdx.x; p * SNAPCCL_PACK < len; p += blockDim.x) {
          const int nb = (int)(len - p * SNAPCCL_PACK < SNAPCCL_PACK ? len - p * SNAPCCL_PACK : SNAPCCL_PACK);
          st_n(dst + p * SNAPCCL_PACK, ld_staging(src + p * SNAPCCL_PACK), nb);
        }
      }
    }
    if (ok) {
      __syncthreads();
      store_round(a, c0 + R);
    }
  }
  end(c);
}

} // namespace
} // namespace snap

// Loads every staged kernel now (kernels/kernel_load.cuh), lowering fit to each one's
// blocks per SM.
static bool load_staged_fn(const void* fn, int& fit) {
  return snap::load_and_fit(fn, SNAPCCL_THREADS, 0, fit) == cudaSuccess;
}
template <int DT> static bool load_staged(int& fit) {
  return load_staged_fn((const void*)snap::staged_reduce_kernel<DT>, fit);
}

extern "C" int snapccl_load_staged_kernels(int* blocks_per_sm) {
  int fit = 1 << 30;
  const bool ok = load_staged_fn((const void*)snap::allgather_kernel, fit) && load_staged<ncclInt8>(fit) &&
                  load_staged<ncclUint8>(fit) && load_staged<ncclInt32>(fit) && load_staged<ncclUint32>(fit) &&
                  load_staged<ncclInt64>(fit) && load_staged<ncclUint64>(fit) && load_staged<ncclFloat16>(fit) &&
                  load_staged<ncclFloat32>(fit) && load_staged<ncclFloat64>(fit) && load_staged<ncclBfloat16>(fit) &&
                  load_staged<ncclFloat8e4m3>(fit) && load_staged<ncclFloat8e5m2>(fit);
  *blocks_per_sm = ok ? fit : 0;
  return ok;
}

extern "C" cudaError_t snapccl_launch_staged(const struct snapccl_kargs* a, int blocks,
                                             cudaStream_t stream) {
  if (a->mode == STAGED_ALLGATHER) {
    snap::allgather_kernel<<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a);
  } else {
    SNAP_DTYPE_SWITCH(a->dtype, snap::staged_reduce_kernel, <<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a))
  }
  return cudaGetLastError();
}
