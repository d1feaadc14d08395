/* Runs a real collective on this host: an all-reduce across every local GPU, or across SNAPCCL_DEMO_RANKS ranks sharing
 * GPU 0 when SNAPCCL_SHARED_GPU=1, at sizes where each algorithm is chosen, checked
 * against the CPU.
 * Without a GPU it says so and exits 0: it is the README's "does it work here" step. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nccl.h"
#include "snapccl.h"

#define CHECK_CUDA(x)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)
#define CHECK_NCCL(x)                                                                         \
  do {                                                                                        \
    ncclResult_t r_ = (x);                                                                    \
    if (r_ != ncclSuccess) {                                                                  \
      fprintf(stderr, "%s:%d %s: %s (%s)\n", __FILE__, __LINE__, #x, ncclGetErrorString(r_), \
              ncclGetLastError(NULL));                                                        \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

enum { MAX_RANKS = 16 };

static int run_case(int n, ncclComm_t* comms, cudaStream_t* streams, const int* devs,
                    size_t count) {
  float* send[MAX_RANKS];
  float* recv[MAX_RANKS];
  float* host = malloc(count * sizeof(float) * (size_t)n);
  float* out = malloc(count * sizeof(float));
  double* expect = calloc(count, sizeof(double));
  for (int r = 0; r < n; r++) {
    CHECK_CUDA(cudaSetDevice(devs[r]));
    CHECK_CUDA(cudaMalloc((void**)&send[r], count * sizeof(float)));
    CHECK_CUDA(cudaMalloc((void**)&recv[r], count * sizeof(float)));
    for (size_t i = 0; i < count; i++) {
      /* Small integers: every partial sum is exact in fp32, so the check is exact. */
      host[r * count + i] = (float)((int)((i * 7 + (size_t)r * 13) % 17) - 8);
      expect[i] += host[r * count + i];
    }
    CHECK_CUDA(cudaMemcpy(send[r], host + r * count, count * sizeof(float), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemset(recv[r], 0xff, count * sizeof(float))); /* NaN poison */
  }
  CHECK_NCCL(ncclGroupStart());
  for (int r = 0; r < n; r++)
    CHECK_NCCL(ncclAllReduce(send[r], recv[r], count, ncclFloat, ncclSum, comms[r], streams[r]));
  CHECK_NCCL(ncclGroupEnd());
  int wrong = 0;
  for (int r = 0; r < n; r++) {
    CHECK_CUDA(cudaSetDevice(devs[r]));
    CHECK_CUDA(cudaStreamSynchronize(streams[r]));
    CHECK_CUDA(cudaMemcpy(out, recv[r], count * sizeof(float), cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < count; i++) wrong += out[i] != (float)expect[i];
    CHECK_CUDA(cudaFree(send[r]));
    CHECK_CUDA(cudaFree(recv[r]));
  }
  const char* name = "?";
  snapcclQueryAlgorithm(comms[0], "allreduce", count, ncclFloat, ncclSum, &name);
  printf("  allreduce %-8s %10zu floats on %d ranks: %s\n", name, count, n, wrong ? "WRONG" : "ok");
  free(host);
  free(out);
  free(expect);
  return wrong != 0;
}

int main(void) {
  int ngpus = 0;
  if (cudaGetDeviceCount(&ngpus) != cudaSuccess || ngpus == 0) {
    printf("snapccl demo: no GPU found on this machine; nothing to run (the library and tests "
           "were built)\n");
    return 0;
  }
  const char* shared = getenv("SNAPCCL_SHARED_GPU");
  int n = ngpus;
  if (shared && atoi(shared) == 1) n = getenv("SNAPCCL_DEMO_RANKS") ? atoi(getenv("SNAPCCL_DEMO_RANKS")) : 2;
  if (n < 1 || n > MAX_RANKS) n = 2;
  if (n == 1 && ngpus == 1)
    printf("snapccl demo: one GPU; set SNAPCCL_SHARED_GPU=1 to run several ranks on it\n");
  int devs[MAX_RANKS];
  ncclComm_t comms[MAX_RANKS];
  cudaStream_t streams[MAX_RANKS];
  for (int r = 0; r < n; r++) devs[r] = r % ngpus;
  CHECK_NCCL(ncclCommInitAll(comms, n, devs));
  for (int r = 0; r < n; r++) {
    CHECK_CUDA(cudaSetDevice(devs[r]));
    CHECK_CUDA(cudaStreamCreateWithFlags(&streams[r], cudaStreamNonBlocking));
  }
  int version = 0;
  snapcclGetVersion(&version);
  printf("snapccl %d: %d ranks on %d GPU(s)\n", version, n, ngpus);
  /* Sizes that make the selector pick each all-reduce algorithm in turn. */
  static const size_t counts[] = {1, 1023, 65537, 1u << 22, (1u << 24) + 3};
  int bad = 0;
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++)
    bad |= run_case(n, comms, streams, devs, counts[c]);
  for (int r = 0; r < n; r++) CHECK_NCCL(ncclCommDestroy(comms[r]));
  printf("snapccl demo: %s\n", bad ? "FAILED" : "all results correct");
  return bad;
}
