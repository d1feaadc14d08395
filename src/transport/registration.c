/* Buffer registration (ncclCommRegister, ncclCommWindowRegister): every rank's
 * counterpart of a registered range mapped into every rank, exchanged once per
 * registration, collectively, over the communicator's out-of-band channel.
 *
 * How a peer's memory reaches this process:
 * - same process: its pointer as it is (peer access is enabled by the transport where
 *   the GPUs differ; ncclMemAlloc maps its memory for every GPU that can reach it);
 * - cudaMalloc memory of another process: a legacy IPC handle of the allocation's start
 *   (cuMemGetAddressRange), opened here, plus the range's offset in it;
 * - cuMem memory of another process (ncclMemAlloc, PyTorch's expandable segments): the
 *   range may span several mappings (segments); the owner exports each segment's
 *   allocation handle as a POSIX file descriptor and serves them over the fd-passing
 *   socket (fd_passing.h), owners taking turns in rank order so that no two ranks wait
 *   on each other; the importer reserves one contiguous address range and maps every
 *   segment at its offset.
 * Imports are shared through the cache (reg_cache.h) by every range reaching into the
 * same allocation. Every rank ends with the same verdict (snapccl_oob_agree): either
 * every rank maps every rank's range (`all_mapped`), or the range is kept for this rank
 * alone and the collectives stage it like unregistered memory. Registration is never
 * an error for memory we cannot map; it is one when the out-of-band exchange fails (a
 * peer that does not join within SNAPCCL_BOOTSTRAP_TIMEOUT), after which this
 * communicator registers locally only. docs/ARCHITECTURE.md, "Registered buffers". */
#include <cuda.h>
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "env.h"
#include "error.h"
#include "log.h"
#include "oob.h"
#include "transport/fd_passing.h"
#include "transport/reg_cache.h"
#include "transport/reg_memory.h"
#include "transport/registration.h"
#include "transport/transport.h"
#include "transport/vmm_driver.h"
#include "kernels/kargs.h"

struct snapccl_reg_table {
  pthread_mutex_t lock;          /* the cache */
  pthread_mutex_t exchange_lock; /* one registration's exchange at a time */
  struct snapccl_reg_cache cache;
  int broken; /* an exchange failed: later registrations are local only */
  unsigned long long mapped, local_only;
  /* Some registration was mapped in every rank: from then on the two-shot all-reduce runs
   * its descriptor exchange. Set by a collective verdict and never cleared, so every rank
   * holds the same value for the same call. */
  atomic_int ever_mapped;
  atomic_ullong calls_registered; /* two-shot calls whose own buffers were registered */
};

static struct snapccl_reg_table* table_of(struct snapccl_comm* comm) {
  pthread_mutex_lock(&comm->lock);
  struct snapccl_reg_table* t = comm->reg;
  if (!t) {
    t = calloc(1, sizeof *t);
    if (t) {
      pthread_mutex_init(&t->lock, NULL);
      pthread_mutex_init(&t->exchange_lock, NULL);
      comm->reg = t;
    }
  }
  pthread_mutex_unlock(&comm->lock);
  return t;
}

/* A peer of this process: device memory it could describe (not host or managed memory),
 * and on another GPU: its cudaMalloc memory is reachable (the
 * transport enabled peer access), its cuMem memory only where the owner granted this
 * GPU access to every segment (ncclMemAlloc does; an allocator that maps for its own GPU
 * alone does not). 1 if the pointer can be used here as it is. */
static int reachable_here(struct snapccl_comm* comm, int r, const struct reg_hdr* h, const struct reg_seg* segs,
                          char* why, size_t len) {
  const struct snapccl_peer_info* me = &comm->peers[comm->rank];
  if (h->kind == MEM_NONE) {
    snprintf(why, len, "rank %d's range: %s", r, h->reason);
    return 0;
  }
  if (h->kind != MEM_VMM || !memcmp(me->gpu_uuid, comm->peers[r].gpu_uuid, sizeof me->gpu_uuid)) return 1;
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(why, len);
  if (!d) return 0;
  CUmemLocation loc;
  memset(&loc, 0, sizeof loc);
  loc.type = CU_MEM_LOCATION_TYPE_DEVICE;
  loc.id = comm->cuda_dev;
  for (int i = 0; i < h->nsegs; i++) {
    unsigned long long flags = 0;
    if (d->mem_get_access(&flags, &loc, (CUdeviceptr)(h->start + segs[i].offset)) != CUDA_SUCCESS ||
        flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) {
      snprintf(why, len, "rank %d's cuMem memory is not mapped for this GPU", r);
      return 0;
    }
  }
  return 1;
}

