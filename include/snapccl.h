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

/* @lowprec-api@ */

/* @fused-api@ */

#ifdef __cplusplus
}
#endif

#endif
