/* include/nccl.h against NVIDIA's NCCL 2.27 ABI. The expected numbers are written out
 * literally, taken from NVIDIA's v2.27.7-1 src/nccl.h.in and the x86-64 System V layout
 * rules (int 4 bytes aligned 4, size_t and pointers 8 aligned 8, float 4, enums int);
 * they are never computed from our own header. Most checks are compile-time: a
 * mismatch fails the build of this test. The Criterion cases check what C11 cannot
 * evaluate at compile time (initializer contents, floating and pointer constants). */
#include <criterion/criterion.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "nccl.h"

/* An incompatible function pointer assignment below must stop the build. */
#pragma GCC diagnostic error "-Wincompatible-pointer-types"

#define SA(cond) _Static_assert(cond, #cond)

/* ---- version macros ---- */
SA(NCCL_MAJOR == 2);
SA(NCCL_MINOR == 27);
SA(NCCL_PATCH == 7);
SA(NCCL_VERSION_CODE == 22707);
SA(NCCL_VERSION(2, 27, 7) == 22707);
SA(NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH) == 22707);
SA(NCCL_VERSION(2, 8, 4) == 2804);  /* old encoding up to 2.8 */
SA(NCCL_VERSION(2, 9, 0) == 20900); /* new encoding from 2.9 */
SA(NCCL_VERSION(2, 14, 3) == 21403);
SA(NCCL_VERSION(1, 8, 0) == 1800);
SA(NCCL_VERSION(3, 0, 1) == 30001);
SA(sizeof(NCCL_SUFFIX) == 1); /* "" */

/* ---- constants ---- */
SA(NCCL_UNIQUE_ID_BYTES == 128);
SA(NCCL_CONFIG_UNDEF_INT == INT_MIN);
SA(NCCL_SPLIT_NOCOLOR == -1);
SA(NCCL_WIN_DEFAULT == 0x00);
SA(NCCL_WIN_COLL_SYMMETRIC == 0x01);
SA(NCCL_CTA_POLICY_DEFAULT == 0x00);
SA(NCCL_CTA_POLICY_EFFICIENCY == 0x01);
SA(NCCL_SHRINK_DEFAULT == 0x00);
SA(NCCL_SHRINK_ABORT == 0x01);

/* ---- ncclResult_t ---- */
SA(ncclSuccess == 0);
SA(ncclUnhandledCudaError == 1);
SA(ncclSystemError == 2);
SA(ncclInternalError == 3);
SA(ncclInvalidArgument == 4);
SA(ncclInvalidUsage == 5);
SA(ncclRemoteError == 6);
SA(ncclInProgress == 7);
SA(ncclNumResults == 8);
SA(sizeof(ncclResult_t) == 4);

/* ---- ncclRedOp_t ---- */
SA(ncclNumOps_dummy == 5);
SA(sizeof(ncclRedOp_dummy_t) == 4);
SA(ncclSum == 0);
SA(ncclProd == 1);
SA(ncclMax == 2);
SA(ncclMin == 3);
SA(ncclAvg == 4);
SA(ncclNumOps == 5);
SA(ncclMaxRedOp == 0x7fffffff);
SA(sizeof(ncclRedOp_t) == 4);

/* ---- ncclDataType_t ---- */
SA(ncclInt8 == 0);
SA(ncclChar == 0);
SA(ncclUint8 == 1);
SA(ncclInt32 == 2);
SA(ncclInt == 2);
SA(ncclUint32 == 3);
SA(ncclInt64 == 4);
SA(ncclUint64 == 5);
SA(ncclFloat16 == 6);
SA(ncclHalf == 6);
SA(ncclFloat32 == 7);
SA(ncclFloat == 7);
SA(ncclFloat64 == 8);
SA(ncclDouble == 8);
SA(ncclBfloat16 == 9);
SA(ncclFloat8e4m3 == 10);
SA(ncclFloat8e5m2 == 11);
SA(ncclNumTypes == 12);
SA(sizeof(ncclDataType_t) == 4);

/* ---- ncclScalarResidence_t ---- */
SA(ncclScalarDevice == 0);
SA(ncclScalarHostImmediate == 1);
SA(sizeof(ncclScalarResidence_t) == 4);

