/* The rest of the NCCL API: versions and errors, memory, registration, custom
 * reductions, groups, and the collectives snapccl does not run itself. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "coll.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "group.h"
#include "interpose.h"
#include "registry.h"
#include "log.h"
#include "snapccl.h"
#include "transport/reg_cache.h"
#include "transport/registration.h"
#include "transport/transport.h"
#include "transport/vmm_driver.h"

#define REAL snapccl_real()

NCCL_API(ncclResult_t, ncclGetVersion, int* version) {
  if (REAL) return snapccl_forwarded(REAL->ncclGetVersion(version)); /* the library serving */
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
  if (REAL && REAL->ncclGetErrorString) return REAL->ncclGetErrorString(result);
  return snapccl_result_string(result);
}

NCCL_API(const char*, ncclGetLastError, ncclComm_t comm) {
  /* NCCL keeps one last error per process; the latest failure, ours or the real
   * library's, is the one reported. */
  if (REAL && REAL->ncclGetLastError && snapccl_last_error_is_real()) {
    ncclComm_t rh;
    return REAL->ncclGetLastError(snapccl_forward_target(comm, &rh) ? rh : NULL);
  }
  return snapccl_last_error();
}

NCCL_API(void, ncclResetDebugInit, void) {
  snapccl_env_reload_debug();
  if (REAL && REAL->ncclResetDebugInit) REAL->ncclResetDebugInit();
}

NCCL_API(ncclResult_t, ncclMemAlloc, void** ptr, size_t size) {
  if (REAL) return snapccl_forwarded(REAL->ncclMemAlloc(ptr, size));
  if (!ptr) SNAP_FAIL(ncclInvalidArgument, "ptr argument is NULL");
  char why[200] = "";
  /* cuMem memory exportable as a POSIX fd, as NCCL's: registration maps it into peers
   * of other processes (transport/vmm_driver.c). */
  if (snapccl_vmm_alloc(ptr, size, why, sizeof why) != 0) SNAP_FAIL(ncclUnhandledCudaError, "%s", why);
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclMemFree, void* ptr) {
  if (REAL) return snapccl_forwarded(REAL->ncclMemFree(ptr));
  if (!ptr) return ncclSuccess;
  char why[200] = "";
  if (snapccl_vmm_free(ptr, why, sizeof why) != 0) SNAP_FAIL(ncclUnhandledCudaError, "%s", why);
  return ncclSuccess;
}

/* Registration (transport/registration.c). Ours is collective, ncclCommRegister
 * included (NCCL's is local): the peers' mappings are exchanged once, here, never in a
 * collective call. Handles are looked up, never dereferenced, so a stale or foreign one
 * is refused rather than read. */
static ncclResult_t reg_new(ncclComm_t comm, void* buff, size_t size, int symmetric, void** handle,
                            const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get_ready(comm, func, &c));
  if (!handle) return snapccl_error(ncclInvalidArgument, func, "handle argument is NULL");
  if (!buff && size) return snapccl_error(ncclInvalidArgument, func, "buff argument is NULL");
  if (snapccl_group_depth() == 0) return snapccl_reg_register(c, buff, size, symmetric, NULL, handle);
  /* Inside a group the exchange waits for the group's end: one thread may register on
   * several ranks' communicators (nccl-tests -g N), which must not wait on each other. */
  struct snapccl_reg_range* g = snapccl_reg_prepare(c, buff, size, symmetric, NULL);
  if (!g) return snapccl_error(ncclSystemError, func, "out of memory");
  void* h = g->handle;
  ncclResult_t res = snapccl_group_defer_reg(c, g);
  if (res != ncclSuccess) {
    snapccl_reg_abandon(g);
    return res;
  }
  *handle = h;
  return ncclSuccess;
}

static ncclResult_t reg_free(ncclComm_t comm, void* handle, const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get(comm, func, &c));
  if (!handle) return ncclSuccess; /* NCCL: deregistering a NULL handle does nothing */
  return snapccl_reg_deregister(c, handle, func);
}

