/* NVLink multicast: setup and teardown of the multicast object and its mappings, through
 * the driver table (multicast_driver.c) once the gate (multicast_policy.c) is open. The
 * design and the reasons are in docs/NVLS.md; the safety rule is in multicast.h.
 * Never run on multicast hardware: this code has only ever met the stub driver of
 * tests/unit/test_nvls_gate.c; on real GPUs the gate has always stayed closed. */
#include "transport/multicast.h"

#include <cuda_runtime.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm.h"
#include "env.h"
#include "error.h"
#include "kernels/launch.h"
#include "kernels/multimem.h"
#include "log.h"
#include "oob.h"
#include "transport/fd_passing.h"
#include "transport/multicast_driver.h"
#include "transport/transport_impl.h"

/* ---------------------------------------------------------------- setup */

/* The creator's handle, shared by the ranks of its process; the last one releases it. */
struct snapccl_mc_shared {
  atomic_int refs;
  CUmemGenericAllocationHandle handle;
};

enum {
  D_MC = 1u << 0,     /* holds a reference to the multicast object */
  D_ADDED = 1u << 1,  /* its device is added */
  D_PHYS = 1u << 2,   /* its replica is allocated */
  D_BOUND = 1u << 3,  /* ... and bound */
  D_MC_VA = 1u << 4,
  D_MC_MAP = 1u << 5,
  D_UC_VA = 1u << 6,
  D_UC_MAP = 1u << 7,
};

/* Conditions of this rank that need no driver call. */
static int applicable(const struct snapccl_comm* comm, int usable, char* why, size_t len) {
  if (comm->nranks < 2) {
    snprintf(why, len, "a single rank has no peer to multicast to");
    return 0;
  }
  if (comm->nlocal_gpus != comm->nranks) {
    snprintf(why, len, "ranks share a GPU (%d ranks on %d GPUs); a multicast object binds each device once",
             comm->nranks, comm->nlocal_gpus);
    return 0;
  }
  if (!usable) {
    snprintf(why, len, "the transport is not usable");
    return 0;
  }
  return 1;
}

static void teardown(const struct snapccl_mc_driver* d, struct snapccl_nvls* s) {
  if (!d) return;
  if (s->done & D_BOUND) d->multicast_unbind(s->mc, s->dev, 0, s->size);
  if (s->done & D_MC_MAP) d->mem_unmap(s->mc_va, s->size);
  if (s->done & D_MC_VA) d->mem_address_free(s->mc_va, s->size);
  if (s->done & D_UC_MAP) d->mem_unmap(s->uc_va, s->size);
  if (s->done & D_UC_VA) d->mem_address_free(s->uc_va, s->size);
  if (s->done & D_PHYS) d->mem_release(s->phys);
  if (s->done & D_MC) {
    if (s->shared) {
      if (atomic_fetch_sub(&s->shared->refs, 1) == 1) {
        d->mem_release(s->shared->handle);
        free(s->shared);
      }
    } else {
      d->mem_release(s->mc);
    }
  }
  s->shared = NULL;
  s->done = 0;
  s->mc_va = s->uc_va = 0;
  s->open = 0;
}

/* This rank's facts for the handle choice (no multicast call). */
static void local_facts(struct snapccl_comm* comm, const struct snapccl_mc_driver* d,
                        const struct snapccl_nvls* s, int multi_host, struct snapccl_mc_peer* me) {
  const struct snapccl_peer_info* pi = &comm->peers[comm->rank];
  me->host_hash = pi->host_hash;
  me->proc_hash = pi->proc_hash;
  me->pid = pi->pid;
  int v = 0;
  me->posix_fd_supported =
      d->device_get_attribute(&v, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED, s->dev) ==
          CUDA_SUCCESS && v;
  v = 0;
  me->fabric_supported =
      d->device_get_attribute(&v, CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED, s->dev) == CUDA_SUCCESS && v;
  if (!multi_host) return;
  const struct snapccl_nvml* n = snapccl_mc_nvml_table();
  if (!n || n->init() != 0) return;
  void* dev = NULL;
  struct snapccl_nvml_fabric_info fi;
  memset(&fi, 0, sizeof fi);
  if (n->device_get_handle_by_pci_bus_id(pi->bus_id, &dev) == 0 && n->device_get_gpu_fabric_info(dev, &fi) == 0) {
    me->fabric_known = 1;
    me->fabric_state = fi.state;
    me->fabric_status = fi.status;
    me->clique_id = fi.clique_id;
    memcpy(me->cluster_uuid, fi.cluster_uuid, sizeof me->cluster_uuid);
  }
  n->shutdown();
}

