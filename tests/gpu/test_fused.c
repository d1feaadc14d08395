/* snapcclAllReduceResidualRMSNorm[Ex] with every rank in this process (ncclCommInitAll,
 * ranks sharing the GPU with SNAPCCL_SHARED_GPU=1 where there is one), against the fp64
 * reference of tests/fused_ref.h: world sizes 2, 3, 4, 8; dtypes bf16, fp16, fp32;
 * variants plain, no residual_out, sum output, fp8 static, fp8 dynamic; tokens
 * {1, 3, 64, 1000} x hidden {8, 4096, 8200, 16384}; forced and chosen algorithms; in
 * place; misaligned pointers; in a CUDA graph replayed with new inputs; poisoned
 * outputs and guard bytes; bitwise identity across ranks and across algorithms;
 * interleaving with the collectives (shared epoch, round counters, Lamport buffers); the
 * separate residual + RMSNorm kernel on rows too large for the row cache.
 *
 * Sampling (the full product is 4 x 3 x 5 x 4 x 4 = 960 cases, and the 1000 x 16384 ones
 * cost seconds of host reference each): per world size, every (tokens, hidden) pair once,
 * with dtype, variant and algorithm rotating so each world size sees every dtype,
 * variant and algorithm, and each (dtype, variant) pair occurs over the four world
 * sizes; plus, per world size, every dtype x variant at 3 x 4096 (one-shot) and
 * 64 x 8200 (two-shot): 47 cases per world size, about 190 in the matrix and 300 calls
 * in the file. Estimated (not yet measured) at well under two minutes: the kernels take
 * microseconds, the host side (data generation, fp64 reference, downloads) dominates, a
 * few seconds for each 1000-token case at world size 8. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "../fused_ref.h"
#include "common.h"
#include "common_check.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

enum variant { V_PLAIN, V_NORES, V_SUM, V_FP8S, V_FP8D, V_COUNT };
static const char* const variant_names[V_COUNT] = {"plain", "no-residual-out", "sum-out", "fp8-static",
                                                   "fp8-dynamic"};
static const ncclDataType_t dtypes[] = {ncclBfloat16, ncclFloat16, ncclFloat32};
static const size_t tokens_list[] = {1, 3, 64, 1000};
static const size_t hidden_list[] = {8, 4096, 8200, 16384};
/* NULL: the library's choice. */
static const char* const algos[] = {NULL, "oneshot", "twoshot", "unfused"};

#define STATIC_SCALE 0.015625f /* norm values of a few units land well inside e4m3's range */

struct fcase {
  ncclDataType_t dt;
  int variant;
  size_t tokens, hidden;
  const char* algo;
  int in_place;   /* norm_out == input (not fp8), residual_out == residual_in */
  int graph;      /* captured once per rank, replayed twice with fresh inputs */
  int no_residual; /* residual_in NULL */
  int no_gamma;   /* gamma NULL */
  int offset;     /* bytes added to every pointer (a multiple of the element size) */
  uint64_t seed;
};

static uint64_t next_seed(void) {
  static uint64_t s = 0xf05edull << 20;
  return t_mix(++s);
}

static struct fcase fc(ncclDataType_t dt, int variant, size_t tokens, size_t hidden, const char* algo) {
  struct fcase c;
  memset(&c, 0, sizeof c);
  c.dt = dt, c.variant = variant, c.tokens = tokens, c.hidden = hidden, c.algo = algo;
  c.seed = next_seed();
  return c;
}

static const char* fcase_str(const struct fcase* c, int n, char* buf, size_t len) {
  snprintf(buf, len, "n=%d %s %s %zux%zu algo=%s%s%s%s%s off=%d", n, t_dt_name(c->dt),
           variant_names[c->variant], c->tokens, c->hidden, c->algo ? c->algo : "auto",
           c->in_place ? " in-place" : "", c->graph ? " graph" : "",
           c->no_residual ? " no-residual-in" : "", c->no_gamma ? " no-gamma" : "", c->offset);
  return buf;
}

/* ---- guarded device regions ---- */

#define GUARD 64
#define GUARD_BYTE 0xA5
#define POISON 0xFF /* NaN in every floating format, e4m3 included */

struct region {
  char* base; /* GUARD, 16 bytes of offset room, payload, GUARD */
  char* ptr;  /* the payload */
  size_t bytes;
};

static int region_alloc(struct region* g, size_t bytes, int offset, int fill, char* err) {
  g->bytes = bytes;
  CU(cudaMalloc((void**)&g->base, bytes + 2 * GUARD + 16));
  CU(cudaMemset(g->base, GUARD_BYTE, bytes + 2 * GUARD + 16));
  g->ptr = g->base + GUARD + offset;
  if (fill >= 0) CU(cudaMemset(g->ptr, fill, bytes));
  return 0;
}

static int region_guards(const struct region* g, const char* what, int rank, char* err) {
  size_t total = g->bytes + 2 * GUARD + 16;
  unsigned char* h = malloc(total);
  if (!h) return t_fail(err, "out of memory");
  cudaError_t e = cudaMemcpy(h, g->base, total, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) {
    free(h);
    return t_fail(err, "cudaMemcpy: %s", cudaGetErrorString(e));
  }
  size_t lo = (size_t)(g->ptr - g->base), hi = lo + g->bytes;
  for (size_t i = 0; i < total; i++)
    if ((i < lo || i >= hi) && h[i] != GUARD_BYTE) {
      free(h);
      return t_fail(err, "rank %d: %s: guard byte %zd from the payload was overwritten", rank, what,
                  i < lo ? (ssize_t)i - (ssize_t)lo : (ssize_t)(i - hi));
    }
  free(h);
  return 0;
}

