/* All-reduce over NVLink multicast (kernels: src/kernels/multimem.cu), each algorithm with
 * its unicast twin: the same kernel with the multimem instructions replaced by loops over
 * the peers' workspaces, forced by name only (SNAPCCL_ALGO=allreduce:nvls_oneshot_twin).
 *   nvls_lamport  multicast store into every rank's Lamport slots, local reduction;
 *   nvls_oneshot  copy in, one barrier, every rank reduces the whole buffer (ld_reduce);
 *   nvls_twoshot  copy in, barrier, each rank reduces its slice and multicasts the result,
 *                 barrier; pipelined in rounds, any size.
 * The multicast variants run only where the gate opened (transport/multicast.c).
 * Never run on multicast hardware: no multicast object has been created and the multicast
 * variants have never executed; only the unicast twins ran (on an H100, ranks sharing it)
 * and the gate and setup were tested against a stubbed driver (docs/NVLS.md). */
#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/nvls_common.h"
#include "comm.h"

#define BLOCK_BYTES (16u << 10)

static double bytes_of(const struct snapccl_coll* c) {
  return (double)c->count * (double)snapccl_dtype_size(c->dtype);
}

static const char* check(const struct snapccl_coll* c, int multicast, int small) {
  const char* why = snapccl_nvls_unusable(c, multicast);
  if (!why) why = snapccl_nvls_reduction_unsupported(c);
  if (!why && small) why = snapccl_oneshot_unfit(c);
  return why;
}

static double sync_us(const struct snapccl_coll* c) {
  return c->comm->nranks > 1 ? snapccl_cost_sync_us(c->comm) : 0.0;
}

/* ---- Lamport ---- */

static const char* can_lamport(const struct snapccl_coll* c) { return check(c, 1, 1); }
static const char* can_lamport_twin(const struct snapccl_coll* c) { return check(c, 0, 1); }

/* One multicast store leaves each GPU once; every rank then reads and resets N slots. */
static double cost_lamport(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  int n = c->comm->nranks;
  return k->launch_us + (n > 1 ? k->lamport_poll_us : 0) + snapccl_cost_link_us(k, b) +
         snapccl_cost_local_us(k, b * (2 * n + 1));
}
static double cost_lamport_twin(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  int n = c->comm->nranks;
  return k->launch_us + (n > 1 ? k->lamport_poll_us : 0) + snapccl_cost_link_us(k, b * (n - 1)) +
         snapccl_cost_local_us(k, b * (2 * n + 2));
}

static ncclResult_t launch_lamport_v(const struct snapccl_coll* c, int multicast) {
  struct snapccl_geom g;
  snapccl_oneshot_geometry(c, BLOCK_BYTES, &g);
  return snapccl_nvls_launch(c, MM_LAMPORT, multicast, &g);
}
static ncclResult_t launch_lamport(const struct snapccl_coll* c) { return launch_lamport_v(c, 1); }
static ncclResult_t launch_lamport_twin(const struct snapccl_coll* c) { return launch_lamport_v(c, 0); }

/* ---- one-shot ---- */

static const char* can_oneshot(const struct snapccl_coll* c) { return check(c, 1, 1); }
static const char* can_oneshot_twin(const struct snapccl_coll* c) { return check(c, 0, 1); }

/* Every replica serves every rank's reducing load (N reads of each byte leave each GPU);
 * the reduction itself happens in the switch. */
static double cost_oneshot(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  int n = c->comm->nranks;
  return k->launch_us + sync_us(c) + snapccl_cost_link_us(k, b * (n - 1)) + snapccl_cost_local_us(k, b * 3);
}
static double cost_oneshot_twin(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  int n = c->comm->nranks;
  return k->launch_us + sync_us(c) + snapccl_cost_link_us(k, b * (n - 1)) + snapccl_cost_local_us(k, b * (n + 2));
}

