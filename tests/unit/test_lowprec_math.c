/* The low-precision all-reduce without a GPU (docs/LOWPREC.md).
 *
 * The arithmetic (src/kernels/lowprec_math.cuh) is the same code on the CPU and the GPU;
 * here it is reached through the C wrappers of src/kernels/lowprec_ref.cu: round trips
 * of every format within bounds derived below, ties to even, saturation, zero groups,
 * non-finite elements, every group size and partial last groups, and the simulation of
 * the whole algorithm against an fp64 reference. The settings, the selection and the
 * geometry are test_lowprec_settings.c's.
 *
 * ---- Error bounds (u = 2^-24, the unit roundoff of fp32) ----
 * A group with finite absmax A and largest code Q (int8 127, int4 7; flagged groups one
 * less; fp8 448) has the scale s = fl(A / Q) and the inverse i = fl(1 / s). For an
 * element x, t = x / s and y = fl(x i) = t (1 + d), |d| <= 2u + u^2 (two roundings).
 *
 * int8 / int4: q = rne(y) (never clamped while s is normal: s >= (A / Q)(1 - u), so
 * |t| <= A / s <= Q / (1 - u) and |y| <= Q (1 + 4u) < Q + 1/2), and x^ = fl(q s). Then
 *   |x - x^| <= s |t - q| + |q s| u <= s (1/2 + |t - y|) + Q s u <= s (1/2 + 3 Q u) + O(u^2)
 * so the test allows  s / 2 + 4 Q s u.
 *
 * fp8 E4M3 (3 mantissa bits, subnormal step 2^-9): for |y| >= 2^-6 rounding moves y by at
 * most 2^-4 |y| (half an ulp, relative), below by at most 2^-10; saturation at 448 moves
 * y (<= 448 (1 + 4u)) by at most 448 * 4u. Then x^ = fl(e4m3(y) s) adds |x^| u. So
 *   |x - x^| <= s max(2^-4 |y|, 2^-10) + s |t| 2u + |x^| u + s 448 4u + O(u^2)
 * and the test allows  max(2^-4 |x|, 2^-10 s) (1 + 2^-20) + 4 |x| u + 2000 s u.
 * (For denormal scales, where 1/s overflows, x / s is divided directly: one rounding.)
 *
 * The whole algorithm (sum over N ranks): each rank's element moves by at most its bound
 * B_r, except the owner's (the rank whose slice holds the group), which enters the sum
 * as it is (B = 0); the fp32 sum of the N values adds at most (N - 1) u sum |x^_r|; the
 * result is quantised once more (bound B_f with its own scale) and rounded to the dtype
 * (half an ulp: 2^-11 relative for float16, 2^-8 for bfloat16, 2^-24 for float32, plus
 * the dtype's subnormal step). The test checks |out - sum x_r| against the sum of those
 * terms (avg: everything divided by N, plus one more rounding). */
#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/lowprec.h"
#include "nccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define U 5.9604644775390625e-08 /* 2^-24 */

static const int formats[] = {SNAPCCL_LP_FP8, SNAPCCL_LP_INT8, SNAPCCL_LP_INT4};
static const char* const format_names[] = {"off", "fp8", "int8", "int4"};
static const ncclDataType_t dtypes[] = {ncclFloat16, ncclBfloat16, ncclFloat32};

/* ---------------------------------------------------------------- helpers */

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
/* (The unit suite links no libm: these few stand in for ldexp, nextafterf and a
 * Gaussian generator.) */
static double uniform(uint64_t* s) { return (double)((*s = mix(*s)) >> 11) * 0x1.0p-53; }
static double normal(uint64_t* s) { /* Irwin-Hall: mean 0, variance 1, tails to +-6 */
  double t = 0;
  for (int i = 0; i < 12; i++) t += uniform(s);
  return t - 6.0;
}
static double pow2(int e) {
  double v = 1;
  for (; e > 0; e--) v *= 2;
  for (; e < 0; e++) v /= 2;
  return v;
}
static double ldexp_(double x, int e) { return x * pow2(e); }
static float nextf(float x, int up) { /* x finite and > 0 */
  uint32_t u;
  memcpy(&u, &x, 4);
  u += up ? 1 : -1;
  memcpy(&x, &u, 4);
  return x;
}

