/* Transport setup and teardown: agree on sizes, allocate and map the workspaces, probe,
 * and own the host-mapped status block that carries abort and device errors. */
#include "transport/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bootstrap.h"
#include "env.h"
#include "error.h"
#include "kernels/launch.h"
#include "log.h"
#include "oob.h"
#include "transport/multicast.h"
#include "transport/transport_impl.h"

ncclResult_t snapccl_transport_local_info(struct snapccl_comm* comm, struct snapccl_peer_info* me) {
  (void)comm;
  me->max_blocks = 0; /* decided in setup, once we know who shares this GPU */
  return ncclSuccess;
}

/* Ranks of one process on one GPU run their kernels at once and each spins until the
 * others arrive, so what a rank may keep resident is its share of the GPU, of which half
 * is kept back for other communicators and for the application's own kernels. */
static int local_share(const struct snapccl_comm* comm) {
  return comm->ranks_on_dev_in_proc > 0 ? comm->ranks_on_dev_in_proc : 1;
}

/* Blocks of SNAPCCL_THREADS this rank can promise to keep resident. */
static int local_block_cap(const struct snapccl_comm* comm, int blocks_per_sm) {
  const struct snapccl_peer_info* me = &comm->peers[comm->rank];
  int cap = me->sm_count * (blocks_per_sm > 0 ? blocks_per_sm : 1) / 2 / local_share(comm);
  const struct snapccl_env* env = snapccl_env();
  if (env->max_blocks > 0 && env->max_blocks < cap) cap = env->max_blocks;
  if (comm->config.max_ctas > 0 && comm->config.max_ctas < cap) cap = comm->config.max_ctas;
  if (cap > SNAPCCL_MAX_BLOCKS) cap = SNAPCCL_MAX_BLOCKS;
  return cap < 1 ? 1 : cap;
}

/* Blocks that fill a whole SM each (a kernel of wider blocks) this rank can promise. */
static int local_whole_sms(const struct snapccl_comm* comm) {
  int sms = comm->peers[comm->rank].sm_count / 2 / local_share(comm);
  return sms < 1 ? 1 : sms;
}

struct sizing {
  int32_t max_blocks;
  int32_t whole_sms;
  int32_t kernels_ok;
  int64_t buffsize;
  int64_t timeout_ms;
};

static ncclResult_t agree_sizing(struct snapccl_comm* comm, struct sizing* out) {
  struct sizing* all = calloc((size_t)comm->nranks, sizeof *all);
  if (!all) SNAP_FAIL(ncclSystemError, "out of memory");
  const struct snapccl_env* env = snapccl_env();
  int per_sm = 0, ok = snapccl_kernels_runnable(&per_sm);
  all[comm->rank] = (struct sizing){local_block_cap(comm, per_sm), local_whole_sms(comm), ok, env->buffsize,
                                    env->timeout_ms};
  ncclResult_t res = snapccl_oob_allgather(comm, all, sizeof *all);
  if (res == ncclSuccess) {
    *out = all[0];
    for (int r = 1; r < comm->nranks; r++) {
      if (all[r].max_blocks < out->max_blocks) out->max_blocks = all[r].max_blocks;
      if (all[r].whole_sms < out->whole_sms) out->whole_sms = all[r].whole_sms;
      if (all[r].buffsize < out->buffsize) out->buffsize = all[r].buffsize;
      out->kernels_ok &= all[r].kernels_ok;
    }
    out->timeout_ms = env->timeout_ms; /* local: only this rank's waits use it */
  }
  free(all);
  return res;
}

