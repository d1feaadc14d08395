/* Loaded-library identification and algorithm reporting (algo.h). */
#include "algo.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

typedef ncclResult_t (*perf_version_fn)(int* version);

perf_query_fn perf_algo_query_fn(void) {
  static int looked;
  static perf_query_fn fn;
  if (!looked) { /* first call happens before any thread starts */
    fn = (perf_query_fn)dlsym(RTLD_DEFAULT, "snapcclQueryAlgorithm");
    looked = 1;
  }
  return fn;
}

int perf_library_version(void) {
  int v = 0;
  if (!ncclGetVersion || ncclGetVersion(&v) != ncclSuccess) return 0;
  return v;
}

void perf_library_describe(char* buf, size_t len) {
  Dl_info info;
  char real[4096];
  const char* path = "libnccl (path unknown)";
  perf_version_fn snap = (perf_version_fn)dlsym(RTLD_DEFAULT, "snapcclGetVersion");
  int v = 0;
  memset(&info, 0, sizeof(info));
  /* The resolved path, so that scripts can tell which directory it came from. */
  if (ncclGetVersion && dladdr((void*)ncclGetVersion, &info) && info.dli_fname)
    path = realpath(info.dli_fname, real) ? real : info.dli_fname;
  if (snap && snap(&v) == ncclSuccess) {
    snprintf(buf, len, "%s (snapccl %d.%d.%d)", path, v / 10000, (v / 100) % 100, v % 100);
  } else if ((v = perf_library_version()) != 0) {
    /* NCCL >= 2.9 codes its version as major*10000 + minor*100 + patch. */
    snprintf(buf, len, "%s (NVIDIA NCCL %d.%d.%d)", path, v / 10000, (v / 100) % 100, v % 100);
  } else {
    snprintf(buf, len, "%s (version unknown)", path);
  }
}

void perf_algo_reset(struct perf_algo_tracker* t) { t->last[0] = '\0'; }

void perf_algo_note(struct perf_algo_tracker* t, FILE* f, const char* name, size_t bytes) {
  if (!name || strcmp(name, t->last) == 0) return;
  snprintf(t->last, sizeof(t->last), "%s", name);
  perf_print_algorithm(f, name, bytes);
}

const char* perf_algo_query(ncclComm_t comm, const char* collective, size_t count,
                            ncclDataType_t dt, ncclRedOp_t op, char* scratch, size_t len) {
  perf_query_fn fn = perf_algo_query_fn();
  const char* name = NULL;
  ncclResult_t r;
  if (!fn) return NULL;
  r = fn(comm, collective, count, dt, op, &name);
  if (r != ncclSuccess) {
    const char* why = perf_nccl_last_error();
    snprintf(scratch, len, "unavailable (%s%s%s)", perf_nccl_error_string(r), why[0] ? ": " : "",
             why);
    return scratch;
  }
  return name ? name : "unknown";
}
