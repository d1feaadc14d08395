/* The measurement loop of one thread (perf.h): for each type, op and size, time the
 * out-of-place and the in-place collective, check the results, print the row. The
 * sequence follows nccl-tests' so that numbers mean the same:
 *   warm-up: -w iterations of every size (doubling) before the sweep;
 *   per size: one untimed call, then -n iterations (of -m calls in one group), timed
 *   on the host from the first issue to the end of the last completion, divided by
 *   -n * -m (and by -G launches with graphs); ranks' times combined per -a;
 *   then -c checked calls on fresh data, over outputs poisoned beforehand. */
#include "perf.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "datacheck.h"
#include "format.h"
#include "world.h"

/* One size of one (type, op) sweep. */
struct perf_size {
  int dt, op;
  size_t elt;
  struct perf_counts c;
};

static double now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int is_printer(const struct perf_thread* thr) { return thr->run->is_main && thr->thread == 0; }

static int rank_of(const struct perf_thread* thr, int i) { return thr->first_rank + i; }

static void abort_comms(struct perf_thread* thr) {
  int i;
  for (i = 0; i < thr->ngpus; i++)
    if (thr->comms[i]) ncclCommAbort(thr->comms[i]);
}

/* Waits for all of this thread's streams. Polls rather than blocks so that a stuck
 * collective hits -T and an asynchronous NCCL error surfaces instead of hanging. */
static int sync_streams(struct perf_thread* thr) {
  const int timeout = thr->run->o.timeout;
  const double t0 = now_sec();
  int remaining = thr->ngpus, i;
  char* done = calloc((size_t)thr->ngpus, 1);
  if (!done) {
    perf_report("out of host memory");
    return -1;
  }
  while (remaining > 0) {
    int idle = 1;
    for (i = 0; i < thr->ngpus; i++) {
      cudaError_t e;
      ncclResult_t async = ncclSuccess;
      if (done[i]) continue;
      e = cudaStreamQuery(thr->streams[i]);
      if (e == cudaSuccess) {
        done[i] = 1;
        remaining--;
        idle = 0;
        continue;
      }
      if (e != cudaErrorNotReady) {
        perf_report_cuda("cudaStreamQuery", e, __FILE__, __LINE__);
        free(done);
        return -1;
      }
      if (ncclCommGetAsyncError(thr->comms[i], &async) != ncclSuccess ||
          (async != ncclSuccess && async != ncclInProgress)) {
        perf_report("asynchronous NCCL error on rank %d: %s %s", rank_of(thr, i),
                    perf_nccl_error_string(async), perf_nccl_last_error());
        abort_comms(thr);
        free(done);
        return -1;
      }
      if (timeout > 0 && now_sec() - t0 > (double)timeout) {
        perf_report("Test timeout (%ds) on rank %d", timeout, rank_of(thr, i));
        abort_comms(thr);
        free(done);
        return -1;
      }
    }
    if (idle) sched_yield(); /* leave the CPU to the library's own threads */
  }
  free(done);
  return 0;
}

/* Destroys the PreMulSum ops of the group that just ended. */
static int flush_ops(struct perf_thread* thr) {
  int k;
  for (k = 0; k < thr->npending; k++)
    PERF_NCCL(ncclRedOpDestroy(thr->pending_ops[k], thr->comms[thr->pending_idx[k]]));
  thr->npending = 0;
  return 0;
}

static int push_op(struct perf_thread* thr, ncclRedOp_t op, int idx) {
  if (thr->npending == thr->pending_cap) {
    int cap = thr->pending_cap ? 2 * thr->pending_cap : 16;
    ncclRedOp_t* ops = realloc(thr->pending_ops, (size_t)cap * sizeof(*ops));
    int* idxs;
    if (!ops) goto oom;
    thr->pending_ops = ops;
    idxs = realloc(thr->pending_idx, (size_t)cap * sizeof(*idxs));
    if (!idxs) goto oom;
    thr->pending_idx = idxs;
    thr->pending_cap = cap;
  }
  thr->pending_ops[thr->npending] = op;
  thr->pending_idx[thr->npending] = idx;
  thr->npending++;
  return 0;
oom:
  perf_report("out of host memory");
  return -1;
}

