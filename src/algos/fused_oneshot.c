/* Fused one-shot: every rank pushes its rows into every peer's Lamport slots and
 * reduces, adds the residual and normalises all rows itself. The lowest latency for
 * few tokens. Kernel: src/kernels/fused_rmsnorm.cu. */
#include <stdio.h>

#include "algos/cost.h"
#include "coll.h"
#include "comm.h"
#include "fused.h"
#include "kernels/fused_launch.h"
#include "transport/transport.h"

static const char* can_run(const struct snapccl_fused* f, char* buf, size_t len) {
  const char* why = snapccl_transport_unusable_reason(f->comm);
  if (why) return why;
  const struct snapccl_ws_layout* lay = snapccl_transport_layout(f->comm);
  unsigned long long stride = snapccl_fused_stride(f);
  if (stride > SNAPCCL_FUSED_ROW_CACHE_MAX) {
    snprintf(buf, len, "a row of %llu B does not fit the %u B row cache", stride,
             SNAPCCL_FUSED_ROW_CACHE_MAX);
    return buf;
  }
  const unsigned long long limit =
      lay->oneshot_bytes < SNAPCCL_FUSED_ONESHOT_BYTES ? lay->oneshot_bytes : SNAPCCL_FUSED_ONESHOT_BYTES;
  if ((unsigned long long)f->tokens * stride > limit) {
    snprintf(buf, len, "%zu rows of %llu B do not fit the fused one-shot's %llu B of the one-shot buffer",
             f->tokens, stride, limit);
    return buf;
  }
  return NULL;
}

static double cost(const struct snapccl_fused* f) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(f->comm);
  int n = f->comm->nranks;
  double bytes = (double)f->tokens * (double)f->hidden * (double)snapccl_dtype_size(f->dtype);
  /* Reads: every rank's copy of the rows, the residual, the row again from shared
   * memory (free); writes: residual_out, norm_out, the resets of the slots. */
  return k->launch_us + (n > 1 ? k->lamport_poll_us : 0) +
         snapccl_cost_bytes_us(bytes * (n - 1), k->lamport_link_gbps) +
         snapccl_cost_local_us(k, bytes * (2.0 * n + 3.0));
}

static ncclResult_t launch(const struct snapccl_fused* f) {
  int cap = snapccl_fused_block_cap(f->comm);
  int blocks = f->tokens < (size_t)cap ? (int)f->tokens : cap;
  return snapccl_fused_launch_comm(f, snapccl_launch_fused_oneshot, blocks, 0);
}

const struct snapccl_fused_algo snapccl_fused_oneshot = {"oneshot", can_run, cost, launch};