/* Maps rank r's counterpart into range g (rank r of another process). */
static int map_peer(struct snapccl_comm* comm, struct snapccl_reg_table* t, struct snapccl_reg_range* g, int r,
                    const struct reg_hdr* h, const struct reg_seg* segs, int* fds, char* why, size_t len) {
  if (h->kind == MEM_NONE) {
    snprintf(why, len, "rank %d cannot export its range: %s", r, h->reason);
    return 0;
  }
  pthread_mutex_lock(&t->lock);
  struct snapccl_reg_import* imp = snapccl_reg_import_get(&t->cache, r, h->start, h->id, h->extent);
  pthread_mutex_unlock(&t->lock);
  if (!imp) {
    imp = h->kind == MEM_IPC ? snapccl_reg_import_ipc(h, why, len)
                           : snapccl_reg_import_vmm(comm->cuda_dev, h, segs, fds, why, len);
    if (!imp) return 0;
    imp->peer = r;
    imp->start = h->start;
    imp->id = h->id;
    pthread_mutex_lock(&t->lock);
    int bad = snapccl_reg_import_add(&t->cache, imp);
    pthread_mutex_unlock(&t->lock);
    if (bad) {
      snapccl_reg_unmap_import(imp);
      snprintf(why, len, "out of memory");
      return 0;
    }
  }
  g->held[r] = imp;
  g->peer[r] = imp->local + (h->base - h->start);
  return 1;
}

static void release_peers(struct snapccl_reg_table* t, struct snapccl_reg_range* g, int me) {
  for (int r = 0; r < g->nranks; r++) {
    struct snapccl_reg_import* imp = g->held[r];
    g->held[r] = NULL;
    if (r != me) g->peer[r] = NULL;
    if (!imp) continue;
    pthread_mutex_lock(&t->lock);
    int last = snapccl_reg_import_put(&t->cache, imp);
    pthread_mutex_unlock(&t->lock);
    if (last) snapccl_reg_unmap_import(imp);
  }
}

/* Owners of cuMem runs serve their descriptors in rank order; every rank of another
 * process fetches each of them (into fetched[o * maxsegs + i]; a rank without that
 * table still fetches, and closes, so that no owner waits for it in vain). 1 if this
 * rank got all it needed. */
static int pass_fds(struct snapccl_comm* comm, struct local_mem* lm, const struct reg_hdr* hdrs, int* fetched,
                    int maxsegs, char* why, size_t len) {
  const int n = comm->nranks, me = comm->rank;
  const uint64_t mine = comm->peers[me].proc_hash;
  const double timeout = snapccl_env()->bootstrap_timeout_s;
  int ok = 1;
  for (int o = 0; o < n; o++) {
    if (hdrs[o].kind != MEM_VMM) continue;
    const uint64_t owner_proc = comm->peers[o].proc_hash;
    if (o == me) {
      int32_t* pids = calloc((size_t)n, sizeof *pids);
      int clients = 0;
      for (int r = 0; pids && r < n; r++)
        if (comm->peers[r].proc_hash != mine) pids[clients++] = comm->peers[r].pid;
      if (!pids) {
        snprintf(why, len, "out of memory");
        ok = 0;
      } else if (clients > 0 &&
                 snapccl_fd_server_serve_many(lm->server, lm->fds, lm->hdr.nsegs, clients, pids, clients, timeout) !=
                     ncclSuccess) {
        snprintf(why, len, "%.*s", (int)len - 1, snapccl_last_error());
        ok = 0;
      }
      free(pids);
    } else if (owner_proc != mine) {
      for (int i = 0; i < hdrs[o].nsegs; i++) {
        int fd = -1;
        if (snapccl_fd_receive_index(&hdrs[o].fd, (uint32_t)i, timeout, &fd) != ncclSuccess) {
          int k = snprintf(why, len, "fetching rank %d's segment %d: ", o, i);
          if (k > 0 && (size_t)k < len) snprintf(why + k, len - (size_t)k, "%s", snapccl_last_error());
          ok = 0;
          break; /* the owner's server gave up as well */
        }
        if (fetched) fetched[(size_t)o * (size_t)maxsegs + (size_t)i] = fd;
        else close(fd);
      }
    }
  }
  return ok;
}

