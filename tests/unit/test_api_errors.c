/* Bad input to the NCCL API, without a GPU: every case must return NCCL's exact code,
 * leave a non-empty reason naming the problem in ncclGetLastError(), and neither crash
 * nor hang.
 *
 * Checks that need a live communicator (dtype/op/count checks of the collectives,
 * custom reduction operators, error states) run on a "fake" communicator: a
 * snapccl_comm made by snapccl_comm_alloc, given a rank and a size, marked initialized
 * and put in the handle registry, but with no bootstrap and no transport. Every call
 * made on it in this file fails (or succeeds) before it would touch a GPU. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bootstrap.h"
#include "coll.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "group.h"
#include "nccl.h"
#include "registry.h"

/* ---- helpers ---- */

/* Checks a result: the exact code and, for failures, a non-empty last error that
 * contains every given needle (case-insensitive). */
static void check_result(const char* expr, int line, ncclResult_t got, ncclResult_t want,
                         const char* needle1, const char* needle2) {
  const char* err = ncclGetLastError(NULL);
  cr_assert_eq(got, want, "line %d: %s returned %d (%s), expected %d (%s); last error: \"%s\"",
               line, expr, (int)got, ncclGetErrorString(got), (int)want,
               ncclGetErrorString(want), err ? err : "(null)");
  if (want == ncclSuccess) return;
  cr_assert(err != NULL && err[0] != '\0', "line %d: %s failed with an empty ncclGetLastError()",
            line, expr);
  if (needle1)
    cr_assert(strcasestr(err, needle1) != NULL,
              "line %d: %s: last error \"%s\" does not mention \"%s\"", line, expr, err, needle1);
  if (needle2)
    cr_assert(strcasestr(err, needle2) != NULL,
              "line %d: %s: last error \"%s\" does not mention \"%s\"", line, expr, err, needle2);
}

/* Clears the last error first, so the text checked is the one this call left. */
#define EXPECT2(call, code, needle1, needle2)                                  \
  do {                                                                         \
    snapccl_clear_last_error();                                                \
    ncclResult_t r_ = (call);                                                  \
    check_result(#call, __LINE__, r_, (code), (needle1), (needle2));           \
  } while (0)
#define EXPECT(call, code, needle) EXPECT2(call, code, needle, NULL)
/* For ncclGroupEnd reporting the error of a call made inside the group: the reason is
 * the one that call left, so the last error is not cleared first. */
#define EXPECT_KEEP(call, code, needle)                                        \
  do {                                                                         \
    ncclResult_t r_ = (call);                                                  \
    check_result(#call, __LINE__, r_, (code), (needle), NULL);                 \
  } while (0)
#define EXPECT_OK(call) EXPECT2(call, ncclSuccess, NULL, NULL)

/* A communicator as far as the API's checks can tell: initialized, registered, with
 * nranks ranks, but no bootstrap, transport or GPU behind it. */
static struct snapccl_comm* fake_new(int nranks, int rank) {
  struct snapccl_comm* c = NULL;
  cr_assert_eq(snapccl_comm_alloc(&c), ncclSuccess);
  cr_assert_not_null(c);
  cr_assert_eq(snapccl_config_parse(NULL, &c->config), ncclSuccess);
  c->nranks = nranks;
  c->rank = rank;
  c->cuda_dev = 3;
  atomic_store(&c->async_state, ncclSuccess);
  cr_assert_eq(snapccl_registry_add(c, c), ncclSuccess);
  return c;
}

static void fake_free(struct snapccl_comm* c) {
  if (snapccl_registry_remove(c) == c) snapccl_comm_free(c);
}

#define H(c) ((ncclComm_t)(c))

static int have_gpu(void) {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static ncclUniqueId zero_id(void) {
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  return id;
}

static void setup(void) {
  /* Standalone mode: no real NCCL to hand unknown handles to. */
  unsetenv("SNAPCCL_NCCL_LIB");
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

/* A handle that was never a communicator (never dereferenced by a correct library). */
#define BOGUS_COMM ((ncclComm_t)(uintptr_t)0x7f00deadbee0ull)

static float g_sendbuf[64], g_recvbuf[64 * 8];

/* ================= versions and error strings ================= */

TestSuite(version, .init = setup);

Test(version, get_version) {
  int v = -1;
  EXPECT(ncclGetVersion(NULL), ncclInvalidArgument, "version");
  EXPECT(pncclGetVersion(NULL), ncclInvalidArgument, "version");
  EXPECT_OK(ncclGetVersion(&v));
  cr_assert_eq(v, NCCL_VERSION_CODE);
  cr_assert_eq(v, 22707);
  v = -1;
  EXPECT_OK(pncclGetVersion(&v));
  cr_assert_eq(v, 22707);
}

Test(version, error_strings) {
  /* NVIDIA's exact texts (programs and test scripts grep for them). */
  static const char* const want[] = {
      "no error",
      "unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
      "unhandled system error (run with NCCL_DEBUG=INFO for details)",
      "internal error - please report this issue to the NCCL developers",
      "invalid argument (run with NCCL_DEBUG=WARN for details)",
      "invalid usage (run with NCCL_DEBUG=WARN for details)",
      "remote process exited or there was a network error",
      "NCCL operation in progress",
  };
  cr_assert_eq(sizeof want / sizeof want[0], (size_t)ncclNumResults);
  for (int i = 0; i < ncclNumResults; i++) {
    const char* s = ncclGetErrorString((ncclResult_t)i);
    cr_assert_not_null(s, "code %d", i);
    cr_assert_str_eq(s, want[i], "code %d", i);
    cr_assert_str_eq(pncclGetErrorString((ncclResult_t)i), want[i], "code %d", i);
  }
  const int bad[] = {ncclNumResults, 9, 1234, -1, INT_MIN, INT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char* s = ncclGetErrorString((ncclResult_t)bad[i]);
    cr_assert_not_null(s, "code %d", bad[i]);
    cr_assert_str_eq(s, "unknown result code", "code %d", bad[i]);
  }
}

Test(version, last_error_is_process_wide) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclCommCount(NULL, NULL), ncclInvalidArgument, NULL);
  const char* a = ncclGetLastError(NULL);
  cr_assert(a && *a);
  char copy[1024];
  snprintf(copy, sizeof copy, "%s", a);
  /* The comm argument does not select another text (NCCL ignores it too). */
  cr_assert_str_eq(ncclGetLastError(H(c)), copy);
  cr_assert_str_eq(pncclGetLastError(NULL), copy);
  fake_free(c);
}

/* ================= NULL communicators and NULL out-pointers ================= */

TestSuite(null_args, .init = setup);

Test(null_args, queries) {
  int v = 12345;
  EXPECT2(ncclCommCount(NULL, &v), ncclInvalidArgument, "ncclCommCount", "comm");
  EXPECT2(ncclCommCuDevice(NULL, &v), ncclInvalidArgument, "ncclCommCuDevice", "comm");
  EXPECT2(ncclCommUserRank(NULL, &v), ncclInvalidArgument, "ncclCommUserRank", "comm");
  EXPECT(pncclCommCount(NULL, &v), ncclInvalidArgument, "comm");
  cr_assert_eq(v, 12345, "a failed query wrote its output");

  struct snapccl_comm* c = fake_new(4, 2);
  EXPECT2(ncclCommCount(H(c), NULL), ncclInvalidArgument, "count", "NULL");
  EXPECT2(ncclCommCuDevice(H(c), NULL), ncclInvalidArgument, "device", "NULL");
  EXPECT2(ncclCommUserRank(H(c), NULL), ncclInvalidArgument, "rank", "NULL");
  /* ... and the same calls with good arguments answer. */
  EXPECT_OK(ncclCommCount(H(c), &v));
  cr_assert_eq(v, 4);
  EXPECT_OK(ncclCommCuDevice(H(c), &v));
  cr_assert_eq(v, 3);
  EXPECT_OK(ncclCommUserRank(H(c), &v));
  cr_assert_eq(v, 2);
  fake_free(c);
}

Test(null_args, get_async_error) {
  ncclResult_t a = ncclNumResults;
  EXPECT(ncclCommGetAsyncError(NULL, &a), ncclInvalidArgument, "comm");
  cr_assert_eq(a, ncclNumResults, "a failed call wrote its output");
  struct snapccl_comm* c = fake_new(2, 1);
  EXPECT(ncclCommGetAsyncError(H(c), NULL), ncclInvalidArgument, "asyncError");
  EXPECT_OK(ncclCommGetAsyncError(H(c), &a));
  cr_assert_eq(a, ncclSuccess);
  fake_free(c);
}

Test(null_args, register_deregister) {
  char buf[64];
  void* h = (void*)&h;
  EXPECT2(ncclCommRegister(NULL, buf, sizeof buf, &h), ncclInvalidArgument, "ncclCommRegister",
          "comm");
  EXPECT(ncclCommDeregister(NULL, h), ncclInvalidArgument, "comm");
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclCommRegister(H(c), buf, sizeof buf, NULL), ncclInvalidArgument, "handle");
  EXPECT(ncclCommRegister(H(c), NULL, sizeof buf, &h), ncclInvalidArgument, "buff");
  /* A good registration goes round trip (snapccl only remembers it). */
  h = NULL;
  EXPECT_OK(ncclCommRegister(H(c), buf, sizeof buf, &h));
  cr_assert_not_null(h);
  EXPECT(ncclCommDeregister(NULL, h), ncclInvalidArgument, "comm");
  EXPECT_OK(ncclCommDeregister(H(c), h));
  fake_free(c);
}

/* NCCL 2.27 (register.cc, commDeregister / ncclCommWindowDeregister): a NULL handle or
 * window is a no-op returning ncclSuccess. Programs rely on it: ncclCommRegister hands
 * out NULL handles when NCCL_LOCAL_REGISTER=0, and they deregister whatever they got. */
Test(null_args, deregister_null_handle_is_noop) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT_OK(ncclCommDeregister(H(c), NULL));
  EXPECT_OK(ncclCommWindowDeregister(H(c), NULL));
  fake_free(c);
}

