/*
 * snapccl: NCCL-compatible C API.
 *
 * This header is snapccl's own text. Every enum value, struct layout, macro and
 * function signature below matches NVIDIA's nccl.h at the API level named by
 * NCCL_VERSION_CODE (2.27.7), so programs built against either header work with
 * either library. Extensions live in snapccl.h, never here.
 *
 * Why 2.27 and not 2.28-2.30 (the evidence: docs/ARCHITECTURE.md): from 2.28 on,
 * programs such as nccl-tests compile code against the NCCL device API
 * (nccl_device.h, ncclDevComm), which snapccl does not provide. 2.27 is the newest
 * level whose whole API this header declares. Programs built against NVIDIA's newer
 * headers still load: libnccl.so.2 exports every function those add.
 */
#ifndef NCCL_H_
#define NCCL_H_

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#if CUDART_VERSION >= 11000
#include <cuda_bf16.h>
#endif
#if defined(__cplusplus) && CUDART_VERSION >= 11080
#include <cuda_fp8.h>
#endif

#define NCCL_MAJOR 2
#define NCCL_MINOR 27
#define NCCL_PATCH 7
#define NCCL_SUFFIX ""

#define NCCL_VERSION_CODE 22707
/* Versions up to 2.8 used a three-digit minor encoding; later ones five digits. */
#define NCCL_VERSION(X, Y, Z) \
  (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))

#ifdef __cplusplus
extern "C" {
#endif

#include <limits.h>

/* Opaque handles. */
typedef struct ncclComm* ncclComm_t;
typedef struct ncclWindow* ncclWindow_t;
#define NCCL_COMM_NULL NULL

/* The identifier every rank of a new communicator must share. */
#define NCCL_UNIQUE_ID_BYTES 128
typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

/* Result codes. */
typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
  ncclNumResults = 8
} ncclResult_t;

#define NCCL_CONFIG_UNDEF_INT INT_MIN
#define NCCL_CONFIG_UNDEF_PTR NULL
#define NCCL_SPLIT_NOCOLOR -1
#define NCCL_UNDEF_FLOAT -1.0f

/* Flags of ncclCommWindowRegister. */
#define NCCL_WIN_DEFAULT 0x00
#define NCCL_WIN_COLL_SYMMETRIC 0x01

/* Values of ncclConfig_t.CTAPolicy. */
#define NCCL_CTA_POLICY_DEFAULT 0x00
#define NCCL_CTA_POLICY_EFFICIENCY 0x01

/* Flags of ncclCommShrink. */
#define NCCL_SHRINK_DEFAULT 0x00 /* shrink a healthy parent */
#define NCCL_SHRINK_ABORT 0x01   /* abort the parent's pending work first */

/* Communicator configuration: start from NCCL_CONFIG_INITIALIZER, then set fields.
 * The library reads only the fields that fit in .size, so older callers work. */
typedef struct ncclConfig_v22700 {
  size_t size;          /* set by the initializer */
  unsigned int magic;   /* set by the initializer */
  unsigned int version; /* set by the initializer */
  int blocking;
  int cgaClusterSize;
  int minCTAs;
  int maxCTAs;
  const char* netName;
  int splitShare;
  int trafficClass;
  const char* commName;
  int collnetEnable;
  int CTAPolicy;
  int shrinkShare;
  int nvlsCTAs;
} ncclConfig_t;

#define NCCL_CONFIG_INITIALIZER {                      \
    sizeof(ncclConfig_t),                              \
    0xcafebeef,                                        \
    NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH),  \
    NCCL_CONFIG_UNDEF_INT, /* blocking */              \
    NCCL_CONFIG_UNDEF_INT, /* cgaClusterSize */        \
    NCCL_CONFIG_UNDEF_INT, /* minCTAs */               \
    NCCL_CONFIG_UNDEF_INT, /* maxCTAs */               \
    NCCL_CONFIG_UNDEF_PTR, /* netName */               \
    NCCL_CONFIG_UNDEF_INT, /* splitShare */            \
    NCCL_CONFIG_UNDEF_INT, /* trafficClass */          \
    NCCL_CONFIG_UNDEF_PTR, /* commName */              \
    NCCL_CONFIG_UNDEF_INT, /* collnetEnable */         \
    NCCL_CONFIG_UNDEF_INT, /* CTAPolicy */             \
    NCCL_CONFIG_UNDEF_INT, /* shrinkShare */           \
    NCCL_CONFIG_UNDEF_INT, /* nvlsCTAs */              \
  }

