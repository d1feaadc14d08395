#include "transport/driver_entry.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

int snapccl_driver_entry(const char* name, void* slot, int abi, char* why, size_t len) {
  void* fn = NULL;
  enum cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
  cudaError_t e = CUDA_TRY(cudaGetDriverEntryPointByVersion(name, &fn, abi, cudaEnableDefault, &q));
  if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
    snprintf(why, len, "the driver has no %s (%s)", name,
             e != cudaSuccess ? cudaGetErrorString(e) : "symbol not found");
    return 0;
  }
  memcpy(slot, &fn, sizeof fn);
  return 1;
}
