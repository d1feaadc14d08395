/* The unicast twins of the NVLink multicast algorithms (src/kernels/multimem.cu with the
 * multimem instructions replaced by loops over the peers' workspaces), every rank in this
 * process (ncclCommInitAll; ranks share the GPU with SNAPCCL_SHARED_GPU=1):
 *   - every twin, every dtype it covers, counts {1, 17, 4097, 1M+3}, in place and out of
 *     place, at world sizes 2, 4 and 8, bitwise identical all-reduce results across ranks;
 *   - the reductions and dtypes they decline, and the multicast variants declining (the
 *     gate stays closed: SNAPCCL_NVLS is never set here, NCCL_NVLS_ENABLE=0);
 *   - misaligned user buffers;
 *   - twins captured in CUDA graphs and replayed, with eager calls in between;
 *   - twins and the unicast algorithms back to back (shared epochs, rounds, flags and
 *     Lamport slots);
 *   - the library's own choice never picks an NVLS algorithm.
 * No multicast object is ever created by this file. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"
#include "kernels/kargs.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define BIG ((size_t)(1u << 20) + 3)

static const char* const ar_twins[] = {"nvls_lamport_twin", "nvls_oneshot_twin", "nvls_twoshot_twin"};
static const ncclDataType_t red_dts[] = {ncclFloat32, ncclFloat16, ncclBfloat16};
static const size_t counts[] = {1, 17, 4097, BIG};

static uint64_t next_seed(void) {
  static uint64_t s = 0x4e564c53ull << 32;
  return t_mix(++s);
}

/* The suite's defaults, and the gate held shut whatever the environment said. */
static void twin_env(void) {
  t_env_defaults();
  t_env_set("SNAPCCL_NVLS", NULL);
  t_env_set("NCCL_NVLS_ENABLE", "0");
}

/* Does the forced NVLS algorithm take this call? (src/algos/allreduce_nvls.c and its siblings, restated.) */
static int accepts(const struct t_case* c, int n) {
  if (c->count == 0) return 1;
  if (strncmp(c->algo, "nvls", 4) != 0) return t_algo_accepts(c, n);
  if (!strstr(c->algo, "_twin")) return 0; /* multicast: the gate is closed */
  if (c->coll == T_AG) return 1;           /* bytes: every dtype */
  int red_ok = (c->dt == ncclFloat32 || c->dt == ncclFloat16 || c->dt == ncclBfloat16) &&
               (c->op == T_SUM || c->op == T_AVG || c->op == T_PREMUL_HOST || c->op == T_PREMUL_DEV);
  if (!red_ok) return 0;
  if (c->coll == T_AR && strcmp(c->algo, "nvls_twoshot_twin") != 0)
    return c->count * t_dt_size(c->dt) <= snapccl_oneshot_slot_bytes(n);
  return 1;
}

static int fail(char* err, const char* what, ncclResult_t r) {
  snprintf(err, T_ERRLEN, "%s: %s (%s)", what, ncclGetErrorString(r), ncclGetLastError(NULL));
  return -1;
}

/* Sets SNAPCCL_ALGO, checks snapcclQueryAlgorithm, issues every local rank's call in one
 * group; accepted calls must succeed, the others fail with ncclInvalidUsage naming
 * SNAPCCL_ALGO. */
