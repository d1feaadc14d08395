/* NVLink multicast (NVLS inside a host, MNNVL across the hosts of one NVLink domain):
 *   - the ONE table of driver entry points every multicast-path call goes through
 *     (loaded with cudaGetDriverEntryPointByVersion, no link-time libcuda), and the same
 *     kind of table for NVML's fabric query; tests install stubs in their place;
 *   - the gate: a pure function of its inputs that says whether multicast objects may
 *     be created at all, and why not;
 *   - the choice of how the multicast handle travels (same process, POSIX fd, fabric);
 *   - the per-communicator setup and teardown (docs/NVLS.md has the whole story).
 *
 * Safety: nothing here makes a single multicast call unless SNAPCCL_NVLS=1 was set
 * explicitly, NCCL_NVLS_ENABLE is not 0, the device reports multicast support and every
 * rank agrees. The GPU hosts this project is tested on forbid multicast, so none of this
 * has run on multicast hardware: only against the stub driver of the unit tests. */
#ifndef SNAPCCL_MULTICAST_H
#define SNAPCCL_MULTICAST_H

#include <cuda.h> /* driver types and enums only; every call goes through the table */
#include <stddef.h>
#include <stdint.h>

#include "kernels/kargs.h"
#include "nccl.h"

struct snapccl_comm;

/* ---------------------------------------------------------------- the driver table */

struct snapccl_mc_driver {
  CUresult (*get_error_string)(CUresult err, const char** str);
  CUresult (*device_get)(CUdevice* dev, int ordinal);
  CUresult (*device_get_attribute)(int* value, CUdevice_attribute attr, CUdevice dev);
  CUresult (*multicast_get_granularity)(size_t* gran, const CUmulticastObjectProp* prop,
                                        CUmulticastGranularity_flags option);
  CUresult (*multicast_create)(CUmemGenericAllocationHandle* mc, const CUmulticastObjectProp* prop);
  CUresult (*multicast_add_device)(CUmemGenericAllocationHandle mc, CUdevice dev);
  CUresult (*multicast_bind_mem)(CUmemGenericAllocationHandle mc, size_t mc_offset,
                                 CUmemGenericAllocationHandle mem, size_t mem_offset, size_t size,
                                 unsigned long long flags);
  CUresult (*multicast_unbind)(CUmemGenericAllocationHandle mc, CUdevice dev, size_t mc_offset,
                               size_t size);
  CUresult (*mem_get_allocation_granularity)(size_t* gran, const CUmemAllocationProp* prop,
                                             CUmemAllocationGranularity_flags option);
  CUresult (*mem_create)(CUmemGenericAllocationHandle* handle, size_t size,
                         const CUmemAllocationProp* prop, unsigned long long flags);
  CUresult (*mem_release)(CUmemGenericAllocationHandle handle);
  CUresult (*mem_export_to_shareable_handle)(void* shareable, CUmemGenericAllocationHandle handle,
                                             CUmemAllocationHandleType type,
                                             unsigned long long flags);
  CUresult (*mem_import_from_shareable_handle)(CUmemGenericAllocationHandle* handle, void* shareable,
                                               CUmemAllocationHandleType type);
  CUresult (*mem_address_reserve)(CUdeviceptr* ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                  unsigned long long flags);
  CUresult (*mem_address_free)(CUdeviceptr ptr, size_t size);
  CUresult (*mem_map)(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                      unsigned long long flags);
  CUresult (*mem_unmap)(CUdeviceptr ptr, size_t size);
  CUresult (*mem_set_access)(CUdeviceptr ptr, size_t size, const CUmemAccessDesc* desc, size_t count);
  /* Not a driver entry point: fills this rank's fresh replica through its unicast
   * mapping (zeros, then the Lamport sentinel where the layout puts Lamport slots) and
   * waits for it. 0 on success. The default runs CUDA kernels; tests write host memory. */
  int (*init_replica)(CUdeviceptr uc, size_t size, const struct snapccl_ws_layout* lay);
};

/* NVML's fabric query (MNNVL: which NVLink domain a GPU belongs to). Return values are
 * nvmlReturn_t (0 = success). The fabric-info struct is NVML's nvmlGpuFabricInfo_t. */
struct snapccl_nvml_fabric_info {
  unsigned char cluster_uuid[16];
  int status;             /* nvmlReturn_t; meaningful once state is COMPLETED */
  unsigned int clique_id;
  unsigned char state;    /* NVML_GPU_FABRIC_STATE_*: 3 = COMPLETED */
};
#define SNAPCCL_NVML_FABRIC_STATE_COMPLETED 3

struct snapccl_nvml {
  int (*init)(void);
  int (*shutdown)(void);
  int (*device_get_handle_by_pci_bus_id)(const char* bus_id, void** device);
  int (*device_get_gpu_fabric_info)(void* device, struct snapccl_nvml_fabric_info* info);
};

