/* The opt-in low-precision all-reduce (docs/LOWPREC.md) on the GPU, every rank in this
 * process (ranks share the GPU where there are fewer GPUs than ranks): world sizes 2, 3,
 * 4 and 8; every format x dtype x group size {32, 128, 256, 1024} x count {1, 17, 4097,
 * 1M+3}, in place and not, sum and avg. Every rank's output must equal, bit for bit, the
 * CPU simulation of the algorithm (snapccl_lp_simulate: the same arithmetic, from
 * src/kernels/lowprec_math.cuh), hence also every other rank's. Also: misaligned
 * pointers, Inf/NaN placement, CUDA graphs (which keep the setting of their capture), the
 * environment switch, declines for other dtypes and ops (exact full-precision results),
 * and nothing changed when the opt-in is absent. Skips without a GPU. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "kernels/lowprec.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define BIG ((1u << 20) + 3)

static const int formats[] = {SNAPCCL_LOWPREC_FP8, SNAPCCL_LOWPREC_INT8, SNAPCCL_LOWPREC_INT4};
static const char* const fmt_names[] = {"off", "fp8", "int8", "int4"};
static const ncclDataType_t dtypes[] = {ncclFloat16, ncclBfloat16, ncclFloat32};
static const int groups[] = {32, 128, 256, 1024};
static const size_t counts[] = {1, 17, 4097, BIG};

static uint64_t next_seed(void) {
  static uint64_t s = 0x10ec0ull << 32;
  return t_mix(++s);
}

/* One call on every rank. */
struct lpcase {
  int fmt, group;
  ncclDataType_t dt;
  int avg;
  size_t count;
  int in_place;
  int nonfinite; /* inputs carry Inf and NaN */
  int soff[T_MAXR], roff[T_MAXR];
  uint64_t seed;
};

struct fixture {
  struct t_world w;
  char* send[T_MAXR];
  char* recv[T_MAXR];
  size_t cap; /* payload bytes each buffer holds (plus guards and 16 bytes of offset) */
  unsigned char* in[T_MAXR];
  unsigned char *sim, *img, *want;
};

#define GUARD 64
static unsigned char guard_byte(size_t i) { return (unsigned char)(0xA5u ^ (i * 0x3Bu)); }

/* What a region and its guards hold: guard bytes around `bytes` of payload at
 * GUARD + off (payload NULL: NaN poison); returns the span. */
static size_t image(unsigned char* img, int off, const void* payload, size_t bytes) {
  const size_t lo = GUARD + (size_t)(off & 15), span = GUARD + 16 + bytes + GUARD;
  for (size_t i = 0; i < span; i++) img[i] = guard_byte(i);
  if (payload) memcpy(img + lo, payload, bytes);
  else memset(img + lo, 0xFF, bytes);
  return span;
}

static void open_world(struct fixture* f, int n, size_t cap) {
  char err[T_ERRLEN];
  memset(f, 0, sizeof *f);
  t_env_defaults();
  T_OK(t_world_init(&f->w, n, err), err);
  f->cap = cap;
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(f->w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaMalloc((void**)&f->send[r], cap + 2 * GUARD + 16), cudaSuccess);
    cr_assert_eq(cudaMalloc((void**)&f->recv[r], cap + 2 * GUARD + 16), cudaSuccess);
    cr_assert_not_null(f->in[r] = malloc(cap + 1));
  }
  cr_assert_not_null(f->sim = malloc(cap + 1));
  cr_assert_not_null(f->img = malloc(cap + 2 * GUARD + 16));
  cr_assert_not_null(f->want = malloc(cap + 2 * GUARD + 16));
}

static void close_world(struct fixture* f) {
  char err[T_ERRLEN];
  for (int r = 0; r < f->w.n; r++) {
    cudaFree(f->send[r]);
    cudaFree(f->recv[r]);
    free(f->in[r]);
  }
  free(f->sim);
  free(f->img);
  free(f->want);
  T_OK(t_world_free(&f->w, err), err);
}

