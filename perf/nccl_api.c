/* Run-time view of the loaded libnccl's functions (see nccl_api.h). */
#include "nccl_api.h"

#include <stdio.h>
#include <string.h>

typedef void (*perf_any_fn)(void);

struct perf_sym {
  const char* name;
  perf_any_fn fn; /* null when the loaded library lacks it (weak reference) */
  unsigned need;  /* 0: always needed */
};

int perf_nccl_check_symbols(unsigned needs, char* err, size_t errlen) {
  const struct perf_sym syms[] = {
    {"ncclGetVersion", (perf_any_fn)ncclGetVersion, 0},
    {"ncclGetUniqueId", (perf_any_fn)ncclGetUniqueId, 0},
    {"ncclCommInitRank", (perf_any_fn)ncclCommInitRank, 0},
    {"ncclCommDestroy", (perf_any_fn)ncclCommDestroy, 0},
    {"ncclCommAbort", (perf_any_fn)ncclCommAbort, 0},
    {"ncclCommGetAsyncError", (perf_any_fn)ncclCommGetAsyncError, 0},
    {"ncclGroupStart", (perf_any_fn)ncclGroupStart, 0},
    {"ncclGroupEnd", (perf_any_fn)ncclGroupEnd, 0},
    {"ncclCommInitRankConfig", (perf_any_fn)ncclCommInitRankConfig, PERF_NEED_CONFIG},
    {"ncclMemAlloc", (perf_any_fn)ncclMemAlloc, PERF_NEED_MEMALLOC},
    {"ncclMemFree", (perf_any_fn)ncclMemFree, PERF_NEED_MEMALLOC},
    {"ncclCommRegister", (perf_any_fn)ncclCommRegister, PERF_NEED_REGISTER},
    {"ncclCommDeregister", (perf_any_fn)ncclCommDeregister, PERF_NEED_REGISTER},
    {"ncclCommWindowRegister", (perf_any_fn)ncclCommWindowRegister, PERF_NEED_WINDOW},
    {"ncclCommWindowDeregister", (perf_any_fn)ncclCommWindowDeregister, PERF_NEED_WINDOW},
    {"ncclRedOpCreatePreMulSum", (perf_any_fn)ncclRedOpCreatePreMulSum, PERF_NEED_PREMULSUM},
    {"ncclRedOpDestroy", (perf_any_fn)ncclRedOpDestroy, PERF_NEED_PREMULSUM},
    {"ncclAllReduce", (perf_any_fn)ncclAllReduce, PERF_NEED_ALLREDUCE},
    {"ncclAllGather", (perf_any_fn)ncclAllGather, PERF_NEED_ALLGATHER},
    {"ncclReduceScatter", (perf_any_fn)ncclReduceScatter, PERF_NEED_REDUCESCATTER},
  };
  size_t i, used = 0;
  int missing = 0;
  if (errlen) err[0] = '\0';
  for (i = 0; i < sizeof(syms) / sizeof(syms[0]); i++) {
    if (syms[i].fn != NULL || (syms[i].need != 0 && !(syms[i].need & needs))) continue;
    missing++;
    if (used < errlen) {
      int n = snprintf(err + used, errlen - used, "%s%s", missing > 1 ? " " : "", syms[i].name);
      if (n > 0) used += (size_t)n;
    }
  }
  return missing;
}

const char* perf_nccl_error_string(ncclResult_t r) {
  const char* s = ncclGetErrorString ? ncclGetErrorString(r) : NULL;
  return s ? s : "";
}

const char* perf_nccl_last_error(void) {
  const char* s = ncclGetLastError ? ncclGetLastError(NULL) : NULL;
  return s ? s : "";
}
