/* The real NCCL, when there is one: how the library was loaded (mode) and the real
 * library's functions. Decided once, at the first API call (a preloaded library's
 * constructor runs before the application has loaded libnccl, e.g. PyTorch). */
#ifndef SNAPCCL_REAL_NCCL_H
#define SNAPCCL_REAL_NCCL_H

#include "nccl.h"

enum snapccl_mode {
  MODE_STANDALONE = 0, /* no real NCCL: we serve everything we can */
  MODE_INTERPOSED = 1, /* preloaded over a libnccl the application loaded */
  MODE_FALLBACK = 2,   /* loaded as libnccl; SNAPCCL_NCCL_LIB named the real one */
};

/* X-macro of every function of the 2.27 API: X(return type, name, (parameters)). */
#define SNAPCCL_REAL_FUNCTIONS(X)                                                                  \
  X(ncclResult_t, ncclMemAlloc, (void** ptr, size_t size))                                         \
  X(ncclResult_t, ncclMemFree, (void* ptr))                                                        \
  X(ncclResult_t, ncclGetVersion, (int* version))                                                  \
  X(ncclResult_t, ncclGetUniqueId, (ncclUniqueId * uniqueId))                                      \
  X(ncclResult_t, ncclCommInitRankConfig,                                                          \
    (ncclComm_t * comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config))          \
  X(ncclResult_t, ncclCommInitRank, (ncclComm_t * comm, int nranks, ncclUniqueId commId, int rank)) \
  X(ncclResult_t, ncclCommInitAll, (ncclComm_t * comm, int ndev, const int* devlist))              \
  X(ncclResult_t, ncclCommFinalize, (ncclComm_t comm))                                             \
  X(ncclResult_t, ncclCommDestroy, (ncclComm_t comm))                                              \
  X(ncclResult_t, ncclCommAbort, (ncclComm_t comm))                                                \
  X(ncclResult_t, ncclCommSplit,                                                                   \
    (ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config))              \
  X(ncclResult_t, ncclCommShrink,                                                                  \
    (ncclComm_t comm, int* excludeRanksList, int excludeRanksCount, ncclComm_t* newcomm,           \
     ncclConfig_t* config, int shrinkFlags))                                                       \
  X(ncclResult_t, ncclCommInitRankScalable,                                                        \
    (ncclComm_t * newcomm, int nranks, int myrank, int nId, ncclUniqueId* commIds,                 \
     ncclConfig_t* config))                                                                        \
  X(const char*, ncclGetErrorString, (ncclResult_t result))                                        \
  X(const char*, ncclGetLastError, (ncclComm_t comm))                                              \
  X(void, ncclResetDebugInit, (void))                                                              \
  X(ncclResult_t, ncclCommGetAsyncError, (ncclComm_t comm, ncclResult_t * asyncError))             \
  X(ncclResult_t, ncclCommCount, (const ncclComm_t comm, int* count))                              \
  X(ncclResult_t, ncclCommCuDevice, (const ncclComm_t comm, int* device))                          \
  X(ncclResult_t, ncclCommUserRank, (const ncclComm_t comm, int* rank))                            \
  X(ncclResult_t, ncclCommRegister, (const ncclComm_t comm, void* buff, size_t size, void** handle)) \
  X(ncclResult_t, ncclCommDeregister, (const ncclComm_t comm, void* handle))                       \
  X(ncclResult_t, ncclCommWindowRegister,                                                          \
    (ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win, int winFlags))                   \
  X(ncclResult_t, ncclCommWindowDeregister, (ncclComm_t comm, ncclWindow_t win))                   \
  X(ncclResult_t, ncclRedOpCreatePreMulSum,                                                        \
    (ncclRedOp_t * op, void* scalar, ncclDataType_t datatype, ncclScalarResidence_t residence,     \
     ncclComm_t comm))                                                                             \
  X(ncclResult_t, ncclRedOpDestroy, (ncclRedOp_t op, ncclComm_t comm))                             \
  X(ncclResult_t, ncclReduce,                                                                      \
    (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,  \
     int root, ncclComm_t comm, cudaStream_t stream))                                              \
  X(ncclResult_t, ncclBcast,                                                                       \
    (void* buff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,                 \
     cudaStream_t stream))                                                                         \
  X(ncclResult_t, ncclBroadcast,                                                                   \
    (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,        \
     ncclComm_t comm, cudaStream_t stream))                                                        \
  X(ncclResult_t, ncclAllReduce,                                                                   \
    (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,  \
     ncclComm_t comm, cudaStream_t stream))                                                        \
  X(ncclResult_t, ncclReduceScatter,                                                               \
    (const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,              \
     ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream))                                        \
  X(ncclResult_t, ncclAllGather,                                                                   \
    (const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,              \
     ncclComm_t comm, cudaStream_t stream))                                                        \
  X(ncclResult_t, ncclSend,                                                                        \
    (const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,       \
     cudaStream_t stream))                                                                         \
  X(ncclResult_t, ncclRecv,                                                                        \
    (void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,             \
     cudaStream_t stream))                                                                         \
  X(ncclResult_t, ncclGroupStart, (void))                                                          \
  X(ncclResult_t, ncclGroupEnd, (void))                                                            \
  X(ncclResult_t, ncclGroupSimulateEnd, (ncclSimInfo_t * simInfo))

struct snapccl_real {
#define SNAPCCL_REAL_FIELD(ret, name, params) ret(*name) params;
  SNAPCCL_REAL_FUNCTIONS(SNAPCCL_REAL_FIELD)
#undef SNAPCCL_REAL_FIELD
};

enum snapccl_mode snapccl_mode(void);
const char* snapccl_mode_name(enum snapccl_mode mode);
/* The real library's functions; NULL in standalone mode. A function the real library
 * lacks is NULL in the table. */
const struct snapccl_real* snapccl_real(void);
/* Path of the real library ("" standalone), for logs. */
const char* snapccl_real_path(void);

/* For tests: forget the decision so the next call decides again. */
void snapccl_real_reset(void);

#endif
