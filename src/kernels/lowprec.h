/* The low-precision all-reduce as C sees it (docs/LOWPREC.md): formats, the staging
 * chunk layout host and kernel agree on, the kernel's entry points and the CPU reference
 * (the same arithmetic as the kernels, from kernels/lowprec_math.cuh). Plain C, included
 * by both sides; the host's setting and grid are algos/allreduce_lowprec.h's. */
#ifndef SNAPCCL_KERNELS_LOWPREC_H
#define SNAPCCL_KERNELS_LOWPREC_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kargs.h"

#ifdef __CUDACC__
#define SNAPCCL_LP_INLINE static inline __host__ __device__
#else
#define SNAPCCL_LP_INLINE static inline
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Formats; the same numbers as SNAPCCL_LOWPREC_* in include/snapccl.h. */
enum { SNAPCCL_LP_OFF = 0, SNAPCCL_LP_FP8 = 1, SNAPCCL_LP_INT8 = 2, SNAPCCL_LP_INT4 = 3 };
#define SNAPCCL_LP_GROUP_MIN 32
#define SNAPCCL_LP_GROUP_MAX 1024
#define SNAPCCL_LP_GROUP_DEFAULT 256

/* The kernel arguments reuse two fields of struct snapccl_kargs (no layout change):
 *   mode        = wide << 24 | format << 16 | group size
 *   chunk_elems = groups per (block, round) x group size
 * dtype, devop (SUM, or PREMULSUM by 1/nranks = avg), count as for the other kernels.
 * wide: blocks of SNAPCCL_LP_WIDE_THREADS, one per SM, instead of SNAPCCL_THREADS (two per
 * SM at this kernel's registers), for when every block may have an SM to itself. */
#define SNAPCCL_LP_WIDE_THREADS 512
#define SNAPCCL_LP_MODE(format, group, wide) \
  ((int)(((unsigned)!!(wide) << 24) | ((unsigned)(format) << 16) | (unsigned)(group)))
#define SNAPCCL_LP_MODE_WIDE(mode) ((int)(((unsigned)(mode) >> 24) & 1u))
#define SNAPCCL_LP_MODE_FORMAT(mode) ((int)(((unsigned)(mode) >> 16) & 0xffu))
#define SNAPCCL_LP_MODE_GROUP(mode) ((int)((unsigned)(mode) & 0xffffu))

/* A staging chunk (one per slot, source and block, chunk_bytes long, as for the two-shot)
 * holds m whole groups: m scale words, padded to 16 bytes, then m payloads of
 * payload_bytes each (a multiple of 16: group size >= 32, a multiple of 32). */
SNAPCCL_LP_INLINE unsigned long long snapccl_lp_payload_bytes(int format, int group) {
  return format == SNAPCCL_LP_INT4 ? (unsigned long long)group / 2 : (unsigned long long)group;
}
SNAPCCL_LP_INLINE unsigned long long snapccl_lp_scales_bytes(unsigned long long m) {
  return (4 * m + 15) / 16 * 16;
}
/* Elements of each rank's slice: ceil(count / nranks) rounded up to whole groups, so a
 * group never straddles two owners. Slice j (rank j's) starts at element j x this; the
 * kernel, the host geometry and the CPU reference all take it from here, because the
 * owner's own input enters its sum unquantised (docs/LOWPREC.md): which rank owns a group
 * is part of the result. */
SNAPCCL_LP_INLINE unsigned long long snapccl_lp_slice_elems(unsigned long long count, int nranks, int group) {
  const unsigned long long n = (unsigned long long)nranks, g = (unsigned long long)group;
  return ((count + n - 1) / n + g - 1) / g * g;
}
/* The most groups a chunk holds. */
SNAPCCL_LP_INLINE unsigned long long snapccl_lp_chunk_groups(unsigned long long chunk_bytes,
                                                         unsigned long long payload) {
  unsigned long long m = chunk_bytes / (payload + 4);
  while (m > 0 && snapccl_lp_scales_bytes(m) + m * payload > chunk_bytes) m--;
  return m;
}

/* ---- kernels (kernels/lowprec.cu) ---- */
cudaError_t snapccl_launch_lowprec(const struct snapccl_kargs* a, int blocks, cudaStream_t stream);

/* Diagnostics, in builds with -DSNAPCCL_LP_TRACE only (docs/LOWPREC.md, "Where a round's
 * time goes"): every block records the GPU clock (ns) after each step of each round, for
 * the ranks, blocks and rounds below these bounds; the last call's record is kept.
 * snapccl_lp_trace_take copies it to host[rank][block][round][event] and clears it. */
enum {
  SNAPCCL_LP_TR_ENTRY,   /* kernel entry (round 0's record only) */
  SNAPCCL_LP_TR_ROUND,   /* round start */
  SNAPCCL_LP_TR_PUSHED,  /* step 1 done, reduce-scatter flags raised */
  SNAPCCL_LP_TR_RS_MET,  /* every peer's step 1 seen */
  SNAPCCL_LP_TR_REDUCED, /* step 2 done, all-gather flags raised */
  SNAPCCL_LP_TR_AG_MET,  /* every peer's step 2 seen */
  SNAPCCL_LP_TR_GATHERED,/* step 3 done */
  SNAPCCL_LP_TR_EXIT,    /* after the last round (round 0's record only) */
  SNAPCCL_LP_TR_EVENTS
};
#define SNAPCCL_LP_TR_RANKS 8
#define SNAPCCL_LP_TR_BLOCKS SNAPCCL_MAX_BLOCKS
#define SNAPCCL_LP_TR_ROUNDS 16
typedef unsigned long long snapccl_lp_trace_t[SNAPCCL_LP_TR_RANKS][SNAPCCL_LP_TR_BLOCKS][SNAPCCL_LP_TR_ROUNDS]
                                             [SNAPCCL_LP_TR_EVENTS];
int snapccl_lp_trace_take(snapccl_lp_trace_t* host);

/* ---- the CPU reference (kernels/lowprec_ref.cu) ---- */
/* What every rank's output of the low-precision all-reduce is: inputs[r] holds rank r's
 * count elements of dtype; avg: ncclAvg, else ncclSum. -1 for what the algorithm does
 * not take (format, group, dtype). */
int snapccl_lp_simulate(int format, int group, int dtype, int nranks, int avg, size_t count,
                        const void* const* inputs, void* output);
/* One group of n <= 1024 floats: one code per element (int4: low nibble); returns the
 * scale word (bit 31: non-finite elements present; bits 0..30: the fp32 scale). */
uint32_t snapccl_lp_quant_group(int format, const float* x, int n, unsigned char* codes);
float snapccl_lp_decode(int format, unsigned char code, uint32_t word);
unsigned char snapccl_lp_e4m3_encode(float y); /* ours: RNE, saturating at +-448 */
float snapccl_lp_e4m3_decode(unsigned char code);
/* NVIDIA's conversion (cuda_fp8.h, __NV_SATFINITE, E4M3) on the CPU, to check ours. */
unsigned char snapccl_lp_e4m3_encode_nv(float y);
/* The dtype conversions of the algorithm (round to nearest even; one NaN pattern). */
float snapccl_lp_load(int dtype, const void* elem);
void snapccl_lp_store(int dtype, float v, void* elem);

#ifdef __cplusplus
}
#endif

#endif
