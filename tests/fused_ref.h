/* fp64 reference of the fused all-reduce + residual add + RMSNorm (docs/FUSED.md), used by
 * tests/unit/test_fused.c (which also tests the reference itself) and tests/gpu/test_fused.c.
 * Header-only (static functions): both suites include it without a shared library.
 *
 * The math, with dtype rounding where the library's tensors round:
 *   sum = dtype(sum over ranks of input)               (the all-reduce's output)
 *   res = dtype(sum + residual_in)                     (residual_out)
 *   inv = 1 / sqrt(mean(res^2) + eps)
 *   v   = res * inv * gamma                            (fp64 here, fp32 on the GPU)
 *   norm_out = dtype(v), or e4m3(v / scale) with scale static, or per row
 *   max(amax(v) / 448, 1 / (448 * 512)) written to scaleOut.
 * Checks are conditioned: each stage is compared with the reference computed from the
 * previous stage's *device* output (res from the device's sum, norm from its res), so
 * tolerances are a few ulps of the output format whatever happened upstream. */
#ifndef SNAPCCL_TESTS_FUSED_REF_H
#define SNAPCCL_TESTS_FUSED_REF_H

#include <math.h> /* isnan, isinf, NAN, INFINITY: macros, no libm */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nccl.h"

enum fref_fmt { FREF_F32 = 0, FREF_F16 = 1, FREF_BF16 = 2, FREF_E4M3 = 3 };

/* Significand bits (with the implicit one), exponent (floor(log2)) of the smallest
 * normal, and the largest finite value of each format. */
static const struct {
  int p, emin;
  double max;
  int satfinite; /* e4m3 as the kernels convert: saturate, no infinities */
} fref_fmts[4] = {
    [FREF_F32] = {24, -126, 3.4028234663852886e38, 0},
    [FREF_F16] = {11, -14, 65504.0, 0},
    [FREF_BF16] = {8, -126, 3.3895313892515355e38, 0},
    [FREF_E4M3] = {4, -6, 448.0, 1},
};

/* The few libm functions the reference needs, written out: the unit suite links no libm
 * (the GPU suite does, and gets the same results from these). */
static inline double fref_abs(double x) { return x < 0 ? -x : x; }
static inline double fref_max(double a, double b) { return a > b ? a : b; }
static inline double fref_copysign(double m, double s) { return s < 0 || (s == 0 && 1 / s < 0) ? -fref_abs(m) : fref_abs(m); }
/* 2^k for k in [-1074, 1023]. */
static inline double fref_pow2(int k) {
  uint64_t b = k >= -1022 ? (uint64_t)(k + 1023) << 52 : 1ull << (k + 1074);
  double d;
  memcpy(&d, &b, sizeof d);
  return d;
}
/* floor(log2(|x|)) of a finite x != 0. */
static inline int fref_ilogb(double x) {
  uint64_t b;
  memcpy(&b, &x, sizeof b);
  int e = (int)((b >> 52) & 0x7ff);
  if (e == 0) return 63 - __builtin_clzll(b & ((1ull << 52) - 1)) - 1074; /* subnormal */
  return e - 1023;
}
/* To the nearest integer, ties to even (the default rounding of the addition). */
static inline double fref_rint(double x) {
  const double two52 = 4503599627370496.0;
  double a = fref_abs(x);
  if (!(a < two52)) return x;
  volatile double t = a + two52;
  double r = t - two52;
  return x < 0 ? -r : r;
}
/* Newton's iteration from a power of two: within an ulp of fp64, far below any
 * tolerance here. */
static inline double fref_sqrt(double x) {
  if (isnan(x) || x < 0) return NAN;
  if (x == 0 || isinf(x)) return x;
  double y = fref_pow2(fref_ilogb(x) / 2);
  for (int i = 0; i < 64; i++) {
    double n = 0.5 * (y + x / y);
    if (n == y) break;
    y = n;
  }
  return y;
}

static inline int fref_fmt_of(ncclDataType_t dt) {
  return dt == ncclFloat16 ? FREF_F16 : dt == ncclBfloat16 ? FREF_BF16 : FREF_F32;
}

/* Spacing of the format's values at |x| (its smallest spacing below the normals). */
static inline double fref_ulp(int fmt, double x) {
  int e = x == 0 || isinf(x) || isnan(x) ? fref_fmts[fmt].emin : fref_ilogb(x);
  if (e < fref_fmts[fmt].emin) e = fref_fmts[fmt].emin;
  return fref_pow2(e - (fref_fmts[fmt].p - 1));
}

