/* The three collectives snapccl runs: check, then issue now or at the group's end. */
#include <string.h>

#include "algos/algo.h"
#include "api.h"
#include "coll.h"
#include "comm.h"
#include "error.h"
#include "group.h"
#include "host_profile.h"
#include "interpose.h"
#include "registry.h"
#include "snapccl.h"

static ncclResult_t run_ours(const struct snapccl_coll* coll) {
  ncclResult_t r = ncclSuccess; /* count 0: nothing to move, NCCL returns at once too */
  if (coll->count > 0)
    r = snapccl_group_depth() > 0 ? snapccl_group_defer_coll(coll) : snapccl_coll_issue(coll);
  /* The launch ended the profiled call already; a call deferred, empty or failed ends
   * here, so that nothing after it counts toward it. */
  SNAP_PROF_END(PROF_LAUNCH);
  return r;
}

static ncclResult_t enqueue(enum snapccl_coll_kind kind, const void* sendbuff, void* recvbuff,
                            size_t count, ncclDataType_t dtype, ncclRedOp_t op, ncclComm_t comm,
                            cudaStream_t stream, const char* func) {
  struct snapccl_coll coll;
  ncclComm_t rh;
  SNAP_PROF_BEGIN();
  if (snapccl_forward_target(comm, &rh)) {
    /* The real library's communicator: take the call if we are attached and an
     * algorithm of ours runs it; anything else (including a call our checks reject)
     * goes to NCCL unchanged, so it answers exactly as it would without us. */
    struct snapccl_comm* c = snapccl_registry_find(comm);
    const struct snapccl_algo* algo;
    if (c) {
      if (atomic_load(&c->attach_pending)) {
        if (snapccl_group_depth() > 0) snapccl_adopt_later(c); /* at the group's end */
        else snapccl_maybe_attach(c, stream);
      }
      int ok = !atomic_load(&c->attach_pending) && c->transport &&
               atomic_load(&c->async_state) == ncclSuccess;
      SNAP_PROF_MARK(PROF_LOOKUP);
      ok = ok && snapccl_coll_prepare_quiet(kind, sendbuff, recvbuff, count, dtype, op, c, stream, &coll);
      SNAP_PROF_MARK(PROF_CHECKS);
      ok = ok && snapccl_algo_choose(&coll, &algo) == ncclSuccess;
      SNAP_PROF_MARK(PROF_SELECT);
      if (ok) {
        coll.algo = algo; /* issued as chosen, not selected again */
        snapccl_count_call(c, kind, count * snapccl_dtype_size(dtype), 1);
        return run_ours(&coll);
      }
      snapccl_count_call(c, kind, count * snapccl_dtype_size(dtype), 0);
    }
    const struct snapccl_real* real = snapccl_real();
    ncclResult_t fr;
    SNAP_PROF_MARK(PROF_LOOKUP);
    switch (kind) {
      case COLL_ALLREDUCE: fr = real->ncclAllReduce(sendbuff, recvbuff, count, dtype, op, rh, stream); break;
      case COLL_ALLGATHER: fr = real->ncclAllGather(sendbuff, recvbuff, count, dtype, rh, stream); break;
      default: fr = real->ncclReduceScatter(sendbuff, recvbuff, count, dtype, op, rh, stream); break;
    }
    SNAP_PROF_END(PROF_REAL);
    return snapccl_forwarded(fr);
  }
  ncclResult_t r = snapccl_coll_prepare(kind, sendbuff, recvbuff, count, dtype, op, comm, stream,
                                        func, &coll);
  if (r == ncclSuccess) r = run_ours(&coll);
  else SNAP_PROF_END(PROF_CHECKS);
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
  return snapccl_algo_query(&coll, name);
}
