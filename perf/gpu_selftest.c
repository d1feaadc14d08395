/* perf_gpu_selftest: the GPU half of the data check (datacheck.cu) against the host
 * half (datagen.h). Fills on the GPU must equal the host's values bit for bit, and the
 * check kernel must count exactly the elements that were made wrong. Exit 77 (skipped)
 * where there is no GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "coll.h"
#include "datacheck.h"
#include "datagen.h"
#include "expect.h"

#define CUDA(call)                                                                  \
  do {                                                                              \
    cudaError_t e_ = (call);                                                        \
    if (e_ != cudaSuccess) {                                                        \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(1);                                                                      \
    }                                                                               \
  } while (0)

enum { N = 100003 }; /* odd: exercises the grid-stride tail */

static void put_bits(void* buf, size_t i, int size, uint64_t bits) {
  memcpy((char*)buf + i * (size_t)size, &bits, (size_t)size); /* little-endian */
}

static uint64_t get_bits(const void* buf, size_t i, int size) {
  uint64_t bits = 0;
  memcpy(&bits, (const char*)buf + i * (size_t)size, (size_t)size);
  return bits;
}

static unsigned long long count_wrong(const void* dev, size_t n, struct perf_expect e,
                                      unsigned long long* dwrong) {
  unsigned long long w = 0;
  CUDA(cudaMemset(dwrong, 0, sizeof(w)));
  CUDA(perf_dev_check(dev, n, e, dwrong, 0));
  CUDA(cudaDeviceSynchronize());
  CUDA(cudaMemcpy(&w, dwrong, sizeof(w), cudaMemcpyDeviceToHost));
  return w;
}

static void one_case(int dt, int op, int nranks, void* dev, void* host,
                     unsigned long long* dwrong) {
  const int size = perf_dt_size(dt);
  const struct perf_scheme s = perf_scheme_make(dt, op, nranks);
  const uint64_t seed = 42;
  struct perf_expect e;
  size_t i, bad = 0;
  int r = nranks - 1;

  /* Fill: device values equal host values. */
  CUDA(perf_dev_fill(dev, N, s, r, 7, seed, 0));
  CUDA(cudaMemcpy(host, dev, (size_t)N * size, cudaMemcpyDeviceToHost));
  for (i = 0; i < N; i++)
    if (get_bits(host, i, size) != perf_encode(dt, perf_input(&s, r, 7 + i, seed))) bad++;
  EXPECT(bad == 0, "%s %s n=%d: %zu fills differ from the host", perf_type_names[dt],
         perf_op_names[op], nranks, bad);

  /* Check: the exact expected result passes; k planted errors are k wrong elements. */
  memset(&e, 0, sizeof(e));
  e.s = s;
  e.seed = seed;
  e.idx0 = 3;
  e.mode = op == PERF_OP_NONE ? PERF_EXPECT_GATHER : PERF_EXPECT_REDUCE;
  e.block = 1000;
  for (i = 0; i < N; i++) {
    double v = op == PERF_OP_NONE ? perf_input(&s, (int)(i / 1000), i % 1000, seed)
                                  : perf_reduced(&s, 3 + i, seed);
    put_bits(host, i, size, perf_encode(dt, v));
  }
  CUDA(cudaMemcpy(dev, host, (size_t)N * size, cudaMemcpyHostToDevice));
  EXPECT(count_wrong(dev, N, e, dwrong) == 0, "%s %s n=%d: exact result flagged",
         perf_type_names[dt], perf_op_names[op], nranks);
  put_bits(host, 0, size, get_bits(host, 0, size) ^ 1u);      /* low bit */
  put_bits(host, N / 2, size, get_bits(host, N / 2, size) ^ ((uint64_t)1 << (8 * size - 2)));
  put_bits(host, N - 1, size, (perf_poison_byte(dt) * 0x0101010101010101ull)); /* never written */
  CUDA(cudaMemcpy(dev, host, (size_t)N * size, cudaMemcpyHostToDevice));
  {
    unsigned long long w = count_wrong(dev, N, e, dwrong);
    /* A 1-bit change is within tolerance where the scheme allows ulps (float avg). */
    unsigned long long want = s.tol_ulps ? 2 : 3;
    EXPECT(w == want, "%s %s n=%d: %llu wrong, want %llu", perf_type_names[dt],
           perf_op_names[op], nranks, w, want);
  }

  /* Poison: untouched poison passes, one stray write is one wrong element. */
  e.mode = PERF_EXPECT_POISON;
  CUDA(cudaMemset(dev, (int)perf_poison_byte(dt), (size_t)64 * size));
  EXPECT(count_wrong(dev, 64, e, dwrong) == 0, "%s poison flagged", perf_type_names[dt]);
  CUDA(cudaMemset((char*)dev + 5 * size, 0, (size_t)size));
  EXPECT(count_wrong(dev, 64, e, dwrong) == 1, "%s stray write missed", perf_type_names[dt]);
}

int main(void) {
  static const int ranks[] = {1, 3, 8};
  int count = 0, dt, op;
  size_t k;
  void *dev, *host;
  unsigned long long* dwrong;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("perf_gpu_selftest: no GPU, skipped\n");
    return 77;
  }
  CUDA(cudaMalloc(&dev, (size_t)N * 8));
  CUDA(cudaMalloc((void**)&dwrong, sizeof(*dwrong)));
  host = malloc((size_t)N * 8);
  if (!host) return 1;
  for (dt = 0; dt < PERF_NUM_TYPES; dt++)
    for (op = 0; op < PERF_NUM_OPS; op++)
      for (k = 0; k < sizeof(ranks) / sizeof(ranks[0]); k++) one_case(dt, op, ranks[k], dev, host, dwrong);
  CUDA(cudaFree(dev));
  CUDA(cudaFree(dwrong));
  free(host);
  if (failures) {
    fprintf(stderr, "perf_gpu_selftest: %d failure(s)\n", failures);
    return 1;
  }
  printf("perf_gpu_selftest: all checks passed\n");
  return 0;
}
