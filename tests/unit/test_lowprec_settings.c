/* The low-precision all-reduce's host side without a GPU (docs/LOWPREC.md): the settings
 * (environment and snapcclCommSetLowPrecision), the selection on a fake communicator (as in
 * test_api_errors.c, plus a transport that says "usable" so the selector can run), and the
 * grid and chunk geometry of every call shape on such a transport. The arithmetic and the
 * simulated algorithm are test_lowprec_math.c's. */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/launch.h"
#include "comm.h"
#include "fake_comm.h"
#include "env.h"
#include "error.h"
#include "algos/allreduce_lowprec.h"
#include "kernels/lowprec.h"
#include "nccl.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/transport_impl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const int formats[] = {SNAPCCL_LP_FP8, SNAPCCL_LP_INT8, SNAPCCL_LP_INT4};
static const ncclDataType_t dtypes[] = {ncclFloat16, ncclBfloat16, ncclFloat32};

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB");
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_LOWPREC");
  unsetenv("SNAPCCL_LOWPREC_GROUP");
  unsetenv("SNAPCCL_LOWPREC_MIN_BYTES");
  snapccl_env_reload();
}

static struct snapccl_comm* fake_new(int nranks) { return fake_comm_new(nranks, 16); }

static const char* query(struct snapccl_comm* c, size_t count, ncclDataType_t dt, ncclRedOp_t op) {
  const char* name = NULL;
  ncclResult_t r = snapcclQueryAlgorithm((ncclComm_t)c, "allreduce", count, dt, op, &name);
  return r == ncclSuccess ? name : NULL;
}

static const struct snapccl_algo* lowprec_algo(void) {
  for (int i = 0; i < snapccl_algo_count(); i++) {
    const struct snapccl_algo* a = snapccl_algo_at(i);
    if (!strcmp(a->name, "lowprec")) return a;
  }
  cr_assert_fail("no lowprec algorithm in the table");
  return NULL;
}

static const char* reason(struct snapccl_comm* c, size_t count, ncclDataType_t dt, ncclRedOp_t op) {
  static char dummy[16];
  struct snapccl_coll coll;
  cr_assert(snapccl_coll_prepare_quiet(COLL_ALLREDUCE, dummy, dummy, count, dt, op, c, NULL, &coll));
  return snapccl_algo_why_not(lowprec_algo(), &coll);
}

TestSuite(lowprec_settings, .init = setup);

Test(lowprec_settings, parse_format) {
  cr_assert_eq(snapccl_lowprec_parse_format("off"), SNAPCCL_LP_OFF);
  cr_assert_eq(snapccl_lowprec_parse_format(""), SNAPCCL_LP_OFF);
  cr_assert_eq(snapccl_lowprec_parse_format(NULL), SNAPCCL_LP_OFF);
  cr_assert_eq(snapccl_lowprec_parse_format("FP8"), SNAPCCL_LP_FP8);
  cr_assert_eq(snapccl_lowprec_parse_format("e4m3"), SNAPCCL_LP_FP8);
  cr_assert_eq(snapccl_lowprec_parse_format("int8"), SNAPCCL_LP_INT8);
  cr_assert_eq(snapccl_lowprec_parse_format("Int4"), SNAPCCL_LP_INT4);
  cr_assert_eq(snapccl_lowprec_parse_format("int2"), -1);
  cr_assert_eq(snapccl_lowprec_parse_format("fp8 "), -1);
  for (int g = 0; g <= 2048; g++)
    cr_assert_eq(snapccl_lowprec_group_ok(g), g >= 32 && g <= 1024 && g % 32 == 0, "group %d", g);
}

/* The environment's setting after setting the three variables (NULL: left as they are). */
static void env_reading(const char* format, const char* group, const char* min_bytes,
                        struct snapccl_lowprec_setting* s) {
  if (format) setenv("SNAPCCL_LOWPREC", format, 1);
  if (group) setenv("SNAPCCL_LOWPREC_GROUP", group, 1);
  if (min_bytes) setenv("SNAPCCL_LOWPREC_MIN_BYTES", min_bytes, 1);
  snapccl_env_reload();
  snapccl_lowprec_setting_of(NULL, s);
}