static void set_all(struct fixture* f, int fmt, int group, size_t min_bytes) {
  for (int r = 0; r < f->w.n; r++)
    cr_assert_eq(snapcclCommSetLowPrecision(f->w.comm[r], fmt, group, min_bytes), ncclSuccess, "%s",
                 ncclGetLastError(NULL));
}

static const char* case_str(const struct fixture* f, const struct lpcase* c, char* buf, size_t len) {
  snprintf(buf, len, "world %d, %s, group %d, %s, %s, count %zu, %s%s, offsets s%d/r%d (rank 0)",
           f->w.n, fmt_names[c->fmt], c->group, t_dt_name(c->dt), c->avg ? "avg" : "sum", c->count,
           c->in_place ? "in place" : "out of place", c->nonfinite ? ", Inf/NaN" : "", c->soff[0],
           c->roff[0]);
  return buf;
}

/* Normal-looking values with a few large outliers (and, if asked, Inf and NaN), exact
 * in the dtype; a function of (seed, rank). */
static void gen(const struct lpcase* c, int rank, unsigned char* p) {
  uint64_t s = t_mix(c->seed ^ t_mix(0x1e7ull + (uint64_t)rank));
  for (size_t i = 0; i < c->count; i++) {
    uint64_t r = t_rand(&s);
    double u = 0;
    for (int k = 0; k < 4; k++) u += (double)((r >> (16 * k)) & 0xffff) / 65536.0;
    double v = (u - 2.0) * 1.7; /* roughly unit variance */
    if ((r & 0x3ff) == 7) v *= 300;
    if (c->nonfinite) {
      uint64_t q = t_rand(&s) % 200;
      if (q == 0) v = INFINITY;
      else if (q == 1) v = -INFINITY;
      else if (q == 2) v = NAN;
    }
    t_put(c->dt, p, i, v);
  }
}

/* Inputs uploaded (with guards around every region), outputs poisoned. */
static void prepare(struct fixture* f, const struct lpcase* c) {
  const size_t es = t_dt_size(c->dt), bytes = c->count * es;
  cr_assert(bytes <= f->cap);
  for (int r = 0; r < f->w.n; r++) {
    gen(c, r, f->in[r]);
    cr_assert_eq(cudaSetDevice(f->w.dev[r]), cudaSuccess);
    /* send: guards + input; recv: guards + input (in place) or NaN poison */
    size_t span = image(f->img, c->soff[r], f->in[r], bytes);
    if (!c->in_place)
      cr_assert_eq(cudaMemcpyAsync(f->send[r], f->img, span, cudaMemcpyHostToDevice, f->w.stream[r]), cudaSuccess);
    image(f->img, c->roff[r], c->in_place ? f->in[r] : NULL, bytes);
    cr_assert_eq(cudaMemcpyAsync(f->recv[r], f->img, span, cudaMemcpyHostToDevice, f->w.stream[r]), cudaSuccess);
    cr_assert_eq(cudaStreamSynchronize(f->w.stream[r]), cudaSuccess); /* f->img is reused */
  }
}

static ncclResult_t call(struct fixture* f, const struct lpcase* c, int r) {
  char* rv = f->recv[r] + GUARD + c->roff[r];
  const char* sd = c->in_place ? rv : f->send[r] + GUARD + c->soff[r];
  return ncclAllReduce(sd, rv, c->count, c->dt, c->avg ? ncclAvg : ncclSum, f->w.comm[r], f->w.stream[r]);
}

static void issue(struct fixture* f, const struct lpcase* c) {
  char what[300];
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  for (int r = 0; r < f->w.n; r++) {
    ncclResult_t res = call(f, c, r);
    cr_assert_eq(res, ncclSuccess, "%s: rank %d: %s (%s)", case_str(f, c, what, sizeof what), r,
                 ncclGetErrorString(res), ncclGetLastError(NULL));
  }
  ncclResult_t res = ncclGroupEnd();
  cr_assert_eq(res, ncclSuccess, "%s: ncclGroupEnd: %s (%s)", case_str(f, c, what, sizeof what),
               ncclGetErrorString(res), ncclGetLastError(NULL));
}

