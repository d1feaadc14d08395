/* What the copy-engine algorithms share (ce_allgather.c, ce_reducescatter.c,
 * ce_allreduce.c): data moves by cudaMemcpyAsync between the caller's buffers and the
 * ranks' workspaces (mapped in every peer: in one process directly, across processes by
 * CUDA IPC), ordered by the one-warp sync kernel (kernels/ce_sync.cu); the reductions are
 * completed by a local kernel (kernels/ce_reduce.cu). Everything a call does goes on its
 * stream in one piece, in the communicator's call order, with no host synchronisation:
 * captured, it is memcpy and kernel nodes. The protocol and why it is safe:
 * docs/ARCHITECTURE.md ("Copy-engine algorithms"). */
#ifndef SNAPCCL_ALGOS_CE_COMMON_H
#define SNAPCCL_ALGOS_CE_COMMON_H

#include <cuda_runtime.h>

#include "coll.h"
#include "kernels/ce.h"
#include "kernels/kargs.h"
#include "nccl.h"

/* The copy-engine staging of every rank: the workspace's two staging regions (those of
 * the staged kernels, back to back) taken as two slots, rounds alternating between them;
 * a slot holds `areas` areas of whole pages, one per source rank where a rank receives
 * from every peer, a single one where it only sends. */
struct snapccl_ce_geom {
  unsigned long long slot_bytes;
  unsigned long long area_bytes;
};
void snapccl_ce_geometry(const struct snapccl_coll* c, int areas, struct snapccl_ce_geom* g);

/* Why a copy-engine algorithm cannot run the call, or NULL: no usable transport, one rank
 * (the copy algorithm serves it), or a reduction with each rank's own PreMulSum scalar
 * (`reduces`: the copy engine moves inputs unscaled, and the receiver knows only its own
 * scalar). Only past this may the geometry be asked. */
const char* snapccl_ce_unusable(const struct snapccl_coll* c, int reduces);
/* Why a call of `syncs` syncs cannot run (more than a flag value counts), or NULL. */
const char* snapccl_ce_too_many(unsigned long long syncs);

/* One call while its work is put on the stream. */
struct snapccl_ce {
  const struct snapccl_coll* coll;
  struct snapccl_kargs k; /* the communicator's kernel arguments, completed for this call */
  struct snapccl_ce_geom g;
  int me, n;
  size_t es;               /* element size */
  unsigned long long step; /* syncs issued so far in this call */
  cudaError_t err;         /* the first failed enqueue; nothing more is enqueued after it */
};

/* Area `area` of slot `slot` of rank's copy-engine staging, in this process. */
char* snapccl_ce_staging(const struct snapccl_ce* ce, int rank, int slot, int area);
/* Where this rank copies rank j's piece of a gather from: j's staging (area `area` of
 * `slot`). The one place a registered peer buffer would replace the staging. */
const char* snapccl_ce_gather_src(const struct snapccl_ce* ce, int j, int slot, int area);
/* A copy-engine copy on the call's stream (nothing for 0 bytes). */
void snapccl_ce_copy(struct snapccl_ce* ce, void* dst, const void* src, unsigned long long bytes);
/* The next sync of the call; `last` for the final one, which publishes the epoch. */
void snapccl_ce_sync(struct snapccl_ce* ce, int last);
/* The local reduce (nothing for 0 elements). */
void snapccl_ce_reduce(struct snapccl_ce* ce, const struct snapccl_ce_reduce* r);

/* Puts the call on its stream: body(ce) issues the copies, syncs and reduces. */
ncclResult_t snapccl_ce_run(const struct snapccl_coll* c, int areas, void (*body)(struct snapccl_ce* ce));

#endif