/* An adopted communicator we are attached to: the application's window, registered
 * with the real library, is registered for us too, under the real window as handle.
 * NCCL's window registration is collective, so ours can be; a failure of ours only
 * means that our collectives stage that memory. */
static void shadow_window(ncclComm_t comm, void* buff, size_t size, int flags, ncclWindow_t win) {
  struct snapccl_comm* c = snapccl_registry_find(comm);
  if (!c || !c->transport || atomic_load(&c->attach_pending) || snapccl_transport_unusable_reason(c)) return;
  if (snapccl_group_depth() > 0) {
    /* Ours would wait for the peers at once, and this thread may be driving them. */
    INFO(SUB_TRANSPORT, "window %p registered inside a group: with the real library only", (void*)win);
    return;
  }
  void* h = NULL;
  if (snapccl_reg_register(c, buff, size, (flags & NCCL_WIN_COLL_SYMMETRIC) != 0, win, &h) != ncclSuccess)
    INFO(SUB_TRANSPORT, "window %p is registered with the real library only: %s", (void*)win, snapccl_last_error());
}

NCCL_API(ncclResult_t, ncclCommRegister, const ncclComm_t comm, void* buff, size_t size,
         void** handle) {
  ncclComm_t rh;
  /* Not shadowed: NCCL's is local, ranks need not call it alike, and ours would wait
   * for them. */
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclCommRegister(rh, buff, size, handle));
  return reg_new(comm, buff, size, 0, handle, __func__);
}

NCCL_API(ncclResult_t, ncclCommDeregister, const ncclComm_t comm, void* handle) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclCommDeregister(rh, handle));
  return reg_free(comm, handle, __func__);
}

NCCL_API(ncclResult_t, ncclCommWindowRegister, ncclComm_t comm, void* buff, size_t size,
         ncclWindow_t* win, int winFlags) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) {
    ncclResult_t res = snapccl_forwarded(REAL->ncclCommWindowRegister(rh, buff, size, win, winFlags));
    if (res == ncclSuccess && win && *win) shadow_window(comm, buff, size, winFlags, *win);
    return res;
  }
  if (winFlags & ~NCCL_WIN_COLL_SYMMETRIC)
    SNAP_FAIL(ncclInvalidArgument, "unknown window flags 0x%x", winFlags);
  return reg_new(comm, buff, size, (winFlags & NCCL_WIN_COLL_SYMMETRIC) != 0, (void**)win, __func__);
}

NCCL_API(ncclResult_t, ncclCommWindowDeregister, ncclComm_t comm, ncclWindow_t win) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) {
    struct snapccl_comm* c = snapccl_registry_find(comm);
    if (c && win && snapccl_reg_known(c, win)) (void)snapccl_reg_deregister(c, win, __func__);
    return snapccl_forwarded(REAL->ncclCommWindowDeregister(rh, win));
  }
  return reg_free(comm, win, __func__);
}

SNAPCCL_API ncclResult_t snapcclCommRegisteredPeer(ncclComm_t comm, const void* ptr, size_t bytes, int peer,
                                                   void** peer_ptr) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get(comm, __func__, &c));
  if (!peer_ptr) SNAP_FAIL(ncclInvalidArgument, "peer_ptr argument is NULL");
  if (peer < 0 || peer >= c->nranks) SNAP_FAIL(ncclInvalidArgument, "peer %d out of range", peer);
  *peer_ptr = snapccl_reg_peer(c, ptr, bytes, peer);
  return ncclSuccess;
}

/* Remembers a PreMulSum operator: ours, or the real library's (op_id >= 0 given), whose
 * scalar we need to run collectives on it ourselves. */
static ncclResult_t remember_redop(struct snapccl_comm* c, int op_id, void* scalar,
                                   ncclDataType_t datatype, ncclScalarResidence_t residence,
                                   int* out_id) {
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
  r->op_id = op_id >= 0 ? op_id : ncclNumOps + slot;
  r->dtype = datatype;
  r->residence = residence;
  if (residence == ncclScalarHostImmediate)
    memcpy(&r->host_scalar, scalar, snapccl_dtype_size(datatype));
  else
    r->dev_scalar = scalar;
  *out_id = r->op_id;
  pthread_mutex_unlock(&c->lock);
  return ncclSuccess;
}