/* Tests replace the tables (NULL restores the real ones). The real driver table is
 * loaded only when the environment already allows multicast; the NVML one only when
 * ranks sit on several hosts. */
void snapccl_mc_set_driver(const struct snapccl_mc_driver* table);
void snapccl_mc_set_nvml(const struct snapccl_nvml* table);

/* ---------------------------------------------------------------- the gate */

struct snapccl_mc_gate_in {
  int nvls_env;                 /* SNAPCCL_NVLS as parsed; only 1 opens */
  const char* nccl_nvls_enable; /* NCCL_NVLS_ENABLE, NULL (or "") when unset */
  int device_supported;         /* CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED; -1: not asked */
  int ranks_agree;              /* every rank's own conditions hold (out-of-band vote) */
};
struct snapccl_mc_gate {
  int open;
  char reason[160]; /* the first condition that failed; empty when open */
};
/* The decision, from its inputs alone. */
void snapccl_mc_gate_decide(const struct snapccl_mc_gate_in* in, struct snapccl_mc_gate* out);
/* Its first stage, the environment alone: 1 if the device may even be asked. */
int snapccl_mc_env_allows(int nvls_env, const char* nccl_nvls_enable, char* reason, size_t len);

/* ---------------------------------------------------------------- handle transport */

enum snapccl_mc_handle {
  MC_HANDLE_NONE = 0,     /* no way to share the object: multicast declines */
  MC_HANDLE_PROCESS = 1,  /* every rank in one process: the handle itself */
  MC_HANDLE_POSIX_FD = 2, /* one host: a file descriptor passed over a Unix socket */
  MC_HANDLE_FABRIC = 3,   /* several hosts of one NVLink domain: CU_MEM_HANDLE_TYPE_FABRIC */
};
const char* snapccl_mc_handle_name(enum snapccl_mc_handle h);

/* What each rank tells the others once the gate is open. */
struct snapccl_mc_peer {
  uint64_t host_hash;
  uint64_t proc_hash;
  int32_t pid;
  int32_t posix_fd_supported; /* CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED */
  int32_t fabric_supported;   /* CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED */
  int32_t fabric_known;       /* NVML answered (only asked when the ranks span hosts) */
  int32_t fabric_state;       /* NVML_GPU_FABRIC_STATE_* */
  int32_t fabric_status;      /* nvmlReturn_t of the registration */
  uint32_t clique_id;
  uint8_t cluster_uuid[16];
  uint64_t align;             /* this rank's granularity (multicast and replica), a power of two */
};
/* How the multicast handle reaches every rank, from every rank's facts (identical on
 * all ranks); MC_HANDLE_NONE with the reason when there is no way. */
enum snapccl_mc_handle snapccl_mc_choose_handle(const struct snapccl_mc_peer* peers, int n,
                                                char* reason, size_t len);

/* ---------------------------------------------------------------- per communicator */

struct snapccl_mc_shared; /* the creator's handle, shared by the ranks of its process */

struct snapccl_nvls {
  int open;          /* multicast set up on every rank: the multicast algorithms may run */
  int kernels_ok;    /* the multimem kernels are loaded (the unicast twins need them) */
  char reason[200];  /* why multicast is off */
  enum snapccl_mc_handle handle;
  int cuda_dev;
  CUdevice dev;
  size_t size;       /* bytes bound on every device: the workspace layout, rounded up */
  size_t align;      /* granularity the mappings were reserved with */
  CUmemGenericAllocationHandle mc;   /* this rank's reference to the multicast object */
  CUmemGenericAllocationHandle phys; /* this rank's replica */
  struct snapccl_mc_shared* shared;  /* non-NULL: mc belongs to the creator's process */
  CUdeviceptr mc_va; /* the multicast mapping (multimem.* only) */
  CUdeviceptr uc_va; /* this rank's replica, unicast */
  unsigned done;     /* setup steps taken (teardown undoes exactly these) */
};

/* Transport setup hook (collective over the communicator's out-of-band channel; every
 * rank calls it): loads the multimem kernels, runs the gate and, only if it opens, sets
 * up the multicast buffer mirroring the workspace layout. A declined gate is not an
 * error: comm->nvls records the reason and the multicast algorithms decline with it. */
ncclResult_t snapccl_nvls_setup(struct snapccl_comm* comm);
/* The driver-side part alone (what the unit tests drive with stub tables): gate, handle
 * exchange, binding and mapping of a buffer of lay->total bytes. `usable` is the
 * transport's agreed verdict. Fills comm->nvls (allocating it if needed). */
ncclResult_t snapccl_nvls_setup_core(struct snapccl_comm* comm, const struct snapccl_ws_layout* lay,
                                     int usable);
/* Unmaps, unbinds and releases whatever setup did; frees comm->nvls. Safe on NULL. */
void snapccl_nvls_free(struct snapccl_comm* comm);

#endif
