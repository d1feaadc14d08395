/* Failure and lifecycle cases in one process (forked-rank failures, e.g. a killed
 * peer, are in test_multiproc.c):
 *  - ncclCommAbort from another thread while a kernel waits for a peer that never
 *    calls: returns within 1 s, and the stream completes;
 *  - the device-side timeout in one process: the waiting rank's stream completes and
 *    ncclCommGetAsyncError reports ncclRemoteError naming SNAPCCL_TIMEOUT_MS;
 *  - two ranks on one GPU without SNAPCCL_SHARED_GPU: ncclInvalidUsage, "Duplicate GPU";
 *    with it: success and the right ncclCommCount/CuDevice/UserRank;
 *  - ncclCommInitAll of 4 ranks on GPU 0;
 *  - the application's streams destroyed before its communicators (legal in NCCL): a
 *    later call on new streams, ncclCommFinalize and ncclCommDestroy still work. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t next_seed(void) {
  static uint64_t s = 0xfa11ull << 32;
  return t_mix(++s);
}

static void join_bounded(pthread_t t, double seconds, const char* what) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += (time_t)seconds + 1;
  int e = pthread_timedjoin_np(t, NULL, &dl);
  cr_assert_eq(e, 0, "%s did not return within %.0f s", what, seconds);
}

/* Polls the stream until it completes or `seconds` pass; returns its final status. */
static cudaError_t stream_wait(cudaStream_t s, double seconds) {
  double end = t_now() + seconds;
  cudaError_t e;
  while ((e = cudaStreamQuery(s)) == cudaErrorNotReady && t_now() < end) t_sleep_ms(1);
  return e;
}

/* ---------------------------------------------------------------- abort */

struct aborter {
  ncclComm_t comm;
  cudaStream_t stream;
  int dev;
  cudaError_t pending; /* cudaStreamQuery just before the abort */
  ncclResult_t async_before, async_call, result;
  double seconds;
};

static void* abort_main(void* p) {
  struct aborter* a = p;
  cudaSetDevice(a->dev);
  t_sleep_ms(200);
  a->pending = cudaStreamQuery(a->stream);
  a->async_call = ncclCommGetAsyncError(a->comm, &a->async_before);
  double t0 = t_now();
  a->result = ncclCommAbort(a->comm);
  a->seconds = t_now() - t0;
  return NULL;
}

struct lone_call {
  int coll;
  ncclDataType_t dt;
  size_t count;
  const char* algo;
};

/* Rank 0 alone calls; rank 1 never does; another thread aborts rank 0. */
static void abort_while_waiting(const struct lone_call* lc) {
  char err[T_ERRLEN];
  struct t_world w;
  void *send = NULL, *recv = NULL;
  const size_t bytes = lc->count * t_dt_size(lc->dt);
  t_env_defaults();
  t_env_set("SNAPCCL_TIMEOUT_MS", "60000"); /* without the abort the kernel would wait a minute */
  T_OK(t_world_init(&w, 2, err), err);
  cr_assert_eq(cudaSetDevice(w.dev[0]), cudaSuccess);
  cr_assert_eq(cudaMalloc(&send, 2 * bytes), cudaSuccess);
  cr_assert_eq(cudaMalloc(&recv, 2 * bytes), cudaSuccess);
  cr_assert_eq(cudaMemset(send, 0, 2 * bytes), cudaSuccess);
  cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
  t_set_algo(lc->coll, lc->algo);
  ncclResult_t res = lc->coll == T_AR ? ncclAllReduce(send, recv, lc->count, lc->dt, ncclSum, w.comm[0], w.stream[0])
                   : lc->coll == T_AG ? ncclAllGather(send, recv, lc->count, lc->dt, w.comm[0], w.stream[0])
                   : ncclReduceScatter(send, recv, lc->count, lc->dt, ncclSum, w.comm[0], w.stream[0]);
  cr_assert_eq(res, ncclSuccess, "%s on rank 0: %s (%s)", t_coll_name(lc->coll),
               ncclGetErrorString(res), ncclGetLastError(NULL));

  struct aborter a = {w.comm[0], w.stream[0], w.dev[0], cudaSuccess, ncclSuccess, ncclSuccess,
                      ncclSuccess, 0.0};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, abort_main, &a), 0);
  join_bounded(t, 30, "ncclCommAbort");
  w.comm[0] = NULL;
  cr_assert_eq(a.pending, cudaErrorNotReady,
               "the lone %s (%s) should still wait for rank 1 after 200 ms; cudaStreamQuery says %s",
               t_coll_name(lc->coll), lc->algo, cudaGetErrorString(a.pending));
  cr_assert(a.async_call == ncclSuccess && a.async_before == ncclSuccess,
            "before the abort: ncclCommGetAsyncError %s, async error %s",
            ncclGetErrorString(a.async_call), ncclGetErrorString(a.async_before));
  cr_assert_eq(a.result, ncclSuccess, "ncclCommAbort: %s (%s)", ncclGetErrorString(a.result),
               ncclGetLastError(NULL));
  cr_log_info("%s (%s): ncclCommAbort returned after %.3f s", t_coll_name(lc->coll), lc->algo, a.seconds);
  cr_assert_lt(a.seconds, 1.0, "ncclCommAbort took %.3f s with a kernel waiting", a.seconds);
  cudaError_t e = stream_wait(w.stream[0], 2.0);
  cr_assert_eq(e, cudaSuccess, "rank 0's stream after the abort: %s", cudaGetErrorString(e));

  double t0 = t_now();
  res = ncclCommAbort(w.comm[1]);
  w.comm[1] = NULL;
  cr_assert_eq(res, ncclSuccess, "ncclCommAbort(rank 1): %s", ncclGetErrorString(res));
  cr_assert_lt(t_now() - t0, 1.0, "ncclCommAbort of the idle rank took %.3f s", t_now() - t0);
  cudaFree(send);
  cudaFree(recv);
  T_OK(t_world_free(&w, err), err); /* streams only */
}