/* The multicast object's granularity and the replica's (both powers of two): the
 * larger is a multiple of both. */
static int local_granularity(const struct snapccl_comm* comm, const struct snapccl_mc_driver* d,
                             const struct snapccl_nvls* s, size_t need, uint64_t* align, char* why,
                             size_t len) {
  CUmulticastObjectProp mp;
  memset(&mp, 0, sizeof mp);
  mp.numDevices = (unsigned)comm->nranks;
  mp.size = need;
  mp.handleTypes = s->handle == MC_HANDLE_FABRIC ? CU_MEM_HANDLE_TYPE_FABRIC : CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  size_t mg = 0, ug = 0;
  CUresult r = d->multicast_get_granularity(&mg, &mp, CU_MULTICAST_GRANULARITY_MINIMUM);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMulticastGetGranularity", why, len);
    return 0;
  }
  CUmemAllocationProp up;
  memset(&up, 0, sizeof up);
  up.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  up.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  up.location.id = comm->cuda_dev;
  r = d->mem_get_allocation_granularity(&ug, &up, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemGetAllocationGranularity", why, len);
    return 0;
  }
  size_t g = mg > ug ? mg : ug;
  if (g == 0 || (g & (g - 1))) {
    snprintf(why, len, "unexpected granularities %zu / %zu", mg, ug);
    return 0;
  }
  *align = g;
  return 1;
}

/* What the creator (rank 0) tells everyone about the object. */
struct offer {
  int32_t ok;
  int32_t handle;  /* enum snapccl_mc_handle */
  uint64_t size;
  uint64_t shared; /* struct snapccl_mc_shared* in the creator's process */
  int32_t served;  /* the creator hands out a file descriptor (POSIX fd) */
  int32_t pad;
  struct snapccl_fd_address fd_addr;
  CUmemFabricHandle fabric;
};

/* Rank 0: create the object and make it reachable for every other rank. */
static int create_and_offer(struct snapccl_comm* comm, const struct snapccl_mc_driver* d, struct snapccl_nvls* s,
                            struct offer* o, int* export_fd, struct snapccl_fd_server** server,
                            char* why, size_t len) {
  CUmulticastObjectProp mp;
  memset(&mp, 0, sizeof mp);
  mp.numDevices = (unsigned)comm->nranks;
  mp.size = s->size;
  mp.handleTypes = s->handle == MC_HANDLE_FABRIC ? CU_MEM_HANDLE_TYPE_FABRIC : CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  CUresult r = d->multicast_create(&s->mc, &mp);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMulticastCreate", why, len);
    return 0;
  }
  s->done |= D_MC;
  if (comm->ranks_in_proc > 1) { /* ranks of this process use the handle itself */
    struct snapccl_mc_shared* sh = calloc(1, sizeof *sh);
    if (!sh) {
      snprintf(why, len, "out of memory");
      return 0;
    }
    atomic_init(&sh->refs, 1);
    sh->handle = s->mc;
    s->shared = sh;
    o->shared = (uint64_t)(uintptr_t)sh;
  }
  if (comm->ranks_in_proc == comm->nranks) return 1;
  if (s->handle == MC_HANDLE_FABRIC) {
    r = d->mem_export_to_shareable_handle(&o->fabric, s->mc, CU_MEM_HANDLE_TYPE_FABRIC, 0);
    if (r != CUDA_SUCCESS) {
      snapccl_mc_cu_fail(d, r, "cuMemExportToShareableHandle(fabric)", why, len);
      return 0;
    }
    return 1;
  }
  int fd = -1;
  r = d->mem_export_to_shareable_handle(&fd, s->mc, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemExportToShareableHandle(POSIX fd)", why, len);
    return 0;
  }
  *export_fd = fd;
  if (snapccl_fd_server_open(server, &o->fd_addr) != ncclSuccess) {
    snprintf(why, len, "%s", snapccl_last_error());
    return 0;
  }
  o->served = 1;
  return 1;
}