Test(lowprec_settings, environment) {
  struct snapccl_lowprec_setting s;
  snapccl_lowprec_setting_of(NULL, &s);
  cr_assert_eq(s.format, SNAPCCL_LP_OFF, "off by default");
  cr_assert_eq(s.group, 256);
  cr_assert_eq(s.min_bytes, 8388608ull);
  env_reading("int8", "128", "4096", &s);
  cr_assert_eq(s.format, SNAPCCL_LP_INT8);
  cr_assert_eq(s.group, 128);
  cr_assert_eq(s.min_bytes, 4096ull);
  cr_assert_eq(s.from_comm, 0);
  env_reading("bogus", "100", "-5", &s);
  cr_assert_eq(s.format, SNAPCCL_LP_OFF, "an unknown format leaves it off");
  cr_assert_eq(s.group, 256, "an invalid group falls back to 256");
  cr_assert_eq(s.min_bytes, 0ull);
  env_reading("INT4", "2048", NULL, &s);
  cr_assert_eq(s.format, SNAPCCL_LP_INT4);
  cr_assert_eq(s.group, 256);
  /* The table documents all three. */
  const struct snapccl_env_entry* e;
  size_t n = snapccl_env_table(&e);
  int found = 0;
  for (size_t i = 0; i < n; i++)
    if (!strncmp(e[i].name, "SNAPCCL_LOWPREC", 15)) {
      found++;
      cr_assert(e[i].doc && e[i].doc[0]);
    }
  cr_assert_eq(found, 3);
}

Test(lowprec_settings, per_communicator) {
  struct snapccl_comm* c = fake_new(4);
  struct snapccl_lowprec_setting s;
  setenv("SNAPCCL_LOWPREC", "int8", 1);
  setenv("SNAPCCL_LOWPREC_GROUP", "64", 1);
  snapccl_env_reload();
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_FP8, 512, 12345), ncclSuccess);
  snapccl_lowprec_setting_of(c, &s);
  cr_assert(s.format == SNAPCCL_LP_FP8 && s.group == 512 && s.min_bytes == 12345 && s.from_comm);
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_INT4, 0, 0), ncclSuccess);
  snapccl_lowprec_setting_of(c, &s);
  cr_assert(s.format == SNAPCCL_LP_INT4 && s.group == 64 && s.min_bytes == 0, "group 0: the environment's");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_OFF, 0, 0), ncclSuccess);
  snapccl_lowprec_setting_of(c, &s);
  cr_assert_eq(s.format, SNAPCCL_LP_OFF, "the communicator's off overrides the environment's int8");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_ENV, 0, 0), ncclSuccess);
  snapccl_lowprec_setting_of(c, &s);
  cr_assert(s.format == SNAPCCL_LP_INT8 && !s.from_comm);
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_FP8, 0, (size_t)-1), ncclSuccess);
  snapccl_lowprec_setting_of(c, &s);
  cr_assert_eq(s.min_bytes, (1ull << 47) - 1, "huge minimums saturate");
  /* Refusals, with reasons. */
  snapccl_clear_last_error();
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, 7, 256, 0), ncclInvalidArgument);
  cr_assert(strstr(ncclGetLastError(NULL), "format"));
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_INT8, 100, 0), ncclInvalidArgument);
  cr_assert(strstr(ncclGetLastError(NULL), "group"));
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_INT8, 2048, 0), ncclInvalidArgument);
  cr_assert_eq(snapcclCommSetLowPrecision(NULL, SNAPCCL_LOWPREC_INT8, 256, 0), ncclInvalidArgument);
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)(uintptr_t)0x7f00deadbee0ull, SNAPCCL_LOWPREC_INT8, 256, 0),
               ncclInvalidArgument);
  cr_assert(strstr(ncclGetLastError(NULL), "not a communicator"));
  fake_comm_free(c);
}