static float qmax(int fmt, int flagged) {
  if (fmt == SNAPCCL_LP_FP8) return 448.0f;
  if (fmt == SNAPCCL_LP_INT8) return flagged ? 126.0f : 127.0f;
  return flagged ? 6.0f : 7.0f;
}
static float word_scale(uint32_t w) {
  uint32_t b = w & 0x7fffffffu;
  float s;
  memcpy(&s, &b, 4);
  return s;
}
static int word_flagged(uint32_t w) { return (w >> 31) != 0; }

/* The bound of the header comment for one element x of a group with scale s. */
static double elem_bound(int fmt, double x, double s, int flagged) {
  if (fmt == SNAPCCL_LP_FP8) {
    double rel = fabs(x) * 0x1.0p-4, sub = s * 0x1.0p-10;
    return (rel > sub ? rel : sub) * (1 + 0x1.0p-20) + 4 * fabs(x) * U + 2000 * s * U;
  }
  return s / 2 + 4 * (double)qmax(fmt, flagged) * s * U;
}

static int is_reserved(int fmt, unsigned char c) {
  if (fmt == SNAPCCL_LP_FP8) return c == 0x7F || c == 0xFF || c == 0x80;
  if (fmt == SNAPCCL_LP_INT8) return c == 0x7F || c == 0x81 || c == 0x80;
  return c == 0x7 || c == 0x9 || c == 0x8;
}

/* Quantises x[0..n) as one group and checks every element's round trip. */
static void round_trip(int fmt, const float* x, int n, const char* what) {
  unsigned char codes[1024];
  uint32_t w = snapccl_lp_quant_group(fmt, x, n, codes);
  float amax = 0;
  int nonfinite = 0;
  for (int i = 0; i < n; i++) {
    if (!isfinite(x[i])) nonfinite = 1;
    else if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
  }
  cr_assert_eq(word_flagged(w), nonfinite, "%s %s: flag %d, non-finite %d", format_names[fmt], what,
               word_flagged(w), nonfinite);
  float s = word_scale(w);
  cr_assert_eq(s, amax / qmax(fmt, nonfinite), "%s %s: scale %a, absmax %a", format_names[fmt], what,
               s, amax);
  for (int i = 0; i < n; i++) {
    float d = snapccl_lp_decode(fmt, codes[i], w);
    if (fmt == SNAPCCL_LP_INT4) cr_assert(codes[i] < 16, "int4 code 0x%x", codes[i]);
    if (isnan(x[i])) {
      cr_assert(isnan(d), "%s %s [%d]: NaN decodes to %a", format_names[fmt], what, i, d);
      continue;
    }
    if (isinf(x[i])) {
      cr_assert(d == x[i], "%s %s [%d]: %a decodes to %a", format_names[fmt], what, i, x[i], d);
      continue;
    }
    if (nonfinite)
      cr_assert(!is_reserved(fmt, codes[i]), "%s %s [%d]: finite %a got reserved code 0x%x",
                format_names[fmt], what, i, x[i], codes[i]);
    cr_assert(isfinite(d), "%s %s [%d]: finite %a decodes to %a", format_names[fmt], what, i, x[i], d);
    double err = fabs((double)d - (double)x[i]), b = elem_bound(fmt, x[i], s, nonfinite);
    cr_assert(err <= b, "%s %s [%d]: |%a - %a| = %g > bound %g (scale %a)", format_names[fmt], what, i,
              x[i], d, err, b, s);
  }
}

/* ---------------------------------------------------------------- the arithmetic */

