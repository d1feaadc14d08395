// NVLink multicast collectives (NVLS) and their unicast twins.
//
// The multicast buffer holds one replica per rank, each laid out like the workspace
// (kargs.h): flags, one-shot, Lamport and staging regions at the same offsets. The
// multimem instructions on the multicast address reach every replica at once:
// multimem.st stores into all of them, multimem.ld_reduce loads all of them and returns
// the sum, multimem.red updates all of them.
//
// The unicast twin is this very code with those three operations replaced by loops over
// the peers' workspaces (kargs.ws[r] plays replica r). The only switch is the template
// bool MC, i.e. the Mem<MC> policy below: the twin runs the same protocol with the same
// flags (device_common.cuh's signal/wait), epochs, round counters and slot rules, so
// running it on any GPU tests everything but the multimem instructions themselves.
// Why the protocols are correct: docs/NVLS.md (built on docs/ARCHITECTURE.md's "Staging
// slots", "One-shot with flags" and "Lamport buffers").
#include "kernels/device_common.cuh"
#include "kernels/kernel_load.cuh"
#include "kernels/lamport.cuh"
#include "kernels/launch.h"
#include "kernels/multimem.h"
#include "kernels/reduce_ops.cuh"
#include "kernels/staging.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define SNAP_HAVE_MULTIMEM 1
#endif

