/* Communicator lifecycle and queries of the NCCL API (standalone mode). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bootstrap.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "group.h"
#include "interpose.h"
#include "log.h"
#include "registry.h"
#include "transport/transport.h"

static ncclResult_t init_rank(ncclComm_t* out, int nranks, const ncclUniqueId* id, int rank,
                              const struct snapccl_config* cfg, int cuda_dev, const char* func) {
  ncclResult_t res = snapccl_comm_create(out, id, nranks, rank, cfg, cuda_dev);
  if (res != ncclSuccess && res != ncclInProgress)
    INFO(SUB_INIT, "%s: rank %d of %d failed: %s", func, rank, nranks, snapccl_last_error());
  return res;
}

static int id_is_ours(const ncclUniqueId* id) {
  const struct snapccl_unique_id* u = (const struct snapccl_unique_id*)(const void*)id;
  return u->magic == SNAPCCL_ID_MAGIC;
}

static ncclResult_t check_init_args(ncclComm_t* comm, int nranks, int rank, const char* func) {
  if (!comm) return snapccl_error(ncclInvalidArgument, func, "comm argument is NULL");
  if (nranks < 1 || rank < 0 || rank >= nranks)
    return snapccl_error(ncclInvalidArgument, func, "Invalid rank requested : %d/%d", rank,
                         nranks);
  return ncclSuccess;
}

static ncclResult_t current_device(int* dev, const char* func) {
  cudaError_t e = cudaGetDevice(dev);
  if (e != cudaSuccess)
    return snapccl_error(ncclUnhandledCudaError, func, "cudaGetDevice failed: %s",
                         cudaGetErrorString(e));
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclGetUniqueId, ncclUniqueId* uniqueId) {
  const struct snapccl_real* real = snapccl_real();
  /* Ranks sharing a GPU: the real NCCL would refuse the communicator, so the rendezvous
   * is ours; a real communicator is made underneath only if the GPUs turn out distinct. */
  if (real && !snapccl_env()->shared_gpu) return snapccl_forwarded(real->ncclGetUniqueId(uniqueId));
  if (!uniqueId) SNAP_FAIL(ncclInvalidArgument, "uniqueId argument is NULL");
  return snapccl_bootstrap_create_root(uniqueId);
}

NCCL_API(ncclResult_t, ncclCommInitRankConfig, ncclComm_t* comm, int nranks, ncclUniqueId commId,
         int rank, ncclConfig_t* config) {
  const struct snapccl_real* real = snapccl_real();
  if (real && !id_is_ours(&commId))
    return snapccl_adopt_result(real->ncclCommInitRankConfig(comm, nranks, commId, rank, config), comm);
  struct snapccl_config cfg;
  int dev;
  ncclResult_t r = check_init_args(comm, nranks, rank, __func__);
  if (r == ncclSuccess) r = snapccl_config_parse(config, &cfg);
  if (r == ncclSuccess) r = snapccl_bootstrap_check_id(&commId);
  if (r == ncclSuccess) r = current_device(&dev, __func__);
  if (r == ncclSuccess) r = init_rank(comm, nranks, &commId, rank, &cfg, dev, __func__);
  snapccl_group_record_error(r);
  return r;
}

NCCL_API(ncclResult_t, ncclCommInitRank, ncclComm_t* comm, int nranks, ncclUniqueId commId,
         int rank) {
  const struct snapccl_real* real = snapccl_real();
  if (real && !id_is_ours(&commId))
    return snapccl_adopt_result(real->ncclCommInitRank(comm, nranks, commId, rank), comm);
  struct snapccl_config cfg;
  int dev;
  ncclResult_t r = check_init_args(comm, nranks, rank, __func__);
  if (r == ncclSuccess) r = snapccl_config_parse(NULL, &cfg);
  if (r == ncclSuccess) r = snapccl_bootstrap_check_id(&commId);
  if (r == ncclSuccess) r = current_device(&dev, __func__);
  if (r == ncclSuccess) r = init_rank(comm, nranks, &commId, rank, &cfg, dev, __func__);
  snapccl_group_record_error(r);
  return r;
}