Test(lowprec_settings, selection) {
  struct snapccl_comm* c = fake_new(4);
  const size_t big = 1 << 20; /* 4 MiB of float */
  /* Off: never chosen, whatever the call. */
  cr_assert_str_neq(query(c, big, ncclFloat32, ncclSum), "lowprec");
  cr_assert_str_neq(query(c, big, ncclBfloat16, ncclAvg), "lowprec");
  cr_assert(strstr(reason(c, big, ncclFloat32, ncclSum), "low precision is off"));
  /* On through the environment: chosen for sum and avg of the three types from the
   * minimum size on; declined with the reason otherwise. */
  setenv("SNAPCCL_LOWPREC", "fp8", 1);
  setenv("SNAPCCL_LOWPREC_MIN_BYTES", "65536", 1);
  snapccl_env_reload();
  for (size_t d = 0; d < NELEMS(dtypes); d++) {
    cr_assert_str_eq(query(c, big, dtypes[d], ncclSum), "lowprec");
    cr_assert_str_eq(query(c, big, dtypes[d], ncclAvg), "lowprec");
    cr_assert_str_eq(query(c, 65536 / snapccl_dtype_size(dtypes[d]), dtypes[d], ncclSum), "lowprec");
    cr_assert_str_neq(query(c, 65536 / snapccl_dtype_size(dtypes[d]) - 1, dtypes[d], ncclSum), "lowprec");
    cr_assert(strstr(reason(c, 100, dtypes[d], ncclSum), "minimum size"));
    cr_assert_null(reason(c, big, dtypes[d], ncclSum));
  }
  static const ncclDataType_t others[] = {ncclInt8, ncclUint8, ncclInt32, ncclUint32, ncclInt64,
                                          ncclUint64, ncclFloat64, ncclFloat8e4m3, ncclFloat8e5m2};
  for (size_t d = 0; d < NELEMS(others); d++) {
    cr_assert_str_neq(query(c, big, others[d], ncclSum), "lowprec");
    cr_assert(strstr(reason(c, big, others[d], ncclSum), "float16, bfloat16 and float32 only"));
  }
  static const ncclRedOp_t ops[] = {ncclProd, ncclMax, ncclMin};
  for (size_t o = 0; o < NELEMS(ops); o++) {
    cr_assert_str_neq(query(c, big, ncclFloat32, ops[o]), "lowprec");
    cr_assert(strstr(reason(c, big, ncclFloat32, ops[o]), "sum and avg only"));
  }
  /* A PreMulSum by a user scalar is not a plain sum. */
  ncclRedOp_t pm;
  float two = 2.0f;
  cr_assert_eq(ncclRedOpCreatePreMulSum(&pm, &two, ncclFloat32, ncclScalarHostImmediate, (ncclComm_t)c), ncclSuccess);
  cr_assert(strstr(reason(c, big, ncclFloat32, pm), "sum and avg only"));
  cr_assert_str_neq(query(c, big, ncclFloat32, pm), "lowprec");
  cr_assert_eq(ncclRedOpDestroy(pm, (ncclComm_t)c), ncclSuccess);
  /* The communicator's setting wins over the environment, both ways. */
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_OFF, 0, 0), ncclSuccess);
  cr_assert_str_neq(query(c, big, ncclFloat32, ncclSum), "lowprec");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_INT4, 32, 0), ncclSuccess);
  cr_assert_str_eq(query(c, 1, ncclFloat16, ncclSum), "lowprec", "min_bytes 0: every size");
  /* Forced: runs when enabled, fails with the reason when not. */
  setenv("SNAPCCL_ALGO", "allreduce:lowprec", 1);
  snapccl_env_reload();
  cr_assert_str_eq(query(c, 17, ncclFloat32, ncclAvg), "lowprec");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_ENV, 0, 0), ncclSuccess);
  unsetenv("SNAPCCL_LOWPREC");
  snapccl_env_reload();
  const char* name = NULL;
  snapccl_clear_last_error();
  cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "allreduce", big, ncclFloat32, ncclSum, &name),
               ncclInvalidUsage);
  cr_assert(strstr(ncclGetLastError(NULL), "low precision is off"), "%s", ncclGetLastError(NULL));
  setenv("SNAPCCL_LOWPREC", "int8", 1);
  snapccl_env_reload();
  snapccl_clear_last_error();
  cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "allreduce", big, ncclInt32, ncclSum, &name),
               ncclInvalidUsage);
  cr_assert(strstr(ncclGetLastError(NULL), "float16, bfloat16 and float32"), "%s", ncclGetLastError(NULL));
  unsetenv("SNAPCCL_ALGO");
  snapccl_env_reload();
  /* Other collectives never see it. */
  cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "reducescatter", big, ncclFloat32, ncclSum, &name), ncclSuccess);
  cr_assert_str_neq(name, "lowprec");
  cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "allgather", big, ncclFloat32, ncclSum, &name), ncclSuccess);
  cr_assert_str_neq(name, "lowprec");
  fake_comm_free(c);

  /* One rank: the exact copy, never low precision. */
  struct snapccl_comm* one = fake_new(1);
  cr_assert_str_eq(query(one, big, ncclFloat32, ncclSum), "copy");
  cr_assert(strstr(reason(one, big, ncclFloat32, ncclSum), "one rank"));
  fake_comm_free(one);
}