/* Rank 0 with a POSIX fd: hand it to every rank of the other processes. */
static int serve_fd(struct snapccl_comm* comm, struct snapccl_fd_server* server, int fd, char* why, size_t len) {
  const uint64_t mine = comm->peers[comm->rank].proc_hash;
  int32_t* pids = calloc((size_t)comm->nranks, sizeof *pids);
  if (!pids) {
    snprintf(why, len, "out of memory");
    return 0;
  }
  int clients = 0;
  for (int r = 0; r < comm->nranks; r++)
    if (comm->peers[r].proc_hash != mine) pids[clients++] = comm->peers[r].pid;
  ncclResult_t res = snapccl_fd_server_serve(server, fd, clients, pids, clients, snapccl_env()->bootstrap_timeout_s);
  free(pids);
  if (res != ncclSuccess) {
    snprintf(why, len, "%s", snapccl_last_error());
    return 0;
  }
  return 1;
}

/* Every rank but the creator: get a reference to the object. */
static int take_offer(struct snapccl_comm* comm, const struct snapccl_mc_driver* d, struct snapccl_nvls* s,
                      const struct offer* o, char* why, size_t len) {
  if (comm->peers[0].proc_hash == comm->peers[comm->rank].proc_hash) {
    struct snapccl_mc_shared* sh = (struct snapccl_mc_shared*)(uintptr_t)o->shared;
    if (!sh) {
      snprintf(why, len, "rank 0 offered no handle to its own process");
      return 0;
    }
    atomic_fetch_add(&sh->refs, 1);
    s->shared = sh;
    s->mc = sh->handle;
    s->done |= D_MC;
    return 1;
  }
  CUresult r;
  if (s->handle == MC_HANDLE_FABRIC) {
    CUmemFabricHandle fh = o->fabric;
    r = d->mem_import_from_shareable_handle(&s->mc, &fh, CU_MEM_HANDLE_TYPE_FABRIC);
  } else {
    int fd = -1;
    if (snapccl_fd_receive(&o->fd_addr, snapccl_env()->bootstrap_timeout_s, &fd) != ncclSuccess) {
      snprintf(why, len, "%s", snapccl_last_error());
      return 0;
    }
    r = d->mem_import_from_shareable_handle(&s->mc, (void*)(uintptr_t)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    close(fd);
  }
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemImportFromShareableHandle", why, len);
    return 0;
  }
  s->done |= D_MC;
  return 1;
}

static int map_rw(const struct snapccl_mc_driver* d, struct snapccl_nvls* s, CUmemGenericAllocationHandle h,
                  CUdeviceptr* va, unsigned reserved_bit, unsigned mapped_bit, const char* what, char* why,
                  size_t len) {
  CUresult r = d->mem_address_reserve(va, s->size, s->align, 0, 0);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemAddressReserve", why, len);
    return 0;
  }
  s->done |= reserved_bit;
  r = d->mem_map(*va, s->size, 0, h, 0);
  if (r != CUDA_SUCCESS) {
    char w[64];
    snprintf(w, sizeof w, "cuMemMap(%s)", what);
    snapccl_mc_cu_fail(d, r, w, why, len);
    return 0;
  }
  s->done |= mapped_bit;
  CUmemAccessDesc acc;
  memset(&acc, 0, sizeof acc);
  acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  acc.location.id = s->cuda_dev;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  r = d->mem_set_access(*va, s->size, &acc, 1);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemSetAccess", why, len);
    return 0;
  }
  return 1;
}

/* This rank's replica: allocate, bind, map both ways, initialise. */
static int bind_and_map(const struct snapccl_mc_driver* d, struct snapccl_nvls* s,
                        const struct snapccl_ws_layout* lay, char* why, size_t len) {
  CUmemAllocationProp up;
  memset(&up, 0, sizeof up);
  up.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  up.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  up.location.id = s->cuda_dev;
  CUresult r = d->mem_create(&s->phys, s->size, &up, 0);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMemCreate", why, len);
    return 0;
  }
  s->done |= D_PHYS;
  r = d->multicast_bind_mem(s->mc, 0, s->phys, 0, s->size, 0);
  if (r != CUDA_SUCCESS) {
    snapccl_mc_cu_fail(d, r, "cuMulticastBindMem", why, len);
    return 0;
  }
  s->done |= D_BOUND;
  if (!map_rw(d, s, s->mc, &s->mc_va, D_MC_VA, D_MC_MAP, "multicast", why, len) ||
      !map_rw(d, s, s->phys, &s->uc_va, D_UC_VA, D_UC_MAP, "unicast", why, len))
    return 0;
  if (!d->init_replica || d->init_replica(s->uc_va, s->size, lay) != 0) {
    snprintf(why, len, "initialising the multicast buffer failed");
    return 0;
  }
  return 1;
}