namespace snap {
namespace {

struct MmParams {
  snapccl_kargs k;
  char* mc;
  char* uc;
  int kind;
};

// ---------------------------------------------------------------- multimem (sm_90+)

// Two addresses (the unicast replica and the multicast mapping) reach the same bytes;
// accesses through different aliases are ordered only across this fence.
__device__ __forceinline__ void fence_alias() { asm volatile("fence.proxy.alias;" ::: "memory"); }

#ifdef SNAP_HAVE_MULTIMEM
#define SNAP_MC_LD_REDUCE(INSN, p, v)                                                     \
  do {                                                                                    \
    unsigned x0, x1, x2, x3;                                                              \
    asm volatile(INSN " {%0, %1, %2, %3}, [%4];"                                          \
                 : "=r"(x0), "=r"(x1), "=r"(x2), "=r"(x3)                                 \
                 : "l"(p)                                                                 \
                 : "memory");                                                             \
    v.lo = x0 | (unsigned long long)x1 << 32;                                             \
    v.hi = x2 | (unsigned long long)x3 << 32;                                             \
  } while (0)
#else
#define SNAP_MC_LD_REDUCE(INSN, p, v) \
  do {                                \
    (void)(p);                        \
    __trap();                         \
    v = Pack{0, 0};                   \
  } while (0)
#endif

// The sum over every replica: fp32 as is; fp16 and bf16 accumulated in fp32 (.acc::f32)
// and rounded once, as the twin's Reducer does.
template <int DT> __device__ __forceinline__ Pack mc_ld_reduce(const char* p);
template <> __device__ __forceinline__ Pack mc_ld_reduce<ncclFloat32>(const char* p) {
  Pack v;
  SNAP_MC_LD_REDUCE("multimem.ld_reduce.relaxed.sys.global.add.v4.f32", p, v);
  return v;
}
template <> __device__ __forceinline__ Pack mc_ld_reduce<ncclFloat16>(const char* p) {
  Pack v;
  SNAP_MC_LD_REDUCE("multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.f16x2", p, v);
  return v;
}
template <> __device__ __forceinline__ Pack mc_ld_reduce<ncclBfloat16>(const char* p) {
  Pack v;
  SNAP_MC_LD_REDUCE("multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.bf16x2", p, v);
  return v;
}

// 16 bytes into every replica. A store moves bits unchanged whatever its type, so the
// dtype-blind all-gather uses it too.
__device__ __forceinline__ void mc_st(char* p, Pack v) {
#ifdef SNAP_HAVE_MULTIMEM
  asm volatile("multimem.st.relaxed.sys.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p),
               "r"((unsigned)v.lo), "r"((unsigned)(v.lo >> 32)), "r"((unsigned)v.hi),
               "r"((unsigned)(v.hi >> 32))
               : "memory");
#else
  (void)p, (void)v;
  __trap();
#endif
}

// A flag in every replica. Flags only grow and each (kind, source, block) slot has one
// writer, so max is a store that can never move a flag backwards.
__device__ __forceinline__ void mc_flag(unsigned long long* p, unsigned long long v) {
#ifdef SNAP_HAVE_MULTIMEM
  asm volatile("multimem.red.release.sys.global.max.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
#else
  (void)p, (void)v;
  __trap();
#endif
}

// ---------------------------------------------------------------- the one switch

template <bool MC> struct Mem;

// Unicast twin: replica r is rank r's workspace.
template <> struct Mem<false> {
  const snapccl_kargs& a;
  __device__ explicit Mem(const MmParams& p) : a(p.k) {}
  __device__ char* mine() const { return a.ws[a.rank]; }
  // The reducing load: every replica, summed in rank order (identical on every rank).
  template <int DT> __device__ Pack ld_reduce(const Reducer<DT>& red, unsigned long long off) const {
    typename Type<DT>::Acc acc[Reducer<DT>::EPP];
    red.template first<RED_SUM>(acc, ld_staging(a.ws[0] + off));
    for (int r = 1; r < a.nranks; r++) red.template add<RED_SUM>(acc, ld_staging(a.ws[r] + off));
    return red.finish(acc);
  }
  // The multicast store: every replica, this rank's own included.
  __device__ void st(unsigned long long off, Pack v) const {
    for (int d = 0; d < a.nranks; d++) st_staging(a.ws[(a.rank + d) % a.nranks] + off, v);
  }
  __device__ void st_lamport(unsigned long long off, Pack v) const {
    for (int d = 0; d < a.nranks; d++) st_volatile(a.ws[(a.rank + d) % a.nranks] + off, v);
  }
  // The multicast flag: one release store per peer (device_common.cuh).
  __device__ void signal(const Ctx& c, int kind, unsigned long long v) const { signal_flags(c, kind, v); }
  __device__ bool wait(const Ctx& c, int kind, unsigned long long v) const { return wait_flags(c, kind, v); }
};

// Multicast: the same operations as single instructions on the multicast address.
template <> struct Mem<true> {
  const snapccl_kargs& a;
  char* mc;
  char* uc;
  __device__ explicit Mem(const MmParams& p) : a(p.k), mc(p.mc), uc(p.uc) {}
  __device__ char* mine() const { return uc; }
  template <int DT> __device__ Pack ld_reduce(const Reducer<DT>&, unsigned long long off) const {
    return mc_ld_reduce<DT>(mc + off);
  }
  __device__ void st(unsigned long long off, Pack v) const { mc_st(mc + off, v); }
  __device__ void st_lamport(unsigned long long off, Pack v) const { mc_st(mc + off, v); }
  // As signal_flags: every thread's stores (unicast into its replica, or multicast)
  // before one release of the flag, here one multimem.red reaching every replica.
  __device__ void signal(const Ctx&, int kind, unsigned long long v) const {
    fence_alias();
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence_system();
      mc_flag(flag_ptr(mc, a.lay, kind, a.rank, blockIdx.x), v);
    }
  }
  // As wait_flags, on this rank's replica of the flags (unicast).
  __device__ bool wait(const Ctx& c, int kind, unsigned long long v) const {
    const int t = threadIdx.x;
    if (t < a.nranks && t != a.rank) {
      const unsigned long long* f = flag_ptr(uc, a.lay, kind, t, blockIdx.x);
      int spins = 0;
      while (ld_acquire_sys(f) < v)
        if (!keep_waiting(c, spins, t, kind)) break;
    }
    __syncthreads();
    fence_alias();
    return !*(volatile int*)c.bail;
  }
};

// ---------------------------------------------------------------- one-shot

// Copy my input into my replica of the parity-(epoch % 2) one-shot region, barrier, then
// every rank reduces the whole range over all replicas.
template <int DT, bool MC> __device__ void oneshot(const Ctx& c, const Reducer<DT>& red, const Mem<MC>& m) {
  constexpr int ES = sizeof(typename Type<DT>::Storage), EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const unsigned long long n = a.count, packs = (n + EPP - 1) / EPP;
  const unsigned long long area =
      a.lay.oneshot_off + (c.epoch & 1) * (unsigned long long)a.nranks * a.lay.oneshot_bytes;
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  char* mine = m.mine() + area;
  unsigned long long p0, p1;
  block_range(packs, p0, p1);
  auto nbytes = [&](unsigned long long q) {
    return (int)((n - q * EPP < (unsigned long long)EPP ? n - q * EPP : EPP) * ES);
  };
  for (unsigned long long q = p0 + threadIdx.x; q < p1; q += blockDim.x)
    st_staging(mine + q * SNAPCCL_PACK, red.prescale(ld_n(send + q * SNAPCCL_PACK, nbytes(q))));
  m.signal(c, FLAG_ONESHOT, c.epoch);
  if (!m.wait(c, FLAG_ONESHOT, c.epoch)) return;
  for (unsigned long long q = p0 + threadIdx.x; q < p1; q += blockDim.x)
    st_n(recv + q * SNAPCCL_PACK, m.template ld_reduce<DT>(red, area + q * SNAPCCL_PACK), nbytes(q));
}

// ---------------------------------------------------------------- two-shot and reduce-scatter

// Rounds as in staged.cu (block b of every rank owns the same sub-ranges, slot = round %
// 2, flags carry the round). A round: copy my input for every slice into my replica's
// reduce-scatter chunks, barrier; reduce my slice over all replicas. Two-shot then stores
// the result into every replica's all-gather chunk, barrier, and reads the others' slices
// from its own replica.
template <int DT, bool MC>
__device__ void staged(const Ctx& c, const Reducer<DT>& red, const Mem<MC>& m, unsigned long long* sh, bool ar) {
  constexpr int ES = sizeof(typename Type<DT>::Storage), EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
  const unsigned long long count = a.count;
  const unsigned long long sl = ar ? ceil_div(ceil_div(count, N), EPP) * EPP : count;
  const unsigned long long C = a.chunk_elems;
  const unsigned long long R = ceil_div(sl, (unsigned long long)B * C);
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  char* mine = m.mine();
  auto slice_len = [&](int j) -> unsigned long long {
    return ar ? clamp_len(count, (unsigned long long)j * sl, sl) : count;
  };
  auto nbytes = [&](unsigned long long len, unsigned long long p) {
    return (int)((len - p * EPP < (unsigned long long)EPP ? len - p * EPP : EPP) * ES);
  };
  const unsigned long long c0 = load_round(a, sh);

  for (unsigned long long k = 0; k < R; k++) {
    const unsigned long long round = c0 + k + 1;
    const int slot = (int)(round & 1);
    const unsigned long long o = (k * B + b) * C;

    for (int j = 0; j < N; j++) {
      const unsigned long long len = clamp_len(slice_len(j), o, C);
      const char* src = send + ((unsigned long long)j * sl + o) * ES;
      char* dst = mine + chunk_off(a.lay, a.lay.rs_off, slot, j, b);
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x)
        st_staging(dst + p * SNAPCCL_PACK, red.prescale(ld_n(src + p * SNAPCCL_PACK, nbytes(len, p))));
    }
    m.signal(c, FLAG_RS, round);
    if (!m.wait(c, FLAG_RS, round)) return;

    {
      const unsigned long long len = clamp_len(slice_len(me), o, C);
      char* out = recv + (ar ? (unsigned long long)me * sl + o : o) * ES;
      const unsigned long long from = chunk_off(a.lay, a.lay.rs_off, slot, me, b);
      const unsigned long long to = chunk_off(a.lay, a.lay.ag_off, slot, me, b);
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x) {
        const Pack r = m.template ld_reduce<DT>(red, from + p * SNAPCCL_PACK);
        st_n(out + p * SNAPCCL_PACK, r, nbytes(len, p));
        if (ar) m.st(to + p * SNAPCCL_PACK, r);
      }
    }
    if (!ar) continue;