/* ---------------------------------------------------------------- geometry */

/* The grid and chunk of a call (snapccl_lowprec_geometry), on a fake transport of 64
 * blocks: every group lands in some block's share of some round, a share fits the chunk,
 * the last round is not empty, shares are a whole number of 4 KiB of data whenever the
 * chunk can hold that many groups (on the H100 other sizes ran the kernel up to 2x
 * slower, docs/LOWPREC.md), and the blocks are wide exactly when each may fill an SM. */
static void check_geometry(struct snapccl_comm* c, size_t count, ncclDataType_t dt, int format, int group,
                           struct snapccl_geom* g) {
  const struct snapccl_lowprec_setting s = {format, group, 0, 0};
  struct snapccl_coll coll = {0};
  coll.kind = COLL_ALLREDUCE;
  coll.count = count;
  coll.dtype = dt;
  coll.op = ncclSum;
  coll.comm = c;
  snapccl_lowprec_geometry(&coll, &s, g);
  const struct snapccl_transport* t = c->transport;
  const unsigned long long G = (unsigned long long)group, es = snapccl_dtype_size(dt), n = (unsigned long long)c->nranks;
  const unsigned long long groups = ((count + n - 1) / n + G - 1) / G;
  const unsigned long long P = snapccl_lp_payload_bytes(format, group);
  const unsigned long long m = g->chunk_elems / G;
  cr_assert(g->chunk_elems % G == 0 && m >= 1);
  cr_assert(g->blocks >= 1 && g->blocks <= t->max_blocks);
  cr_assert_leq(snapccl_lp_scales_bytes(m) + m * P, t->lay.chunk_bytes, "a share fits its chunk");
  const unsigned long long per_round = (unsigned long long)g->blocks * m;
  const unsigned long long rounds = (groups + per_round - 1) / per_round;
  cr_assert((rounds ? rounds - 1 : 0) * per_round < groups || groups == 0, "the last round is not empty");
  /* Whole 4 KiB shares when q groups (the smallest whole share) fit the chunk. */
  unsigned long long q = 1;
  while ((q * G * es) % 4096) q++;
  const int q_fits = snapccl_lp_scales_bytes(q) + q * P <= t->lay.chunk_bytes;
  cr_assert(!q_fits || (m * G * es) % 4096 == 0, "count %zu dtype %d fmt %d G %d: share of %llu groups", count, dt,
            format, group, m);
  /* Balanced: no more than one whole share's rounding above an even split. */
  const unsigned long long even = rounds ? (groups + rounds * g->blocks - 1) / (rounds * g->blocks) : 0;
  cr_assert(m < even + q, "share %llu groups for an even split of %llu", m, even);
  cr_assert_eq(SNAPCCL_LP_MODE_FORMAT(g->mode), format);
  cr_assert_eq(SNAPCCL_LP_MODE_GROUP(g->mode), group);
  cr_assert_eq(SNAPCCL_LP_MODE_WIDE(g->mode), g->blocks <= t->whole_sms, "wide iff every block may fill an SM");
}