Test(null_args, window_register) {
  char buf[64];
  ncclWindow_t w = NULL;
  EXPECT2(ncclCommWindowRegister(NULL, buf, sizeof buf, &w, NCCL_WIN_DEFAULT),
          ncclInvalidArgument, "ncclCommWindowRegister", "comm");
  EXPECT(ncclCommWindowDeregister(NULL, w), ncclInvalidArgument, "comm");
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclCommWindowRegister(H(c), buf, sizeof buf, NULL, NCCL_WIN_DEFAULT),
         ncclInvalidArgument, "NULL");
  EXPECT(ncclCommWindowRegister(H(c), buf, sizeof buf, &w, 0x80), ncclInvalidArgument, "flags");
  EXPECT_OK(ncclCommWindowRegister(H(c), buf, sizeof buf, &w, NCCL_WIN_COLL_SYMMETRIC));
  cr_assert_not_null(w);
  EXPECT_OK(ncclCommWindowDeregister(H(c), w));
  fake_free(c);
}

Test(null_args, redop_create_destroy) {
  ncclRedOp_t op = ncclSum;
  float s = 2.0f;
  EXPECT2(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, NULL),
          ncclInvalidArgument, "ncclRedOpCreatePreMulSum", "comm");
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclRedOpCreatePreMulSum(NULL, &s, ncclFloat32, ncclScalarHostImmediate, H(c)),
         ncclInvalidArgument, "op");
  EXPECT(ncclRedOpCreatePreMulSum(&op, NULL, ncclFloat32, ncclScalarHostImmediate, H(c)),
         ncclInvalidArgument, "scalar");
  EXPECT(ncclRedOpCreatePreMulSum(&op, &s, ncclNumTypes, ncclScalarHostImmediate, H(c)),
         ncclInvalidArgument, "datatype");
  EXPECT(ncclRedOpCreatePreMulSum(&op, &s, (ncclDataType_t)-1, ncclScalarHostImmediate, H(c)),
         ncclInvalidArgument, "datatype");
  EXPECT(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, (ncclScalarResidence_t)2, H(c)),
         ncclInvalidArgument, "residence");
  cr_assert_eq(op, ncclSum, "a failed create wrote its output");
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, H(c)));
  EXPECT2(ncclRedOpDestroy(op, NULL), ncclInvalidArgument, "ncclRedOpDestroy", "comm");
  EXPECT_OK(ncclRedOpDestroy(op, H(c)));
  fake_free(c);
}

Test(null_args, split) {
  ncclComm_t nc = BOGUS_COMM;
  EXPECT2(ncclCommSplit(NULL, 0, 0, &nc, NULL), ncclInvalidArgument, "ncclCommSplit", "comm");
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclCommSplit(H(c), 0, 0, NULL, NULL), ncclInvalidArgument, "newcomm");
  EXPECT(ncclCommSplit(H(c), -5, 0, &nc, NULL), ncclInvalidArgument, "color");
  ncclConfig_t bad;
  memset(&bad, 0, sizeof bad);
  EXPECT(ncclCommSplit(H(c), 0, 0, &nc, &bad), ncclInvalidArgument, "NCCL_CONFIG_INITIALIZER");
  fake_free(c);
}

