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
#include "kernels/staging.cuh"

namespace snap {
namespace {

__device__ __forceinline__ ull* reg_slot(char* ws, const snapccl_ws_layout& lay, int src, int block) {
  return reinterpret_cast<ull*>(ws + lay.reg_off) + ((size_t)src * SNAPCCL_MAX_BLOCKS + block) * SNAPCCL_REG_DESC_WORDS;
}

// Two-shot all-reduce on registered buffers, every rank's in place: block b reduces its
// pieces of my slice straight from every rank's input (rank order, as the staged path)
// and writes the result into every rank's output. No staging, no flags per round: the
// start barrier (reduce_rounds) said every rank is in this call, so its input is final
// and its output free; the end barrier says no peer still reads my input or writes my
// output. In place is safe too: piece o of my slice in peer r's buffer is read and then
// written by this very thread alone. docs/ARCHITECTURE.md, "Registered buffers".
template <int DT, int RK>
__device__ void inplace_rounds(const Ctx& c, const Reducer<DT>& red, const snapccl_reg_args& g, ull sl, ull c0) {
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(typename Type<DT>::Storage);
  constexpr int EPP = SNAPCCL_PACK / ES;
  constexpr int KR = reduce_batch<DT>() > 1 ? reduce_batch<DT>() / 2 : 1;
  constexpr int T = SNAPCCL_THREADS;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
  const ull C = a.chunk_elems;
  const ull R = ceil_div(sl, (ull)B * C);
  const ull mine = clamp_len(a.count, (ull)me * sl, sl);
  for (ull k = 0; k < R; k++) {
    const ull o = (k * B + b) * C;
    const ull at = ((ull)me * sl + o) * ES;
    for_packs<KR>(clamp_len(mine, o, C) * ES, [&](ull p, auto batch, int nb) {
      constexpr int K = decltype(batch)::n;
      A acc[K][EPP];
      for (int r = 0; r < N; r++) {
        const char* in = g.send[r] + at;
        Pack v[K];
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_n(in + (p + i * T) * SNAPCCL_PACK, nb);
#pragma unroll
        for (int i = 0; i < K; i++) {
          v[i] = red.prescale(v[i]);
          if (r == 0) red.template first<RK>(acc[i], v[i]);
          else red.template add<RK>(acc[i], v[i]);
        }
      }
      Pack res[K];
#pragma unroll
      for (int i = 0; i < K; i++) res[i] = red.finish(acc[i]);
      for (int d = 0; d < N; d++) {
        char* out = g.recv[(me + d) % N] + at;
#pragma unroll
        for (int i = 0; i < K; i++) st_n(out + (p + i * T) * SNAPCCL_PACK, res[i], nb);
      }
    });
  }
  signal_flags(c, FLAG_REG, c0 + 2);
  if (!wait_flags(c, FLAG_REG, c0 + 2)) return;
  __syncthreads();
  store_round(a, c0 + 2);
}

template <int DT, int RK, bool REG>
__device__ void reduce_rounds(const Ctx& c, const Reducer<DT>& red, const snapccl_reg_args* g, ull* sh) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S);
  constexpr int EPP = SNAPCCL_PACK / ES;
  constexpr int KR = reduce_batch<DT>();
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
  const bool ar = a.mode == STAGED_ALLREDUCE;
  const ull count = a.count;
  // Slice j of the input goes to rank j. All-reduce slices start on pack boundaries.
  const ull sl = ar ? ceil_div(ceil_div(count, N), EPP) * EPP : count;
  const ull C = a.chunk_elems;
  const ull R = ceil_div(sl, (ull)B * C);
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  auto slice_len = [&](int j) -> ull { return ar ? clamp_len(count, (ull)j * sl, sl) : count; };
  const ull c0 = load_round(a, sh);

