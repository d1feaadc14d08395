/* GPU-side fill and check of perf buffers (datacheck.cu), callable from C. Values come
 * from datagen.h, so a 1 GiB buffer is generated and verified in place in milliseconds,
 * with no expected-result buffer and no host copies. */
#ifndef PERF_DATACHECK_H_
#define PERF_DATACHECK_H_

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "datagen.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What an output element must hold. */
enum {
  PERF_EXPECT_REDUCE = 0, /* element i: the reduction over ranks of input element idx0+i */
  PERF_EXPECT_GATHER = 1, /* element i: rank i/block's input element i%block */
  PERF_EXPECT_POISON = 2  /* element i: still the poison pattern (nothing wrote there) */
};

struct perf_expect {
  struct perf_scheme s;
  int mode;
  uint64_t idx0;
  uint64_t block;
  uint64_t seed;
};

/* buf[i] = rank's input element idx0 + i, for i < count, on stream. */
cudaError_t perf_dev_fill(void* buf, size_t count, struct perf_scheme s, int rank, uint64_t idx0,
                          uint64_t seed, cudaStream_t stream);

/* Adds to *dev_wrong (device memory) the number of elements of buf[0..count) that differ
 * from e, on stream. */
cudaError_t perf_dev_check(const void* buf, size_t count, struct perf_expect e,
                           unsigned long long* dev_wrong, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