/* ---- per-case host and device state ---- */

struct rank_bufs {
  struct region in, res, gamma, norm, rout, sum, scale, sout;
};

struct state {
  int n;
  size_t es, elems, norm_bytes;
  int fmt;
  double** in;       /* [rank][elems], dtype values */
  unsigned char** in_raw;
  double* res;       /* [elems] (shared by all ranks: tensor parallelism replicates it) */
  unsigned char* res_raw;
  double* gamma;     /* [hidden] */
  unsigned char* gamma_raw;
  double* sum_exact; /* [elems] sum over ranks (fp64), computed once per verification */
  double* sum_mag;   /* [elems] sum of the addends' magnitudes */
  struct rank_bufs b[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
};

static double uniform(uint64_t* s, double lo, double hi) {
  return lo + (hi - lo) * (double)(t_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* Fresh inputs from seed: every rank's input in [-1, 1], residual in [-2, 2], gamma in
 * [0.5, 1.5], all rounded to the dtype; the host copies are what the device holds. */
static void gen(struct state* st, const struct fcase* c, uint64_t seed) {
  uint64_t s = seed;
  for (int r = 0; r < st->n; r++)
    for (size_t i = 0; i < st->elems; i++) {
      t_put(c->dt, st->in_raw[r], i, uniform(&s, -1, 1));
      st->in[r][i] = t_get(c->dt, st->in_raw[r], i);
    }
  for (size_t i = 0; i < st->elems; i++) {
    t_put(c->dt, st->res_raw, i, uniform(&s, -2, 2));
    st->res[i] = t_get(c->dt, st->res_raw, i);
  }
  for (size_t i = 0; i < c->hidden; i++) {
    t_put(c->dt, st->gamma_raw, i, uniform(&s, 0.5, 1.5));
    st->gamma[i] = t_get(c->dt, st->gamma_raw, i);
  }
}

static void state_free(struct t_world* w, struct state* st) {
  for (int r = 0; r < st->n; r++) {
    if (st->in) free(st->in[r]);
    if (st->in_raw) free(st->in_raw[r]);
    struct region* g[] = {&st->b[r].in, &st->b[r].res, &st->b[r].gamma, &st->b[r].norm,
                          &st->b[r].rout, &st->b[r].sum, &st->b[r].scale, &st->b[r].sout};
    cudaSetDevice(w->dev[r]);
    for (size_t k = 0; k < NELEMS(g); k++)
      if (g[k]->base) cudaFree(g[k]->base);
    if (st->exec[r]) cudaGraphExecDestroy(st->exec[r]);
  }
  free(st->in), free(st->in_raw), free(st->res), free(st->res_raw), free(st->gamma),
      free(st->gamma_raw), free(st->sum_exact), free(st->sum_mag);
  memset(st, 0, sizeof *st);
}

static int state_init(struct t_world* w, const struct fcase* c, struct state* st, char* err) {
  memset(st, 0, sizeof *st);
  st->n = w->n;
  st->es = t_dt_size(c->dt);
  st->elems = c->tokens * c->hidden;
  st->fmt = fref_fmt_of(c->dt);
  const int fp8 = c->variant == V_FP8S || c->variant == V_FP8D;
  st->norm_bytes = st->elems * (fp8 ? 1 : st->es);
  st->in = calloc((size_t)st->n, sizeof *st->in);
  st->in_raw = calloc((size_t)st->n, sizeof *st->in_raw);
  st->res = malloc(st->elems * sizeof(double));
  st->res_raw = malloc(st->elems * st->es);
  st->gamma = malloc(c->hidden * sizeof(double));
  st->gamma_raw = malloc(c->hidden * st->es);
  if (!st->in || !st->in_raw || !st->res || !st->res_raw || !st->gamma || !st->gamma_raw)
    return t_fail(err, "out of memory");
  for (int r = 0; r < st->n; r++) {
    st->in[r] = malloc(st->elems * sizeof(double));
    st->in_raw[r] = malloc(st->elems * st->es);
    if (!st->in[r] || !st->in_raw[r]) return t_fail(err, "out of memory");
  }
  const size_t bytes = st->elems * st->es;
  for (int r = 0; r < st->n; r++) {
    struct rank_bufs* b = &st->b[r];
    CU(cudaSetDevice(w->dev[r]));
    if (region_alloc(&b->in, bytes, c->offset, -1, err)) return -1;
    if (region_alloc(&b->res, bytes, c->offset, -1, err)) return -1;
    if (region_alloc(&b->gamma, c->hidden * st->es, c->offset, -1, err)) return -1;
    if (!(c->in_place && !fp8) && region_alloc(&b->norm, st->norm_bytes, c->offset, POISON, err)) return -1;
    if (!c->in_place && region_alloc(&b->rout, bytes, c->offset, POISON, err)) return -1;
    if (c->variant == V_SUM && region_alloc(&b->sum, bytes, c->offset, POISON, err)) return -1;
    if (region_alloc(&b->scale, sizeof(float), 0, -1, err)) return -1;
    if (region_alloc(&b->sout, c->tokens * sizeof(float), 0, POISON, err)) return -1;
    float s = STATIC_SCALE;
    CU(cudaMemcpy(b->scale.ptr, &s, sizeof s, cudaMemcpyHostToDevice));
  }
  return 0;
}

/* Uploads fresh inputs and poisons the outputs (in place: the input buffers are both). */
static int upload(struct t_world* w, const struct fcase* c, struct state* st, uint64_t seed, char* err) {
  gen(st, c, seed);
  const size_t bytes = st->elems * st->es;
  for (int r = 0; r < st->n; r++) {
    struct rank_bufs* b = &st->b[r];
    CU(cudaSetDevice(w->dev[r]));
    CU(cudaMemcpy(b->in.ptr, st->in_raw[r], bytes, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(b->res.ptr, st->res_raw, bytes, cudaMemcpyHostToDevice));
    CU(cudaMemcpy(b->gamma.ptr, st->gamma_raw, c->hidden * st->es, cudaMemcpyHostToDevice));
    if (b->norm.base) CU(cudaMemset(b->norm.ptr, POISON, st->norm_bytes));
    if (b->rout.base) CU(cudaMemset(b->rout.ptr, POISON, bytes));
    if (b->sum.base) CU(cudaMemset(b->sum.ptr, POISON, bytes));
    CU(cudaMemset(b->sout.ptr, POISON, c->tokens * sizeof(float)));
  }
  return 0;
}

static snapcclFusedOptions options(const struct fcase* c, const struct rank_bufs* b) {
  snapcclFusedOptions o = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  o.skipResidualOut = c->variant == V_NORES;
  if (c->variant == V_SUM) o.sumOut = b->sum.ptr;
  if (c->variant == V_FP8S) o.normOut = snapcclNormOutFp8Static, o.scale = (const float*)(void*)b->scale.ptr;
  if (c->variant == V_FP8D) o.normOut = snapcclNormOutFp8Dynamic, o.scaleOut = (float*)(void*)b->sout.ptr;
  return o;
}

static void* norm_ptr(const struct rank_bufs* b) { return b->norm.base ? b->norm.ptr : b->in.ptr; }
static void* rout_ptr(const struct fcase* c, const struct rank_bufs* b) {
  if (c->variant == V_NORES) return NULL;
  return b->rout.base ? b->rout.ptr : b->res.ptr;
}

static ncclResult_t call(struct t_world* w, const struct fcase* c, struct state* st, int r) {
  const struct rank_bufs* b = &st->b[r];
  snapcclFusedOptions o = options(c, b);
  return snapcclAllReduceResidualRMSNormEx(b->in.ptr, c->no_residual ? NULL : b->res.ptr,
                                           c->no_gamma ? NULL : b->gamma.ptr, norm_ptr(b),
                                           rout_ptr(c, b), c->tokens, c->hidden, 1e-5f, c->dt,
                                           w->comm[r], w->stream[r], &o);
}

/* ---- verification ---- */

static int download(const struct region* g, void** out, char* err) {
  *out = malloc(g->bytes ? g->bytes : 1);
  if (!*out) return t_fail(err, "out of memory");
  CU(cudaMemcpy(*out, g->ptr, g->bytes, cudaMemcpyDeviceToHost));
  return 0;
}

static double e4m3_at(const void* p, size_t i) { return t_e4m3_dec(((const uint8_t*)p)[i]); }

/* One rank's outputs against the reference, conditioned on the device's own upstream
 * outputs where it wrote them (see fused_ref.h). first: rank 0's raw outputs, for the
 * bitwise comparison (NULL on rank 0). */
static int verify_rank(struct t_world* w, const struct fcase* c, struct state* st, int r,
                       void* const* first, void** mine, char* err) {
  struct rank_bufs* b = &st->b[r];
  CU(cudaSetDevice(w->dev[r]));
  const int fp8 = c->variant == V_FP8S || c->variant == V_FP8D, fmt = st->fmt, n = st->n;
  const size_t H = c->hidden, bytes = st->elems * st->es;
  const int has_rout = c->variant != V_NORES, has_sum = c->variant == V_SUM;
  const struct region* rg_norm = b->norm.base ? &b->norm : &b->in;
  const struct region* rg_rout = b->rout.base ? &b->rout : &b->res;
  void *norm = NULL, *rout = NULL, *sum = NULL, *sout = NULL, *in = NULL, *res = NULL, *gam = NULL;
  int rc = -1;
  struct region view;
  view = *rg_norm;
  view.bytes = st->norm_bytes;
  if (download(&view, &norm, err) || download(rg_rout, &rout, err) ||
      (has_sum && download(&b->sum, &sum, err)) || download(&b->sout, &sout, err) ||
      download(&b->in, &in, err) || download(&b->res, &res, err) || download(&b->gamma, &gam, err))
    goto out;
  mine[0] = norm, mine[1] = rout, mine[2] = sum, mine[3] = sout;
  /* Inputs the call may not write are untouched. */
  if ((c->in_place && !fp8 ? 0 : memcmp(in, st->in_raw[r], bytes)) ||
      memcmp(gam, st->gamma_raw, H * st->es) ||
      ((c->in_place && has_rout) ? 0 : memcmp(res, st->res_raw, bytes))) {
    t_fail(err, "rank %d: an input buffer changed", r);
    goto out;
  }
  /* Poison left untouched where nothing is written. */
  if (!has_rout && b->rout.base) {
    for (size_t i = 0; i < bytes; i++)
      if (((unsigned char*)rout)[i] != POISON) {
        t_fail(err, "rank %d: residual_out written though skipped (byte %zu)", r, i);
        goto out;
      }
  }
  if (c->variant != V_FP8D)
    for (size_t i = 0; i < c->tokens * sizeof(float); i++)
      if (((unsigned char*)sout)[i] != POISON) {
        t_fail(err, "rank %d: scaleOut written without dynamic fp8 (byte %zu)", r, i);
        goto out;
      }
  double* sum_ref = malloc(H * sizeof(double));
  double* res_dev = malloc(H * sizeof(double));
  double* slack = malloc(H * sizeof(double)); /* residual's possible deviation, absolute */
  double* v = malloc(H * sizeof(double));
  if (!sum_ref || !res_dev || !slack || !v) {
    free(sum_ref), free(res_dev), free(slack), free(v);
    t_fail(err, "out of memory");
    goto out;
  }
  rc = 0;
  for (size_t t = 0; t < c->tokens && rc == 0; t++) {
    const size_t o = t * H;
    for (size_t i = 0; i < H && rc == 0; i++) {
      const double s = st->sum_exact[o + i], a = st->sum_mag[o + i];
      sum_ref[i] = fref_round(fmt, s);
      /* fp32 accumulation, then one rounding (where an fp32 sum rounds twice). */
      const double sum_tol = fref_acc_bound(n, a) + fref_ulp(fmt, fref_abs(s) + fref_acc_bound(n, a));
      double s_dev = sum_ref[i];
      if (has_sum) {
        s_dev = t_get(c->dt, sum, o + i);
        if (!(fref_abs(s_dev - sum_ref[i]) <= sum_tol))
          rc = t_fail(err, "rank %d: sum[%zu][%zu] = %.9g, reference %.9g", r, t, i, s_dev, sum_ref[i]);
      }
      const double rin = c->no_residual ? 0.0 : st->res[o + i];
      /* Conditioned on the device's sum when we have it; else the sum's slack too. */
      const double res_ref = fref_round(fmt, s_dev + rin);
      const double res_tol = fref_tol_res(fmt) * fref_ulp(fmt, res_ref) +
                             (has_sum ? 0 : sum_tol + fref_ulp(fmt, fref_abs(res_ref) + sum_tol));
      if (has_rout) {
        res_dev[i] = t_get(c->dt, rout, o + i);
        slack[i] = 0; /* the norm is checked against the device's own residual */
        if (rc == 0 && !(fref_abs(res_dev[i] - res_ref) <= res_tol))
          rc = t_fail(err, "rank %d: residual_out[%zu][%zu] = %.9g, reference %.9g", r, t, i, res_dev[i],
                    res_ref);
      } else {
        res_dev[i] = res_ref;
        slack[i] = res_tol;
      }
    }
    if (rc) break;
    /* The norm from the device's residual row (or the reference's when it was skipped,
     * with the residual's slack carried through: v_i moves by slack_i * inv * |gamma_i|
     * and by |r_i| times inv's relative move). */
    fref_norm_row(res_dev, c->no_gamma ? NULL : st->gamma, H, 1e-5, v);
    const double inv = fref_inv_rms(res_dev, H, 1e-5);
    double num = 0, den = 0, vslack_max = 0;
    for (size_t i = 0; i < H; i++) num += fref_abs(res_dev[i]) * slack[i], den += res_dev[i] * res_dev[i];
    const double rel_inv = den > 0 ? num / den : 0;
    for (size_t i = 0; i < H; i++) {
      const double g = c->no_gamma ? 1.0 : fref_abs(st->gamma[i]);
      slack[i] = (slack[i] + fref_abs(res_dev[i]) * rel_inv) * inv * g * 1.01;
      vslack_max = fref_max(vslack_max, slack[i]);
    }
    if (!fp8) {
      for (size_t i = 0; i < H && rc == 0; i++) {
        const double got = t_get(c->dt, norm, o + i), want = fref_round(fmt, v[i]);
        const double tol = fref_tol_norm(fmt) * fref_ulp(fmt, want) +
                           (slack[i] > 0 ? slack[i] + fref_ulp(fmt, fref_abs(want) + slack[i]) : 0);
        if (!(fref_abs(got - want) <= tol))
          rc = t_fail(err, "rank %d: norm_out[%zu][%zu] = %.9g, reference %.9g (%.9g before rounding)",
                    r, t, i, got, want, v[i]);
      }
      continue;
    }
    double scale = STATIC_SCALE;
    if (c->variant == V_FP8D) {
      float sf;
      memcpy(&sf, (char*)sout + t * sizeof(float), sizeof sf);
      const double want = fref_dynamic_scale(v, H);
      if (!(fref_abs((double)sf - want) <= FREF_SCALE_RTOL * want + vslack_max / FREF_E4M3_MAX)) {
        rc = t_fail(err, "rank %d: scaleOut[%zu] = %.9g, reference %.9g", r, t, (double)sf, want);
        break;
      }
      scale = sf; /* the quantised values are checked against the device's own scale */
    }
    for (size_t i = 0; i < H && rc == 0; i++) {
      const double got = e4m3_at(norm, o + i), want = fref_quant(v[i], scale);
      const double sl = slack[i] / scale;
      const double tol = fref_tol_fp8() * fref_ulp(FREF_E4M3, want) +
                         (sl > 0 ? sl + fref_ulp(FREF_E4M3, fref_abs(want) + sl) : 0);
      if (!(fref_abs(got - want) <= tol))
        rc = t_fail(err, "rank %d: fp8 norm_out[%zu][%zu] = %.9g, reference %.9g (%.9g / %.9g)", r, t,
                  i, got, want, v[i], scale);
    }
  }
  free(sum_ref), free(res_dev), free(slack), free(v);
  if (rc) goto out;
  /* Bitwise identity with rank 0 (same residual and gamma everywhere). */
  if (first) {
    const char* names[] = {"norm_out", "residual_out", "sumOut", "scaleOut"};
    const size_t sizes[] = {st->norm_bytes, has_rout ? bytes : 0, has_sum ? bytes : 0,
                            c->variant == V_FP8D ? c->tokens * sizeof(float) : 0};
    for (int k = 0; k < 4; k++)
      if (sizes[k] && memcmp(first[k], mine[k], sizes[k])) {
        rc = t_fail(err, "rank %d's %s differs from rank 0's", r, names[k]);
        goto out;
      }
  }
  /* Guards of every region. */
  struct region* g[] = {&b->in, &b->res, &b->gamma, &b->norm, &b->rout, &b->sum, &b->sout};
  const char* gn[] = {"input", "residual_in", "gamma", "norm_out", "residual_out", "sumOut", "scaleOut"};
  for (size_t k = 0; k < NELEMS(g); k++)
    if (g[k]->base && region_guards(g[k], gn[k], r, err)) {
      rc = -1;
      goto out;
    }
  free(in), free(res), free(gam);
  return 0;
out:
  free(norm), free(rout), free(sum), free(sout), free(in), free(res), free(gam);
  mine[0] = mine[1] = mine[2] = mine[3] = NULL;
  return rc ? rc : -1;
}

static int verify(struct t_world* w, const struct fcase* c, struct state* st, char* err) {
  if (!st->sum_exact) st->sum_exact = malloc(st->elems * sizeof(double));
  if (!st->sum_mag) st->sum_mag = malloc(st->elems * sizeof(double));
  if (!st->sum_exact || !st->sum_mag) return t_fail(err, "out of memory");
  for (size_t i = 0; i < st->elems; i++) {
    double s = 0, a = 0;
    for (int q = 0; q < st->n; q++) s += st->in[q][i], a += fref_abs(st->in[q][i]);
    st->sum_exact[i] = s, st->sum_mag[i] = a;
  }
  void* first[4] = {0};
  void* mine[4] = {0};
  int rc = 0;
  for (int r = 0; r < st->n && rc == 0; r++) {
    rc = verify_rank(w, c, st, r, r ? first : NULL, mine, err);
    if (r == 0) memcpy(first, mine, sizeof first);
    else
      for (int k = 0; k < 4; k++) free(mine[k]);
  }
  for (int k = 0; k < 4; k++) free(first[k]);
  return rc;
}

/* ---- one case ---- */

static int set_fused_algo(const char* algo) {
  char want[64];
  if (algo) snprintf(want, sizeof want, "fused:%s", algo);
  t_env_set("SNAPCCL_ALGO", algo ? want : NULL);
  return 0;
}

/* The library's own answer to whether the forced algorithm runs the call. */
static int expected_to_run(struct t_world* w, const struct fcase* c, struct state* st, char* err) {
  const char* name = NULL;
  snapcclFusedOptions o = options(c, &st->b[0]);
  ncclResult_t q = snapcclQueryFusedAlgorithm(w->comm[0], c->tokens, c->hidden, c->dt, &o, &name);
  if (q == ncclSuccess && c->algo && strcmp(name, c->algo))
    return t_fail(err, "query names %s though SNAPCCL_ALGO forces %s", name, c->algo), -1;
  if (q != ncclSuccess && q != ncclInvalidUsage)
    return t_fail(err, "snapcclQueryFusedAlgorithm: %s (%s)", ncclGetErrorString(q), ncclGetLastError(NULL)), -1;
  return q == ncclSuccess;
}

static int run_case(struct t_world* w, const struct fcase* c, char* err) {
  char what[256], inner[T_ERRLEN];
  struct state st;
  int rc = -1;
  if (state_init(w, c, &st, inner) || upload(w, c, &st, c->seed, inner)) goto done;
  set_fused_algo(c->algo);
  int runs = expected_to_run(w, c, &st, inner);
  if (runs < 0) goto done;
  if (!runs) {
    /* Forced and impossible: every rank's call fails the same way, nothing launched. */
    for (int r = 0; r < w->n; r++) {
      ncclResult_t res = call(w, c, &st, r);
      if (res != ncclInvalidUsage || !strstr(ncclGetLastError(NULL), "SNAPCCL_ALGO")) {
        t_fail(inner, "rank %d: expected ncclInvalidUsage naming SNAPCCL_ALGO, got %s (%s)", r,
             ncclGetErrorString(res), ncclGetLastError(NULL));
        goto done;
      }
    }
    rc = 0;
    goto done;
  }
  if (!c->graph) {
    for (int r = 0; r < w->n; r++) {
      CU(cudaSetDevice(w->dev[r]));
      ncclResult_t res = call(w, c, &st, r);
      if (res != ncclSuccess) {
        t_fail(inner, "rank %d: %s (%s)", r, ncclGetErrorString(res), ncclGetLastError(NULL));
        goto done;
      }
    }
    if (t_world_sync(w, t_wait_bound_s(), inner) || verify(w, c, &st, inner)) goto done;
    rc = 0;
    goto done;
  }
  /* Graph: capture every rank's call, then replay twice with fresh inputs. */
  for (int r = 0; r < w->n; r++) {
    cudaGraph_t g = NULL;
    CU(cudaSetDevice(w->dev[r]));
    CU(cudaStreamBeginCapture(w->stream[r], cudaStreamCaptureModeThreadLocal));
    ncclResult_t res = call(w, c, &st, r);
    cudaError_t e = cudaStreamEndCapture(w->stream[r], &g);
    if (res != ncclSuccess || e != cudaSuccess) {
      if (g) cudaGraphDestroy(g);
      t_fail(inner, "rank %d: capture: %s (%s), %s", r, ncclGetErrorString(res), ncclGetLastError(NULL),
           cudaGetErrorString(e));
      goto done;
    }
    e = cudaGraphInstantiate(&st.exec[r], g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
      t_fail(inner, "rank %d: cudaGraphInstantiate: %s", r, cudaGetErrorString(e));
      goto done;
    }
  }
  for (int rep = 0; rep < 2; rep++) {
    if (rep && upload(w, c, &st, t_mix(c->seed + 77), inner)) goto done;
    for (int r = 0; r < w->n; r++) {
      CU(cudaSetDevice(w->dev[r]));
      CU(cudaGraphLaunch(st.exec[r], w->stream[r]));
    }
    if (t_world_sync(w, t_wait_bound_s(), inner) || verify(w, c, &st, inner)) goto done;
  }
  rc = 0;
done:
  if (rc) t_fail(err, "%s: %s", fcase_str(c, w->n, what, sizeof what), inner);
  state_free(w, &st);
  set_fused_algo(NULL);
  return rc;
}

/* A world, and one small eager fused call on it: the process's first fused call loads
 * the kernels, which must not happen inside a stream capture. */
static void open_world(struct t_world* w, int n) {
  char err[T_ERRLEN];
  t_env_defaults();
  T_OK(t_world_init(w, n, err), err);
  struct fcase warm = fc(ncclBfloat16, V_PLAIN, 1, 8, NULL);
  T_OK(run_case(w, &warm, err), err);
}

static void close_world(struct t_world* w) {
  char err[T_ERRLEN];
  T_OK(t_world_free(w, err), err);
}

#define RUN(w, c)                                                                           \
  do {                                                                                      \
    char err_[T_ERRLEN];                                                                    \
    struct fcase c_ = (c);                                                                  \
    T_OK(run_case((w), &c_, err_), err_);                                                   \
  } while (0)

/* ---- the matrix ---- */

static void matrix(int n) {
  T_REQUIRE_GPU();
  struct t_world w;
  open_world(&w, n);
  int i = 0;
  for (size_t ti = 0; ti < NELEMS(tokens_list); ti++)
    for (size_t hi = 0; hi < NELEMS(hidden_list); hi++, i++) {
      struct fcase c = fc(dtypes[(i + n) % 3], (i + 2 * n) % V_COUNT, tokens_list[ti], hidden_list[hi],
                          algos[(i + n / 2) % NELEMS(algos)]);
      c.in_place = (i + n) % 4 == 1;
      c.graph = (i + n) % 5 == 2 && c.tokens * c.hidden <= 64 * 8200;
      c.offset = (i % 3 == 2) ? (int)t_dt_size(c.dt) * (1 + i % 3) : 0;
      c.no_residual = (i + n) % 11 == 3;
      c.no_gamma = (i + n) % 13 == 5;
      RUN(&w, c);
    }
  for (int d = 0; d < 3; d++)
    for (int v = 0; v < V_COUNT; v++) {
      struct fcase c = fc(dtypes[d], v, 3, 4096, (d + v) % 2 ? "oneshot" : NULL);
      c.in_place = v == V_PLAIN && d == 1;
      c.graph = (d + v + n) % 4 == 0;
      RUN(&w, c);
      c = fc(dtypes[d], v, 64, 8200, (d + v) % 2 ? "twoshot" : "unfused");
      c.in_place = v == V_SUM;
      c.offset = (v == V_FP8D) ? (int)t_dt_size(c.dt) : 0;
      c.graph = (d + v + n) % 4 == 1;
      RUN(&w, c);
    }
  close_world(&w);
}

Test(fused, ws2, .timeout = 600) { matrix(2); }
Test(fused, ws3, .timeout = 600) { matrix(3); }
Test(fused, ws4, .timeout = 600) { matrix(4); }
Test(fused, ws8, .timeout = 600) { matrix(8); }

/* One rank: the separate kernel alone ("local"), and forcing the others still works. */
Test(fused, ws1, .timeout = 300) {
  T_REQUIRE_GPU();
  struct t_world w;
  open_world(&w, 1);
  for (int v = 0; v < V_COUNT; v++) {
    RUN(&w, fc(ncclBfloat16, v, 64, 4096, NULL));
    RUN(&w, fc(ncclFloat32, v, 3, 8200, "oneshot"));
  }
  close_world(&w);
}

/* The same inputs through every algorithm: bitwise-identical outputs (one row code, one
 * reduction order), up to the sign of zero (Lamport turns input -0 into +0). */
static int compare_algos(struct t_world* w, ncclDataType_t dt, int variant, size_t T, size_t H, char* err) {
  static const char* const names[] = {"oneshot", "twoshot", "unfused"};
  void* out[3][2] = {{0}};
  size_t nbytes[2] = {0};
  int have[3] = {0}, rc = 0;
  uint64_t seed = next_seed();
  for (int a = 0; a < 3 && rc == 0; a++) {
    struct fcase c = fc(dt, variant, T, H, names[a]);
    struct state st;
    if (state_init(w, &c, &st, err) || upload(w, &c, &st, seed, err)) {
      state_free(w, &st);
      return -1;
    }
    set_fused_algo(names[a]);
    int runs = expected_to_run(w, &c, &st, err);
    if (runs > 0) {
      for (int r = 0; r < w->n && rc == 0; r++)
        if (call(w, &c, &st, r) != ncclSuccess) rc = t_fail(err, "%s: %s", names[a], ncclGetLastError(NULL));
      if (rc == 0) rc = t_world_sync(w, t_wait_bound_s(), err);
      if (rc == 0) {
        nbytes[0] = st.norm_bytes;
        nbytes[1] = variant == V_NORES ? 0 : st.elems * st.es;
        struct region rv = st.b[0].rout.base ? st.b[0].rout : st.b[0].res;
        struct region nv = st.b[0].norm;
        nv.bytes = st.norm_bytes;
        rc = download(&nv, &out[a][0], err) || download(&rv, &out[a][1], err) ? -1 : 0;
        have[a] = rc == 0;
      }
    } else if (runs < 0) {
      rc = -1;
    }
    state_free(w, &st);
  }
  set_fused_algo(NULL);
  for (int a = 1; a < 3 && rc == 0; a++)
    for (int k = 0; k < 2 && rc == 0 && have[0] && have[a]; k++) {
      const unsigned char *x = out[0][k], *y = out[a][k];
      const size_t es = k == 0 && (variant == V_FP8S || variant == V_FP8D) ? 1 : t_dt_size(dt);
      for (size_t i = 0; i < nbytes[k] / es && rc == 0; i++)
        if (memcmp(x + i * es, y + i * es, es)) {
          double p = es == 1 ? t_e4m3_dec(x[i]) : t_get(dt, x, i), q = es == 1 ? t_e4m3_dec(y[i]) : t_get(dt, y, i);
          if (!(p == 0 && q == 0))
            rc = t_fail(err, "%s and %s differ at %s element %zu: %.9g vs %.9g", names[0], names[a],
                      k ? "residual_out" : "norm_out", i, p, q);
        }
    }
  for (int a = 0; a < 3; a++) free(out[a][0]), free(out[a][1]);
  return rc;
}

Test(fused, algorithms_agree_bitwise, .timeout = 300) {
  T_REQUIRE_GPU();
  char err[T_ERRLEN];
  struct t_world w;
  for (int n = 2; n <= 4; n += 2) {
    open_world(&w, n);
    T_OK(compare_algos(&w, ncclBfloat16, V_PLAIN, 16, 4096, err), err);
    T_OK(compare_algos(&w, ncclFloat16, V_FP8D, 7, 8200, err), err);
    T_OK(compare_algos(&w, ncclFloat32, V_FP8S, 5, 1000, err), err);
    T_OK(compare_algos(&w, ncclBfloat16, V_NORES, 3, 16384, err), err);
    close_world(&w);
  }
}

/* Rows larger than the row cache (fp32 x 20000 = 80000 B): the two-shot and the separate
 * kernel read the residual back instead, in place too. */
Test(fused, uncached_rows, .timeout = 300) {
  T_REQUIRE_GPU();
  struct t_world w;
  open_world(&w, 2);
  for (int v = 0; v < V_COUNT; v++) {
    struct fcase c = fc(ncclFloat32, v, 5, 20000, v % 2 ? "twoshot" : "unfused");
    c.in_place = v == V_FP8S || v == V_PLAIN;
    RUN(&w, c);
    RUN(&w, fc(ncclBfloat16, v, 2, 40000 + 3, NULL)); /* 80006 B, odd size */
  }
  close_world(&w);
}

/* Fused calls interleaved with the collectives on one communicator, nothing waited for
 * in between: they share the epoch, the per-block round counters, the flags and the
 * Lamport buffers (docs/ARCHITECTURE.md). Every result is checked at the end. */
Test(fused, interleaved_with_collectives, .timeout = 300) {
  T_REQUIRE_GPU();
  enum { ROUNDS = 12 };
  static const char* const fused_algos[] = {"oneshot", "twoshot", "unfused", NULL};
  static const char* const ar_algos[] = {"lamport", "twoshot", "oneshot", NULL};
  char err[T_ERRLEN], what[256];
  for (int n = 2; n <= 3; n++) {
    struct t_world w;
    open_world(&w, n);
    struct fcase fcs[ROUNDS];
    struct state fst[ROUNDS];
    struct t_case acs[ROUNDS];
    struct t_bufs ab[ROUNDS];
    struct t_host* ah[ROUNDS];
    int issued[ROUNDS];
    for (int k = 0; k < ROUNDS; k++) {
      /* One-shot cases get few tokens: it must run every fused call here. */
      fcs[k] = fc(dtypes[k % 3], k % V_COUNT, (size_t)(k % 2 || k % 4 == 0 ? 3 : 200),
                  k % 3 ? 4096 : 8200, fused_algos[k % 4]);
      T_OK(state_init(&w, &fcs[k], &fst[k], err), err);
      T_OK(upload(&w, &fcs[k], &fst[k], fcs[k].seed, err), err);
      acs[k] = t_case_make(T_AR, ncclFloat32, T_SUM, k % 2 ? 1000 : 70000, 0, ar_algos[k % 4], next_seed());
      T_OK(t_bufs_alloc(&w, &ab[k], t_case_send_bytes(&acs[k], n), t_case_recv_bytes(&acs[k], n), err), err);
      T_OK(t_case_prepare(&w, &acs[k], &ab[k], &ah[k], err), err);
    }
    for (int k = 0; k < ROUNDS; k++) {
      set_fused_algo(fcs[k].algo);
      int runs = expected_to_run(&w, &fcs[k], &fst[k], err);
      cr_assert(runs > 0, "%s: %s", fcase_str(&fcs[k], n, what, sizeof what), err);
      for (int r = 0; r < n; r++)
        cr_assert_eq(call(&w, &fcs[k], &fst[k], r), ncclSuccess, "%s", ncclGetLastError(NULL));
      set_fused_algo(NULL);
      T_OK(t_case_issue(&w, &acs[k], &ab[k], ah[k], &issued[k], err), err);
    }
    T_OK(t_world_sync(&w, t_wait_bound_s() + 30, err), err);
    for (int k = 0; k < ROUNDS; k++) {
      cr_assert(verify(&w, &fcs[k], &fst[k], err) == 0, "%s: %s", fcase_str(&fcs[k], n, what, sizeof what), err);
      T_OK(t_case_verify(&w, &acs[k], &ab[k], ah[k], issued[k], err), err);
      state_free(&w, &fst[k]);
      t_host_free(&w, ah[k]);
      t_bufs_free(&w, &ab[k]);
    }
    close_world(&w);
  }
}

/* snapcclResidualRMSNorm on its own (no communicator), cached and uncached rows. */
Test(fused, separate_kernel, .timeout = 300) {
  T_REQUIRE_GPU();
  char err[T_ERRLEN];
  struct t_world w;
  open_world(&w, 1); /* for the buffers' device and stream */
  static const size_t hs[] = {8, 4099, 16384, 30000};
  for (size_t k = 0; k < NELEMS(hs); k++)
    for (int d = 0; d < 3; d++) {
      struct fcase c = fc(dtypes[d], (int)(k + (size_t)d) % V_COUNT, 17, hs[k], NULL);
      if (c.variant == V_SUM) c.variant = V_PLAIN; /* no sum output here */
      c.in_place = d == 2;
      struct state st;
      T_OK(state_init(&w, &c, &st, err), err);
      T_OK(upload(&w, &c, &st, c.seed, err), err);
      /* With one rank the "sum" is the input itself. */
      struct rank_bufs* b = &st.b[0];
      snapcclFusedOptions o = options(&c, b);
      cr_assert_eq(snapcclResidualRMSNorm(b->in.ptr, b->res.ptr, b->gamma.ptr, norm_ptr(b), rout_ptr(&c, b),
                                          c.tokens, c.hidden, 1e-5f, c.dt, w.stream[0], &o),
                   ncclSuccess, "%s", ncclGetLastError(NULL));
      T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
      T_OK(verify(&w, &c, &st, err), err);
      state_free(&w, &st);
    }
  close_world(&w);
}

/* ---- host only: the reference's rounding agrees with the suite's encoders ---- */

Test(fused_host, reference_rounding) {
  for (uint32_t i = 0; i < 65536; i++) {
    double h = t_half_dec((uint16_t)i), b = t_bf16_dec((uint16_t)i);
    if (!isnan(h)) cr_assert_eq(fref_round(FREF_F16, h), h, "half 0x%04x", i);
    if (!isnan(b)) cr_assert_eq(fref_round(FREF_BF16, b), b, "bf16 0x%04x", i);
  }
  for (uint32_t i = 0; i < 256; i++) {
    double a = t_e4m3_dec((uint8_t)i);
    if (!isnan(a)) cr_assert_eq(fref_round(FREF_E4M3, a), a, "e4m3 0x%02x", i);
  }
  uint64_t s = 99;
  for (int i = 0; i < 200000; i++) {
    double x = ldexp((double)(t_rand(&s) >> 11) / 9007199254740992.0 - 0.5, (int)(t_rand(&s) % 40) - 20);
    cr_assert_eq(fref_round(FREF_F16, x), t_half_dec(t_half_enc(x)), "half %.17g", x);
    cr_assert_eq(fref_round(FREF_BF16, x), t_bf16_dec(t_bf16_enc(x)), "bf16 %.17g", x);
    cr_assert_eq(fref_round(FREF_F32, x), (double)(float)x, "float %.17g", x);
    double y = fabs(x) > 448 ? copysign(448, x) : x; /* the suite's encoder gives NaN beyond */
    cr_assert_eq(fref_round(FREF_E4M3, y), t_e4m3_dec(t_e4m3_enc(y)), "e4m3 %.17g", y);
    cr_assert(fabs(fref_sqrt(fabs(x)) - sqrt(fabs(x))) <= ldexp(sqrt(fabs(x)), -52), "sqrt %.17g", fabs(x));
  }
}
