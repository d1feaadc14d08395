/* Helpers of the lifetime programs (lifetime_*.c): what a process holds (GPU memory,
 * resident memory, descriptors, threads), and a small all-reduce checked against the
 * exact answer. Plain C, no Criterion: the programs run for minutes and print figures. */
#ifndef SNAPCCL_TESTS_GPU_LIFETIME_H
#define SNAPCCL_TESTS_GPU_LIFETIME_H

#include <stddef.h>

#include "nccl.h"

/* Exit status of a program that found no GPU (meson counts it as skipped). */
#define LT_SKIP 77

struct lt_usage {
  double gpu_used_mib; /* cudaMemGetInfo: total - free, of the whole device */
  double rss_mib;      /* VmRSS of this process */
  int fds, threads;
};
/* Fills u; 0, or -1 with the reason in err (T_ERRLEN bytes). */
int lt_usage_now(struct lt_usage* u, char* err);
void lt_usage_print(const char* label, const struct lt_usage* u);

/* The slack allowed between a start and an end measurement (docs/ARCHITECTURE.md):
 * CUDA and the allocators keep what they grew once; a leak per cycle adds up to more
 * over hundreds of cycles. Descriptors and threads must match exactly. */
#define LT_GPU_SLACK_MIB 4.0
#define LT_RSS_SLACK_MIB 16.0
/* Compares end against start within the slack; prints the verdict. 0 if within. */
int lt_usage_compare(const struct lt_usage* start, const struct lt_usage* end, const char* what);

/* Ended bootstrap roots keep listening a while to tell late ranks their id is used up
 * (at most min(SNAPCCL_BOOTSTRAP_TIMEOUT, 10 s)): waits that long, so that their
 * threads and descriptors are gone before a measurement. */
void lt_settle(void);

/* Device buffers of one rank for lt_allreduce_check (count floats each way). */
struct lt_bufs {
  float *send, *recv;
  size_t count;
};
int lt_bufs_alloc(struct lt_bufs* b, size_t count, char* err);
void lt_bufs_free(struct lt_bufs* b);

/* One float32 sum all-reduce of count elements on n communicators driven from this
 * thread (in a group when n > 1), whose ranks are ranks[i] of nranks: inputs are small
 * integers, so the expected sum is exact; outputs are poisoned first. Waits at most
 * bound_s for the streams and for no asynchronous error. 0, or -1 with err. */
int lt_allreduce_check(ncclComm_t* comms, cudaStream_t* streams, struct lt_bufs* bufs,
                       const int* ranks, int n, int nranks, double bound_s, char* err);

#endif