static int forget_redop(struct snapccl_comm* c, int op_id) {
  int found = 0;
  pthread_mutex_lock(&c->lock);
  for (int i = 0; i < SNAPCCL_MAX_REDOPS && !found; i++)
    if (c->redops[i].in_use && c->redops[i].op_id == op_id) {
      c->redops[i].in_use = 0;
      found = 1;
    }
  pthread_mutex_unlock(&c->lock);
  return found;
}

NCCL_API(ncclResult_t, ncclRedOpCreatePreMulSum, ncclRedOp_t* op, void* scalar,
         ncclDataType_t datatype, ncclScalarResidence_t residence, ncclComm_t comm) {
  struct snapccl_comm* c;
  ncclComm_t rh;
  int id;
  if (snapccl_forward_target(comm, &rh)) {
    ncclResult_t r = REAL->ncclRedOpCreatePreMulSum(op, scalar, datatype, residence, rh);
    c = snapccl_registry_find(comm);
    /* Without the scalar our kernels cannot run the op: such calls would go to NCCL. */
    if (r == ncclSuccess && c && remember_redop(c, (int)*op, scalar, datatype, residence, &id) != ncclSuccess)
      WARN("custom operator %d of communicator %p not recorded; NCCL runs its calls", (int)*op, (void*)comm);
    return snapccl_forwarded(r);
  }
  if (!op) SNAP_FAIL(ncclInvalidArgument, "op argument is NULL");
  if (!scalar) SNAP_FAIL(ncclInvalidArgument, "scalar argument is NULL");
  if ((int)datatype < 0 || datatype >= ncclNumTypes)
    SNAP_FAIL(ncclInvalidArgument, "invalid datatype %d", (int)datatype);
  if (residence != ncclScalarDevice && residence != ncclScalarHostImmediate)
    SNAP_FAIL(ncclInvalidArgument, "invalid scalar residence %d", (int)residence);
  SNAP_CHECK(snapccl_comm_get_ready(comm, __func__, &c));
  SNAP_CHECK(remember_redop(c, -1, scalar, datatype, residence, &id));
  *op = (ncclRedOp_t)id;
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclRedOpDestroy, ncclRedOp_t op, ncclComm_t comm) {
  struct snapccl_comm* c;
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) {
    c = snapccl_registry_find(comm);
    if (c) forget_redop(c, (int)op);
    return snapccl_forwarded(REAL->ncclRedOpDestroy(op, rh));
  }
  SNAP_CHECK(snapccl_comm_get(comm, __func__, &c));
  if ((int)op < 0) SNAP_FAIL(ncclInvalidArgument, "operator %d is not a valid operator", (int)op);
  if ((int)op < ncclNumOps)
    SNAP_FAIL(ncclInvalidArgument, "operator %d is built in and cannot be destroyed", (int)op);
  if (!forget_redop(c, (int)op))
    SNAP_FAIL(ncclInvalidArgument, "operator %d was not created on this communicator", (int)op);
  return ncclSuccess;
}

/* Interposed, both libraries track the group: the real one runs the calls forwarded
 * inside it at its end, then ours run (calls in one group are unordered in NCCL too). */
NCCL_API(ncclResult_t, ncclGroupStart, void) {
  if (REAL) {
    ncclResult_t r = REAL->ncclGroupStart();
    if (r != ncclSuccess) return snapccl_forwarded(r);
  }
  return snapccl_group_start();
}

NCCL_API(ncclResult_t, ncclGroupEnd, void) {
  if (REAL && snapccl_group_depth() > 0) {
    ncclResult_t r = snapccl_forwarded(REAL->ncclGroupEnd());
    if (r != ncclSuccess && r != ncclInProgress) {
      snapccl_group_end(); /* close ours too; the group failed */
      return r;
    }
    /* Communicators the real library made in this group are ready now (or still in
     * progress, non-blocking): attach them before our deferred calls need them. */
    if (snapccl_group_depth() == 1) snapccl_attach_pending();
    ncclResult_t o = snapccl_group_end();
    return o != ncclSuccess ? o : r;
  }
  return snapccl_group_end();
}