static ncclResult_t launch_oneshot_v(const struct snapccl_coll* c, int multicast) {
  struct snapccl_geom g;
  snapccl_oneshot_geometry(c, BLOCK_BYTES, &g);
  return snapccl_nvls_launch(c, MM_ONESHOT, multicast, &g);
}
static ncclResult_t launch_oneshot(const struct snapccl_coll* c) { return launch_oneshot_v(c, 1); }
static ncclResult_t launch_oneshot_twin(const struct snapccl_coll* c) { return launch_oneshot_v(c, 0); }

/* ---- two-shot ---- */

static unsigned long long slice_elems(const struct snapccl_coll* c) {
  unsigned long long n = (unsigned long long)c->comm->nranks;
  unsigned long long epp = SNAPCCL_PACK / snapccl_dtype_size(c->dtype);
  return ((c->count + n - 1) / n + epp - 1) / epp * epp;
}

static double rounds(const struct snapccl_coll* c) {
  return snapccl_staged_rounds(c, slice_elems(c), snapccl_dtype_size(c->dtype));
}

static const char* can_twoshot(const struct snapccl_coll* c) { return check(c, 1, 0); }
static const char* can_twoshot_twin(const struct snapccl_coll* c) { return check(c, 0, 0); }

/* A reducing load of my slice from every replica, then one multicast store of the result:
 * about the message once out of each GPU, against twice for the unicast two-shot. */
static double cost_twoshot(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  return k->launch_us + 2.0 * rounds(c) * sync_us(c) + snapccl_cost_link_us(k, b) + snapccl_cost_local_us(k, b * 3);
}
static double cost_twoshot_twin(const struct snapccl_coll* c) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(c->comm);
  double b = bytes_of(c);
  int n = c->comm->nranks;
  return k->launch_us + 2.0 * rounds(c) * sync_us(c) + snapccl_cost_link_us(k, 2.0 * b * (n - 1) / n) +
         snapccl_cost_local_us(k, b * 4);
}

static ncclResult_t launch_twoshot_v(const struct snapccl_coll* c, int multicast) {
  struct snapccl_geom g = {.count = c->count};
  snapccl_staged_geometry(c, slice_elems(c), snapccl_dtype_size(c->dtype), &g);
  return snapccl_nvls_launch(c, MM_TWOSHOT, multicast, &g);
}
static ncclResult_t launch_twoshot(const struct snapccl_coll* c) { return launch_twoshot_v(c, 1); }
static ncclResult_t launch_twoshot_twin(const struct snapccl_coll* c) { return launch_twoshot_v(c, 0); }

const struct snapccl_algo snapccl_allreduce_nvls_lamport = {
    .name = "nvls_lamport", .kind = COLL_ALLREDUCE, .can_run = can_lamport, .cost_us = cost_lamport,
    .launch = launch_lamport};
const struct snapccl_algo snapccl_allreduce_nvls_lamport_twin = {
    .name = "nvls_lamport_twin", .kind = COLL_ALLREDUCE, .can_run = can_lamport_twin,
    .cost_us = cost_lamport_twin, .launch = launch_lamport_twin, .only_when_named = 1};
const struct snapccl_algo snapccl_allreduce_nvls_oneshot = {
    .name = "nvls_oneshot", .kind = COLL_ALLREDUCE, .can_run = can_oneshot, .cost_us = cost_oneshot,
    .launch = launch_oneshot};
const struct snapccl_algo snapccl_allreduce_nvls_oneshot_twin = {
    .name = "nvls_oneshot_twin", .kind = COLL_ALLREDUCE, .can_run = can_oneshot_twin,
    .cost_us = cost_oneshot_twin, .launch = launch_oneshot_twin, .only_when_named = 1};
const struct snapccl_algo snapccl_allreduce_nvls_twoshot = {
    .name = "nvls_twoshot", .kind = COLL_ALLREDUCE, .can_run = can_twoshot, .cost_us = cost_twoshot,
    .launch = launch_twoshot};
const struct snapccl_algo snapccl_allreduce_nvls_twoshot_twin = {
    .name = "nvls_twoshot_twin", .kind = COLL_ALLREDUCE, .can_run = can_twoshot_twin,
    .cost_us = cost_twoshot_twin, .launch = launch_twoshot_twin, .only_when_named = 1};
