// Device primitives shared by every kernel: packed loads and stores at any alignment,
// flags with system-scope release/acquire, bounded waits, and the per-call epoch.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "kernels/kargs.h"

namespace snap {

// ---------------------------------------------------------------- packs

// A 16-byte pack as two 8-byte units: Lamport readiness is decided per 8-byte unit,
// which a v2.u64 access moves atomically.
struct Pack {
  unsigned long long lo, hi;
};

// User buffers may start at any byte; staging never does. Alignment is tested per
// access (warp-uniform in practice, so the branch costs almost nothing).
__device__ __forceinline__ Pack ld_any(const char* p) {
  Pack v;
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if ((a & 15) == 0) {
    ulonglong2 x = *reinterpret_cast<const ulonglong2*>(p);
    v.lo = x.x;
    v.hi = x.y;
  } else if ((a & 7) == 0) {
    v.lo = reinterpret_cast<const unsigned long long*>(p)[0];
    v.hi = reinterpret_cast<const unsigned long long*>(p)[1];
  } else if ((a & 3) == 0) {
    const unsigned* q = reinterpret_cast<const unsigned*>(p);
    v.lo = q[0] | (unsigned long long)q[1] << 32;
    v.hi = q[2] | (unsigned long long)q[3] << 32;
  } else {
    unsigned char b[16];
#pragma unroll
    for (int i = 0; i < 16; i++) b[i] = p[i];
    memcpy(&v, b, 16);
  }
  return v;
}

__device__ __forceinline__ void st_any(char* p, Pack v) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if ((a & 15) == 0) {
    *reinterpret_cast<ulonglong2*>(p) = make_ulonglong2(v.lo, v.hi);
  } else if ((a & 7) == 0) {
    reinterpret_cast<unsigned long long*>(p)[0] = v.lo;
    reinterpret_cast<unsigned long long*>(p)[1] = v.hi;
  } else if ((a & 3) == 0) {
    unsigned* q = reinterpret_cast<unsigned*>(p);
    q[0] = (unsigned)v.lo;
    q[1] = (unsigned)(v.lo >> 32);
    q[2] = (unsigned)v.hi;
    q[3] = (unsigned)(v.hi >> 32);
  } else {
    unsigned char b[16];
    memcpy(b, &v, 16);
#pragma unroll
    for (int i = 0; i < 16; i++) p[i] = b[i];
  }
}

// The first n (< 16) bytes of a pack; the rest reads as zero. Used for the tail. Built
// in registers byte by byte (no local array), so no access strays past byte n - 1.
__device__ __forceinline__ Pack ld_part(const char* p, int n) {
  const unsigned char* q = reinterpret_cast<const unsigned char*>(p);
  Pack v{0, 0};
  for (int i = 0; i < n && i < 8; i++) v.lo |= (unsigned long long)q[i] << (8 * i);
  for (int i = 8; i < n; i++) v.hi |= (unsigned long long)q[i] << (8 * (i - 8));
  return v;
}

__device__ __forceinline__ void st_part(char* p, Pack v, int n) {
  unsigned char* q = reinterpret_cast<unsigned char*>(p);
  for (int i = 0; i < n && i < 8; i++) q[i] = (unsigned char)(v.lo >> (8 * i));
  for (int i = 8; i < n; i++) q[i] = (unsigned char)(v.hi >> (8 * (i - 8)));
}

// Loads/stores of nbytes (<= 16) at p: the whole pack when it fits, else the tail.
__device__ __forceinline__ Pack ld_n(const char* p, int nbytes) {
  return nbytes == 16 ? ld_any(p) : ld_part(p, nbytes);
}
__device__ __forceinline__ void st_n(char* p, Pack v, int nbytes) {
  if (nbytes == 16) st_any(p, v);
  else st_part(p, v, nbytes);
}

// Staging written by other GPUs (or other ranks' kernels) lands in our L2; .cg skips the
// non-coherent L1 so a line read two rounds ago is never served stale.
__device__ __forceinline__ Pack ld_staging(const char* p) {
  ulonglong2 x = __ldcg(reinterpret_cast<const ulonglong2*>(p));
  return Pack{x.x, x.y};
}
__device__ __forceinline__ void st_staging(char* p, Pack v) {
  __stcg(reinterpret_cast<ulonglong2*>(p), make_ulonglong2(v.lo, v.hi));
}

