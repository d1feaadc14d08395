/* The three collectives snapccl runs: check, then issue now or at the group's end. */
#include <string.h>

#include "algos/algo.h"
#include "api.h"
#include "coll.h"
#include "comm.h"
#include "error.h"
#include "group.h"
#include "snapccl.h"

static ncclResult_t enqueue(enum snapccl_coll_kind kind, const void* sendbuff, void* recvbuff,
                            size_t count, ncclDataType_t dtype, ncclRedOp_t op, ncclComm_t comm,
                            cudaStream_t stream, const char* func) {
  struct snapccl_coll coll;
  ncclResult_t r = snapccl_coll_prepare(kind, sendbuff, recvbuff, count, dtype, op, comm, stream,
                                        func, &coll);
  if (r == ncclSuccess) {
    if (count == 0) return ncclSuccess; /* nothing to move: NCCL returns at once too */
    r = snapccl_group_depth() > 0 ? snapccl_group_defer_coll(&coll) : snapccl_coll_issue(&coll);
  }
  snapccl_group_record_error(r);
  return r;
}

NCCL_API(ncclResult_t, ncclAllReduce, const void* sendbuff, void* recvbuff, size_t count,
         ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return enqueue(COLL_ALLREDUCE, sendbuff, recvbuff, count, datatype, op, comm, stream, __func__);
}

NCCL_API(ncclResult_t, ncclAllGather, const void* sendbuff, void* recvbuff, size_t sendcount,
         ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
  return enqueue(COLL_ALLGATHER, sendbuff, recvbuff, sendcount, datatype, ncclSum, comm, stream,
                 __func__);
}

NCCL_API(ncclResult_t, ncclReduceScatter, const void* sendbuff, void* recvbuff, size_t recvcount,
         ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  return enqueue(COLL_REDUCESCATTER, sendbuff, recvbuff, recvcount, datatype, op, comm, stream,
                 __func__);
}

SNAPCCL_API ncclResult_t snapcclQueryAlgorithm(ncclComm_t comm, const char* collective,
                                               size_t count, ncclDataType_t datatype,
                                               ncclRedOp_t op, const char** name) {
  enum snapccl_coll_kind kind = COLL_NKINDS;
  if (!collective || !name) SNAP_FAIL(ncclInvalidArgument, "collective or name is NULL");
  for (int k = 0; k < COLL_NKINDS; k++)
    if (!strcmp(collective, snapccl_coll_name((enum snapccl_coll_kind)k))) kind = (enum snapccl_coll_kind)k;
  if (kind == COLL_NKINDS) SNAP_FAIL(ncclInvalidArgument, "unknown collective \"%s\"", collective);
  /* Any non-NULL pointers do: selection never depends on buffer addresses. */
  static char dummy;
  struct snapccl_coll coll;
  SNAP_CHECK(snapccl_coll_prepare(kind, &dummy, &dummy, count, datatype, op, comm, NULL, __func__,
                                  &coll));
  const struct snapccl_algo* a;
  SNAP_CHECK(snapccl_algo_select(&coll, &a));
  *name = a->name;
  return ncclSuccess;
}