/* After the streams finished: guards intact, inputs unchanged, every rank's output equal
 * to the simulation bit for bit. */
static void verify(struct fixture* f, const struct lpcase* c, const char* when) {
  char err[T_ERRLEN], what[300];
  const size_t es = t_dt_size(c->dt), bytes = c->count * es, span = GUARD + 16 + bytes + GUARD;
  T_OK(t_world_sync(&f->w, t_wait_bound_s(), err), err);
  case_str(f, c, what, sizeof what);
  const void* ins[T_MAXR];
  for (int r = 0; r < f->w.n; r++) ins[r] = f->in[r];
  cr_assert_eq(snapccl_lp_simulate(c->fmt, c->group, c->dt, f->w.n, c->avg, c->count, ins, f->sim), 0);
  for (int r = 0; r < f->w.n; r++) {
    cr_assert_eq(cudaSetDevice(f->w.dev[r]), cudaSuccess);
    if (!c->in_place) {
      cr_assert_eq(cudaMemcpy(f->img, f->send[r], span, cudaMemcpyDeviceToHost), cudaSuccess);
      image(f->want, c->soff[r], f->in[r], bytes);
      cr_assert(!memcmp(f->img, f->want, span), "%s%s: rank %d's send buffer changed", when, what, r);
    }
    cr_assert_eq(cudaMemcpy(f->img, f->recv[r], span, cudaMemcpyDeviceToHost), cudaSuccess);
    image(f->want, c->roff[r], f->sim, bytes);
    if (memcmp(f->img, f->want, span)) {
      size_t i = 0;
      while (f->img[i] == f->want[i]) i++;
      size_t lo = GUARD + (size_t)c->roff[r];
      if (i < lo || i >= lo + bytes)
        cr_assert_fail("%s%s: rank %d wrote byte %zu outside its output", when, what, r, i);
      size_t k = (i - lo) / es;
      cr_assert_fail("%s%s: rank %d element %zu is %.9g, the simulation says %.9g", when, what, r, k,
                     t_get(c->dt, f->img + lo, k), t_get(c->dt, f->sim, k));
    }
  }
}

static void run(struct fixture* f, const struct lpcase* c) {
  char what[300];
  const char* name = NULL;
  ncclResult_t q = snapcclQueryAlgorithm(f->w.comm[0], "allreduce", c->count, c->dt,
                                         c->avg ? ncclAvg : ncclSum, &name);
  cr_assert(q == ncclSuccess && !strcmp(name, "lowprec"), "%s: snapcclQueryAlgorithm says %s",
            case_str(f, c, what, sizeof what), q == ncclSuccess ? name : ncclGetLastError(NULL));
  prepare(f, c);
  issue(f, c);
  verify(f, c, "");
}

static struct lpcase make(int fmt, int group, ncclDataType_t dt, int avg, size_t count, int in_place) {
  struct lpcase c;
  memset(&c, 0, sizeof c);
  c.fmt = fmt, c.group = group, c.dt = dt, c.avg = avg, c.count = count, c.in_place = in_place;
  c.seed = next_seed();
  return c;
}

/* ---- the matrix: one test per world size and format ---- */

static void matrix(int n, int fmt) {
  T_REQUIRE_GPU();
  struct fixture f;
  open_world(&f, n, (size_t)BIG * 4);
  int k = 0;
  for (size_t g = 0; g < NELEMS(groups); g++) {
    set_all(&f, fmt, groups[g], 0);
    for (size_t d = 0; d < NELEMS(dtypes); d++)
      for (size_t i = 0; i < NELEMS(counts); i++)
        for (int ip = 0; ip < 2; ip++, k++) {
          struct lpcase c = make(fmt, groups[g], dtypes[d], k % 3 == 1, counts[i], ip);
          run(&f, &c);
        }
  }
  close_world(&f);
}

