/* The host functions of NVIDIA's NCCL 2.30 headers, as data: what a program built
 * against them may link to. Transcribed from NVIDIA's v2.30.7-1 src/nccl.h.in and the
 * host functions of src/include/nccl_device/ (core.h, gin_barrier.h, ll_a2a.h,
 * lsa_barrier.h) of the same tag; parameters by type only, top-level const dropped
 * (it is no part of a function's type). client_2_30.c declares and checks them all.
 *
 * X(return type, name, (parameter types))
 *
 * Types these lists use that snapccl's 2.27 header lacks are declared by the client in
 * 2.30's layout: ncclCommMemStat_t, ncclWaitSignalDesc_t, ncclParamHandle_t, ncclTeam_t
 * and the device API's opaque structs. ncclWindow_t is our header's pointer type (2.30
 * names the pointee struct ncclWindow_vidmem; the tag is no part of the ABI). */
#ifndef SNAPCCL_TEST_NCCL_2_30_FUNCTIONS_H
#define SNAPCCL_TEST_NCCL_2_30_FUNCTIONS_H

/* nccl.h: 64 functions, each also declared as its pnccl* profiling alias. */
#define NCCL_2_30_NCCL_H_FUNCTIONS(X)                                                        \
  X(ncclResult_t, ncclMemAlloc, (void**, size_t))                                            \
  X(ncclResult_t, ncclMemFree, (void*))                                                      \
  X(ncclResult_t, ncclGetVersion, (int*))                                                    \
  X(ncclResult_t, ncclGetUniqueId, (ncclUniqueId*))                                          \
  X(ncclResult_t, ncclCommInitRankConfig, (ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*)) \
  X(ncclResult_t, ncclCommInitRank, (ncclComm_t*, int, ncclUniqueId, int))                   \
  X(ncclResult_t, ncclCommInitAll, (ncclComm_t*, int, const int*))                           \
  X(ncclResult_t, ncclCommFinalize, (ncclComm_t))                                            \
  X(ncclResult_t, ncclCommDestroy, (ncclComm_t))                                             \
  X(ncclResult_t, ncclCommAbort, (ncclComm_t))                                               \
  X(ncclResult_t, ncclCommRevoke, (ncclComm_t, int))                                         \
  X(ncclResult_t, ncclCommSplit, (ncclComm_t, int, int, ncclComm_t*, ncclConfig_t*))         \
  X(ncclResult_t, ncclCommShrink, (ncclComm_t, int*, int, ncclComm_t*, ncclConfig_t*, int))  \
  X(ncclResult_t, ncclCommGetUniqueId, (ncclComm_t, ncclUniqueId*))                          \
  X(ncclResult_t, ncclCommGrow,                                                              \
    (ncclComm_t, int, const ncclUniqueId*, int, ncclComm_t*, ncclConfig_t*))                 \
  X(ncclResult_t, ncclCommInitRankScalable,                                                  \
    (ncclComm_t*, int, int, int, ncclUniqueId*, ncclConfig_t*))                              \
  X(const char*, ncclGetErrorString, (ncclResult_t))                                         \
  X(const char*, ncclGetLastError, (ncclComm_t))                                             \
  X(void, ncclResetDebugInit, (void))                                                        \
  X(ncclResult_t, ncclCommGetAsyncError, (ncclComm_t, ncclResult_t*))                        \
  X(ncclResult_t, ncclCommCount, (ncclComm_t, int*))                                         \
  X(ncclResult_t, ncclCommCuDevice, (ncclComm_t, int*))                                      \
  X(ncclResult_t, ncclCommUserRank, (ncclComm_t, int*))                                      \
  X(ncclResult_t, ncclCommRegister, (ncclComm_t, void*, size_t, void**))                     \
  X(ncclResult_t, ncclCommDeregister, (ncclComm_t, void*))                                   \
  X(ncclResult_t, ncclCommSuspend, (ncclComm_t, int))                                        \
  X(ncclResult_t, ncclCommResume, (ncclComm_t))                                              \
  X(ncclResult_t, ncclCommMemStats, (ncclComm_t, ncclCommMemStat_t, uint64_t*))              \
  X(ncclResult_t, ncclCommWindowRegister, (ncclComm_t, void*, size_t, ncclWindow_t*, int))   \
  X(ncclResult_t, ncclCommWindowDeregister, (ncclComm_t, ncclWindow_t))                      \
  X(ncclResult_t, ncclWinGetUserPtr, (ncclComm_t, ncclWindow_t, void**))                     \
  X(ncclResult_t, ncclRedOpCreatePreMulSum,                                                  \
    (ncclRedOp_t*, void*, ncclDataType_t, ncclScalarResidence_t, ncclComm_t))                \
  X(ncclResult_t, ncclRedOpDestroy, (ncclRedOp_t, ncclComm_t))                               \
  X(ncclResult_t, ncclReduce,                                                                \
    (const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, int, ncclComm_t, cudaStream_t)) \
  X(ncclResult_t, ncclBcast, (void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t)) \
  X(ncclResult_t, ncclBroadcast,                                                             \
    (const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))             \
  X(ncclResult_t, ncclAllReduce,                                                             \
    (const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t))     \
  X(ncclResult_t, ncclReduceScatter,                                                         \
    (const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t, cudaStream_t))     \
  X(ncclResult_t, ncclAllGather,                                                             \
    (const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t))                  \
  X(ncclResult_t, ncclAlltoAll,                                                              \
    (const void*, void*, size_t, ncclDataType_t, ncclComm_t, cudaStream_t))                  \
  X(ncclResult_t, ncclGather,                                                                \
    (const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))             \
  X(ncclResult_t, ncclScatter,                                                               \
    (const void*, void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))             \
  X(ncclResult_t, ncclSend, (const void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t)) \
  X(ncclResult_t, ncclRecv, (void*, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t))  \
  X(ncclResult_t, ncclPutSignal,                                                             \
    (const void*, size_t, ncclDataType_t, int, ncclWindow_t, size_t, int, int, unsigned int, \
     ncclComm_t, cudaStream_t))                                                              \
  X(ncclResult_t, ncclSignal, (int, int, int, unsigned int, ncclComm_t, cudaStream_t))       \
  X(ncclResult_t, ncclWaitSignal, (int, ncclWaitSignalDesc_t*, ncclComm_t, cudaStream_t))    \
  X(ncclResult_t, ncclGroupStart, (void))                                                    \
  X(ncclResult_t, ncclGroupEnd, (void))                                                      \
  X(ncclResult_t, ncclGroupSimulateEnd, (ncclSimInfo_t*))                                    \
  X(ncclResult_t, ncclParamBind, (ncclParamHandle_t*, const char*))                          \
  X(ncclResult_t, ncclParamGetI8, (ncclParamHandle_t, int8_t*))                              \
  X(ncclResult_t, ncclParamGetI16, (ncclParamHandle_t, int16_t*))                            \
  X(ncclResult_t, ncclParamGetI32, (ncclParamHandle_t, int32_t*))                            \
  X(ncclResult_t, ncclParamGetI64, (ncclParamHandle_t, int64_t*))                            \
  X(ncclResult_t, ncclParamGetU8, (ncclParamHandle_t, uint8_t*))                             \
  X(ncclResult_t, ncclParamGetU16, (ncclParamHandle_t, uint16_t*))                           \
  X(ncclResult_t, ncclParamGetU32, (ncclParamHandle_t, uint32_t*))                           \
  X(ncclResult_t, ncclParamGetU64, (ncclParamHandle_t, uint64_t*))                           \
  X(ncclResult_t, ncclParamGetStr, (ncclParamHandle_t, const char**))                        \
  X(ncclResult_t, ncclParamGet, (ncclParamHandle_t, void*, int, int*))                       \
  X(ncclResult_t, ncclParamGetParameter, (const char*, const char**, int*))                  \
  X(ncclResult_t, ncclParamGetAllParameterKeys, (const char***, int*))                       \
  X(void, ncclParamDumpAll, (void))

