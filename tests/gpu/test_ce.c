/* The copy-engine algorithms (src/algos/ce_*.c; SNAPCCL_ALGO=allgather:ce_allgather,
 * reducescatter:ce_reducescatter, allreduce:ce_allreduce), every rank in this process
 * (ranks share the GPU with SNAPCCL_SHARED_GPU=1):
 *   - all-gather of every dtype, reduce-scatter and all-reduce of every dtype x every op
 *     they claim (sum, prod, max, min, avg), odd counts, in place and out of place, at
 *     world sizes 2, 3 and 4, against the CPU reference on random data, outputs poisoned
 *     first; count 0 (NULL buffers too); the PreMulSum ops they decline;
 *   - staging shrunk to a few pages (SNAPCCL_BUFFSIZE=0, SNAPCCL_MAX_BLOCKS=2), so calls
 *     run hundreds of rounds through both slots, with counts that end mid-round;
 *   - misaligned user buffers;
 *   - captured in CUDA graphs and replayed with new data, eager calls of other algorithms
 *     in between; and back to back with the SM algorithms (one epoch for all);
 *   - a lone rank in a copy-engine wait: ncclCommAbort returns within 1 s, the device
 *     timeout ends the wait and reports ncclRemoteError naming SNAPCCL_TIMEOUT_MS.
 * A peer killed during a copy-engine wait (across processes) is in test_multiproc.c. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define BIG ((size_t)(1u << 20) + 3)

static const char* const ce_name[] = {[T_AR] = "ce_allreduce", [T_AG] = "ce_allgather", [T_RS] = "ce_reducescatter"};
static const int claimed_ops[] = {T_SUM, T_PROD, T_MAX, T_MIN, T_AVG};

static uint64_t next_seed(void) {
  static uint64_t s = 0xce0ull << 32;
  return t_mix(++s);
}

/* Largest send / recv regions any case of coll with count elements needs at n ranks. */
static size_t send_cap(size_t count, int n) { return count * 8 * (size_t)n; }
static size_t recv_cap(size_t count, int n) { return count * 8 * (size_t)n; }

static void run_case(struct t_fixture* f, int coll, ncclDataType_t dt, int op, size_t count, int ip) {
  struct t_case c = t_case_make(coll, dt, op, count, ip, ce_name[coll], next_seed());
  t_fixture_run(f, &c);
}

/* ---------------------------------------------------------------- the matrix */

static void matrix(int n) {
  static const size_t counts[] = {1, 3, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, send_cap(BIG, n), recv_cap(BIG, n));
  for (int d = 0; d < 12; d++)
    for (size_t k = 0; k < NELEMS(counts); k++)
      for (int ip = 0; ip < 2; ip++) {
        run_case(&f, T_AG, t_all_dtypes[d], T_SUM, counts[k], ip);
        for (size_t o = 0; o < NELEMS(claimed_ops); o++) {
          /* every op at two counts, sum at all of them */
          if (claimed_ops[o] != T_SUM && k != 2 && k != 4) continue;
          run_case(&f, T_RS, t_all_dtypes[d], claimed_ops[o], counts[k], ip);
          run_case(&f, T_AR, t_all_dtypes[d], claimed_ops[o], counts[k], ip);
        }
      }
  static const ncclDataType_t big[] = {ncclInt8, ncclBfloat16, ncclFloat32, ncclFloat64};
  for (size_t d = 0; d < NELEMS(big); d++)
    for (int coll = T_AR; coll <= T_RS; coll++) run_case(&f, coll, big[d], T_SUM, BIG, (int)d & 1);
  /* Declined: a PreMulSum with each rank's own scalar (host and device). */
  for (int coll = T_AR; coll <= T_RS; coll += 2) {
    run_case(&f, coll, ncclFloat32, T_PREMUL_HOST, 4097, 0);
    run_case(&f, coll, ncclBfloat16, T_PREMUL_DEV, 4097, 1);
  }
  /* Count 0, with buffers and with NULL ones: success, nothing touched. */
  for (int coll = T_AR; coll <= T_RS; coll++)
    for (int nul = 0; nul < 2; nul++) {
      struct t_case c = t_case_make(coll, ncclFloat32, T_SUM, 0, 0, ce_name[coll], next_seed());
      c.null_bufs = nul;
      t_fixture_run(&f, &c);
    }
  t_fixture_close(&f);
}