/* x rounded to the format, to nearest, ties to even; beyond the largest value:
 * infinity, or the largest value for e4m3 (satfinite). */
static inline double fref_round(int fmt, double x) {
  if (isnan(x)) return x;
  if (isinf(x)) return fref_fmts[fmt].satfinite ? fref_copysign(fref_fmts[fmt].max, x) : x;
  const double u = fref_ulp(fmt, x);
  double r = fref_rint(x / u) * u;
  if (fref_abs(r) > fref_fmts[fmt].max)
    r = fref_fmts[fmt].satfinite ? fref_copysign(fref_fmts[fmt].max, r) : fref_copysign(INFINITY, r);
  return r;
}

/* 1 / sqrt(mean(r^2) + eps) of one row. */
static inline double fref_inv_rms(const double* r, size_t hidden, double eps) {
  double s = 0;
  for (size_t i = 0; i < hidden; i++) s += r[i] * r[i];
  return 1.0 / fref_sqrt(s / (double)hidden + eps);
}

/* v = r * inv * gamma for one row (gamma NULL: ones). */
static inline void fref_norm_row(const double* r, const double* gamma, size_t hidden, double eps,
                                 double* v) {
  const double inv = fref_inv_rms(r, hidden, eps);
  for (size_t i = 0; i < hidden; i++) v[i] = r[i] * inv * (gamma ? gamma[i] : 1.0);
}

#define FREF_E4M3_MAX 448.0
#define FREF_MIN_SCALE (1.0 / (448.0 * 512.0))

static inline double fref_dynamic_scale(const double* v, size_t hidden) {
  double m = 0;
  for (size_t i = 0; i < hidden; i++) m = fref_max(m, fref_abs(v[i]));
  return fref_max(m / FREF_E4M3_MAX, FREF_MIN_SCALE);
}

static inline double fref_quant(double v, double scale) { return fref_round(FREF_E4M3, v / scale); }

/* The whole computation from scratch for one row t of every output (fmt: the dtype's
 * format). in[r] is rank r's input (rows of hidden), residual and gamma may be NULL;
 * quant: 0 none, 1 static (scale), 2 dynamic. Outputs per row: sum, res, and norm (the
 * dtype-rounded norm, or the fp8 value), *row_scale for dynamic. `v` is scratch of
 * hidden doubles. */
static inline void fref_row(int fmt, int nranks, const double* const* in, const double* residual,
                            const double* gamma, size_t hidden, size_t t, double eps, int quant,
                            double scale, double* sum, double* res, double* norm, double* row_scale,
                            double* v) {
  for (size_t i = 0; i < hidden; i++) {
    double s = 0;
    for (int r = 0; r < nranks; r++) s += in[r][t * hidden + i];
    sum[i] = fref_round(fmt, s);
    res[i] = fref_round(fmt, sum[i] + (residual ? residual[t * hidden + i] : 0.0));
  }
  fref_norm_row(res, gamma, hidden, eps, v);
  if (quant == 2) scale = *row_scale = fref_dynamic_scale(v, hidden);
  for (size_t i = 0; i < hidden; i++) norm[i] = quant ? fref_quant(v[i], scale) : fref_round(fmt, v[i]);
}

/* |got - want| <= ulps spacings of fmt at want (NaN never passes). */
static inline int fref_close(int fmt, double got, double want, double ulps) {
  if (isnan(got) || isnan(want)) return 0;
  if (isinf(want) || isinf(got)) return got == want;
  return fref_abs(got - want) <= ulps * fref_ulp(fmt, want);
}

/* Bound of an fp32 accumulation's error over n addends whose magnitudes sum to `mag`
 * (every partial sum is at most mag; each addition rounds once, by 2^-24 relative). */
static inline double fref_acc_bound(int n, double mag) { return (n > 1 ? n - 1 : 0) * fref_pow2(-24) * mag; }

/* Tolerances, in ulps of the compared format, of the conditioned checks: the residual
 * add (exact in fp32 for 16-bit inputs, then one rounding; one fp32 rounding for fp32);
 * the norm from fp32 sums of squares over a row (relative error ~1e-6: below one 16-bit
 * ulp, tens of fp32 ulps); fp8 one step. */
static inline double fref_tol_res(int fmt) { return fmt == FREF_F32 ? 0.5 : 1.0; }
static inline double fref_tol_norm(int fmt) { return fmt == FREF_F32 ? 64.0 : 1.0; }
static inline double fref_tol_fp8(void) { return 1.0; }
/* Relative tolerance of a dynamic scale (amax of fp32 values over fp64 ones). */
#define FREF_SCALE_RTOL 1e-5

#endif