/* ---- handles ---- */
SA(sizeof(ncclComm_t) == 8);
SA(sizeof(ncclWindow_t) == 8);
SA(__builtin_types_compatible_p(ncclComm_t, struct ncclComm*));
SA(__builtin_types_compatible_p(ncclWindow_t, struct ncclWindow*));

/* ---- ncclUniqueId ---- */
SA(sizeof(ncclUniqueId) == 128);
SA(_Alignof(ncclUniqueId) == 1);
SA(offsetof(ncclUniqueId, internal) == 0);
SA(sizeof(((ncclUniqueId*)0)->internal) == 128);
SA(__builtin_types_compatible_p(__typeof__(((ncclUniqueId*)0)->internal), char[128]));

/* ---- ncclConfig_t (struct ncclConfig_v22700) ----
 *  0 size_t size          8 unsigned magic     12 unsigned version
 * 16 int blocking        20 int cgaClusterSize 24 int minCTAs        28 int maxCTAs
 * 32 const char* netName 40 int splitShare     44 int trafficClass
 * 48 const char* commName 56 int collnetEnable 60 int CTAPolicy
 * 64 int shrinkShare     68 int nvlsCTAs      -> 72 bytes, aligned 8 */
SA(__builtin_types_compatible_p(ncclConfig_t, struct ncclConfig_v22700));
SA(sizeof(ncclConfig_t) == 72);
SA(_Alignof(ncclConfig_t) == 8);
#define CFG_FIELD(name, off, type)                                                        \
  SA(offsetof(ncclConfig_t, name) == (off));                                              \
  SA(__builtin_types_compatible_p(__typeof__(((ncclConfig_t*)0)->name), type))
CFG_FIELD(size, 0, size_t);
CFG_FIELD(magic, 8, unsigned int);
CFG_FIELD(version, 12, unsigned int);
CFG_FIELD(blocking, 16, int);
CFG_FIELD(cgaClusterSize, 20, int);
CFG_FIELD(minCTAs, 24, int);
CFG_FIELD(maxCTAs, 28, int);
CFG_FIELD(netName, 32, const char*);
CFG_FIELD(splitShare, 40, int);
CFG_FIELD(trafficClass, 44, int);
CFG_FIELD(commName, 48, const char*);
CFG_FIELD(collnetEnable, 56, int);
CFG_FIELD(CTAPolicy, 60, int);
CFG_FIELD(shrinkShare, 64, int);
CFG_FIELD(nvlsCTAs, 68, int);

/* ---- ncclSimInfo_t (struct ncclSimInfo_v22200) ----
 *  0 size_t size  8 unsigned magic  12 unsigned version  16 float estimatedTime
 *  -> 24 bytes, aligned 8 */
SA(__builtin_types_compatible_p(ncclSimInfo_t, struct ncclSimInfo_v22200));
SA(sizeof(ncclSimInfo_t) == 24);
SA(_Alignof(ncclSimInfo_t) == 8);
#define SIM_FIELD(name, off, type)                                                        \
  SA(offsetof(ncclSimInfo_t, name) == (off));                                             \
  SA(__builtin_types_compatible_p(__typeof__(((ncclSimInfo_t*)0)->name), type))
SIM_FIELD(size, 0, size_t);
SIM_FIELD(magic, 8, unsigned int);
SIM_FIELD(version, 12, unsigned int);
SIM_FIELD(estimatedTime, 16, float);

/* ---- every function of NVIDIA's 2.27 header, with its exact type ----
 * The types are transcribed from NVIDIA's declarations. Top-level const on a
 * parameter (NVIDIA's "const ncclComm_t comm") is not part of a function's type. */
