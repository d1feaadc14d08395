/* CUDA graphs and NCCL groups, every rank in this process.
 *
 * Graphs: each rank's stream captures ten mixed collectives (all-reduce of each
 * algorithm and several sizes, all-gather, reduce-scatter, in place and not); the graphs
 * are replayed with fresh inputs written into the captured buffers before every replay
 * and every replay is verified; eager calls on the same communicators and streams run
 * between replays.
 *
 * A captured call after the selection it had cached was invalidated (the settings
 * re-read, snapcclCommSetLowPrecision): the capture selects afresh, and its replays and
 * the eager calls between them stay right.
 *
 * Groups: several collectives per communicator inside one ncclGroupStart/End, across
 * all communicators from one thread (call-major, rank-major, nested) or one group per
 * rank from one thread per rank. Every wait is bounded, so a deadlock fails the test. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t next_seed(void) {
  static uint64_t s = 0x9a7full << 32;
  return t_mix(++s);
}

struct spec {
  int coll;
  ncclDataType_t dt;
  int op;
  size_t count;
  int in_place;
  const char* algo;
};

/* A batch of cases with their own buffers, prepared (inputs uploaded) together. */
struct batch {
  int n;
  struct t_case c[16];
  struct t_bufs b[16];
  struct t_host* h[16];
};

static void batch_alloc(struct t_world* w, struct batch* bt, const struct spec* s, int n) {
  char err[T_ERRLEN];
  bt->n = n;
  for (int k = 0; k < n; k++) {
    bt->c[k] = t_case_make(s[k].coll, s[k].dt, s[k].op, s[k].count, s[k].in_place, s[k].algo, 0);
    for (int r = 0; r < w->n; r++) bt->c[k].recv_off[r] = (k * 3 + r) % 16; /* some misaligned */
    T_OK(t_bufs_alloc(w, &bt->b[k], t_case_send_bytes(&bt->c[k], w->n),
                      t_case_recv_bytes(&bt->c[k], w->n), err), err);
    bt->h[k] = NULL;
  }
}

static void batch_prepare(struct t_world* w, struct batch* bt) {
  char err[T_ERRLEN], what[600];
  for (int k = 0; k < bt->n; k++) {
    bt->c[k].seed = next_seed();
    cr_assert(t_case_prepare(w, &bt->c[k], &bt->b[k], &bt->h[k], err) == 0, "%s: %s",
              t_case_str(&bt->c[k], w->n, what, sizeof what), err);
  }
}

static void batch_verify(struct t_world* w, struct batch* bt, const char* when) {
  char err[T_ERRLEN], what[600];
  for (int k = 0; k < bt->n; k++) {
    cr_assert(t_case_verify(w, &bt->c[k], &bt->b[k], bt->h[k], bt->c[k].count > 0, err) == 0,
              "%s, collective %d (%s): %s", when, k, t_case_str(&bt->c[k], w->n, what, sizeof what), err);
    t_host_free(w, bt->h[k]);
    bt->h[k] = NULL;
  }
}

static void batch_free(struct t_world* w, struct batch* bt) {
  for (int k = 0; k < bt->n; k++) {
    t_host_free(w, bt->h[k]);
    t_bufs_free(w, &bt->b[k]);
  }
}

/* One group on the calling thread for calls (k, r) of the batch in the given order. */
static void call_checked(struct t_world* w, struct batch* bt, int k, int r) {
  char what[600];
  ncclResult_t res = t_case_call(w, &bt->c[k], &bt->b[k], bt->h[k], r);
  cr_assert_eq(res, ncclSuccess, "rank %d, %s: %s (%s)", r,
               t_case_str(&bt->c[k], w->n, what, sizeof what), ncclGetErrorString(res),
               ncclGetLastError(NULL));
}

/* ---------------------------------------------------------------- graphs */