Test(ce_ws2, matrix, .timeout = 600) { matrix(2); }
Test(ce_ws3, matrix, .timeout = 600) { matrix(3); }
Test(ce_ws4, matrix, .timeout = 600) { matrix(4); }

/* ---------------------------------------------------------------- many rounds */

/* Staging of a few pages: at two ranks and two blocks, 4 x 2 x 2 chunks of 4 KiB, so a
 * slot of 32 KiB and reduce-scatter areas of 16 KiB (8 KiB at four ranks). */
static void many_rounds(int n) {
  static const size_t counts[] = {4095, 4096, 4097, 12289, 65537, 300007};
  T_REQUIRE_GPU();
  t_env_defaults();
  t_env_set("SNAPCCL_BUFFSIZE", "0");
  t_env_set("SNAPCCL_MAX_BLOCKS", "2");
  struct t_fixture f;
  t_fixture_init(&f, n, send_cap(300007, n), recv_cap(300007, n));
  static const ncclDataType_t dts[] = {ncclFloat32, ncclUint8, ncclFloat16, ncclInt64};
  for (size_t k = 0; k < NELEMS(counts); k++)
    for (int coll = T_AR; coll <= T_RS; coll++) {
      const ncclDataType_t dt = dts[(k + (size_t)coll) % NELEMS(dts)];
      run_case(&f, coll, dt, coll == T_AG ? T_SUM : claimed_ops[k % NELEMS(claimed_ops)], counts[k], (int)k & 1);
    }
  t_fixture_close(&f);
}

Test(ce_rounds, ws2, .timeout = 600) { many_rounds(2); }
Test(ce_rounds, ws4, .timeout = 600) { many_rounds(4); }

/* ---------------------------------------------------------------- misaligned buffers */

Test(ce_offsets, ws3, .timeout = 300) {
  static const size_t cnt[] = {1, 3, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 3, send_cap(65537, 3), recv_cap(65537, 3));
  static const ncclDataType_t dts[] = {ncclFloat32, ncclBfloat16, ncclInt8};
  for (int off = 1; off <= 15; off += 2)
    for (size_t k = 0; k < NELEMS(cnt); k++)
      for (int coll = T_AR; coll <= T_RS; coll++) {
        struct t_case c = t_case_make(coll, dts[(k + (size_t)coll) % 3], T_SUM, cnt[k], (int)(off + k) & 1,
                                      ce_name[coll], next_seed());
        t_misalign(off, 3, c.send_off, c.recv_off);
        t_fixture_run(&f, &c);
      }
  t_fixture_close(&f);
}

/* ---------------------------------------------------------------- graphs */

struct spec {
  int coll;
  ncclDataType_t dt;
  int op;
  size_t count;
  int in_place;
  const char* algo;
};

static const struct spec graph_specs[] = {
    {T_AG, ncclInt8, T_SUM, 300001, 0, "ce_allgather"},        {T_RS, ncclFloat32, T_AVG, 70001, 1, "ce_reducescatter"},
    {T_AR, ncclBfloat16, T_SUM, 200003, 0, "ce_allreduce"},    {T_AR, ncclFloat32, T_SUM, 1000, 1, "lamport"},
    {T_AG, ncclFloat64, T_SUM, 777, 1, "ce_allgather"},        {T_AR, ncclInt32, T_MAX, 65537, 1, "ce_allreduce"},
    {T_RS, ncclFloat16, T_SUM, 4097, 0, "direct"},             {T_RS, ncclUint8, T_MIN, 12345, 0, "ce_reducescatter"},
};
static const char* const eager_algos[][3] = {
    {"twoshot", "direct", "direct"}, {"ce_allreduce", "ce_allgather", "ce_reducescatter"}, {"oneshot", "direct", "direct"}};

