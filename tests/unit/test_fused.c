/* The fused all-reduce + residual + RMSNorm without a GPU: options versioning, argument
 * checks (NCCL's codes and a reason), SNAPCCL_ALGO's "fused" item, the route decision
 * (our algorithms, the real NCCL's all-reduce, or a failure) and the algorithm choice on
 * fake communicators, the sum-buffer choice of the two-kernel paths, and the fp64
 * reference the GPU tests check against (tests/fused_ref.h).
 *
 * Fake communicators are made as in test_api_errors.c: snapccl_comm_alloc, a rank and a
 * size, "initialized", registered; some get a fake transport (a layout and a block cap,
 * no memory) and a peer table, enough for the selector. Nothing here launches a kernel:
 * every public call made fails or returns before it would. */
#include <criterion/criterion.h>

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../fused_ref.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "fused.h"
#include "nccl.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/transport_impl.h"

/* ---- helpers ---- */

static void expect(const char* expr, int line, ncclResult_t got, ncclResult_t want,
                   const char* needle) {
  const char* e = ncclGetLastError(NULL);
  cr_assert_eq(got, want, "line %d: %s returned %d, expected %d; last error \"%s\"", line, expr,
               (int)got, (int)want, e ? e : "");
  if (want != ncclSuccess && needle)
    cr_assert(e && strcasestr(e, needle), "line %d: %s: \"%s\" does not mention %s", line, expr,
              e ? e : "", needle);
}
/* Clears the last error first, so the text checked is the one this call left. */
#define EXPECT(call, code, needle)                                    \
  do {                                                                \
    snapccl_clear_last_error();                                       \
    ncclResult_t r_ = (call);                                         \
    expect(#call, __LINE__, r_, (code), (needle));                    \
  } while (0)

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB"); /* standalone: no real NCCL */
  unsetenv("SNAPCCL_ALGO");
  snapccl_env_reload();
}

static void set_algo(const char* v) {
  if (v) setenv("SNAPCCL_ALGO", v, 1);
  else unsetenv("SNAPCCL_ALGO");
  snapccl_env_reload();
}

static struct snapccl_comm* fake_new(int nranks, int rank) {
  struct snapccl_comm* c = NULL;
  cr_assert_eq(snapccl_comm_alloc(&c), ncclSuccess);
  cr_assert_eq(snapccl_config_parse(NULL, &c->config), ncclSuccess);
  c->nranks = nranks;
  c->rank = rank;
  c->cuda_dev = 0;
  atomic_store(&c->async_state, ncclSuccess);
  cr_assert_eq(snapccl_registry_add(c, c), ncclSuccess);
  return c;
}

/* A transport that can run collectives as far as the selector can tell: the agreed
 * layout and block cap of `nranks` ranks; ranks sharing one GPU in one process when
 * `shared`, else one GPU each. */
static void fake_transport(struct snapccl_comm* c, int max_blocks, int shared) {
  struct snapccl_transport* t = calloc(1, sizeof *t);
  cr_assert_not_null(t);
  pthread_mutex_init(&t->lock, NULL);
  t->usable = 1;
  t->max_blocks = max_blocks;
  snapccl_ws_layout_compute(&t->lay, c->nranks, max_blocks, 64ll << 20);
  c->transport = t;
  c->peers = calloc((size_t)c->nranks, sizeof *c->peers);
  cr_assert_not_null(c->peers);
  for (int r = 0; r < c->nranks; r++) {
    c->peers[r].rank = r;
    c->peers[r].sm_count = 132;
    c->peers[r].proc_hash = 42;
    c->peers[r].gpu_uuid[0] = (uint8_t)(shared ? 0 : r);
  }
  c->ranks_on_dev = c->ranks_on_dev_in_proc = shared ? c->nranks : 1;
  c->ranks_in_proc = c->nranks;
}

static void fake_free(struct snapccl_comm* c) {
  if (snapccl_registry_remove(c) == c) snapccl_comm_free(c);
}

#define H(c) ((ncclComm_t)(c))

/* Host memory standing in for device buffers (nothing is launched on them). */
static char g_in[1 << 16], g_res[1 << 16], g_gamma[1 << 12], g_norm[1 << 16], g_rout[1 << 16],
    g_sum[1 << 16];
