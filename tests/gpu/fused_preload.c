/* The fused all-reduce + residual + RMSNorm on a communicator of NVIDIA's NCCL, with
 * libsnapccl.so preloaded (tools/gpu/run.sh features runs it; it is not a Criterion test
 * because it needs that process setup):
 *   1. the communicator comes from a non-blocking init and its first call is captured
 *      into a CUDA graph, so snapccl has not attached to it yet (attaching runs real
 *      collectives, never inside a capture): the call falls back to NVIDIA's all-reduce
 *      plus snapccl's own residual+RMSNorm kernel ("-> nccl" in the INFO log);
 *   2. an eager call afterwards attaches and runs snapccl's fused kernel.
 * Both against a CPU reference (float32, 1 rank: the sum is the input), outputs poisoned
 * first; and bitwise equal to each other. Exit 0 pass, 1 fail, 77 skip (no GPU, or the
 * fused call is not in the process: not preloaded). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_DEFAULT */
#endif
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nccl.h"

typedef ncclResult_t (*fused_fn)(const void*, const void*, const void*, void*, void*, size_t, size_t,
                                 float, ncclDataType_t, ncclComm_t, cudaStream_t);

#define CK(call)                                                                        \
  do {                                                                                  \
    cudaError_t e_ = (call);                                                            \
    if (e_ != cudaSuccess) {                                                            \
      fprintf(stderr, "FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)
#define NK(call)                                                                        \
  do {                                                                                  \
    ncclResult_t r_ = (call);                                                           \
    if (r_ != ncclSuccess) {                                                            \
      fprintf(stderr, "FAIL %s:%d %s: %s (%s)\n", __FILE__, __LINE__, #call,            \
              ncclGetErrorString(r_), ncclGetLastError(NULL));                          \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

enum { T = 5, H = 4104 }; /* H: a multiple of 8 that is not a power of two */
static const float kEps = 1e-6f;

static float frand(uint64_t* s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return (float)((*s >> 40) & 0xffffff) / (float)0x1000000 * 2.0f - 1.0f;
}

/* Residual and norm of row-major T x H inputs in double. */
static void reference(const float* x, const float* res, const float* g, double* rout, double* norm) {
  for (int t = 0; t < T; t++) {
    double ss = 0.0;
    for (int h = 0; h < H; h++) {
      double v = (double)x[t * H + h] + (double)res[t * H + h];
      rout[t * H + h] = v;
      ss += v * v;
    }
    double inv = 1.0 / sqrt(ss / H + (double)kEps);
    for (int h = 0; h < H; h++) norm[t * H + h] = rout[t * H + h] * inv * (double)g[h];
  }
}

static int check(const char* what, const float* got, const double* want) {
  size_t bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < (size_t)T * H; i++) {
    double err = fabs((double)got[i] - want[i]);
    double tol = 1e-5 + 1e-5 * fabs(want[i]);
    if (!(err <= tol)) bad++; /* NaN (the poison) counts as wrong */
    if (err > worst || isnan(err)) worst = isnan(err) ? INFINITY : err;
  }
  printf("%s %s: %zu of %d wrong, max error %.3g\n", bad ? "FAIL" : "ok  ", what, bad, T * H, worst);
  return bad != 0;
}

int main(void) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("skip: no GPU\n");
    return 77;
  }
  fused_fn fused = (fused_fn)dlsym(RTLD_DEFAULT, "snapcclAllReduceResidualRMSNorm");
  if (!fused) {
    printf("skip: snapcclAllReduceResidualRMSNorm is not in this process (LD_PRELOAD libsnapccl.so)\n");
    return 77;
  }
  CK(cudaSetDevice(0));
  ncclUniqueId id;
  ncclComm_t comm;
  NK(ncclGetUniqueId(&id));
  /* Non-blocking: snapccl attaches at the first call after the real init finished, not
   * inside ncclCommInitRank (a blocking init would attach at once). */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  cfg.blocking = 0;
  ncclResult_t ir = ncclCommInitRankConfig(&comm, 1, id, 0, &cfg);
  if (ir != ncclSuccess && ir != ncclInProgress) NK(ir);
  for (int polls = 0; ir == ncclInProgress; polls++) {
    NK(ncclCommGetAsyncError(comm, &ir));
    if (ir == ncclInProgress && polls > 60000) {
      fprintf(stderr, "FAIL the non-blocking init did not finish within a minute\n");
      return 1;
    }
    if (ir == ncclInProgress) usleep(1000);
  }
  NK(ir);

  const size_t n = (size_t)T * H, bytes = n * sizeof(float);
  float *hx = malloc(bytes), *hres = malloc(bytes), *hg = malloc(H * sizeof(float));
  float *got_norm = malloc(bytes), *got_rout = malloc(bytes), *first_norm = malloc(bytes);
  double *want_rout = malloc(n * sizeof(double)), *want_norm = malloc(n * sizeof(double));
  if (!hx || !hres || !hg || !got_norm || !got_rout || !first_norm || !want_rout || !want_norm) {
    fprintf(stderr, "FAIL out of host memory\n");
    return 1;
  }
  uint64_t seed = 0x5eed;
  for (size_t i = 0; i < n; i++) hx[i] = frand(&seed), hres[i] = 2.0f * frand(&seed);
  for (int h = 0; h < H; h++) hg[h] = 1.0f + 0.5f * frand(&seed);
  reference(hx, hres, hg, want_rout, want_norm);

  float *dx, *dres, *dg, *dnorm, *drout;
  CK(cudaMalloc((void**)&dx, bytes));
  CK(cudaMalloc((void**)&dres, bytes));
  CK(cudaMalloc((void**)&dg, H * sizeof(float)));
  CK(cudaMalloc((void**)&dnorm, bytes));
  CK(cudaMalloc((void**)&drout, bytes));
  CK(cudaMemcpy(dx, hx, bytes, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dres, hres, bytes, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dg, hg, H * sizeof(float), cudaMemcpyHostToDevice));
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int rc = 0;

  /* 1. Captured before attaching: NVIDIA's all-reduce + snapccl's norm kernel. */
  CK(cudaMemset(dnorm, 0xff, bytes)); /* NaN poison */
  CK(cudaMemset(drout, 0xff, bytes));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  ncclResult_t fr = fused(dx, dres, dg, dnorm, drout, T, H, kEps, ncclFloat32, comm, s);
  CK(cudaStreamEndCapture(s, &graph));
  NK(fr);
  CK(cudaGraphInstantiate(&exec, graph, 0));
  CK(cudaGraphLaunch(exec, s));
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(got_norm, dnorm, bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(got_rout, drout, bytes, cudaMemcpyDeviceToHost));
  rc |= check("captured (fallback) residual_out", got_rout, want_rout);
  rc |= check("captured (fallback) norm_out", got_norm, want_norm);
  memcpy(first_norm, got_norm, bytes);

  /* 2. Eager: attaches, then snapccl's own fused kernel. */
  CK(cudaMemset(dnorm, 0xff, bytes));
  CK(cudaMemset(drout, 0xff, bytes));
  NK(fused(dx, dres, dg, dnorm, drout, T, H, kEps, ncclFloat32, comm, s));
  CK(cudaStreamSynchronize(s));
  CK(cudaMemcpy(got_norm, dnorm, bytes, cudaMemcpyDeviceToHost));
  CK(cudaMemcpy(got_rout, drout, bytes, cudaMemcpyDeviceToHost));
  rc |= check("eager residual_out", got_rout, want_rout);
  rc |= check("eager norm_out", got_norm, want_norm);
  int same = memcmp(first_norm, got_norm, bytes) == 0;
  printf("%s fallback and fused norm_out bitwise equal\n", same ? "ok  " : "FAIL");
  rc |= !same;

  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  NK(ncclCommDestroy(comm));
  CK(cudaStreamDestroy(s));
  cudaFree(dx), cudaFree(dres), cudaFree(dg), cudaFree(dnorm), cudaFree(drout);
  free(hx), free(hres), free(hg), free(got_norm), free(got_rout), free(first_norm);
  free(want_rout), free(want_norm);
  printf("%s\n", rc ? "FAIL" : "PASS");
  return rc;
}