// Lamport buffers: volatile so every poll goes to memory; v2.u64 so each 8-byte unit
// arrives whole (readiness is judged per unit).
__device__ __forceinline__ Pack ld_volatile(const char* p) {
  Pack v;
  asm volatile("ld.volatile.global.v2.u64 {%0, %1}, [%2];" : "=l"(v.lo), "=l"(v.hi) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_volatile(char* p, Pack v) {
  asm volatile("st.volatile.global.v2.u64 [%0], {%1, %2};" ::"l"(p), "l"(v.lo), "l"(v.hi) : "memory");
}

// ---------------------------------------------------------------- flags

__device__ __forceinline__ unsigned long long ld_acquire_sys(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.sys.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_sys(unsigned long long* p, unsigned long long v) {
  asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}

__device__ __forceinline__ unsigned long long globaltimer() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ unsigned long long* flag_ptr(char* ws, const snapccl_ws_layout& lay,
                                                        int kind, int src, int block) {
  return reinterpret_cast<unsigned long long*>(ws + lay.flags_off) +
         ((size_t)kind * SNAPCCL_MAX_RANKS + src) * SNAPCCL_MAX_BLOCKS + block;
}

// ---------------------------------------------------------------- bounded waits

// Every spin checks, every POLL_CHECK polls, the deadline (global timer) and the abort
// word the host may set; on either it records the reason once and the block leaves.
constexpr int POLL_CHECK = 256;

struct Ctx {
  const snapccl_kargs* a;
  unsigned long long deadline;
  unsigned long long epoch; // this call's epoch: previous value + 1
  int* bail;                // shared: set when this block must stop
};

__device__ __forceinline__ void record_error(const Ctx& c, int code, int peer, int where) {
  snapccl_status* s = c.a->status;
  if (atomicCAS(const_cast<int*>(&s->error), DEVERR_NONE, code) == DEVERR_NONE) {
    s->error_peer = peer;
    s->error_where = where;
    __threadfence_system();
  }
  *c.bail = 1;
}

// Returns false when the wait must end (timeout, abort, or another block's failure).
__device__ __forceinline__ bool keep_waiting(const Ctx& c, int& spins, int peer, int where) {
  if (++spins < POLL_CHECK) return true;
  spins = 0;
  if (*(volatile int*)c.bail) return false;
  if (c.a->status->abort) {
    record_error(c, DEVERR_ABORTED, peer, where);
    return false;
  }
  if (c.a->status->error != DEVERR_NONE) { // another block already failed
    *c.bail = 1;
    return false;
  }
  if (globaltimer() > c.deadline) {
    record_error(c, DEVERR_TIMEOUT, peer, where);
    return false;
  }
  return true;
}

// Threads 0..nranks-1 (all but `rank`) each wait for one peer's flag to reach `value`,
// then the block meets. Returns false if the block must leave.
__device__ __forceinline__ bool wait_flags(const Ctx& c, int kind, unsigned long long value) {
  const snapccl_kargs& a = *c.a;
  int t = threadIdx.x;
  if (t < a.nranks && t != a.rank) {
    const unsigned long long* f = flag_ptr(a.ws[a.rank], a.lay, kind, t, blockIdx.x);
    int spins = 0;
    while (ld_acquire_sys(f) < value)
      if (!keep_waiting(c, spins, t, kind)) break;
  }
  __syncthreads();
  return !*(volatile int*)c.bail;
}

// After the block's stores to peers: each peer's flag for this block gets `value`.
// The barrier orders every thread's stores before the releasing store, and a release is
// cumulative: its fence (st.release.sys is fence.acq_rel.sys + store) covers what the
// barrier ordered before it. A fence.sc.sys (__threadfence_system) in front added nothing
// to that argument and about a microsecond per signal on ranks sharing an H100.
__device__ __forceinline__ void signal_flags(const Ctx& c, int kind, unsigned long long value) {
  const snapccl_kargs& a = *c.a;
  __syncthreads();
  int t = threadIdx.x;
  if (t < a.nranks && t != a.rank) st_release_sys(flag_ptr(a.ws[t], a.lay, kind, a.rank, blockIdx.x), value);
}

__device__ __forceinline__ snapccl_ws_header* header(char* ws) {
  return reinterpret_cast<snapccl_ws_header*>(ws);
}

// Start of every kernel: read the epoch (the previous call's) and set the deadline.
// The host-mapped abort word is not read here (a PCIe round trip on every call's
// critical path); waits read it every POLL_CHECK polls.
__device__ __forceinline__ bool begin(Ctx& c, const snapccl_kargs& a, int* bail_smem,
                                      unsigned long long* shared_epoch) {
  c.a = &a;
  c.bail = bail_smem;
  if (threadIdx.x == 0) {
    *bail_smem = 0;
    *shared_epoch = *(volatile unsigned long long*)&header(a.ws[a.rank])->epoch + 1;
  }
  __syncthreads();
  c.epoch = *shared_epoch;
  c.deadline = globaltimer() + a.timeout_ns;
  return !*(volatile int*)bail_smem;
}

// End of every kernel (also after a failure): the last block to finish publishes the
// new epoch. Every block read the old one in begin(), before any block got here.
__device__ __forceinline__ void end(const Ctx& c) {
  __syncthreads();
  if (threadIdx.x == 0) {
    snapccl_ws_header* h = header(c.a->ws[c.a->rank]);
    __threadfence();
    unsigned prev = atomicAdd(&h->done_blocks, 1u);
    if (prev == gridDim.x - 1) {
      h->done_blocks = 0;
      *(volatile unsigned long long*)&h->epoch = c.epoch;
      __threadfence();
    }
  }
}

} // namespace snap