static int issue(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h, int accept,
                 char* err) {
  static const ncclRedOp_t builtin[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg};
  t_set_algo(c->coll, c->algo);
  if (c->count > 0 && c->op < T_PREMUL_HOST) {
    const char* name = NULL;
    ncclResult_t q = snapcclQueryAlgorithm(w->comm[w->first], t_coll_name(c->coll), c->count, c->dt,
                                           builtin[c->op], &name);
    if (accept && q != ncclSuccess) return fail(err, "snapcclQueryAlgorithm declines", q);
    if (accept && strcmp(name, c->algo) != 0) {
      snprintf(err, T_ERRLEN, "snapcclQueryAlgorithm picks %s, not %s", name, c->algo);
      return -1;
    }
    if (!accept && q != ncclInvalidUsage) {
      snprintf(err, T_ERRLEN, "snapcclQueryAlgorithm picked %s for a call %s must decline",
               q == ncclSuccess ? name : "?", c->algo);
      return -1;
    }
  }
  ncclResult_t first = ncclSuccess, res;
  if (w->nlocal > 1) ncclGroupStart();
  for (int r = w->first; r < w->first + w->nlocal; r++)
    if ((res = t_case_call(w, c, b, h, r)) != ncclSuccess && first == ncclSuccess) first = res;
  if (w->nlocal > 1 && (res = ncclGroupEnd()) != ncclSuccess && first == ncclSuccess) first = res;
  char last[512];
  snprintf(last, sizeof last, "%s", ncclGetLastError(NULL));
  if (t_case_release_ops(w, h, err) != 0) return -1;
  if (accept) return first == ncclSuccess ? 0 : fail(err, "the call failed", first);
  if (first != ncclInvalidUsage) return fail(err, "a call that must be declined returned", first);
  if (!strstr(last, "SNAPCCL_ALGO")) {
    snprintf(err, T_ERRLEN, "the declined call's reason does not name SNAPCCL_ALGO: %s", last);
    return -1;
  }
  if (!strncmp(c->algo, "nvls", 4) && !strstr(c->algo, "_twin") && !strstr(last, "NVLink multicast is off")) {
    snprintf(err, T_ERRLEN, "a multicast algorithm declined for another reason than the closed gate: %s", last);
    return -1;
  }
  return 0;
}

/* prepare, issue, sync, verify (results, guards, untouched inputs, bitwise identity). */
static int run(struct t_world* w, const struct t_case* c, struct t_bufs* b, char* err) {
  struct t_host* h = NULL;
  const int accept = accepts(c, w->n);
  int rc = t_case_prepare(w, c, b, &h, err);
  if (rc == 0) rc = issue(w, c, b, h, accept, err);
  if (rc == 0 && accept && c->count) rc = t_world_sync(w, t_wait_bound_s(), err);
  if (rc == 0) rc = t_case_verify(w, c, b, h, accept && c->count > 0, err);
  if (rc != 0) {
    char what[600], scratch[T_ERRLEN], msg[T_ERRLEN];
    snprintf(msg, sizeof msg, "%s: %s", t_case_str(c, w->n, what, sizeof what), err);
    snprintf(err, T_ERRLEN, "%s", msg);
    (void)t_world_sync(w, t_wait_bound_s(), scratch);
  }
  t_host_free(w, h);
  return rc;
}

static void open_world(struct t_fixture* f, int n, size_t send_cap, size_t recv_cap) {
  twin_env();
  t_fixture_init(f, n, send_cap, recv_cap);
}

static void close_world(struct t_fixture* f) {
  t_fixture_close(f);
  t_set_algo(T_AR, NULL);
}

static void run_ok(struct t_fixture* f, const struct t_case* c) {
  char err[T_ERRLEN];
  T_OK(run(&f->w, c, &f->b, err), err);
}

/* ---------------------------------------------------------------- the matrix */

static void allreduce(int n) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_world(&f, n, BIG * 4, BIG * 4);
  for (size_t a = 0; a < NELEMS(ar_twins); a++)
    for (size_t d = 0; d < NELEMS(red_dts); d++)
      for (size_t k = 0; k < NELEMS(counts); k++)
        for (int ip = 0; ip < 2; ip++) {
          struct t_case c = t_case_make(T_AR, red_dts[d], T_SUM, counts[k], ip, ar_twins[a], next_seed());
          run_ok(&f, &c);
        }
  /* The other summing reductions, and what the hardware cannot reduce. */
  static const int ops[] = {T_AVG, T_PREMUL_HOST, T_PREMUL_DEV, T_MAX, T_PROD};
  for (size_t a = 0; a < NELEMS(ar_twins); a++)
    for (size_t o = 0; o < NELEMS(ops); o++) {
      struct t_case c = t_case_make(T_AR, o & 1 ? ncclBfloat16 : ncclFloat32, ops[o], 4097, (int)o & 1,
                                    ar_twins[a], next_seed());
      run_ok(&f, &c);
    }
  static const ncclDataType_t declined[] = {ncclInt32, ncclFloat64, ncclFloat8e4m3};
  for (size_t d = 0; d < NELEMS(declined); d++) {
    struct t_case c = t_case_make(T_AR, declined[d], T_SUM, 17, 0, ar_twins[d], next_seed());
    run_ok(&f, &c);
  }
  close_world(&f);
}