    m.signal(c, FLAG_AG, round);
    if (!m.wait(c, FLAG_AG, round)) return;
    for (int d = 1; d < N; d++) {
      const int j = (me + d) % N;
      const unsigned long long len = clamp_len(slice_len(j), o, C);
      const char* src = mine + chunk_off(a.lay, a.lay.ag_off, slot, j, b);
      char* dst = recv + ((unsigned long long)j * sl + o) * ES;
      for (unsigned long long p = threadIdx.x; p * EPP < len; p += blockDim.x)
        st_n(dst + p * SNAPCCL_PACK, ld_staging(src + p * SNAPCCL_PACK), nbytes(len, p));
    }
  }
  __syncthreads(); // every thread is done with this call's slots before the counter moves
  store_round(a, c0 + R);
}

// ---------------------------------------------------------------- Lamport

// The cleared state of a slot: every 32-bit word 0x80000000 (-0.0 as fp32; a -0 in the
// high fp16/bf16 lane). Writers turn -0 into +0 lane by lane, so no word they write
// equals it; readiness is judged per 32-bit word, which holds whatever granularity the
// multicast store reaches the replicas with. The same bits as the Lamport kernel's cleared
// unit (kernels/lamport.cuh), whose canonicalisation it uses: the twin shares the
// workspace's Lamport region with the Lamport kernel.
constexpr unsigned SENT32 = 0x80000000u;
__device__ __forceinline__ bool word_ready(unsigned long long u) {
  return (unsigned)u != SENT32 && (unsigned)(u >> 32) != SENT32;
}

