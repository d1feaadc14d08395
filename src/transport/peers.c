/* Mapping every peer's workspace: direct pointers inside a process (with peer access
 * where the GPUs differ), legacy CUDA IPC handles across processes. Legacy IPC was
 * chosen over cuMem POSIX-FD export because the only memory we ever map is our own
 * cudaMalloc'd workspace: the handle is 64 bytes that travel through the bootstrap
 * allgather, with no file descriptors to pass and no driver-API dependency. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap.h"
#include "error.h"
#include "log.h"
#include "oob.h"
#include "transport/transport_impl.h"

struct exchange {
  cudaIpcMemHandle_t ipc;
  unsigned long long ptr; /* the workspace in its owner's address space */
  int32_t have_ipc;
  int32_t pad;
};

/* Can this GPU reach the peer's GPU directly? Devices the process cannot see (e.g.
 * hidden by CUDA_VISIBLE_DEVICES) are left to the probe. */
static int p2p_possible(const struct snapccl_comm* comm, int r, char* reason, size_t len) {
  const struct snapccl_peer_info* me = &comm->peers[comm->rank];
  const struct snapccl_peer_info* p = &comm->peers[r];
  if (!memcmp(me->gpu_uuid, p->gpu_uuid, sizeof me->gpu_uuid)) return 1; /* same GPU */
  int dev = -1, can = 0;
  if (CUDA_TRY(cudaDeviceGetByPCIBusId(&dev, p->bus_id)) != cudaSuccess) return 1;
  if (CUDA_TRY(cudaDeviceCanAccessPeer(&can, comm->cuda_dev, dev)) != cudaSuccess || !can) {
    snprintf(reason, len, "no P2P access from GPU %s to GPU %s (rank %d)", me->bus_id, p->bus_id, r);
    return 0;
  }
  return 1;
}

static int map_one(struct snapccl_comm* comm, struct snapccl_transport* t, int r,
                   const struct exchange* x, char* reason, size_t len) {
  const struct snapccl_peer_info* me = &comm->peers[comm->rank];
  const struct snapccl_peer_info* p = &comm->peers[r];
  if (p->proc_hash == me->proc_hash) {
    t->ws[r] = (char*)(uintptr_t)x->ptr;
    if (memcmp(me->gpu_uuid, p->gpu_uuid, sizeof me->gpu_uuid) != 0) {
      cudaError_t e = CUDA_TRY(cudaDeviceEnablePeerAccess(p->cuda_dev, 0));
      if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) {
        snprintf(reason, len, "cudaDeviceEnablePeerAccess(%d) failed: %s", p->cuda_dev,
                 cudaGetErrorString(e));
        return 0;
      }
    }
    return 1;
  }
  if (!x->have_ipc) {
    snprintf(reason, len, "rank %d could not export its workspace", r);
    return 0;
  }
  void* ptr = NULL;
  cudaError_t e = CUDA_TRY(cudaIpcOpenMemHandle(&ptr, x->ipc, cudaIpcMemLazyEnablePeerAccess));
  if (e != cudaSuccess) {
    snprintf(reason, len, "cudaIpcOpenMemHandle of rank %d failed: %s", r, cudaGetErrorString(e));
    return 0;
  }
  t->ws[r] = ptr;
  t->ipc_opened[r] = 1;
  return 1;
}