Test(lowprec_math, e4m3_matches_nvidia) {
  /* Decoding: every code but the two NaNs, against the format's definition. */
  for (int c = 0; c < 256; c++) {
    if ((c & 0x7F) == 0x7F) continue;
    int e = (c >> 3) & 15, m = c & 7;
    double v = e ? ldexp_(8 + m, e - 10) : ldexp_(m, -9);
    if (c & 0x80) v = -v;
    cr_assert_eq((double)snapccl_lp_e4m3_decode((unsigned char)c), v, "code 0x%02x", c);
    /* Every value encodes to itself (ours and NVIDIA's; -0 stays -0). */
    cr_assert_eq(snapccl_lp_e4m3_encode((float)v), c, "0x%02x", c);
    cr_assert_eq(snapccl_lp_e4m3_encode_nv((float)v), c, "0x%02x (NVIDIA)", c);
  }
  /* Midpoints between neighbours and one fp32 ulp either side: ties to even. */
  for (int c = 0; c < 0x7E; c++) {
    float lo = snapccl_lp_e4m3_decode((unsigned char)c), hi = snapccl_lp_e4m3_decode((unsigned char)(c + 1));
    float mid = (float)(((double)lo + (double)hi) / 2);
    float probes[3] = {mid > 0 ? nextf(mid, 0) : mid, mid, nextf(mid, 1)};
    for (int k = 0; k < 3; k++)
      for (int sg = 0; sg < 2; sg++) {
        float y = sg ? -probes[k] : probes[k];
        cr_assert_eq(snapccl_lp_e4m3_encode(y), snapccl_lp_e4m3_encode_nv(y), "%a", y);
      }
    unsigned char even = (c & 1) ? (unsigned char)(c + 1) : (unsigned char)c;
    cr_assert_eq(snapccl_lp_e4m3_encode(mid), even, "tie %a between 0x%02x and 0x%02x", mid, c, c + 1);
  }
  /* A sweep over every finite float (stride 4099 in bits) against NVIDIA's conversion. */
  for (uint64_t b = 0; b < (1ull << 32); b += 4099) {
    uint32_t u = (uint32_t)b;
    float y;
    memcpy(&y, &u, 4);
    if (!isfinite(y)) continue;
    cr_assert_eq(snapccl_lp_e4m3_encode(y), snapccl_lp_e4m3_encode_nv(y), "%a (bits 0x%08x)", y, u);
  }
  /* Saturation. */
  cr_assert_eq(snapccl_lp_e4m3_encode(448.0f), 0x7E);
  cr_assert_eq(snapccl_lp_e4m3_encode(464.0f), 0x7E, "the tie above 448 rounds to 448");
  cr_assert_eq(snapccl_lp_e4m3_encode(500.0f), 0x7E);
  cr_assert_eq(snapccl_lp_e4m3_encode(1e30f), 0x7E);
  cr_assert_eq(snapccl_lp_e4m3_encode(-3e38f), 0xFE);
}

Test(lowprec_math, round_trips_within_bounds) {
  static const int groups[] = {32, 64, 96, 128, 256, 512, 992, 1024};
  uint64_t seed = 42;
  float x[1024];
  for (size_t f = 0; f < NELEMS(formats); f++)
    for (size_t gi = 0; gi < NELEMS(groups); gi++)
      for (int rep = 0; rep < 20; rep++) {
        int n = groups[gi] - (rep % 4 == 3 ? (int)(uniform(&seed) * (groups[gi] - 1)) : 0);
        double mag = ldexp_(1.0, (int)(uniform(&seed) * 60) - 30);
        for (int i = 0; i < n; i++) {
          switch (rep % 5) {
            case 0: x[i] = (float)(normal(&seed) * mag); break;
            case 1: x[i] = (float)((uniform(&seed) * 2 - 1) * mag); break;
            case 2: x[i] = (float)(normal(&seed) / (fabs(normal(&seed)) + 0.05) * mag); break;
            case 3: x[i] = (float)(normal(&seed) * mag * (uniform(&seed) < 0.01 ? 1000 : 1)); break;
            default: x[i] = (float)((double)(i - n / 2) * mag); break;
          }
        }
        char what[64];
        snprintf(what, sizeof what, "group %d, n %d, rep %d", groups[gi], n, rep);
        round_trip(formats[f], x, n, what);
      }
}

