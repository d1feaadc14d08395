// Loading every kernel at init, and the block cap's measure of what fits on an SM.
//
// Ranks sharing a GPU in one process spin on each other's kernels. Under CUDA's default
// lazy module loading, a rank's first launch of a kernel may load it and wait for the
// context, hence for another rank's spinning kernel: a deadlock until the timeout (seen
// on an H100; NCCL preloads its kernels for the same reason). So every kernel file's
// loader runs here, at init, before any kernel of ours can spin.
#include <cuda_runtime.h>

#include "kernels/ce.h"
#include "kernels/launch.h"

extern "C" int snapccl_kernels_runnable(int* blocks_per_sm) {
  int oneshot = 0, staged = 0;
  if (snapccl_load_oneshot_kernels(&oneshot) != cudaSuccess || snapccl_load_staged_kernels(&staged) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  /* The optional features' kernels load now too, for the same reason; if one cannot
   * load, only that feature fails (at its first use, with the CUDA error), not the
   * collectives every communicator needs. The fused kernels are not sized by the block
   * cap (they count their own fit), hence not in the minimum. */
  int lowprec = 0, fused = 0, ce_sync = 0, ce_reduce = 0;
  if (snapccl_load_lowprec_kernels(&lowprec) != cudaSuccess) (void)cudaGetLastError();
  if (snapccl_load_fused_kernels(&fused) != cudaSuccess) (void)cudaGetLastError();
  /* The copy-engine algorithms' kernels: the sync kernel is one warp and the reduce never
   * waits, so neither is sized by the block cap. */
  if (snapccl_load_ce_sync_kernel(&ce_sync) != cudaSuccess) (void)cudaGetLastError();
  if (snapccl_load_ce_reduce_kernels(&ce_reduce) != cudaSuccess) (void)cudaGetLastError();
  /* Every kernel sized by the block cap counts: the fattest one bounds what fits (launch
   * bounds promise at least two; the copy-engine kernels are not, see above). The staged and low-precision kernels (up to 128
   * registers) fit 2 on an H100/H200; counting only the thinner one-shot ones let ranks
   * sharing a GPU hold three quarters of it instead of half. */
  int fit = oneshot < staged ? oneshot : staged;
  if (lowprec > 0 && lowprec < fit) fit = lowprec; /* 0: the optional feature did not load */
  *blocks_per_sm = fit;
  return 1;
}
