#include "comm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "algos/select_table.h"
#include "bootstrap.h"
#include "env.h"
#include "error.h"
#include "group.h"
#include "identity.h"
#include "interpose.h"
#include "log.h"
#include "oob.h"
#include "real_nccl.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/registration.h"
#include "transport/transport.h"
#include "tuning.h"

/* Bound on how long ncclCommAbort waits for a running init to settle, and then for
 * kernels to notice the abort word. */
#define ABORT_QUIESCE_S 1.0

ncclResult_t snapccl_comm_alloc(struct snapccl_comm** out) {
  struct snapccl_comm* c = calloc(1, sizeof *c);
  if (!c) SNAP_FAIL(ncclSystemError, "out of memory allocating a communicator");
  c->abort_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (c->abort_fd < 0) {
    free(c);
    SNAP_FAIL(ncclSystemError, "eventfd for a communicator failed: %s", strerror(errno));
  }
  c->magic = SNAPCCL_COMM_MAGIC;
  c->owns_handle = 1;
  c->rank = -1;
  c->cuda_dev = -1;
  atomic_store(&c->async_state, ncclInProgress);
  pthread_mutex_init(&c->lock, NULL);
  *out = c;
  return ncclSuccess;
}

void snapccl_comm_set_async_error(struct snapccl_comm* comm, ncclResult_t code,
                                  const char* reason) {
  int expected = ncclSuccess;
  pthread_mutex_lock(&comm->lock);
  if (atomic_compare_exchange_strong(&comm->async_state, &expected, (int)code) ||
      expected == ncclInProgress) {
    atomic_store(&comm->async_state, (int)code);
    snprintf(comm->async_reason, sizeof comm->async_reason, "%s", reason);
  }
  pthread_mutex_unlock(&comm->lock);
}

static ncclResult_t local_info(struct snapccl_comm* comm, struct snapccl_peer_info* me) {
  struct cudaDeviceProp prop;
  memset(me, 0, sizeof *me);
  CUDA_CHECK(cudaGetDeviceProperties(&prop, comm->cuda_dev));
  me->rank = comm->rank;
  me->cuda_dev = comm->cuda_dev;
  me->pid = (int32_t)getpid();
  me->sm_count = prop.multiProcessorCount;
  me->cc_major = prop.major;
  me->cc_minor = prop.minor;
  me->host_hash = snapccl_host_hash();
  me->proc_hash = snapccl_proc_hash();
  memcpy(me->gpu_uuid, prop.uuid.bytes, sizeof me->gpu_uuid);
  CUDA_CHECK(cudaDeviceGetPCIBusId(me->bus_id, (int)sizeof me->bus_id, comm->cuda_dev));
  SNAP_CHECK(snapccl_transport_local_info(comm, me));
  return ncclSuccess;
}

static int same_gpu(const struct snapccl_peer_info* a, const struct snapccl_peer_info* b) {
  return a->host_hash == b->host_hash && memcmp(a->gpu_uuid, b->gpu_uuid, sizeof a->gpu_uuid) == 0;
}

/* Decisions every rank takes from the same allgathered table, so all ranks agree:
 * either all of them fail here or none does. */
static ncclResult_t check_and_count(struct snapccl_comm* comm) {
  const struct snapccl_peer_info* p = comm->peers;
  const struct snapccl_peer_info* me = &p[comm->rank];
  for (int r = 0; r < comm->nranks; r++) {
    if (p[r].host_hash != p[0].host_hash)
      SNAP_FAIL(ncclInvalidUsage,
                "rank %d is on another host than rank 0; snapccl serves the ranks of one host",
                r);
  }
  if (!snapccl_env()->shared_gpu) {
    for (int a = 0; a < comm->nranks; a++)
      for (int b = a + 1; b < comm->nranks; b++)
        if (same_gpu(&p[a], &p[b]))
          SNAP_FAIL(ncclInvalidUsage,
                    "Duplicate GPU detected : rank %d and rank %d both on CUDA device %s "
                    "(set SNAPCCL_SHARED_GPU=1 to allow ranks to share a GPU)",
                    a, b, p[a].bus_id);
  }
  comm->ranks_on_dev = comm->ranks_in_proc = comm->ranks_on_dev_in_proc = 0;
  comm->nlocal_gpus = 0;
  for (int r = 0; r < comm->nranks; r++) {
    int dev = same_gpu(&p[r], me), proc = p[r].proc_hash == me->proc_hash;
    comm->ranks_on_dev += dev;
    comm->ranks_in_proc += proc;
    comm->ranks_on_dev_in_proc += dev && proc;
    int first = 1; /* count distinct GPUs: r is the first rank on its GPU */
    for (int q = 0; q < r && first; q++) first = !same_gpu(&p[q], &p[r]);
    comm->nlocal_gpus += first;
  }
  return ncclSuccess;
}