Test(lowprec_settings, geometry) {
  static const int nranks[] = {2, 3, 4, 8};
  static const int groups[] = {32, 96, 256, 1024};
  static const long long staging[] = {16ll << 20, 64ll << 20, 256ll << 20};
  static const int whole[] = {0, 8, 33, 66};
  static const size_t counts[] = {1, 17, 4097, (1u << 20) + 3, 10000000, 20000000, 32u << 20, 100000007};
  for (size_t r = 0; r < NELEMS(nranks); r++) {
    struct snapccl_comm* c = fake_new(nranks[r]);
    for (size_t b = 0; b < NELEMS(staging); b++)
      for (size_t w = 0; w < NELEMS(whole) * 2; w++) {
        const int cap = w % 2 ? 128 : 64;
        c->transport->max_blocks = cap;
        c->transport->whole_sms = whole[w / 2];
        snapccl_ws_layout_compute(&c->transport->lay, nranks[r], cap, staging[b]);
        for (size_t d = 0; d < NELEMS(dtypes); d++)
          for (size_t f = 0; f < NELEMS(formats); f++)
            for (size_t k = 0; k < NELEMS(groups); k++)
              for (size_t n = 0; n < NELEMS(counts); n++) {
                struct snapccl_geom g;
                check_geometry(c, counts[n], dtypes[d], formats[f], groups[k], &g);
              }
      }
    fake_comm_free(c);
  }
  /* The case that was slow on the H100: 64 MiB of float16 in fp8, 2 ranks, default staging.
   * An even split is 3 rounds of 342 groups per block; whole 4 KiB shares make it 344. */
  struct snapccl_comm* c = fake_new(2);
  c->transport->max_blocks = 64;
  c->transport->whole_sms = 33;
  snapccl_ws_layout_compute(&c->transport->lay, 2, 64, 64ll << 20);
  struct snapccl_geom g;
  check_geometry(c, 32u << 20, ncclFloat16, SNAPCCL_LP_FP8, 256, &g);
  cr_assert_eq(g.blocks, 64);
  cr_assert_eq(g.chunk_elems, 344ull * 256);
  cr_assert_eq(SNAPCCL_LP_MODE_WIDE(g.mode), 0, "64 blocks, 33 may fill an SM: 256-thread blocks");
  check_geometry(c, 1u << 19, ncclFloat16, SNAPCCL_LP_FP8, 256, &g); /* 1 MiB */
  cr_assert_eq(g.blocks, 16);
  cr_assert_eq(SNAPCCL_LP_MODE_WIDE(g.mode), 1, "16 blocks fit the 33 whole SMs: wide");
  fake_comm_free(c);
  /* One rank per H200, two of them: 32 MB of bfloat16 takes every one of 128 blocks, too
   * many for the 66 whole SMs: 256-thread blocks, in 2 rounds (64 KiB chunks). */
  c = fake_new(2);
  c->transport->max_blocks = 128;
  c->transport->whole_sms = 66;
  snapccl_ws_layout_compute(&c->transport->lay, 2, 128, 64ll << 20);
  check_geometry(c, 16u << 20, ncclBfloat16, SNAPCCL_LP_FP8, 256, &g);
  cr_assert_eq(g.blocks, 128);
  cr_assert_eq(SNAPCCL_LP_MODE_WIDE(g.mode), 0, "128 blocks, 66 may fill an SM: 256-thread blocks");
  fake_comm_free(c);
}