Test(null_args, shrink) {
  ncclComm_t nc = BOGUS_COMM;
  int ex[2] = {1, 0};
  EXPECT2(ncclCommShrink(NULL, ex, 1, &nc, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
          "ncclCommShrink", "comm");
  struct snapccl_comm* c = fake_new(4, 0);
  EXPECT(ncclCommShrink(H(c), ex, 1, NULL, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "newcomm");
  EXPECT(ncclCommShrink(H(c), NULL, 1, &nc, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "exclude");
  EXPECT(ncclCommShrink(H(c), ex, -1, &nc, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "exclude");
  EXPECT(ncclCommShrink(H(c), ex, 1, &nc, NULL, 0x10), ncclInvalidArgument, "flags");
  int out_of_range[1] = {4};
  EXPECT(ncclCommShrink(H(c), out_of_range, 1, &nc, NULL, NCCL_SHRINK_DEFAULT),
         ncclInvalidArgument, "out of range");
  int negative[1] = {-1};
  EXPECT(ncclCommShrink(H(c), negative, 1, &nc, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "out of range");
  int self[1] = {0};
  EXPECT(ncclCommShrink(H(c), self, 1, &nc, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "exclude");
  ncclConfig_t bad = NCCL_CONFIG_INITIALIZER;
  bad.magic = 0;
  EXPECT(ncclCommShrink(H(c), ex, 1, &nc, &bad, NCCL_SHRINK_DEFAULT), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  fake_free(c);
}

Test(null_args, destroy_and_abort_null_succeed) {
  EXPECT_OK(ncclCommDestroy(NULL));
  EXPECT_OK(ncclCommAbort(NULL));
  EXPECT_OK(pncclCommDestroy(NULL));
  EXPECT_OK(pncclCommAbort(NULL));
}

/* NCCL 2.27 (init.cc, ncclCommFinalize): "if (comm == NULL) goto exit;" with
 * ret = ncclSuccess, like Destroy and Abort. */
Test(null_args, finalize_null_succeeds) {
  EXPECT_OK(ncclCommFinalize(NULL));
}

Test(null_args, mem_alloc) {
  EXPECT(ncclMemAlloc(NULL, 64), ncclInvalidArgument, "ptr");
  EXPECT_OK(ncclMemFree(NULL));
}

/* ================= handles that are not (or no longer) communicators ================= */

TestSuite(bad_handle, .init = setup);

static void expect_not_valid(ncclComm_t comm) {
  int n = -7;
  EXPECT2(ncclAllReduce(g_sendbuf, g_recvbuf, 16, ncclFloat32, ncclSum, comm, NULL),
          ncclInvalidArgument, "ncclAllReduce", "not valid");
  EXPECT2(ncclAllGather(g_sendbuf, g_recvbuf, 16, ncclFloat32, comm, NULL), ncclInvalidArgument,
          "ncclAllGather", "not valid");
  EXPECT2(ncclReduceScatter(g_sendbuf, g_recvbuf, 16, ncclFloat32, ncclSum, comm, NULL),
          ncclInvalidArgument, "ncclReduceScatter", "not valid");
  EXPECT2(ncclCommCount(comm, &n), ncclInvalidArgument, "ncclCommCount", "not valid");
  cr_assert_eq(n, -7);
  EXPECT(ncclCommUserRank(comm, &n), ncclInvalidArgument, "not valid");
  EXPECT(ncclCommCuDevice(comm, &n), ncclInvalidArgument, "not valid");
  ncclResult_t a;
  EXPECT(ncclCommGetAsyncError(comm, &a), ncclInvalidArgument, "not valid");
  float s = 1.0f;
  ncclRedOp_t op;
  EXPECT(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, comm),
         ncclInvalidArgument, "not valid");
  /* Inside a group, too (nothing must be deferred for a bad handle). */
  EXPECT_OK(ncclGroupStart());
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 16, ncclFloat32, ncclSum, comm, NULL),
         ncclInvalidArgument, "not valid");
  EXPECT_KEEP(ncclGroupEnd(), ncclInvalidArgument, "not valid");
  cr_assert_eq(snapccl_group_depth(), 0);
}

Test(bad_handle, random_pointer) {
  int before = snapccl_registry_count();
  expect_not_valid(BOGUS_COMM);
  expect_not_valid((ncclComm_t)g_sendbuf); /* a real address that holds no communicator */
  EXPECT(ncclCommDestroy(BOGUS_COMM), ncclInvalidArgument, "not valid");
  EXPECT(ncclCommFinalize(BOGUS_COMM), ncclInvalidArgument, "not valid");
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(bad_handle, destroyed_communicator) {
  struct snapccl_comm* c = fake_new(2, 0);
  ncclComm_t h = H(c);
  int before = snapccl_registry_count();
  EXPECT_OK(ncclCommDestroy(h));
  cr_assert_eq(snapccl_registry_count(), before - 1);
  expect_not_valid(h);
  /* Destroying twice is a user error NCCL reports, not a double free. */
  EXPECT(ncclCommDestroy(h), ncclInvalidArgument, "not valid");
  EXPECT(ncclCommAbort(h), ncclInvalidArgument, "not valid");
}

Test(bad_handle, aborted_communicator) {
  struct snapccl_comm* c = fake_new(2, 0);
  ncclComm_t h = H(c);
  EXPECT_OK(ncclCommAbort(h));
  expect_not_valid(h);
}

Test(bad_handle, finalize_then_destroy) {
  struct snapccl_comm* c = fake_new(2, 1);
  ncclComm_t h = H(c);
  EXPECT_OK(ncclCommFinalize(h));
  EXPECT_OK(ncclCommDestroy(h));
  expect_not_valid(h);
}

/* ================= init arguments ================= */

TestSuite(init, .init = setup);

Test(init, bad_ranks) {
  ncclUniqueId id = zero_id(); /* rank checks come before the id is looked at */
  ncclComm_t c = NULL;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  const int cases[][2] = {{0, 0}, {-1, 0}, {INT_MIN, 0}, {2, -1}, {2, 2}, {2, 3}, {1, 1},
                          {4, INT_MIN}, {4, INT_MAX}};
  int before = snapccl_registry_count();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int nranks = cases[i][0], rank = cases[i][1];
    EXPECT2(ncclCommInitRank(&c, nranks, id, rank), ncclInvalidArgument, "ncclCommInitRank",
            "rank");
    EXPECT2(ncclCommInitRankConfig(&c, nranks, id, rank, &cfg), ncclInvalidArgument,
            "ncclCommInitRankConfig", "rank");
    EXPECT2(ncclCommInitRankScalable(&c, nranks, rank, 1, &id, &cfg), ncclInvalidArgument,
            "ncclCommInitRankScalable", "rank");
    EXPECT(pncclCommInitRank(&c, nranks, id, rank), ncclInvalidArgument, "rank");
    cr_assert_null(c, "a failed init (%d/%d) returned a communicator", rank, nranks);
  }
  EXPECT(ncclCommInitRank(NULL, 2, id, 0), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitRankConfig(NULL, 2, id, 0, &cfg), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitRankScalable(NULL, 2, 0, 1, &id, &cfg), ncclInvalidArgument, "comm");
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, scalable_ids) {
  ncclComm_t c = NULL;
  ncclUniqueId ids[2] = {zero_id(), zero_id()};
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 0, ids, NULL), ncclInvalidArgument, "nId");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, -1, ids, NULL), ncclInvalidArgument, "nId");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 1, NULL, NULL), ncclInvalidArgument, "commIds");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 2, ids, NULL), ncclInvalidArgument, "unique id");
  cr_assert_null(c);
}