static ncclResult_t alloc_local(struct snapccl_comm* comm, struct snapccl_transport* t) {
  SNAP_CHECK(snapccl_ws_alloc(t, comm->cuda_dev));
  void* h = NULL;
  CUDA_CHECK(cudaHostAlloc(&h, sizeof(struct snapccl_status), cudaHostAllocMapped));
  t->status_host = h;
  memset(h, 0, sizeof(struct snapccl_status));
  void* d = NULL;
  CUDA_CHECK(cudaHostGetDevicePointer(&d, h, 0));
  t->status_dev = d;
  CUDA_CHECK(cudaEventCreateWithFlags(&t->order_event, cudaEventDisableTiming));
  return ncclSuccess;
}

ncclResult_t snapccl_transport_setup(struct snapccl_comm* comm) {
  struct snapccl_transport* t = calloc(1, sizeof *t);
  if (!t) SNAP_FAIL(ncclSystemError, "out of memory");
  comm->transport = t;
  pthread_mutex_init(&t->lock, NULL);
  t->usable = 1;
  struct sizing sz = {0};
  SNAP_CHECK(agree_sizing(comm, &sz));
  if (comm->nranks > SNAPCCL_MAX_RANKS) {
    t->usable = 0;
    snprintf(t->reason, sizeof t->reason, "%d ranks; snapccl's kernels serve at most %d",
             comm->nranks, SNAPCCL_MAX_RANKS);
    return ncclSuccess; /* a valid communicator, whose collectives decline */
  }
  if (!sz.kernels_ok) {
    t->usable = 0;
    snprintf(t->reason, sizeof t->reason,
             "snapccl's kernels were not built for every GPU of this communicator (meson "
             "option gpu_arch)");
    return ncclSuccess;
  }
  t->max_blocks = sz.max_blocks;
  t->whole_sms = sz.whole_sms;
  snapccl_ws_layout_compute(&t->lay, comm->nranks, sz.max_blocks, sz.buffsize);
  /* A local failure must not leave the peers waiting in the exchanges below: note it,
   * carry on through every collective step, and let the agreement disable the
   * transport on all ranks. */
  if (alloc_local(comm, t) != ncclSuccess) {
    t->usable = 0;
    snprintf(t->reason, sizeof t->reason, "rank %d: %s", comm->rank, snapccl_last_error());
  }
  SNAP_CHECK(snapccl_peers_map(comm, t));
  SNAP_CHECK(snapccl_peers_probe(comm, t));
  SNAP_CHECK(snapccl_nvls_setup(comm)); /* transport/multicast.c: gate, then multicast buffer */
  snapccl_topology_log(comm);

  struct snapccl_kargs* k = &t->kargs;
  memset(k, 0, sizeof *k);
  for (int r = 0; r < comm->nranks; r++) k->ws[r] = t->ws[r];
  k->lay = t->lay;
  k->status = t->status_dev;
  k->timeout_ns = (unsigned long long)(sz.timeout_ms > 0 ? sz.timeout_ms : 1) * 1000000ull;
  k->rank = comm->rank;
  k->nranks = comm->nranks;
  /* Nobody may push into a workspace before its owner initialised it. */
  SNAP_CHECK(snapccl_oob_barrier(comm));
  INFO(SUB_TRANSPORT,
       "comm rank %d: %s; workspace %.1f MiB (staging chunk %llu B, one-shot %llu B), "
       "%d blocks per call at most (%d filling an SM each), device timeout %lld ms",
       comm->rank, t->usable ? "P2P ready" : t->reason, (double)t->lay.total / (1 << 20),
       t->lay.chunk_bytes, t->lay.oneshot_bytes, t->max_blocks, t->whole_sms, (long long)sz.timeout_ms);
  return ncclSuccess;
}

const char* snapccl_transport_unusable_reason(const struct snapccl_comm* comm) {
  const struct snapccl_transport* t = comm->transport;
  if (!t) return "the communicator has no transport";
  return t->usable ? NULL : t->reason;
}

int snapccl_transport_max_blocks(const struct snapccl_comm* comm) {
  return comm->transport ? comm->transport->max_blocks : 0;
}

int snapccl_transport_whole_sms(const struct snapccl_comm* comm) { return comm->transport->whole_sms; }