/* A failed NCCL call: 1 when it is the probe of a (type, op) that the library rejects
 * as an invalid argument (see probe_combination), else reported, -1. */
static int nccl_failed(struct perf_thread* thr, ncclResult_t r, const char* call, int line) {
  if (thr->probing && r == ncclInvalidArgument) {
    thr->rejected = 1;
    return 1;
  }
  perf_report_nccl(call, r, __FILE__, line);
  return -1;
}

/* The NCCL op for rank i: a PreMulSum by the rank's scalar for mulsum. */
static int make_op(struct perf_thread* thr, const struct perf_size* sz, int i, ncclRedOp_t* op) {
  uint64_t scalar;
  ncclResult_t r;
  if (sz->op != PERF_OP_MULSUM) {
    *op = sz->op == PERF_OP_NONE ? ncclSum : (ncclRedOp_t)sz->op;
    return 0;
  }
  /* Host-immediate: the library reads it before returning, so a stack copy will do. The
   * element sits in the low bytes of the little-endian word. */
  scalar = perf_encode(sz->dt, perf_mulsum_scalar(rank_of(thr, i)));
  r = ncclRedOpCreatePreMulSum(op, &scalar, (ncclDataType_t)sz->dt, ncclScalarHostImmediate,
                               thr->comms[i]);
  if (r != ncclSuccess) return nccl_failed(thr, r, "ncclRedOpCreatePreMulSum", __LINE__);
  return push_op(thr, *op, i);
}

/* Issues one collective on every rank of the thread (one group when several). Like
 * nccl-tests, each iteration moves to a different part of the buffer, so that caches
 * and per-buffer state in the library are not always hit. */
static int start_coll(struct perf_thread* thr, const struct perf_size* sz, int in_place, int iter) {
  const struct perf_run* run = thr->run;
  const size_t elt = sz->elt;
  const size_t total = (sz->c.send > sz->c.recv ? sz->c.send : sz->c.recv) * elt;
  size_t steps = total ? run->maxbytes / total : 1;
  size_t shift, ua = (size_t)run->o.unalign * elt;
  int i, rc = 0;
  if (steps == 0) steps = 1;
  shift = total * ((size_t)iter % steps);
  if (thr->ngpus > 1) PERF_NCCL(ncclGroupStart());
  for (i = 0; i < thr->ngpus && rc == 0; i++) {
    size_t rank = (size_t)rank_of(thr, i);
    char* recvp = thr->recv[i] + ua + shift;
    char* sendp = thr->send[i] + ua + shift;
    const void* s = in_place ? (const void*)(recvp + sz->c.send_ip * rank * elt) : sendp;
    void* r = in_place ? recvp + sz->c.recv_ip * rank * elt : recvp;
    ncclRedOp_t op;
    ncclResult_t res;
    rc = make_op(thr, sz, i, &op);
    if (rc != 0) break;
    res = perf_coll_run(run->coll, s, r, sz->c.param, (ncclDataType_t)sz->dt, op, thr->comms[i],
                        thr->streams[i]);
    if (res != ncclSuccess) rc = nccl_failed(thr, res, run->coll->name, __LINE__);
  }
  if (thr->ngpus > 1) {
    /* Closed even after a failure, so that the library's group state stays balanced. */
    ncclResult_t res = ncclGroupEnd();
    if (res != ncclSuccess && rc == 0) rc = nccl_failed(thr, res, "ncclGroupEnd", __LINE__);
  }
  if (rc != 0) {
    if (rc > 0) flush_ops(thr);
    return rc;
  }
  if (!thr->in_group) PERF_TRY(flush_ops(thr));
  if (run->o.blocking) {
    PERF_TRY(sync_streams(thr));
    if (run->o.blocking == 1) PERF_TRY(perf_team_barrier(&thr->run->team, thr->thread));
  }
  return 0;
}