NCCL_API(ncclResult_t, ncclCommInitRankScalable, ncclComm_t* newcomm, int nranks, int myrank,
         int nId, ncclUniqueId* commIds, ncclConfig_t* config) {
  const struct snapccl_real* real = snapccl_real();
  if (real && !(commIds && nId > 0 && id_is_ours(&commIds[0])))
    return snapccl_adopt_result(real->ncclCommInitRankScalable(newcomm, nranks, myrank, nId, commIds, config),
                 newcomm);
  struct snapccl_config cfg;
  int dev;
  ncclResult_t r = check_init_args(newcomm, nranks, myrank, __func__);
  if (r == ncclSuccess && (nId < 1 || !commIds))
    r = snapccl_error(ncclInvalidArgument, __func__, "need nId >= 1 ids (nId %d, commIds %p)",
                      nId, (void*)commIds);
  if (r == ncclSuccess) r = snapccl_config_parse(config, &cfg);
  /* One host needs one root: every rank meets at the first id's root. The roots of the
   * other ids see nobody and give up after the bootstrap timeout. */
  if (r == ncclSuccess) r = snapccl_bootstrap_check_id(&commIds[0]);
  if (r == ncclSuccess) r = current_device(&dev, __func__);
  if (r == ncclSuccess) r = init_rank(newcomm, nranks, &commIds[0], myrank, &cfg, dev, __func__);
  snapccl_group_record_error(r);
  return r;
}

struct initall_arg {
  struct snapccl_comm* comm;
  const ncclUniqueId* id;
  int nranks, rank, dev;
  ncclResult_t res;
};

static void* initall_thread(void* p) {
  struct initall_arg* a = p;
  a->res = snapccl_comm_init(a->comm, a->id, a->nranks, a->rank, a->dev);
  return NULL;
}

/* Interposed: the real library makes the communicators (unless ranks share a GPU, which
 * it refuses); we attach to all of them at once, one thread each. */
static ncclResult_t init_all_real(const struct snapccl_real* real, ncclComm_t* comms, int ndev,
                                  const int* devlist) {
  ncclResult_t r = real->ncclCommInitAll(comms, ndev, devlist);
  if (r != ncclSuccess) return snapccl_forwarded(r);
  for (int i = 0; i < ndev; i++)
    if (snapccl_adopt_real_comm(comms[i], 0) != ncclSuccess)
      WARN("could not track communicator %p; the real NCCL runs all its calls", (void*)comms[i]);
  if (snapccl_group_depth() == 0) snapccl_attach_pending();
  return ncclSuccess;
}

static int has_duplicates(const int* devlist, int ndev) {
  for (int i = 0; devlist && i < ndev; i++)
    for (int j = 0; j < i; j++)
      if (devlist[i] == devlist[j]) return 1;
  return 0;
}