static void graph_test(int n, int replays) {
  enum { NS = (int)NELEMS(graph_specs) };
  char err[T_ERRLEN], what[600];
  struct t_world w;
  struct t_case c[NS];
  struct t_bufs b[NS];
  struct t_host* h[NS];
  cudaGraph_t graph[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
  T_REQUIRE_GPU();
  t_env_defaults();
  /* Staging of a few pages (see many_rounds): the captured calls take many rounds each. */
  t_env_set("SNAPCCL_BUFFSIZE", "0");
  t_env_set("SNAPCCL_MAX_BLOCKS", "2");
  T_OK(t_world_init(&w, n, err), err);
  for (int k = 0; k < NS; k++) {
    const struct spec* s = &graph_specs[k];
    c[k] = t_case_make(s->coll, s->dt, s->op, s->count, s->in_place, s->algo, 0);
    for (int r = 0; r < n; r++) c[k].recv_off[r] = (k * 3 + r) % 16;
    T_OK(t_bufs_alloc(&w, &b[k], t_case_send_bytes(&c[k], n), t_case_recv_bytes(&c[k], n), err), err);
    c[k].seed = next_seed();
    cr_assert(t_case_prepare(&w, &c[k], &b[k], &h[k], err) == 0, "%s", err);
  }
  T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(w.stream[r], cudaStreamCaptureModeGlobal), cudaSuccess);
  }
  for (int k = 0; k < NS; k++) {
    t_set_algo(c[k].coll, c[k].algo); /* selection happens at ncclGroupEnd */
    cr_assert_eq(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++) {
      ncclResult_t res = t_case_call(&w, &c[k], &b[k], h[k], r);
      cr_assert_eq(res, ncclSuccess, "capturing %s: %s", t_case_str(&c[k], n, what, sizeof what),
                   ncclGetLastError(NULL));
    }
    ncclResult_t res = ncclGroupEnd();
    cr_assert_eq(res, ncclSuccess, "capturing %s: %s", t_case_str(&c[k], n, what, sizeof what),
                 ncclGetLastError(NULL));
  }
  for (int r = 0; r < n; r++) cr_assert_eq(cudaStreamEndCapture(w.stream[r], &graph[r]), cudaSuccess);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaGraphInstantiate(&exec[r], graph[r], 0), cudaSuccess);
  }
  for (int k = 0; k < NS; k++) t_host_free(&w, h[k]), h[k] = NULL;
  t_set_algo(T_AR, NULL);

  for (int rep = 0; rep < replays; rep++) {
    for (int k = 0; k < NS; k++) {
      c[k].seed = next_seed();
      cr_assert(t_case_prepare(&w, &c[k], &b[k], &h[k], err) == 0, "%s", err);
    }
    for (int r = 0; r < n; r++) {
      cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
      cr_assert_eq(cudaGraphLaunch(exec[r], w.stream[r]), cudaSuccess);
    }
    cr_assert(t_world_sync(&w, t_wait_bound_s(), err) == 0, "replay %d: %s", rep, err);
    for (int k = 0; k < NS; k++) {
      cr_assert(t_case_verify(&w, &c[k], &b[k], h[k], 1, err) == 0, "replay %d, %s: %s", rep,
                t_case_str(&c[k], n, what, sizeof what), err);
      t_host_free(&w, h[k]), h[k] = NULL;
    }
    if (rep % 3 == 2) { /* eager calls on the same communicators between replays */
      const char* const* algos = eager_algos[(rep / 3) % NELEMS(eager_algos)];
      for (int coll = T_AR; coll <= T_RS; coll++) {
        struct t_case e = t_case_make(coll, ncclFloat32, T_SUM, 50001, rep & 1, algos[coll], next_seed());
        cr_assert(t_run_case_alloc(&w, &e, err) == 0, "eager call after replay %d: %s", rep, err);
      }
    }
  }
  for (int r = 0; r < n; r++) {
    cudaGraphExecDestroy(exec[r]);
    cudaGraphDestroy(graph[r]);
  }
  for (int k = 0; k < NS; k++) t_bufs_free(&w, &b[k]);
  T_OK(t_world_free(&w, err), err);
}

Test(ce_graph, ws2_20_replays, .timeout = 600) { graph_test(2, 20); }
Test(ce_graph, ws3_9_replays, .timeout = 600) { graph_test(3, 9); }

/* ---------------------------------------------------------------- back to back */

/* Copy-engine and SM algorithms alternate with nothing waiting in between: one epoch and
 * one staging serve them all (a copy-engine call's pushes must not land in staging a
 * staged call of a slower rank still reads, and the reverse). */