Test(init, id_no_root_produced) {
  ncclComm_t c = NULL;
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  int before = snapccl_registry_count();
  ncclUniqueId id = zero_id();
  EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "unique id");
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 1, &cfg), ncclInvalidArgument, "unique id");
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 1, NULL), ncclInvalidArgument, "unique id");

  /* Random bytes: different every run, never a valid id. */
  unsigned seed = (unsigned)getpid();
  for (int round = 0; round < 16; round++) {
    for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++) id.internal[i] = (char)(rand_r(&seed) & 0xff);
    uint64_t magic;
    memcpy(&magic, id.internal, sizeof magic);
    if (magic == SNAPCCL_ID_MAGIC) continue;
    EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "unique id");
  }

  /* The right magic but no usable root address: still refused before any connect. */
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  u.family = 12345;
  memcpy(id.internal, &u, sizeof u);
  EXPECT(ncclCommInitRank(&c, 2, id, 0), ncclInvalidArgument, "address");
  cr_assert_null(c);
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, get_unique_id) {
  EXPECT2(ncclGetUniqueId(NULL), ncclInvalidArgument, "ncclGetUniqueId", "NULL");
  EXPECT(pncclGetUniqueId(NULL), ncclInvalidArgument, "NULL");
  ncclUniqueId a, b;
  EXPECT_OK(ncclGetUniqueId(&a));
  EXPECT_OK(ncclGetUniqueId(&b));
  EXPECT_OK(snapccl_bootstrap_check_id(&a));
  cr_assert(memcmp(&a, &b, sizeof a) != 0, "two ids are identical");
}

Test(init, config_not_from_initializer) {
  ncclUniqueId id = zero_id(); /* config checks come before the id's */
  ncclComm_t c = NULL;
  ncclConfig_t cfg;
  memset(&cfg, 0, sizeof cfg);
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  ncclConfig_t cfg2 = NCCL_CONFIG_INITIALIZER;
  cfg2.magic = 0xcafebeee;
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  EXPECT(ncclCommInitRankScalable(&c, 2, 0, 1, &id, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  memset(&cfg2, 0xff, sizeof cfg2);
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg2), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  cr_assert_null(c);
}

Test(init, config_bad_values) {
  ncclUniqueId id = zero_id();
  ncclComm_t c = NULL;
  const int bad_blocking[] = {7, 2, -1, INT_MAX};
  for (size_t i = 0; i < sizeof bad_blocking / sizeof bad_blocking[0]; i++) {
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = bad_blocking[i];
    EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument, "blocking");
  }
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.minCTAs = 8;
  cfg.maxCTAs = 2;
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &cfg), ncclInvalidArgument, "CTAs");
  /* Valid values get past the config: the id is what fails now. */
  ncclConfig_t ok = NCCL_CONFIG_INITIALIZER;
  ok.blocking = 0;
  ok.minCTAs = 1;
  ok.maxCTAs = 4;
  ok.commName = "valid";
  EXPECT(ncclCommInitRankConfig(&c, 2, id, 0, &ok), ncclInvalidArgument, "unique id");
  cr_assert_null(c);
}

/* Without a GPU a well-formed init fails cleanly: a CUDA error, no communicator, no
 * registry entry, no hang. */
Test(init, valid_id_without_gpu, .timeout = 60) {
  if (have_gpu()) cr_skip_test("a GPU is present; this case is about hosts without one");
  ncclUniqueId id;
  EXPECT_OK(ncclGetUniqueId(&id));
  int before = snapccl_registry_count();
  ncclComm_t c = BOGUS_COMM;
  EXPECT(ncclCommInitRank(&c, 1, id, 0), ncclUnhandledCudaError, "cuda");
  cr_assert(c == NULL || c == BOGUS_COMM, "a failed init returned a communicator");
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  c = NULL;
  EXPECT(ncclCommInitRankConfig(&c, 1, id, 0, &cfg), ncclUnhandledCudaError, "cuda");
  cr_assert_null(c);
  cr_assert_eq(snapccl_registry_count(), before);
}

Test(init, init_all) {
  ncclComm_t comms[4] = {0};
  int devs[2] = {0, 1};
  EXPECT2(ncclCommInitAll(NULL, 1, NULL), ncclInvalidArgument, "ncclCommInitAll", "comm");
  EXPECT(ncclCommInitAll(NULL, 2, devs), ncclInvalidArgument, "comm");
  EXPECT(ncclCommInitAll(comms, 0, NULL), ncclInvalidArgument, "ndev");
  EXPECT(ncclCommInitAll(comms, -1, devs), ncclInvalidArgument, "ndev");
  EXPECT(ncclCommInitAll(comms, INT_MIN, NULL), ncclInvalidArgument, "ndev");
  for (int i = 0; i < 4; i++) cr_assert_null(comms[i]);
}

/* ================= snapccl_config_parse: older and newer ncclConfig_t ================= */

TestSuite(config, .init = setup);

/* Puts n bytes at the very end of a page followed by an inaccessible page: any read
 * past them faults, so the parser provably reads only what .size covers. */
static void* at_page_end(const void* src, size_t n, void** map, size_t* maplen) {
  size_t pg = (size_t)sysconf(_SC_PAGESIZE);
  char* p = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert(p != MAP_FAILED);
  cr_assert_eq(mprotect(p + pg, pg, PROT_NONE), 0);
  char* dst = p + pg - n;
  memcpy(dst, src, n);
  *map = p;
  *maplen = 2 * pg;
  return dst;
}

