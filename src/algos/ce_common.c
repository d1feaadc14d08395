/* The copy-engine algorithms' shared pieces: see ce_common.h. */
#include "algos/ce_common.h"

#include <string.h>

#include "algos/launch.h"
#include "comm.h"
#include "error.h"
#include "transport/transport.h"

void snapccl_ce_geometry(const struct snapccl_coll* c, int areas, struct snapccl_ce_geom* g) {
  const struct snapccl_ws_layout* lay = snapccl_coll_layout(c);
  /* The reduce-scatter and all-gather staging regions: two slots each of one chunk per
   * (source, block), contiguous (whole pages: workspace.c). */
  const unsigned long long region = 4ull * (unsigned long long)lay->nranks * (unsigned long long)lay->max_blocks *
                                    lay->chunk_bytes;
  g->slot_bytes = region / 2 / SNAPCCL_STAGING_ALIGN * SNAPCCL_STAGING_ALIGN;
  /* At least 2 x nranks pages per slot (chunks are whole pages), so every area keeps one. */
  g->area_bytes = g->slot_bytes / (unsigned long long)areas / SNAPCCL_STAGING_ALIGN * SNAPCCL_STAGING_ALIGN;
}

const char* snapccl_ce_unusable(const struct snapccl_coll* c, int reduces) {
  const char* why = snapccl_transport_unusable(c);
  if (why) return why;
  if (c->comm->nranks < 2) return "one rank: the copy algorithm serves it";
  if (reduces && c->devop == DEVOP_PREMULSUM && c->scalar_mode != SCALAR_RECIPROCAL)
    return "a PreMulSum with each rank's own scalar: the copy engine moves inputs unscaled";
  return NULL;
}

const char* snapccl_ce_too_many(unsigned long long syncs) {
  return syncs > SNAPCCL_CE_MAX_STEPS ? "the message needs more rounds than a copy-engine flag counts" : NULL;
}

char* snapccl_ce_staging(const struct snapccl_ce* ce, int rank, int slot, int area) {
  return ce->k.ws[rank] + ce->k.lay.rs_off + (unsigned long long)slot * ce->g.slot_bytes +
         (unsigned long long)area * ce->g.area_bytes;
}

const char* snapccl_ce_gather_src(const struct snapccl_ce* ce, int j, int slot, int area) {
  /* Registered buffers (issue 25) would be looked up here: rank j's own buffer mapped in
   * this process, read in place, and j's copy into its staging skipped. */
  return snapccl_ce_staging(ce, j, slot, area);
}

void snapccl_ce_copy(struct snapccl_ce* ce, void* dst, const void* src, unsigned long long bytes) {
  if (ce->err != cudaSuccess || bytes == 0) return;
  /* cudaMemcpyDefault: the pointers say where they live (unified addressing), a peer's
   * workspace included, so the copy goes device to device or peer to peer. */
  ce->err = cudaMemcpyAsync(dst, src, (size_t)bytes, cudaMemcpyDefault, ce->coll->stream);
}

void snapccl_ce_sync(struct snapccl_ce* ce, int last) {
  if (ce->err != cudaSuccess) return;
  ce->err = snapccl_launch_ce_sync(&ce->k, ++ce->step, last, ce->coll->stream);
}

/* A block per 64 KiB of the piece, within the agreed cap: the reduce never waits, so
 * the cap only keeps it from crowding out the application. */
#define CE_REDUCE_BLOCK_BYTES (64u << 10)

void snapccl_ce_reduce(struct snapccl_ce* ce, const struct snapccl_ce_reduce* r) {
  if (ce->err != cudaSuccess || r->elems == 0) return;
  const unsigned long long want = (r->elems * ce->es + CE_REDUCE_BLOCK_BYTES - 1) / CE_REDUCE_BLOCK_BYTES;
  const int cap = ce->k.lay.max_blocks;
  const int blocks = want < (unsigned long long)cap ? (int)want : cap;
  ce->err = snapccl_launch_ce_reduce(&ce->k, r, blocks < 1 ? 1 : blocks, ce->coll->stream);
}

struct run {
  struct snapccl_ce* ce;
  void (*body)(struct snapccl_ce* ce);
};

static cudaError_t enqueue(void* p) {
  const struct run* r = p;
  r->body(r->ce);
  return r->ce->err;
}

ncclResult_t snapccl_ce_run(const struct snapccl_coll* c, int areas, void (*body)(struct snapccl_ce* ce)) {
  struct snapccl_comm* comm = c->comm;
  struct snapccl_ce ce;
  memset(&ce, 0, sizeof ce);
  ce.coll = c;
  ce.k = *snapccl_transport_kargs(comm);
  ce.k.send = c->sendbuff;
  ce.k.recv = c->recvbuff;
  ce.k.count = c->count;
  ce.k.dtype = c->dtype;
  ce.k.devop = c->devop;
  ce.k.scalar_mode = c->scalar_mode;
  ce.k.scalar_bits = c->scalar_bits;
  ce.k.scalar_dev = c->scalar_dev;
  ce.me = comm->rank;
  ce.n = comm->nranks;
  ce.es = snapccl_dtype_size(c->dtype);
  ce.err = cudaSuccess;
  snapccl_ce_geometry(c, areas, &ce.g);

  struct run r = {&ce, body};
  int dev = -1;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev != comm->cuda_dev) CUDA_CHECK(cudaSetDevice(comm->cuda_dev));
  ncclResult_t res = snapccl_transport_ordered(comm, c->stream, enqueue, &r);
  if (dev != comm->cuda_dev) cudaSetDevice(dev);
  return res;
}