static float g_scale[1 << 10];

/* ================= options ================= */

TestSuite(fused_options, .init = setup);

Test(fused_options, defaults_and_initializer) {
  char why[256];
  snapcclFusedOptions out, init = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  cr_assert_eq(snapccl_fused_options_read(NULL, &out, why, sizeof why), ncclSuccess);
  cr_assert_eq(out.normOut, snapcclNormOutDefault);
  cr_assert_eq(out.skipResidualOut, 0);
  cr_assert_null(out.sumOut);
  cr_assert_eq(init.size, sizeof(snapcclFusedOptions));
  cr_assert_eq(init.version, SNAPCCL_FUSED_OPTIONS_VERSION);
  init.normOut = snapcclNormOutFp8Dynamic;
  init.scaleOut = g_scale;
  init.skipResidualOut = 1;
  init.sumOut = g_sum;
  cr_assert_eq(snapccl_fused_options_read(&init, &out, why, sizeof why), ncclSuccess, "%s", why);
  cr_assert_eq(out.normOut, snapcclNormOutFp8Dynamic);
  cr_assert_eq(out.scaleOut, g_scale);
  cr_assert_eq(out.skipResidualOut, 1);
  cr_assert_eq(out.sumOut, (void*)g_sum);
}

Test(fused_options, bad_header) {
  char why[256];
  snapcclFusedOptions out, o = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  o.magic = 0;
  cr_assert_eq(snapccl_fused_options_read(&o, &out, why, sizeof why), ncclInvalidArgument);
  cr_assert(strstr(why, "SNAPCCL_FUSED_OPTIONS_INITIALIZER"), "%s", why);
  o.magic = SNAPCCL_FUSED_OPTIONS_MAGIC;
  o.size = 8;
  cr_assert_eq(snapccl_fused_options_read(&o, &out, why, sizeof why), ncclInvalidArgument);
  cr_assert(strstr(why, "size"), "%s", why);
  o.size = (size_t)1 << 40; /* garbage */
  cr_assert_eq(snapccl_fused_options_read(&o, &out, why, sizeof why), ncclInvalidArgument);
  o.size = sizeof o;
  o.version = 0;
  cr_assert_eq(snapccl_fused_options_read(&o, &out, why, sizeof why), ncclInvalidArgument);
  cr_assert(strstr(why, "version"), "%s", why);
}

/* A caller compiled against an older, shorter struct: fields past its size keep their
 * defaults, whatever lies in memory behind it. */
Test(fused_options, older_caller) {
  char why[256];
  union {
    snapcclFusedOptions o;
    unsigned char raw[sizeof(snapcclFusedOptions) + 64];
  } u;
  memset(&u, 0xA5, sizeof u);
  u.o.size = offsetof(snapcclFusedOptions, sumOut); /* knew everything but sumOut */
  u.o.magic = SNAPCCL_FUSED_OPTIONS_MAGIC;
  u.o.version = 1;
  u.o.normOut = snapcclNormOutFp8Static;
  u.o.skipResidualOut = 0;
  u.o.scale = g_scale;
  u.o.scaleOut = NULL;
  snapcclFusedOptions out;
  cr_assert_eq(snapccl_fused_options_read(&u.o, &out, why, sizeof why), ncclSuccess, "%s", why);
  cr_assert_eq(out.normOut, snapcclNormOutFp8Static);
  cr_assert_eq(out.scale, g_scale);
  cr_assert_null(out.sumOut, "a field beyond the caller's size was read");
  /* Only the header: everything default. */
  u.o.size = offsetof(snapcclFusedOptions, normOut);
  cr_assert_eq(snapccl_fused_options_read(&u.o, &out, why, sizeof why), ncclSuccess, "%s", why);
  cr_assert_eq(out.normOut, snapcclNormOutDefault);
  cr_assert_null(out.scale);
}

