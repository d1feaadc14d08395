/* snapccl extensions next to the NCCL API (include/nccl.h stays NVIDIA-compatible). */
#ifndef SNAPCCL_H_
#define SNAPCCL_H_

#include "nccl.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SNAPCCL_MAJOR 0
#define SNAPCCL_MINOR 1
#define SNAPCCL_PATCH 0
#define SNAPCCL_VERSION_CODE (SNAPCCL_MAJOR * 10000 + SNAPCCL_MINOR * 100 + SNAPCCL_PATCH)

/* snapccl's own version (SNAPCCL_VERSION_CODE of the library), whatever
 * ncclGetVersion reports in the mode the library runs in. */
ncclResult_t snapcclGetVersion(int* version);

/* The algorithm snapccl would pick for a call with these arguments on comm:
 * collective is "allreduce", "allgather" or "reducescatter"; count as in the NCCL call.
 * *name is a static string ("oneshot", "twoshot", ..., or "nccl" when the call would be
 * handed to NVIDIA's library). Fails with the reason when no algorithm can run it. */
ncclResult_t snapcclQueryAlgorithm(ncclComm_t comm, const char* collective, size_t count,
                                   ncclDataType_t datatype, ncclRedOp_t op, const char** name);

/* Where rank `peer`'s counterpart of [ptr, ptr + bytes) lies in this process, for a span
 * inside a range registered on comm (ncclCommRegister, ncclCommWindowRegister) that every
 * rank maps: *peer_ptr is peer's buffer at the same offset from its registered base (the
 * caller's own pointer for peer = own rank). NULL when no such registration holds the span,
 * or some rank could not map it (then collectives stage it). For tests and tools. */
ncclResult_t snapcclCommRegisteredPeer(ncclComm_t comm, const void* ptr, size_t bytes, int peer, void** peer_ptr);

/* Opt-in low-precision all-reduce (docs/LOWPREC.md): sum and avg of float16, bfloat16 and
 * float32 travel as groups of `group` elements quantised to fp8 E4M3, int8 or int4 with one
 * fp32 scale each; results are lossy but bitwise identical on every rank. All-reduces of
 * at least min_bytes (unquantised) on comm then use it; smaller ones, other types and ops
 * stay in full precision. Overrides SNAPCCL_LOWPREC, SNAPCCL_LOWPREC_GROUP and
 * SNAPCCL_LOWPREC_MIN_BYTES for this communicator; every rank must set the same values
 * (like the arguments of a collective). group 0 takes SNAPCCL_LOWPREC_GROUP; format
 * SNAPCCL_LOWPREC_ENV drops the override. Works on any communicator snapccl serves or has
 * adopted (interposed mode: the real NCCL's handle); a CUDA graph keeps the setting of its
 * capture. */
#define SNAPCCL_LOWPREC_ENV (-1)
#define SNAPCCL_LOWPREC_OFF 0
#define SNAPCCL_LOWPREC_FP8 1
#define SNAPCCL_LOWPREC_INT8 2
#define SNAPCCL_LOWPREC_INT4 3
ncclResult_t snapcclCommSetLowPrecision(ncclComm_t comm, int format, int group, size_t min_bytes);

/* Fused all-reduce + residual add + RMSNorm (docs/FUSED.md). Rows are `tokens` x
 * `hidden` elements of `datatype` (ncclBfloat16, ncclFloat16 or ncclFloat32), and
 * for every row, with fp32 arithmetic and dtype-rounded tensors:
 *   sum          = allreduce_sum(input)              (over the communicator's ranks)
 *   residual_out = sum + residual_in                 (residual_in NULL: zeros)
 *   norm_out     = residual_out * rsqrt(mean(residual_out^2) + eps) * gamma
 * gamma has `hidden` elements (NULL: ones). In place: norm_out == input and
 * residual_out == residual_in are allowed; other outputs must not overlap anything.
 * Every rank gets bitwise-identical outputs when residual_in and gamma are identical.
 * Asynchronous on `stream`, capturable in CUDA graphs; not inside ncclGroupStart/End. */
typedef enum {
  snapcclNormOutDefault = 0,    /* norm_out in `datatype` */
  snapcclNormOutFp8Static = 1,  /* norm_out in fp8 E4M3: sat(norm / *scale) */
  snapcclNormOutFp8Dynamic = 2  /* fp8 E4M3 with a per-token scale written to scaleOut */
} snapcclNormOut_t;

/* Options of the Ex form. Initialise with SNAPCCL_FUSED_OPTIONS_INITIALIZER so `size`,
 * `magic` and `version` say which fields the caller knows (later versions only add
 * fields at the end). */
typedef struct {
  size_t size;          /* sizeof(snapcclFusedOptions) as the caller compiled it */
  unsigned int magic;   /* SNAPCCL_FUSED_OPTIONS_MAGIC */
  unsigned int version; /* SNAPCCL_FUSED_OPTIONS_VERSION the caller compiled against */
  int normOut;          /* snapcclNormOut_t */
  int skipResidualOut;  /* 1: residual_out is not written and may be NULL */
  const float* scale;   /* Fp8Static: device pointer to the fp32 dequantisation scale */
  float* scaleOut;      /* Fp8Dynamic: device array of `tokens` fp32 scales, written:
                         * max(amax(row) / 448, 1 / (448 * 512)) */
  void* sumOut;         /* not NULL: the plain all-reduced sum is written here too */
} snapcclFusedOptions;

#define SNAPCCL_FUSED_OPTIONS_MAGIC 0x73667573u /* "sfus" */
#define SNAPCCL_FUSED_OPTIONS_VERSION 1u
#define SNAPCCL_FUSED_OPTIONS_INITIALIZER                                                  \
  { sizeof(snapcclFusedOptions), SNAPCCL_FUSED_OPTIONS_MAGIC, SNAPCCL_FUSED_OPTIONS_VERSION, \
    snapcclNormOutDefault, 0, NULL, NULL, NULL }

ncclResult_t snapcclAllReduceResidualRMSNorm(const void* input, const void* residual_in,
                                             const void* gamma, void* norm_out,
                                             void* residual_out, size_t tokens, size_t hidden,
                                             float eps, ncclDataType_t datatype, ncclComm_t comm,
                                             cudaStream_t stream);
/* The same with options (NULL: the defaults, i.e. the call above). */
ncclResult_t snapcclAllReduceResidualRMSNormEx(const void* input, const void* residual_in,
                                               const void* gamma, void* norm_out,
                                               void* residual_out, size_t tokens, size_t hidden,
                                               float eps, ncclDataType_t datatype, ncclComm_t comm,
                                               cudaStream_t stream,
                                               const snapcclFusedOptions* options);
/* The residual add + RMSNorm alone, on already reduced rows `sum` (no communication),
 * on the current device; options as above (sumOut must be NULL). */
ncclResult_t snapcclResidualRMSNorm(const void* sum, const void* residual_in, const void* gamma,
                                    void* norm_out, void* residual_out, size_t tokens,
                                    size_t hidden, float eps, ncclDataType_t datatype,
                                    cudaStream_t stream, const snapcclFusedOptions* options);
/* The fused algorithm snapccl would run such a call with: "oneshot", "twoshot",
 * "unfused" (snapccl's all-reduce, then the separate kernel), "local" (one rank), or
 * "nccl" (NVIDIA's all-reduce, then the separate kernel). */
ncclResult_t snapcclQueryFusedAlgorithm(ncclComm_t comm, size_t tokens, size_t hidden,
                                        ncclDataType_t datatype,
                                        const snapcclFusedOptions* options, const char** name);

#ifdef __cplusplus
}
#endif

#endif