static const struct spec graph_specs[10] = {
    {T_AR, ncclFloat32, T_SUM, 1000, 0, "lamport"},
    {T_AR, ncclBfloat16, T_SUM, 4097, 1, "oneshot"},
    {T_AR, ncclFloat32, T_AVG, 65537, 0, "twoshot"},
    {T_AG, ncclInt8, T_SUM, 3000, 0, "direct"},
    {T_RS, ncclFloat16, T_MAX, 5000, 0, "direct"},
    {T_AR, ncclInt32, T_MAX, 20000, 0, NULL},
    {T_AG, ncclFloat64, T_SUM, 777, 1, NULL},
    {T_RS, ncclInt64, T_SUM, 1025, 1, "direct"},
    {T_AR, ncclFloat8e4m3, T_SUM, 17, 0, "lamport"},
    {T_AR, ncclUint8, T_MIN, 300000, 1, "twoshot"},
};

/* Eager calls between replays, one of each kind in turn. */
static const struct spec eager_specs[] = {
    {T_AR, ncclFloat32, T_SUM, 2000, 0, "lamport"},   {T_AR, ncclInt32, T_PREMUL_DEV, 5000, 1, "oneshot"},
    {T_AR, ncclBfloat16, T_AVG, 70000, 0, "twoshot"}, {T_AG, ncclFloat16, T_SUM, 3000, 1, "direct"},
    {T_RS, ncclFloat32, T_PREMUL_HOST, 4000, 0, "direct"},
};

static void graph_test(int n, int replays) {
  char err[T_ERRLEN], what[600];
  struct t_world w;
  struct batch bt;
  cudaGraph_t graph[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
  T_REQUIRE_GPU();
  t_env_defaults();
  T_OK(t_world_init(&w, n, err), err);
  batch_alloc(&w, &bt, graph_specs, (int)NELEMS(graph_specs));

  batch_prepare(&w, &bt); /* host state for the calls (uploads must precede the capture) */
  T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cudaError_t e = cudaStreamBeginCapture(w.stream[r], cudaStreamCaptureModeGlobal);
    cr_assert_eq(e, cudaSuccess, "cudaStreamBeginCapture(rank %d): %s", r, cudaGetErrorString(e));
  }
  for (int k = 0; k < bt.n; k++) {
    t_set_algo(bt.c[k].coll, bt.c[k].algo); /* selection happens at ncclGroupEnd */
    cr_assert_eq(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++) call_checked(&w, &bt, k, r);
    ncclResult_t res = ncclGroupEnd();
    cr_assert_eq(res, ncclSuccess, "capturing %s: %s (%s)", t_case_str(&bt.c[k], n, what, sizeof what),
                 ncclGetErrorString(res), ncclGetLastError(NULL));
  }
  for (int r = 0; r < n; r++) {
    cudaError_t e = cudaStreamEndCapture(w.stream[r], &graph[r]);
    cr_assert_eq(e, cudaSuccess, "cudaStreamEndCapture(rank %d): %s", r, cudaGetErrorString(e));
  }
  for (int r = 0; r < n; r++) { /* only once no stream captures (global mode) */
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cudaError_t e = cudaGraphInstantiate(&exec[r], graph[r], 0);
    cr_assert_eq(e, cudaSuccess, "cudaGraphInstantiate(rank %d): %s", r, cudaGetErrorString(e));
  }
  for (int k = 0; k < bt.n; k++) t_host_free(&w, bt.h[k]), bt.h[k] = NULL;
  t_set_algo(T_AR, NULL);

  for (int rep = 0; rep < replays; rep++) {
    char when[64];
    snprintf(when, sizeof when, "replay %d of %d", rep + 1, replays);
    batch_prepare(&w, &bt); /* new inputs into the captured buffers, outputs poisoned */
    for (int r = 0; r < n; r++) {
      cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
      cudaError_t e = cudaGraphLaunch(exec[r], w.stream[r]);
      cr_assert_eq(e, cudaSuccess, "%s: cudaGraphLaunch(rank %d): %s", when, r, cudaGetErrorString(e));
    }
    cr_assert(t_world_sync(&w, t_wait_bound_s(), err) == 0, "%s: %s", when, err);
    batch_verify(&w, &bt, when);
    if (rep % 10 == 9) {
      const struct spec* s = &eager_specs[(rep / 10) % NELEMS(eager_specs)];
      struct t_case c = t_case_make(s->coll, s->dt, s->op, s->count, s->in_place, s->algo, next_seed());
      cr_assert(t_run_case_alloc(&w, &c, err) == 0, "eager call after %s: %s", when, err);
    }
  }
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(graph[r]), cudaSuccess);
  }
  batch_free(&w, &bt);
  T_OK(t_world_free(&w, err), err);
}

