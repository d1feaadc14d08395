/* ncclAllReduce with every rank in this process (ncclCommInitAll, one stream per rank,
 * calls issued in a group): world sizes 1, 2, 3, 4, 8; every dtype x op x placement x
 * forced algorithm x count at world size 2; misaligned pointers; 100 calls back to back;
 * the 64M+1 element case; a small "sanitize" subset for compute-sanitizer (also with
 * all-gather and reduce-scatter); and the host encodings the references rely on. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char* const algos[] = {"lamport", "oneshot", "twoshot"};

static uint64_t next_seed(void) {
  static uint64_t s = 0x0a11ull << 32;
  return t_mix(++s);
}


/* ---- world size 2: the full matrix, one test per dtype ---- */

static void ws2_dtype(ncclDataType_t dt) {
  static const size_t counts[] = {0, 1, 3, 17, 1023, 4097, 65537, (1u << 20) + 3};
  T_REQUIRE_GPU();
  struct t_fixture f;
  size_t cap = counts[NELEMS(counts) - 1] * t_dt_size(dt);
  t_fixture_open(&f, 2, cap, cap);
  for (size_t a = 0; a <= NELEMS(algos); a++) {
    const char* algo = a < NELEMS(algos) ? algos[a] : NULL; /* last: the library's choice */
    for (int op = 0; op < T_NOPS; op++)
      for (size_t k = 0; k < NELEMS(counts); k++) {
        if (!algo && k % 3 != 2) continue; /* auto: a few counts are enough */
        for (int ip = 0; ip < 2; ip++) {
          struct t_case c = t_case_make(T_AR, dt, op, counts[k], ip, algo, next_seed());
          t_fixture_run(&f, &c);
        }
      }
  }
  struct t_case c = t_case_make(T_AR, dt, T_SUM, 0, 0, "twoshot", next_seed());
  c.null_bufs = 1; /* count 0 with NULL buffers: success, nothing touched */
  t_fixture_run(&f, &c);
  t_fixture_close(&f);
}

#define WS2(name, dt) \
  Test(allreduce_ws2, name, .timeout = 300) { ws2_dtype(dt); }
T_EACH_DTYPE(WS2)

/* 64M+1 elements for a few dtypes (twoshot only; the one-shot kinds must decline). */
Test(allreduce_ws2, huge, .timeout = 300) {
  const size_t count = (64u << 20) + 1;
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 2, count * 4, count * 4);
  struct t_case cases[] = {
      t_case_make(T_AR, ncclFloat32, T_SUM, count, 0, "twoshot", next_seed()),
      t_case_make(T_AR, ncclBfloat16, T_AVG, count, 1, NULL, next_seed()),
      t_case_make(T_AR, ncclUint8, T_SUM, count, 0, "twoshot", next_seed()),
      t_case_make(T_AR, ncclInt32, T_MAX, count, 1, "twoshot", next_seed()),
      t_case_make(T_AR, ncclFloat32, T_SUM, count, 0, "lamport", next_seed()),
  };
  for (size_t i = 0; i < NELEMS(cases); i++) t_fixture_run(&f, &cases[i]);
  t_fixture_close(&f);
}

/* ---- world sizes 1, 3, 4, 8 ---- */

/* One rank: the kernels, and the plain copy the library picks (and may be forced to,
 * except for a PreMulSum by a user scalar). */
Test(allreduce_ws1, all, .timeout = 300) {
  static const size_t counts[] = {0, 1, 17, 4097, 65537};
  static const char* const ws1_algos[] = {"lamport", "oneshot", "twoshot", "copy", NULL};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 1, 65537 * 8, 65537 * 8);
  for (size_t a = 0; a < NELEMS(ws1_algos); a++)
    for (int d = 0; d < 12; d++)
      for (int op = 0; op < T_NOPS; op++)
        for (size_t k = 0; k < NELEMS(counts); k++) {
          struct t_case c = t_case_make(T_AR, t_all_dtypes[d], op, counts[k], (int)(k + a) & 1,
                                        ws1_algos[a], next_seed());
          t_fixture_run(&f, &c);
        }
  t_fixture_close(&f);
}

/* Every algorithm x dtype for sum and max on a spread of counts, plus every op for two
 * dtypes at one count. */