#define SAME_FN(fn, ...)                                                                  \
  SA(__builtin_types_compatible_p(__typeof__(&fn), __VA_ARGS__));                          \
  SA(__builtin_types_compatible_p(__typeof__(&p##fn), __VA_ARGS__));                       \
  static __typeof__(__VA_ARGS__) const check_##fn = fn;                                  \
  static __typeof__(__VA_ARGS__) const check_p##fn = p##fn

SAME_FN(ncclMemAlloc, ncclResult_t (*)(void**, size_t));
SAME_FN(ncclMemFree, ncclResult_t (*)(void*));
SAME_FN(ncclGetVersion, ncclResult_t (*)(int*));
SAME_FN(ncclGetUniqueId, ncclResult_t (*)(ncclUniqueId*));
SAME_FN(ncclCommInitRankConfig, ncclResult_t (*)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*));
SAME_FN(ncclCommInitRank, ncclResult_t (*)(ncclComm_t*, int, ncclUniqueId, int));
SAME_FN(ncclCommInitAll, ncclResult_t (*)(ncclComm_t*, int, const int*));
SAME_FN(ncclCommFinalize, ncclResult_t (*)(ncclComm_t));
SAME_FN(ncclCommDestroy, ncclResult_t (*)(ncclComm_t));
SAME_FN(ncclCommAbort, ncclResult_t (*)(ncclComm_t));
SAME_FN(ncclCommSplit, ncclResult_t (*)(ncclComm_t, int, int, ncclComm_t*, ncclConfig_t*));
SAME_FN(ncclCommShrink, ncclResult_t (*)(ncclComm_t, int*, int, ncclComm_t*, ncclConfig_t*, int));
SAME_FN(ncclCommInitRankScalable,
        ncclResult_t (*)(ncclComm_t*, int, int, int, ncclUniqueId*, ncclConfig_t*));
SAME_FN(ncclGetErrorString, const char* (*)(ncclResult_t));
SAME_FN(ncclGetLastError, const char* (*)(ncclComm_t));
SAME_FN(ncclResetDebugInit, void (*)(void));
SAME_FN(ncclCommGetAsyncError, ncclResult_t (*)(ncclComm_t, ncclResult_t*));
SAME_FN(ncclCommCount, ncclResult_t (*)(ncclComm_t, int*));
SAME_FN(ncclCommCuDevice, ncclResult_t (*)(ncclComm_t, int*));
SAME_FN(ncclCommUserRank, ncclResult_t (*)(ncclComm_t, int*));
SAME_FN(ncclCommRegister, ncclResult_t (*)(ncclComm_t, void*, size_t, void**));
SAME_FN(ncclCommDeregister, ncclResult_t (*)(ncclComm_t, void*));
SAME_FN(ncclCommWindowRegister, ncclResult_t (*)(ncclComm_t, void*, size_t, ncclWindow_t*, int));
SAME_FN(ncclCommWindowDeregister, ncclResult_t (*)(ncclComm_t, ncclWindow_t));
SAME_FN(ncclRedOpCreatePreMulSum,
        ncclResult_t (*)(ncclRedOp_t*, void*, ncclDataType_t, ncclScalarResidence_t, ncclComm_t));
SAME_FN(ncclRedOpDestroy, ncclResult_t (*)(ncclRedOp_t, ncclComm_t));
SAME_FN(ncclReduce, ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, int,
                                     ncclComm_t, cudaStream_t));
SAME_FN(ncclBcast, ncclResult_t (*)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t));
SAME_FN(ncclBroadcast, ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, int,
                                        ncclComm_t, cudaStream_t));
SAME_FN(ncclAllReduce, ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t,
                                        ncclComm_t, cudaStream_t));
SAME_FN(ncclReduceScatter, ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t,
                                            ncclRedOp_t, ncclComm_t, cudaStream_t));
SAME_FN(ncclAllGather,
        ncclResult_t (*)(const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t));
SAME_FN(ncclSend,
        ncclResult_t (*)(const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t));
SAME_FN(ncclRecv, ncclResult_t (*)(void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t));
SAME_FN(ncclGroupStart, ncclResult_t (*)(void));
SAME_FN(ncclGroupEnd, ncclResult_t (*)(void));
SAME_FN(ncclGroupSimulateEnd, ncclResult_t (*)(ncclSimInfo_t*));

