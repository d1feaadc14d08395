// The copy-engine algorithms' only wait: one warp posts this step's flag to every peer,
// then polls its own flags until every peer posted the same step. The copies before it
// on the stream have completed when it starts, and the copies after it start only when
// it ends, so one launch orders "my copies of step s are done" before "the copies that
// depend on every rank's step s" on each rank. Why the steps and slots the host code
// chooses keep every buffer safe is argued in docs/ARCHITECTURE.md ("Copy-engine
// algorithms").
//
// Bounded and abortable like every wait of ours: keep_waiting reads the deadline (kernel
// start + SNAPCCL_TIMEOUT_MS), the host-mapped abort word and the status block's error.
// A wait that gives up records the error (the host reports ncclRemoteError) and the
// kernel ends; the copies behind it still run (into workspaces and the caller's buffers
// only: results are garbage, nothing hangs), and every later sync of the call, seeing the
// recorded error, leaves after its first POLL_CHECK polls. The last sync publishes the
// epoch even then, as every kernel's end() does, so streams drain.
#include "kernels/ce.h"
#include "kernels/device_common.cuh"
#include "kernels/kernel_load.cuh"

namespace snap {
namespace {

constexpr int CE_SYNC_THREADS = 32; // one warp: a thread per peer (at most 16)

// The flag `src` raises in the workspace ws (its owner's copy of every source's flag).
__device__ __forceinline__ unsigned long long* ce_flag(char* ws, const snapccl_ws_layout& lay, int src) {
  return reinterpret_cast<unsigned long long*>(ws + lay.ce_flags_off) + src;
}

__global__ void __launch_bounds__(CE_SYNC_THREADS, 1)
    ce_sync_kernel(const __grid_constant__ snapccl_kargs a, unsigned long long step, int last) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch;
  Ctx c;
  begin(c, a, &bail, &sh_epoch); // the epoch of this call: every sync of it reads the same one
  const unsigned long long v = c.epoch << SNAPCCL_CE_STEP_BITS | step;
  const int t = threadIdx.x;
  if (t < a.nranks && t != a.rank) {
    // A release at system scope: what this rank's earlier work on the stream wrote (the
    // copies and kernels that completed before this kernel started) is visible to the
    // peer once it sees the value.
    st_release_sys(ce_flag(a.ws[t], a.lay, a.rank), v);
    const unsigned long long* f = ce_flag(a.ws[a.rank], a.lay, t);
    int spins = 0;
    while (ld_acquire_sys(f) < v)
      if (!keep_waiting(c, spins, t, SNAPCCL_WHERE_CE)) break;
  }
  if (last) end(c); // one block: it publishes the epoch
}

} // namespace
} // namespace snap

extern "C" cudaError_t snapccl_load_ce_sync_kernel(int* blocks_per_sm) {
  int fit = 1 << 30;
  const cudaError_t e = snap::load_and_fit((const void*)snap::ce_sync_kernel, snap::CE_SYNC_THREADS, 0, fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
}

extern "C" cudaError_t snapccl_launch_ce_sync(const struct snapccl_kargs* a, unsigned long long step, int last,
                                              cudaStream_t stream) {
  snap::ce_sync_kernel<<<1, snap::CE_SYNC_THREADS, 0, stream>>>(*a, step, last);
  return cudaGetLastError();
}
