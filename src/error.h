/* One error path: a failure records a one-line reason (ncclGetLastError), logs it at
 * WARN and returns NCCL's code.
 *
 * The check macros, one rule for all of them:
 *   - any code other than ncclSuccess is passed up unchanged (returned, or stored in
 *     `res` before the jump to the cleanup label). ncclInProgress is not a failure, but
 *     it is not done either: the few callers that may see it (non-blocking inits, a
 *     group's end, a non-blocking real communicator) test for it by hand;
 *   - a CUDA call that fails is recorded as ncclUnhandledCudaError, and the runtime's
 *     last error is cleared, so that a later check of it (a kernel launch's
 *     cudaGetLastError) does not report this failure a second time;
 *   - CUDA_TRY is for CUDA calls whose failure the caller handles itself (a capability
 *     probe, teardown): it yields the result and clears the last error the same way. */
#ifndef SNAPCCL_ERROR_H
#define SNAPCCL_ERROR_H

#include <stddef.h>

#include "nccl.h"

/* Records "reason" as the last error (process-wide, like NCCL) and logs a WARN line
 * naming the function. Returns code so callers can `return snapccl_error(...)`. */
ncclResult_t snapccl_error(ncclResult_t code, const char* func, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The last recorded reason, copied into a per-thread buffer so it stays stable. */
const char* snapccl_last_error(void);
/* ncclGetErrorString's text, for internal use. */
const char* snapccl_result_string(ncclResult_t code);
void snapccl_clear_last_error(void);
/* Interposed mode: the latest failure was the real NCCL's (its ncclGetLastError has the
 * text); any snapccl_error makes ours the latest again. */
void snapccl_mark_real_error(void);
int snapccl_last_error_is_real(void);

#define SNAP_FAIL(code, ...) return snapccl_error((code), __func__, __VA_ARGS__)

#define SNAP_CHECK(call)                                    \
  do {                                                      \
    ncclResult_t snap_r_ = (call);                          \
    if (snap_r_ != ncclSuccess) return snap_r_;             \
  } while (0)

/* Like SNAP_CHECK but jumps to a cleanup label with the code in `res`. */
#define SNAP_CHECK_GOTO(call, res, label)                   \
  do {                                                      \
    (res) = (call);                                         \
    if ((res) != ncclSuccess) goto label;                   \
  } while (0)

/* The result of a CUDA call, with the runtime's last error cleared if it failed. */
static inline cudaError_t snapccl_cuda_tried(cudaError_t e) {
  if (e != cudaSuccess) (void)cudaGetLastError();
  return e;
}
#define CUDA_TRY(call) snapccl_cuda_tried(call)

#define CUDA_CHECK(call)                                                        \
  do {                                                                          \
    cudaError_t snap_e_ = CUDA_TRY(call);                                       \
    if (snap_e_ != cudaSuccess)                                                 \
      return snapccl_error(ncclUnhandledCudaError, __func__, "%s failed: %s",   \
                           #call, cudaGetErrorString(snap_e_));                 \
  } while (0)

#define CUDA_CHECK_GOTO(call, res, label)                                       \
  do {                                                                          \
    cudaError_t snap_e_ = CUDA_TRY(call);                                       \
    if (snap_e_ != cudaSuccess) {                                               \
      (res) = snapccl_error(ncclUnhandledCudaError, __func__, "%s failed: %s",  \
                            #call, cudaGetErrorString(snap_e_));                \
      goto label;                                                               \
    }                                                                           \
  } while (0)

/* For system calls returning -1 with errno set. */
#define SYS_CHECK(call)                                                         \
  do {                                                                          \
    if ((call) == -1)                                                           \
      return snapccl_error(ncclSystemError, __func__, "%s failed: %s", #call,   \
                           strerror(errno));                                    \
  } while (0)

#endif