// Store my (canonical) input into slot [parity][me] of every replica; wait in my replica
// for every rank's slot, reduce in rank order, reset the slots I read.
template <int DT, bool MC> __device__ void lamport(const Ctx& c, const Reducer<DT>& red, const Mem<MC>& m) {
  constexpr int ES = sizeof(typename Type<DT>::Storage), EPP = SNAPCCL_PACK / ES;
  const snapccl_kargs& a = *c.a;
  const int me = a.rank, N = a.nranks;
  const unsigned long long n = a.count, packs = (n + EPP - 1) / EPP;
  const unsigned long long base =
      a.lay.lamport_off + (c.epoch & 1) * (unsigned long long)N * a.lay.oneshot_bytes;
  const char* send = static_cast<const char*>(a.send);
  char* recv = static_cast<char*>(a.recv);
  char* mine = m.mine();
  unsigned long long p0, p1;
  block_range(packs, p0, p1);
  auto nbytes = [&](unsigned long long q) {
    return (int)((n - q * EPP < (unsigned long long)EPP ? n - q * EPP : EPP) * ES);
  };
  auto slot = [&](int r) { return base + (unsigned long long)r * a.lay.oneshot_bytes; };
  for (unsigned long long q = p0 + threadIdx.x; q < p1; q += blockDim.x) {
    const Pack v = red.prescale(ld_n(send + q * SNAPCCL_PACK, nbytes(q)));
    m.st_lamport(slot(me) + q * SNAPCCL_PACK, Pack{canon_unit<ES>(v.lo), canon_unit<ES>(v.hi)});
  }
  const Pack cleared{SENT, SENT};
  for (unsigned long long q = p0 + threadIdx.x; q < p1; q += blockDim.x) {
    typename Type<DT>::Acc acc[EPP];
    for (int r = 0; r < N; r++) {
      const char* sp = mine + slot(r) + q * SNAPCCL_PACK;
      Pack v;
      int spins = 0;
      for (;;) {
        v = ld_volatile(sp);
        if (word_ready(v.lo) && word_ready(v.hi)) break;
        if (!keep_waiting(c, spins, r, 3)) return;
      }
      if (r == 0) red.template first<RED_SUM>(acc, v);
      else red.template add<RED_SUM>(acc, v);
    }
    st_n(recv + q * SNAPCCL_PACK, red.finish(acc), nbytes(q));
    // Read by this rank alone and written again two calls later at the earliest.
    for (int r = 0; r < N; r++) st_volatile(mine + slot(r) + q * SNAPCCL_PACK, cleared);
  }
}

// ---------------------------------------------------------------- kernels

template <int DT, bool MC>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    mm_reduce_kernel(const __grid_constant__ MmParams p) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch, sh_round;
  Ctx c;
  if (begin(c, p.k, &bail, &sh_epoch)) {
    const Reducer<DT> red = make_reducer<DT>(p.k);
    const Mem<MC> m(p);
    switch (p.kind) {
      case MM_ONESHOT: oneshot<DT, MC>(c, red, m); break;
      case MM_TWOSHOT: staged<DT, MC>(c, red, m, &sh_round, true); break;
      case MM_REDUCESCATTER: staged<DT, MC>(c, red, m, &sh_round, false); break;
      default: lamport<DT, MC>(c, red, m); break;
    }
  }
  end(c);
}

