/* Reduce-scatter over NVLink multicast (kernel: src/kernels/multimem.cu): each rank copies
 * its input into its replica, a barrier, then each rank's reducing load (ld_reduce) of
 * its own slice sums every replica in the switch; pipelined in rounds. nvls_twin is the
 * same kernel with the reducing load replaced by a loop over the peers' workspaces,
 * forced by name only (SNAPCCL_ALGO=reducescatter:nvls_twin).
 * Never run on multicast hardware: no multicast object has been created and the multicast
 * variants have never executed; only the unicast twins ran (on an H100, ranks sharing it)
 * and the gate and setup were tested against a stubbed driver (docs/NVLS.md). */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/nvls_common.h"
#include "comm.h"

static const char* check(const struct snapccl_coll* c, int multicast) {
  const char* why = snapccl_nvls_unusable(c, multicast);
  return why ? why : snapccl_nvls_reduction_unsupported(c);
}
static const char* can_run(const struct snapccl_coll* c) { return check(c, 1); }
static const char* can_run_twin(const struct snapccl_coll* c) { return check(c, 0); }

static double cost_v(const struct snapccl_coll* c, int multicast) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  int n = c->comm->nranks;
  size_t es = snapccl_dtype_size(c->dtype);
  double slice = (double)c->count * (double)es;
  double rounds = snapccl_staged_rounds(c, c->count, es);
  /* Both read every other replica's copy of my slice once; the twin also sums locally. */
  return k->launch_us + (n > 1 ? rounds * snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_link_us(k, slice * (n - 1)) + snapccl_cost_local_us(k, slice * (multicast ? 2 * n + 1 : 3 * n + 1));
}
static double cost(const struct snapccl_coll* c) { return cost_v(c, 1); }
static double cost_twin(const struct snapccl_coll* c) { return cost_v(c, 0); }

static ncclResult_t launch_v(const struct snapccl_coll* c, int multicast) {
  struct snapccl_geom g = {.count = c->count};
  snapccl_staged_geometry(c, c->count, snapccl_dtype_size(c->dtype), &g);
  return snapccl_nvls_launch(c, MM_REDUCESCATTER, multicast, &g);
}
static ncclResult_t launch(const struct snapccl_coll* c) { return launch_v(c, 1); }
static ncclResult_t launch_twin(const struct snapccl_coll* c) { return launch_v(c, 0); }

const struct snapccl_algo snapccl_reducescatter_nvls = {
    .name = "nvls", .kind = COLL_REDUCESCATTER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
const struct snapccl_algo snapccl_reducescatter_nvls_twin = {
    .name = "nvls_twin", .kind = COLL_REDUCESCATTER, .can_run = can_run_twin, .cost_us = cost_twin,
    .launch = launch_twin, .only_when_named = 1};