Test(abort, pending_lamport, .timeout = 60) {
  T_REQUIRE_GPU();
  struct lone_call lc = {T_AR, ncclFloat32, 1024, "lamport"};
  abort_while_waiting(&lc);
}
Test(abort, pending_oneshot, .timeout = 60) {
  T_REQUIRE_GPU();
  struct lone_call lc = {T_AR, ncclInt32, 1024, "oneshot"};
  abort_while_waiting(&lc);
}
Test(abort, pending_twoshot, .timeout = 60) {
  T_REQUIRE_GPU();
  struct lone_call lc = {T_AR, ncclFloat32, 1 << 20, "twoshot"};
  abort_while_waiting(&lc);
}
Test(abort, pending_allgather, .timeout = 60) {
  T_REQUIRE_GPU();
  struct lone_call lc = {T_AG, ncclFloat16, 100000, "direct"};
  abort_while_waiting(&lc);
}
Test(abort, pending_reducescatter, .timeout = 60) {
  T_REQUIRE_GPU();
  struct lone_call lc = {T_RS, ncclFloat32, 100000, "direct"};
  abort_while_waiting(&lc);
}

/* ---------------------------------------------------------------- device timeout */

Test(timeout, lone_rank_in_process, .timeout = 60) {
  char err[T_ERRLEN];
  struct t_world w;
  float* buf = NULL;
  T_REQUIRE_GPU();
  t_env_defaults();
  t_env_set("SNAPCCL_TIMEOUT_MS", "1000");
  T_OK(t_world_init(&w, 2, err), err);
  cr_assert_eq(cudaSetDevice(w.dev[0]), cudaSuccess);
  cr_assert_eq(cudaMalloc((void**)&buf, 2 * 4096 * sizeof(float)), cudaSuccess);
  cr_assert_eq(cudaMemset(buf, 0, 2 * 4096 * sizeof(float)), cudaSuccess);
  cr_assert_eq(cudaDeviceSynchronize(), cudaSuccess);
  double t0 = t_now();
  ncclResult_t res = ncclAllReduce(buf, buf + 4096, 4096, ncclFloat32, ncclSum, w.comm[0], w.stream[0]);
  cr_assert_eq(res, ncclSuccess, "%s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  cudaError_t e = stream_wait(w.stream[0], 10.0);
  double el = t_now() - t0;
  cr_assert_eq(e, cudaSuccess, "the timed-out kernel's stream: %s", cudaGetErrorString(e));
  cr_assert(el >= 0.9 && el < 3.0, "the wait ended after %.3f s; SNAPCCL_TIMEOUT_MS is 1000", el);
  ncclResult_t ae = ncclSuccess;
  cr_assert_eq(ncclCommGetAsyncError(w.comm[0], &ae), ncclSuccess);
  cr_assert_eq(ae, ncclRemoteError, "async error %s", ncclGetErrorString(ae));
  const char* msg = ncclGetLastError(w.comm[0]);
  cr_assert(strstr(msg, "SNAPCCL_TIMEOUT_MS"), "the last error does not name the timeout: %s", msg);
  res = ncclAllReduce(buf, buf + 4096, 4096, ncclFloat32, ncclSum, w.comm[0], w.stream[0]);
  cr_assert_neq(res, ncclSuccess, "a communicator in error state accepted a new call");
  cr_assert_eq(ncclCommAbort(w.comm[0]), ncclSuccess);
  cr_assert_eq(ncclCommAbort(w.comm[1]), ncclSuccess);
  w.comm[0] = w.comm[1] = NULL;
  cudaFree(buf);
  T_OK(t_world_free(&w, err), err);
}

/* ---------------------------------------------------------------- init */

struct init_thread {
  ncclUniqueId id;
  int n, rank;
  ncclComm_t comm;
  ncclResult_t res;
  cudaError_t cuda;
};

static void* init_main(void* p) {
  struct init_thread* t = p;
  t->comm = NULL;
  if ((t->cuda = cudaSetDevice(0)) == cudaSuccess)
    t->res = ncclCommInitRank(&t->comm, t->n, t->id, t->rank);
  return NULL;
}

/* n ranks on GPU 0 through ncclCommInitRank, one thread each. */
static void init_threads(struct init_thread* th, int n) {
  ncclUniqueId id;
  pthread_t tid[T_MAXR];
  ncclResult_t res = ncclGetUniqueId(&id);
  cr_assert_eq(res, ncclSuccess, "ncclGetUniqueId: %s", ncclGetErrorString(res));
  for (int r = 0; r < n; r++) {
    th[r] = (struct init_thread){id, n, r, NULL, ncclInternalError, cudaSuccess};
    cr_assert_eq(pthread_create(&tid[r], NULL, init_main, &th[r]), 0);
  }
  for (int r = 0; r < n; r++) {
    join_bounded(tid[r], 60, "ncclCommInitRank");
    cr_assert_eq(th[r].cuda, cudaSuccess, "cudaSetDevice(0): %s", cudaGetErrorString(th[r].cuda));
  }
}

Test(init, duplicate_gpu_refused, .timeout = 120) {
  struct init_thread th[2];
  T_REQUIRE_GPU();
  t_env_defaults();
  t_env_set("SNAPCCL_SHARED_GPU", "0");
  init_threads(th, 2);
  for (int r = 0; r < 2; r++) {
    cr_assert_eq(th[r].res, ncclInvalidUsage, "rank %d: ncclCommInitRank returned %s (%s)", r,
                 ncclGetErrorString(th[r].res), ncclGetLastError(NULL));
    cr_assert_null(th[r].comm, "rank %d: a failed init left a communicator", r);
  }
  const char* msg = ncclGetLastError(NULL);
  cr_assert(strstr(msg, "Duplicate GPU"), "last error: %s", msg);

  ncclComm_t comms[2] = {NULL, NULL};
  const int devs[2] = {0, 0};
  ncclResult_t res = ncclCommInitAll(comms, 2, devs);
  cr_assert_eq(res, ncclInvalidUsage, "ncclCommInitAll on {0, 0}: %s", ncclGetErrorString(res));
  msg = ncclGetLastError(NULL);
  cr_assert(strstr(msg, "Duplicate GPU"), "last error: %s", msg);
}

Test(init, shared_gpu_allowed, .timeout = 120) {
  char err[T_ERRLEN];
  struct init_thread th[2];
  T_REQUIRE_GPU();
  t_env_defaults();
  init_threads(th, 2);
  struct t_world w;
  memset(&w, 0, sizeof w);
  w.n = w.nlocal = 2;
  w.ndev = t_gpu_count();
  cr_assert_eq(cudaSetDevice(0), cudaSuccess);
  for (int r = 0; r < 2; r++) {
    int count = -1, dev = -1, rank = -1;
    cr_assert_eq(th[r].res, ncclSuccess, "rank %d: %s (%s)", r, ncclGetErrorString(th[r].res),
                 ncclGetLastError(NULL));
    cr_assert_eq(ncclCommCount(th[r].comm, &count), ncclSuccess);
    cr_assert_eq(ncclCommCuDevice(th[r].comm, &dev), ncclSuccess);
    cr_assert_eq(ncclCommUserRank(th[r].comm, &rank), ncclSuccess);
    cr_assert(count == 2 && dev == 0 && rank == r, "rank %d: count %d, device %d, rank %d", r, count, dev, rank);
    w.comm[r] = th[r].comm;
    w.dev[r] = 0;
    cr_assert_eq(cudaStreamCreateWithFlags(&w.stream[r], cudaStreamNonBlocking), cudaSuccess);
  }
  struct t_case c = t_case_make(T_AR, ncclFloat32, T_SUM, 4097, 0, NULL, next_seed());
  T_OK(t_run_case_alloc(&w, &c, err), err);
  T_OK(t_world_free(&w, err), err);
}

Test(init, initall_4_ranks_on_gpu0, .timeout = 120) {
  char err[T_ERRLEN];
  ncclComm_t comms[4] = {NULL, NULL, NULL, NULL};
  const int devs[4] = {0, 0, 0, 0};
  T_REQUIRE_GPU();
  t_env_defaults();
  ncclResult_t res = ncclCommInitAll(comms, 4, devs);
  cr_assert_eq(res, ncclSuccess, "%s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  struct t_world w;
  memset(&w, 0, sizeof w);
  w.n = w.nlocal = 4;
  w.ndev = t_gpu_count();
  cr_assert_eq(cudaSetDevice(0), cudaSuccess);
  for (int r = 0; r < 4; r++) {
    int count = -1, dev = -1, rank = -1;
    cr_assert_eq(ncclCommCount(comms[r], &count), ncclSuccess);
    cr_assert_eq(ncclCommCuDevice(comms[r], &dev), ncclSuccess);
    cr_assert_eq(ncclCommUserRank(comms[r], &rank), ncclSuccess);
    cr_assert(count == 4 && dev == 0 && rank == r, "rank %d: count %d, device %d, rank %d", r, count, dev, rank);
    w.comm[r] = comms[r];
    cr_assert_eq(cudaStreamCreateWithFlags(&w.stream[r], cudaStreamNonBlocking), cudaSuccess);
  }
  struct t_case cases[] = {
      t_case_make(T_AR, ncclFloat32, T_SUM, 1000, 0, NULL, next_seed()),
      t_case_make(T_AR, ncclInt64, T_MAX, 100000, 1, NULL, next_seed()),
      t_case_make(T_AG, ncclBfloat16, T_SUM, 777, 0, NULL, next_seed()),
      t_case_make(T_RS, ncclFloat16, T_AVG, 5000, 1, NULL, next_seed()),
  };
  for (size_t i = 0; i < NELEMS(cases); i++) T_OK(t_run_case_alloc(&w, &cases[i], err), err);
  T_OK(t_world_free(&w, err), err);
}

/* The library remembers the stream of its last launch to order calls across streams;
 * that stream may be gone by the next call or by ncclCommFinalize/Destroy. It crashed
 * in cuEventRecord once (the destroy path recorded on the destroyed stream). */
Test(lifecycle, streams_destroyed_before_comm, .timeout = 120) {
  char err[T_ERRLEN];
  T_REQUIRE_GPU();
  t_env_defaults();
  struct t_world w;
  T_OK(t_world_init(&w, 2, err), err);
  struct t_case first = t_case_make(T_AR, ncclFloat32, T_SUM, 4097, 0, NULL, next_seed());
  T_OK(t_run_case_alloc(&w, &first, err), err);
  for (int r = 0; r < w.n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaStreamDestroy(w.stream[r]), cudaSuccess);
    cr_assert_eq(cudaStreamCreateWithFlags(&w.stream[r], cudaStreamNonBlocking), cudaSuccess);
  }
  struct t_case second = t_case_make(T_RS, ncclBfloat16, T_MAX, 3001, 1, NULL, next_seed());
  T_OK(t_run_case_alloc(&w, &second, err), err);
  for (int r = 0; r < w.n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaStreamDestroy(w.stream[r]), cudaSuccess);
    w.stream[r] = NULL;
  }
  for (int r = 0; r < w.n; r++) {
    ncclResult_t res = ncclCommFinalize(w.comm[r]);
    cr_assert_eq(res, ncclSuccess, "ncclCommFinalize: %s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  }
  T_OK(t_world_free(&w, err), err); /* ncclCommDestroy on each; the streams are gone */
}
