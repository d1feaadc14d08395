/* All-gather over NVLink multicast (kernel: src/kernels/multimem.cu): each rank's input
 * goes once into its chunk of every rank's replica with multimem.st, a barrier, then each
 * rank copies the others' chunks from its own replica; pipelined in rounds, dtype-blind.
 * nvls_twin is the same kernel with the multicast store replaced by a loop over the
 * peers' workspaces, forced by name only (SNAPCCL_ALGO=allgather:nvls_twin).
 * Never run on multicast hardware: no multicast object has been created and the multicast
 * variants have never executed; only the unicast twins ran (on an H100, ranks sharing it)
 * and the gate and setup were tested against a stubbed driver (docs/NVLS.md). */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/nvls_common.h"
#include "comm.h"

static const char* can_run(const struct snapccl_coll* c) { return snapccl_nvls_unusable(c, 1); }
static const char* can_run_twin(const struct snapccl_coll* c) { return snapccl_nvls_unusable(c, 0); }

static double cost_v(const struct snapccl_coll* c, int multicast) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  int n = c->comm->nranks;
  unsigned long long b = c->count * snapccl_dtype_size(c->dtype);
  double rounds = snapccl_staged_rounds(c, b, 1);
  /* Multicast: my input leaves my GPU once, the switch copies it N times. */
  return k->launch_us + (n > 1 ? rounds * snapccl_cost_sync_us(c->comm) : 0) +
         snapccl_cost_link_us(k, (double)b * (multicast ? 1 : n - 1)) + snapccl_cost_local_us(k, (double)b * 2 * n);
}
static double cost(const struct snapccl_coll* c) { return cost_v(c, 1); }
static double cost_twin(const struct snapccl_coll* c) { return cost_v(c, 0); }

static ncclResult_t launch_v(const struct snapccl_coll* c, int multicast) {
  unsigned long long bytes = c->count * snapccl_dtype_size(c->dtype);
  struct snapccl_geom g = {.count = bytes};
  snapccl_staged_geometry(c, bytes, 1, &g);
  return snapccl_nvls_launch(c, MM_ALLGATHER, multicast, &g);
}
static ncclResult_t launch(const struct snapccl_coll* c) { return launch_v(c, 1); }
static ncclResult_t launch_twin(const struct snapccl_coll* c) { return launch_v(c, 0); }

const struct snapccl_algo snapccl_allgather_nvls = {
    .name = "nvls", .kind = COLL_ALLGATHER,
    .can_run = can_run, .cost_us = cost, .launch = launch};
const struct snapccl_algo snapccl_allgather_nvls_twin = {
    .name = "nvls_twin", .kind = COLL_ALLGATHER, .can_run = can_run_twin, .cost_us = cost_twin,
    .launch = launch_twin, .only_when_named = 1};
