/* The rest of the NCCL API: versions and errors, memory, registration, custom
 * reductions, groups, and the collectives snapccl does not run itself. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "coll.h"
#include "comm.h"
#include "error.h"
#include "group.h"
#include "log.h"
#include "snapccl.h"

NCCL_API(ncclResult_t, ncclGetVersion, int* version) {
  if (!version) SNAP_FAIL(ncclInvalidArgument, "version argument is NULL");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

SNAPCCL_API ncclResult_t snapcclGetVersion(int* version) {
  if (!version) SNAP_FAIL(ncclInvalidArgument, "version argument is NULL");
  *version = SNAPCCL_VERSION_CODE;
  return ncclSuccess;
}

NCCL_API(const char*, ncclGetErrorString, ncclResult_t result) {
  return snapccl_result_string(result);
}

NCCL_API(const char*, ncclGetLastError, ncclComm_t comm) {
  (void)comm; /* NCCL keeps one last error per process too */
  return snapccl_last_error();
}

NCCL_API(void, ncclResetDebugInit, void) { snapccl_log_reload(); }

NCCL_API(ncclResult_t, ncclMemAlloc, void** ptr, size_t size) {
  if (!ptr) SNAP_FAIL(ncclInvalidArgument, "ptr argument is NULL");
  /* cudaMalloc memory is what the legacy IPC of our transport can map, were it ever
   * registered; the collectives copy through their own workspace either way. */
  CUDA_CHECK(cudaMalloc(ptr, size));
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclMemFree, void* ptr) {
  if (!ptr) return ncclSuccess;
  CUDA_CHECK(cudaFree(ptr));
  return ncclSuccess;
}

/* Registration handles. The collectives always stage through the workspace, so a
 * registration only has to be remembered and given back. */
struct snapccl_registration {
  uint64_t magic;
  struct snapccl_comm* comm;
  void* buff;
  size_t size;
};
#define REG_MAGIC 0x736e617072656721ull

static ncclResult_t reg_new(ncclComm_t comm, void* buff, size_t size, void** handle,
                            const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get_ready(comm, func, &c));
  if (!handle) return snapccl_error(ncclInvalidArgument, func, "handle argument is NULL");
  if (!buff && size) return snapccl_error(ncclInvalidArgument, func, "buff argument is NULL");
  struct snapccl_registration* r = calloc(1, sizeof *r);
  if (!r) return snapccl_error(ncclSystemError, func, "out of memory");
  *r = (struct snapccl_registration){REG_MAGIC, c, buff, size};
  *handle = r;
  return ncclSuccess;
}

static ncclResult_t reg_free(ncclComm_t comm, void* handle, const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get(comm, func, &c));
  struct snapccl_registration* r = handle;
  if (!r || r->magic != REG_MAGIC || r->comm != c)
    return snapccl_error(ncclInvalidArgument, func,
                         "handle %p is not a registration of communicator %p", handle,
                         (void*)comm);
  r->magic = 0;
  free(r);
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommRegister, const ncclComm_t comm, void* buff, size_t size,
         void** handle) {
  return reg_new(comm, buff, size, handle, __func__);
}

NCCL_API(ncclResult_t, ncclCommDeregister, const ncclComm_t comm, void* handle) {
  return reg_free(comm, handle, __func__);
}

NCCL_API(ncclResult_t, ncclCommWindowRegister, ncclComm_t comm, void* buff, size_t size,
         ncclWindow_t* win, int winFlags) {
  if (winFlags & ~NCCL_WIN_COLL_SYMMETRIC)
    SNAP_FAIL(ncclInvalidArgument, "unknown window flags 0x%x", winFlags);
  return reg_new(comm, buff, size, (void**)win, __func__);
}

NCCL_API(ncclResult_t, ncclCommWindowDeregister, ncclComm_t comm, ncclWindow_t win) {
  return reg_free(comm, win, __func__);
}