#define MATRIX(n)                                                                             \
  Test(lowprec_ws##n, fp8, .timeout = 600) { matrix(n, SNAPCCL_LOWPREC_FP8); }                \
  Test(lowprec_ws##n, int8, .timeout = 600) { matrix(n, SNAPCCL_LOWPREC_INT8); }              \
  Test(lowprec_ws##n, int4, .timeout = 600) { matrix(n, SNAPCCL_LOWPREC_INT4); }
MATRIX(2)
MATRIX(3)
MATRIX(4)
MATRIX(8)

/* ---- misaligned pointers, Inf/NaN, other group sizes ---- */

Test(lowprec, offsets_and_odd_groups, .timeout = 600) {
  T_REQUIRE_GPU();
  struct fixture f;
  open_world(&f, 3, 70000 * 4);
  static const int odd[] = {64, 96, 480, 992};
  for (int off = 1; off <= 15; off++) {
    int fmt = formats[off % 3], group = odd[off % 4];
    set_all(&f, fmt, group, 0);
    struct lpcase c = make(fmt, group, dtypes[(off / 3) % 3], off & 1, 17 + 4099 * (size_t)off, off % 4 == 1);
    t_misalign(off, f.w.n, c.soff, c.roff);
    run(&f, &c);
  }
  close_world(&f);
}

Test(lowprec, inf_nan_placement, .timeout = 600) {
  T_REQUIRE_GPU();
  static const int worlds[] = {2, 3, 4, 8};
  for (size_t wi = 0; wi < NELEMS(worlds); wi++) {
    struct fixture f;
    open_world(&f, worlds[wi], 70000 * 4);
    for (size_t fm = 0; fm < NELEMS(formats); fm++)
      for (size_t d = 0; d < NELEMS(dtypes); d++) {
        set_all(&f, formats[fm], groups[(fm + d) % 4], 0);
        struct lpcase c = make(formats[fm], groups[(fm + d) % 4], dtypes[d], (int)(d & 1), 65537, (int)(fm & 1));
        c.nonfinite = 1;
        run(&f, &c); /* bitwise equal to the simulation, NaN patterns included */
        /* And the classes are where full precision puts them (the fp64 sum). */
        for (size_t i = 0; i < c.count; i++) {
          double ref = 0;
          int big = 0;
          for (int r = 0; r < f.w.n; r++) {
            double x = t_get(c.dt, f.in[r], i);
            ref += x;
            big |= fabs(x) > 1e4;
          }
          double o = t_get(c.dt, f.sim, i);
          if (isnan(ref)) cr_assert(isnan(o), "element %zu: NaN expected, got %g", i, o);
          else if (isinf(ref)) cr_assert(o == ref, "element %zu: %g expected, got %g", i, ref, o);
          else if (!big) cr_assert(isfinite(o), "element %zu: finite %g expected, got %g", i, ref, o);
        }
      }
    close_world(&f);
  }
}

/* ---- CUDA graphs: captured calls replayed with new inputs; the setting is captured ---- */

Test(lowprec, graph, .timeout = 600) {
  T_REQUIRE_GPU();
  struct fixture f;
  const int n = 4;
  open_world(&f, n, (size_t)BIG * 2);
  set_all(&f, SNAPCCL_LOWPREC_INT8, 128, 0);
  struct lpcase c = make(SNAPCCL_LOWPREC_INT8, 128, ncclBfloat16, 1, BIG, 0);
  prepare(&f, &c);
  cudaGraph_t graph[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(f.w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaStreamBeginCapture(f.w.stream[r], cudaStreamCaptureModeGlobal), cudaSuccess);
  }
  issue(&f, &c);
  for (int r = 0; r < n; r++) cr_assert_eq(cudaStreamEndCapture(f.w.stream[r], &graph[r]), cudaSuccess);
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaSetDevice(f.w.dev[r]), cudaSuccess);
    cr_assert_eq(cudaGraphInstantiate(&exec[r], graph[r], 0), cudaSuccess);
  }
  /* A different setting now must not change what the graph does. */
  set_all(&f, SNAPCCL_LOWPREC_FP8, 32, 0);
  for (int rep = 0; rep < 12; rep++) {
    char when[64];
    snprintf(when, sizeof when, "replay %d: ", rep);
    c.seed = next_seed();
    prepare(&f, &c);
    for (int r = 0; r < n; r++) {
      cr_assert_eq(cudaSetDevice(f.w.dev[r]), cudaSuccess);
      cr_assert_eq(cudaGraphLaunch(exec[r], f.w.stream[r]), cudaSuccess);
    }
    verify(&f, &c, when);
    if (rep % 4 == 3) { /* eager calls between replays, with the current setting */
      struct lpcase e = make(SNAPCCL_LOWPREC_FP8, 32, ncclFloat16, 0, 4097 * (size_t)rep, rep & 1);
      run(&f, &e);
    }
  }
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(graph[r]), cudaSuccess);
  }
  close_world(&f);
}