static int complete_coll(struct perf_thread* thr) {
  /* Blocking modes already waited in start_coll, unless -m grouped several calls. */
  if (thr->run->o.blocking && thr->run->o.agg_iters <= 1) return 0;
  return sync_streams(thr);
}

/* Elements of the receive buffer that the call may touch: the output, and in place
 * also the input that lives there. The guard follows them. */
static size_t touched(const struct perf_size* sz, int in_place) {
  size_t n = sz->c.recv;
  if (in_place && sz->c.send > n) n = sz->c.send;
  return n;
}

/* Poisons outputs (and the guard behind them), writes fresh inputs for seed, zeroes
 * the wrong-element counters. */
static int prepare_data(struct perf_thread* thr, const struct perf_size* sz, int in_place,
                        uint64_t seed) {
  const struct perf_run* run = thr->run;
  const struct perf_scheme s = perf_scheme_make(sz->dt, sz->op, run->nranks);
  const size_t ua = (size_t)run->o.unalign * sz->elt;
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    int rank = rank_of(thr, i);
    char* base = thr->recv[i] + ua;
    void* in = in_place ? base + sz->c.send_ip * (size_t)rank * sz->elt : thr->send[i] + ua;
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(cudaMemsetAsync(base, (int)perf_poison_byte(sz->dt),
                              touched(sz, in_place) * sz->elt + PERF_GUARD_BYTES, thr->streams[i]));
    PERF_CUDA(perf_dev_fill(in, sz->c.send, s, rank, 0, seed, thr->streams[i]));
    PERF_CUDA(cudaMemsetAsync(thr->wrong[i], 0, sizeof(unsigned long long), thr->streams[i]));
  }
  return 0;
}

/* Counts this thread's wrong output elements (and stray writes into the guard). */
static int check_data(struct perf_thread* thr, const struct perf_size* sz, int in_place,
                      uint64_t seed, int64_t* wrong) {
  const struct perf_run* run = thr->run;
  const size_t ua = (size_t)run->o.unalign * sz->elt;
  int i;
  *wrong = 0;
  for (i = 0; i < thr->ngpus; i++) {
    int rank = rank_of(thr, i);
    char* base = thr->recv[i] + ua;
    const char* out = base + (in_place ? sz->c.recv_ip * (size_t)rank * sz->elt : 0);
    struct perf_expect e, guard;
    memset(&e, 0, sizeof(e));
    e.s = perf_scheme_make(sz->dt, sz->op, run->nranks);
    e.seed = seed;
    if (run->coll->id == PERF_ALLGATHER) {
      e.mode = PERF_EXPECT_GATHER;
      e.block = sz->c.param;
    } else {
      e.mode = PERF_EXPECT_REDUCE;
      e.idx0 = run->coll->id == PERF_REDUCESCATTER ? (uint64_t)rank * sz->c.param : 0;
    }
    guard = e;
    guard.mode = PERF_EXPECT_POISON;
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(perf_dev_check(out, sz->c.recv, e, thr->wrong[i], thr->streams[i]));
    PERF_CUDA(perf_dev_check(base + touched(sz, in_place) * sz->elt, PERF_GUARD_BYTES / sz->elt,
                             guard, thr->wrong[i], thr->streams[i]));
  }
  for (i = 0; i < thr->ngpus; i++) {
    unsigned long long n = 0;
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(cudaStreamSynchronize(thr->streams[i]));
    PERF_CUDA(cudaMemcpy(&n, thr->wrong[i], sizeof(n), cudaMemcpyDeviceToHost));
    *wrong += (int64_t)n;
  }
  return 0;
}

static int begin_capture(struct perf_thread* thr, enum cudaStreamCaptureMode mode) {
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(cudaStreamBeginCapture(thr->streams[i], mode));
  }
  return 0;
}

static int end_capture(struct perf_thread* thr, cudaGraph_t* graphs, cudaGraphExec_t* execs) {
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(cudaStreamEndCapture(thr->streams[i], &graphs[i]));
  }
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    PERF_CUDA(cudaGraphInstantiate(&execs[i], graphs[i], 0));
  }
  return 0;
}

