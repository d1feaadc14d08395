/* Arguments of the fused all-reduce + residual + RMSNorm kernels (fused_rmsnorm.cu) and
 * of the separate residual + RMSNorm kernel. Plain C, included by both sides.
 *
 * Row layout: user buffers hold rows of `hidden` elements back to back (a row starts
 * at any byte when hidden * element size is not a multiple of 16). In staging and
 * Lamport buffers every row starts on a 16-byte pack and takes `stride` bytes (the
 * row rounded up to whole packs, the tail of the last pack zero). */
#ifndef SNAPCCL_FUSED_KARGS_H
#define SNAPCCL_FUSED_KARGS_H

#include "kernels/kargs.h"

enum snapccl_fused_quant {
  FUSED_QUANT_NONE = 0,        /* norm_out in the input's dtype */
  FUSED_QUANT_FP8_STATIC = 1,  /* norm_out in fp8 E4M3, q = sat(v * (1 / *scale)) */
  FUSED_QUANT_FP8_DYNAMIC = 2  /* per-row scale = max(amax / 448, MIN), written to scale_out */
};

/* Rows up to this many bytes (padded) are kept in dynamic shared memory between the
 * passes of the row: one-shot requires it (its Lamport slots are reset after reading);
 * the others re-read the row from residual_out or recompute it when it does not fit.
 * Two blocks per SM at 64 KiB + a little static memory fit on sm_80 and sm_90. */
#define SNAPCCL_FUSED_ROW_CACHE_MAX (64u << 10)
/* Rows the fused one-shot takes, in bytes, at most (and at most the one-shot buffer):
 * its crossover to the fused two-shot was measured with this limit, the one-shot slot's
 * size before slots grew with fewer ranks (kernels/kargs.h). */
#define SNAPCCL_FUSED_ONESHOT_BYTES (512u << 10)
#define SNAPCCL_FP8_E4M3_MAX 448.0f
/* Smallest dynamic scale, so an all-zero row does not divide by zero (as vLLM). */
#define SNAPCCL_FUSED_MIN_SCALE (1.0f / (448.0f * 512.0f))

struct snapccl_fused_kargs {
  struct snapccl_kargs k;  /* workspaces, rank, timeout; k.send is the input, k.dtype */
  const void* residual_in; /* NULL: no residual */
  const void* gamma;       /* NULL: ones */
  const void* sum_src;     /* separate kernel only: the already reduced rows */
  void* norm_out;
  void* residual_out;      /* NULL: not written */
  void* sum_out;           /* NULL: not written (separate kernel: also when == sum_src) */
  const float* scale;      /* FUSED_QUANT_FP8_STATIC */
  float* scale_out;        /* FUSED_QUANT_FP8_DYNAMIC: [tokens] */
  unsigned long long tokens;
  unsigned long long hidden;
  unsigned long long rows_per_chunk; /* two-shot: rows of one slice per (block, round) */
  float eps;
  int quant;               /* enum snapccl_fused_quant */
  int cache_row;           /* the padded row fits SNAPCCL_FUSED_ROW_CACHE_MAX */
};

#endif