/* A newer caller: unknown trailing fields are fine at zero, refused when set. */
Test(fused_options, newer_caller) {
  char why[256];
  union {
    snapcclFusedOptions o;
    unsigned char raw[sizeof(snapcclFusedOptions) + 32];
  } u;
  memset(&u, 0, sizeof u);
  snapcclFusedOptions init = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  u.o = init;
  u.o.size = sizeof u;
  u.o.version = SNAPCCL_FUSED_OPTIONS_VERSION + 1;
  u.o.skipResidualOut = 1;
  snapcclFusedOptions out;
  cr_assert_eq(snapccl_fused_options_read(&u.o, &out, why, sizeof why), ncclSuccess, "%s", why);
  cr_assert_eq(out.skipResidualOut, 1);
  u.raw[sizeof(snapcclFusedOptions) + 5] = 1;
  cr_assert_eq(snapccl_fused_options_read(&u.o, &out, why, sizeof why), ncclInvalidArgument);
  cr_assert(strstr(why, "does not know"), "%s", why);
}

/* ================= SNAPCCL_ALGO ================= */

TestSuite(fused_algo_env, .init = setup);

Test(fused_algo_env, parse) {
  char n[16];
  cr_assert_eq(snapccl_fused_forced("fused:twoshot", n, sizeof n), 1);
  cr_assert_str_eq(n, "twoshot");
  cr_assert_eq(snapccl_fused_forced("allreduce:oneshot,fused:oneshot,allgather:direct", n, sizeof n), 1);
  cr_assert_str_eq(n, "oneshot");
  cr_assert_eq(snapccl_fused_forced("fused:nccl,fused:twoshot", n, sizeof n), 1);
  cr_assert_str_eq(n, "nccl", "the first fused item wins");
  cr_assert_eq(snapccl_fused_forced("allreduce:lamport", n, sizeof n), 0);
  cr_assert_eq(snapccl_fused_forced("", n, sizeof n), 0);
  cr_assert_eq(snapccl_fused_forced(NULL, n, sizeof n), 0);
  cr_assert_eq(snapccl_fused_forced("fused:", n, sizeof n), 0, "no name");
  cr_assert_eq(snapccl_fused_forced("fusedx:oneshot", n, sizeof n), 0);
  cr_assert_eq(snapccl_fused_forced("xfused:oneshot", n, sizeof n), 0);
  cr_assert_eq(snapccl_fused_forced("fused:averyveryverylongname", n, 8), 1);
  cr_assert_str_eq(n, "averyve", "truncated to the buffer");
  /* The collectives' own items ignore "fused". */
  cr_assert_eq(snapccl_fused_forced("allreduce:fused:x", n, sizeof n), 0);
}

/* ================= argument checks through the API ================= */

TestSuite(fused_args, .init = setup);

#define CALL(in, rin, g, no, ro, T, Hd, eps, dt, comm) \
  snapcclAllReduceResidualRMSNorm(in, rin, g, no, ro, T, Hd, eps, dt, comm, NULL)

Test(fused_args, communicator) {
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16, NULL),
         ncclInvalidArgument, "comm");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16,
              (ncclComm_t)(uintptr_t)0x7f00deadbee0ull),
         ncclInvalidArgument, NULL);
  struct snapccl_comm* c = fake_new(2, 0);
  atomic_store(&c->async_state, ncclInProgress);
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "initializing");
  fake_free(c);
}

Test(fused_args, values) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclFloat64, H(c)),
         ncclInvalidArgument, "datatype");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclInt32, H(c)),
         ncclInvalidArgument, "bfloat16, half or float");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, (ncclDataType_t)99, H(c)),
         ncclInvalidArgument, "datatype");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 0, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "hidden");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, SIZE_MAX / 2, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "overflow");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, -1.0f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "eps");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, NAN, ncclBfloat16, H(c)),
         ncclInvalidArgument, "eps");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, INFINITY, ncclBfloat16, H(c)),
         ncclInvalidArgument, "eps");
  EXPECT(CALL(NULL, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "input");
  EXPECT(CALL(g_in, g_res, g_gamma, NULL, g_rout, 4, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "norm_out");
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, NULL, 4, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidArgument, "skipResidualOut");
  /* Zero tokens: nothing to do, NULL buffers included (like count 0). */
  EXPECT(CALL(NULL, NULL, NULL, NULL, NULL, 0, 8, 1e-6f, ncclBfloat16, H(c)), ncclSuccess, NULL);
  EXPECT(CALL(NULL, NULL, NULL, NULL, NULL, 0, 0, 1e-6f, ncclFloat32, H(c)), ncclSuccess, NULL);
  /* Valid arguments on a communicator without a transport, standalone: the route fails
   * with the reason (NULL residual_in and gamma are fine). */
  EXPECT(CALL(g_in, NULL, NULL, g_norm, g_rout, 4, 8, 0.0f, ncclBfloat16, H(c)), ncclInvalidUsage,
         "transport");
  fake_free(c);
}