Test(graph, ws2_200_replays, .timeout = 300) { graph_test(2, 200); }

/* Eager calls cache each case's choice; the choice is then invalidated (forced to
 * another algorithm by SNAPCCL_ALGO, then back; snapcclCommSetLowPrecision) before the
 * same cases are captured and replayed, with eager calls of them between replays. */
static const struct spec recapture_specs[] = {
    {T_AR, ncclFloat32, T_SUM, 1000, 0, NULL},
    {T_AR, ncclBfloat16, T_SUM, 70000, 0, NULL},
    {T_AG, ncclFloat16, T_SUM, 3000, 0, NULL},
    {T_RS, ncclFloat32, T_SUM, 4000, 1, NULL},
};

static void run_eager_specs(struct t_world* w, uint64_t salt) {
  char err[T_ERRLEN];
  for (size_t k = 0; k < NELEMS(recapture_specs); k++) {
    const struct spec* s = &recapture_specs[k];
    struct t_case c = t_case_make(s->coll, s->dt, s->op, s->count, s->in_place, s->algo, next_seed() ^ salt);
    cr_assert(t_run_case_alloc(w, &c, err) == 0, "eager %zu: %s", k, err);
  }
}

Test(graph, ws2_capture_after_invalidation, .timeout = 300) {
  char err[T_ERRLEN], what[600];
  const int n = 2, replays = 20;
  struct t_world w;
  struct batch bt;
  cudaGraph_t graph[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
  T_REQUIRE_GPU();
  t_env_defaults();
  T_OK(t_world_init(&w, n, err), err);
  run_eager_specs(&w, 1); /* every case's choice cached */
  t_set_algo(T_AR, "twoshot");
  run_eager_specs(&w, 2); /* cached again, as forced */
  t_set_algo(T_AR, NULL);
  for (int r = 0; r < n; r++)
    cr_assert_eq(snapcclCommSetLowPrecision(w.comm[r], SNAPCCL_LOWPREC_OFF, 0, 0), ncclSuccess);

  batch_alloc(&w, &bt, recapture_specs, (int)NELEMS(recapture_specs));
  batch_prepare(&w, &bt);
  T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(w.stream[r], cudaStreamCaptureModeGlobal), cudaSuccess);
  }
  for (int k = 0; k < bt.n; k++) {
    cr_assert_eq(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++) call_checked(&w, &bt, k, r);
    ncclResult_t res = ncclGroupEnd();
    cr_assert_eq(res, ncclSuccess, "capturing %s: %s (%s)", t_case_str(&bt.c[k], n, what, sizeof what),
                 ncclGetErrorString(res), ncclGetLastError(NULL));
  }
  for (int r = 0; r < n; r++) cr_assert_eq(cudaStreamEndCapture(w.stream[r], &graph[r]), cudaSuccess);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaGraphInstantiate(&exec[r], graph[r], 0), cudaSuccess);
  }
  for (int k = 0; k < bt.n; k++) t_host_free(&w, bt.h[k]), bt.h[k] = NULL;
  for (int rep = 0; rep < replays; rep++) {
    char when[64];
    snprintf(when, sizeof when, "replay %d of %d", rep + 1, replays);
    batch_prepare(&w, &bt);
    for (int r = 0; r < n; r++) {
      cr_assert_eq(cudaSetDevice(w.dev[r]), cudaSuccess);
      cr_assert_eq(cudaGraphLaunch(exec[r], w.stream[r]), cudaSuccess, "%s", when);
    }
    cr_assert(t_world_sync(&w, t_wait_bound_s(), err) == 0, "%s: %s", when, err);
    batch_verify(&w, &bt, when);
    if (rep % 5 == 4) run_eager_specs(&w, (uint64_t)rep << 8);
  }
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(graph[r]), cudaSuccess);
  }
  batch_free(&w, &bt);
  T_OK(t_world_free(&w, err), err);
}
Test(graph, ws4_20_replays, .timeout = 300) { graph_test(4, 20); }

