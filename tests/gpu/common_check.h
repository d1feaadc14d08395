/* The GPU suite's checking macros, for its .c files only: a failed CUDA or NCCL call
 * returns t_fail's -1 from the enclosing function, with the call and the error in err
 * (a char[T_ERRLEN] in scope). */
#ifndef T_COMMON_CHECK_H
#define T_COMMON_CHECK_H

#include "common.h"

#define CU(call)                                                                          \
  do {                                                                                    \
    cudaError_t e_ = (call);                                                              \
    if (e_ != cudaSuccess)                                                                \
      return t_fail(err, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                 \
                  cudaGetErrorString(e_));                                                \
  } while (0)
#define NC(call)                                                                          \
  do {                                                                                    \
    ncclResult_t r_ = (call);                                                             \
    if (r_ != ncclSuccess)                                                                \
      return t_fail(err, "%s:%d: %s failed: %s (last error: %s)", __FILE__, __LINE__, #call, \
                  ncclGetErrorString(r_), ncclGetLastError(NULL));                         \
  } while (0)

#endif