Test(lowprec_math, ties_to_even) {
  float x[32] = {0};
  unsigned char c[32];
  /* int8: absmax 127 makes the scale exactly 1, so x / s = x. */
  float in8[] = {127, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, 1.5f, -0.5f, 126.5f, -126.5f};
  int want8[] = {127, 2, 4, -2, -4, 0, 2, 0, 126, -126};
  memcpy(x, in8, sizeof in8);
  uint32_t w = snapccl_lp_quant_group(SNAPCCL_LP_INT8, x, (int)NELEMS(in8), c);
  cr_assert_eq(word_scale(w), 1.0f);
  for (size_t i = 0; i < NELEMS(in8); i++)
    cr_assert_eq((int)(signed char)c[i], want8[i], "int8 %g -> %d", in8[i], (int)(signed char)c[i]);
  /* int4: absmax 7, scale 1. */
  float in4[] = {7, 2.5f, 3.5f, -2.5f, -3.5f, 0.5f, 1.5f, -6.5f, 6.5f, -0.5f};
  int want4[] = {7, 2, 4, -2, -4, 0, 2, -6, 6, 0};
  memset(x, 0, sizeof x);
  memcpy(x, in4, sizeof in4);
  w = snapccl_lp_quant_group(SNAPCCL_LP_INT4, x, (int)NELEMS(in4), c);
  cr_assert_eq(word_scale(w), 1.0f);
  for (size_t i = 0; i < NELEMS(in4); i++) {
    int q = (c[i] & 8) ? (int)c[i] - 16 : (int)c[i];
    cr_assert_eq(q, want4[i], "int4 %g -> %d", in4[i], q);
  }
  /* fp8: absmax 448, scale 1: ties between E4M3 neighbours go to the even mantissa. */
  float inf8[] = {448, 1.0625f, 1.1875f, 0x1.0p-10f, 0x3.0p-10f, 13.5f, -1.0625f, 232.0f, 13.0f};
  unsigned char wantf8[] = {0x7E, 0x38, 0x3A, 0x00, 0x02, 0x56, 0xB8, 0x76, 0x55};
  memset(x, 0, sizeof x);
  memcpy(x, inf8, sizeof inf8);
  w = snapccl_lp_quant_group(SNAPCCL_LP_FP8, x, (int)NELEMS(inf8), c);
  cr_assert_eq(word_scale(w), 1.0f);
  for (size_t i = 0; i < NELEMS(inf8); i++)
    cr_assert_eq(c[i], wantf8[i], "fp8 %a -> 0x%02x, want 0x%02x", inf8[i], c[i], wantf8[i]);
}

Test(lowprec_math, saturation_and_tiny_scales) {
  /* Denormal inputs: the scale is a denormal with few bits, so x / s can exceed qmax and
   * must clamp (int) or saturate (fp8); the error stays below the smallest normal. */
  float x[64];
  for (int i = 0; i < 64; i++) x[i] = (float)((i % 2 ? -1 : 1) * ldexp_(1.0 + i / 64.0, -133));
  for (size_t f = 0; f < NELEMS(formats); f++) {
    unsigned char c[64];
    uint32_t w = snapccl_lp_quant_group(formats[f], x, 64, c);
    for (int i = 0; i < 64; i++) {
      float d = snapccl_lp_decode(formats[f], c[i], w);
      cr_assert(isfinite(d) && fabs((double)d - x[i]) < 0x1.0p-126, "%s [%d]: %a -> %a",
                format_names[formats[f]], i, x[i], d);
      if (formats[f] == SNAPCCL_LP_INT8) cr_assert((signed char)c[i] >= -127, "int8 code %d", (signed char)c[i]);
      if (formats[f] == SNAPCCL_LP_INT4) cr_assert(c[i] != 8, "int4 code -8 in an unflagged group");
      if (formats[f] == SNAPCCL_LP_FP8) cr_assert((c[i] & 0x7F) <= 0x7E, "fp8 code 0x%02x", c[i]);
    }
  }
  /* A scale that underflows to 0: every element becomes 0, nothing is NaN. */
  float t[32] = {0x1.0p-149f, -0x1.0p-149f};
  for (size_t f = 0; f < NELEMS(formats); f++) {
    unsigned char c[32];
    uint32_t w = snapccl_lp_quant_group(formats[f], t, 32, c);
    cr_assert_eq(word_scale(w), 0.0f);
    for (int i = 0; i < 32; i++) cr_assert_eq(snapccl_lp_decode(formats[f], c[i], w), 0.0f);
  }
}

