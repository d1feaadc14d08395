// What the CUDA C++ tools of perf/ (lowprec_accuracy, lowprec_kernels) share: exiting on a
// failed CUDA call, and sizes with K/M/G suffixes on the command line.
#pragma once

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "args.h"
}

#define CUDA_OK(call)                                                                       \
  do {                                                                                      \
    cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) {                                                                \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
      exit(2);                                                                              \
    }                                                                                       \
  } while (0)

// "64M" -> 67108864 as the perf binaries read sizes (perf_parse_size: K, M, G are powers
// of 1024); anything else ends the program.
static inline size_t tool_parse_size(const char* s) {
  size_t v = 0;
  if (perf_parse_size(s, &v) != 0) {
    fprintf(stderr, "not a size: %s\n", s);
    exit(2);
  }
  return v;
}