ncclResult_t snapccl_peers_map(struct snapccl_comm* comm, struct snapccl_transport* t) {
  const int n = comm->nranks;
  struct exchange* x = calloc((size_t)n, sizeof *x);
  if (!x) SNAP_FAIL(ncclSystemError, "out of memory");
  struct exchange* mine = &x[comm->rank];
  mine->ptr = (unsigned long long)(uintptr_t)t->ws_local;
  int need_ipc = comm->ranks_in_proc < n && t->ws_local;
  if (need_ipc) {
    cudaError_t e = CUDA_TRY(cudaIpcGetMemHandle(&mine->ipc, t->ws_local));
    mine->have_ipc = e == cudaSuccess;
    if (e != cudaSuccess) {
      INFO(SUB_TRANSPORT, "cudaIpcGetMemHandle failed: %s", cudaGetErrorString(e));
    }
  }
  ncclResult_t res = snapccl_oob_allgather(comm, x, sizeof *x);
  if (res != ncclSuccess) goto out;

  int ok = t->usable; /* a local allocation may already have failed */
  char reason[124] = "";
  if (!ok) snprintf(reason, sizeof reason, "%.120s", t->reason);
  for (int r = 0; r < n && ok; r++)
    if (r != comm->rank) ok = p2p_possible(comm, r, reason, sizeof reason);
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, reason, sizeof reason), res, out);
  if (n > SNAPCCL_MAX_RANKS) goto out;
  t->ws[comm->rank] = t->ws_local;
  for (int r = 0; r < n && ok; r++)
    if (r != comm->rank) ok = map_one(comm, t, r, &x[r], reason, sizeof reason);
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, reason, sizeof reason), res, out);
  if (!ok) {
    t->usable = 0;
    snprintf(t->reason, sizeof t->reason, "%s", reason);
  }
out:
  free(x);
  return res;
}

/* Each rank writes a stamp into every peer's probe area through the mapping, then reads
 * its own area back: proof that the mappings reach the right memory. */
ncclResult_t snapccl_peers_probe(struct snapccl_comm* comm, struct snapccl_transport* t) {
  struct stamp {
    unsigned long long magic, id, from, to;
  };
  const int n = comm->nranks;
  ncclResult_t res = ncclSuccess;
  int ok = 1;
  char reason[124] = "";
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  struct stamp* got = calloc((size_t)SNAPCCL_MAX_RANKS, 64);
  struct stamp out;
  if (!got) {
    res = snapccl_error(ncclSystemError, __func__, "out of memory");
    goto done;
  }
  for (int r = 0; r < n && t->usable; r++) {
    if (r == comm->rank) continue;
    out = (struct stamp){0x70726f6265ull, comm->id_hash, (unsigned long long)comm->rank,
                         (unsigned long long)r};
    CUDA_CHECK_GOTO(cudaMemcpyAsync(t->ws[r] + t->lay.probe_off + (size_t)comm->rank * 64, &out,
                                    sizeof out, cudaMemcpyHostToDevice, s), res, done);
  }
  CUDA_CHECK_GOTO(cudaStreamSynchronize(s), res, done);
  SNAP_CHECK_GOTO(snapccl_oob_barrier(comm), res, done);
  if (t->usable) {
    CUDA_CHECK_GOTO(cudaMemcpyAsync(got, t->ws_local + t->lay.probe_off, (size_t)n * 64,
                                    cudaMemcpyDeviceToHost, s), res, done);
    CUDA_CHECK_GOTO(cudaStreamSynchronize(s), res, done);
    for (int r = 0; r < n && ok; r++) {
      const struct stamp* g = (const struct stamp*)((const char*)got + (size_t)r * 64);
      if (r == comm->rank) continue;
      if (g->magic != 0x70726f6265ull || g->id != comm->id_hash || g->from != (unsigned long long)r ||
          g->to != (unsigned long long)comm->rank) {
        ok = 0;
        snprintf(reason, sizeof reason, "P2P probe: rank %d's write did not arrive", r);
      }
    }
  }
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, reason, sizeof reason), res, done);
  if (!ok && t->usable) {
    t->usable = 0;
    snprintf(t->reason, sizeof t->reason, "%s", reason);
  }
done:
  free(got);
  cudaStreamDestroy(s);
  return res;
}

void snapccl_peers_unmap(struct snapccl_comm* comm, struct snapccl_transport* t) {
  for (int r = 0; r < comm->nranks && r < SNAPCCL_MAX_RANKS; r++) {
    if (t->ipc_opened[r]) (void)CUDA_TRY(cudaIpcCloseMemHandle(t->ws[r]));
    t->ipc_opened[r] = 0;
    t->ws[r] = NULL;
  }
}