Test(fused_args, options) {
  struct snapccl_comm* c = fake_new(2, 0);
  snapcclFusedOptions o = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
#define CALLX(no, ro, T, opt)                                                                     \
  snapcclAllReduceResidualRMSNormEx(g_in, g_res, g_gamma, no, ro, T, 8, 1e-6f, ncclBfloat16, H(c), \
                                    NULL, opt)
  o.skipResidualOut = 1;
  EXPECT(CALLX(g_norm, NULL, 4, &o), ncclInvalidUsage, "transport"); /* the checks passed */
  o.skipResidualOut = 0;
  o.normOut = 7;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidArgument, "normOut");
  o.normOut = snapcclNormOutFp8Static;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidArgument, "scale");
  o.scale = g_scale;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidUsage, "transport");
  o.normOut = snapcclNormOutFp8Dynamic;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidArgument, "scaleOut");
  o.scaleOut = g_scale;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidUsage, "transport");
  o.magic = 1;
  EXPECT(CALLX(g_norm, g_rout, 4, &o), ncclInvalidArgument, "magic");
  /* The separate kernel's entry has no sum output. */
  snapcclFusedOptions s = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  s.sumOut = g_sum;
  EXPECT(snapcclResidualRMSNorm(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16,
                                NULL, &s),
         ncclInvalidArgument, "sumOut");
  EXPECT(snapcclResidualRMSNorm(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclInt8, NULL,
                                NULL),
         ncclInvalidArgument, "datatype");
  fake_free(c);
#undef CALLX
}

Test(fused_args, overlaps) {
  struct snapccl_comm* c = fake_new(2, 0);
  snapcclFusedOptions o = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
  const size_t T = 4, Hd = 8, bytes = T * Hd * 2;
#define CALLO(in, rin, g, no, ro, opt)                                                           \
  snapcclAllReduceResidualRMSNormEx(in, rin, g, no, ro, T, Hd, 1e-6f, ncclBfloat16, H(c), NULL, opt)
  /* The allowed aliases pass the checks (and fail later, for want of a transport). */
  EXPECT(CALLO(g_in, g_res, g_gamma, g_in, g_res, NULL), ncclInvalidUsage, "transport");
  o.sumOut = g_in;
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_rout, &o), ncclInvalidUsage, "transport");
  /* Inputs may overlap each other. */
  EXPECT(CALLO(g_in, g_in, g_in, g_norm, g_rout, NULL), ncclInvalidUsage, "transport");
  /* Everything else is refused. */
  EXPECT(CALLO(g_in, g_res, g_gamma, g_in + 2, g_rout, NULL), ncclInvalidArgument, "overlaps");
  EXPECT(CALLO(g_in, g_res, g_gamma, g_res, g_rout, NULL), ncclInvalidArgument, "overlaps");
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_in, NULL), ncclInvalidArgument, "overlaps");
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_norm + bytes - 2, NULL), ncclInvalidArgument,
         "overlaps");
  EXPECT(CALLO(g_in, g_res, g_norm + 2, g_norm, g_rout, NULL), ncclInvalidArgument, "gamma");
  o.sumOut = g_norm;
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_rout, &o), ncclInvalidArgument, "sumOut");
  o.sumOut = g_res;
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_rout, &o), ncclInvalidArgument, "overlaps");
  /* fp8 norm output in place of the input would overwrite unread rows. */
  o.sumOut = NULL;
  o.normOut = snapcclNormOutFp8Static;
  o.scale = g_scale;
  EXPECT(CALLO(g_in, g_res, g_gamma, g_in, g_rout, &o), ncclInvalidArgument, "fp8");
  o.normOut = snapcclNormOutFp8Dynamic;
  o.scaleOut = (float*)(void*)g_norm;
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_rout, &o), ncclInvalidArgument, "scaleOut");
  /* Non-overlapping neighbours are fine. */
  o.scaleOut = (float*)(void*)(g_norm + T * Hd);
  EXPECT(CALLO(g_in, g_res, g_gamma, g_norm, g_rout, &o), ncclInvalidUsage, "transport");
  fake_free(c);
