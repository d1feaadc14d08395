/* ncclReduceScatter with every rank in this process: world sizes 1, 2, 3, 4, 8; every
 * dtype x op x placement x count at world size 2 (rank r checks the reduction of every
 * rank's block r); misaligned pointers; 64M+1 elements. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "fixture.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static uint64_t next_seed(void) {
  static uint64_t s = 0x2510ull << 32;
  return t_mix(++s);
}


/* Buffers of n ranks' blocks of `count` elements (in-place keeps them all in recv). */
static void open_for(struct t_fixture* f, int n, size_t count, size_t esize) {
  t_fixture_open(f, n, (size_t)n * count * esize, (size_t)n * count * esize);
}

static void ws2_dtype(ncclDataType_t dt) {
  static const size_t counts[] = {0, 1, 3, 17, 1023, 4097, 65537, (1u << 20) + 3};
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_for(&f, 2, counts[NELEMS(counts) - 1], t_dt_size(dt));
  for (int op = 0; op < T_NOPS; op++)
    for (size_t k = 0; k < NELEMS(counts); k++)
      for (int ip = 0; ip < 2; ip++) {
        const char* algo = (k + (size_t)ip + (size_t)op) % 2 ? "direct" : NULL;
        struct t_case c = t_case_make(T_RS, dt, op, counts[k], ip, algo, next_seed());
        t_fixture_run(&f, &c);
      }
  struct t_case c = t_case_make(T_RS, dt, T_SUM, 0, 0, "direct", next_seed());
  c.null_bufs = 1;
  t_fixture_run(&f, &c);
  t_fixture_close(&f);
}

#define WS2(name, dt) \
  Test(reducescatter_ws2, name, .timeout = 300) { ws2_dtype(dt); }
T_EACH_DTYPE(WS2)

Test(reducescatter_ws2, huge, .timeout = 300) {
  const size_t count = (64u << 20) + 1;
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_for(&f, 2, count, 4);
  struct t_case a = t_case_make(T_RS, ncclInt32, T_SUM, count, 0, "direct", next_seed());
  struct t_case b = t_case_make(T_RS, ncclBfloat16, T_MAX, count, 1, NULL, next_seed());
  t_fixture_run(&f, &a);
  t_fixture_run(&f, &b);
  t_fixture_close(&f);
}

Test(reducescatter_ws1, all, .timeout = 300) {
  static const size_t counts[] = {0, 1, 17, 4097};
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_for(&f, 1, 4097, 8);
  for (int d = 0; d < 12; d++)
    for (int op = 0; op < T_NOPS; op++)
      for (size_t k = 0; k < NELEMS(counts); k++)
        for (int ip = 0; ip < 2; ip++) {
          struct t_case c = t_case_make(T_RS, t_all_dtypes[d], op, counts[k], ip,
                                        ip ? "direct" : NULL, next_seed());
          t_fixture_run(&f, &c);
        }
  t_fixture_close(&f);
}

static void wsn(int n) {
  static const size_t counts[] = {1, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_for(&f, n, 65537, 8);
  for (int d = 0; d < 12; d++)
    for (int op = T_SUM; op <= T_MAX; op += T_MAX - T_SUM)
      for (size_t k = 0; k < NELEMS(counts); k++) {
        struct t_case c = t_case_make(T_RS, t_all_dtypes[d], op, counts[k], (int)(k + (size_t)d) & 1,
                                      "direct", next_seed());
        t_fixture_run(&f, &c);
      }
  static const ncclDataType_t some[] = {ncclFloat32, ncclInt32, ncclFloat16};
  for (size_t d = 0; d < NELEMS(some); d++)
    for (int op = 0; op < T_NOPS; op++) {
      struct t_case c = t_case_make(T_RS, some[d], op, 4097, op & 1, NULL, next_seed());
      t_fixture_run(&f, &c);
    }
  t_fixture_close(&f);
}
Test(reducescatter_wsn, ws3, .timeout = 300) { wsn(3); }
Test(reducescatter_wsn, ws4, .timeout = 300) { wsn(4); }
Test(reducescatter_wsn, ws8, .timeout = 300) { wsn(8); }

static void offsets(int n) {
  static const ncclDataType_t dts[] = {ncclInt8,       ncclFloat16, ncclFloat32, ncclFloat64,
                                       ncclFloat8e4m3, ncclUint32,  ncclBfloat16};
  static const size_t counts[] = {1, 3, 17, 4097, 65537};
  T_REQUIRE_GPU();
  struct t_fixture f;
  open_for(&f, n, 65537, 8);
  for (int off = 1; off <= 15; off++)
    for (size_t k = 0; k < NELEMS(counts); k++) {
      struct t_case c = t_case_make(T_RS, dts[((size_t)off + k) % NELEMS(dts)],
                                    (int)((size_t)off + 2 * k) % T_NOPS, counts[k],
                                    (int)((size_t)off + k) & 1, "direct", next_seed());
      t_misalign(off, n, c.send_off, c.recv_off);
      t_fixture_run(&f, &c);
    }
  t_fixture_close(&f);
}
Test(reducescatter_offsets, ws2, .timeout = 300) { offsets(2); }
Test(reducescatter_offsets, ws3, .timeout = 300) { offsets(3); }