/* ---- the environment switch, forcing, declines, and the opt-in absent ---- */

Test(lowprec, environment, .timeout = 600) {
  T_REQUIRE_GPU();
  struct fixture f;
  open_world(&f, 2, 300000 * 4);
  t_env_set("SNAPCCL_LOWPREC", "int4");
  t_env_set("SNAPCCL_LOWPREC_GROUP", "64");
  t_env_set("SNAPCCL_LOWPREC_MIN_BYTES", "4096");
  struct lpcase c = make(SNAPCCL_LOWPREC_INT4, 64, ncclFloat32, 0, 300000, 0);
  run(&f, &c);
  /* Below the minimum: full precision. */
  const char* name = NULL;
  cr_assert_eq(snapcclQueryAlgorithm(f.w.comm[0], "allreduce", 1023, ncclFloat32, ncclSum, &name), ncclSuccess);
  cr_assert_str_neq(name, "lowprec");
  /* The communicator's setting overrides the environment. */
  set_all(&f, SNAPCCL_LOWPREC_FP8, 1024, 0);
  c = make(SNAPCCL_LOWPREC_FP8, 1024, ncclFloat16, 1, 17, 1);
  run(&f, &c);
  set_all(&f, SNAPCCL_LOWPREC_ENV, 0, 0);
  c = make(SNAPCCL_LOWPREC_INT4, 64, ncclBfloat16, 1, 250001, 1);
  run(&f, &c);
  t_env_set("SNAPCCL_LOWPREC", NULL);
  t_env_set("SNAPCCL_LOWPREC_GROUP", NULL);
  t_env_set("SNAPCCL_LOWPREC_MIN_BYTES", NULL);
  close_world(&f);
}

/* With low precision on, other dtypes and ops run in full precision: the library's
 * exact checks (common.c) pass. Forced onto a call it declines, the call fails and
 * launches nothing. */