/* ncclConfig_t as the 2.14 header had it (blocking was the only user field). */
struct config_v21400 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
};

/* ... and as 2.17 had it. */
struct config_v21700 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
};

/* A future header that appended fields. */
struct config_future {
  ncclConfig_t base;
  int extra1;
  int extra2;
  const char* extra3;
  char extra4[40];
};

Test(config, null_is_defaults) {
  struct snapccl_config out;
  memset(&out, 0x5a, sizeof out);
  EXPECT_OK(snapccl_config_parse(NULL, &out));
  cr_assert_eq(out.blocking, 1);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  ncclConfig_t init = NCCL_CONFIG_INITIALIZER;
  EXPECT_OK(snapccl_config_parse(&init, &out));
  cr_assert_eq(out.blocking, 1, "UNDEF blocking must mean blocking");
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
}

Test(config, current_fields_read) {
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  cfg.minCTAs = 2;
  cfg.maxCTAs = 16;
  cfg.splitShare = 1;
  cfg.commName = "current";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&cfg, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 2);
  cr_assert_eq(out.max_ctas, 16);
  cr_assert_eq(out.split_share, 1);
  cr_assert_str_eq(out.name, "current");
}

Test(config, older_smaller_struct_v2_14) {
  struct config_v21400 old = {sizeof old, 0xcafebeef, NCCL_VERSION(2, 14, 3), 0};
  void* map;
  size_t maplen;
  const ncclConfig_t* p = at_page_end(&old, sizeof old, &map, &maplen);
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(p, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  /* Its blocking is still validated. */
  old.blocking = 7;
  memcpy((void*)p, &old, sizeof old);
  EXPECT(snapccl_config_parse(p, &out), ncclInvalidArgument, "blocking");
  munmap(map, maplen);
}

Test(config, older_smaller_struct_v2_17) {
  struct config_v21700 old = {sizeof old, 0xcafebeef, NCCL_VERSION(2, 17, 1), 1,
                              NCCL_CONFIG_UNDEF_INT, 3, 9, NULL};
  void* map;
  size_t maplen;
  const ncclConfig_t* p = at_page_end(&old, sizeof old, &map, &maplen);
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(p, &out));
  cr_assert_eq(out.blocking, 1);
  cr_assert_eq(out.min_ctas, 3);
  cr_assert_eq(out.max_ctas, 9);
  cr_assert_eq(out.split_share, 0);
  cr_assert_eq(out.name[0], '\0');
  munmap(map, maplen);
}

Test(config, size_field_bounds_reading) {
  /* A full struct whose .size claims the 2.14 layout: the later fields hold values
   * that would be refused (or be visible) if they were read. */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.size = sizeof(struct config_v21400);
  cfg.blocking = 0;
  cfg.minCTAs = 50;
  cfg.maxCTAs = 1; /* min > max: invalid if read */
  cfg.commName = "must not be read";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&cfg, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 0);
  cr_assert_eq(out.max_ctas, 0);
  cr_assert_eq(out.name[0], '\0');
  /* Too small to hold even blocking: not a config. */
  cfg.size = 8;
  EXPECT(snapccl_config_parse(&cfg, &out), ncclInvalidArgument, "NCCL_CONFIG_INITIALIZER");
}

Test(config, newer_larger_struct) {
  struct config_future f;
  memset(&f, 0x7f, sizeof f); /* trailing fields: garbage to an older library */
  ncclConfig_t init = NCCL_CONFIG_INITIALIZER;
  f.base = init;
  f.base.size = sizeof f;
  f.base.version = NCCL_VERSION(2, 99, 0);
  f.base.blocking = 0;
  f.base.minCTAs = 1;
  f.base.maxCTAs = 2;
  f.base.commName = "future";
  struct snapccl_config out;
  EXPECT_OK(snapccl_config_parse(&f.base, &out));
  cr_assert_eq(out.blocking, 0);
  cr_assert_eq(out.min_ctas, 1);
  cr_assert_eq(out.max_ctas, 2);
  cr_assert_str_eq(out.name, "future");
  f.base.blocking = 7; /* known fields are still checked */
  EXPECT(snapccl_config_parse(&f.base, &out), ncclInvalidArgument, "blocking");
}

/* ================= groups ================= */

TestSuite(group, .init = setup);

Test(group, end_without_start) {
  EXPECT2(ncclGroupEnd(), ncclInvalidUsage, "ncclGroupEnd", "ncclGroupStart");
  EXPECT(pncclGroupEnd(), ncclInvalidUsage, "ncclGroupStart");
  cr_assert_eq(snapccl_group_depth(), 0);
}

Test(group, nested) {
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupStart());
  cr_assert_eq(snapccl_group_depth(), 2);
  EXPECT_OK(ncclGroupEnd());
  cr_assert_eq(snapccl_group_depth(), 1);
  EXPECT_OK(ncclGroupEnd());
  cr_assert_eq(snapccl_group_depth(), 0);
  EXPECT(ncclGroupEnd(), ncclInvalidUsage, "ncclGroupStart");
}

/* As NCCL: a NULL simInfo makes ncclGroupSimulateEnd a plain ncclGroupEnd, so outside a
 * group it is the same usage error, and inside one it closes the group. */
Test(group, simulate_end_null_sim_info) {
  EXPECT(ncclGroupSimulateEnd(NULL), ncclInvalidUsage, "ncclGroupStart");
  cr_assert_eq(snapccl_group_depth(), 0);
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupSimulateEnd(NULL));
  cr_assert_eq(snapccl_group_depth(), 0);
}

Test(group, simulate_end_initialized) {
  ncclSimInfo_t info = NCCL_SIM_INFO_INITIALIZER;
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupSimulateEnd(&info));
  cr_assert_eq(snapccl_group_depth(), 0);
  cr_assert_float_eq(info.estimatedTime, 0.0f, 1e-6, "an empty group costs nothing");
}

/* NCCL (group.cc, ncclGroupEndInternal) closes the group level first and then refuses
 * the un-initialized simInfo: the failed call must not leave the thread in a group,
 * where every later call would be deferred to an ncclGroupEnd that never comes. */
Test(group, simulate_end_uninitialized_closes_group) {
  ncclSimInfo_t info;
  memset(&info, 0, sizeof info);
  EXPECT_OK(ncclGroupStart());
  EXPECT2(ncclGroupSimulateEnd(&info), ncclInvalidArgument, "ncclGroupSimulateEnd",
          "NCCL_SIM_INFO_INITIALIZER");
  int depth = snapccl_group_depth();
  while (snapccl_group_depth() > 0) snapccl_group_end(); /* leave clean either way */
  cr_assert_eq(depth, 0, "ncclGroupSimulateEnd failed but left the group open (depth %d)",
               depth);
}

