/* Which libnccl is loaded, and which algorithm it picks per size.
 *
 * snapccl exports snapcclQueryAlgorithm (include/snapccl.h). It is looked up at run time
 * with dlsym, not linked, so the same binary runs against NVIDIA's libnccl, which has no
 * such function: then no algorithm lines are printed. */
#ifndef PERF_ALGO_H_
#define PERF_ALGO_H_

#include <stddef.h>
#include <stdio.h>

#include "nccl_api.h"

typedef ncclResult_t (*perf_query_fn)(ncclComm_t comm, const char* collective, size_t count,
                                      ncclDataType_t datatype, ncclRedOp_t op,
                                      const char** name);

/* snapcclQueryAlgorithm of the loaded library, or NULL. */
perf_query_fn perf_algo_query_fn(void);

/* "<path of the loaded libnccl> (snapccl 0.1.0)" or "... (NVIDIA NCCL 2.28.3)". */
void perf_library_describe(char* buf, size_t len);

/* ncclGetVersion's code, or 0 when unavailable. */
int perf_library_version(void);

/* Prints "# snapccl algorithm: <name> from <bytes> B" whenever the name differs from the
 * previous size's. Reset before each new (type, op) sweep. */
struct perf_algo_tracker {
  char last[96];
};
void perf_algo_reset(struct perf_algo_tracker* t);
/* name: the queried algorithm (NULL: nothing to print). */
void perf_algo_note(struct perf_algo_tracker* t, FILE* f, const char* name, size_t bytes);
/* Asks the library; returns a static or tracker-owned string, or NULL when the library
 * has no query function. A failed query yields "unavailable (<error>)". */
const char* perf_algo_query(ncclComm_t comm, const char* collective, size_t count,
                            ncclDataType_t dt, ncclRedOp_t op, char* scratch, size_t len);

#endif
