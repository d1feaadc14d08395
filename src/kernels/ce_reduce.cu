// The local reduce of the copy-engine reduce-scatter and all-reduce: the peers' pieces
// arrived in this rank's staging by copy engine (src/algos/ce_*.c), so this kernel only
// reads N sources from local memory, reduces them in rank order (every rank reduces in the
// same order, so all-reduce results are bitwise identical everywhere) and writes the result
// once or twice. It never waits for anyone: it needs no residency promise, no deadline.
//
// Every source is prescaled here, not by its sender: the copy engine moved it unchanged.
// That is right for the scalars every rank shares (ncclAvg's 1/nranks); a PreMulSum with
// each rank's own scalar is declined by the algorithms (src/algos/ce_common.c).
#include "kernels/ce.h"
#include "kernels/kernel_load.cuh"
#include "kernels/reduce_ops.cuh"
#include "kernels/staging.cuh"

namespace snap {
namespace {

template <int DT, int RK>
__device__ void ce_reduce_body(const snapccl_kargs& a, const snapccl_ce_reduce& r, const Reducer<DT>& red) {
  using S = typename Type<DT>::Storage;
  using A = typename Type<DT>::Acc;
  constexpr int ES = sizeof(S), EPP = SNAPCCL_PACK / ES, KR = reduce_batch<DT>(), T = SNAPCCL_THREADS;
  const int me = a.rank, N = a.nranks;
  // This block's contiguous share of the packs: offsets stay multiples of 16, so every
  // source keeps its own alignment and staging stays aligned.
  const ull total = r.elems * ES;
  ull p0, p1;
  block_range(ceil_div(total, SNAPCCL_PACK), p0, p1);
  const ull off = p0 * SNAPCCL_PACK;
  const ull end = p1 * SNAPCCL_PACK < total ? p1 * SNAPCCL_PACK : total;
  if (end <= off) return;
  char* out = r.out + off;
  char* copy = r.copy ? r.copy + off : nullptr;
  for_packs<KR>(end - off, [&](ull p, auto batch, int nb) {
    constexpr int K = decltype(batch)::n;
    A acc[K][EPP];
    for (int s = 0; s < N; s++) {
      const char* src = r.src[s] + off;
      Pack v[K];
      if (s == me) {
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_n(src + (p + i * T) * SNAPCCL_PACK, nb);
      } else {
        // Whole packs even for a partial tail: staging is readable to the next 16 bytes,
        // and the lanes past the end are never stored.
#pragma unroll
        for (int i = 0; i < K; i++) v[i] = ld_staging(src + (p + i * T) * SNAPCCL_PACK);
      }
#pragma unroll
      for (int i = 0; i < K; i++) {
        v[i] = red.prescale(v[i]);
        if (s == 0) red.template first<RK>(acc[i], v[i]);
        else red.template add<RK>(acc[i], v[i]);
      }
    }
#pragma unroll
    for (int i = 0; i < K; i++) {
      const Pack res = red.finish(acc[i]);
      st_n(out + (p + i * T) * SNAPCCL_PACK, res, nb);
      if (copy) st_staging(copy + (p + i * T) * SNAPCCL_PACK, res);
    }
  });
}

template <int DT>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    ce_reduce_kernel(const __grid_constant__ snapccl_kargs a, const __grid_constant__ snapccl_ce_reduce r) {
  const Reducer<DT> red = make_reducer<DT>(a);
  switch (red_kind(a.devop)) {
    case RED_SUM: ce_reduce_body<DT, RED_SUM>(a, r, red); break;
    case RED_PROD: ce_reduce_body<DT, RED_PROD>(a, r, red); break;
    case RED_MAX: ce_reduce_body<DT, RED_MAX>(a, r, red); break;
    default: ce_reduce_body<DT, RED_MIN>(a, r, red); break;
  }
}

} // namespace
} // namespace snap

extern "C" cudaError_t snapccl_load_ce_reduce_kernels(int* blocks_per_sm) {
  static const void* const fns[] = {SNAP_FOR_EACH_DTYPE(SNAP_KERNEL_OF, snap::ce_reduce_kernel)};
  int fit = 1 << 30;
  const cudaError_t e = snap::load_all_and_fit(fns, sizeof fns / sizeof fns[0], SNAPCCL_THREADS, 0, fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
}

extern "C" cudaError_t snapccl_launch_ce_reduce(const struct snapccl_kargs* a, const struct snapccl_ce_reduce* r,
                                                int blocks, cudaStream_t stream) {
  SNAP_DTYPE_SWITCH(a->dtype, snap::ce_reduce_kernel, <<<blocks, SNAPCCL_THREADS, 0, stream>>>(*a, *r))
  return cudaGetLastError();
}