/* Filled by ncclGroupSimulateEnd. */
typedef struct ncclSimInfo_v22200 {
  size_t size;
  unsigned int magic;
  unsigned int version;
  float estimatedTime;
} ncclSimInfo_t;

#define NCCL_SIM_INFO_INITIALIZER {                    \
    sizeof(ncclSimInfo_t),                             \
    0x74685283,                                        \
    NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH),  \
    NCCL_UNDEF_FLOAT                                   \
  }

/* Reduction operators. Values from ncclNumOps up are created at run time
 * (ncclRedOpCreatePreMulSum). ncclMaxRedOp keeps the enum four bytes wide. */
typedef enum { ncclNumOps_dummy = 5 } ncclRedOp_dummy_t;
typedef enum {
  ncclSum = 0,
  ncclProd = 1,
  ncclMax = 2,
  ncclMin = 3,
  ncclAvg = 4,
  ncclNumOps = 5,
  ncclMaxRedOp = 0x7fffffff >> (32 - 8 * sizeof(ncclRedOp_dummy_t))
} ncclRedOp_t;

/* Element types. */
typedef enum {
  ncclInt8 = 0, ncclChar = 0,
  ncclUint8 = 1,
  ncclInt32 = 2, ncclInt = 2,
  ncclUint32 = 3,
  ncclInt64 = 4,
  ncclUint64 = 5,
  ncclFloat16 = 6, ncclHalf = 6,
  ncclFloat32 = 7, ncclFloat = 7,
  ncclFloat64 = 8, ncclDouble = 8,
  ncclBfloat16 = 9,
  ncclFloat8e4m3 = 10,
  ncclFloat8e5m2 = 11,
  ncclNumTypes = 12
} ncclDataType_t;

/* Where the scalar of ncclRedOpCreatePreMulSum lives. */
typedef enum {
  ncclScalarDevice = 0,        /* device memory, read when the collective runs */
  ncclScalarHostImmediate = 1  /* host memory, read before the create call returns */
} ncclScalarResidence_t;

/* Every function exists twice: nccl* and the profiling alias pnccl*. */
#define NCCL_DECLARE_(ret, name, args) ret name args; ret p##name args

/* Memory that the library can map into peers. */
NCCL_DECLARE_(ncclResult_t, ncclMemAlloc, (void** ptr, size_t size));
NCCL_DECLARE_(ncclResult_t, ncclMemFree, (void* ptr));

/* Version as NCCL_VERSION_CODE of the library actually serving the calls. */
NCCL_DECLARE_(ncclResult_t, ncclGetVersion, (int* version));

/* Communicator lifecycle. */
NCCL_DECLARE_(ncclResult_t, ncclGetUniqueId, (ncclUniqueId* uniqueId));
NCCL_DECLARE_(ncclResult_t, ncclCommInitRankConfig,
              (ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank, ncclConfig_t* config));
NCCL_DECLARE_(ncclResult_t, ncclCommInitRank,
              (ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank));
NCCL_DECLARE_(ncclResult_t, ncclCommInitAll, (ncclComm_t* comm, int ndev, const int* devlist));
NCCL_DECLARE_(ncclResult_t, ncclCommFinalize, (ncclComm_t comm));
NCCL_DECLARE_(ncclResult_t, ncclCommDestroy, (ncclComm_t comm));
NCCL_DECLARE_(ncclResult_t, ncclCommAbort, (ncclComm_t comm));
NCCL_DECLARE_(ncclResult_t, ncclCommSplit,
              (ncclComm_t comm, int color, int key, ncclComm_t* newcomm, ncclConfig_t* config));