/* ---------------------------------------------------------------- groups */

/* The library's choice: small floats, small integers and large messages take different
 * algorithms, and selection for all of them happens at ncclGroupEnd. */
static const struct spec group_specs[] = {
    {T_AR, ncclFloat32, T_SUM, 1000, 0, NULL},    {T_AR, ncclInt32, T_SUM, 3000, 0, NULL},
    {T_AG, ncclFloat16, T_SUM, 2048, 0, NULL},    {T_RS, ncclFloat32, T_MAX, 1500, 1, NULL},
    {T_AR, ncclBfloat16, T_AVG, 400000, 1, NULL}, {T_AR, ncclUint64, T_MIN, 33, 0, NULL},
    {T_AG, ncclUint8, T_SUM, 100001, 1, NULL},    {T_RS, ncclInt8, T_PREMUL_HOST, 70000, 0, NULL},
};

enum order { CALL_MAJOR, RANK_MAJOR, NESTED };

/* In one process every call takes microseconds: a short device timeout makes a hang
 * fail in seconds. */
static void group_env(void) {
  t_env_defaults();
  t_env_set("SNAPCCL_TIMEOUT_MS", "3000");
}

/* Waits for the group's kernels; on failure says what most likely happened. */
static void group_sync(struct t_world* w, int round) {
  char err[T_ERRLEN];
  cr_assert(t_world_sync(w, t_wait_bound_s(), err) == 0,
            "round %d: %s. A hang in round 0 (each kernel's first launch) points at CUDA lazy "
            "loading: a rank's first launch of a kernel may wait for a context "
            "synchronization, i.e. for another rank's kernel that spins until this rank's "
            "calls arrive (compare with CUDA_MODULE_LOADING=EAGER)", round, err);
}