#define SIM_MAGIC 0x74685283u
NCCL_API(ncclResult_t, ncclGroupSimulateEnd, ncclSimInfo_t* simInfo) {
  /* NCCL: a NULL simInfo makes this a plain ncclGroupEnd. */
  if (!simInfo) return ncclGroupEnd();
  if (simInfo->magic != SIM_MAGIC) {
    /* Close the group level anyway, as NCCL does: the caller must not stay inside a
     * group that nothing will end. */
    float ignored;
    if (REAL && REAL->ncclGroupSimulateEnd) REAL->ncclGroupSimulateEnd(NULL);
    snapccl_group_simulate_end(&ignored);
    SNAP_FAIL(ncclInvalidArgument, "simInfo is not set with NCCL_SIM_INFO_INITIALIZER");
  }
  float us = 0.0f;
  if (REAL && REAL->ncclGroupSimulateEnd) { /* NCCL estimates its part, we add ours */
    ncclResult_t r = REAL->ncclGroupSimulateEnd(simInfo);
    if (r != ncclSuccess) {
      snapccl_group_simulate_end(&us);
      return snapccl_forwarded(r);
    }
    us = simInfo->estimatedTime > 0 ? simInfo->estimatedTime : 0.0f;
  }
  float ours = 0.0f;
  ncclResult_t res = snapccl_group_simulate_end(&ours);
  simInfo->estimatedTime = us + ours;
  return res;
}

/* Collectives outside snapccl's three: standalone there is nobody to run them. */
static ncclResult_t unsupported(ncclComm_t comm, const char* func) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_get_ready(comm, func, &c));
  ncclResult_t r = snapccl_error(
      ncclInvalidUsage, func, "%s",
      snapccl_mode() == MODE_STANDALONE
          ? "snapccl runs AllReduce, AllGather and ReduceScatter only; this call needs NVIDIA's "
            "NCCL (preload snapccl over it, or set SNAPCCL_NCCL_LIB)"
          : "this communicator is served by snapccl alone (its ranks share a GPU, which NCCL "
            "refuses), and snapccl runs AllReduce, AllGather and ReduceScatter only");
  snapccl_group_record_error(r);
  return r;
}

NCCL_API(ncclResult_t, ncclReduce, const void* sendbuff, void* recvbuff, size_t count,
         ncclDataType_t datatype, ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclReduce(sendbuff, recvbuff, count, datatype, op, root, rh, stream));
  (void)sendbuff, (void)recvbuff, (void)count, (void)datatype, (void)op, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclBcast, void* buff, size_t count, ncclDataType_t datatype, int root,
         ncclComm_t comm, cudaStream_t stream) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclBcast(buff, count, datatype, root, rh, stream));
  (void)buff, (void)count, (void)datatype, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclBroadcast, const void* sendbuff, void* recvbuff, size_t count,
         ncclDataType_t datatype, int root, ncclComm_t comm, cudaStream_t stream) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclBroadcast(sendbuff, recvbuff, count, datatype, root, rh, stream));
  (void)sendbuff, (void)recvbuff, (void)count, (void)datatype, (void)root, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclSend, const void* sendbuff, size_t count, ncclDataType_t datatype,
         int peer, ncclComm_t comm, cudaStream_t stream) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclSend(sendbuff, count, datatype, peer, rh, stream));
  (void)sendbuff, (void)count, (void)datatype, (void)peer, (void)stream;
  return unsupported(comm, __func__);
}

NCCL_API(ncclResult_t, ncclRecv, void* recvbuff, size_t count, ncclDataType_t datatype, int peer,
         ncclComm_t comm, cudaStream_t stream) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(REAL->ncclRecv(recvbuff, count, datatype, peer, rh, stream));
  (void)recvbuff, (void)count, (void)datatype, (void)peer, (void)stream;
  return unsupported(comm, __func__);
}