NCCL_DECLARE_(ncclResult_t, ncclCommShrink,
              (ncclComm_t comm, int* excludeRanksList, int excludeRanksCount, ncclComm_t* newcomm,
               ncclConfig_t* config, int shrinkFlags));
NCCL_DECLARE_(ncclResult_t, ncclCommInitRankScalable,
              (ncclComm_t* newcomm, int nranks, int myrank, int nId, ncclUniqueId* commIds,
               ncclConfig_t* config));

/* Errors. */
NCCL_DECLARE_(const char*, ncclGetErrorString, (ncclResult_t result));
NCCL_DECLARE_(const char*, ncclGetLastError, (ncclComm_t comm));
NCCL_DECLARE_(void, ncclResetDebugInit, (void));
NCCL_DECLARE_(ncclResult_t, ncclCommGetAsyncError, (ncclComm_t comm, ncclResult_t* asyncError));

/* Queries. */
NCCL_DECLARE_(ncclResult_t, ncclCommCount, (const ncclComm_t comm, int* count));
NCCL_DECLARE_(ncclResult_t, ncclCommCuDevice, (const ncclComm_t comm, int* device));
NCCL_DECLARE_(ncclResult_t, ncclCommUserRank, (const ncclComm_t comm, int* rank));

/* Buffer registration. */
NCCL_DECLARE_(ncclResult_t, ncclCommRegister,
              (const ncclComm_t comm, void* buff, size_t size, void** handle));
NCCL_DECLARE_(ncclResult_t, ncclCommDeregister, (const ncclComm_t comm, void* handle));
NCCL_DECLARE_(ncclResult_t, ncclCommWindowRegister,
              (ncclComm_t comm, void* buff, size_t size, ncclWindow_t* win, int winFlags));
NCCL_DECLARE_(ncclResult_t, ncclCommWindowDeregister, (ncclComm_t comm, ncclWindow_t win));

/* Custom reduction: multiply every input by *scalar, then sum. */
NCCL_DECLARE_(ncclResult_t, ncclRedOpCreatePreMulSum,
              (ncclRedOp_t* op, void* scalar, ncclDataType_t datatype,
               ncclScalarResidence_t residence, ncclComm_t comm));
NCCL_DECLARE_(ncclResult_t, ncclRedOpDestroy, (ncclRedOp_t op, ncclComm_t comm));

/* Collectives. count is in elements of datatype; all are enqueued on stream. */
NCCL_DECLARE_(ncclResult_t, ncclReduce,
              (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
               ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream));
NCCL_DECLARE_(ncclResult_t, ncclBcast,
              (void* buff, size_t count, ncclDataType_t datatype, int root, ncclComm_t comm,
               cudaStream_t stream));
NCCL_DECLARE_(ncclResult_t, ncclBroadcast,
              (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
               int root, ncclComm_t comm, cudaStream_t stream));
NCCL_DECLARE_(ncclResult_t, ncclAllReduce,
              (const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream));
/* recvcount elements per rank; sendbuff holds nranks*recvcount. */
NCCL_DECLARE_(ncclResult_t, ncclReduceScatter,
              (const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream));
/* sendcount elements per rank; recvbuff holds nranks*sendcount. */
NCCL_DECLARE_(ncclResult_t, ncclAllGather,
              (const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
               ncclComm_t comm, cudaStream_t stream));

/* Point to point. */
NCCL_DECLARE_(ncclResult_t, ncclSend,
              (const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
               ncclComm_t comm, cudaStream_t stream));
NCCL_DECLARE_(ncclResult_t, ncclRecv,
              (void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
               cudaStream_t stream));

/* Groups: calls between Start and the outermost End are issued together. */
NCCL_DECLARE_(ncclResult_t, ncclGroupStart, (void));
NCCL_DECLARE_(ncclResult_t, ncclGroupEnd, (void));
NCCL_DECLARE_(ncclResult_t, ncclGroupSimulateEnd, (ncclSimInfo_t* simInfo));

#undef NCCL_DECLARE_

#ifdef __cplusplus
}
#endif

#endif /* NCCL_H_ */