static int launch_graphs(struct perf_thread* thr, cudaGraphExec_t* execs) {
  int i;
  for (i = 0; i < thr->ngpus; i++) PERF_CUDA(cudaGraphLaunch(execs[i], thr->streams[i]));
  return 0;
}

static int destroy_graphs(struct perf_thread* thr, cudaGraph_t* graphs, cudaGraphExec_t* execs) {
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaGraphExecDestroy(execs[i]));
    PERF_CUDA(cudaGraphDestroy(graphs[i]));
  }
  return 0;
}

/* The timed part of one half row. */
static int time_iters(struct perf_thread* thr, const struct perf_size* sz, int in_place,
                      cudaGraph_t* graphs, cudaGraphExec_t* execs, double* wall, double* cpu) {
  const struct perf_opts* o = &thr->run->o;
  const double per = (double)o->iters * (double)o->agg_iters;
  double t0, coll_only = 0, elapsed;
  int iter, a, l;
  if (o->graph_launches > 0) PERF_TRY(begin_capture(thr, cudaStreamCaptureModeThreadLocal));
  t0 = now_sec();
  for (iter = 0; iter < o->iters; iter++) {
    double ti = now_sec();
    if (o->agg_iters > 1) {
      PERF_NCCL(ncclGroupStart());
      thr->in_group = 1;
    }
    for (a = 0; a < o->agg_iters; a++)
      PERF_TRY(start_coll(thr, sz, in_place, iter * o->agg_iters + a));
    if (o->agg_iters > 1) {
      PERF_NCCL(ncclGroupEnd());
      thr->in_group = 0;
      PERF_TRY(flush_ops(thr));
    }
    if (o->blocking == 3) {
      PERF_TRY(sync_streams(thr));
      coll_only += now_sec() - ti; /* the barrier below is not the collective's time */
      PERF_TRY(perf_team_barrier(&thr->run->team, thr->thread));
    }
  }
  if (o->graph_launches > 0) {
    PERF_TRY(end_capture(thr, graphs, execs));
    PERF_TRY(perf_team_barrier(&thr->run->team, thr->thread));
    t0 = now_sec(); /* capture and instantiation are not the collective's time */
    for (l = 0; l < o->graph_launches; l++) PERF_TRY(launch_graphs(thr, execs));
  }
  elapsed = o->blocking == 3 ? coll_only : now_sec() - t0;
  *cpu = elapsed / per;
  PERF_TRY(complete_coll(thr));
  elapsed = o->blocking == 3 ? coll_only : now_sec() - t0;
  *wall = elapsed / per;
  if (o->graph_launches > 0) {
    *wall /= (double)o->graph_launches;
    PERF_TRY(destroy_graphs(thr, graphs, execs));
  }
  return 0;
}

/* -c checked runs; *wrong: wrong elements over all ranks (0 when all good). */
static int checked_runs(struct perf_thread* thr, const struct perf_size* sz, int in_place,
                        cudaGraph_t* graphs, cudaGraphExec_t* execs, int64_t* wrong) {
  const struct perf_opts* o = &thr->run->o;
  int c;
  *wrong = 0;
  for (c = 0; c < o->datacheck; c++) {
    uint64_t seed = ++thr->rep;
    int64_t local = 0;
    PERF_TRY(prepare_data(thr, sz, in_place, seed));
    if (o->graph_launches > 0)
      PERF_TRY(begin_capture(thr, o->nthreads > 1 ? cudaStreamCaptureModeThreadLocal
                                                  : cudaStreamCaptureModeGlobal));
    PERF_TRY(start_coll(thr, sz, in_place, 0));
    if (o->graph_launches > 0) {
      PERF_TRY(end_capture(thr, graphs, execs));
      PERF_TRY(launch_graphs(thr, execs));
    }
    PERF_TRY(complete_coll(thr));
    if (o->graph_launches > 0) PERF_TRY(destroy_graphs(thr, graphs, execs));
    PERF_TRY(check_data(thr, sz, in_place, seed, &local));
    if (local) thr->errors++;
    *wrong = local;
    PERF_TRY(perf_team_allreduce_i64(&thr->run->team, thr->thread, wrong, PERF_AVG_SUM));
    if (*wrong) break;
  }
  return 0;
}

