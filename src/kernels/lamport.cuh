// The Lamport buffers' cleared state and the senders' canonicalisation, shared by every
// kernel that uses those buffers (the Lamport all-reduce, the fused one-shot): they share
// the invariant "all Lamport slots are clear between calls" (docs/ARCHITECTURE.md,
// "Lamport buffers").
#pragma once

#include "kernels/device_common.cuh"

namespace snap {

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

// A unit still holds the cleared state: its data has not arrived.
__device__ __forceinline__ bool lamport_pending(const Pack& v) { return v.lo == SENT || v.hi == SENT; }

} // namespace snap
