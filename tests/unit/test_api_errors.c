/* Bad input to the NCCL API, without a GPU: every case must return NCCL's exact code,
 * leave a non-empty reason naming the problem in ncclGetLastError(), and neither crash
 * nor hang.
 *
 * Checks that need a live communicator (dtype/op/count checks of the collectives,
 * custom reduction operators, error states) run on a "fake" communicator: a
 * snapccl_comm made by snapccl_comm_alloc, given a rank and a size, marked initialized
 * and put in the handle registry, but with no bootstrap and no transport. Every call
 * made on it fails (or succeeds) before it would touch a GPU.
 *
 * One binary of three files: this one (versions and error strings, NULL arguments, bad
 * handles), test_api_errors_init.c (init, configs, groups) and test_api_errors_coll.c
 * (the collectives' checks, communicator states); api_errors.h holds what they share. */
#include "api_errors.h"

float g_sendbuf[64], g_recvbuf[64 * 8];

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
  /* A good registration goes round trip (without a transport it stays local). */
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