#undef CALLO
}

/* Not inside a group: the halves of a two-kernel path would run out of order. The group
 * then reports the failure at its end, like a collective's. */
Test(fused_args, group) {
  struct snapccl_comm* c = fake_new(2, 0);
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  EXPECT(CALL(g_in, g_res, g_gamma, g_norm, g_rout, 4, 8, 1e-6f, ncclBfloat16, H(c)),
         ncclInvalidUsage, "ncclGroupStart");
  cr_assert_neq(ncclGroupEnd(), ncclSuccess);
  fake_free(c);
}

/* ================= routes and algorithm choice ================= */

TestSuite(fused_route, .init = setup);

static struct snapccl_fused make(struct snapccl_comm* c, size_t T, size_t Hd, ncclDataType_t dt) {
  struct snapccl_fused f;
  memset(&f, 0, sizeof f);
  f.input = g_in;
  f.residual_in = g_res;
  f.gamma = g_gamma;
  f.norm_out = g_norm;
  f.residual_out = g_rout;
  f.tokens = T;
  f.hidden = Hd;
  f.eps = 1e-6f;
  f.dtype = dt;
  f.comm = c;
  return f;
}

static const char* route_name(struct snapccl_fused* f, int have_real, int ready, char* why) {
  const struct snapccl_fused_algo* a = NULL;
  switch (snapccl_fused_route(f, have_real, ready, &a, why, 512)) {
    case FUSED_ROUTE_OURS: return a->name;
    case FUSED_ROUTE_REAL: return "nccl";
    default: return "fail";
  }
}

Test(fused_route, without_transport) {
  char why[512];
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_fused f = make(c, 4, 4096, ncclBfloat16);
  /* Standalone: nothing can run it, and the transport is named. */
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "transport"), "%s", why);
  /* A real NCCL behind the communicator: its all-reduce, our norm. */
  cr_assert_str_eq(route_name(&f, 1, 1, why), "nccl");
  cr_assert_str_eq(route_name(&f, 1, 0, why), "nccl", "not attached yet");
  f.comm = NULL; /* a real communicator we hold nothing for */
  cr_assert_str_eq(route_name(&f, 1, 0, why), "nccl");
  /* One rank needs no transport: the separate kernel on the input. */
  struct snapccl_comm* one = fake_new(1, 0);
  f = make(one, 4, 4096, ncclBfloat16);
  cr_assert_str_eq(route_name(&f, 0, 1, why), "local");
  fake_free(one);
  fake_free(c);
}

Test(fused_route, forced) {
  char why[512];
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_fused f = make(c, 4, 4096, ncclBfloat16);
  set_algo("fused:nccl");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "no NVIDIA NCCL"), "%s", why);
  cr_assert_str_eq(route_name(&f, 1, 1, why), "nccl");
  set_algo("fused:twoshot");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "SNAPCCL_ALGO forces fused:twoshot") && strstr(why, "transport"), "%s", why);
  cr_assert_str_eq(route_name(&f, 1, 1, why), "nccl", "interposed: the real library takes it");
  set_algo("fused:bogus");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "not a fused algorithm"), "%s", why);
  /* Other collectives' items do not force the fused call. */
  set_algo("allreduce:twoshot");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(!strstr(why, "SNAPCCL_ALGO"), "%s", why);
  set_algo(NULL);
  fake_free(c);
}

