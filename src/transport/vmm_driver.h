/* The driver entry points of cuMem (virtual memory management) memory: ncclMemAlloc's
 * allocations and the registration of cuMem buffers (PyTorch's expandable segments
 * included). Loaded once with cudaGetDriverEntryPointByVersion: no link-time libcuda. */
#ifndef SNAPCCL_TRANSPORT_VMM_DRIVER_H
#define SNAPCCL_TRANSPORT_VMM_DRIVER_H

#include <cuda.h>
#include <stddef.h>

struct snapccl_vmm_driver {
  CUresult (*get_error_string)(CUresult err, const char** str);
  CUresult (*device_get)(CUdevice* dev, int ordinal);
  CUresult (*mem_get_allocation_granularity)(size_t* gran, const CUmemAllocationProp* prop,
                                             CUmemAllocationGranularity_flags option);
  CUresult (*mem_create)(CUmemGenericAllocationHandle* handle, size_t size, const CUmemAllocationProp* prop,
                         unsigned long long flags);
  CUresult (*mem_release)(CUmemGenericAllocationHandle handle);
  CUresult (*mem_retain_allocation_handle)(CUmemGenericAllocationHandle* handle, void* addr);
  CUresult (*mem_export_to_shareable_handle)(void* shareable, CUmemGenericAllocationHandle handle,
                                             CUmemAllocationHandleType type, unsigned long long flags);
  CUresult (*mem_import_from_shareable_handle)(CUmemGenericAllocationHandle* handle, void* shareable,
                                               CUmemAllocationHandleType type);
  CUresult (*mem_address_reserve)(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                  unsigned long long flags);
  CUresult (*mem_address_free)(CUdeviceptr ptr, size_t size);
  CUresult (*mem_map)(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                      unsigned long long flags);
  CUresult (*mem_unmap)(CUdeviceptr ptr, size_t size);
  CUresult (*mem_set_access)(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count);
  CUresult (*mem_get_access)(unsigned long long* flags, const CUmemLocation* location, CUdeviceptr ptr);
  CUresult (*mem_get_address_range)(CUdeviceptr* base, size_t* size, CUdeviceptr ptr);
  CUresult (*pointer_get_attribute)(void* data, CUpointer_attribute attr, CUdeviceptr ptr);
};

/* The table, or NULL (the reason in why) when the driver lacks an entry point. */
const struct snapccl_vmm_driver* snapccl_vmm_driver(char* why, size_t len);
/* "what failed: <driver's error string> (code)" into why. */
void snapccl_vmm_fail(const struct snapccl_vmm_driver* d, CUresult r, const char* what, char* why, size_t len);

/* ncclMemAlloc's allocation: cuMem memory exportable as a POSIX file descriptor, its
 * size rounded up to the granularity, mapped read-write for this GPU and every GPU that
 * can reach it. Falls back to cudaMalloc where the driver has no cuMem (then it is
 * registered through legacy IPC). */
int snapccl_vmm_alloc(void** ptr, size_t size, char* why, size_t len);
/* ncclMemFree: unmaps and releases what snapccl_vmm_alloc made (or cudaFree's a
 * cudaMalloc fallback). 0 on success. */
int snapccl_vmm_free(void* ptr, char* why, size_t len);

#endif
