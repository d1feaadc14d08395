#include "algos/cost.h"

#include "comm.h"

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
    /* Copy engines (not yet measured by us): cudaMemcpyPeerAsync moved 396 GB/s one way
     * and 392 + 392 both ways on two H200s (issue 25); a copy costs a few microseconds to
     * start. Within one GPU a copy reads and writes HBM; 1500 GB/s is a guess until the
     * one-GPU run measures it. */
    .ce_gbps = 390.0,
    .ce_local_gbps = 1500.0,
    .ce_copy_us = 2.5,
};

const struct snapccl_cost_constants* snapccl_cost_constants(void) { return &constants; }

double snapccl_cost_sync_us(const struct snapccl_comm* comm) {
  if (comm->ranks_on_dev > comm->ranks_on_dev_in_proc) return constants.sync_timeslice_us;
  if (comm->ranks_on_dev > 1) return constants.sync_shared_us;
  return constants.sync_us;
}

double snapccl_cost_link_us(double bytes) { return bytes / (constants.link_gbps * 1e3); }
double snapccl_cost_local_us(double bytes) { return bytes / (constants.hbm_gbps * 1e3); }

double snapccl_cost_ce_us(const struct snapccl_comm* comm, double copies, double bytes, double local) {
  const double peer_gbps = comm->ranks_on_dev > 1 ? constants.ce_local_gbps : constants.ce_gbps;
  return copies * constants.ce_copy_us + bytes / (peer_gbps * 1e3) + local / (constants.ce_local_gbps * 1e3);
}