/* Steps after the gate opened; every rank runs every agreement, so all end together. */
static ncclResult_t build(struct snapccl_comm* comm, const struct snapccl_mc_driver* d, struct snapccl_nvls* s,
                          const struct snapccl_ws_layout* lay) {
  const int n = comm->nranks;
  ncclResult_t res = ncclSuccess;
  char why[156] = "";
  int ok = 1, multi_host = 0, export_fd = -1;
  struct snapccl_fd_server* server = NULL;
  for (int r = 0; r < n; r++) multi_host |= comm->peers[r].host_hash != comm->peers[0].host_hash;

  struct snapccl_mc_peer* peers = calloc((size_t)n, sizeof *peers);
  struct offer* offers = calloc((size_t)n, sizeof *offers);
  if (!peers || !offers) {
    free(peers);
    free(offers);
    SNAP_FAIL(ncclSystemError, "out of memory");
  }
  /* 1. facts -> how the handle travels; decided from facts every rank holds, so every
   *    rank takes the same branch. No multicast call before a way exists. */
  local_facts(comm, d, s, multi_host, &peers[comm->rank]);
  SNAP_CHECK_GOTO(snapccl_oob_allgather(comm, peers, sizeof *peers), res, out);
  s->handle = snapccl_mc_choose_handle(peers, n, why, sizeof why);
  if (s->handle == MC_HANDLE_NONE) {
    ok = 0;
    goto out;
  }
  /* 2. granularities -> one size, a multiple of every rank's granularity. */
  ok = local_granularity(comm, d, s, lay->total, &peers[comm->rank].align, why, sizeof why);
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, why, sizeof why), res, out);
  if (!ok) goto out;
  SNAP_CHECK_GOTO(snapccl_oob_allgather(comm, peers, sizeof *peers), res, out);
  s->align = 0;
  for (int r = 0; r < n; r++)
    if (peers[r].align > s->align) s->align = peers[r].align;
  s->size = (lay->total + s->align - 1) / s->align * s->align;
  /* 3. rank 0 creates and offers; the others take a reference; everyone adds its GPU. */
  struct offer* mine = &offers[comm->rank];
  if (comm->rank == 0) {
    mine->handle = s->handle;
    mine->size = s->size;
    mine->ok = create_and_offer(comm, d, s, mine, &export_fd, &server, why, sizeof why);
    ok = mine->ok;
  } else {
    mine->ok = 1;
  }
  SNAP_CHECK_GOTO(snapccl_oob_allgather(comm, offers, sizeof *offers), res, out);
  /* Without an offer the others do nothing more; the agreement below brings them rank
   * 0's reason. */
  const int offered = offers[0].ok;
  if (comm->rank == 0) {
    if (ok && offers[0].served) ok = serve_fd(comm, server, export_fd, why, sizeof why);
  } else if (ok && offered) {
    ok = take_offer(comm, d, s, &offers[0], why, sizeof why);
  }
  if (export_fd >= 0) close(export_fd);
  export_fd = -1;
  snapccl_fd_server_close(server);
  server = NULL;
  if (ok && offered) {
    CUresult r = d->multicast_add_device(s->mc, s->dev);
    if (r != CUDA_SUCCESS) {
      snapccl_mc_cu_fail(d, r, "cuMulticastAddDevice", why, sizeof why);
      ok = 0;
    } else {
      s->done |= D_ADDED;
    }
  }
  /* Every device must be added before any memory is bound. */
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, why, sizeof why), res, out);
  if (!ok) goto out;
  /* 4. bind and map this rank's replica, initialise it. */
  ok = bind_and_map(d, s, lay, why, sizeof why);
  SNAP_CHECK_GOTO(snapccl_oob_agree(comm, &ok, why, sizeof why), res, out);