Test(group, error_in_group_fails_group_end) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT_OK(ncclGroupStart());
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclNumTypes, ncclSum, H(c), NULL),
         ncclInvalidArgument, "type");
  EXPECT_KEEP(ncclGroupEnd(), ncclInvalidArgument, "type");
  cr_assert_eq(snapccl_group_depth(), 0);
  /* The error belonged to that group only. */
  EXPECT_OK(ncclGroupStart());
  EXPECT_OK(ncclGroupEnd());
  fake_free(c);
}

/* ================= collectives: dtype, op, count, buffers ================= */

TestSuite(coll, .init = setup);

static const enum snapccl_coll_kind kinds[] = {COLL_ALLREDUCE, COLL_ALLGATHER, COLL_REDUCESCATTER};

/* The public entry point of kind (AllGather takes no op). */
static ncclResult_t call_kind(enum snapccl_coll_kind k, const void* s, void* r, size_t count,
                              ncclDataType_t dt, ncclRedOp_t op, ncclComm_t comm) {
  switch (k) {
    case COLL_ALLREDUCE: return ncclAllReduce(s, r, count, dt, op, comm, NULL);
    case COLL_ALLGATHER: return ncclAllGather(s, r, count, dt, comm, NULL);
    case COLL_REDUCESCATTER: return ncclReduceScatter(s, r, count, dt, op, comm, NULL);
    default: return ncclInternalError;
  }
}

Test(coll, dtype_out_of_range) {
  struct snapccl_comm* c = fake_new(4, 1);
  struct snapccl_coll out;
  const int bad[] = {ncclNumTypes, 13, 255, -1, INT_MIN, INT_MAX};
  for (size_t k = 0; k < 3; k++)
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      EXPECT(call_kind(kinds[k], g_sendbuf, g_recvbuf, 4, (ncclDataType_t)bad[i], ncclSum, H(c)),
             ncclInvalidArgument, "type");
      EXPECT2(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, 4, (ncclDataType_t)bad[i],
                                   ncclSum, H(c), NULL, "ncclTestColl", &out),
              ncclInvalidArgument, "ncclTestColl", "type");
    }
  fake_free(c);
}

Test(coll, op_out_of_range) {
  struct snapccl_comm* c = fake_new(4, 1);
  struct snapccl_coll out;
  /* ncclNumOps and up are custom operators; none was created on this communicator. */
  const int bad[] = {-1, INT_MIN, ncclNumOps, ncclNumOps + 1, 1000, ncclMaxRedOp};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ncclRedOp_t op = (ncclRedOp_t)bad[i];
    EXPECT2(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c), NULL),
            ncclInvalidArgument, "ncclAllReduce", "reduction");
    EXPECT2(ncclReduceScatter(g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c), NULL),
            ncclInvalidArgument, "ncclReduceScatter", "reduction");
    EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c),
                                NULL, "t", &out),
           ncclInvalidArgument, "reduction");
    /* The op is no argument of AllGather: prepare ignores whatever is passed. */
    EXPECT_OK(snapccl_coll_prepare(COLL_ALLGATHER, g_sendbuf, g_recvbuf, 4, ncclFloat32, op,
                                   H(c), NULL, "t", &out));
  }
  /* Even a zero-count call checks its op. */
  EXPECT(ncclAllReduce(NULL, NULL, 0, ncclFloat32, (ncclRedOp_t)-1, H(c), NULL),
         ncclInvalidArgument, "reduction");
  fake_free(c);
}

Test(coll, count_overflow) {
  struct snapccl_comm* c = fake_new(4, 0);
  struct snapccl_coll out;
  const size_t f32 = 4, f64 = 8;
  /* AllReduce: count * size must fit in size_t. */
  EXPECT_OK(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, SIZE_MAX / f32,
                                 ncclFloat32, ncclSum, H(c), NULL, "t", &out));
  cr_assert_eq(out.count, SIZE_MAX / f32);
  EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, SIZE_MAX / f32 + 1,
                              ncclFloat32, ncclSum, H(c), NULL, "t", &out),
         ncclInvalidArgument, "overflow");
  EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, SIZE_MAX, ncclFloat64,
                              ncclSum, H(c), NULL, "t", &out),
         ncclInvalidArgument, "overflow");
  EXPECT_OK(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, SIZE_MAX, ncclUint8,
                                 ncclSum, H(c), NULL, "t", &out));
  /* AllGather / ReduceScatter: count * nranks * size must fit. */
  for (int k = 1; k <= 2; k++) {
    EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, SIZE_MAX / (4 * f64),
                                   ncclFloat64, ncclSum, H(c), NULL, "t", &out));
    EXPECT(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, SIZE_MAX / (4 * f64) + 1,
                                ncclFloat64, ncclSum, H(c), NULL, "t", &out),
           ncclInvalidArgument, "overflow");
    /* Fits one rank's buffer but not nranks of them. */
    EXPECT(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, SIZE_MAX / f32, ncclFloat32,
                                ncclSum, H(c), NULL, "t", &out),
           ncclInvalidArgument, "overflow");
    EXPECT(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, SIZE_MAX / 4 + 1, ncclInt8,
                                ncclSum, H(c), NULL, "t", &out),
           ncclInvalidArgument, "overflow");
    EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, SIZE_MAX / 4, ncclInt8,
                                   ncclSum, H(c), NULL, "t", &out));
  }
  /* Through the API (refused before anything is issued). */
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, SIZE_MAX, ncclFloat32, ncclSum, H(c), NULL),
         ncclInvalidArgument, "overflow");
  EXPECT(ncclAllGather(g_sendbuf, g_recvbuf, SIZE_MAX / 8, ncclFloat32, H(c), NULL),
         ncclInvalidArgument, "overflow");
  EXPECT(ncclReduceScatter(g_sendbuf, g_recvbuf, SIZE_MAX / 8, ncclFloat32, ncclSum, H(c), NULL),
         ncclInvalidArgument, "overflow");
  fake_free(c);
}

