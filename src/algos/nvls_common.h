/* What the NVLink multicast algorithms (*_nvls.c) share: their gate checks and the
 * launch through the multimem kernels. The multicast path has never run on multicast
 * hardware, only the unicast twins and the stubbed-driver tests did (docs/NVLS.md). */
#ifndef SNAPCCL_ALGOS_NVLS_COMMON_H
#define SNAPCCL_ALGOS_NVLS_COMMON_H

#include "algos/launch.h"
#include "coll.h"
#include "kernels/multimem.h"

/* NULL if the variant can run on this communicator at all, else why not. The multicast
 * variant needs the gate open and the buffer set up on every rank (transport/multicast.c);
 * the twin (multicast = 0) needs the multimem kernels loaded. (The twins are marked
 * only_when_named, so the default choice of algorithms never changes.) */
const char* snapccl_nvls_unusable(const struct snapccl_coll* coll, int multicast);
/* NULL if the reduction is one the multicast hardware does: float32, float16 or
 * bfloat16, summed (sum, PreMulSum, floating average). */
const char* snapccl_nvls_reduction_unsupported(const struct snapccl_coll* coll);
/* Launches kind (enum snapccl_mm_kind) with the grid in g, multicast or twin. */
ncclResult_t snapccl_nvls_launch(const struct snapccl_coll* coll, int kind, int multicast,
                                 const struct snapccl_geom* g);

#endif
