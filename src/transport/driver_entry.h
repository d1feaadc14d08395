/* Driver entry points by name through the runtime (cudaGetDriverEntryPointByVersion): no
 * link-time libcuda, and each symbol in the ABI of the CUDA version its caller was
 * written against, whatever newer driver is installed. */
#ifndef SNAPCCL_TRANSPORT_DRIVER_ENTRY_H
#define SNAPCCL_TRANSPORT_DRIVER_ENTRY_H

#include <stddef.h>

/* Stores entry point `name` of ABI `abi` (12000 for CUDA 12.0) in *slot (a function
 * pointer's storage) and returns 1; 0 with the reason in why when the driver lacks it. */
int snapccl_driver_entry(const char* name, void* slot, int abi, char* why, size_t len);

#endif