static void reducescatter(int n) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_world(&f, n, BIG * 4 * (size_t)n, BIG * 4 * (size_t)n);
  for (size_t d = 0; d < NELEMS(red_dts); d++)
    for (size_t k = 0; k < NELEMS(counts); k++)
      for (int ip = 0; ip < 2; ip++) {
        struct t_case c = t_case_make(T_RS, red_dts[d], T_SUM, counts[k], ip, "nvls_twin", next_seed());
        run_ok(&f, &c);
      }
  static const int ops[] = {T_AVG, T_PREMUL_HOST, T_PREMUL_DEV, T_MIN};
  for (size_t o = 0; o < NELEMS(ops); o++) {
    struct t_case c = t_case_make(T_RS, o & 1 ? ncclFloat16 : ncclFloat32, ops[o], 4097, (int)o & 1,
                                  "nvls_twin", next_seed());
    run_ok(&f, &c);
  }
  struct t_case c = t_case_make(T_RS, ncclUint8, T_SUM, 17, 0, "nvls_twin", next_seed());
  run_ok(&f, &c);
  close_world(&f);
}

static void allgather(int n) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_world(&f, n, BIG * 4, BIG * 4 * (size_t)n);
  for (int d = 0; d < 12; d++)
    for (size_t k = 0; k < NELEMS(counts) - 1; k++)
      for (int ip = 0; ip < 2; ip++) {
        struct t_case c = t_case_make(T_AG, t_all_dtypes[d], T_SUM, counts[k], ip, "nvls_twin", next_seed());
        run_ok(&f, &c);
      }
  static const ncclDataType_t big[] = {ncclInt8, ncclBfloat16, ncclFloat32};
  for (size_t d = 0; d < NELEMS(big); d++)
    for (int ip = 0; ip < 2; ip++) {
      struct t_case c = t_case_make(T_AG, big[d], T_SUM, BIG, ip, "nvls_twin", next_seed());
      run_ok(&f, &c);
    }
  close_world(&f);
}

Test(nvls_twin_ws2, allreduce, .timeout = 600) { allreduce(2); }
Test(nvls_twin_ws2, reducescatter, .timeout = 600) { reducescatter(2); }
Test(nvls_twin_ws2, allgather, .timeout = 600) { allgather(2); }
Test(nvls_twin_ws4, allreduce, .timeout = 600) { allreduce(4); }
Test(nvls_twin_ws4, reducescatter, .timeout = 600) { reducescatter(4); }
Test(nvls_twin_ws4, allgather, .timeout = 600) { allgather(4); }
Test(nvls_twin_ws8, allreduce, .timeout = 600) { allreduce(8); }
Test(nvls_twin_ws8, reducescatter, .timeout = 600) { reducescatter(8); }
Test(nvls_twin_ws8, allgather, .timeout = 600) { allgather(8); }

/* ---------------------------------------------------------------- declines and defaults */

/* The multicast variants decline (gate closed), and without SNAPCCL_ALGO the library
 * never picks an NVLS algorithm, twin or not. */