static void group_one_thread(int n, enum order order) {
  char err[T_ERRLEN];
  struct t_world w;
  struct batch bt;
  const int K = (int)NELEMS(group_specs);
  T_REQUIRE_GPU();
  group_env();
  T_OK(t_world_init(&w, n, err), err);
  batch_alloc(&w, &bt, group_specs, K);
  for (int round = 0; round < 3; round++) {
    batch_prepare(&w, &bt);
    cr_assert_eq(ncclGroupStart(), ncclSuccess);
    if (order == RANK_MAJOR) {
      for (int r = 0; r < n; r++)
        for (int k = 0; k < K; k++) call_checked(&w, &bt, k, r);
    } else {
      for (int k = 0; k < K; k++) {
        if (order == NESTED) cr_assert_eq(ncclGroupStart(), ncclSuccess);
        for (int r = 0; r < n; r++) call_checked(&w, &bt, k, r);
        if (order == NESTED) cr_assert_eq(ncclGroupEnd(), ncclSuccess, "inner ncclGroupEnd");
      }
    }
    ncclResult_t res = ncclGroupEnd();
    cr_assert_eq(res, ncclSuccess, "ncclGroupEnd: %s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
    for (int k = 0; k < K; k++) T_OK(t_case_release_ops(&w, bt.h[k], err), err);
    group_sync(&w, round);
    batch_verify(&w, &bt, "after the group");
  }
  batch_free(&w, &bt);
  T_OK(t_world_free(&w, err), err);
}

Test(group, ws1_one_comm, .timeout = 120) { group_one_thread(1, CALL_MAJOR); }
Test(group, ws2_call_major, .timeout = 120) { group_one_thread(2, CALL_MAJOR); }
Test(group, ws2_rank_major, .timeout = 120) { group_one_thread(2, RANK_MAJOR); }
Test(group, ws3_nested, .timeout = 120) { group_one_thread(3, NESTED); }
Test(group, ws4_rank_major, .timeout = 120) { group_one_thread(4, RANK_MAJOR); }

/* One thread per rank, each with its own group of all the batch's calls. */
struct rank_thread {
  struct t_world* w;
  struct batch* bt;
  int rank;
  ncclResult_t res;
  int failed_call;
  cudaError_t cuda;
};

static void* rank_main(void* p) {
  struct rank_thread* t = p;
  t->failed_call = -1;
  if ((t->cuda = cudaSetDevice(t->w->dev[t->rank])) != cudaSuccess) return NULL;
  if ((t->res = ncclGroupStart()) != ncclSuccess) return NULL;
  for (int k = 0; k < t->bt->n; k++) {
    ncclResult_t r = t_case_call(t->w, &t->bt->c[k], &t->bt->b[k], t->bt->h[k], t->rank);
    if (r != ncclSuccess && t->failed_call < 0) t->failed_call = k, t->res = r;
  }
  ncclResult_t r = ncclGroupEnd();
  if (t->res == ncclSuccess) t->res = r;
  return NULL;
}

static void group_threads(int n) {
  char err[T_ERRLEN];
  struct t_world w;
  struct batch bt;
  struct rank_thread th[T_MAXR];
  pthread_t tid[T_MAXR];
  T_REQUIRE_GPU();
  group_env();
  T_OK(t_world_init(&w, n, err), err);
  batch_alloc(&w, &bt, group_specs, (int)NELEMS(group_specs));
  for (int round = 0; round < 3; round++) {
    batch_prepare(&w, &bt);
    for (int r = 0; r < n; r++) {
      th[r] = (struct rank_thread){&w, &bt, r, ncclSuccess, -1, cudaSuccess};
      cr_assert_eq(pthread_create(&tid[r], NULL, rank_main, &th[r]), 0);
    }
    for (int r = 0; r < n; r++) {
      struct timespec dl;
      clock_gettime(CLOCK_REALTIME, &dl);
      dl.tv_sec += (time_t)t_wait_bound_s();
      int e = pthread_timedjoin_np(tid[r], NULL, &dl);
      cr_assert_eq(e, 0, "round %d: rank %d's thread did not return from its group within %.0f s "
                   "(a launch blocked: see the lazy-loading note of group_sync)", round, r,
                   t_wait_bound_s());
      cr_assert_eq(th[r].cuda, cudaSuccess, "rank %d: cudaSetDevice: %s", r, cudaGetErrorString(th[r].cuda));
      cr_assert_eq(th[r].res, ncclSuccess, "rank %d: call %d / ncclGroupEnd: %s (%s)", r,
                   th[r].failed_call, ncclGetErrorString(th[r].res), ncclGetLastError(NULL));
    }
    for (int k = 0; k < bt.n; k++) T_OK(t_case_release_ops(&w, bt.h[k], err), err);
    group_sync(&w, round);
    batch_verify(&w, &bt, "after the per-thread groups");
  }
  batch_free(&w, &bt);
  T_OK(t_world_free(&w, err), err);
}

Test(group, ws2_thread_per_rank, .timeout = 120) { group_threads(2); }
Test(group, ws4_thread_per_rank, .timeout = 120) { group_threads(4); }
Test(group, ws8_thread_per_rank, .timeout = 120) { group_threads(8); }
