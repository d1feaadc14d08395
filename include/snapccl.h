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

#ifdef __cplusplus
}
#endif

#endif
