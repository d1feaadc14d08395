/* Shared by the NVLink multicast algorithms: see nvls_common.h. The multicast launch has
 * never run on multicast hardware; the twins' launch ran on an H100 (docs/NVLS.md). */
#include "algos/algo.h"
#include "algos/nvls_common.h"

#include "comm.h"
#include "transport/multicast.h"

const char* snapccl_nvls_unusable(const struct snapccl_coll* c, int multicast) {
  const char* why = snapccl_transport_unusable(c);
  if (why) return why;
  const struct snapccl_nvls* s = c->comm->nvls;
  if (!s) return "the communicator has no multicast state";
  if (multicast) return s->open ? NULL : s->reason;
  if (!s->kernels_ok) return "the multimem kernels are not available for this GPU";
  return NULL;
}

const char* snapccl_nvls_reduction_unsupported(const struct snapccl_coll* c) {
  if (c->dtype != ncclFloat32 && c->dtype != ncclFloat16 && c->dtype != ncclBfloat16)
    return "NVLink multicast reduces float32, float16 and bfloat16 only";
  if (c->devop != DEVOP_SUM && c->devop != DEVOP_PREMULSUM)
    return "NVLink multicast reduces by summing (sum, average, PreMulSum) only";
  return NULL;
}

static cudaError_t launch_multimem(const struct snapccl_kargs* k, const void* mm, int blocks,
                                   cudaStream_t s) {
  return snapccl_launch_multimem(k, mm, blocks, s);
}

ncclResult_t snapccl_nvls_launch(const struct snapccl_coll* c, int kind, int multicast,
                                 const struct snapccl_geom* g) {
  const struct snapccl_nvls* s = c->comm->nvls;
  const struct snapccl_mm_args mm = {
      .mc = multicast ? (char*)(uintptr_t)s->mc_va : NULL,
      .uc = multicast ? (char*)(uintptr_t)s->uc_va : NULL,
      .kind = kind,
  };
  return snapccl_launch_coll_ex(c, launch_multimem, &mm, g);
}
