/* The cost model: every constant the selector uses sits in one table (cost.c), so
 * thresholds move by editing numbers measured on a host, not code. */
#ifndef SNAPCCL_COST_H
#define SNAPCCL_COST_H

#include <stddef.h>

struct snapccl_comm;

struct snapccl_cost_constants {
  double launch_us;         /* kernel launch and the first instructions */
  double sync_us;           /* one flag round trip between the ranks */
  double lamport_poll_us;   /* Lamport's extra polling cost per call */
  double link_gbps;         /* SM-driven bytes per second to the peers (staged kernels), GB/s */
  double oneshot_link_gbps; /* ... as the one-shot kernel reads them */
  double lamport_link_gbps; /* ... as Lamport packs carry them */
  double hbm_gbps;          /* local read+write bandwidth, GB/s */
  double ce_gbps;           /* one copy engine's bytes per second to a peer GPU, per direction */
  double ce_local_gbps;     /* ... within one GPU (bound by HBM: ranks sharing a GPU) */
  double ce_copy_us;        /* starting one cudaMemcpyAsync */
};

/* The constants for where this communicator's ranks sit: on GPUs of their own, or
 * sharing one GPU (then the "links" are that GPU's own memory, and the ranks' kernels
 * split its SMs between them). */
const struct snapccl_cost_constants* snapccl_cost_constants(const struct snapccl_comm* comm);

/* One synchronisation between this communicator's ranks, by where they sit. */
double snapccl_cost_sync_us(const struct snapccl_comm* comm);
/* Microseconds to move `bytes` at `gbps` GB/s; to the peers at k's staged-kernel rate;
 * through local memory. */
double snapccl_cost_bytes_us(double bytes, double gbps);
double snapccl_cost_link_us(const struct snapccl_cost_constants* k, double bytes);
double snapccl_cost_local_us(const struct snapccl_cost_constants* k, double bytes);
/* Microseconds for `copies` copy-engine copies moving `bytes` in all between ranks of
 * this communicator (a peer GPU, or the same one), and `local` bytes within this GPU. */
double snapccl_cost_ce_us(const struct snapccl_comm* comm, double copies, double bytes, double local);

struct snapccl_coll;
struct snapccl_tuning_row;
/* The model's estimate of NVIDIA's NCCL running coll: its times measured on two H200s
 * (cost.c), read at the bytes each rank sends. */
double snapccl_cost_nccl_us(const struct snapccl_coll* coll);
/* The tuning file's row covering coll on its communicator (eager launch), or NULL. */
const struct snapccl_tuning_row* snapccl_cost_row(const struct snapccl_coll* coll);
/* What the selector compares for algorithm `name`: the row's measured time where the row
 * has one; else the model's estimate, plus SNAPCCL_COST_UNMEASURED_US when a row covers
 * the call (an algorithm the tool did not time loses to every one it did, and unmeasured
 * ones still rank among themselves by the model). *measured says which. */
#define SNAPCCL_COST_UNMEASURED_US 1e12
double snapccl_cost_select_us(const struct snapccl_tuning_row* row, const char* name,
                              double model_us, int* measured);

#endif