Test(nvls_gate, multicast_declines_and_defaults_unchanged, .timeout = 300) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_world(&f, 2, 65537 * 4 * 2, 65537 * 4 * 2);
  static const struct {
    int coll;
    const char* algo;
  } mc[] = {{T_AR, "nvls_lamport"}, {T_AR, "nvls_oneshot"}, {T_AR, "nvls_twoshot"},
            {T_AG, "nvls"},         {T_RS, "nvls"}};
  for (size_t i = 0; i < NELEMS(mc); i++) {
    struct t_case c = t_case_make(mc[i].coll, ncclFloat32, T_SUM, 4097, 0, mc[i].algo, next_seed());
    run_ok(&f, &c);
  }
  t_set_algo(T_AR, NULL);
  static const size_t sizes[] = {1, 1000, 65537};
  static const char* const colls[] = {"allreduce", "allgather", "reducescatter"};
  for (size_t k = 0; k < NELEMS(sizes); k++)
    for (size_t d = 0; d < NELEMS(red_dts); d++)
      for (size_t c = 0; c < NELEMS(colls); c++) {
        const char* name = NULL;
        ncclResult_t q = snapcclQueryAlgorithm(f.w.comm[0], colls[c], sizes[k], red_dts[d], ncclSum, &name);
        cr_assert_eq(q, ncclSuccess, "%s", ncclGetLastError(NULL));
        cr_assert(strncmp(name, "nvls", 4) != 0, "%s of %zu elements picks %s by default", colls[c], sizes[k], name);
      }
  close_world(&f);
}

/* ---------------------------------------------------------------- misaligned buffers */

Test(nvls_twin_offsets, ws3, .timeout = 300) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_world(&f, 3, 65537 * 4 * 3, 65537 * 4 * 3);
  static const size_t cnt[] = {1, 3, 17, 4097, 65537};
  for (int off = 1; off <= 15; off += 2)
    for (size_t k = 0; k < NELEMS(cnt); k++) {
      static const struct {
        int coll;
        const char* algo;
      } kinds[] = {{T_AR, "nvls_lamport_twin"}, {T_AR, "nvls_oneshot_twin"}, {T_AR, "nvls_twoshot_twin"},
                   {T_AG, "nvls_twin"},         {T_RS, "nvls_twin"}};
      for (size_t i = 0; i < NELEMS(kinds); i++) {
        struct t_case c = t_case_make(kinds[i].coll, red_dts[(k + i) % 3], T_SUM, cnt[k], (int)(off + k) & 1,
                                      kinds[i].algo, next_seed());
        t_misalign(off, 3, c.send_off, c.recv_off);
        run_ok(&f, &c);
      }
    }
  close_world(&f);
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
    {T_AR, ncclFloat32, T_SUM, 1000, 0, "nvls_lamport_twin"}, {T_AR, ncclBfloat16, T_SUM, 4097, 1, "nvls_oneshot_twin"},
    {T_AR, ncclFloat16, T_AVG, 300007, 0, "nvls_twoshot_twin"}, {T_AG, ncclInt8, T_SUM, 3001, 0, "nvls_twin"},
    {T_RS, ncclFloat32, T_PREMUL_DEV, 5000, 1, "nvls_twin"},  {T_AR, ncclFloat32, T_SUM, 17, 1, "lamport"},
    {T_AR, ncclBfloat16, T_SUM, 70001, 0, "nvls_twoshot_twin"}, {T_AG, ncclFloat64, T_SUM, 777, 1, "nvls_twin"},
};
static const struct spec eager_specs[] = {
    {T_AR, ncclFloat32, T_SUM, 2000, 0, "lamport"},     {T_AR, ncclFloat16, T_SUM, 5000, 1, "nvls_oneshot_twin"},
    {T_AR, ncclBfloat16, T_AVG, 70000, 0, "twoshot"},   {T_AG, ncclFloat16, T_SUM, 3000, 1, "direct"},
    {T_RS, ncclFloat32, T_SUM, 4000, 0, "nvls_twin"},
};

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
  twin_env();
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
    if (rep % 4 == 3) { /* eager calls on the same communicators between replays */
      const struct spec* s = &eager_specs[(rep / 4) % NELEMS(eager_specs)];
      struct t_case e = t_case_make(s->coll, s->dt, s->op, s->count, s->in_place, s->algo, next_seed());
      struct t_bufs eb;
      T_OK(t_bufs_alloc(&w, &eb, t_case_send_bytes(&e, n), t_case_recv_bytes(&e, n), err), err);
      int rc = run(&w, &e, &eb, err);
      t_bufs_free(&w, &eb);
      cr_assert(rc == 0, "eager call after replay %d: %s", rep, err);
    }
  }
  for (int r = 0; r < n; r++) {
    cudaGraphExecDestroy(exec[r]);
    cudaGraphDestroy(graph[r]);
  }
  for (int k = 0; k < NS; k++) t_bufs_free(&w, &b[k]);
  T_OK(t_world_free(&w, err), err);
}