/* Every function above, for the run-time check that none of them is missing. */
#define FN(fn) {#fn, (const void*)check_##fn}, {"p" #fn, (const void*)check_p##fn}
static const struct {
  const char* name;
  const void* addr;
} api[] = {
    FN(ncclMemAlloc),        FN(ncclMemFree),
    FN(ncclGetVersion),      FN(ncclGetUniqueId),
    FN(ncclCommInitRankConfig), FN(ncclCommInitRank),
    FN(ncclCommInitAll),     FN(ncclCommFinalize),
    FN(ncclCommDestroy),     FN(ncclCommAbort),
    FN(ncclCommSplit),       FN(ncclCommShrink),
    FN(ncclCommInitRankScalable), FN(ncclGetErrorString),
    FN(ncclGetLastError),    FN(ncclResetDebugInit),
    FN(ncclCommGetAsyncError), FN(ncclCommCount),
    FN(ncclCommCuDevice),    FN(ncclCommUserRank),
    FN(ncclCommRegister),    FN(ncclCommDeregister),
    FN(ncclCommWindowRegister), FN(ncclCommWindowDeregister),
    FN(ncclRedOpCreatePreMulSum), FN(ncclRedOpDestroy),
    FN(ncclReduce),          FN(ncclBcast),
    FN(ncclBroadcast),       FN(ncclAllReduce),
    FN(ncclReduceScatter),   FN(ncclAllGather),
    FN(ncclSend),            FN(ncclRecv),
    FN(ncclGroupStart),      FN(ncclGroupEnd),
    FN(ncclGroupSimulateEnd),
};
SA(sizeof api / sizeof api[0] == 2 * 37); /* NVIDIA's 2.27 API: 37 functions */

Test(abi, functions_present) {
  for (size_t i = 0; i < sizeof api / sizeof api[0]; i++) {
    cr_assert_not_null(api[i].addr, "%s", api[i].name);
    cr_assert(strncmp(api[i].name, "nccl", 4) == 0 || strncmp(api[i].name, "pnccl", 5) == 0);
  }
  /* The profiling alias is the same function. */
  for (size_t i = 0; i < sizeof api / sizeof api[0]; i += 2)
    cr_assert_eq(api[i].addr, api[i + 1].addr, "%s and %s differ", api[i].name, api[i + 1].name);
}

Test(abi, config_initializer) {
  ncclConfig_t c = NCCL_CONFIG_INITIALIZER;
  cr_assert_eq(c.size, 72);
  cr_assert_eq(c.magic, 0xcafebeefu);
  cr_assert_eq(c.version, 22707u);
  cr_assert_eq(c.blocking, INT_MIN);
  cr_assert_eq(c.cgaClusterSize, INT_MIN);
  cr_assert_eq(c.minCTAs, INT_MIN);
  cr_assert_eq(c.maxCTAs, INT_MIN);
  cr_assert_null(c.netName);
  cr_assert_eq(c.splitShare, INT_MIN);
  cr_assert_eq(c.trafficClass, INT_MIN);
  cr_assert_null(c.commName);
  cr_assert_eq(c.collnetEnable, INT_MIN);
  cr_assert_eq(c.CTAPolicy, INT_MIN);
  cr_assert_eq(c.shrinkShare, INT_MIN);
  cr_assert_eq(c.nvlsCTAs, INT_MIN);
  /* Field by field in NVIDIA's order: the bytes of the whole initializer. */
  unsigned char want[72];
  memset(want, 0, sizeof want);
  const uint64_t size = 72;
  const uint32_t magic = 0xcafebeef, version = 22707;
  const int32_t undef = INT32_MIN;
  memcpy(want + 0, &size, 8);
  memcpy(want + 8, &magic, 4);
  memcpy(want + 12, &version, 4);
  for (int off = 16; off < 32; off += 4) memcpy(want + off, &undef, 4);
  memcpy(want + 40, &undef, 4);
  memcpy(want + 44, &undef, 4);
  for (int off = 56; off < 72; off += 4) memcpy(want + off, &undef, 4);
  unsigned char got[72];
  memcpy(got, &c, sizeof got); /* the layout has no padding bytes */
  cr_assert_arr_eq(got, want, 72, "NCCL_CONFIG_INITIALIZER bytes differ from NVIDIA's");
}

Test(abi, sim_info_initializer) {
  ncclSimInfo_t s = NCCL_SIM_INFO_INITIALIZER;
  cr_assert_eq(s.size, 24);
  cr_assert_eq(s.magic, 0x74685283u);
  cr_assert_eq(s.version, 22707u);
  cr_assert_eq(s.estimatedTime, -1.0f);
}

Test(abi, float_and_pointer_constants) {
  cr_assert_eq(NCCL_UNDEF_FLOAT, -1.0f);
  cr_assert_eq(sizeof(NCCL_UNDEF_FLOAT), sizeof(float));
  cr_assert(NCCL_CONFIG_UNDEF_PTR == NULL);
  cr_assert(NCCL_COMM_NULL == NULL);
  cr_assert_str_eq(NCCL_SUFFIX, "");
}