// All-gather moves bytes (count and chunk_elems are bytes): my input into my chunk of
// every replica, barrier, everyone else's chunks from my replica.
template <bool MC>
__global__ void __launch_bounds__(SNAPCCL_THREADS, SNAPCCL_MIN_BLOCKS_PER_SM)
    mm_allgather_kernel(const __grid_constant__ MmParams p) {
  __shared__ int bail;
  __shared__ unsigned long long sh_epoch, sh_round;
  Ctx c;
  if (begin(c, p.k, &bail, &sh_epoch)) {
    const snapccl_kargs& a = p.k;
    const Mem<MC> m(p);
    const int me = a.rank, N = a.nranks, b = blockIdx.x, B = gridDim.x;
    const unsigned long long n = a.count, C = a.chunk_elems;
    const unsigned long long R = ceil_div(n, (unsigned long long)B * C);
    const char* send = static_cast<const char*>(a.send);
    char* recv = static_cast<char*>(a.recv);
    const bool in_place = send == recv + (unsigned long long)me * n;
    const unsigned long long c0 = load_round(a, &sh_round);
    auto nbytes = [&](unsigned long long len, unsigned long long q) {
      return (int)(len - q * SNAPCCL_PACK < SNAPCCL_PACK ? len - q * SNAPCCL_PACK : SNAPCCL_PACK);
    };
    bool ok = true;
    for (unsigned long long k = 0; k < R && ok; k++) {
      const unsigned long long round = c0 + k + 1;
      const int slot = (int)(round & 1);
      const unsigned long long o = (k * B + b) * C;
      const unsigned long long len = clamp_len(n, o, C);
      const unsigned long long to = chunk_off(a.lay, a.lay.ag_off, slot, me, b);
      for (unsigned long long q = threadIdx.x; q * SNAPCCL_PACK < len; q += blockDim.x) {
        const int nb = nbytes(len, q);
        const Pack v = ld_n(send + o + q * SNAPCCL_PACK, nb);
        m.st(to + q * SNAPCCL_PACK, v);
        if (!in_place) st_n(recv + (unsigned long long)me * n + o + q * SNAPCCL_PACK, v, nb);
      }
      m.signal(c, FLAG_AG, round);
      if (!(ok = m.wait(c, FLAG_AG, round))) break;
      for (int d = 1; d < N; d++) {
        const int j = (me + d) % N;
        const char* src = m.mine() + chunk_off(a.lay, a.lay.ag_off, slot, j, b);
        char* dst = recv + (unsigned long long)j * n + o;
        for (unsigned long long q = threadIdx.x; q * SNAPCCL_PACK < len; q += blockDim.x)
          st_n(dst + q * SNAPCCL_PACK, ld_staging(src + q * SNAPCCL_PACK), nbytes(len, q));
      }
    }
    if (ok) {
      __syncthreads();
      store_round(a, c0 + R);
    }
  }
  end(c);
}

template <bool MC> cudaError_t launch(const MmParams& p, int blocks, cudaStream_t s) {
  if (p.kind == MM_ALLGATHER) {
    mm_allgather_kernel<MC><<<blocks, SNAPCCL_THREADS, 0, s>>>(p);
    return cudaGetLastError();
  }
  switch (p.k.dtype) {
    case ncclFloat32: mm_reduce_kernel<ncclFloat32, MC><<<blocks, SNAPCCL_THREADS, 0, s>>>(p); break;
    case ncclFloat16: mm_reduce_kernel<ncclFloat16, MC><<<blocks, SNAPCCL_THREADS, 0, s>>>(p); break;
    case ncclBfloat16: mm_reduce_kernel<ncclBfloat16, MC><<<blocks, SNAPCCL_THREADS, 0, s>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <bool MC> cudaError_t load(int& fit) {
  static const void* const fns[] = {(const void*)mm_allgather_kernel<MC>, (const void*)mm_reduce_kernel<ncclFloat32, MC>,
                                    (const void*)mm_reduce_kernel<ncclFloat16, MC>,
                                    (const void*)mm_reduce_kernel<ncclBfloat16, MC>};
  return load_all_and_fit(fns, sizeof fns / sizeof fns[0], SNAPCCL_THREADS, 0, fit);
}

} // namespace
} // namespace snap

extern "C" cudaError_t snapccl_launch_multimem(const struct snapccl_kargs* a, const struct snapccl_mm_args* m,
                                               int blocks, cudaStream_t stream) {
  snap::MmParams p;
  p.k = *a;
  p.mc = m->mc;
  p.uc = m->uc;
  p.kind = m->kind;
  return m->mc ? snap::launch<true>(p, blocks, stream) : snap::launch<false>(p, blocks, stream);
}

extern "C" cudaError_t snapccl_load_multimem_kernels(int* blocks_per_sm) {
  int fit = 1 << 30;
  cudaError_t e = snap::load<false>(fit);
  if (e == cudaSuccess) e = snap::load<true>(fit);
  *blocks_per_sm = e == cudaSuccess ? fit : 0;
  return e;
}
