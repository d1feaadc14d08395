#include "group.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "error.h"
#include "log.h"
#include "transport/registration.h"

struct deferred_init {
  struct snapccl_comm* comm;
  ncclUniqueId id;
  int nranks, rank, cuda_dev;
  ncclResult_t result;
  pthread_t thread;
};

/* Per thread, like NCCL: a group belongs to the thread that opened it. */
static _Thread_local int t_depth;
static _Thread_local struct deferred_init* t_inits;
static _Thread_local int t_ninits, t_cap_inits;
static _Thread_local struct snapccl_coll* t_colls;
static _Thread_local int t_ncolls, t_cap_colls;
struct deferred_end {
  struct snapccl_comm* comm;
  int how;
};
static _Thread_local struct deferred_end* t_ends;
static _Thread_local int t_nends, t_cap_ends;
/* Registrations are collective: deferred like inits, for the same reason. */
struct deferred_reg {
  struct snapccl_comm* comm;
  struct snapccl_reg_range* range;
};
static _Thread_local struct deferred_reg* t_regs;
static _Thread_local int t_nregs, t_cap_regs;
static _Thread_local ncclResult_t t_group_error; /* first error of a deferred call */

int snapccl_group_depth(void) { return t_depth; }

void snapccl_group_record_error(ncclResult_t res) {
  if (t_depth > 0 && res != ncclSuccess && res != ncclInProgress && t_group_error == ncclSuccess)
    t_group_error = res;
}

ncclResult_t snapccl_group_start(void) {
  t_depth++;
  return ncclSuccess;
}

static int grow(void** arr, int* cap, int need, size_t elem) {
  if (need <= *cap) return 1;
  int ncap = *cap ? *cap * 2 : 16;
  while (ncap < need) ncap *= 2;
  void* n = realloc(*arr, (size_t)ncap * elem);
  if (!n) return 0;
  *arr = n;
  *cap = ncap;
  return 1;
}

ncclResult_t snapccl_group_defer_init(struct snapccl_comm* comm, const ncclUniqueId* id,
                                      int nranks, int rank, int cuda_dev) {
  if (!grow((void**)&t_inits, &t_cap_inits, t_ninits + 1, sizeof *t_inits))
    SNAP_FAIL(ncclSystemError, "out of memory deferring an init");
  struct deferred_init* d = &t_inits[t_ninits++];
  memset(d, 0, sizeof *d);
  d->comm = comm;
  d->id = *id;
  d->nranks = nranks;
  d->rank = rank;
  d->cuda_dev = cuda_dev;
  return ncclSuccess;
}

ncclResult_t snapccl_group_defer_coll(const struct snapccl_coll* coll) {
  if (!grow((void**)&t_colls, &t_cap_colls, t_ncolls + 1, sizeof *t_colls))
    SNAP_FAIL(ncclSystemError, "out of memory deferring a collective");
  t_colls[t_ncolls++] = *coll;
  return ncclSuccess;
}

ncclResult_t snapccl_group_defer_end(struct snapccl_comm* comm, int how) {
  if (!grow((void**)&t_ends, &t_cap_ends, t_nends + 1, sizeof *t_ends))
    SNAP_FAIL(ncclSystemError, "out of memory deferring the end of a communicator");
  t_ends[t_nends++] = (struct deferred_end){comm, how};
  return ncclSuccess;
}

ncclResult_t snapccl_group_defer_reg(struct snapccl_comm* comm, struct snapccl_reg_range* range) {
  if (!grow((void**)&t_regs, &t_cap_regs, t_nregs + 1, sizeof *t_regs))
    SNAP_FAIL(ncclSystemError, "out of memory deferring a registration");
  t_regs[t_nregs++] = (struct deferred_reg){comm, range};
  return ncclSuccess;
}

/* One communicator's deferred registrations, in call order, on a thread of their own:
 * each exchange waits for the peers, which this very thread may be driving too. */
struct reg_runner {
  struct snapccl_comm* comm;
  const struct deferred_reg* regs; /* the group's list (the runner takes its comm's) */
  int nregs;
  pthread_t thread;
  ncclResult_t result;
};

static void* reg_thread(void* arg) {
  struct reg_runner* r = arg;
  r->result = ncclSuccess;
  for (int i = 0; i < r->nregs; i++) {
    if (r->regs[i].comm != r->comm) continue;
    ncclResult_t res = snapccl_reg_complete(r->comm, r->regs[i].range);
    if (r->result == ncclSuccess) r->result = res;
  }
  return NULL;
}

