/* host_overhead's yardsticks: an empty kernel launched three ways, to set a collective's
 * host time against the cheapest launch the runtime and the driver offer. */
#ifndef PERF_LAUNCH_PROBE_H
#define PERF_LAUNCH_PROBE_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Finds the kernel's driver handle and cuLaunchKernel (through the runtime's driver
 * entry point: no libcuda at link time). 0 on success, else -1 with the reason in why. */
int probe_setup(char* why, size_t len);
/* kernel<<<1, 32, 0, s>>>() of a kernel with no parameters. */
cudaError_t probe_launch_empty(cudaStream_t s);
/* A kernel whose one parameter is a block as large as a collective's arguments, with one
 * field changed per call: through cudaLaunchKernel, the block packed anew each call ... */
cudaError_t probe_launch_runtime(cudaStream_t s, unsigned long long field);
/* ... and through cuLaunchKernel with the parameter array prepared once. Returns the
 * driver's CUresult (0 on success). */
int probe_launch_driver(cudaStream_t s, unsigned long long field);

#ifdef __cplusplus
}
#endif

#endif