Test(lowprec_math, zero_groups) {
  float x[1024];
  memset(x, 0, sizeof x);
  x[5] = -0.0f;
  for (size_t f = 0; f < NELEMS(formats); f++)
    for (int n = 1; n <= 1024; n = n * 2 + 1) {
      unsigned char c[1024];
      uint32_t w = snapccl_lp_quant_group(formats[f], x, n, c);
      cr_assert_eq(w, 0u, "%s zero group of %d: word 0x%08x", format_names[formats[f]], n, w);
      for (int i = 0; i < n; i++) {
        cr_assert_eq(c[i], 0, "%s [%d]: code 0x%02x", format_names[formats[f]], i, c[i]);
        cr_assert_eq(snapccl_lp_decode(formats[f], c[i], w), 0.0f);
      }
    }
}

Test(lowprec_math, nonfinite_elements) {
  uint64_t seed = 7;
  float x[256];
  for (size_t f = 0; f < NELEMS(formats); f++)
    for (int rep = 0; rep < 40; rep++) {
      int n = rep % 2 ? 256 : 77;
      for (int i = 0; i < n; i++) x[i] = (float)(normal(&seed) * 1000);
      int k = 1 + rep % 5;
      for (int j = 0; j < k; j++) {
        int at = (int)(uniform(&seed) * n);
        x[at] = j % 3 == 0 ? INFINITY : j % 3 == 1 ? -INFINITY : NAN;
      }
      if (rep == 39) /* every element non-finite: scale 0, still exact classes */
        for (int i = 0; i < n; i++) x[i] = i % 3 == 0 ? INFINITY : i % 3 == 1 ? -INFINITY : -NAN;
      char what[64];
      snprintf(what, sizeof what, "rep %d", rep);
      round_trip(formats[f], x, n, what);
    }
}

/* ---------------------------------------------------------------- the whole algorithm */

static double dtype_ulp_rel(ncclDataType_t dt) {
  return dt == ncclFloat16 ? 0x1.0p-11 : dt == ncclBfloat16 ? 0x1.0p-8 : 0x1.0p-24;
}
static double dtype_sub(ncclDataType_t dt) {
  return dt == ncclFloat16 ? 0x1.0p-25 : dt == ncclBfloat16 ? 0x1.0p-134 : 0x1.0p-150;
}
static size_t dsize(ncclDataType_t dt) { return dt == ncclFloat32 ? 4 : 2; }

/* Quantises the group of elements [g0, g0+n) of rank r's input (as floats) and returns
 * the per-element bound of each element in b. */
static void group_bounds(int fmt, const float* x, int n, double* b, float* dec) {
  unsigned char c[1024];
  uint32_t w = snapccl_lp_quant_group(fmt, x, n, c);
  for (int i = 0; i < n; i++) {
    b[i] = elem_bound(fmt, x[i], word_scale(w), word_flagged(w));
    dec[i] = snapccl_lp_decode(fmt, c[i], w);
  }
}