static void log_table_line(void* arg, const char* line) {
  const struct snapccl_comm* comm = arg;
  INFO(SUB_ALGO, "comm %p selection: %s", (void*)comm, line);
}

/* Everything after the rendezvous: who is where, the checks, the transport. */
static ncclResult_t setup_peers(struct snapccl_comm* comm, const char* mode) {
  struct snapccl_peer_info me;
  SNAP_CHECK(local_info(comm, &me));
  comm->peers = calloc((size_t)comm->nranks, sizeof *comm->peers);
  if (!comm->peers) SNAP_FAIL(ncclSystemError, "out of memory for %d peers", comm->nranks);
  comm->peers[comm->rank] = me;
  SNAP_CHECK(snapccl_oob_allgather(comm, comm->peers, sizeof me));
  SNAP_CHECK(check_and_count(comm));
  char key[SNAPCCL_TUNING_KEY_LEN];
  snapccl_tuning_comm_key(comm, key, sizeof key);
  SNAP_CHECK(snapccl_tuning_setup(comm, key));
  SNAP_CHECK(snapccl_transport_setup(comm));
  if (comm->rank == 0 && snapccl_log_enabled(LOG_INFO, SUB_ALGO)) snapccl_select_table(comm, log_table_line, comm);
  INFO(SUB_INIT,
       "comm %p commId 0x%llx rank %d nRanks %d cudaDev %d busId %s ranksOnDev %d ranksInProc %d "
       "gpus %d mode %s version %d.%d.%d (NCCL API %d) - Init COMPLETE",
       (void*)comm, (unsigned long long)comm->id_hash, comm->rank, comm->nranks, comm->cuda_dev,
       me.bus_id, comm->ranks_on_dev, comm->ranks_in_proc, comm->nlocal_gpus, mode, SNAPCCL_MAJOR,
       SNAPCCL_MINOR, SNAPCCL_PATCH, NCCL_VERSION_CODE);
  return ncclSuccess;
}

ncclResult_t snapccl_comm_init(struct snapccl_comm* comm, const ncclUniqueId* id, int nranks,
                               int rank, int cuda_dev) {
  ncclResult_t res = ncclSuccess;
  comm->rank = rank;
  comm->nranks = nranks;
  comm->cuda_dev = cuda_dev;
  comm->id_hash = snapccl_hash_bytes(id, sizeof *id, 0);
  snapccl_log_set_device(cuda_dev);
  if (atomic_load(&comm->aborted)) {
    res = snapccl_error(ncclRemoteError, __func__, "rank %d: the communicator was aborted "
                        "before its init ran", rank);
    goto fail;
  }
  /* The rendezvous first: it needs no GPU, and the comm's abort cancels it. */
  SNAP_CHECK_GOTO(snapccl_bootstrap_init_abortable(id, rank, nranks, comm->abort_fd, &comm->boot),
                  res, fail);
  CUDA_CHECK_GOTO(cudaSetDevice(cuda_dev), res, fail);
  SNAP_CHECK_GOTO(setup_peers(comm, snapccl_mode() == MODE_STANDALONE ? "standalone" : "own (ranks share GPUs)"), res, fail);
  if (snapccl_mode() != MODE_STANDALONE && snapccl_make_real_underneath(comm) != ncclSuccess)
    WARN("rank %d: no real communicator underneath (%s); calls snapccl does not run will fail",
         rank, snapccl_last_error());
  atomic_store(&comm->async_state, ncclSuccess);
  return ncclSuccess;
fail:
  snapccl_comm_set_async_error(comm, res, snapccl_last_error());
  return res;
}

ncclResult_t snapccl_comm_attach(struct snapccl_comm* comm, ncclComm_t real_comm) {
  const struct snapccl_real* real = snapccl_real();
  ncclResult_t res = ncclSuccess;
  if (!real) SNAP_FAIL(ncclInternalError, "no real NCCL to attach to");
  comm->real_comm = real_comm;
  comm->id_hash = (uint64_t)(uintptr_t)real_comm;
  SNAP_CHECK_GOTO(real->ncclCommCount(real_comm, &comm->nranks), res, fail);
  SNAP_CHECK_GOTO(real->ncclCommUserRank(real_comm, &comm->rank), res, fail);
  SNAP_CHECK_GOTO(real->ncclCommCuDevice(real_comm, &comm->cuda_dev), res, fail);
  snapccl_log_set_device(comm->cuda_dev);
  CUDA_CHECK_GOTO(cudaSetDevice(comm->cuda_dev), res, fail);
  CUDA_CHECK_GOTO(cudaStreamCreateWithFlags(&comm->oob_stream, cudaStreamNonBlocking), res, fail);
  SNAP_CHECK_GOTO(setup_peers(comm, snapccl_mode_name(snapccl_mode())), res, fail);
  return ncclSuccess;
fail:
  /* Not the application's failure: the real communicator is fine and keeps every call.
   * Our half-built state goes, so nothing of ours runs on it. */
  snapccl_transport_free(comm);
  return res;
}