NCCL_API(ncclResult_t, ncclCommInitAll, ncclComm_t* comms, int ndev, const int* devlist) {
  int count = 0, shared = snapccl_env()->shared_gpu;
  const struct snapccl_real* real = snapccl_real();
  if (real && !shared) return init_all_real(real, comms, ndev, devlist);
  if (!comms) SNAP_FAIL(ncclInvalidArgument, "comm argument is NULL");
  if (ndev < 1) SNAP_FAIL(ncclInvalidArgument, "invalid ndev %d", ndev);
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    SNAP_FAIL(ncclUnhandledCudaError, "cudaGetDeviceCount failed: %s", cudaGetErrorString(e));
  if (real && !has_duplicates(devlist, ndev) && (devlist || ndev <= count))
    return init_all_real(real, comms, ndev, devlist); /* distinct GPUs: NCCL takes them */
  int* devs = calloc((size_t)ndev, sizeof *devs);
  struct initall_arg* args = calloc((size_t)ndev, sizeof *args);
  pthread_t* th = calloc((size_t)ndev, sizeof *th);
  ncclUniqueId id;
  ncclResult_t res = ncclSuccess;
  if (!devs || !args || !th) {
    res = snapccl_error(ncclSystemError, __func__, "out of memory");
    goto out;
  }
  for (int i = 0; i < ndev; i++) {
    devs[i] = devlist ? devlist[i] : (shared ? i % count : i);
    if (devs[i] < 0 || devs[i] >= count) {
      res = snapccl_error(ncclInvalidArgument, __func__, "invalid device %d (rank %d; %d devices)",
                          devs[i], i, count);
      goto out;
    }
    for (int j = 0; j < i && !shared; j++)
      if (devs[j] == devs[i]) {
        res = snapccl_error(ncclInvalidUsage, __func__,
                            "Duplicate GPU detected : rank %d and rank %d both on CUDA device %d "
                            "(set SNAPCCL_SHARED_GPU=1 to allow ranks to share a GPU)",
                            j, i, devs[i]);
        goto out;
      }
  }
  SNAP_CHECK_GOTO(snapccl_bootstrap_create_root(&id), res, out);
  for (int i = 0; i < ndev; i++) {
    SNAP_CHECK_GOTO(snapccl_comm_alloc(&args[i].comm), res, undo);
    snapccl_config_parse(NULL, &args[i].comm->config);
    args[i].id = &id;
    args[i].nranks = ndev;
    args[i].rank = i;
    args[i].dev = devs[i];
  }
  for (int i = 0; i < ndev; i++)
    if (pthread_create(&th[i], NULL, initall_thread, &args[i]) != 0) {
      /* Ranks already started would wait for this one until the bootstrap timeout; run
       * it inline instead (it fails or succeeds with the others). */
      initall_thread(&args[i]);
      th[i] = 0;
    }
  for (int i = 0; i < ndev; i++) {
    if (th[i]) pthread_join(th[i], NULL);
    if (args[i].res != ncclSuccess && res == ncclSuccess) res = args[i].res;
  }
  if (res != ncclSuccess) goto undo;
  for (int i = 0; i < ndev; i++) {
    SNAP_CHECK_GOTO(snapccl_registry_add(args[i].comm, args[i].comm), res, undo);
    comms[i] = (ncclComm_t)args[i].comm;
  }
  goto out;
undo:
  for (int i = 0; i < ndev; i++) {
    if (!args[i].comm) continue;
    snapccl_registry_remove(args[i].comm);
    snapccl_comm_free(args[i].comm);
    comms[i] = NULL;
  }
out:
  free(devs);
  free(args);
  free(th);
  return res;
}

/* NCCL's answer to a destroy or finalize while the init runs: ncclInvalidArgument (its
 * ncclCommEnsureReady), rather than a wait that may not end. */
static ncclResult_t check_settled(struct snapccl_comm* c, ncclComm_t comm, const char* func) {
  if (atomic_load(&c->init_busy) == INIT_SETTLED) return ncclSuccess;
  return snapccl_error(ncclInvalidArgument, func,
                       "communicator %p is still initializing: wait until "
                       "ncclCommGetAsyncError no longer returns ncclInProgress, or call "
                       "ncclCommAbort", (void*)comm);
}

/* Inside a group, NCCL's Destroy, Abort and Finalize are group operations too: they
 * take effect at the outermost ncclGroupEnd (src/group.c runs them after the group's
 * inits, so also for a communicator whose own init is deferred there). */

NCCL_API(ncclResult_t, ncclCommFinalize, ncclComm_t comm) {
  if (!comm) return ncclSuccess; /* as NCCL */
  struct snapccl_comm* c = snapccl_registry_find(comm);
  ncclComm_t rh;
  ncclResult_t r = ncclSuccess;
  if (c && snapccl_group_depth() > 0) {
    r = snapccl_group_defer_end(c, SNAPCCL_END_FINALIZE);
  } else if (c) {
    SNAP_CHECK(check_settled(c, comm, __func__));
    r = snapccl_comm_finalize(c, __func__);
  }
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(snapccl_real()->ncclCommFinalize(rh));
  if (!c) SNAP_CHECK(snapccl_comm_get(comm, __func__, &c)); /* reports the bad handle */
  return r;
}

