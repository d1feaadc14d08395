/* ncclAllGather with every rank in this process: world sizes 1, 2, 3, 4, 8; every dtype
 * x count x placement at world size 2 (random bytes, so any bit pattern must arrive
 * intact, NaNs included); misaligned pointers; 64M+1 elements; SNAPCCL_ALGO naming an
 * algorithm that does not exist. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "fixture.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t next_seed(void) {
  static uint64_t s = 0xa99ull << 32;
  return t_mix(++s);
}


Test(allgather_ws2, all, .timeout = 300) {
  static const size_t counts[] = {0, 1, 3, 17, 1023, 4097, 65537, (1u << 20) + 3};
  const size_t max = counts[NELEMS(counts) - 1] * 8;
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 2, max, 2 * max);
  for (int d = 0; d < 12; d++)
    for (size_t k = 0; k < NELEMS(counts); k++)
      for (int ip = 0; ip < 2; ip++) {
        const char* algo = (k + (size_t)ip) % 2 ? "direct" : NULL;
        struct t_case c = t_case_make(T_AG, t_all_dtypes[d], T_SUM, counts[k], ip, algo, next_seed());
        t_fixture_run(&f, &c);
      }
  struct t_case c = t_case_make(T_AG, ncclFloat32, T_SUM, 0, 0, "direct", next_seed());
  c.null_bufs = 1;
  t_fixture_run(&f, &c);
  t_fixture_close(&f);
}

Test(allgather_ws2, huge, .timeout = 300) {
  const size_t count = (64u << 20) + 1;
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 2, count * 4, 2 * count * 4);
  struct t_case a = t_case_make(T_AG, ncclFloat32, T_SUM, count, 0, "direct", next_seed());
  struct t_case b = t_case_make(T_AG, ncclInt8, T_SUM, count, 1, NULL, next_seed());
  t_fixture_run(&f, &a);
  t_fixture_run(&f, &b);
  t_fixture_close(&f);
}

/* SNAPCCL_ALGO naming no algorithm: every collective it names fails with
 * ncclInvalidUsage (and touches nothing); the others are unaffected. */
Test(allgather_ws2, unknown_algorithm, .timeout = 120) {
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 2, 4096 * 4, 2 * 4096 * 4);
  struct t_case ag = t_case_make(T_AG, ncclFloat32, T_SUM, 4096, 0, "bogus", next_seed());
  struct t_case ar = t_case_make(T_AR, ncclFloat32, T_SUM, 4096, 0, "bogus", next_seed());
  struct t_case rs = t_case_make(T_RS, ncclInt32, T_SUM, 2048, 0, "ring", next_seed());
  struct t_case cp = t_case_make(T_AR, ncclInt32, T_SUM, 2048, 1, "copy", next_seed()); /* 1 rank only */
  t_fixture_run(&f, &ag);
  t_fixture_run(&f, &ar);
  t_fixture_run(&f, &rs);
  t_fixture_run(&f, &cp);
  struct t_case ok = t_case_make(T_AG, ncclFloat32, T_SUM, 4096, 0, "direct", next_seed());
  t_fixture_run(&f, &ok);
  t_fixture_close(&f);
}

Test(allgather_ws1, all, .timeout = 300) {
  static const size_t counts[] = {0, 1, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, 1, 65537 * 8, 65537 * 8);
  for (int d = 0; d < 12; d++)
    for (size_t k = 0; k < NELEMS(counts); k++)
      for (int ip = 0; ip < 2; ip++) {
        struct t_case c = t_case_make(T_AG, t_all_dtypes[d], T_SUM, counts[k], ip,
                                      ip ? "direct" : NULL, next_seed());
        t_fixture_run(&f, &c);
      }
  t_fixture_close(&f);
}

static void wsn(int n) {
  static const ncclDataType_t dts[] = {ncclInt8,     ncclFloat16, ncclFloat32, ncclFloat64,
                                       ncclBfloat16, ncclFloat8e4m3, ncclUint64, ncclInt32};
  static const size_t counts[] = {1, 17, 4097, 65537, 300007};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, 300007 * 8, (size_t)n * 300007 * 8);
  for (size_t d = 0; d < NELEMS(dts); d++)
    for (size_t k = 0; k < NELEMS(counts); k++) {
      struct t_case c = t_case_make(T_AG, dts[d], T_SUM, counts[k], (int)(d + k) & 1, "direct",
                                    next_seed());
      t_fixture_run(&f, &c);
    }
  t_fixture_close(&f);
}
Test(allgather_wsn, ws3, .timeout = 300) { wsn(3); }
Test(allgather_wsn, ws4, .timeout = 300) { wsn(4); }
Test(allgather_wsn, ws8, .timeout = 300) { wsn(8); }

static void offsets(int n) {
  static const ncclDataType_t dts[] = {ncclInt8, ncclFloat16, ncclFloat32, ncclFloat64, ncclUint64};
  static const size_t counts[] = {1, 3, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  t_fixture_open(&f, n, 65537 * 8, (size_t)n * 65537 * 8);
  for (int off = 1; off <= 15; off++)
    for (size_t k = 0; k < NELEMS(counts); k++) {
      struct t_case c = t_case_make(T_AG, dts[((size_t)off + k) % NELEMS(dts)], T_SUM, counts[k],
                                    (int)((size_t)off + k) & 1, "direct", next_seed());
      t_misalign(off, n, c.send_off, c.recv_off);
      t_fixture_run(&f, &c);
    }
  t_fixture_close(&f);
}
Test(allgather_offsets, ws2, .timeout = 300) { offsets(2); }
Test(allgather_offsets, ws3, .timeout = 300) { offsets(3); }