struct async_init {
  struct snapccl_comm* comm;
  ncclUniqueId id;
  int nranks, rank, cuda_dev;
};

static void* async_init_main(void* arg) {
  struct async_init* a = arg;
  snapccl_comm_run_init(a->comm, &a->id, a->nranks, a->rank, a->cuda_dev);
  free(a);
  return NULL;
}

/* What ncclCommDestroy and ncclCommAbort do once nothing else uses the communicator:
 * kernels get `bound_s` to finish (they poll the abort word and their deadline), past
 * which the device memory is leaked rather than freed under them. */
static void teardown_now(struct snapccl_comm* c, enum snapccl_end how) {
  double bound_s = how == SNAPCCL_END_ABORT
                       ? ABORT_QUIESCE_S
                       : (double)snapccl_env()->timeout_ms / 1000.0 + 1.0;
  const char* what = how == SNAPCCL_END_ABORT ? "Abort" : "Destroy";
  snapccl_print_counts(c);
  if (snapccl_transport_quiesce(c, bound_s) != 0) {
    WARN("%s: kernels of communicator %p did not finish within %.1f s; leaking its device "
         "memory", what, (void*)c, bound_s);
    return;
  }
  INFO(SUB_INIT, "comm %p rank %d nRanks %d - %s COMPLETE", (void*)c, c->rank, c->nranks, what);
  snapccl_comm_free(c);
}

ncclResult_t snapccl_comm_run_init(struct snapccl_comm* comm, const ncclUniqueId* id, int nranks,
                                   int rank, int cuda_dev) {
  ncclResult_t res = snapccl_comm_init(comm, id, nranks, rank, cuda_dev);
  if (atomic_load(&comm->aborted)) res = ncclSuccess;
  /* The last touch: once settled, an application's abort may free it at once; once
   * orphaned, nobody but us holds it. */
  if (atomic_exchange(&comm->init_busy, INIT_SETTLED) == INIT_ORPHANED)
    teardown_now(comm, (enum snapccl_end)comm->teardown);
  return res;
}

