#include "algos/cost.h"

#include "comm.h"
#include "tuning.h"

/* Ranks on GPUs of their own. Measured on two H200s over NVLink 4 (with NCCL 2.28
 * beside): 3.0 us per eager launch, 1.24 us flag round trip, 364-374 GB/s for kernel
 * remote stores/loads, 3.9 TB/s local copies. To be refined from the multi-GPU
 * comparison runs. */
static const struct snapccl_cost_constants own_gpus = {
    .launch_us = 3.0,
    .sync_us = 1.24,
    .lamport_poll_us = 0.3,
    .link_gbps = 365.0,
    .oneshot_link_gbps = 365.0,
    .lamport_link_gbps = 365.0,
    .hbm_gbps = 3900.0,
    /* Copy engines (not yet measured by us): cudaMemcpyPeerAsync moved 396 GB/s one way
     * and 392 + 392 both ways on two H200s (issue 25); a copy costs a few microseconds to
     * start. */
    .ce_gbps = 390.0,
    .ce_local_gbps = 1500.0,
    .ce_copy_us = 2.5,
};

/* Ranks sharing one GPU in one process (SNAPCCL_SHARED_GPU=1), fitted to two ranks on an
 * H100 (perf/RESULTS.md section 6: CUDA-graph sweeps, so no host time). Both ranks'
 * kernels run at once on one GPU's SMs and memory, and the algorithms differ far more
 * than over NVLink:
 *   Lamport    6.8-8.6 us up to 32 KiB, then ~30 us more per MiB (its packs double the
 *              bytes, and its grid is small);
 *   one-shot   8.2 us at the smallest sizes, ~8.6 us more per MiB from 64 KiB to 1 MiB;
 *   two-shot   10.4-11.6 us up to 64 KiB, ~3.2 us more per MiB.
 * Fixed costs: launch 3.0, Lamport's polling 4.0, a flag round trip 4.4 (one-shot one,
 * two-shot two). The model then keeps Lamport to 16 KiB, the one-shot to 512 KiB and the
 * two-shot above (measured: Lamport and one-shot even at 32 KiB, one-shot and two-shot
 * within 3% at 1 MiB). Copies within one GPU read and write HBM; 1500 GB/s is a guess
 * until a run measures it. */
static const struct snapccl_cost_constants shared_gpu = {
    .launch_us = 3.0,
    .sync_us = 4.4,
    .lamport_poll_us = 4.0,
    .link_gbps = 488.0,
    .oneshot_link_gbps = 139.0,
    .lamport_link_gbps = 37.0,
    .hbm_gbps = 3000.0,
    .ce_gbps = 1500.0,
    .ce_local_gbps = 1500.0,
    .ce_copy_us = 2.5,
};

/* A flag round trip between processes time-slicing one GPU (H100): the other process's
 * kernel runs only in its time slice. */
static const double timeslice_sync_us = 4500.0;

const struct snapccl_cost_constants* snapccl_cost_constants(const struct snapccl_comm* comm) {
  return comm->ranks_on_dev > 1 ? &shared_gpu : &own_gpus;
}

double snapccl_cost_sync_us(const struct snapccl_comm* comm) {
  if (comm->ranks_on_dev > comm->ranks_on_dev_in_proc) return timeslice_sync_us;
  return snapccl_cost_constants(comm)->sync_us;
}

double snapccl_cost_bytes_us(double bytes, double gbps) { return bytes / (gbps * 1e3); }
double snapccl_cost_link_us(const struct snapccl_cost_constants* k, double bytes) {
  return snapccl_cost_bytes_us(bytes, k->link_gbps);
}
double snapccl_cost_local_us(const struct snapccl_cost_constants* k, double bytes) {
  return snapccl_cost_bytes_us(bytes, k->hbm_gbps);
}

/* NCCL 2.28.3 on two H200s over 18 NVLinks (NCCL_NVLS_ENABLE=0), out-of-place eager
 * times measured with the same perf binaries and launch as our kernels (perf/RESULTS.md
 * section 5; nccl-tests' own in /work/shared/reference/ agree within a few us), keyed by
 * the bytes each rank sends (nccl-tests' bus bytes: the buffer for a two-rank all-reduce,
 * half the gathered buffer for the other two). NCCL's time is not one latency plus one
 * bandwidth (its protocols change with size: 21.5 us at 1 MiB, 78 at 16, 3281 at 1 GiB),
 * so the model interpolates between these points and extends the last segment. */
struct point {
  double bytes, us;
};
static const struct point nccl_allreduce[] = {
    {32, 18.9}, {65536, 19.5}, {524288, 20.6}, {1048576, 21.5}, {2097152, 29.2},
    {16777216, 78.3}, {67108864, 248.1}, {268435456, 889.5}, {1073741824, 3281.1}};
static const struct point nccl_allgather[] = {
    {16, 16.5}, {32768, 16.8}, {262144, 18.2}, {524288, 18.2}, {1048576, 18.4},
    {8388608, 54.4}, {33554432, 155.6}, {134217728, 543.4}, {536870912, 1954.2}};
static const struct point nccl_reducescatter[] = {
    {16, 19.4}, {32768, 19.1}, {262144, 20.8}, {524288, 21.1}, {1048576, 21.8},
    {8388608, 52.9}, {33554432, 158.8}, {134217728, 560.4}, {536870912, 1952.2}};
#define NPOINTS (sizeof nccl_allreduce / sizeof nccl_allreduce[0])
static const struct point* const nccl_curve[COLL_NKINDS] = {nccl_allreduce, nccl_allgather,
                                                            nccl_reducescatter};
/* That run's per-call host cost, which this model leaves out of our kernels' estimates
 * and so takes out of NCCL's too, keeping the measured ratio of the two: our measured
 * time at 32 B less our estimate (Lamport all-reduce 13.0 - 3.3 us, all-gather direct
 * 12.0 - 4.2, reduce-scatter direct 9.1 - 4.2). */
static const double nccl_host_us[COLL_NKINDS] = {9.7, 7.8, 4.9};

double snapccl_cost_nccl_us(const struct snapccl_coll* c) {
  const struct point* p = nccl_curve[c->kind];
  const double n = c->comm->nranks;
  const double bytes = (double)c->count * (double)snapccl_dtype_size(c->dtype);
  /* A ring's bus bytes: other world sizes read the two-rank curve at what each rank sends
   * (their extra latency per step is not modelled). */
  const double moved = c->kind == COLL_ALLREDUCE ? 2.0 * (n - 1) / n * bytes : (n - 1) * bytes;
  size_t i = 1;
  while (i + 1 < NPOINTS && moved > p[i].bytes) i++;
  double us = moved <= p[0].bytes
                  ? p[0].us
                  : p[i - 1].us + (p[i].us - p[i - 1].us) * (moved - p[i - 1].bytes) / (p[i].bytes - p[i - 1].bytes);
  us -= nccl_host_us[c->kind];
  return us > 1.0 ? us : 1.0;
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

double snapccl_cost_ce_us(const struct snapccl_comm* comm, double copies, double bytes, double local) {
  const struct snapccl_cost_constants* k = snapccl_cost_constants(comm);
  return copies * k->ce_copy_us + snapccl_cost_bytes_us(bytes, k->ce_gbps) +
         snapccl_cost_bytes_us(local, k->ce_local_gbps);
}