static void wsn(int n) {
  static const size_t counts[] = {1, 17, 4097, 65537, 300007};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, 300007 * 8, 300007 * 8);
  for (size_t a = 0; a < NELEMS(algos); a++)
    for (int d = 0; d < 12; d++)
      for (int op = T_SUM; op <= T_MAX; op += T_MAX - T_SUM)
        for (size_t k = 0; k < NELEMS(counts); k++) {
          struct t_case c = t_case_make(T_AR, t_all_dtypes[d], op, counts[k], (int)(k + (size_t)op) & 1,
                                        algos[a], next_seed());
          t_fixture_run(&f, &c);
        }
  static const ncclDataType_t some[] = {ncclFloat32, ncclInt32, ncclBfloat16};
  for (size_t a = 0; a <= NELEMS(algos); a++)
    for (size_t d = 0; d < NELEMS(some); d++)
      for (int op = 0; op < T_NOPS; op++) {
        struct t_case c = t_case_make(T_AR, some[d], op, 4097, op & 1,
                                      a < NELEMS(algos) ? algos[a] : NULL, next_seed());
        t_fixture_run(&f, &c);
      }
  t_fixture_close(&f);
}
Test(allreduce_wsn, ws3, .timeout = 300) { wsn(3); }
Test(allreduce_wsn, ws4, .timeout = 300) { wsn(4); }
Test(allreduce_wsn, ws8, .timeout = 300) { wsn(8); }

/* ---- misaligned pointers: send and recv offsets 1..15, different on every rank ---- */

static void offsets(int n) {
  static const ncclDataType_t dts[] = {ncclInt8,   ncclFloat16, ncclFloat32,  ncclFloat64,
                                       ncclFloat8e5m2, ncclUint64, ncclBfloat16};
  static const size_t counts[] = {1, 3, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, 65537 * 8, 65537 * 8);
  for (int off = 1; off <= 15; off++)
    for (size_t a = 0; a < NELEMS(algos); a++)
      for (size_t k = 0; k < NELEMS(counts); k++) {
        ncclDataType_t dt = dts[((size_t)off + k + a) % NELEMS(dts)];
        if (a == 0 && !t_dt_is_float(dt)) dt = ncclFloat32; /* lamport: floats */
        struct t_case c = t_case_make(T_AR, dt, (int)((size_t)off + a + k) % T_NOPS, counts[k],
                                      (int)((size_t)off + k) & 1, algos[a], next_seed());
        t_misalign(off, n, c.send_off, c.recv_off);
        t_fixture_run(&f, &c);
      }
  t_fixture_close(&f);
}
Test(allreduce_offsets, ws2, .timeout = 300) { offsets(2); }
Test(allreduce_offsets, ws3, .timeout = 300) { offsets(3); }

/* ---- 100 calls back to back: algorithms (SNAPCCL_ALGO reloaded between calls) and
 * sizes alternate, nothing waits in between; every result is checked at the end. ---- */

static void back_to_back(int n) {
  enum { CALLS = 100 };
  static const size_t counts[] = {1, 7, 300, 4097, 20000, 65537, 131072 + 5};
  static const ncclDataType_t floats[] = {ncclFloat32, ncclBfloat16, ncclFloat16, ncclFloat64,
                                          ncclFloat8e4m3};
  static const char* const kinds[] = {"lamport", "oneshot", "twoshot", NULL};
  T_REQUIRE_GPU();
  char err[T_ERRLEN], what[600];
  struct t_world w;
  struct t_case* c = calloc(CALLS, sizeof *c);
  struct t_bufs* b = calloc(CALLS, sizeof *b);
  struct t_host** h = calloc(CALLS, sizeof *h);
  int* issued = calloc(CALLS, sizeof *issued);
  cr_assert(c && b && h && issued, "out of memory");
  t_env_defaults();
  T_OK(t_world_init(&w, n, err), err);
  for (int i = 0; i < CALLS; i++) {
    const char* algo = kinds[i % 4];
    ncclDataType_t dt = i % 4 == 0 ? floats[(i / 4) % NELEMS(floats)] : t_all_dtypes[(i * 7) % 12];
    c[i] = t_case_make(T_AR, dt, i % T_NOPS, counts[(i * 5) % NELEMS(counts)], (i / 4) & 1, algo,
                       next_seed());
    size_t sb = t_case_send_bytes(&c[i], n), rb = t_case_recv_bytes(&c[i], n);
    T_OK(t_bufs_alloc(&w, &b[i], sb, rb, err), err);
    cr_assert(t_case_prepare(&w, &c[i], &b[i], &h[i], err) == 0, "call %d: %s: %s", i,
              t_case_str(&c[i], n, what, sizeof what), err);
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
  free(c), free(b), free(h), free(issued);
}
Test(allreduce_back_to_back, ws2, .timeout = 300) { back_to_back(2); }
Test(allreduce_back_to_back, ws3, .timeout = 300) { back_to_back(3); }

/* ---- the compute-sanitizer subset: few, small cases of every kind ---- */

static void sanitize(int n) {
  static const size_t counts[] = {1, 17, 4097};
  static const struct { ncclDataType_t dt; int op; } kinds[] = {
      {ncclFloat32, T_SUM}, {ncclInt32, T_MAX}, {ncclBfloat16, T_AVG}, {ncclFloat8e4m3, T_PREMUL_DEV}};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, 4097 * 4 * (size_t)n, 4097 * 4 * (size_t)n);
  for (size_t k = 0; k < NELEMS(counts); k++) {
    for (size_t a = 0; a < NELEMS(algos); a++)
      for (size_t i = 0; i < NELEMS(kinds); i++) {
        struct t_case c = t_case_make(T_AR, kinds[i].dt, kinds[i].op, counts[k], (int)(a + i) & 1,
                                      algos[a], next_seed());
        for (int r = 0; r < n; r++) c.send_off[r] = c.recv_off[r] = (int)(k * 3 + (size_t)r) % 16;
        if (!t_algo_accepts(&c, n)) continue;
        t_fixture_run(&f, &c);
      }
    for (int ip = 0; ip < 2; ip++) {
      struct t_case ag = t_case_make(T_AG, ncclFloat16, T_SUM, counts[k], ip, "direct", next_seed());
      struct t_case rs = t_case_make(T_RS, ncclFloat32, T_SUM, counts[k], ip, "direct", next_seed());
      t_fixture_run(&f, &ag);
      t_fixture_run(&f, &rs);
    }
  }
  t_fixture_close(&f);
}
Test(sanitize, ws1, .timeout = 600) { sanitize(1); }
Test(sanitize, ws2, .timeout = 600) { sanitize(2); }