/* One half row: out-of-place or in-place. */
static int bench_time(struct perf_thread* thr, const struct perf_size* sz, int in_place) {
  struct perf_run* run = thr->run;
  const struct perf_opts* o = &run->o;
  cudaGraph_t* graphs = calloc((size_t)thr->ngpus, sizeof(*graphs));
  cudaGraphExec_t* execs = calloc((size_t)thr->ngpus, sizeof(*execs));
  double wall = 0, cpu = 0, algbw, busbw;
  int64_t wrong = 0;
  int rc = -1;
  if (!graphs || !execs) {
    perf_report("out of host memory");
    goto out;
  }
  if (o->datacheck && prepare_data(thr, sz, in_place, PERF_TIMING_SEED) != 0) goto out;
  /* One untimed call: first-use costs (connections, registrations) stay out. */
  if (start_coll(thr, sz, in_place, 0) != 0 || complete_coll(thr) != 0) goto out;
  if (perf_team_barrier(&run->team, thr->thread) != 0) goto out;
  if (time_iters(thr, sz, in_place, graphs, execs, &wall, &cpu) != 0) goto out;
  if (perf_team_allreduce_double(&run->team, thr->thread, &wall, o->average) != 0) goto out;
  perf_coll_bw(run->coll, sz->c.param, sz->elt, wall, run->nranks, &algbw, &busbw);
  if (perf_team_barrier(&run->team, thr->thread) != 0) goto out;
  if (checked_runs(thr, sz, in_place, graphs, execs, &wrong) != 0) goto out;
  if (is_printer(thr))
    perf_print_row_half(run->out, (o->report_cputime ? cpu : wall) * 1e6, algbw, busbw,
                        o->datacheck > 0, wrong);
  thr->bw_sum += busbw;
  thr->bw_count++;
  rc = 0;
out:
  free(graphs);
  free(execs);
  return rc;
}

static void size_counts(const struct perf_run* run, size_t bytes, struct perf_size* sz) {
  perf_coll_counts(run->coll, bytes / sz->elt, sz->elt, run->nranks, &sz->c);
}

/* The algorithm line before a row (printing thread only). */
static int note_algorithm(struct perf_thread* thr, const struct perf_size* sz, size_t bytes) {
  char scratch[160];
  ncclRedOp_t op = ncclSum;
  const char* name;
  if (!perf_algo_query_fn()) return 0;
  if (sz->op == PERF_OP_MULSUM) PERF_TRY(make_op(thr, sz, 0, &op));
  else if (sz->op != PERF_OP_NONE) op = (ncclRedOp_t)sz->op;
  name = perf_algo_query(thr->comms[0], thr->run->coll->query, sz->c.param,
                         (ncclDataType_t)sz->dt, op, scratch, sizeof(scratch));
  PERF_TRY(flush_ops(thr));
  perf_algo_note(&thr->algo, thr->run->out, name, bytes);
  return 0;
}

static size_t next_size(const struct perf_opts* o, size_t size) {
  return o->stepfactor > 1 ? size * o->stepfactor : size + o->stepbytes;
}

/* With -d all or -o all, one untimed call first: a (type, op) the library rejects as an
 * invalid argument (NCCL 2.28 has no avg or PreMulSum for fp8, for instance) is then
 * skipped with a note instead of ending the run. Argument checks are deterministic, so
 * every rank rejects the same calls; a split verdict is an error. Returns 1 to skip. */
