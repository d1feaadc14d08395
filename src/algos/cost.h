/* The cost model: every constant the selector uses sits in one table (cost.c), so
 * thresholds move by editing numbers measured on a host, not code. */
#ifndef SNAPCCL_COST_H
#define SNAPCCL_COST_H

#include <stddef.h>

struct snapccl_comm;

struct snapccl_cost_constants {
  double launch_us;         /* kernel launch and the first instructions */
  double sync_us;           /* one flag round trip between GPUs over NVLink */
  double sync_shared_us;    /* ... between ranks sharing a GPU in one process */
  double sync_timeslice_us; /* ... between processes time-slicing one GPU */
  double lamport_poll_us;   /* Lamport's extra polling cost per call */
  double link_gbps;         /* SM-driven bytes per second out of one GPU, in GB/s */
  double hbm_gbps;          /* local read+write bandwidth, GB/s */
  double ce_gbps;           /* one copy engine's bytes per second to a peer GPU, per direction */
  double ce_local_gbps;     /* ... within one GPU (bound by HBM: ranks sharing a GPU) */
  double ce_copy_us;        /* starting one cudaMemcpyAsync */
};

const struct snapccl_cost_constants* snapccl_cost_constants(void);
/* One synchronisation between this communicator's ranks, by where they sit. */
double snapccl_cost_sync_us(const struct snapccl_comm* comm);
/* Microseconds to move `bytes` over links / through local memory. */
double snapccl_cost_link_us(double bytes);
double snapccl_cost_local_us(double bytes);
/* Microseconds for `copies` copy-engine copies moving `bytes` in all between ranks of
 * this communicator (a peer GPU, or the same one), and `local` bytes within this GPU. */
double snapccl_cost_ce_us(const struct snapccl_comm* comm, double copies, double bytes, double local);

#endif
