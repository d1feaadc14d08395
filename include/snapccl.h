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

/* @lowprec-api@ */

/* @fused-api@ */

#ifdef __cplusplus
}
#endif

#endif