/* The collective part: describe, exchange, pass descriptors, map, agree. */
static ncclResult_t exchange(struct snapccl_comm* comm, struct snapccl_reg_table* t, struct snapccl_reg_range* g) {
  const int n = comm->nranks, me = comm->rank;
  const int export = comm->ranks_in_proc < n;
  ncclResult_t res = ncclSuccess;
  struct local_mem lm;
  memset(&lm, 0, sizeof lm);
  lm.hdr.seq = g->seq;
  lm.hdr.base = (uint64_t)g->base;
  lm.hdr.size = (uint64_t)g->size;
  lm.hdr.symmetric = g->symmetric;
  snapccl_reg_describe(&lm, export);
  if (lm.hdr.kind != MEM_VMM) lm.hdr.nsegs = 0;

  struct reg_hdr* hdrs = calloc((size_t)n, sizeof *hdrs);
  struct reg_seg* segs = NULL;
  int* fetched = NULL;
  int ok = 1, maxsegs = 0;
  char why[160] = "";
  if (!hdrs) {
    res = snapccl_error(ncclSystemError, __func__, "out of memory");
    goto out;
  }
  hdrs[me] = lm.hdr;
  SNAP_CHECK_GOTO(snapccl_oob_allgather(comm, hdrs, sizeof *hdrs), res, out);
  for (int r = 0; r < n; r++) {
    if (hdrs[r].kind != MEM_VMM) hdrs[r].nsegs = 0;
    if (hdrs[r].nsegs < 0 || hdrs[r].nsegs > REG_MAX_SEGS) hdrs[r].kind = MEM_NONE, hdrs[r].nsegs = 0;
    if (hdrs[r].nsegs > maxsegs) maxsegs = hdrs[r].nsegs;
  }
  if (maxsegs > 0) {
    segs = calloc((size_t)n * (size_t)maxsegs, sizeof *segs);
    if (!segs) {
      res = snapccl_error(ncclSystemError, __func__, "out of memory");
      goto out; /* the peers' second allgather then fails too, bounded by its timeout */
    }
    if (lm.hdr.nsegs) memcpy(&segs[(size_t)me * maxsegs], lm.segs, (size_t)lm.hdr.nsegs * sizeof *segs);
    SNAP_CHECK_GOTO(snapccl_oob_allgather(comm, segs, (size_t)maxsegs * sizeof *segs), res, out);
  }
  if (maxsegs > 0) {
    fetched = malloc((size_t)n * (size_t)maxsegs * sizeof *fetched);
    if (!fetched) {
      ok = 0;
      snprintf(why, sizeof why, "out of memory");
    }
    for (size_t i = 0; fetched && i < (size_t)n * (size_t)maxsegs; i++) fetched[i] = -1;
  }
  /* Every rank takes part in the turns, even one that already failed: the owners'
   * servers wait for it. */
  if (!pass_fds(comm, &lm, hdrs, fetched, maxsegs, why, sizeof why)) ok = 0;
  for (int r = 0; r < n; r++) {
    if (hdrs[r].seq != g->seq && ok) {
      ok = 0;
      snprintf(why, sizeof why, "rank %d is at registration %llu, this rank at %llu (registered in another order)", r,
               (unsigned long long)hdrs[r].seq, (unsigned long long)g->seq);
    }
    if (g->symmetric && hdrs[r].size != g->size) g->symmetric = 0;
  }
  g->peer[me] = (char*)g->base;
  for (int r = 0; r < n && ok; r++) {
    if (r == me) continue;
    if (comm->peers[r].proc_hash == comm->peers[me].proc_hash) {
      ok = reachable_here(comm, r, &hdrs[r], segs ? &segs[(size_t)r * maxsegs] : NULL, why, sizeof why);
      if (ok) g->peer[r] = (char*)(uintptr_t)hdrs[r].base;
    } else
      ok = map_peer(comm, t, g, r, &hdrs[r], segs ? &segs[(size_t)r * maxsegs] : NULL,
                    fetched ? &fetched[(size_t)r * maxsegs] : NULL, why, sizeof why);
  }
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, why, sizeof why), res, out);
  g->all_mapped = ok;
  if (!ok) {
    release_peers(t, g, me);
    INFO(SUB_TRANSPORT, "registration of %p (%zu bytes) is local only, collectives stage it: %s", (void*)g->base,
         g->size, why);
  }
