/* State shared by the pieces of a perf binary: the run (one per process) and its
 * threads (-t), each driving -g ranks. */
#ifndef PERF_PERF_H_
#define PERF_PERF_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cuda_runtime.h>

#include "algo.h"
#include "args.h"
#include "coll.h"
#include "datagen.h"
#include "nccl_api.h"
#include "team.h"

/* Bytes after each output checked for stray writes (and allocated for that). */
#define PERF_GUARD_BYTES 256
/* Seed of the data the timed iterations run on; checked runs use 1, 2, 3, ... */
#define PERF_TIMING_SEED 0x5eedull

struct perf_run {
  const struct perf_coll* coll;
  struct perf_opts o;
  const char* prog;       /* program name for the header and footer */
  int nranks;             /* all ranks of all processes */
  int proc, nprocs;       /* this process, of the world's */
  int is_main;            /* this process prints (the main thread of process 0) */
  size_t maxbytes;        /* largest size actually run (after the memory limit) */
  size_t bufbytes;        /* bytes allocated per send and per receive buffer */
  int use_cuda_malloc;    /* SNAPCCL_PERF_ALLOC=cuda */
  int types[PERF_NUM_TYPES], ntypes;
  int ops[PERF_NUM_OPS], nops;
  ncclUniqueId id;
  struct perf_team team;
  FILE* out;
};

struct perf_thread {
  struct perf_run* run;
  int thread;             /* index in the process */
  int ngpus;              /* ranks this thread drives */
  int first_rank;         /* global rank of its first */
  int* gpus;              /* CUDA device per rank */
  ncclComm_t* comms;
  cudaStream_t* streams;
  char** send;            /* allocations, bufbytes each */
  char** recv;
  void** send_reg;        /* -R handles or windows */
  void** recv_reg;
  unsigned long long** wrong; /* device counters for the check kernels */
  ncclRedOp_t* pending_ops;   /* PreMulSum ops to destroy once their group ended, */
  int* pending_idx;           /* with the index of their communicator */
  int npending, pending_cap;
  int in_group;               /* inside the -m aggregation group */
  int probing, rejected;      /* -d/-o all: first call of a (type, op), and its verdict */
  uint64_t rep;           /* checked-run counter: the seed, equal on all threads */
  double bw_sum;          /* bus bandwidth over all rows, for the footer's average */
  int bw_count;
  int errors;             /* checked runs with wrong elements on this thread */
  int64_t mem_init, mem_buffers, mem_coll; /* -M */
  struct perf_algo_tracker algo;
};

/* setup.c: communicators, streams, buffers of one thread's ranks (or of all local
 * ranks when called for the process before threads start), and their teardown. */
int perf_setup_comms(struct perf_run* run, struct perf_thread* thr);
int perf_setup_buffers(struct perf_run* run, struct perf_thread* thr);
int perf_teardown(struct perf_run* run, struct perf_thread* thr);
/* Smallest free device memory over the thread's GPUs (for -M). */
int64_t perf_free_mem_min(const struct perf_thread* thr);

/* bench.c: the sweep over types, ops and sizes for one thread. */
int perf_thread_run_tests(struct perf_thread* thr);

/* Process entry point shared by all_reduce_perf, all_gather_perf, reduce_scatter_perf. */
int perf_main(int argc, char** argv, const struct perf_coll* coll);

#endif
