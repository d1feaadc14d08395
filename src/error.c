#include "error.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

#define SNAPCCL_ERR_LEN 1024

/* NCCL keeps one process-wide last error; so do we. Readers get a private copy so a
 * concurrent failure in another thread cannot change the string under them. */
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;
static char g_err[SNAPCCL_ERR_LEN];
static _Thread_local char t_err_copy[SNAPCCL_ERR_LEN];
static int g_real_owner;

void snapccl_mark_real_error(void) { __atomic_store_n(&g_real_owner, 1, __ATOMIC_RELAXED); }
int snapccl_last_error_is_real(void) { return __atomic_load_n(&g_real_owner, __ATOMIC_RELAXED); }

ncclResult_t snapccl_error(ncclResult_t code, const char* func, const char* fmt, ...) {
  char msg[SNAPCCL_ERR_LEN - 64];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  pthread_mutex_lock(&g_err_lock);
  snprintf(g_err, sizeof g_err, "%s: %s", func, msg);
  pthread_mutex_unlock(&g_err_lock);
  __atomic_store_n(&g_real_owner, 0, __ATOMIC_RELAXED);
  snapccl_log(LOG_WARN, SUB_ALL, __FILE__, __LINE__, "%s: %s (%s)", func, msg,
              snapccl_result_string(code));
  return code;
}

const char* snapccl_last_error(void) {
  pthread_mutex_lock(&g_err_lock);
  memcpy(t_err_copy, g_err, sizeof t_err_copy);
  pthread_mutex_unlock(&g_err_lock);
  return t_err_copy;
}

void snapccl_clear_last_error(void) {
  pthread_mutex_lock(&g_err_lock);
  g_err[0] = 0;
  pthread_mutex_unlock(&g_err_lock);
}

const char* snapccl_result_string(ncclResult_t code) {
  static const char* const text[] = {
      [ncclSuccess] = "no error",
      [ncclUnhandledCudaError] = "unhandled cuda error (run with NCCL_DEBUG=INFO for details)",
      [ncclSystemError] = "unhandled system error (run with NCCL_DEBUG=INFO for details)",
      [ncclInternalError] = "internal error - please report this issue to the NCCL developers",
      [ncclInvalidArgument] = "invalid argument (run with NCCL_DEBUG=WARN for details)",
      [ncclInvalidUsage] = "invalid usage (run with NCCL_DEBUG=WARN for details)",
      [ncclRemoteError] = "remote process exited or there was a network error",
      [ncclInProgress] = "NCCL operation in progress",
  };
  if ((int)code < 0 || code >= ncclNumResults) return "unknown result code";
  return text[code];
}
