#include "algos/cost.h"

#include "comm.h"
#include "tuning.h"

/* Measured on two H200s over NVLink 4 (with NCCL 2.28 beside): 3.0 us per eager launch,
 * 1.24 us flag round trip, 364-374 GB/s for kernel remote stores/loads, 3.9 TB/s local
 * copies; on an H100: 0.86 us for a flag round trip between streams of one GPU, 4.5 ms
 * between processes time-slicing one GPU. To be refined from the multi-GPU comparison
 * runs. */
static const struct snapccl_cost_constants constants = {
    .launch_us = 3.0,
    .sync_us = 1.24,
    .sync_shared_us = 0.86,
    .sync_timeslice_us = 4500.0,
    .lamport_poll_us = 0.3,
    .link_gbps = 365.0,
    .hbm_gbps = 3900.0,
};

const struct snapccl_cost_constants* snapccl_cost_constants(void) { return &constants; }

double snapccl_cost_sync_us(const struct snapccl_comm* comm) {
  if (comm->ranks_on_dev > comm->ranks_on_dev_in_proc) return constants.sync_timeslice_us;
  if (comm->ranks_on_dev > 1) return constants.sync_shared_us;
  return constants.sync_us;
}

double snapccl_cost_link_us(double bytes) { return bytes / (constants.link_gbps * 1e3); }
double snapccl_cost_local_us(double bytes) { return bytes / (constants.hbm_gbps * 1e3); }

/* NCCL 2.28.3 on two H200s over 18 NVLinks (NCCL_NVLS_ENABLE=0), measured with the same
 * perf binaries and launch as our kernels (perf/RESULTS.md section 5; nccl-tests' own
 * numbers in /work/shared/reference/ agree within a few us). Both libraries there pay a
 * host cost per call that this model leaves out of ours (our Lamport all-reduce: 13.0 us
 * measured at 32 B, 3.3 us estimated; all-gather direct 12.0 against 4.2; reduce-scatter
 * 9.1 against 4.2), so NCCL's latency is its measured small-size time less that same
 * amount, which keeps the measured ratio between the two: all-reduce 18.9-19.5 us ->
 * 9.5, all-gather 16.5 -> 8.5, reduce-scatter 19.4 -> 12 (with two processes NCCL's
 * all-reduce took 6.4-9.2 us: the same order). Bus bandwidths at 1 GiB: all-reduce
 * 3281 us (327 GB/s), all-gather 1954 and reduce-scatter 1952 us (275 GB/s). */
static const struct snapccl_nccl_constants nccl_constants[COLL_NKINDS] = {
    [COLL_ALLREDUCE] = {.latency_us = 9.5, .busbw_gbps = 320.0},
    [COLL_ALLGATHER] = {.latency_us = 8.5, .busbw_gbps = 275.0},
    [COLL_REDUCESCATTER] = {.latency_us = 12.0, .busbw_gbps = 275.0},
};

const struct snapccl_nccl_constants* snapccl_cost_nccl_constants(int coll_kind) {
  return coll_kind >= 0 && coll_kind < COLL_NKINDS ? &nccl_constants[coll_kind] : NULL;
}

double snapccl_cost_nccl_us(const struct snapccl_coll* c) {
  const struct snapccl_nccl_constants* k = &nccl_constants[c->kind];
  const double n = c->comm->nranks;
  const double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  /* Bytes each rank sends, as nccl-tests' bus bandwidth counts them: 2(n-1)/n of the
   * buffer for an all-reduce, (n-1) per-rank pieces for the other two. */
  const double moved = c->kind == COLL_ALLREDUCE ? 2.0 * (n - 1) / n * bytes : (n - 1) * bytes;
  return k->latency_us + moved / (k->busbw_gbps * 1e3);
}

const struct snapccl_tuning_row* snapccl_cost_row(const struct snapccl_coll* c) {
  const size_t es = snapccl_dtype_size(c->dtype);
  return snapccl_tuning_find(c->comm->tuning, c->kind, es, TUNING_EAGER, (uint64_t)c->count * es);
}

double snapccl_cost_select_us(const struct snapccl_tuning_row* row, const char* name,
                              double model_us, int* measured) {
  double us;
  *measured = snapccl_tuning_time(row, name, &us);
  if (*measured) return us;
  return row ? SNAPCCL_COST_UNMEASURED_US + model_us : model_us;
}