Test(coll, null_buffers) {
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_coll out;
  for (int k = 0; k < 3; k++) {
    EXPECT(call_kind(kinds[k], NULL, g_recvbuf, 8, ncclFloat32, ncclSum, H(c)),
           ncclInvalidArgument, "sendbuff");
    EXPECT(call_kind(kinds[k], g_sendbuf, NULL, 8, ncclFloat32, ncclSum, H(c)),
           ncclInvalidArgument, "recvbuff");
    EXPECT(call_kind(kinds[k], NULL, NULL, 1, ncclFloat32, ncclSum, H(c)), ncclInvalidArgument,
           "buff");
    /* Zero elements need no buffers (NCCL returns at once). */
    EXPECT_OK(call_kind(kinds[k], NULL, NULL, 0, ncclFloat32, ncclSum, H(c)));
    EXPECT_OK(snapccl_coll_prepare(kinds[k], NULL, NULL, 0, ncclFloat32, ncclSum, H(c), NULL,
                                   "t", &out));
    cr_assert_eq(out.count, 0);
    /* ... inside a group as well, where nothing is deferred for them. */
    EXPECT_OK(ncclGroupStart());
    EXPECT_OK(call_kind(kinds[k], NULL, NULL, 0, ncclFloat32, ncclSum, H(c)));
    EXPECT_OK(ncclGroupEnd());
  }
  fake_free(c);
}

Test(coll, prepare_fills_call) {
  struct snapccl_comm* c = fake_new(4, 3);
  struct snapccl_coll out;
  cudaStream_t s = (cudaStream_t)(uintptr_t)0x1234;
  EXPECT_OK(snapccl_coll_prepare(COLL_REDUCESCATTER, g_sendbuf, g_recvbuf, 7, ncclBfloat16,
                                 ncclMax, H(c), s, "t", &out));
  cr_assert_eq(out.kind, COLL_REDUCESCATTER);
  cr_assert_eq(out.sendbuff, (const void*)g_sendbuf);
  cr_assert_eq(out.recvbuff, (void*)g_recvbuf);
  cr_assert_eq(out.count, 7);
  cr_assert_eq(out.dtype, ncclBfloat16);
  cr_assert_eq(out.op, ncclMax);
  cr_assert_eq(out.devop, DEVOP_MAX);
  cr_assert_eq(out.scalar_mode, SCALAR_NONE);
  cr_assert_eq(out.comm, c);
  cr_assert_eq(out.stream, s);
  fake_free(c);
}

Test(coll, builtin_ops_resolve) {
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_coll out;
  const struct {
    ncclRedOp_t op;
    enum snapccl_devop devop;
  } map[] = {{ncclSum, DEVOP_SUM}, {ncclProd, DEVOP_PROD}, {ncclMax, DEVOP_MAX},
             {ncclMin, DEVOP_MIN}};
  for (int k = 0; k < 3; k += 2) /* AllReduce and ReduceScatter */
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
      for (int dt = 0; dt < ncclNumTypes; dt++) {
        EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, 4, (ncclDataType_t)dt,
                                       map[i].op, H(c), NULL, "t", &out));
        cr_assert_eq(out.devop, map[i].devop, "op %d dtype %d", (int)map[i].op, dt);
        cr_assert_eq(out.scalar_mode, SCALAR_NONE, "op %d dtype %d", (int)map[i].op, dt);
      }
  fake_free(c);
}

Test(coll, avg_resolves_by_type) {
  struct snapccl_comm* c = fake_new(3, 0);
  struct snapccl_coll out;
  const ncclDataType_t floats[] = {ncclFloat16, ncclFloat32, ncclFloat64, ncclBfloat16,
                                   ncclFloat8e4m3, ncclFloat8e5m2};
  const ncclDataType_t ints[] = {ncclInt8, ncclUint8, ncclInt32, ncclUint32, ncclInt64,
                                 ncclUint64};
  for (int k = 0; k < 3; k += 2) {
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
      EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, 4, floats[i], ncclAvg, H(c),
                                     NULL, "t", &out));
      cr_assert_eq(out.devop, DEVOP_PREMULSUM, "dtype %d", (int)floats[i]);
      cr_assert_eq(out.scalar_mode, SCALAR_RECIPROCAL, "dtype %d", (int)floats[i]);
      cr_assert_eq(out.op, ncclAvg);
    }
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
      EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, 4, ints[i], ncclAvg, H(c),
                                     NULL, "t", &out));
      cr_assert_eq(out.devop, DEVOP_SUMPOSTDIV, "dtype %d", (int)ints[i]);
      cr_assert_eq(out.scalar_mode, SCALAR_NONE, "dtype %d", (int)ints[i]);
    }
  }
  fake_free(c);
}

Test(coll, premulsum_lifecycle) {
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_coll out;
  ncclRedOp_t op = ncclSum;
  float half = 0.5f;
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op, &half, ncclFloat32, ncclScalarHostImmediate, H(c)));
  cr_assert_geq((int)op, (int)ncclNumOps, "a custom op must not collide with built-ins");
  half = 99.0f; /* host-immediate: the value was read by the create call */

  /* Matching dtype: PreMulSum with the scalar's bits. */
  for (int k = 0; k < 3; k += 2) {
    EXPECT_OK(snapccl_coll_prepare(kinds[k], g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c),
                                   NULL, "t", &out));
    cr_assert_eq(out.devop, DEVOP_PREMULSUM);
    cr_assert_eq(out.scalar_mode, SCALAR_BITS);
    float got;
    memcpy(&got, &out.scalar_bits, sizeof got);
    cr_assert_eq(got, 0.5f, "scalar %g", (double)got);
  }
  /* Another dtype: refused, at the API as in prepare. */
  EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat64, op, H(c),
                              NULL, "t", &out),
         ncclInvalidArgument, "reduction");
  EXPECT2(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclFloat16, op, H(c), NULL),
          ncclInvalidArgument, "ncclAllReduce", "reduction");
  EXPECT(ncclReduceScatter(g_sendbuf, g_recvbuf, 4, ncclInt32, op, H(c), NULL),
         ncclInvalidArgument, "reduction");

  /* Destroyed: unknown from then on. */
  EXPECT_OK(ncclRedOpDestroy(op, H(c)));
  EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c),
                              NULL, "t", &out),
         ncclInvalidArgument, "reduction");
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(c), NULL),
         ncclInvalidArgument, "reduction");
  EXPECT2(ncclRedOpDestroy(op, H(c)), ncclInvalidArgument, "ncclRedOpDestroy", "not created");

  /* Built-in operators cannot be destroyed. */
  for (int b = 0; b < ncclNumOps; b++)
    EXPECT(ncclRedOpDestroy((ncclRedOp_t)b, H(c)), ncclInvalidArgument, "built");
  /* Neither can values that were never operators. */
  EXPECT(ncclRedOpDestroy((ncclRedOp_t)-3, H(c)), ncclInvalidArgument, NULL);
  EXPECT(ncclRedOpDestroy((ncclRedOp_t)100000, H(c)), ncclInvalidArgument, NULL);
  EXPECT(ncclRedOpDestroy(ncclMaxRedOp, H(c)), ncclInvalidArgument, NULL);
  fake_free(c);
}

