/* The NCCL API as the perf binaries see it: include/nccl.h, with every function they
 * call declared weak.
 *
 * Why weak: the binaries are linked against our libnccl.so.2 but must also run against
 * NVIDIA's (LD_LIBRARY_PATH decides), and while snapccl is being written our library may
 * not define every function yet. A weak reference links either way and is bound at load
 * time to whichever libnccl is loaded; perf_nccl_check_symbols() then names any function
 * the loaded library lacks instead of letting the program crash on a null call.
 * (nccl-tests does the same for its optional functions.) Every perf source that calls
 * NCCL must include this header rather than nccl.h: one strong reference anywhere would
 * make the symbol required at link time again. */
#ifndef PERF_NCCL_API_H_
#define PERF_NCCL_API_H_

/* Through snapccl.h, whose own #include "nccl.h" resolves next to it: the perf code
 * compiles against our include/nccl.h even though the CUDA include directory, also on
 * the path, holds NVIDIA's. */
#include "snapccl.h"

#pragma weak ncclGetVersion
#pragma weak ncclGetUniqueId
#pragma weak ncclCommInitRank
#pragma weak ncclCommInitRankConfig
#pragma weak ncclCommDestroy
#pragma weak ncclCommAbort
#pragma weak ncclCommGetAsyncError
#pragma weak ncclGetErrorString
#pragma weak ncclGetLastError
#pragma weak ncclMemAlloc
#pragma weak ncclMemFree
#pragma weak ncclCommRegister
#pragma weak ncclCommDeregister
#pragma weak ncclCommWindowRegister
#pragma weak ncclCommWindowDeregister
#pragma weak ncclRedOpCreatePreMulSum
#pragma weak ncclRedOpDestroy
#pragma weak ncclAllReduce
#pragma weak ncclAllGather
#pragma weak ncclReduceScatter
#pragma weak ncclGroupStart
#pragma weak ncclGroupEnd

/* Which optional functions a run needs besides the core set (lifecycle, groups,
 * errors, the collective itself). */
enum {
  PERF_NEED_PREMULSUM = 1 << 0, /* -o mulsum / all */
  PERF_NEED_REGISTER = 1 << 1,  /* -R 1 */
  PERF_NEED_WINDOW = 1 << 2,    /* -R 2 */
  PERF_NEED_CONFIG = 1 << 3,    /* -x */
  PERF_NEED_MEMALLOC = 1 << 4,  /* buffers from ncclMemAlloc */
  PERF_NEED_ALLREDUCE = 1 << 5,
  PERF_NEED_ALLGATHER = 1 << 6,
  PERF_NEED_REDUCESCATTER = 1 << 7
};

/* Writes to err the names of the needed functions the loaded libnccl does not define,
 * one line; returns how many are missing. */
int perf_nccl_check_symbols(unsigned needs, char* err, size_t errlen);

/* ncclGetErrorString / ncclGetLastError when the library has them, else "". */
const char* perf_nccl_error_string(ncclResult_t r);
const char* perf_nccl_last_error(void);

#endif
