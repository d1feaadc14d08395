#include "interpose.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap.h"
#include "comm.h"
#include "error.h"
#include "group.h"
#include "log.h"
#include "registry.h"
#include "transport/transport.h"

int snapccl_forward_target(ncclComm_t handle, ncclComm_t* real_handle) {
  if (snapccl_mode() == MODE_STANDALONE) return 0;
  struct snapccl_comm* c = snapccl_registry_find(handle);
  if (!c) { /* not ours at all: the real library's, or garbage it will judge */
    *real_handle = handle;
    return 1;
  }
  if (!c->real_comm) return 0; /* served by snapccl alone */
  *real_handle = c->real_comm;
  return 1;
}

ncclResult_t snapccl_forwarded(ncclResult_t res) {
  if (res != ncclSuccess && res != ncclInProgress) {
    snapccl_mark_real_error();
    snapccl_group_record_error(res);
  }
  return res;
}

/* ---------------------------------------------------------------- adoption & attach */

static pthread_mutex_t g_pending_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapccl_comm** g_pending;
static int g_npending, g_cap_pending;
static int push_pending_locked(struct snapccl_comm* c);

ncclResult_t snapccl_adopt_real_comm(ncclComm_t real_comm, int attach_now) {
  struct snapccl_comm* c;
  SNAP_CHECK(snapccl_comm_alloc(&c));
  c->real_comm = real_comm;
  c->owns_handle = 0; /* the application holds the real library's handle */
  /* Our state of it is "fine" from the start: the real library owns its init (and its
   * non-blocking progress); we only add our device errors once attached. */
  atomic_store(&c->async_state, ncclSuccess);
  atomic_store(&c->attach_pending, 1);
  ncclResult_t res = snapccl_registry_add(real_comm, c);
  if (res != ncclSuccess) {
    snapccl_comm_free(c);
    return res;
  }
  if (attach_now) {
    snapccl_maybe_attach(c, NULL);
    return ncclSuccess;
  }
  pthread_mutex_lock(&g_pending_lock);
  push_pending_locked(c);
  pthread_mutex_unlock(&g_pending_lock);
  return ncclSuccess;
}

/* Adds c to the pending list; 0 if out of memory (c then attaches at its first
 * collective outside a group). */
static int push_pending_locked(struct snapccl_comm* c) {
  for (int i = 0; i < g_npending; i++)
    if (g_pending[i] == c) return 1;
  if (g_npending == g_cap_pending) {
    int ncap = g_cap_pending ? 2 * g_cap_pending : 16;
    void* n = realloc(g_pending, (size_t)ncap * sizeof *g_pending);
    if (!n) return 0;
    g_pending = n;
    g_cap_pending = ncap;
  }
  g_pending[g_npending++] = c;
  return 1;
}

void snapccl_adopt_later(struct snapccl_comm* c) {
  pthread_mutex_lock(&g_pending_lock);
  push_pending_locked(c);
  pthread_mutex_unlock(&g_pending_lock);
}

/* A failed attach is not an error of the application's call: the communicator just
 * stays with the real library, which then runs every call. */
static void attach_now(struct snapccl_comm* c) {
  int expected = 1;
  if (!atomic_compare_exchange_strong(&c->attach_pending, &expected, 0)) return;
  const struct snapccl_real* real = snapccl_real();
  ncclResult_t st = ncclSuccess;
  if (real->ncclCommGetAsyncError) real->ncclCommGetAsyncError(c->real_comm, &st);
  if (st == ncclInProgress) { /* not ready yet: try again later */
    atomic_store(&c->attach_pending, 1);
    return;
  }
  int dev = -1;
  cudaGetDevice(&dev);
  ncclResult_t r = snapccl_comm_attach(c, c->real_comm);
  if (dev >= 0) cudaSetDevice(dev);
  if (r != ncclSuccess)
    INFO(SUB_INTERPOSE, "comm %p: not attached (%s); the real NCCL runs all its calls",
         (void*)c->real_comm, snapccl_last_error());
  else if (c->transport && snapccl_transport_unusable_reason(c))
    INFO(SUB_INTERPOSE, "comm %p: attached, but snapccl cannot run its collectives: %s",
         (void*)c->real_comm, snapccl_transport_unusable_reason(c));
}

void snapccl_maybe_attach(struct snapccl_comm* c, cudaStream_t stream) {
  if (!atomic_load(&c->attach_pending)) return;
  /* Attaching runs real collectives: never into a graph being captured. */
  enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  if (stream && CUDA_TRY(cudaStreamIsCapturing(stream, &cap)) == cudaSuccess &&
      cap != cudaStreamCaptureStatusNone)
    return;
  attach_now(c);
}