  if constexpr (REG) {
    // Start barrier carrying each rank's descriptor of its buffers: every rank's block b
    // sees all of them, so every rank takes the same path. Round value c0 + 1 of the
    // FLAG_REG kind (the staged path's rounds below count the RS and AG kinds).
    const int t = threadIdx.x;
    if (t < N && t != me) {
      ull* d = reg_slot(a.ws[t], a.lay, me, b);
      for (int w = 0; w < SNAPCCL_REG_DESC_WORDS; w++) d[w] = g->desc[w];
    }
    signal_flags(c, FLAG_REG, c0 + 1); // this thread's release covers its stores above
    if (!wait_flags(c, FLAG_REG, c0 + 1)) return;
    int same = 1;
    if (t < N && t != me) { // the thread that acquired rank t's flag reads its descriptor
      const volatile ull* d = reg_slot(a.ws[me], a.lay, t, b);
      for (int w = 0; w < SNAPCCL_REG_DESC_WORDS; w++) same &= d[w] == g->desc[w];
    }
    if (__syncthreads_and(same) && g->desc[0] != 0) {
      inplace_rounds<DT, RK>(c, red, *g, sl, c0);
      return;
    }
  }

  for (ull k = 0; k < R; k++) {
    const ull round = c0 + k + 1;
    const int slot = (int)(round & 1);
    const ull o = (k * B + b) * C;

    // Reduce-scatter push: my piece of every other rank's slice into its staging.
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N; // staggered so ranks do not all hit one peer at once
      const char* src = send + ((ull)j * sl + o) * ES;
      char* dst = chunk(a.ws[j], a.lay, a.lay.rs_off, slot, me, b);
      move_piece(
          clamp_len(slice_len(j), o, C) * ES,
          [&](ull p, int nb) { return red.prescale(ld_n(src + p * SNAPCCL_PACK, nb)); },
          [&](ull p, Pack v, int) { st_staging(dst + p * SNAPCCL_PACK, v); });
    }
    signal_flags(c, FLAG_RS, round);
    if (!wait_flags(c, FLAG_RS, round)) return;

    // Reduce my slice in rank order (identical on every rank, so results are bitwise
    // equal everywhere), write it out, and for all-reduce push it to every peer. Each
    // source's K packs are loaded before any of them is added.
    {
      const char* in = send + ((ull)me * sl + o) * ES;
      char* out = recv + (ar ? (ull)me * sl + o : o) * ES;
      constexpr int T = SNAPCCL_THREADS;
      for_packs<KR>(clamp_len(slice_len(me), o, C) * ES, [&](ull p, auto batch, int nb) {
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
            const char* st = chunk(a.ws[me], a.lay, a.lay.rs_off, slot, r, b);
#pragma unroll
            for (int i = 0; i < K; i++) v[i] = ld_staging(st + (p + i * T) * SNAPCCL_PACK);
          }
#pragma unroll
          for (int i = 0; i < K; i++) {
            if (r == 0) red.template first<RK>(acc[i], v[i]);
            else red.template add<RK>(acc[i], v[i]);
          }
        }
        Pack res[K];
#pragma unroll
        for (int i = 0; i < K; i++) res[i] = red.finish(acc[i]);
#pragma unroll
        for (int i = 0; i < K; i++) st_n(out + (p + i * T) * SNAPCCL_PACK, res[i], nb);
        if (ar)
          for (int d = 1; d < N; d++) {
            char* dst = chunk(a.ws[(me + d) % N], a.lay, a.lay.ag_off, slot, me, b);
#pragma unroll
            for (int i = 0; i < K; i++) st_staging(dst + (p + i * T) * SNAPCCL_PACK, res[i]);
          }
      });
    }
    if (!ar) continue;

    // All-gather of the reduced slices.
    signal_flags(c, FLAG_AG, round);
    if (!wait_flags(c, FLAG_AG, round)) return;
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      const char* src = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
      char* dst = recv + ((ull)j * sl + o) * ES;
      move_piece(
          clamp_len(slice_len(j), o, C) * ES,
          [&](ull p, int) { return ld_staging(src + p * SNAPCCL_PACK); },
          [&](ull p, Pack v, int nb) { st_n(dst + p * SNAPCCL_PACK, v, nb); });
    }
  }
  __syncthreads(); // every thread is done with this call's slots before the counter moves
  store_round(a, c0 + R);
}

