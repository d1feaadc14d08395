/* Bad input to the collectives (part of test_api_errors): dtype, op, count and buffer
 * checks, operator resolution, the lifecycle of PreMulSum operators, and the calls a
 * communicator refuses while initialising or in error, on fake communicators. */
#include "api_errors.h"

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
