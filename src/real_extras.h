/* nccl* functions newer than the API level of include/nccl.h (2.28's additions). As
 * libnccl.so.2 in fallback mode we must still export them, or a program built against a
 * newer header would not even load: each is a trampoline (real_extras.S) that jumps to
 * the real library's function with the caller's registers untouched, whatever its
 * signature. Listed once here; the C side and the assembly both expand this list. */
#ifndef SNAPCCL_REAL_EXTRAS_H
#define SNAPCCL_REAL_EXTRAS_H

#define SNAPCCL_EXTRA_FUNCTIONS(X)       \
  X(ncclAlltoAll)                        \
  X(ncclGather)                          \
  X(ncclScatter)                         \
  X(ncclCommRevoke)                      \
  X(ncclDevCommCreate)                   \
  X(ncclDevCommDestroy)                  \
  X(ncclGinBarrierCreateRequirement)     \
  X(ncclLLA2ACalcSlots)                  \
  X(ncclLLA2ACreateRequirement)          \
  X(ncclLsaBarrierCreateRequirement)     \
  X(ncclResetDebugInitInternal)          \
  X(ncclTeamLsa)                         \
  X(ncclTeamRail)                        \
  X(ncclTeamRankToLsa)                   \
  X(ncclTeamRankToWorld)                 \
  X(ncclTeamWorld)

#endif
