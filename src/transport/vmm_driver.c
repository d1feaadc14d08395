/* cuMem entry points and ncclMemAlloc's memory: see vmm_driver.h. */
#include "transport/vmm_driver.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "transport/driver_entry.h"

/* Entry points in the ABI of CUDA 12.0 (cuMemGetAddressRange as its _v2), whatever
 * newer driver is installed. */
#define SNAPCCL_VMM_DRIVER_ABI 12000

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapccl_vmm_driver g_drv;
static int g_state; /* 0 not loaded, 1 loaded, -1 failed (g_error says why) */
static char g_error[160];

static int load(const char* name, void* slot) {
  return snapccl_driver_entry(name, slot, SNAPCCL_VMM_DRIVER_ABI, g_error, sizeof g_error);
}

const struct snapccl_vmm_driver* snapccl_vmm_driver(char* why, size_t len) {
  pthread_mutex_lock(&g_lock);
  if (g_state == 0) {
    struct snapccl_vmm_driver* t = &g_drv;
    int ok = load("cuGetErrorString", &t->get_error_string) && load("cuDeviceGet", &t->device_get) &&
             load("cuMemGetAllocationGranularity", &t->mem_get_allocation_granularity) &&
             load("cuMemCreate", &t->mem_create) && load("cuMemRelease", &t->mem_release) &&
             load("cuMemRetainAllocationHandle", &t->mem_retain_allocation_handle) &&
             load("cuMemExportToShareableHandle", &t->mem_export_to_shareable_handle) &&
             load("cuMemImportFromShareableHandle", &t->mem_import_from_shareable_handle) &&
             load("cuMemAddressReserve", &t->mem_address_reserve) &&
             load("cuMemAddressFree", &t->mem_address_free) && load("cuMemMap", &t->mem_map) &&
             load("cuMemUnmap", &t->mem_unmap) && load("cuMemSetAccess", &t->mem_set_access) &&
             load("cuMemGetAccess", &t->mem_get_access) &&
             load("cuMemGetAddressRange", &t->mem_get_address_range) &&
             load("cuPointerGetAttribute", &t->pointer_get_attribute);
    g_state = ok ? 1 : -1;
  }
  const struct snapccl_vmm_driver* d = g_state > 0 ? &g_drv : NULL;
  if (!d && why) snprintf(why, len, "%.150s", g_error);
  pthread_mutex_unlock(&g_lock);
  return d;
}

void snapccl_vmm_fail(const struct snapccl_vmm_driver* d, CUresult r, const char* what, char* why, size_t len) {
  const char* s = NULL;
  if (d->get_error_string && d->get_error_string(r, &s) != CUDA_SUCCESS) s = NULL;
  snprintf(why, len, "%s failed: %s (%d)", what, s ? s : "unknown error", (int)r);
}

#define VMM_TRY(call, what)                         \
  do {                                              \
    CUresult vmm_r_ = (call);                       \
    if (vmm_r_ != CUDA_SUCCESS) {                   \
      snapccl_vmm_fail(d, vmm_r_, what, why, len);  \
      goto fail;                                    \
    }                                               \
  } while (0)

int snapccl_vmm_alloc(void** ptr, size_t size, char* why, size_t len) {
  int dev = -1;
  if (CUDA_TRY(cudaGetDevice(&dev)) != cudaSuccess || CUDA_TRY(cudaFree(NULL)) != cudaSuccess) {
    snprintf(why, len, "no usable CUDA device");
    return -1;
  }
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(NULL, 0);
  if (!d) {
    /* Without cuMem, plain device memory: registration maps it by legacy IPC. */
    cudaError_t e = CUDA_TRY(cudaMalloc(ptr, size));
    if (e != cudaSuccess) snprintf(why, len, "cudaMalloc(%zu) failed: %s", size, cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : -1;
  }
  CUmemAllocationProp prop;
  memset(&prop, 0, sizeof prop);
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  CUmemGenericAllocationHandle h = 0;
  CUdeviceptr va = 0;
  int created = 0, reserved = 0, mapped = 0;
  size_t gran = 0, bytes = 0;
  VMM_TRY(d->mem_get_allocation_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED),
          "cuMemGetAllocationGranularity");
  if (gran == 0) gran = 2u << 20;
  if (size > SIZE_MAX - gran) {
    snprintf(why, len, "size %zu too large", size);
    return -1;
  }
  bytes = size == 0 ? gran : (size + gran - 1) / gran * gran;
  VMM_TRY(d->mem_create(&h, bytes, &prop, 0), "cuMemCreate");
  created = 1;
  VMM_TRY(d->mem_address_reserve(&va, bytes, gran, 0, 0), "cuMemAddressReserve");
  reserved = 1;
  VMM_TRY(d->mem_map(va, bytes, 0, h, 0), "cuMemMap");
  mapped = 1;
  {
    /* This GPU and every GPU that can reach it, as NCCL's ncclMemAlloc does: peers of
     * the same process then use the pointer as it is. */
    int ndev = 0;
    if (CUDA_TRY(cudaGetDeviceCount(&ndev)) != cudaSuccess) ndev = 1;
    CUmemAccessDesc desc[64];
    size_t n = 0;
    for (int i = 0; i < ndev && n < 64; i++) {
      int can = i == dev;
      if (!can && CUDA_TRY(cudaDeviceCanAccessPeer(&can, i, dev)) != cudaSuccess) can = 0;
      if (!can) continue;
      desc[n].location.type = CU_MEM_LOCATION_TYPE_DEVICE;
      desc[n].location.id = i;
      desc[n].flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
      n++;
    }
    VMM_TRY(d->mem_set_access(va, bytes, desc, n), "cuMemSetAccess");
  }
  /* The mapping holds the memory; ncclMemFree finds the handle again by address. */
  (void)d->mem_release(h);
  *ptr = (void*)(uintptr_t)va;
  return 0;
fail:
  if (mapped) (void)d->mem_unmap(va, bytes);
  if (reserved) (void)d->mem_address_free(va, bytes);
  if (created) (void)d->mem_release(h);
  return -1;
}

int snapccl_vmm_free(void* ptr, char* why, size_t len) {
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(NULL, 0);
  CUmemGenericAllocationHandle h = 0;
  if (!d || d->mem_retain_allocation_handle(&h, ptr) != CUDA_SUCCESS) {
    /* Not cuMem memory: the cudaMalloc fallback of snapccl_vmm_alloc. */
    cudaError_t e = CUDA_TRY(cudaFree(ptr));
    if (e != cudaSuccess) snprintf(why, len, "cudaFree(%p) failed: %s", ptr, cudaGetErrorString(e));
    return e == cudaSuccess ? 0 : -1;
  }
  (void)d->mem_release(h);
  CUdeviceptr base = 0;
  size_t bytes = 0;
  VMM_TRY(d->mem_get_address_range(&base, &bytes, (CUdeviceptr)(uintptr_t)ptr), "cuMemGetAddressRange");
  if (base != (CUdeviceptr)(uintptr_t)ptr) {
    snprintf(why, len, "%p is not the start of an ncclMemAlloc allocation", ptr);
    return -1;
  }
  /* Unmapping drops the last reference this process holds (unless a registration of
   * a peer imported it, which keeps the physical memory until it unmaps too). */
  VMM_TRY(d->mem_unmap(base, bytes), "cuMemUnmap");
  VMM_TRY(d->mem_address_free(base, bytes), "cuMemAddressFree");
  return 0;
fail:
  return -1;
}
