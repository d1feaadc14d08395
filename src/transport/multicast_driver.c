/* NVLink multicast: the driver and NVML function tables every multicast-path call goes
 * through (loaded on first use, or replaced by tests with stubs). docs/NVLS.md.
 * Never run on multicast hardware: this code has only ever met the stub driver of
 * tests/unit/test_nvls_gate.c; on real GPUs the gate has always stayed closed. */
#include "transport/multicast_driver.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "kernels/launch.h"
#include "transport/driver_entry.h"

static const struct snapccl_mc_driver* g_driver_override;
static const struct snapccl_nvml* g_nvml_override;
static pthread_mutex_t g_load_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapccl_mc_driver g_driver;
static int g_driver_state; /* 0 not loaded yet, 1 loaded, -1 failed (g_driver_error says why) */
static char g_driver_error[160];
static struct snapccl_nvml g_nvml;
static int g_nvml_state;

void snapccl_mc_set_driver(const struct snapccl_mc_driver* table) {
  pthread_mutex_lock(&g_load_lock);
  g_driver_override = table;
  pthread_mutex_unlock(&g_load_lock);
}

void snapccl_mc_set_nvml(const struct snapccl_nvml* table) {
  pthread_mutex_lock(&g_load_lock);
  g_nvml_override = table;
  pthread_mutex_unlock(&g_load_lock);
}

static int default_init_replica(CUdeviceptr uc, size_t size, const struct snapccl_ws_layout* lay) {
  cudaStream_t s;
  if (CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)) != cudaSuccess) return -1;
  char* p = (char*)(uintptr_t)uc;
  int ok = CUDA_TRY(cudaMemsetAsync(p, 0, size, s)) == cudaSuccess &&
           CUDA_TRY(snapccl_launch_ws_init(p, lay, s)) == cudaSuccess &&
           CUDA_TRY(cudaStreamSynchronize(s)) == cudaSuccess;
  (void)CUDA_TRY(cudaStreamDestroy(s));
  return ok ? 0 : -1;
}

/* Entry points as of CUDA 12.1, where the multicast API appeared: each symbol comes in
 * the ABI of that version, whatever newer driver is installed. */
#define SNAPCCL_MC_DRIVER_ABI 12010

static int load_symbol(const char* name, void* slot) {
  return snapccl_driver_entry(name, slot, SNAPCCL_MC_DRIVER_ABI, g_driver_error, sizeof g_driver_error);
}

static void load_driver_locked(void) {
  struct snapccl_mc_driver* t = &g_driver;
  memset(t, 0, sizeof *t);
  int ok = load_symbol("cuGetErrorString", &t->get_error_string) &&
           load_symbol("cuDeviceGet", &t->device_get) &&
           load_symbol("cuDeviceGetAttribute", &t->device_get_attribute) &&
           load_symbol("cuMulticastGetGranularity", &t->multicast_get_granularity) &&
           load_symbol("cuMulticastCreate", &t->multicast_create) &&
           load_symbol("cuMulticastAddDevice", &t->multicast_add_device) &&
           load_symbol("cuMulticastBindMem", &t->multicast_bind_mem) &&
           load_symbol("cuMulticastUnbind", &t->multicast_unbind) &&
           load_symbol("cuMemGetAllocationGranularity", &t->mem_get_allocation_granularity) &&
           load_symbol("cuMemCreate", &t->mem_create) && load_symbol("cuMemRelease", &t->mem_release) &&
           load_symbol("cuMemExportToShareableHandle", &t->mem_export_to_shareable_handle) &&
           load_symbol("cuMemImportFromShareableHandle", &t->mem_import_from_shareable_handle) &&
           load_symbol("cuMemAddressReserve", &t->mem_address_reserve) &&
           load_symbol("cuMemAddressFree", &t->mem_address_free) && load_symbol("cuMemMap", &t->mem_map) &&
           load_symbol("cuMemUnmap", &t->mem_unmap) && load_symbol("cuMemSetAccess", &t->mem_set_access);
  t->init_replica = default_init_replica;
  g_driver_state = ok ? 1 : -1;
}

/* The table every multicast-path call goes through; NULL (reason in why) if the real
 * one cannot be loaded. Called only once the environment allows multicast. */
const struct snapccl_mc_driver* snapccl_mc_driver_table(char* why, size_t len) {
  const struct snapccl_mc_driver* d = NULL;
  pthread_mutex_lock(&g_load_lock);
  if (g_driver_override) {
    d = g_driver_override;
  } else {
    if (g_driver_state == 0) load_driver_locked();
    if (g_driver_state > 0) d = &g_driver;
    else snprintf(why, len, "%.150s", g_driver_error);
  }
  pthread_mutex_unlock(&g_load_lock);
  return d;
}

static int load_nvml_symbol(void* lib, const char* name, void* slot) {
  void* fn = dlsym(lib, name);
  if (!fn) return 0;
  memcpy(slot, &fn, sizeof fn);
  return 1;
}

/* NVML, for the fabric query; only when the ranks span hosts. */
const struct snapccl_nvml* snapccl_mc_nvml_table(void) {
  const struct snapccl_nvml* n = NULL;
  pthread_mutex_lock(&g_load_lock);
  if (g_nvml_override) {
    n = g_nvml_override;
  } else {
    if (g_nvml_state == 0) {
      void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
      int ok = lib && load_nvml_symbol(lib, "nvmlInit_v2", &g_nvml.init) &&
               load_nvml_symbol(lib, "nvmlShutdown", &g_nvml.shutdown) &&
               load_nvml_symbol(lib, "nvmlDeviceGetHandleByPciBusId_v2", &g_nvml.device_get_handle_by_pci_bus_id) &&
               load_nvml_symbol(lib, "nvmlDeviceGetGpuFabricInfo", &g_nvml.device_get_gpu_fabric_info);
      g_nvml_state = ok ? 1 : -1; /* the library stays loaded: its functions are in the table */
    }
    if (g_nvml_state > 0) n = &g_nvml;
  }
  pthread_mutex_unlock(&g_load_lock);
  return n;
}

void snapccl_mc_cu_fail(const struct snapccl_mc_driver* d, CUresult r, const char* what, char* why,
                        size_t len) {
  const char* s = NULL;
  if (d->get_error_string && d->get_error_string(r, &s) != CUDA_SUCCESS) s = NULL;
  snprintf(why, len, "%s failed: %s (%d)", what, s ? s : "unknown error", (int)r);
}