static void back_to_back(int n) {
  enum { CALLS = 48 };
  static const struct {
    int coll;
    const char* algo;
  } kinds[] = {{T_AR, "ce_allreduce"}, {T_AR, "twoshot"},          {T_AG, "ce_allgather"}, {T_AG, "direct"},
               {T_RS, "ce_reducescatter"}, {T_RS, "direct"},       {T_AR, "ce_allreduce"}, {T_AR, "oneshot"},
               {T_AG, "ce_allgather"}, {T_AR, "lamport"},          {T_RS, "ce_reducescatter"}, {T_AR, "twoshot"}};
  static const size_t cnt[] = {1, 7, 300, 4097, 20000, 65537, 131077};
  static const ncclDataType_t dts[] = {ncclFloat32, ncclBfloat16, ncclFloat16};
  char err[T_ERRLEN], what[600];
  T_REQUIRE_GPU();
  struct t_world w;
  struct t_case* c = calloc(CALLS, sizeof *c);
  struct t_bufs* b = calloc(CALLS, sizeof *b);
  struct t_host** h = calloc(CALLS, sizeof *h);
  int* issued = calloc(CALLS, sizeof *issued);
  cr_assert(c && b && h && issued, "out of memory");
  t_env_defaults();
  t_env_set("SNAPCCL_BUFFSIZE", "1048576"); /* several rounds per call, both slots */
  T_OK(t_world_init(&w, n, err), err);
  for (int i = 0; i < CALLS; i++) {
    const int k = i % (int)NELEMS(kinds);
    c[i] = t_case_make(kinds[k].coll, dts[(i / 3) % 3], (i / 7) % 2 ? T_AVG : T_SUM, cnt[(i * 5) % NELEMS(cnt)],
                       (i / 2) & 1, kinds[k].algo, next_seed());
    T_OK(t_bufs_alloc(&w, &b[i], t_case_send_bytes(&c[i], n), t_case_recv_bytes(&c[i], n), err), err);
    cr_assert(t_case_prepare(&w, &c[i], &b[i], &h[i], err) == 0, "call %d: %s", i, err);
    cr_assert(t_case_issue(&w, &c[i], &b[i], h[i], &issued[i], err) == 0, "call %d: %s: %s", i,
              t_case_str(&c[i], n, what, sizeof what), err);
  }
  T_OK(t_world_sync(&w, t_wait_bound_s() + 30, err), err);
  for (int i = 0; i < CALLS; i++) {
    cr_assert(t_case_verify(&w, &c[i], &b[i], h[i], issued[i], err) == 0, "call %d: %s: %s", i,
              t_case_str(&c[i], n, what, sizeof what), err);
    t_host_free(&w, h[i]);
    t_bufs_free(&w, &b[i]);
  }
  T_OK(t_world_free(&w, err), err);
  t_set_algo(T_AR, NULL);
  free(c), free(b), free(h), free(issued);
}
Test(ce_back_to_back, ws2, .timeout = 300) { back_to_back(2); }
Test(ce_back_to_back, ws4, .timeout = 300) { back_to_back(4); }

/* ---------------------------------------------------------------- a lone rank */

/* Only rank 0 calls (rank 1 never does): its first copy-engine sync waits. */
static ncclResult_t lone_call(struct t_world* w, int coll, void* send, void* recv, size_t count) {
  t_set_algo(coll, ce_name[coll]);
  return coll == T_AR ? ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, w->comm[0], w->stream[0])
       : coll == T_AG ? ncclAllGather(send, recv, count, ncclFloat32, w->comm[0], w->stream[0])
                      : ncclReduceScatter(send, recv, count, ncclFloat32, ncclSum, w->comm[0], w->stream[0]);
}

static cudaError_t stream_wait(cudaStream_t s, double seconds) {
  double end = t_now() + seconds;
  cudaError_t e;
  while ((e = cudaStreamQuery(s)) == cudaErrorNotReady && t_now() < end) t_sleep_ms(1);
  return e;
}

struct aborter {
  ncclComm_t comm;
  int dev;
  ncclResult_t result;
  double seconds;
};

static void* abort_main(void* p) {
  struct aborter* a = p;
  cudaSetDevice(a->dev);
  t_sleep_ms(300);
  double t0 = t_now();
  a->result = ncclCommAbort(a->comm);
  a->seconds = t_now() - t0;
  return NULL;
}

/* abort: ncclCommAbort from another thread ends the wait; else the device timeout
 * (SNAPCCL_TIMEOUT_MS=1000) does, and the error names it. */
