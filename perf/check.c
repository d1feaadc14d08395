/* Failure reports for check.h's macros. */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void perf_hostname(char* buf, size_t len) {
  char* dot;
  if (len == 0) return;
  if (gethostname(buf, len) != 0) snprintf(buf, len, "unknown");
  buf[len - 1] = '\0';
  dot = strchr(buf, '.');
  if (dot) *dot = '\0';
}

void perf_report(const char* fmt, ...) {
  char host[256];
  va_list ap;
  perf_hostname(host, sizeof(host));
  fprintf(stderr, "%s: ", host);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
}

void perf_report_cuda(const char* call, cudaError_t err, const char* file, int line) {
  perf_report("CUDA failure %s:%d '%s': %s (%s)", file, line, call, cudaGetErrorString(err),
              cudaGetErrorName(err));
}

void perf_report_nccl(const char* call, ncclResult_t res, const char* file, int line) {
  const char* last = perf_nccl_last_error();
  perf_report("NCCL failure %s:%d '%s': %s (%d)%s%s", file, line, call,
              perf_nccl_error_string(res), (int)res, last[0] ? " / " : "", last);
}
