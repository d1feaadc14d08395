/* Error checks for the perf binaries: every CUDA, NCCL and MPI call goes through one of
 * these, which print where and why it failed and make the enclosing function return -1
 * (functions here return 0 on success). */
#ifndef PERF_CHECK_H_
#define PERF_CHECK_H_

#include <cuda_runtime.h>

#include "nccl_api.h"

void perf_report_cuda(const char* call, cudaError_t err, const char* file, int line);
void perf_report_nccl(const char* call, ncclResult_t res, const char* file, int line);
/* printf-style failure message with the host name in front, to stderr. */
void perf_report(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

/* Short host name (up to the first '.'), as nccl-tests prints it. */
void perf_hostname(char* buf, size_t len);

#define PERF_CUDA(call)                                          \
  do {                                                           \
    cudaError_t perf_err_ = (call);                              \
    if (perf_err_ != cudaSuccess) {                              \
      perf_report_cuda(#call, perf_err_, __FILE__, __LINE__);    \
      return -1;                                                 \
    }                                                            \
  } while (0)

#define PERF_NCCL(call)                                          \
  do {                                                           \
    ncclResult_t perf_res_ = (call);                             \
    if (perf_res_ != ncclSuccess) {                              \
      perf_report_nccl(#call, perf_res_, __FILE__, __LINE__);    \
      return -1;                                                 \
    }                                                            \
  } while (0)

/* Propagates a failure already reported by the callee. */
#define PERF_TRY(call)                                           \
  do {                                                           \
    if ((call) != 0) return -1;                                  \
  } while (0)

#endif