const struct snapccl_ws_layout* snapccl_transport_layout(const struct snapccl_comm* comm) {
  return &comm->transport->lay;
}

const struct snapccl_kargs* snapccl_transport_kargs(const struct snapccl_comm* comm) {
  return &comm->transport->kargs;
}

static const char* where_name(int where) {
  static const char* const names[] = {"one-shot flag", "reduce-scatter flag", "all-gather flag",
                                      "Lamport data", [SNAPCCL_WHERE_CE] = "copy-engine flag"};
  return where >= 0 && where < (int)(sizeof names / sizeof names[0]) ? names[where] : "?";
}

void snapccl_transport_poll_error(struct snapccl_comm* comm) {
  struct snapccl_transport* t = comm->transport;
  if (!t || !t->status_host) return;
  int e = t->status_host->error;
  if (e == DEVERR_NONE) return;
  char reason[200];
  if (e == DEVERR_TIMEOUT)
    snprintf(reason, sizeof reason,
             "a collective waited more than SNAPCCL_TIMEOUT_MS=%lld ms for rank %d (%s); the "
             "peer died, hangs, or did not call the same collective",
             (long long)(t->kargs.timeout_ns / 1000000ull), t->status_host->error_peer,
             where_name(t->status_host->error_where));
  else
    snprintf(reason, sizeof reason, "a collective was aborted (ncclCommAbort) while waiting for rank %d",
             t->status_host->error_peer);
  snapccl_comm_set_async_error(comm, ncclRemoteError, reason);
}

void snapccl_transport_abort(struct snapccl_comm* comm) {
  struct snapccl_transport* t = comm->transport;
  if (t && t->status_host) {
    t->status_host->abort = 1;
    __sync_synchronize();
  }
}

int snapccl_transport_quiesce(struct snapccl_comm* comm, double timeout_s) {
  struct snapccl_transport* t = comm->transport;
  if (!t || !t->have_last_stream) return 0;
  int dev = -1;
  (void)CUDA_TRY(cudaGetDevice(&dev));
  (void)CUDA_TRY(cudaSetDevice(comm->cuda_dev));
  /* order.c records order_event after every launch outside a capture, on the stream
   * of that launch, and every later launch on another stream waits for it first: the
   * event covers all of our work. It is only queried here, never recorded again: the
   * application may already have destroyed the stream of the last call (NCCL allows
   * cudaStreamDestroy before ncclCommDestroy), and recording on a destroyed stream
   * crashes inside the driver. */
  int busy = 0;
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    cudaError_t q = CUDA_TRY(cudaEventQuery(t->order_event));
    if (q != cudaErrorNotReady) break;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if ((double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec) > timeout_s) {
      busy = 1;
      break;
    }
    struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  if (dev >= 0) (void)CUDA_TRY(cudaSetDevice(dev));
  return busy;
}

void snapccl_transport_free(struct snapccl_comm* comm) {
  struct snapccl_transport* t = comm->transport;
  if (!t) return;
  /* Teardown goes on past failures: each call's error is cleared, none is reported. */
  int dev = -1;
  (void)CUDA_TRY(cudaGetDevice(&dev));
  if (comm->cuda_dev >= 0) (void)CUDA_TRY(cudaSetDevice(comm->cuda_dev));
  snapccl_peers_unmap(comm, t);
  snapccl_nvls_free(comm);
  if (t->ws_local) (void)CUDA_TRY(cudaFree(t->ws_local));
  if (t->status_host) (void)CUDA_TRY(cudaFreeHost(t->status_host));
  if (t->order_event) (void)CUDA_TRY(cudaEventDestroy(t->order_event));
  if (dev >= 0) (void)CUDA_TRY(cudaSetDevice(dev));
  pthread_mutex_destroy(&t->lock);
  free(t);
  comm->transport = NULL;
}