/* nccl_device.h: the 16 host functions of the device API (no pnccl* declared). */
#define NCCL_2_30_DEVICE_H_FUNCTIONS(X)                                                      \
  X(ncclResult_t, ncclCommQueryProperties, (ncclComm_t, ncclCommProperties_t*))              \
  X(ncclResult_t, ncclDevCommCreate, (ncclComm_t, const ncclDevCommRequirements_t*, ncclDevComm_t*)) \
  X(ncclResult_t, ncclDevCommDestroy, (ncclComm_t, const ncclDevComm_t*))                    \
  X(ncclResult_t, ncclGetLsaMultimemDevicePointer, (ncclWindow_t, size_t, void**))           \
  X(ncclResult_t, ncclGetMultimemDevicePointer,                                              \
    (ncclWindow_t, size_t, ncclMultimemHandle_t, void**))                                    \
  X(ncclResult_t, ncclGetLsaDevicePointer, (ncclWindow_t, size_t, int, void**))              \
  X(ncclResult_t, ncclGetPeerDevicePointer, (ncclWindow_t, size_t, int, void**))             \
  X(ncclTeam_t, ncclTeamWorld, (ncclComm_t))                                                 \
  X(ncclTeam_t, ncclTeamLsa, (ncclComm_t))                                                   \
  X(ncclTeam_t, ncclTeamRail, (ncclComm_t))                                                  \
  X(int, ncclTeamRankToWorld, (ncclComm_t, ncclTeam_t, int))                                 \
  X(int, ncclTeamRankToLsa, (ncclComm_t, ncclTeam_t, int))                                   \
  X(ncclResult_t, ncclGinBarrierCreateRequirement,                                           \
    (ncclComm_t, ncclTeam_t, int, ncclGinBarrierHandle_t*, ncclDevResourceRequirements_t*))  \
  X(int, ncclLLA2ACalcSlots, (int, int))                                                     \
  X(ncclResult_t, ncclLLA2ACreateRequirement,                                                \
    (int, int, ncclLLA2AHandle_t*, ncclDevResourceRequirements_t*))                          \
  X(ncclResult_t, ncclLsaBarrierCreateRequirement,                                           \
    (ncclTeam_t, int, ncclLsaBarrierHandle_t*, ncclDevResourceRequirements_t*))

/* Exported by NVIDIA's libnccl.so.2 (2.28 to 2.30) but declared in no public header. */
#define NCCL_2_30_UNDECLARED_FUNCTIONS(X) X(void, ncclResetDebugInitInternal, (void))

#endif