Test(fused_route, choice_by_size) {
  char why[512];
  struct snapccl_comm* c = fake_new(2, 0);
  fake_transport(c, 16, 0);
  struct snapccl_fused f = make(c, 1, 4096, ncclBfloat16);
  cr_assert_str_eq(route_name(&f, 0, 1, why), "oneshot", "%s", why);
  unsigned long long limit = c->transport->lay.oneshot_bytes;
  if (limit > SNAPCCL_FUSED_ONESHOT_BYTES) limit = SNAPCCL_FUSED_ONESHOT_BYTES;
  f.tokens = (int)(limit / (4096 * 2)); /* the fused one-shot's limit, full */
  cr_assert_str_eq(route_name(&f, 0, 1, why), "oneshot", "%s", why);
  f.tokens++;
  cr_assert_str_eq(route_name(&f, 0, 1, why), "twoshot", "%s", why);
  f.tokens = 4096;
  f.hidden = 8192;
  cr_assert_str_eq(route_name(&f, 0, 1, why), "twoshot", "%s", why);
  /* Rows larger than a staging chunk: two kernels. */
  f.tokens = 16;
  f.hidden = 1u << 20;
  f.dtype = ncclFloat32;
  cr_assert_str_eq(route_name(&f, 0, 1, why), "unfused", "%s", why);
  /* Hidden sizes that are not pack multiples run too (the general path). */
  f = make(c, 3, 8200 + 3, ncclFloat16);
  cr_assert_str_eq(route_name(&f, 0, 1, why), "oneshot", "%s", why);
  /* Forcing what cannot run says why; forcing what can, runs. */
  f = make(c, 1024, 4096, ncclBfloat16);
  set_algo("fused:oneshot");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "one-shot buffer"), "%s", why);
  set_algo("fused:unfused");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "unfused", "%s", why);
  set_algo("fused:twoshot,allreduce:nccl");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "twoshot", "%s", why);
  set_algo("fused:unfused,allreduce:nccl");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail", "our all-reduce declines");
  cr_assert(strstr(why, "all-reduce"), "%s", why);
  set_algo("fused:local");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "more than one rank"), "%s", why);
  set_algo(NULL);
  /* An unusable transport declines with its reason. */
  c->transport->usable = 0;
  snprintf(c->transport->reason, sizeof c->transport->reason, "no P2P between GPU 0 and GPU 1");
  cr_assert_str_eq(route_name(&f, 0, 1, why), "fail");
  cr_assert(strstr(why, "no P2P"), "%s", why);
  cr_assert_str_eq(route_name(&f, 1, 1, why), "nccl");
  fake_free(c);
}

/* The public query agrees with the route, and names the real library when it would. */
Test(fused_route, query) {
  const char* name = NULL;
  struct snapccl_comm* c = fake_new(4, 1);
  fake_transport(c, 16, 1);
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 4, 4096, ncclBfloat16, NULL, &name), ncclSuccess, NULL);
  cr_assert_str_eq(name, "oneshot");
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 4096, 4096, ncclBfloat16, NULL, &name), ncclSuccess, NULL);
  cr_assert_str_eq(name, "twoshot");
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 0, 4096, ncclFloat16, NULL, &name), ncclSuccess, NULL);
  cr_assert_str_eq(name, "oneshot", "zero tokens: what a call with rows would get");
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 4, 4096, ncclInt8, NULL, &name), ncclInvalidArgument,
         "datatype");
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 4, 4096, ncclBfloat16, NULL, NULL), ncclInvalidArgument,
         "name");
  set_algo("fused:oneshot");
  EXPECT(snapcclQueryFusedAlgorithm(H(c), 4096, 4096, ncclBfloat16, NULL, &name), ncclInvalidUsage,
         "SNAPCCL_ALGO");
  set_algo(NULL);
  fake_free(c);
}

/* Grids of communicating kernels: the agreed cap, and ranks sharing a GPU in one process
 * split two blocks per SM of it. */
Test(fused_route, block_cap) {
  struct snapccl_comm* c = fake_new(2, 0);
  fake_transport(c, 64, 0);
  cr_assert_eq(snapccl_fused_block_cap(c), 64, "one GPU each: 132 SMs allow the agreed 64");
  fake_free(c);
  c = fake_new(8, 3);
  fake_transport(c, 64, 1);
  cr_assert_eq(snapccl_fused_block_cap(c), 132 * 2 / 2 / 8);
  c->peers[5].sm_count = 78; /* the smallest GPU bounds every rank's grid alike */
  cr_assert_eq(snapccl_fused_block_cap(c), 78 * 2 / 2 / 8);
  fake_free(c);
}

