/* Fused all-reduce + residual add + RMSNorm: one call as the library sees it after the
 * argument checks, its algorithm table, and the routing between our kernels and the
 * real NCCL's all-reduce (docs/FUSED.md). */
#ifndef SNAPCCL_FUSED_H
#define SNAPCCL_FUSED_H

#include <stddef.h>

#include "kernels/fused_kargs.h"
#include "nccl.h"
#include "snapccl.h"

struct snapccl_comm;

struct snapccl_fused {
  const void* input;
  const void* residual_in; /* NULL: no residual */
  const void* gamma;       /* NULL: ones */
  void* norm_out;
  void* residual_out;      /* NULL: not written (skipResidualOut) */
  void* sum_out;           /* NULL: not written */
  const float* scale;      /* FUSED_QUANT_FP8_STATIC */
  float* scale_out;        /* FUSED_QUANT_FP8_DYNAMIC */
  size_t tokens, hidden;
  float eps;
  ncclDataType_t dtype;
  int quant;               /* enum snapccl_fused_quant */
  struct snapccl_comm* comm; /* ours; NULL for a real communicator we hold no state for */
  cudaStream_t stream;
};

/* ---- options and argument checks (api_fused.c); no side effects, the reason in why ---- */

/* Reads the caller's options (NULL: defaults) field by field up to its .size; refuses a
 * missing magic, a size smaller than the header and set fields newer than ours. */
ncclResult_t snapccl_fused_options_read(const snapcclFusedOptions* user, snapcclFusedOptions* out,
                                        char* why, size_t len);
/* Fills *f from the call's arguments and the options, and checks them: dtype, sizes,
 * NULL pointers, eps, quantisation inputs, and overlaps (only norm_out == input,
 * residual_out == residual_in and sumOut == input may alias). */
ncclResult_t snapccl_fused_prepare(struct snapccl_fused* f, const void* input, const void* residual_in,
                                   const void* gamma, void* norm_out, void* residual_out,
                                   size_t tokens, size_t hidden, float eps, ncclDataType_t dtype,
                                   const snapcclFusedOptions* opt, char* why, size_t len);

/* ---- algorithms (src/algos/fused_*.c) ---- */

struct snapccl_fused_algo {
  const char* name;
  /* NULL if the call can run on f->comm, else a one-line reason (static or in buf). */
  const char* (*can_run)(const struct snapccl_fused* f, char* buf, size_t len);
  double (*cost_us)(const struct snapccl_fused* f);
  ncclResult_t (*launch)(const struct snapccl_fused* f);
};

extern const struct snapccl_fused_algo snapccl_fused_oneshot;
extern const struct snapccl_fused_algo snapccl_fused_twoshot;
extern const struct snapccl_fused_algo snapccl_fused_unfused;
extern const struct snapccl_fused_algo snapccl_fused_local;

int snapccl_fused_algo_count(void);
const struct snapccl_fused_algo* snapccl_fused_algo_at(int i);

/* SNAPCCL_ALGO's item "fused:<name>" in spec: 1 and the name, else 0. */
int snapccl_fused_forced(const char* spec, char* name, size_t len);

enum snapccl_fused_route {
  FUSED_ROUTE_OURS = 0, /* *algo runs the call */
  FUSED_ROUTE_REAL = 1, /* the real NCCL's all-reduce, then our separate kernel */
  FUSED_ROUTE_FAIL = 2  /* nothing can run it; why says so */
};
/* The decision, from values every rank shares: `have_real` says a real communicator
 * exists to forward to (interposed or fallback mode); `ours_ready` that f->comm is ours
 * and healthy (attached, not in error). SNAPCCL_ALGO=fused:<name> forces an algorithm
 * ("nccl": the real route); a forced algorithm that cannot run fails the call in
 * standalone mode and goes to the real route otherwise, as collectives do. */
enum snapccl_fused_route snapccl_fused_route(const struct snapccl_fused* f, int have_real,
                                             int ours_ready, const struct snapccl_fused_algo** algo,
                                             char* why, size_t len);

/* At INFO, once per algorithm (NULL: the real route) and power-of-two size class in this
 * process: which one runs a fused call. */
void snapccl_fused_log_choice(const struct snapccl_fused* f, const struct snapccl_fused_algo* a);

/* ---- pieces the algorithms share (src/algos/fused_common.c) ---- */

/* Bytes of one row in staging (rounded up to whole 16-byte packs). */
unsigned long long snapccl_fused_stride(const struct snapccl_fused* f);
/* Blocks a communicating fused kernel may use: the agreed cap, and no more than two
 * per SM of the smallest GPU shared among the most ranks of one process (their blocks
 * spin on each other and must all be resident; launch bounds promise two per SM).
 * Computed from the agreed peer table, so every rank gets the same number. */
int snapccl_fused_block_cap(const struct snapccl_comm* comm);
/* The kernel arguments that do not depend on the communicator. */
void snapccl_fused_kargs_fill(const struct snapccl_fused* f, struct snapccl_fused_kargs* k);
typedef cudaError_t (*snapccl_fused_launcher_fn)(const struct snapccl_fused_kargs* f, int blocks,
                                                 cudaStream_t s);
/* Launches a communicating fused kernel through the shared launch path (launch.c: the
 * communicator's kernel arguments, its GPU, cross-stream ordering). */
ncclResult_t snapccl_fused_launch_comm(const struct snapccl_fused* f, snapccl_fused_launcher_fn fn,
                                       int blocks, unsigned long long rows_per_chunk);
/* The separate kernel on f->stream and `device`: rows of sum_src. */
ncclResult_t snapccl_fused_launch_norm(const struct snapccl_fused* f, const void* sum_src, int device);
/* Loads the fused kernels on `device` once per process (before any of them can spin). */
ncclResult_t snapccl_fused_ensure_loaded(int device);
/* Where the all-reduced rows go when the reduction and the norm are separate kernels:
 * sumOut, else norm_out (not fp8), else residual_out (written, not in place); NULL: a
 * scratch buffer is needed. */
void* snapccl_fused_sum_buffer(const struct snapccl_fused* f);
/* The real route: NVIDIA's ncclAllReduce on `real` into the sum buffer, then the
 * separate kernel. */
ncclResult_t snapccl_fused_run_real(const struct snapccl_fused* f, ncclComm_t real, int device);

#endif