static void* attach_thread(void* p) {
  struct snapccl_comm* c = p;
  attach_now(c);
  return NULL;
}

ncclResult_t snapccl_attach_pending(void) {
  pthread_mutex_lock(&g_pending_lock);
  int n = g_npending;
  struct snapccl_comm** list = n ? malloc((size_t)n * sizeof *list) : NULL;
  if (list) memcpy(list, g_pending, (size_t)n * sizeof *list);
  g_npending = 0;
  pthread_mutex_unlock(&g_pending_lock);
  if (!list) return ncclSuccess;
  pthread_t* th = calloc((size_t)n, sizeof *th);
  for (int i = 0; i < n; i++)
    if (!th || pthread_create(&th[i], NULL, attach_thread, list[i]) != 0) {
      if (th) th[i] = 0;
      /* Left pending: its first collective attaches it. */
    }
  for (int i = 0; i < n; i++)
    if (th && th[i]) pthread_join(th[i], NULL);
  free(th);
  free(list);
  return ncclSuccess;
}

ncclResult_t snapccl_adopt_result(ncclResult_t r, ncclComm_t* comm) {
  if ((r == ncclSuccess || r == ncclInProgress) && comm && *comm) {
    int now = r == ncclSuccess && snapccl_group_depth() == 0;
    if (snapccl_adopt_real_comm(*comm, now) != ncclSuccess)
      WARN("could not track communicator %p; the real NCCL runs all its calls", (void*)*comm);
  }
  return snapccl_forwarded(r);
}

/* ---------------------------------------------------------------- shared-GPU comms */

ncclResult_t snapccl_make_real_underneath(struct snapccl_comm* c) {
  const struct snapccl_real* real = snapccl_real();
  if (!real || c->nlocal_gpus != c->nranks || !c->boot) return ncclSuccess;
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  if (c->rank == 0) SNAP_CHECK(snapccl_forwarded(real->ncclGetUniqueId(&id)));
  SNAP_CHECK(snapccl_bootstrap_bcast(c->boot, &id, sizeof id, 0));
  ncclComm_t rc = NULL;
  /* NCCL_COMM_BLOCKING=0 makes even this init non-blocking: in progress, it completes on
   * its own, and the real library answers for it meanwhile. */
  ncclResult_t r = snapccl_forwarded(real->ncclCommInitRank(&rc, c->nranks, id, c->rank));
  if (r != ncclSuccess && r != ncclInProgress) return r;
  c->real_comm = rc;
  INFO(SUB_INTERPOSE, "comm %p rank %d: every rank has its own GPU; real communicator %p "
       "underneath for the calls snapccl does not run", (void*)c, c->rank, (void*)rc);
  return ncclSuccess;
}

/* ---------------------------------------------------------------- counters */

void snapccl_count_call(struct snapccl_comm* comm, enum snapccl_coll_kind kind, size_t bytes,
                        int taken) {
  if (!comm || (unsigned)kind >= COLL_NKINDS) return;
  const int cls = snapccl_size_class(bytes);
  atomic_ullong* slot = taken ? &comm->taken[kind][cls] : &comm->forwarded[kind][cls];
  atomic_fetch_add_explicit(slot, 1, memory_order_relaxed);
}

void snapccl_print_counts(const struct snapccl_comm* comm) {
  if (!snapccl_log_enabled(LOG_INFO, SUB_INTERPOSE)) return;
  for (int k = 0; k < COLL_NKINDS; k++) {
    char line[1024];
    int len = 0, any = 0;
    unsigned long long tt = 0, tf = 0;
    for (int cls = 0; cls < SNAPCCL_SIZE_CLASSES; cls++) {
      unsigned long long t = comm->taken[k][cls], f = comm->forwarded[k][cls];
      if (!t && !f) continue;
      tt += t;
      tf += f;
      any = 1;
      if (len < (int)sizeof line - 64)
        len += snprintf(line + len, sizeof line - (size_t)len, " %lluB:%llu/%llu",
                        1ull << cls, t, f);
    }
    if (any)
      INFO(SUB_INTERPOSE, "comm %p rank %d %s: %llu taken by snapccl, %llu forwarded to NCCL "
           "(by size class, taken/forwarded):%s", (const void*)comm, comm->rank,
           snapccl_coll_name((enum snapccl_coll_kind)k), tt, tf, len ? line : "");
  }
}