NCCL_API(ncclResult_t, ncclRedOpCreatePreMulSum, ncclRedOp_t* op, void* scalar,
         ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm) {
  struct snapccl_comm* c;
  if (!op) SNAP_FAIL(ncclInvalidArgument, "op argument is NULL");
  if (!scalar) SNAP_FAIL(ncclInvalidArgument, "scalar argument is NULL");
  if ((int)datatype < 0 || datatype >= ncclNumTypes)
    SNAP_FAIL(ncclInvalidArgument, "invalid datatype %d", (int)datatype);
  if (residence != ncclScalarDevice && residence != ncclScalarHostImmediate)
    SNAP_FAIL(ncclInvalidArgument, "invalid scalar residence %d", (int)residence);
  SNAP_CHECK(snapccl_comm_get_ready(comm, __func__, &c));
  pthread_mutex_lock(&c->lock);
  int slot = -1;
  for (int i = 0; i < SNAPCCL_MAX_REDOPS && slot < 0; i++)
    if (!c->redops[i].in_use) slot = i;
  if (slot < 0) {
    pthread_mutex_unlock(&c->lock);
    SNAP_FAIL(ncclInvalidUsage, "too many custom reduction operators (at most %d live)",
              SNAPCCL_MAX_REDOPS);
  }
  struct snapccl_redop* r = &c->redops[slot];
  memset(r, 0, sizeof *r);
  r->in_use = 1;
  r->dtype = datatype;
  r->residence = residence;
  if (residence == ncclScalarHostImmediate)
    memcpy(&r->host_scalar, scalar, snapccl_dtype_size(datatype));
  else
    r->dev_scalar = scalar;
  pthread_mutex_unlock(&c->lock);
  *op = (ncclRedOp_t)(ncclNumOps + slot);
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclRedOpDestroy, ncclRedOp_t op, ncclComm_t comm) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get(comm, __func__, &c));
  int slot = (int)op - ncclNumOps;
  if ((int)op < ncclNumOps)
    SNAP_FAIL(ncclInvalidArgument, "operator %d is built in and cannot be destroyed", (int)op);
  pthread_mutex_lock(&c->lock);
  int ok = slot < SNAPCCL_MAX_REDOPS && c->redops[slot].in_use;
  if (ok) c->redops[slot].in_use = 0;
  pthread_mutex_unlock(&c->lock);
  if (!ok) SNAP_FAIL(ncclInvalidArgument, "operator %d was not created on this communicator", (int)op);
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclGroupStart, void) { return snapccl_group_start(); }
NCCL_API(ncclResult_t, ncclGroupEnd, void) { return snapccl_group_end(); }

#define SIM_MAGIC 0x74685283u
NCCL_API(ncclResult_t, ncclGroupSimulateEnd, ncclSimInfo_t* simInfo) {
  if (!simInfo || simInfo->magic != SIM_MAGIC)
    SNAP_FAIL(ncclInvalidArgument, "simInfo is NULL or not set with NCCL_SIM_INFO_INITIALIZER");
  float us = 0.0f;
  ncclResult_t res = snapccl_group_simulate_end(&us);
  simInfo->estimatedTime = us;
  return res;
}

/* Collectives outside snapccl's three: standalone there is nobody to run them. */
static ncclResult_t unsupported(ncclComm_t comm, const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get_ready(comm, func, &c));
  ncclResult_t r = snapccl_error(ncclInvalidUsage, func,
                                 "snapccl runs AllReduce, AllGather and ReduceScatter only; "
                                 "this call needs NVIDIA's NCCL (preload snapccl over it, or set "
                                 "SNAPCCL_NCCL_LIB)");
  snapccl_group_record_error(r);
  return r;
}

NCCL_API(ncclResult_t, ncclReduce, const void* sendbuff, void* recvbuff, size_t count,
         ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  (void)sendbuff, (void)recvbuff, (void)count, (void)datatype, (void)op, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclBcast, void* buff, size_t count, ncclDataType_t datatype, int root,
         ncclComm_t comm, cudaStream_t stream) {
  (void)buff, (void)count, (void)datatype, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclBroadcast, const void* sendbuff, void* recvbuff, size_t count,
         ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream) {
  (void)sendbuff, (void)recvbuff, (void)count, (void)datatype, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclSend, const void* sendbuff, size_t count, ncclDataType_t datatype,
         int peer, ncclComm_t comm, cudaStream_t stream) {
  (void)sendbuff, (void)count, (void)datatype, (void)peer, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclRecv, void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
         ncclComm_t comm, cudaStream_t stream) {
  (void)recvbuff, (void)count, (void)datatype, (void)peer, (void)stream;
  return unsupported(comm, __func__);
}