out:
  if (res != ncclSuccess) release_peers(t, g, me);
  for (size_t i = 0; fetched && i < (size_t)n * (size_t)maxsegs; i++)
    if (fetched[i] >= 0) close(fetched[i]);
  free(fetched);
  free(segs);
  free(hdrs);
  snapccl_reg_local_free(&lm);
  return res;
}

struct snapccl_reg_range* snapccl_reg_prepare(struct snapccl_comm* comm, void* buff, size_t size, int symmetric,
                                              void* handle) {
  struct snapccl_reg_table* t = table_of(comm);
  struct snapccl_reg_range* g = t ? snapccl_reg_range_new(comm->nranks) : NULL;
  if (!g) return NULL;
  g->handle = handle ? handle : (void*)g;
  g->base = (uintptr_t)buff;
  g->size = size;
  g->symmetric = symmetric;
  /* Numbered in call order: ranks that register in different orders are told apart. */
  pthread_mutex_lock(&t->lock);
  g->seq = t->cache.next_seq++;
  pthread_mutex_unlock(&t->lock);
  return g;
}

ncclResult_t snapccl_reg_complete(struct snapccl_comm* comm, struct snapccl_reg_range* g) {
  struct snapccl_reg_table* t = comm->reg;
  ncclResult_t res = ncclSuccess;
  pthread_mutex_lock(&t->exchange_lock);
  int dev = -1;
  (void)CUDA_TRY(cudaGetDevice(&dev));
  if (dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(comm->cuda_dev));
  /* Without a usable transport (a verdict every rank shares) no collective of ours runs
   * on the communicator: nothing to map, and no rank waits for the others. */
  const int local = t->broken || comm->nranks == 1 || snapccl_transport_unusable_reason(comm) != NULL;
  if (local) {
    g->peer[comm->rank] = (char*)g->base;
    g->all_mapped = comm->nranks == 1;
  } else {
    res = exchange(comm, t, g);
    if (res != ncclSuccess) {
      t->broken = 1;
      WARN("registration of %p failed in the out-of-band exchange; later registrations on this communicator "
           "are local only", (void*)g->base);
    }
  }
  if (dev >= 0 && dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(dev));
  if (res == ncclSuccess) {
    /* Before the cache can fail: every rank of the verdict must hold the same value. */
    if (g->all_mapped) atomic_store(&t->ever_mapped, 1);
    pthread_mutex_lock(&t->lock);
    if (snapccl_reg_cache_add(&t->cache, g) != 0) res = snapccl_error(ncclSystemError, __func__, "out of memory");
    else if (g->all_mapped) t->mapped++;
    else t->local_only++;
    pthread_mutex_unlock(&t->lock);
  }
  pthread_mutex_unlock(&t->exchange_lock);
  if (res != ncclSuccess) {
    release_peers(t, g, comm->rank);
    snapccl_reg_range_delete(g);
  }
  return res;
}

void snapccl_reg_abandon(struct snapccl_reg_range* g) { snapccl_reg_range_delete(g); }

ncclResult_t snapccl_reg_register(struct snapccl_comm* comm, void* buff, size_t size, int symmetric, void* handle,
                                  void** out) {
  struct snapccl_reg_range* g = snapccl_reg_prepare(comm, buff, size, symmetric, handle);
  if (!g) SNAP_FAIL(ncclSystemError, "out of memory");
  void* h = g->handle;
  SNAP_CHECK(snapccl_reg_complete(comm, g));
  *out = h;
  return ncclSuccess;
}

ncclResult_t snapccl_reg_deregister(struct snapccl_comm* comm, void* handle, const char* func) {
  struct snapccl_reg_table* t = comm->reg;
  struct snapccl_reg_range* g = NULL;
  if (t) {
    pthread_mutex_lock(&t->lock);
    g = snapccl_reg_cache_by_handle(&t->cache, handle);
    if (g) snapccl_reg_cache_remove(&t->cache, g);
    pthread_mutex_unlock(&t->lock);
  }
  if (!g)
    return snapccl_error(ncclInvalidUsage, func, "could not find registration handle %p on communicator %p", handle,
                         (void*)comm);
  int dev = -1;
  (void)CUDA_TRY(cudaGetDevice(&dev));
  if (dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(comm->cuda_dev));
  release_peers(t, g, comm->rank);
  if (dev >= 0 && dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(dev));
  snapccl_reg_range_delete(g);
  return ncclSuccess;
}