static void lone_rank(int coll, int abort) {
  char err[T_ERRLEN];
  struct t_world w;
  float* buf = NULL;
  const size_t count = 1 << 20; /* 4 MiB per rank */
  T_REQUIRE_GPU();
  t_env_defaults();
  t_env_set("SNAPCCL_TIMEOUT_MS", abort ? "60000" : "1000");
  T_OK(t_world_init(&w, 2, err), err);
  cr_assert_eq(cudaSetDevice(w.dev[0]), cudaSuccess);
  cr_assert_eq(cudaMalloc((void**)&buf, 4 * count * sizeof(float)), cudaSuccess);
  cr_assert_eq(cudaMemset(buf, 0, 4 * count * sizeof(float)), cudaSuccess);
  cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
  const double t0 = t_now();
  ncclResult_t res = lone_call(&w, coll, buf, buf + 2 * count, count);
  cr_assert_eq(res, ncclSuccess, "%s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  if (abort) {
    struct aborter a = {w.comm[0], w.dev[0], ncclInternalError, 0.0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, abort_main, &a), 0);
    t_sleep_ms(150);
    cr_assert_eq(cudaStreamQuery(w.stream[0]), cudaErrorNotReady, "the lone %s did not wait", ce_name[coll]);
    cr_assert_eq(pthread_join(t, NULL), 0);
    w.comm[0] = NULL;
    cr_assert_eq(a.result, ncclSuccess, "ncclCommAbort: %s", ncclGetErrorString(a.result));
    cr_assert_lt(a.seconds, 1.0, "ncclCommAbort took %.3f s with a copy-engine wait pending", a.seconds);
    cudaError_t e = stream_wait(w.stream[0], 2.0);
    cr_assert_eq(e, cudaSuccess, "rank 0's stream after the abort: %s", cudaGetErrorString(e));
  } else {
    cudaError_t e = stream_wait(w.stream[0], 10.0);
    const double el = t_now() - t0;
    cr_assert_eq(e, cudaSuccess, "the timed-out stream: %s", cudaGetErrorString(e));
    cr_assert(el >= 0.9 && el < 2.0, "the %s wait ended after %.3f s; SNAPCCL_TIMEOUT_MS is 1000", ce_name[coll], el);
    ncclResult_t ae = ncclSuccess;
    cr_assert_eq(ncclCommGetAsyncError(w.comm[0], &ae), ncclSuccess);
    cr_assert_eq(ae, ncclRemoteError, "async error %s", ncclGetErrorString(ae));
    const char* msg = ncclGetLastError(w.comm[0]);
    cr_assert(strstr(msg, "SNAPCCL_TIMEOUT_MS") && strstr(msg, "copy-engine"), "the last error: %s", msg);
    cr_assert_eq(ncclCommAbort(w.comm[0]), ncclSuccess);
    w.comm[0] = NULL;
  }
  cr_assert_eq(ncclCommAbort(w.comm[1]), ncclSuccess);
  w.comm[1] = NULL;
  t_set_algo(T_AR, NULL);
  cudaFree(buf);
  T_OK(t_world_free(&w, err), err); /* streams only */
}

Test(ce_abort, allgather, .timeout = 60) { lone_rank(T_AG, 1); }
Test(ce_abort, reducescatter, .timeout = 60) { lone_rank(T_RS, 1); }
Test(ce_abort, allreduce, .timeout = 60) { lone_rank(T_AR, 1); }
Test(ce_timeout, allgather, .timeout = 60) { lone_rank(T_AG, 0); }
Test(ce_timeout, reducescatter, .timeout = 60) { lone_rank(T_RS, 0); }
Test(ce_timeout, allreduce, .timeout = 60) { lone_rank(T_AR, 0); }

/* ---------------------------------------------------------------- selection */

/* Named only: without SNAPCCL_ALGO the library never picks a copy-engine algorithm. */
Test(ce_default, named_only, .timeout = 120) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 2, 4096, 4096);
  static const char* const colls[] = {"allreduce", "allgather", "reducescatter"};
  static const size_t sizes[] = {1, 65537, (size_t)1 << 28};
  for (size_t k = 0; k < NELEMS(sizes); k++)
    for (size_t c = 0; c < NELEMS(colls); c++) {
      const char* name = NULL;
      ncclResult_t q = snapcclQueryAlgorithm(f.w.comm[0], colls[c], sizes[k], ncclFloat32, ncclSum, &name);
      cr_assert_eq(q, ncclSuccess, "%s", ncclGetLastError(NULL));
      cr_assert(strncmp(name, "ce_", 3) != 0, "%s of %zu elements picks %s by default", colls[c], sizes[k], name);
    }
  t_fixture_close(&f);
}