Test(coll, premulsum_scalars) {
  struct snapccl_comm* c = fake_new(2, 0);
  struct snapccl_coll out;
  ncclRedOp_t op_d, op_dev, op_h;

  double quarter = 0.25;
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op_d, &quarter, ncclFloat64, ncclScalarHostImmediate, H(c)));
  EXPECT_OK(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat64, op_d, H(c),
                                 NULL, "t", &out));
  double got;
  memcpy(&got, &out.scalar_bits, sizeof got);
  cr_assert_eq(got, 0.25);

  /* Device-resident: the pointer is kept, not read. */
  static char device_scalar_stand_in[8];
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op_dev, device_scalar_stand_in, ncclFloat32,
                                     ncclScalarDevice, H(c)));
  EXPECT_OK(snapccl_coll_prepare(COLL_REDUCESCATTER, g_sendbuf, g_recvbuf, 4, ncclFloat32, op_dev,
                                 H(c), NULL, "t", &out));
  cr_assert_eq(out.devop, DEVOP_PREMULSUM);
  cr_assert_eq(out.scalar_mode, SCALAR_DEVICE);
  cr_assert_eq(out.scalar_dev, (const void*)device_scalar_stand_in);

  /* Half: only 2 bytes are the scalar's. */
  uint16_t h = 0x3c00; /* 1.0 */
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op_h, &h, ncclFloat16, ncclScalarHostImmediate, H(c)));
  EXPECT_OK(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat16, op_h, H(c),
                                 NULL, "t", &out));
  cr_assert_eq(out.scalar_bits, 0x3c00ull);

  cr_assert(op_d != op_dev && op_dev != op_h && op_d != op_h, "live ops share a value");
  EXPECT_OK(ncclRedOpDestroy(op_d, H(c)));
  EXPECT_OK(ncclRedOpDestroy(op_dev, H(c)));
  EXPECT_OK(ncclRedOpDestroy(op_h, H(c)));
  fake_free(c);
}

Test(coll, premulsum_belongs_to_its_communicator) {
  struct snapccl_comm* a = fake_new(2, 0);
  struct snapccl_comm* b = fake_new(2, 1);
  ncclRedOp_t op;
  float s = 3.0f;
  EXPECT_OK(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, H(a)));
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, op, H(b), NULL), ncclInvalidArgument,
         "reduction");
  EXPECT(ncclRedOpDestroy(op, H(b)), ncclInvalidArgument, "not created");
  EXPECT_OK(ncclRedOpDestroy(op, H(a)));
  fake_free(a);
  fake_free(b);
}

Test(coll, unsupported_collectives) {
  struct snapccl_comm* c = fake_new(2, 0);
  EXPECT(ncclReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum, 0, H(c), NULL),
         ncclInvalidUsage, "AllReduce");
  EXPECT(ncclBcast(g_sendbuf, 4, ncclFloat32, 0, H(c), NULL), ncclInvalidUsage, "AllReduce");
  EXPECT(ncclBroadcast(g_sendbuf, g_recvbuf, 4, ncclFloat32, 0, H(c), NULL), ncclInvalidUsage,
         "AllReduce");
  EXPECT(ncclSend(g_sendbuf, 4, ncclFloat32, 1, H(c), NULL), ncclInvalidUsage, "AllReduce");
  EXPECT(ncclRecv(g_recvbuf, 4, ncclFloat32, 1, H(c), NULL), ncclInvalidUsage, "AllReduce");
  EXPECT(ncclSend(g_sendbuf, 4, ncclFloat32, 1, NULL, NULL), ncclInvalidArgument, "comm");
  EXPECT(ncclReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum, 0, BOGUS_COMM, NULL),
         ncclInvalidArgument, "not valid");
  fake_free(c);
}

/* ================= communicator states ================= */

TestSuite(state, .init = setup);

Test(state, in_progress_refuses_calls) {
  struct snapccl_comm* c = fake_new(2, 0);
  atomic_store(&c->async_state, ncclInProgress);
  for (int k = 0; k < 3; k++)
    EXPECT(call_kind(kinds[k], g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum, H(c)),
           ncclInvalidArgument, "initializing");
  struct snapccl_coll out;
  EXPECT(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum, H(c),
                              NULL, "t", &out),
         ncclInvalidArgument, "initializing");
  ncclRedOp_t op;
  float s = 1.0f;
  EXPECT(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate, H(c)),
         ncclInvalidArgument, "initializing");
  int n;
  EXPECT(ncclCommCount(H(c), &n), ncclInvalidArgument, "initializing");
  EXPECT(ncclCommUserRank(H(c), &n), ncclInvalidArgument, "initializing");
  ncclComm_t nc;
  EXPECT(ncclCommSplit(H(c), 0, 0, &nc, NULL), ncclInvalidArgument, "initializing");
  /* ncclCommGetAsyncError is how a program waits for it: it answers. */
  ncclResult_t a = ncclSuccess;
  EXPECT_OK(ncclCommGetAsyncError(H(c), &a));
  cr_assert_eq(a, ncclInProgress);
  /* Once init is done the same calls pass their checks. */
  atomic_store(&c->async_state, ncclSuccess);
  EXPECT_OK(ncclCommCount(H(c), &n));
  EXPECT_OK(snapccl_coll_prepare(COLL_ALLREDUCE, g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum,
                                 H(c), NULL, "t", &out));
  fake_free(c);
}

/* NCCL 2.27 (init.cc, ncclCommEnsureReady, called by every collective): a communicator
 * whose asynchronous error is set makes calls return that error, e.g. ncclRemoteError
 * after a peer died. */
Test(state, async_error_is_returned) {
  struct snapccl_comm* c = fake_new(2, 0);
  snapccl_comm_set_async_error(c, ncclRemoteError, "peer 1 went away (test)");
  ncclResult_t a = ncclSuccess;
  EXPECT_OK(ncclCommGetAsyncError(H(c), &a));
  cr_assert_eq(a, ncclRemoteError);
  cr_assert(strstr(ncclGetLastError(NULL), "peer 1 went away") != NULL,
            "ncclGetLastError() after GetAsyncError: \"%s\"", ncclGetLastError(NULL));
  EXPECT(ncclAllReduce(g_sendbuf, g_recvbuf, 4, ncclFloat32, ncclSum, H(c), NULL),
         ncclRemoteError, "peer 1 went away");
  EXPECT(ncclAllGather(g_sendbuf, g_recvbuf, 4, ncclFloat32, H(c), NULL), ncclRemoteError,
         "peer 1 went away");
  fake_free(c);
}