static void check_simulation(int fmt, int group, ncclDataType_t dt, int nranks, int avg, size_t count,
                             uint64_t seed) {
  size_t es = dsize(dt);
  unsigned char* in[16];
  for (int r = 0; r < nranks; r++) {
    in[r] = malloc(count * es);
    for (size_t i = 0; i < count; i++) {
      double v = normal(&seed) * (i % 97 == 0 ? 50 : 1);
      snapccl_lp_store(dt, (float)v, in[r] + i * es);
    }
  }
  unsigned char* out = malloc(count * es);
  cr_assert_eq(snapccl_lp_simulate(fmt, group, dt, nranks, avg, count, (const void* const*)in, out), 0);
  /* Per group: the bound of the header comment, from the same scales, summed in the
   * algorithm's order (the owner's input first, then the others in rank order). */
  float x[1024], dec[1024], sum[1024];
  double b[1024], bound[1024], ref[1024], abssum[1024];
  const size_t slice = (size_t)snapccl_lp_slice_elems(count, nranks, group);
  for (size_t g0 = 0; g0 < count; g0 += (size_t)group) {
    int n = count - g0 < (size_t)group ? (int)(count - g0) : group;
    const int owner = (int)(g0 / slice);
    for (int i = 0; i < n; i++) bound[i] = ref[i] = abssum[i] = 0;
    for (int k = 0; k < nranks; k++) {
      const int r = k == 0 ? owner : k - 1 + (k - 1 >= owner);
      for (int i = 0; i < n; i++) x[i] = snapccl_lp_load(dt, in[r] + (g0 + i) * es);
      if (r == owner)
        for (int i = 0; i < n; i++) {
          b[i] = 0;
          dec[i] = x[i];
        }
      else
        group_bounds(fmt, x, n, b, dec);
      for (int i = 0; i < n; i++) {
        bound[i] += b[i];
        ref[i] += x[i];
        abssum[i] += fabs(dec[i]);
        sum[i] = k == 0 ? dec[i] : sum[i] + dec[i];
      }
    }
    for (int i = 0; i < n; i++) {
      bound[i] += (nranks - 1) * U * abssum[i];
      if (avg) {
        sum[i] /= (float)nranks;
        ref[i] /= nranks;
        bound[i] = bound[i] / nranks + fabs(sum[i]) * U;
      }
    }
    group_bounds(fmt, sum, n, b, dec);
    for (int i = 0; i < n; i++) {
      double o = snapccl_lp_load(dt, out + (g0 + i) * es);
      double tot = (bound[i] + b[i] + fabs(o) * dtype_ulp_rel(dt) + dtype_sub(dt)) * (1 + 1e-3);
      cr_assert(fabs(o - ref[i]) <= tot,
                "%s group %d %s N=%d%s count %zu: element %zu is %.9g, exact %.9g, bound %.3g",
                format_names[fmt], group, dt == ncclFloat16 ? "half" : dt == ncclBfloat16 ? "bf16" : "float",
                nranks, avg ? " avg" : "", count, g0 + (size_t)i, o, ref[i], tot);
    }
  }
  for (int r = 0; r < nranks; r++) free(in[r]);
  free(out);
}

Test(lowprec_math, simulation_error_bounds) {
  static const int groups[] = {32, 128, 256, 1024, 160};
  static const size_t counts[] = {1, 17, 1000, 4097};
  static const int worlds[] = {2, 3, 8};
  uint64_t seed = 99;
  for (size_t f = 0; f < NELEMS(formats); f++)
    for (size_t g = 0; g < NELEMS(groups); g++)
      for (size_t d = 0; d < NELEMS(dtypes); d++)
        for (size_t k = 0; k < NELEMS(counts); k++) {
          int n = worlds[(f + g + d + k) % NELEMS(worlds)];
          check_simulation(formats[f], groups[g], dtypes[d], n, (int)((g + k) & 1), counts[k], seed++);
        }
}

Test(lowprec_math, simulation_refuses) {
  float a = 1, o = 0;
  const void* in[1] = {&a};
  cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_OFF, 256, ncclFloat32, 1, 0, 1, in, &o), -1);
  cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT8, 100, ncclFloat32, 1, 0, 1, in, &o), -1);
  cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT8, 2048, ncclFloat32, 1, 0, 1, in, &o), -1);
  cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT8, 256, ncclInt32, 1, 0, 1, in, &o), -1);
  cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT8, 256, ncclFloat64, 1, 0, 1, in, &o), -1);
}