/* Where the two-kernel paths keep the reduced rows. */
Test(fused_route, sum_buffer) {
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_fused f = make(c, 4, 8, ncclBfloat16);
  cr_assert_eq(snapccl_fused_sum_buffer(&f), (void*)g_norm);
  f.sum_out = g_sum;
  cr_assert_eq(snapccl_fused_sum_buffer(&f), (void*)g_sum);
  f.sum_out = NULL;
  f.quant = FUSED_QUANT_FP8_STATIC;
  cr_assert_eq(snapccl_fused_sum_buffer(&f), (void*)g_rout);
  f.residual_out = (void*)g_res; /* in place: residual_in is still needed */
  cr_assert_null(snapccl_fused_sum_buffer(&f));
  f.residual_out = NULL;
  cr_assert_null(snapccl_fused_sum_buffer(&f));
  fake_free(c);
}

/* ================= the fp64 reference ================= */

TestSuite(fused_reference);

Test(fused_reference, rounding) {
  /* Values whose encodings test_allreduce.c's host checks pin down. */
  cr_assert_eq(fref_round(FREF_BF16, 1.0 / 3.0), 0.333984375);       /* 0x3EAB */
  cr_assert_eq(fref_round(FREF_F16, 1.0 / 3.0), 0.333251953125);     /* 0x3555 */
  cr_assert_eq(fref_round(FREF_F16, 65520.0), INFINITY, "ties at the top round to infinity");
  cr_assert_eq(fref_round(FREF_F16, 1.0 + fref_pow2(-11)), 1.0, "ties to even (down)");
  cr_assert_eq(fref_round(FREF_F16, 1.0 + 3 * fref_pow2(-11)), 1.0 + fref_pow2(-9), "ties to even (up)");
  cr_assert_eq(fref_round(FREF_F16, fref_pow2(-24)), fref_pow2(-24), "smallest subnormal");
  cr_assert_eq(fref_round(FREF_F16, fref_pow2(-25)), 0.0, "half of it ties to zero");
  cr_assert_eq(fref_round(FREF_F32, 1.0 + fref_pow2(-24)), 1.0);
  cr_assert_eq(fref_round(FREF_F32, 1.0 + 3 * fref_pow2(-24)), 1.0 + fref_pow2(-22));
  cr_assert_eq(fref_round(FREF_BF16, -2.0), -2.0);
  cr_assert_eq(fref_round(FREF_E4M3, 1.0), 1.0);
  cr_assert_eq(fref_round(FREF_E4M3, 464.0), 448.0, "the tie above 448 rounds to even (448)");
  cr_assert_eq(fref_round(FREF_E4M3, 1e6), 448.0, "saturates (satfinite)");
  cr_assert_eq(fref_round(FREF_E4M3, -1e6), -448.0);
  cr_assert_eq(fref_round(FREF_E4M3, 1.0 + 1.0 / 16), 1.0, "3 mantissa bits: tie to even");
  cr_assert_eq(fref_round(FREF_E4M3, 1.0 + 3.0 / 16), 1.25);
  cr_assert_eq(fref_round(FREF_E4M3, fref_pow2(-9)), fref_pow2(-9), "smallest subnormal");
  cr_assert_eq(fref_round(FREF_E4M3, 3 * fref_pow2(-11)), fref_pow2(-9));
  cr_assert_eq(fref_ulp(FREF_BF16, 1.0), fref_pow2(-7));
  cr_assert_eq(fref_ulp(FREF_F16, 1.5), fref_pow2(-10));
  cr_assert_eq(fref_ulp(FREF_E4M3, 300.0), 32.0);
  cr_assert_eq(fref_ulp(FREF_F32, 0.0), fref_pow2(-149));
  cr_assert(isnan(fref_round(FREF_BF16, NAN)));
  cr_assert(fref_close(FREF_BF16, 1.0 + fref_pow2(-7), 1.0, 1.0));
  cr_assert(!fref_close(FREF_BF16, 1.0 + fref_pow2(-6), 1.0, 1.0));
  cr_assert(!fref_close(FREF_BF16, NAN, 1.0, 100.0), "NaN (poison) never passes");
}