static ncclResult_t run_regs(void) {
  const int n = t_nregs;
  if (n == 0) return ncclSuccess;
  ncclResult_t res = ncclSuccess;
  struct reg_runner* run = calloc((size_t)n, sizeof *run);
  int nrun = 0;
  for (int i = 0; run && i < n; i++) {
    int seen = 0;
    for (int j = 0; j < nrun && !seen; j++) seen = run[j].comm == t_regs[i].comm;
    if (seen) continue;
    struct reg_runner* r = &run[nrun++];
    *r = (struct reg_runner){t_regs[i].comm, t_regs, n, 0, ncclSuccess};
    if (pthread_create(&r->thread, NULL, reg_thread, r) != 0) {
      res = snapccl_error(ncclSystemError, __func__, "pthread_create failed");
      /* Its registrations never happen: their handles stay unknown, nothing leaks. */
      for (int k = i; k < n; k++)
        if (t_regs[k].comm == r->comm) snapccl_reg_abandon(t_regs[k].range);
      r->regs = NULL;
    }
  }
  if (!run) {
    res = snapccl_error(ncclSystemError, __func__, "out of memory running deferred registrations");
    for (int k = 0; k < n; k++) snapccl_reg_abandon(t_regs[k].range);
  }
  for (int j = 0; j < nrun; j++) {
    if (!run[j].regs) continue;
    pthread_join(run[j].thread, NULL);
    if (res == ncclSuccess) res = run[j].result;
  }
  free(run);
  t_nregs = 0;
  return res;
}

/* The deferred ends, in the order they were called. */
static ncclResult_t run_ends(void) {
  ncclResult_t res = ncclSuccess;
  for (int i = 0; i < t_nends; i++) {
    ncclResult_t r = ncclSuccess;
    if (t_ends[i].how == SNAPCCL_END_FINALIZE) r = snapccl_comm_finalize(t_ends[i].comm, "ncclGroupEnd");
    else snapccl_comm_release(t_ends[i].comm, (enum snapccl_end)t_ends[i].how);
    if (res == ncclSuccess) res = r;
  }
  t_nends = 0;
  return res;
}

static void* init_thread(void* arg) {
  struct deferred_init* d = arg;
  /* Settles the communicator: from here on it may be gone (the application may have
   * let go of it), so nothing here touches d->comm after this call. */
  d->result = snapccl_comm_run_init(d->comm, &d->id, d->nranks, d->rank, d->cuda_dev);
  return NULL;
}

/* Each rendezvous blocks until its peers arrive, so every deferred init of this thread
 * runs on its own thread at once; blocking ones are joined here, non-blocking ones run
 * on after ncclGroupEnd returns ncclInProgress. */
static ncclResult_t run_inits(int* in_progress) {
  ncclResult_t res = ncclSuccess;
  int n = t_ninits;
  *in_progress = 0;
  for (int i = 0; i < n; i++) {
    struct deferred_init* d = &t_inits[i];
    d->thread = 0;
    if (!d->comm->config.blocking) {
      d->result = snapccl_comm_init_async(d->comm, &d->id, d->nranks, d->rank, d->cuda_dev);
      if (d->result == ncclInProgress) *in_progress = 1;
    } else if (pthread_create(&d->thread, NULL, init_thread, d) != 0) {
      d->thread = 0;
      d->result = snapccl_error(ncclSystemError, __func__, "pthread_create failed");
      snapccl_comm_settle_failed(d->comm, d->result);
    }
  }
  for (int i = 0; i < n; i++) {
    struct deferred_init* d = &t_inits[i];
    if (d->thread) pthread_join(d->thread, NULL);
    if (d->result != ncclSuccess && d->result != ncclInProgress && res == ncclSuccess)
      res = d->result;
  }
  t_ninits = 0;
  return res;
}

ncclResult_t snapccl_group_end(void) {
  if (t_depth == 0)
    SNAP_FAIL(ncclInvalidUsage, "ncclGroupEnd called without a matching ncclGroupStart");
  if (--t_depth > 0) return ncclSuccess;

  int in_progress = 0;
  ncclResult_t res = t_group_error;
  t_group_error = ncclSuccess;
  ncclResult_t r = run_inits(&in_progress);
  if (res == ncclSuccess) res = r;
  r = run_regs();
  if (res == ncclSuccess) res = r;
  /* Like NCCL, every call is checked before any is launched: a launched call whose
   * peers' group then failed would wait for them until the timeout. */
  for (int i = 0; i < t_ncolls && res == ncclSuccess; i++) res = snapccl_coll_check(&t_colls[i]);
  for (int i = 0; i < t_ncolls && res == ncclSuccess; i++) res = snapccl_coll_issue(&t_colls[i]);
  t_ncolls = 0;
  r = run_ends();
  if (res == ncclSuccess) res = r;
  if (res == ncclSuccess && in_progress) return ncclInProgress;
  return res;
}

ncclResult_t snapccl_group_simulate_end(float* estimated_us) {
  if (t_depth == 0)
    SNAP_FAIL(ncclInvalidUsage, "ncclGroupSimulateEnd called without a matching ncclGroupStart");
  *estimated_us = 0.0f;
  for (int i = 0; i < t_ncolls; i++) *estimated_us += (float)snapccl_coll_estimate_us(&t_colls[i]);
  if (--t_depth > 0) return ncclSuccess;
  /* A simulation issues nothing: the deferred collectives are dropped, inits still run
   * (the communicators exist once the calls returned). */
  int in_progress = 0;
  ncclResult_t res = t_group_error;
  t_group_error = ncclSuccess;
  ncclResult_t r = run_inits(&in_progress);
  t_ncolls = 0;
  if (res == ncclSuccess) res = r;
  r = run_regs();
  if (res == ncclSuccess) res = r;
  r = run_ends();
  if (res == ncclSuccess) res = r;
  if (res == ncclSuccess && in_progress) return ncclInProgress;
  return res;
}
