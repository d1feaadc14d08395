/* Shared helpers of the GPU suite (tests/gpu): GPU presence, settings, host encodings
 * of the small float formats, per-dtype data and CPU references, guarded device
 * buffers, and one "case" (one collective call on every local rank) from data
 * generation to verification. Nothing here uses Criterion, so forked ranks (which must
 * never touch Criterion) use the same code; failures come back as -1 with a message. */
#ifndef SNAPCCL_TESTS_GPU_COMMON_H
#define SNAPCCL_TESTS_GPU_COMMON_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "nccl.h"

#define T_MAXR 16      /* ranks of one world (snapccl's kernels serve up to 16) */
#define T_ERRLEN 2048  /* size of every error buffer */
/* Formats a failure into err (T_ERRLEN bytes); returns -1, the helpers' failure code. */
int t_fail(char* err, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
#define T_GUARD 64     /* bytes checked on each side of every buffer region */

/* Skip the current Criterion test unless this process sees a GPU. */
#define T_REQUIRE_GPU()                                        \
  do {                                                         \
    if (t_gpu_count() <= 0) cr_skip_test("no GPU");            \
  } while (0)
/* The same for tests whose process must stay CUDA-free (it forks ranks later). */
#define T_REQUIRE_GPU_FORKED()                                 \
  do {                                                         \
    if (t_gpu_count_forked() <= 0) cr_skip_test("no GPU");     \
  } while (0)
/* A Criterion assertion on a helper that returns 0 or -1 with a message in err. */
#define T_OK(call, err) cr_assert((call) == 0, "%s", (err))

/* ---- GPUs, time, settings ---- */
int t_gpu_count(void);        /* cudaGetDeviceCount here; 0 when it fails */
int t_gpu_count_forked(void); /* asked from a short-lived child: this process stays CUDA-free */
double t_now(void);           /* CLOCK_MONOTONIC seconds (one clock for all processes) */
void t_sleep_ms(int ms);
void t_sleep_ns(long ns);
/* The suite's defaults: SNAPCCL_SHARED_GPU=1, SNAPCCL_ALGO unset, SNAPCCL_TIMEOUT_MS=15000
 * and SNAPCCL_BOOTSTRAP_TIMEOUT=30 unless the environment already sets them; reloads. */
void t_env_defaults(void);
void t_env_set(const char* name, const char* value); /* value NULL: unset; then reload */
/* Host-side bound of every wait: the device timeout plus 10 s. */
double t_wait_bound_s(void);
/* SNAPCCL_ALGO=<coll>:<algo>, or unset for algo NULL; reloads only on a change. */
void t_set_algo(int coll, const char* algo);

/* ---- dtypes and ops ---- */
extern const ncclDataType_t t_all_dtypes[12];
size_t t_dt_size(ncclDataType_t dt);
const char* t_dt_name(ncclDataType_t dt);
int t_dt_is_float(ncclDataType_t dt);

enum t_op { T_SUM, T_PROD, T_MAX, T_MIN, T_AVG, T_PREMUL_HOST, T_PREMUL_DEV, T_NOPS };
enum t_coll { T_AR, T_AG, T_RS };
const char* t_op_name(int op);
const char* t_coll_name(int coll);

/* ---- host encodings (IEEE round to nearest even) ---- */
uint16_t t_half_enc(double v);
double t_half_dec(uint16_t b);
uint16_t t_bf16_enc(double v);
double t_bf16_dec(uint16_t b);
uint8_t t_e4m3_enc(double v); /* bias 7, max 448, no infinities; overflow gives NaN 0x7f */
double t_e4m3_dec(uint8_t b);
uint8_t t_e5m2_enc(double v); /* bias 15, IEEE-like */
double t_e5m2_dec(uint8_t b);
/* Element i of buf as a double (integers exactly up to 2^53), and the reverse
 * (floats rounded to nearest even, integers truncated to the width). */
double t_get(ncclDataType_t dt, const void* buf, size_t i);
void t_put(ncclDataType_t dt, void* buf, size_t i, double v);

/* ---- random numbers (splitmix64) ---- */
uint64_t t_mix(uint64_t x);
uint64_t t_rand(uint64_t* state);

/* ---- one collective call on every local rank ---- */
struct t_case {
  int coll;               /* enum t_coll */
  ncclDataType_t dt;
  int op;                 /* enum t_op (ignored for all-gather) */
  size_t count;           /* NCCL's count argument */
  int in_place;
  const char* algo;       /* forced through SNAPCCL_ALGO, or NULL for the library's choice */
  int send_off[T_MAXR];   /* byte offsets 0..15 of each rank's pointers */
  int recv_off[T_MAXR];
  uint64_t seed;          /* inputs are a function of (seed, rank) */
  int null_bufs;          /* count 0 only: pass NULL buffers */
};
/* The k-th pattern of misaligned byte offsets (0..15, different per rank and between send
 * and recv) into send_off[0..n) and recv_off[0..n). */
void t_misalign(int k, int n, int* send_off, int* recv_off);
/* X(name, dtype) for every NCCL dtype: one Criterion test each. */
#define T_EACH_DTYPE(X)                                                                    \
  X(int8, ncclInt8) X(uint8, ncclUint8) X(int32, ncclInt32) X(uint32, ncclUint32)         \
  X(int64, ncclInt64) X(uint64, ncclUint64) X(half, ncclFloat16) X(float32, ncclFloat32)  \
  X(float64, ncclFloat64) X(bfloat16, ncclBfloat16) X(e4m3, ncclFloat8e4m3) X(e5m2, ncclFloat8e5m2)
/* A case with zero offsets. */
struct t_case t_case_make(int coll, ncclDataType_t dt, int op, size_t count, int in_place,
                          const char* algo, uint64_t seed);
/* One line naming the case, for messages. */
const char* t_case_str(const struct t_case* c, int nranks, char* buf, size_t len);
/* Does the forced algorithm run this call (the selector's table, restated)? */
int t_algo_accepts(const struct t_case* c, int nranks);
/* The code NCCL refuses this call with (tests/acceptance_matrix.h, world size 1; every
 * algorithm of ours refuses it too), or ncclSuccess. */
ncclResult_t t_nccl_refuses(const struct t_case* c, int nranks);
/* Bytes each rank's send and recv regions need (without guards and offsets). */
size_t t_case_send_bytes(const struct t_case* c, int nranks);
size_t t_case_recv_bytes(const struct t_case* c, int nranks);

/* ---- a world: nranks ranks, of which this process drives [first, first+nlocal) ---- */
struct t_world {
  int n, first, nlocal, ndev;
  int dev[T_MAXR];
  ncclComm_t comm[T_MAXR];
  cudaStream_t stream[T_MAXR];
  uint64_t hash; /* FNV-1a (tests/fnv.h) of every all-reduce / all-gather result, to compare across processes */
};
/* All ranks here, through ncclCommInitAll (rank r on GPU r % ndev); checks the queries. */
int t_world_init(struct t_world* w, int nranks, char* err);
/* One rank of a multi-process world through ncclCommInitRank. */
int t_world_init_rank(struct t_world* w, int nranks, int rank, const ncclUniqueId* id, char* err);
/* ncclCommDestroy on every local rank; streams freed. */
int t_world_free(struct t_world* w, char* err);
/* Waits (bounded by timeout_s) for every local stream, then checks that no rank has
 * an asynchronous error. */
int t_world_sync(struct t_world* w, double timeout_s, char* err);

/* Guarded device buffers of every local rank (each region: guard, 16 bytes of offset
 * room, payload, guard), plus room for a device PreMulSum scalar. */
struct t_bufs {
  char* send[T_MAXR];
  char* recv[T_MAXR];
  void* scalar[T_MAXR];
  size_t send_cap, recv_cap;
};
int t_bufs_alloc(struct t_world* w, struct t_bufs* b, size_t send_cap, size_t recv_cap, char* err);
void t_bufs_free(struct t_world* w, struct t_bufs* b);

/* Per-case host state: every rank's inputs, expected results, reduction operators. */
struct t_host;
/* Fresh inputs from c->seed, uploaded with guards on each rank's stream; outputs
 * poisoned (NaN for floats, the complement of the expected value for integers and
 * all-gather); PreMulSum operators created, each rank with its own scalar. The
 * references follow NCCL: a PreMulSum (and a floating average, by 1/nranks) scales each
 * rank's input by that rank's scalar, rounded to the dtype, then sums (in fp32 for the
 * small floats, rounded once at the end); integers wrap in their width. */
int t_case_prepare(struct t_world* w, const struct t_case* c, struct t_bufs* b,
                   struct t_host** out, char* err);
/* One rank's NCCL call for the case (no group, no check). */
ncclResult_t t_case_call(struct t_world* w, const struct t_case* c, struct t_bufs* b,
                         struct t_host* h, int rank);
/* Sets SNAPCCL_ALGO, issues every local rank's call (in a group when more than one),
 * releases the operators, and checks the outcome against t_algo_accepts: success, or
 * ncclInvalidUsage naming SNAPCCL_ALGO; snapcclQueryAlgorithm must agree. *issued tells
 * whether kernels were launched. */
int t_case_issue(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h,
                 int* issued, char* err);
/* ncclRedOpDestroy of the case's operators (idempotent). */
int t_case_release_ops(struct t_world* w, struct t_host* h, char* err);
/* After the streams finished: guards intact, send buffers unchanged, results right
 * (or untouched when nothing was issued), bitwise equal across local ranks. */
int t_case_verify(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h,
                  int issued, char* err);
void t_host_free(struct t_world* w, struct t_host* h);
/* prepare, issue, sync, verify, free. */
int t_run_case(struct t_world* w, const struct t_case* c, struct t_bufs* b, char* err);
/* As t_run_case with buffers sized for this case alone. */
int t_run_case_alloc(struct t_world* w, const struct t_case* c, char* err);

#endif