void snapccl_comm_settle_failed(struct snapccl_comm* comm, ncclResult_t res) {
  snapccl_comm_set_async_error(comm, res, snapccl_last_error());
  if (atomic_exchange(&comm->init_busy, INIT_SETTLED) == INIT_ORPHANED)
    teardown_now(comm, (enum snapccl_end)comm->teardown);
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

ncclResult_t snapccl_comm_finalize(struct snapccl_comm* c, const char* func) {
  ncclResult_t r = ncclSuccess;
  if (atomic_load(&c->init_busy) == INIT_SETTLED &&
      snapccl_transport_quiesce(c, (double)snapccl_env()->timeout_ms / 1000.0 + 1.0) != 0)
    r = snapccl_error(ncclRemoteError, func, "kernels of communicator %p did not finish",
                      (void*)c);
  atomic_store(&c->finalized, 1);
  snapccl_transport_poll_error(c);
  return r;
}

void snapccl_comm_signal_abort(struct snapccl_comm* c) {
  atomic_store(&c->aborted, 1);
  snapccl_transport_abort(c);
  uint64_t one = 1;
  /* The eventfd stays readable (nobody reads it): every wait, now or later, sees it. */
  if (write(c->abort_fd, &one, sizeof one) < 0 && errno != EAGAIN)
    WARN("comm %p: signalling the abort failed: %s", (void*)c, strerror(errno));
}

void snapccl_comm_release(struct snapccl_comm* c, enum snapccl_end how) {
  if (how == SNAPCCL_END_ABORT) {
    /* The abort word and eventfd were set: a running init fails within a poll. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
      if (atomic_load(&c->init_busy) == INIT_SETTLED) break;
      clock_gettime(CLOCK_MONOTONIC, &t);
      if ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) * 1e-9 >= ABORT_QUIESCE_S) break;
      sleep_ms(1);
    }
  }
  c->teardown = (int)how;
  int busy = INIT_BUSY;
  if (atomic_compare_exchange_strong(&c->init_busy, &busy, INIT_ORPHANED)) {
    INFO(SUB_INIT, "comm %p rank %d: its init is still running; it ends the communicator "
         "when it returns", (void*)c, c->rank);
    return;
  }
  teardown_now(c, how);
}

ncclResult_t snapccl_comm_init_async(struct snapccl_comm* comm, const ncclUniqueId* id,
                                     int nranks, int rank, int cuda_dev) {
  struct async_init* a = malloc(sizeof *a);
  if (!a) SNAP_FAIL(ncclSystemError, "out of memory");
  *a = (struct async_init){comm, *id, nranks, rank, cuda_dev};
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int err = pthread_create(&t, &attr, async_init_main, a);
  pthread_attr_destroy(&attr);
  if (err) {
    free(a);
    ncclResult_t res = snapccl_error(ncclSystemError, __func__, "pthread_create failed: %s",
                                     strerror(err));
    snapccl_comm_settle_failed(comm, res);
    return res;
  }
  return ncclInProgress;
}

ncclResult_t snapccl_comm_create(ncclComm_t* out, const ncclUniqueId* id, int nranks, int rank,
                                 const struct snapccl_config* cfg, int cuda_dev) {
  struct snapccl_comm* c = NULL;
  SNAP_CHECK(snapccl_comm_alloc(&c));
  c->config = *cfg;
  ncclResult_t res = snapccl_registry_add(c, c);
  if (res != ncclSuccess) {
    snapccl_comm_free(c);
    return res;
  }
  *out = (ncclComm_t)c; /* the handle exists at once, as NCCL's does, even in a group */
  /* Deferred and non-blocking inits run while the application holds the handle. */
  int later = snapccl_group_depth() > 0 || !cfg->blocking;
  if (later) atomic_store(&c->init_busy, INIT_BUSY);
  if (snapccl_group_depth() > 0) res = snapccl_group_defer_init(c, id, nranks, rank, cuda_dev);
  else if (!cfg->blocking) res = snapccl_comm_init_async(c, id, nranks, rank, cuda_dev);
  else res = snapccl_comm_init(c, id, nranks, rank, cuda_dev);
  if (res != ncclSuccess && res != ncclInProgress) {
    snapccl_registry_remove(c);
    snapccl_comm_free(c);
    *out = NULL;
  }
  return res;
}

void snapccl_comm_free(struct snapccl_comm* comm) {
  if (!comm) return;
  snapccl_reg_free_all(comm);
  snapccl_transport_free(comm);
  if (comm->boot) snapccl_bootstrap_destroy(comm->boot);
  if (comm->oob_stream) cudaStreamDestroy(comm->oob_stream);
  /* A real communicator underneath is not freed here: ncclCommDestroy / ncclCommAbort
   * forward to it, each with its own semantics. */
  free(comm->peers);
  free(comm->tuning);
  pthread_mutex_destroy(&comm->lock);
  if (comm->abort_fd >= 0) close(comm->abort_fd);
  comm->magic = 0;
  free(comm);
}

ncclResult_t snapccl_comm_get(ncclComm_t handle, const char* func, struct snapccl_comm** out) {
  if (!handle) return snapccl_error(ncclInvalidArgument, func, "comm argument is NULL");
  struct snapccl_comm* c = snapccl_registry_find(handle);
  if (!c || c->magic != SNAPCCL_COMM_MAGIC)
    return snapccl_error(ncclInvalidArgument, func,
                         "communicator %p is not valid (destroyed, or never created)",
                         (void*)handle);
  *out = c;
  return ncclSuccess;
}

ncclResult_t snapccl_comm_get_ready(ncclComm_t handle, const char* func,
                                    struct snapccl_comm** out) {
  SNAP_CHECK(snapccl_comm_get(handle, func, out));
  int st = atomic_load(&(*out)->async_state);
  /* NCCL's answers: a communicator not ready yet is an invalid argument; one in error
   * state returns its error. */
  if (st == ncclInProgress)
    return snapccl_error(ncclInvalidArgument, func,
                         "communicator %p is still initializing (non-blocking init or group "
                         "not ended)", (void*)handle);
  if (st != ncclSuccess)
    return snapccl_error((ncclResult_t)st, func, "communicator %p is in error state: %s",
                         (void*)handle, (*out)->async_reason);
  if (atomic_load(&(*out)->aborted))
    return snapccl_error(ncclInvalidUsage, func, "communicator %p was aborted", (void*)handle);
  return ncclSuccess;
}
