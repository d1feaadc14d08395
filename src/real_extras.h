/* nccl* functions newer than the API level of include/nccl.h: what NVIDIA's 2.28, 2.29
 * and 2.30 headers (nccl.h and nccl_device.h) add. As libnccl.so.2 in fallback mode we
 * must still export them, or a program built against a newer header would not even
 * load: each is a trampoline (real_extras.S) that jumps to the real library's function
 * with the caller's registers untouched, whatever its signature. Listed once here; the
 * C side and the assembly both expand this list.
 *
 * X(name, returns): what the function returns, so that the stub answering when no real
 * library provides it (real_nccl.c) returns a value of the right type:
 *   RESULT  ncclResult_t: ncclInvalidUsage, with the reason in ncclGetLastError
 *   TEAM    ncclTeam_t (three ints, in two registers): the empty team, all zeros
 *   INT     int (a rank or a slot count): -1
 *   VOID    nothing
 * Every stub also records the reason (ncclGetLastError) and logs it. */
#ifndef SNAPCCL_REAL_EXTRAS_H
#define SNAPCCL_REAL_EXTRAS_H

#define SNAPCCL_EXTRA_FUNCTIONS(X)                   \
  /* 2.28: nccl.h */                                 \
  X(ncclAlltoAll, RESULT)                            \
  X(ncclGather, RESULT)                              \
  X(ncclScatter, RESULT)                             \
  X(ncclCommRevoke, RESULT)                          \
  /* 2.28: nccl_device.h's host functions */         \
  X(ncclDevCommCreate, RESULT)                       \
  X(ncclDevCommDestroy, RESULT)                      \
  X(ncclGinBarrierCreateRequirement, RESULT)         \
  X(ncclLLA2ACalcSlots, INT)                         \
  X(ncclLLA2ACreateRequirement, RESULT)              \
  X(ncclLsaBarrierCreateRequirement, RESULT)         \
  X(ncclTeamLsa, TEAM)                               \
  X(ncclTeamRail, TEAM)                              \
  X(ncclTeamRankToLsa, INT)                          \
  X(ncclTeamRankToWorld, INT)                        \
  X(ncclTeamWorld, TEAM)                             \
  /* exported by NVIDIA's library, in no header */   \
  X(ncclResetDebugInitInternal, VOID)                \
  /* 2.29-2.30: nccl.h */                            \
  X(ncclCommGetUniqueId, RESULT)                     \
  X(ncclCommGrow, RESULT)                            \
  X(ncclCommSuspend, RESULT)                         \
  X(ncclCommResume, RESULT)                          \
  X(ncclCommMemStats, RESULT)                        \
  X(ncclWinGetUserPtr, RESULT)                       \
  X(ncclPutSignal, RESULT)                           \
  X(ncclSignal, RESULT)                              \
  X(ncclWaitSignal, RESULT)                          \
  X(ncclParamBind, RESULT)                           \
  X(ncclParamGetI8, RESULT)                          \
  X(ncclParamGetI16, RESULT)                         \
  X(ncclParamGetI32, RESULT)                         \
  X(ncclParamGetI64, RESULT)                         \
  X(ncclParamGetU8, RESULT)                          \
  X(ncclParamGetU16, RESULT)                         \
  X(ncclParamGetU32, RESULT)                         \
  X(ncclParamGetU64, RESULT)                         \
  X(ncclParamGetStr, RESULT)                         \
  X(ncclParamGet, RESULT)                            \
  X(ncclParamGetParameter, RESULT)                   \
  X(ncclParamGetAllParameterKeys, RESULT)            \
  X(ncclParamDumpAll, VOID)                          \
  /* 2.29-2.30: nccl_device.h's host functions */    \
  X(ncclCommQueryProperties, RESULT)                 \
  X(ncclGetLsaMultimemDevicePointer, RESULT)         \
  X(ncclGetMultimemDevicePointer, RESULT)            \
  X(ncclGetLsaDevicePointer, RESULT)                 \
  X(ncclGetPeerDevicePointer, RESULT)

#endif