/* Non-finite inputs give non-finite outputs exactly where full precision would (the
 * fp64 sum of the inputs, rounded to the dtype), of the same class. */
Test(lowprec_math, simulation_nonfinite_placement) {
  const size_t count = 3000;
  uint64_t seed = 5;
  for (size_t f = 0; f < NELEMS(formats); f++)
    for (size_t d = 0; d < NELEMS(dtypes); d++)
      for (int nr = 2; nr <= 4; nr++) {
        ncclDataType_t dt = dtypes[d];
        size_t es = dsize(dt);
        unsigned char* in[4];
        for (int r = 0; r < nr; r++) {
          in[r] = malloc(count * es);
          for (size_t i = 0; i < count; i++) {
            double v = normal(&seed);
            double p = uniform(&seed);
            if (p < 0.01) v = INFINITY;
            else if (p < 0.02) v = -INFINITY;
            else if (p < 0.025) v = NAN;
            else if (p < 0.03) v = dt == ncclFloat16 ? 60000.0 : dt == ncclBfloat16 ? 3e38 : 3e38;
            snapccl_lp_store(dt, (float)v, in[r] + i * es);
          }
        }
        unsigned char* out = malloc(count * es);
        for (int avg = 0; avg < 2; avg++) {
          cr_assert_eq(snapccl_lp_simulate(formats[f], 128, dt, nr, avg, count, (const void* const*)in, out), 0);
          for (size_t i = 0; i < count; i++) {
            double ref = 0;
            int big = 0;
            for (int r = 0; r < nr; r++) {
              double x = snapccl_lp_load(dt, in[r] + i * es);
              ref += x;
              if (fabs(x) > 1e4) big = 1;
            }
            if (avg) ref /= nr;
            double o = snapccl_lp_load(dt, out + i * es);
            if (isnan(ref)) {
              cr_assert(isnan(o), "%s %zu: NaN expected, got %g", format_names[formats[f]], i, o);
            } else if (isinf(ref)) {
              cr_assert(o == ref, "%s %zu: %g expected, got %g", format_names[formats[f]], i, ref, o);
            } else if (!big) {
              cr_assert(!isnan(o) && !isinf(o), "%s %zu: finite %g expected, got %g",
                        format_names[formats[f]], i, ref, o);
            }
            /* Sums of huge finite values: the fp32 sum may overflow (float32) or the
             * dtype may (float16 60000 + 60000), as in full precision; never NaN. */
            if (big && !isnan(ref)) cr_assert(!isnan(o), "%s %zu: NaN from finite inputs", format_names[formats[f]], i);
          }
        }
        for (int r = 0; r < nr; r++) free(in[r]);
        free(out);
      }
}

/* The partition into slices never changes a group, only its owner: groups start at
 * multiples of G from the start of the buffer (the last one may be short), and a group's
 * result is that of the group alone with its owner's input first and the others after
 * it in rank order (alone, a group is rank 0's). Also checks that the owner is the
 * rank whose slice holds the group: at 3 ranks every one owns some of the 5000. */
Test(lowprec_math, groups_are_global) {
  const size_t count = 5000;
  const int N = 3;
  uint64_t seed = 11;
  float* in[3];
  for (int r = 0; r < N; r++) {
    in[r] = malloc(count * 4);
    for (size_t i = 0; i < count; i++) in[r][i] = (float)normal(&seed);
  }
  float* whole = malloc(count * 4);
  float part[1024];
  for (int G = 32; G <= 1024; G += 32) {
    cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT4, G, ncclFloat32, N, 0, count, (const void* const*)in, whole), 0);
    const size_t slice = (size_t)snapccl_lp_slice_elems(count, N, G);
    cr_assert(slice % (size_t)G == 0 && slice * (N - 1) < count && slice * N >= count, "G %d: slice %zu", G, slice);
    for (size_t g0 = 0; g0 < count; g0 += (size_t)G) {
      size_t n = count - g0 < (size_t)G ? count - g0 : (size_t)G;
      const int owner = (int)(g0 / slice);
      const void* sub[3];
      sub[0] = in[owner] + g0;
      for (int r = 0, k = 1; r < N; r++)
        if (r != owner) sub[k++] = in[r] + g0;
      cr_assert_eq(snapccl_lp_simulate(SNAPCCL_LP_INT4, G, ncclFloat32, N, 0, n, sub, part), 0);
      cr_assert(!memcmp(part, whole + g0, n * 4), "group %d at %zu (owner %d)", G, g0, owner);
    }
  }
  for (int r = 0; r < N; r++) free(in[r]);
  free(whole);
}