out:
  if (export_fd >= 0) close(export_fd);
  snapccl_fd_server_close(server);
  free(peers);
  free(offers);
  if (res == ncclSuccess && ok) {
    s->open = 1;
    s->reason[0] = 0;
  } else {
    if (res == ncclSuccess) snprintf(s->reason, sizeof s->reason, "NVLink multicast setup failed: %s", why);
    else snprintf(s->reason, sizeof s->reason, "NVLink multicast setup failed: %s", snapccl_last_error());
    teardown(d, s);
  }
  return res;
}

ncclResult_t snapccl_nvls_setup_core(struct snapccl_comm* comm, const struct snapccl_ws_layout* lay, int usable) {
  struct snapccl_nvls* s = comm->nvls;
  if (!s) {
    s = calloc(1, sizeof *s);
    if (!s) SNAP_FAIL(ncclSystemError, "out of memory");
    comm->nvls = s;
  }
  s->open = 0;
  s->cuda_dev = comm->cuda_dev;
  const struct snapccl_env* env = snapccl_env();
  const char* nccl = env->nccl_nvls_enable;
  char why[156] = "";
  struct snapccl_mc_gate_in in = {env->nvls, nccl, -1, 0};
  const struct snapccl_mc_driver* d = NULL;
  /* The environment first: unless it allows multicast, no driver is loaded or asked. */
  int ok = snapccl_mc_env_allows(env->nvls, nccl, why, sizeof why) &&
           applicable(comm, usable, why, sizeof why);
  if (ok && !(d = snapccl_mc_driver_table(why, sizeof why))) ok = 0;
  if (ok) {
    CUresult r = d->device_get(&s->dev, comm->cuda_dev);
    int v = 0;
    if (r == CUDA_SUCCESS) r = d->device_get_attribute(&v, CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED, s->dev);
    if (r != CUDA_SUCCESS) {
      snapccl_mc_cu_fail(d, r, "asking the GPU for multicast support", why, sizeof why);
      ok = 0;
    } else {
      in.device_supported = v != 0;
      if (!v) {
        snprintf(why, sizeof why, "the GPU does not support NVLink multicast");
        ok = 0;
      }
    }
  }
  /* Every rank votes, whatever its environment says, so none waits for another. */
  in.ranks_agree = ok;
  SNAP_CHECK(snapccl_oob_agree(comm, &in.ranks_agree, why, sizeof why));
  struct snapccl_mc_gate gate;
  snapccl_mc_gate_decide(&in, &gate);
  if (!gate.open) {
    snprintf(s->reason, sizeof s->reason, "NVLink multicast is off: %s", why[0] ? why : gate.reason);
    return ncclSuccess;
  }
  return build(comm, d, s, lay);
}

ncclResult_t snapccl_nvls_setup(struct snapccl_comm* comm) {
  struct snapccl_transport* t = comm->transport;
  if (!comm->nvls && !(comm->nvls = calloc(1, sizeof *comm->nvls)))
    SNAP_FAIL(ncclSystemError, "out of memory");
  /* Loaded now, as every kernel is (lazy loading can deadlock ranks sharing a GPU). */
  int mm_per_sm = 0;
  comm->nvls->kernels_ok = CUDA_TRY(snapccl_load_multimem_kernels(&mm_per_sm)) == cudaSuccess;
  ncclResult_t res = snapccl_nvls_setup_core(comm, &t->lay, t->usable);
  if (res == ncclSuccess && comm->nvls->open)
    INFO(SUB_TRANSPORT, "comm rank %d: NVLink multicast on (%s handle, %.1f MiB per GPU)", comm->rank,
         snapccl_mc_handle_name(comm->nvls->handle), (double)comm->nvls->size / (1 << 20));
  else if (res == ncclSuccess)
    INFO(SUB_TRANSPORT, "comm rank %d: %s", comm->rank, comm->nvls->reason);
  return res;
}

void snapccl_nvls_free(struct snapccl_comm* comm) {
  struct snapccl_nvls* s = comm->nvls;
  if (!s) return;
  if (s->done) {
    char why[8];
    teardown(snapccl_mc_driver_table(why, sizeof why), s);
  }
  free(s);
  comm->nvls = NULL;
}