/* A row worked by hand: two ranks, hidden 2. */
Test(fused_reference, by_hand) {
  const double in0[] = {1, 2}, in1[] = {3, 4}, res[] = {1, 1}, gamma[] = {2, 0.5};
  const double* in[] = {in0, in1};
  double sum[2], r[2], norm[2], v[2], sc = 0;
  fref_row(FREF_F32, 2, in, res, gamma, 2, 0, 0.0, 0, 0, sum, r, norm, &sc, v);
  cr_assert_eq(sum[0], 4);
  cr_assert_eq(sum[1], 6);
  cr_assert_eq(r[0], 5);
  cr_assert_eq(r[1], 7);
  const double inv = 1.0 / fref_sqrt((25.0 + 49.0) / 2.0);
  cr_assert_float_eq(v[0], 5 * inv * 2, 1e-15);
  cr_assert_float_eq(v[1], 7 * inv * 0.5, 1e-15);
  cr_assert_eq(norm[0], fref_round(FREF_F32, v[0]));
  /* eps enters under the root. */
  fref_row(FREF_F32, 2, in, res, NULL, 2, 0, 1.0, 0, 0, sum, r, norm, &sc, v);
  cr_assert_float_eq(v[0], 5 / fref_sqrt(38.0), 1e-15);
  /* No residual: res is the sum. */
  fref_row(FREF_BF16, 2, in, NULL, NULL, 2, 0, 0.0, 0, 0, sum, r, norm, &sc, v);
  cr_assert_eq(r[0], 4);
  cr_assert_eq(r[1], 6);
  /* fp8: static scale 0.5 doubles the values; dynamic puts the row's amax at 448. */
  fref_row(FREF_BF16, 2, in, res, gamma, 2, 0, 0.0, 1, 0.5, sum, r, norm, &sc, v);
  cr_assert_eq(norm[0], fref_round(FREF_E4M3, 2 * v[0]));
  fref_row(FREF_BF16, 2, in, res, gamma, 2, 0, 0.0, 2, 0, sum, r, norm, &sc, v);
  cr_assert_float_eq(sc, fref_max(fref_abs(v[0]), fref_abs(v[1])) / 448.0, 1e-15);
  cr_assert_eq(fref_max(fref_abs(norm[0]), fref_abs(norm[1])), 448.0);
  /* An all-zero row: the smallest scale, zeros out. */
  const double z[] = {0, 0};
  const double* zin[] = {z, z};
  fref_row(FREF_F16, 2, zin, NULL, NULL, 2, 0, 1e-6, 2, 0, sum, r, norm, &sc, v);
  cr_assert_eq(sc, FREF_MIN_SCALE);
  cr_assert_eq(norm[0], 0.0);
}

/* The normalised row has unit RMS (gamma ones, eps 0) and scales away: rmsnorm(k x) ==
 * rmsnorm(x). Sums round to the dtype once, whatever the order of ranks. */
Test(fused_reference, properties) {
  enum { HD = 1000 };
  static double a[HD], b[HD], v[HD], w[HD];
  uint64_t s = 12345;
  for (int i = 0; i < HD; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    a[i] = fref_round(FREF_BF16, ((double)(s >> 11) / (double)(1ull << 53)) * 2 - 1);
    b[i] = a[i] * 4; /* exact */
  }
  fref_norm_row(a, NULL, HD, 0.0, v);
  fref_norm_row(b, NULL, HD, 0.0, w);
  double ms = 0;
  for (int i = 0; i < HD; i++) {
    ms += v[i] * v[i];
    cr_assert_float_eq(v[i], w[i], 1e-12);
  }
  cr_assert_float_eq(ms / HD, 1.0, 1e-12);
  const double* in[] = {a, b};
  const double* rev[] = {b, a};
  double s1[HD], s2[HD], r1[HD], n1[HD], sc;
  fref_row(FREF_BF16, 2, in, NULL, NULL, HD, 0, 1e-6, 0, 0, s1, r1, n1, &sc, v);
  fref_row(FREF_BF16, 2, rev, NULL, NULL, HD, 0, 1e-6, 0, 0, s2, r1, n1, &sc, v);
  for (int i = 0; i < HD; i++) {
    cr_assert_eq(s1[i], s2[i]);
    cr_assert_eq(s1[i], fref_round(FREF_BF16, s1[i]), "sums are dtype values");
  }
}