static int probe_combination(struct perf_thread* thr, struct perf_size* sz) {
  struct perf_run* run = thr->run;
  int64_t rejected;
  /* At least 16 bytes per rank, so that AllGather and ReduceScatter, which round the
   * per-rank count down to 16 bytes, pass a non-zero count (a library may accept any
   * type and op for an empty call). */
  size_t bytes = run->o.minbytes > 16 * (size_t)run->nranks ? run->o.minbytes : 16 * (size_t)run->nranks;
  int rc;
  size_counts(run, bytes < run->maxbytes ? bytes : run->maxbytes, sz);
  thr->probing = 1;
  thr->rejected = 0;
  rc = start_coll(thr, sz, 0, 0);
  thr->probing = 0;
  if (rc < 0) return -1;
  if (rc == 0) PERF_TRY(complete_coll(thr));
  rejected = thr->rejected;
  PERF_TRY(perf_team_allreduce_i64(&run->team, thr->thread, &rejected, PERF_AVG_SUM));
  if (rejected == 0) return 0;
  if (rejected != (int64_t)run->o.nthreads * run->nprocs) {
    perf_report("%s %s rejected by some threads or processes only", perf_type_names[sz->dt],
                perf_op_names[sz->op]);
    return -1;
  }
  if (is_printer(thr))
    fprintf(run->out, "# %s %s skipped: the library rejects it (invalid argument%s%s)\n",
            perf_type_names[sz->dt], perf_op_names[sz->op],
            perf_nccl_last_error()[0] ? ": " : "", perf_nccl_last_error());
  return 1;
}

/* nccl-tests' TimeTest: warm-up over all sizes, then the sweep (-N times). */
static int time_test(struct perf_thread* thr, int dt, int op) {
  struct perf_run* run = thr->run;
  const struct perf_opts* o = &run->o;
  struct perf_size sz;
  size_t size;
  long cycle = o->run_cycles;
  int w;
  memset(&sz, 0, sizeof(sz));
  sz.dt = dt;
  sz.op = op;
  sz.elt = (size_t)perf_dt_size(dt);
  PERF_TRY(perf_team_barrier(&run->team, thr->thread));
  if (o->dtype < 0 || (o->op < 0 && run->coll->reduces)) {
    int rc = probe_combination(thr, &sz);
    if (rc != 0) return rc < 0 ? -1 : 0;
  }
  for (size = o->minbytes; size <= run->maxbytes; size = size ? size * 2 : 1) {
    size_counts(run, size, &sz);
    for (w = 0; w < o->warmup_iters; w++) PERF_TRY(start_coll(thr, &sz, 0, w));
    PERF_TRY(complete_coll(thr));
    if (size > run->maxbytes / 2) break; /* no overflow past SIZE_MAX */
  }
  perf_algo_reset(&thr->algo);
  do {
    for (size = o->minbytes; size <= run->maxbytes; size = next_size(o, size)) {
      size_t bytes;
      size_counts(run, size, &sz);
      bytes = (sz.c.send > sz.c.recv ? sz.c.send : sz.c.recv) * sz.elt;
      if (is_printer(thr)) {
        PERF_TRY(note_algorithm(thr, &sz, bytes));
        perf_print_row_start(run->out, bytes, sz.c.param, perf_type_names[dt], perf_op_names[op], -1);
      }
      PERF_TRY(bench_time(thr, &sz, 0));
      PERF_TRY(bench_time(thr, &sz, 1));
      if (is_printer(thr)) perf_print_row_end(run->out);
      if (next_size(o, size) <= size) break; /* -i 0 with one size, or overflow */
    }
  } while (--cycle != 0); /* -N 0: forever, as in nccl-tests */
  return 0;
}

int perf_thread_run_tests(struct perf_thread* thr) {
  struct perf_run* run = thr->run;
  int t, k;
  int64_t before = run->o.memory_report ? perf_free_mem_min(thr) : 0;
  PERF_CUDA(cudaSetDevice(thr->gpus[0]));
  for (t = 0; t < run->ntypes; t++)
    for (k = 0; k < run->nops; k++) PERF_TRY(time_test(thr, run->types[t], run->ops[k]));
  if (run->o.memory_report) {
    int64_t used = before - perf_free_mem_min(thr);
    thr->mem_coll = used > thr->mem_coll ? used : thr->mem_coll;
  }
  return 0;
}