Test(lowprec, declines, .timeout = 600) {
  char err[T_ERRLEN];
  T_REQUIRE_GPU();
  struct fixture f;
  open_world(&f, 4, 70000 * 4);
  set_all(&f, SNAPCCL_LOWPREC_INT8, 256, 0);
  static const ncclDataType_t exact_dts[] = {ncclInt8, ncclUint8, ncclInt32, ncclUint32, ncclInt64,
                                             ncclUint64, ncclFloat64, ncclFloat8e4m3, ncclFloat8e5m2};
  for (size_t d = 0; d < NELEMS(exact_dts); d++) {
    struct t_case tc = t_case_make(T_AR, exact_dts[d], T_SUM, 65537, (int)(d & 1), NULL, next_seed());
    T_OK(t_run_case_alloc(&f.w, &tc, err), err);
  }
  static const int ops[] = {T_PROD, T_MAX, T_MIN, T_PREMUL_HOST, T_PREMUL_DEV};
  for (size_t o = 0; o < NELEMS(ops); o++)
    for (size_t d = 0; d < NELEMS(dtypes); d++) {
      struct t_case tc = t_case_make(T_AR, dtypes[d], ops[o], 65537, (int)(o & 1), NULL, next_seed());
      T_OK(t_run_case_alloc(&f.w, &tc, err), err);
    }
  /* All-gather and reduce-scatter of the same types are untouched. */
  struct t_case rs = t_case_make(T_RS, ncclFloat32, T_SUM, 4097, 0, NULL, next_seed());
  T_OK(t_run_case_alloc(&f.w, &rs, err), err);
  struct t_case ag = t_case_make(T_AG, ncclBfloat16, T_SUM, 4097, 1, NULL, next_seed());
  T_OK(t_run_case_alloc(&f.w, &ag, err), err);
  /* Forced onto a call it cannot run: the group fails, nothing is launched. */
  t_env_set("SNAPCCL_ALGO", "allreduce:lowprec");
  struct lpcase c = make(SNAPCCL_LOWPREC_INT8, 256, ncclFloat32, 0, 4097, 0);
  c.dt = ncclInt32;
  prepare(&f, &c);
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  for (int r = 0; r < f.w.n; r++) (void)call(&f, &c, r);
  ncclResult_t res = ncclGroupEnd();
  cr_assert_eq(res, ncclInvalidUsage, "forced onto int32: %s", ncclGetErrorString(res));
  cr_assert(strstr(ncclGetLastError(NULL), "float16, bfloat16 and float32"), "%s", ncclGetLastError(NULL));
  T_OK(t_world_sync(&f.w, t_wait_bound_s(), err), err);
  c = make(SNAPCCL_LOWPREC_INT8, 256, ncclFloat32, 0, 4097, 0);
  run(&f, &c); /* forced and possible: runs */
  t_env_set("SNAPCCL_ALGO", NULL);
  close_world(&f);
}

Test(lowprec, absent, .timeout = 600) {
  char err[T_ERRLEN];
  T_REQUIRE_GPU();
  struct t_world w;
  t_env_defaults();
  t_env_set("SNAPCCL_LOWPREC", NULL);
  T_OK(t_world_init(&w, 2, err), err);
  for (size_t d = 0; d < NELEMS(dtypes); d++)
    for (int op = T_SUM; op <= T_AVG; op += T_AVG - T_SUM)
      for (size_t k = 0; k < NELEMS(counts); k++) {
        const char* name = NULL;
        cr_assert_eq(snapcclQueryAlgorithm(w.comm[0], "allreduce", counts[k], dtypes[d],
                                           op == T_AVG ? ncclAvg : ncclSum, &name), ncclSuccess);
        cr_assert_str_neq(name, "lowprec");
        /* The library's full-precision checks pass. */
        struct t_case tc = t_case_make(T_AR, dtypes[d], op, counts[k], (int)(k & 1), NULL, next_seed());
        T_OK(t_run_case_alloc(&w, &tc, err), err);
      }
  /* Forced without the opt-in: fails with the reason. */
  t_env_set("SNAPCCL_ALGO", "allreduce:lowprec");
  const char* name = NULL;
  cr_assert_eq(snapcclQueryAlgorithm(w.comm[0], "allreduce", 1 << 20, ncclFloat32, ncclSum, &name),
               ncclInvalidUsage);
  cr_assert(strstr(ncclGetLastError(NULL), "low precision is off"), "%s", ncclGetLastError(NULL));
  t_env_set("SNAPCCL_ALGO", NULL);
  T_OK(t_world_free(&w, err), err);
}
