/* snapcclCommSetLowPrecision: a communicator's own low-precision setting (docs/LOWPREC.md),
 * overriding SNAPCCL_LOWPREC* for the calls issued on it from now on. */
#include "algos/allreduce_lowprec.h"
#include "api.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "log.h"
#include "registry.h"
#include "snapccl.h"

SNAPCCL_API ncclResult_t snapcclCommSetLowPrecision(ncclComm_t comm, int format, int group,
                                                    size_t min_bytes) {
  if (!comm) SNAP_FAIL(ncclInvalidArgument, "comm is NULL");
  struct snapccl_comm* c = snapccl_registry_find(comm);
  if (!c) SNAP_FAIL(ncclInvalidArgument, "comm %p is not a communicator snapccl knows", (void*)comm);
  if (format == SNAPCCL_LOWPREC_ENV) {
    snapccl_lowprec_override(c, format, 0, 0);
    return ncclSuccess;
  }
  if (format < SNAPCCL_LOWPREC_OFF || format > SNAPCCL_LOWPREC_INT4)
    SNAP_FAIL(ncclInvalidArgument,
              "format %d is not SNAPCCL_LOWPREC_OFF, _FP8, _INT8, _INT4 or _ENV", format);
  if (group != 0 && !snapccl_lowprec_group_ok(group))
    SNAP_FAIL(ncclInvalidArgument, "group %d is not a multiple of 32 from 32 to 1024 (or 0)", group);
  snapccl_lowprec_override(c, format, group, min_bytes);
  INFO(SUB_COLL, "comm rank %d: low precision %d, group %d, from %zu bytes", c->rank, format, group,
       min_bytes);
  return ncclSuccess;
}
