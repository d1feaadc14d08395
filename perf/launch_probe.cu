// The kernels and launches of launch_probe.h.
#include <cuda.h>
#include <stdio.h>

#include "launch_probe.h"

// As large as snapccl's kernel arguments (every rank's workspace, the layout, the call's
// fields): the parameter block each launch copies.
struct probe_args {
  unsigned long long words[40];
};

__global__ void probe_empty_kernel(void) {}

__global__ void probe_args_kernel(probe_args a) {
  // Never true for the values host_overhead passes; keeps the parameter alive.
  if (a.words[0] == ~0ull && threadIdx.x == 0) printf("%llu\n", a.words[39]);
}

typedef CUresult (*launch_fn)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                              unsigned, unsigned, CUstream, void**, void**);
static launch_fn g_launch;
static CUfunction g_func;
static probe_args g_packed; // the driver path's block: one field written per call
static void* g_params[1] = {&g_packed};

extern "C" int probe_setup(char* why, size_t len) {
  cudaDriverEntryPointQueryResult q;
  void* fn = nullptr;
  cudaError_t e = cudaGetDriverEntryPointByVersion("cuLaunchKernel", &fn, 12000, cudaEnableDefault, &q);
  if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
    snprintf(why, len, "cuLaunchKernel not found: %s", cudaGetErrorString(e));
    return -1;
  }
  cudaFunction_t f;
  e = cudaGetFuncBySymbol(&f, (const void*)probe_args_kernel);
  if (e != cudaSuccess) {
    snprintf(why, len, "cudaGetFuncBySymbol: %s", cudaGetErrorString(e));
    return -1;
  }
  g_launch = (launch_fn)fn;
  g_func = (CUfunction)f;
  return 0;
}

extern "C" cudaError_t probe_launch_empty(cudaStream_t s) {
  probe_empty_kernel<<<1, 32, 0, s>>>();
  return cudaGetLastError();
}

extern "C" cudaError_t probe_launch_runtime(cudaStream_t s, unsigned long long field) {
  probe_args a = g_packed;
  a.words[1] = field;
  void* params[1] = {&a};
  return cudaLaunchKernel((const void*)probe_args_kernel, dim3(1), dim3(32), params, 0, s);
}

extern "C" int probe_launch_driver(cudaStream_t s, unsigned long long field) {
  g_packed.words[1] = field;
  return (int)g_launch(g_func, 1, 1, 1, 32, 1, 1, 0, (CUstream)s, g_params, nullptr);
}