NCCL_API(ncclResult_t, ncclCommDestroy, ncclComm_t comm) {
  if (!comm) return ncclSuccess; /* as NCCL */
  ncclComm_t rh;
  int fwd = snapccl_forward_target(comm, &rh);
  struct snapccl_comm* c = snapccl_registry_find(comm);
  if (!c && !fwd) SNAP_FAIL(ncclInvalidArgument, "communicator %p is not valid (destroyed, or never created)",
                            (void*)comm);
  int in_group = snapccl_group_depth() > 0;
  if (c && !in_group) SNAP_CHECK(check_settled(c, comm, __func__));
  /* Our kernels go first: they may use the real communicator's buffers no more, but the
   * memory they spin on is ours. */
  if (c && snapccl_registry_remove(comm) == c &&
      (!in_group || snapccl_group_defer_end(c, SNAPCCL_END_DESTROY) != ncclSuccess))
    snapccl_comm_release(c, SNAPCCL_END_DESTROY);
  return fwd ? snapccl_forwarded(snapccl_real()->ncclCommDestroy(rh)) : ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommAbort, ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  ncclComm_t rh;
  int fwd = snapccl_forward_target(comm, &rh);
  struct snapccl_comm* c = snapccl_registry_find(comm);
  if (!c && !fwd) SNAP_FAIL(ncclInvalidArgument, "communicator %p is not valid (destroyed, or never created)",
                            (void*)comm);
  if (c) {
    /* At once, in a group too (as NCCL sets its abort flags): kernels, and an init
     * still running or deferred, stop. */
    snapccl_comm_signal_abort(c);
    if (snapccl_registry_remove(comm) == c &&
        (snapccl_group_depth() == 0 || snapccl_group_defer_end(c, SNAPCCL_END_ABORT) != ncclSuccess))
      snapccl_comm_release(c, SNAPCCL_END_ABORT);
  }
  return fwd ? snapccl_forwarded(snapccl_real()->ncclCommAbort(rh)) : ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommGetAsyncError, ncclComm_t comm, ncclResult_t* asyncError) {
  ncclComm_t rh;
  struct snapccl_comm* c = snapccl_registry_find(comm);
  if (snapccl_forward_target(comm, &rh)) {
    ncclResult_t r = snapccl_real()->ncclCommGetAsyncError(rh, asyncError);
    if (r != ncclSuccess || !c || *asyncError != ncclSuccess) return snapccl_forwarded(r);
    /* The real communicator is fine; our kernels on it may not be. */
  }
  if (!asyncError) SNAP_FAIL(ncclInvalidArgument, "asyncError argument is NULL");
  SNAP_CHECK(snapccl_comm_get(comm, __func__, &c));
  snapccl_transport_poll_error(c);
  *asyncError = (ncclResult_t)atomic_load(&c->async_state);
  if (*asyncError != ncclSuccess && *asyncError != ncclInProgress) {
    /* Make the reason what ncclGetLastError says now. */
    char reason[sizeof c->async_reason];
    pthread_mutex_lock(&c->lock);
    memcpy(reason, c->async_reason, sizeof reason);
    pthread_mutex_unlock(&c->lock);
    snapccl_error(*asyncError, __func__, "communicator %p rank %d: %s", (void*)comm, c->rank,
                  reason);
  }
  return ncclSuccess;
}

static ncclResult_t query(ncclComm_t comm, int* out, const char* what, const char* func,
                          struct snapccl_comm** c) {
  if (!out) return snapccl_error(ncclInvalidArgument, func, "%s argument is NULL", what);
  SNAP_CHECK(snapccl_comm_get(comm, func, c));
  if (atomic_load(&(*c)->async_state) == ncclInProgress) /* NCCL's code for this */
    return snapccl_error(ncclInvalidArgument, func, "communicator %p is still initializing",
                         (void*)comm);
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommCount, const ncclComm_t comm, int* count) {
  struct snapccl_comm* c;
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(snapccl_real()->ncclCommCount(rh, count));
  SNAP_CHECK(query(comm, count, "count", __func__, &c));
  *count = c->nranks;
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommCuDevice, const ncclComm_t comm, int* device) {
  struct snapccl_comm* c;
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(snapccl_real()->ncclCommCuDevice(rh, device));
  SNAP_CHECK(query(comm, device, "device", __func__, &c));
  *device = c->cuda_dev;
  return ncclSuccess;
}

NCCL_API(ncclResult_t, ncclCommUserRank, const ncclComm_t comm, int* rank) {
  struct snapccl_comm* c;
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) return snapccl_forwarded(snapccl_real()->ncclCommUserRank(rh, rank));
  SNAP_CHECK(query(comm, rank, "rank", __func__, &c));
  *rank = c->rank;
  return ncclSuccess;
}
