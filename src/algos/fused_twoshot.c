/* Fused two-shot: tokens cut into nranks slices; each rank reduces its slice through the
 * rs staging and gathers the sums through the ag staging, pipelined in rounds with the
 * per-block round counters; every rank then adds its residual and normalises every
 * row. Any token count; a row must fit one staging chunk. Kernel:
 * src/kernels/fused_rmsnorm.cu. */
#include <stdio.h>

#include "algos/cost.h"
#include "coll.h"
#include "comm.h"
#include "error.h"
#include "fused.h"
#include "kernels/fused_launch.h"
#include "transport/transport.h"

struct geom {
  int blocks;
  unsigned long long rows_per_chunk, rounds;
};

/* Identical on every rank: tokens, hidden, dtype and the agreed layout and cap. */
static int geometry(const struct snapccl_fused* f, struct geom* g) {
  unsigned long long stride = snapccl_fused_stride(f);
  unsigned long long cap_rows = snapccl_transport_layout(f->comm)->chunk_bytes / stride;
  if (cap_rows == 0) return 0;
  unsigned long long n = (unsigned long long)f->comm->nranks;
  unsigned long long ts = (f->tokens + n - 1) / n; /* rows per slice */
  unsigned long long blocks = (unsigned long long)snapccl_fused_block_cap(f->comm);
  if (ts < blocks) blocks = ts;
  unsigned long long per_block = (ts + blocks - 1) / blocks;
  g->rounds = (per_block + cap_rows - 1) / cap_rows;
  g->rows_per_chunk = (per_block + g->rounds - 1) / g->rounds;
  g->blocks = (int)blocks;
  return 1;
}

static const char* can_run(const struct snapccl_fused* f, char* buf, size_t len) {
  const char* why = snapccl_transport_unusable_reason(f->comm);
  if (why) return why;
  const struct snapccl_ws_layout* lay = snapccl_transport_layout(f->comm);
  struct geom g;
  if (!geometry(f, &g)) {
    snprintf(buf, len, "a row of %llu B is larger than a staging chunk (%llu B; SNAPCCL_BUFFSIZE)",
             snapccl_fused_stride(f), lay->chunk_bytes);
    return buf;
  }
  return NULL;
}

static double cost(const struct snapccl_fused* f) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(f->comm);
  int n = f->comm->nranks;
  double bytes = (double)f->tokens * (double)f->hidden * (double)snapccl_dtype_size(f->dtype);
  struct geom g;
  if (!geometry(f, &g)) return 1e30;
  /* Reads: input, the peers' slices, the gathered sums, the residual; writes: the
   * staging, residual_out, norm_out. */
  return k->launch_us + (n > 1 ? 2.0 * (double)g.rounds * snapccl_cost_sync_us(f->comm) : 0) +
         snapccl_cost_link_us(k, 2.0 * bytes * (n - 1) / n) + snapccl_cost_local_us(k, bytes * 6.0);
}

static ncclResult_t launch(const struct snapccl_fused* f) {
  struct geom g;
  if (!geometry(f, &g)) return snapccl_error(ncclInvalidUsage, __func__, "no two-shot geometry");
  return snapccl_fused_launch_comm(f, snapccl_launch_fused_twoshot, g.blocks, g.rows_per_chunk);
}

const struct snapccl_fused_algo snapccl_fused_twoshot = {"twoshot", can_run, cost, launch};