Test(nvls_twin_graph, ws2_40_replays, .timeout = 600) { graph_test(2, 40); }
Test(nvls_twin_graph, ws4_12_replays, .timeout = 600) { graph_test(4, 12); }

/* ---------------------------------------------------------------- back to back */

/* Twins and the unicast algorithms alternate with nothing waiting in between: one epoch,
 * one set of round counters, flags and Lamport slots serve them all. */
static void back_to_back(int n) {
  enum { CALLS = 60 };
  static const struct {
    int coll;
    const char* algo;
  } kinds[] = {{T_AR, "nvls_lamport_twin"}, {T_AR, "lamport"}, {T_AR, "nvls_oneshot_twin"},
               {T_AR, "oneshot"},           {T_AR, "nvls_twoshot_twin"}, {T_AR, "twoshot"},
               {T_AG, "nvls_twin"},         {T_AG, "direct"}, {T_RS, "nvls_twin"}, {T_RS, "direct"}};
  static const size_t cnt[] = {1, 7, 300, 4097, 20000, 65537, 131077};
  char err[T_ERRLEN], what[600];
  T_REQUIRE_GPU();
  struct t_world w;
  struct t_case* c = calloc(CALLS, sizeof *c);
  struct t_bufs* b = calloc(CALLS, sizeof *b);
  struct t_host** h = calloc(CALLS, sizeof *h);
  int* ok = calloc(CALLS, sizeof *ok);
  cr_assert(c && b && h && ok, "out of memory");
  twin_env();
  T_OK(t_world_init(&w, n, err), err);
  for (int i = 0; i < CALLS; i++) {
    const int k = i % (int)NELEMS(kinds);
    c[i] = t_case_make(kinds[k].coll, red_dts[(i / 3) % 3], (i / 7) % 2 ? T_AVG : T_SUM, cnt[(i * 5) % NELEMS(cnt)],
                       (i / 2) & 1, kinds[k].algo, next_seed());
    T_OK(t_bufs_alloc(&w, &b[i], t_case_send_bytes(&c[i], n), t_case_recv_bytes(&c[i], n), err), err);
    cr_assert(t_case_prepare(&w, &c[i], &b[i], &h[i], err) == 0, "call %d: %s", i, err);
    ok[i] = accepts(&c[i], n); /* the largest one-shot sizes decline: nothing launched */
    cr_assert(issue(&w, &c[i], &b[i], h[i], ok[i], err) == 0, "call %d: %s: %s", i,
              t_case_str(&c[i], n, what, sizeof what), err);
  }
  T_OK(t_world_sync(&w, t_wait_bound_s() + 30, err), err);
  for (int i = 0; i < CALLS; i++) {
    cr_assert(t_case_verify(&w, &c[i], &b[i], h[i], ok[i], err) == 0, "call %d: %s: %s", i,
              t_case_str(&c[i], n, what, sizeof what), err);
    t_host_free(&w, h[i]);
    t_bufs_free(&w, &b[i]);
  }
  T_OK(t_world_free(&w, err), err);
  t_set_algo(T_AR, NULL);
  free(c), free(b), free(h), free(ok);
}
Test(nvls_twin_back_to_back, ws2, .timeout = 300) { back_to_back(2); }
Test(nvls_twin_back_to_back, ws4, .timeout = 300) { back_to_back(4); }