/* ---- the host encodings every reference decodes with (no GPU needed) ---- */

Test(host, encodings) {
  for (uint32_t i = 0; i < 65536; i++) {
    double h = t_half_dec((uint16_t)i), b = t_bf16_dec((uint16_t)i);
    if (!isnan(h)) cr_assert_eq(t_half_enc(h), i, "half 0x%04x does not round-trip", i);
    if (!isnan(b)) cr_assert_eq(t_bf16_enc(b), i, "bfloat16 0x%04x does not round-trip", i);
  }
  for (uint32_t i = 0; i < 256; i++) {
    double a = t_e4m3_dec((uint8_t)i), b = t_e5m2_dec((uint8_t)i);
    if (!isnan(a)) cr_assert_eq(t_e4m3_enc(a), i, "e4m3 0x%02x does not round-trip", i);
    if (!isnan(b)) cr_assert_eq(t_e5m2_enc(b), i, "e5m2 0x%02x does not round-trip", i);
  }
  cr_assert_eq(t_half_enc(1.0), 0x3C00);
  cr_assert_eq(t_half_enc(1.0 / 3.0), 0x3555);
  cr_assert_eq(t_half_enc(65504.0), 0x7BFF);
  cr_assert_eq(t_half_enc(65520.0), 0x7C00, "ties at the top round to infinity");
  cr_assert_eq(t_half_enc(1.0 + ldexp(1, -11)), 0x3C00, "ties to even (down)");
  cr_assert_eq(t_half_enc(1.0 + 3 * ldexp(1, -11)), 0x3C02, "ties to even (up)");
  cr_assert_eq(t_half_enc(ldexp(1, -24)), 0x0001);
  cr_assert_eq(t_half_enc(ldexp(1, -25)), 0x0000, "half the smallest subnormal ties to zero");
  cr_assert_eq(t_half_enc(-0.0), 0x8000);
  cr_assert_eq(t_bf16_enc(1.0), 0x3F80);
  cr_assert_eq(t_bf16_enc(1.0 / 3.0), 0x3EAB);
  cr_assert_eq(t_bf16_enc(-2.0), 0xC000);
  cr_assert_eq(t_e4m3_enc(1.0), 0x38);
  cr_assert_eq(t_e4m3_enc(448.0), 0x7E);
  cr_assert_eq(t_e4m3_enc(464.0), 0x7E, "the tie above 448 rounds to even (448)");
  cr_assert_eq(t_e4m3_enc(480.0), 0x7F, "beyond the range: NaN");
  cr_assert_eq(t_e4m3_enc(-ldexp(1, -9)), 0x81);
  cr_assert(isnan(t_e4m3_dec(0x7F)) && isnan(t_e4m3_dec(0xFF)));
  cr_assert_eq(t_e4m3_dec(0x7E), 448.0);
  cr_assert_eq(t_e5m2_enc(1.0), 0x3C);
  cr_assert_eq(t_e5m2_enc(57344.0), 0x7B);
  cr_assert_eq(t_e5m2_enc(61440.0), 0x7C, "the tie above the maximum rounds to infinity");
  cr_assert_eq(t_e5m2_enc(ldexp(1, -16)), 0x01);
  cr_assert(isinf(t_e5m2_dec(0x7C)) && isnan(t_e5m2_dec(0x7F)));
  /* Poison stays distinguishable: 0xFF.. is NaN in every floating format. */
  static const ncclDataType_t f[] = {ncclFloat16, ncclFloat32, ncclFloat64, ncclBfloat16,
                                     ncclFloat8e4m3, ncclFloat8e5m2};
  unsigned char ff[8];
  memset(ff, 0xFF, sizeof ff);
  for (size_t i = 0; i < NELEMS(f); i++) cr_assert(isnan(t_get(f[i], ff, 0)), "%s", t_dt_name(f[i]));
}