/* The owner's share is exact: at two ranks, a group's result is
 * quantise-once(owner's input + the other's input quantised and decoded), the sum in
 * fp32. (Quantising the owner's input too would differ wherever its decoding does.) */
Test(lowprec_math, owner_input_not_quantised) {
  const size_t count = 4097;
  const int N = 2, G = 128;
  uint64_t seed = 21;
  float *in[2], *out = malloc(count * 4);
  for (int r = 0; r < N; r++) {
    in[r] = malloc(count * 4);
    for (size_t i = 0; i < count; i++) in[r][i] = (float)normal(&seed);
  }
  const size_t slice = (size_t)snapccl_lp_slice_elems(count, N, G);
  for (size_t f = 0; f < NELEMS(formats); f++) {
    const int fmt = formats[f];
    cr_assert_eq(snapccl_lp_simulate(fmt, G, ncclFloat32, N, 0, count, (const void* const*)in, out), 0);
    size_t differs = 0;
    for (size_t g0 = 0; g0 < count; g0 += G) {
      const int n = count - g0 < (size_t)G ? (int)(count - g0) : G, owner = (int)(g0 / slice);
      const float *x = in[owner] + g0, *y = in[1 - owner] + g0;
      unsigned char c[1024];
      float sum[1024];
      uint32_t w = snapccl_lp_quant_group(fmt, y, n, c);
      for (int i = 0; i < n; i++) sum[i] = x[i] + snapccl_lp_decode(fmt, c[i], w);
      w = snapccl_lp_quant_group(fmt, sum, n, c);
      for (int i = 0; i < n; i++) {
        const float want = snapccl_lp_decode(fmt, c[i], w);
        cr_assert(out[g0 + i] == want, "%s element %zu (owner %d): %.9g, expected %.9g", format_names[fmt], g0 + i,
                  owner, out[g0 + i], want);
      }
      unsigned char cx[1024];
      const uint32_t wx = snapccl_lp_quant_group(fmt, x, n, cx);
      for (int i = 0; i < n; i++) differs += snapccl_lp_decode(fmt, cx[i], wx) != x[i];
    }
    cr_assert(differs > count / 2, "%s: the inputs survive quantisation, the test shows nothing", format_names[fmt]);
  }
  for (int r = 0; r < N; r++) free(in[r]);
  free(out);
}

Test(lowprec_math, chunk_layout) {
  static const unsigned long long chunks[] = {4096, 4112, 65536, 1u << 20, 4u << 20};
  for (size_t k = 0; k < NELEMS(chunks); k++)
    for (size_t f = 0; f < NELEMS(formats); f++)
      for (int G = 32; G <= 1024; G += 32) {
        unsigned long long P = snapccl_lp_payload_bytes(formats[f], G);
        cr_assert_eq(P % 16, 0ull);
        unsigned long long m = snapccl_lp_chunk_groups(chunks[k], P);
        cr_assert(m >= 1);
        cr_assert(snapccl_lp_scales_bytes(m) + m * P <= chunks[k]);
        cr_assert(snapccl_lp_scales_bytes(m + 1) + (m + 1) * P > chunks[k]);
        /* A chunk sized for full precision holds at least as many elements quantised. */
        cr_assert(m * (unsigned long long)G >= chunks[k] / 4 / (unsigned long long)G * (unsigned long long)G);
      }
}