template <int DT, bool REG>
__device__ __forceinline__ void reduce_kernel_body(const snapccl_kargs& a, const snapccl_reg_args* g) {
  __shared__ int bail;
  __shared__ ull sh_epoch, sh_round;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const Reducer<DT> red = make_reducer<DT>(a);
    switch (red_kind(a.devop)) {
      case RED_SUM: reduce_rounds<DT, RED_SUM, REG>(c, red, g, &sh_round); break;
      case RED_PROD: reduce_rounds<DT, RED_PROD, REG>(c, red, g, &sh_round); break;
      case RED_MAX: reduce_rounds<DT, RED_MAX, REG>(c, red, g, &sh_round); break;
      default: reduce_rounds<DT, RED_MIN, REG>(c, red, g, &sh_round); break;
    }
  }
  end(c);
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) staged_reduce_kernel(const __grid_constant__ snapccl_kargs a) {
  reduce_kernel_body<DT, false>(a, nullptr);
}

// The two-shot all-reduce once registrations exist: the descriptor exchange, then in
// place or staged. A kernel of its own so that the in-place loop's registers never weigh
// on the staged kernel that every other call runs (together they spilled).
template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    twoshot_reg_kernel(const __grid_constant__ snapccl_kargs a, const __grid_constant__ snapccl_reg_args g) {
  reduce_kernel_body<DT, true>(a, &g);
}

// All-gather moves bytes: count is sendcount * element size.
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM) allgather_kernel(const __grid_constant__ snapccl_kargs a) {
  __shared__ int bail;
  __shared__ ull sh_epoch, sh_round;
  Ctx c;
  if (begin(c, a, &bail, &sh_epoch)) {
    const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
    const ull n = a.count, C = a.chunk_elems;
    const ull R = ceil_div(n, (ull)B * C);
    const char* send = static_cast<const char*>(a.send);
    char* recv = static_cast<char*>(a.recv);
    const bool in_place = send == recv + (ull)me * n;
    const ull c0 = load_round(a, &sh_round);
    bool ok = true;
    for (ull k = 0; k < R && ok; k++) {
      const ull round = c0 + k + 1;
      const int slot = (int)(round & 1);
      const ull o = (k * B + b) * C;
      const ull len = clamp_len(n, o, C);
      const char* src = send + o;
      char* own = recv + (ull)me * n + o;
      move_piece(
          len, [&](ull p, int nb) { return ld_n(src + p * SNAPCCL_PACK, nb); },
          [&](ull p, Pack v, int nb) {
            for (int d = 1; d < N; d++)
              st_staging(chunk(a.ws[(me + d) % N], a.lay, a.lay.ag_off, slot, me, b) + p * SNAPCCL_PACK, v);
            if (!in_place) st_n(own + p * SNAPCCL_PACK, v, nb);
          });
      signal_flags(c, FLAG_AG, round);
      if (!(ok = wait_flags(c, FLAG_AG, round))) break;
      for (int d = 1; d < N; d++) {
        const int j = (me + d) % N;
        const char* stg = chunk(a.ws[me], a.lay, a.lay.ag_off, slot, j, b);
        char* dst = recv + (ull)j * n + o;
        move_piece(
            len, [&](ull p, int) { return ld_staging(stg + p * SNAPCCL_PACK); },
            [&](ull p, Pack v, int nb) { st_n(dst + p * SNAPCCL_PACK, v, nb); });
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

extern "C" cudaError_t snapccl_load_staged_kernels(int* blocks_per_sm) {
  static const void* const fns[] = {SNAP_FOR_EACH_DTYPE(SNAP_KERNEL_OF, snap::staged_reduce_kernel)
                                        SNAP_FOR_EACH_DTYPE(SNAP_KERNEL_OF, snap::twoshot_reg_kernel)(const void*)
                                            snap::allgather_kernel};
  int fit = 1 << 30;
  const cudaError_t e = snap::load_all_and_fit(fns, sizeof fns / sizeof fns[0], SNAPCCL_THREADS, 0, fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
}

extern "C" cudaError_t snapccl_launch_twoshot_reg(const struct snapccl_kargs* a, const void* reg, int blocks,
                                                  cudaStream_t stream) {
  const snapccl_reg_args& g = *static_cast<const snapccl_reg_args*>(reg);
  if (!g.exchange) return snapccl_launch_staged(a, blocks, stream);
  SNAP_DTYPE_SWITCH(a->dtype, snap::twoshot_reg_kernel, <<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a, g))
  return cudaGetLastError();
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