int snapccl_reg_known(struct snapccl_comm* comm, const void* handle) {
  struct snapccl_reg_table* t = comm->reg;
  if (!t) return 0;
  pthread_mutex_lock(&t->lock);
  int known = snapccl_reg_cache_by_handle(&t->cache, handle) != NULL;
  pthread_mutex_unlock(&t->lock);
  return known;
}

void* snapccl_reg_peer(struct snapccl_comm* comm, const void* ptr, size_t bytes, int r) {
  struct snapccl_reg_table* t = comm->reg;
  if (!t) return NULL;
  pthread_mutex_lock(&t->lock);
  const struct snapccl_reg_range* g = snapccl_reg_cache_find(&t->cache, ptr, bytes);
  void* p = g && g->all_mapped ? snapccl_reg_peer_ptr(g, r, ptr) : NULL;
  pthread_mutex_unlock(&t->lock);
  return p;
}

/* The range holding [ptr, ptr + bytes) that every rank maps, or NULL; t->lock held. */
static const struct snapccl_reg_range* mapped_range(struct snapccl_reg_table* t, const void* ptr, size_t bytes) {
  const struct snapccl_reg_range* g = snapccl_reg_cache_find(&t->cache, ptr, bytes);
  return g && g->all_mapped ? g : NULL;
}

void snapccl_reg_call(struct snapccl_comm* comm, const void* send, void* recv, size_t bytes, int scalable,
                      struct snapccl_reg_args* out) {
  memset(out, 0, sizeof *out);
  struct snapccl_reg_table* t = comm->reg;
  if (!t || !atomic_load(&t->ever_mapped) || comm->nranks > SNAPCCL_MAX_RANKS) return;
  out->exchange = 1;
  if (!scalable) return; /* desc[0] 0: this rank says "stage", so every rank stages */
  pthread_mutex_lock(&t->lock);
  const struct snapccl_reg_range* gs = mapped_range(t, send, bytes);
  const struct snapccl_reg_range* gr = mapped_range(t, recv, bytes);
  if (gs && gr) {
    out->desc[0] = gs->seq + 1;
    out->desc[1] = (uintptr_t)send - gs->base;
    out->desc[2] = gr->seq + 1;
    out->desc[3] = (uintptr_t)recv - gr->base;
    for (int r = 0; r < comm->nranks; r++) {
      out->send[r] = snapccl_reg_peer_ptr(gs, r, send);
      out->recv[r] = snapccl_reg_peer_ptr(gr, r, recv);
      if (!out->send[r] || !out->recv[r]) out->desc[0] = 0;
    }
  }
  pthread_mutex_unlock(&t->lock);
  if (out->desc[0]) atomic_fetch_add(&t->calls_registered, 1);
}

void snapccl_reg_free_all(struct snapccl_comm* comm) {
  struct snapccl_reg_table* t = comm->reg;
  if (!t) return;
  INFO(SUB_TRANSPORT,
       "registrations: %llu mapped in every rank, %llu local only, %zu still registered at destroy; %llu "
       "two-shot all-reduces offered registered buffers (in place where every rank's were registered alike)",
       t->mapped, t->local_only, t->cache.nranges, (unsigned long long)atomic_load(&t->calls_registered));
  int dev = -1;
  (void)CUDA_TRY(cudaGetDevice(&dev));
  if (comm->cuda_dev >= 0 && dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(comm->cuda_dev));
  /* Memory the application freed without deregistering is never touched here: our own
   * ranges are only addresses, and a peer's import holds its memory until unmapped. */
  while (t->cache.nranges) {
    struct snapccl_reg_range* g = t->cache.ranges[t->cache.nranges - 1];
    snapccl_reg_cache_remove(&t->cache, g);
    release_peers(t, g, comm->rank);
    snapccl_reg_range_delete(g);
  }
  if (dev >= 0 && dev != comm->cuda_dev) (void)CUDA_TRY(cudaSetDevice(dev));
  snapccl_reg_cache_clear(&t->cache);
  pthread_mutex_destroy(&t->lock);
  pthread_mutex_destroy(&t->exchange_lock);
  free(t);
  comm->reg = NULL;
}
