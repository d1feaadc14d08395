/* This rank's memory described for export, and a peer's imported: see reg_memory.h. */
#include "transport/reg_memory.h"

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "transport/vmm_driver.h"

static void none(struct local_mem* lm, const char* why) {
  lm->hdr.kind = MEM_NONE;
  snprintf(lm->hdr.reason, sizeof lm->hdr.reason, "%s", why);
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  return h;
}

/* cuMem memory: the run of mappings covering the range, each segment's handle exported
 * (when a peer of another process needs it). */
static void describe_vmm(const struct snapccl_vmm_driver* d, struct local_mem* lm, int export) {
  char why[120];
  const uintptr_t end = (uintptr_t)(lm->hdr.base + lm->hdr.size);
  uintptr_t cur = (uintptr_t)lm->hdr.base;
  uint64_t id = 0;
  int n = 0, cap = 0;
  while (cur < end) {
    CUdeviceptr s = 0;
    size_t sz = 0;
    CUresult r = d->mem_get_address_range(&s, &sz, (CUdeviceptr)cur);
    if (r != CUDA_SUCCESS || sz == 0 || (n > 0 && s != cur)) {
      snprintf(why, sizeof why, "the range has a hole at %#lx (not mapped cuMem memory)", (unsigned long)cur);
      none(lm, why);
      return;
    }
    if (n == 0) lm->hdr.start = s;
    if (n == REG_MAX_SEGS) {
      none(lm, "the range spans more than 4096 cuMem segments");
      return;
    }
    if (n == cap) {
      cap = cap ? 2 * cap : 16;
      struct reg_seg* ns = realloc(lm->segs, (size_t)cap * sizeof *ns);
      int* nf = ns ? realloc(lm->fds, (size_t)cap * sizeof *nf) : NULL;
      if (ns) lm->segs = ns;
      if (nf) lm->fds = nf;
      if (!ns || !nf) {
        none(lm, "out of memory");
        return;
      }
    }
    lm->segs[n] = (struct reg_seg){(uint64_t)s - lm->hdr.start, (uint64_t)sz};
    lm->fds[n] = -1;
    lm->hdr.nsegs = ++n;
    unsigned long long bid = 0;
    if (d->pointer_get_attribute(&bid, CU_POINTER_ATTRIBUTE_BUFFER_ID, s) != CUDA_SUCCESS) bid = 0;
    id = mix(mix(mix(id, bid), (uint64_t)s), (uint64_t)sz);
    if (export) {
      CUmemGenericAllocationHandle h = 0;
      r = d->mem_retain_allocation_handle(&h, (void*)s);
      if (r == CUDA_SUCCESS) {
        r = d->mem_export_to_shareable_handle(&lm->fds[n - 1], h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
        (void)d->mem_release(h);
      }
      if (r != CUDA_SUCCESS) {
        snapccl_vmm_fail(d, r, "exporting a cuMem segment as a POSIX fd (allocated without that handle type?)",
                         why, sizeof why);
        none(lm, why);
        return;
      }
    }
    cur = (uintptr_t)(s + sz);
  }
  lm->hdr.extent = (uint64_t)cur - lm->hdr.start;
  lm->hdr.id = id;
  lm->hdr.kind = MEM_VMM;
}

/* cudaMalloc memory: one allocation holds the range; its legacy IPC handle. */
static void describe_legacy(const struct snapccl_vmm_driver* d, struct local_mem* lm, int export) {
  CUdeviceptr s = 0;
  size_t sz = 0;
  char why[120];
  CUresult r = d->mem_get_address_range(&s, &sz, (CUdeviceptr)lm->hdr.base);
  if (r != CUDA_SUCCESS) {
    snapccl_vmm_fail(d, r, "cuMemGetAddressRange", why, sizeof why);
    none(lm, why);
    return;
  }
  if (lm->hdr.base + lm->hdr.size > (uint64_t)s + sz) {
    none(lm, "the range spans several cudaMalloc allocations");
    return;
  }
  unsigned long long bid = 0;
  if (d->pointer_get_attribute(&bid, CU_POINTER_ATTRIBUTE_BUFFER_ID, s) != CUDA_SUCCESS) bid = 0;
  lm->hdr.start = s;
  lm->hdr.extent = sz;
  lm->hdr.id = bid;
  if (export) {
    cudaError_t e = CUDA_TRY(cudaIpcGetMemHandle(&lm->hdr.ipc, (void*)s));
    if (e != cudaSuccess) {
      snprintf(why, sizeof why, "cudaIpcGetMemHandle failed: %s (stream-ordered pool memory?)",
               cudaGetErrorString(e));
      none(lm, why);
      return;
    }
  }
  lm->hdr.kind = MEM_IPC;
}

void snapccl_reg_describe(struct local_mem* lm, int export) {
  char why[120] = "";
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(why, sizeof why);
  if (!d) {
    none(lm, why);
    return;
  }
  if (lm->hdr.size == 0) {
    none(lm, "empty range");
    return;
  }
  unsigned int mtype = 0, managed = 0;
  const CUdeviceptr p = (CUdeviceptr)lm->hdr.base;
  if (d->pointer_get_attribute(&mtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, p) != CUDA_SUCCESS ||
      mtype != CU_MEMORYTYPE_DEVICE) {
    none(lm, "not device memory");
    return;
  }
  if (d->pointer_get_attribute(&managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, p) == CUDA_SUCCESS && managed) {
    none(lm, "managed memory");
    return;
  }
  CUmemGenericAllocationHandle h = 0;
  if (d->mem_retain_allocation_handle(&h, (void*)(uintptr_t)p) == CUDA_SUCCESS) {
    (void)d->mem_release(h);
    describe_vmm(d, lm, export);
  } else {
    describe_legacy(d, lm, export);
  }
  if (lm->hdr.kind == MEM_VMM && export &&
      snapccl_fd_server_open(&lm->server, &lm->hdr.fd) != ncclSuccess)
    none(lm, "could not open the fd-passing socket");
}

void snapccl_reg_local_free(struct local_mem* lm) {
  for (int i = 0; lm->fds && i < lm->hdr.nsegs; i++)
    if (lm->fds[i] >= 0) close(lm->fds[i]);
  free(lm->fds);
  free(lm->segs);
  snapccl_fd_server_close(lm->server);
}

void snapccl_reg_unmap_import(struct snapccl_reg_import* imp) {
  struct import_undo* u = imp->undo;
  if (u && u->kind == MEM_IPC) {
    (void)CUDA_TRY(cudaIpcCloseMemHandle(imp->local));
  } else if (u && u->kind == MEM_VMM) {
    const struct snapccl_vmm_driver* d = snapccl_vmm_driver(NULL, 0);
    const CUdeviceptr va = (CUdeviceptr)(uintptr_t)imp->local;
    for (int i = 0; d && i < u->nsegs; i++)
      if (u->segs[i].size) (void)d->mem_unmap(va + u->segs[i].offset, u->segs[i].size);
    if (d) (void)d->mem_address_free(va, imp->extent);
  }
  if (u) free(u->segs);
  free(u);
  free(imp);
}

/* Maps rank r's run of segments, whose descriptors fds[] this rank fetched. */
struct snapccl_reg_import* snapccl_reg_import_vmm(int cuda_dev, const struct reg_hdr* h, const struct reg_seg* segs,
                                                  int* fds, char* why, size_t len) {
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(why, len);
  if (!d) return NULL;
  struct snapccl_reg_import* imp = calloc(1, sizeof *imp);
  struct import_undo* u = calloc(1, sizeof *u);
  struct reg_seg* mine = calloc((size_t)h->nsegs, sizeof *mine);
  CUdeviceptr va = 0;
  if (!imp || !u || !mine) {
    snprintf(why, len, "out of memory");
    goto fail;
  }
  u->kind = MEM_VMM;
  u->segs = mine;
  imp->undo = u;
  imp->extent = h->extent;
  CUresult r = d->mem_address_reserve(&va, h->extent, 0, 0, 0);
  if (r != CUDA_SUCCESS) {
    snapccl_vmm_fail(d, r, "cuMemAddressReserve", why, len);
    goto fail;
  }
  imp->local = (char*)(uintptr_t)va;
  for (int i = 0; i < h->nsegs; i++) {
    CUmemGenericAllocationHandle mh = 0;
    r = d->mem_import_from_shareable_handle(&mh, (void*)(uintptr_t)fds[i], CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    close(fds[i]);
    fds[i] = -1;
    if (r != CUDA_SUCCESS) {
      snapccl_vmm_fail(d, r, "cuMemImportFromShareableHandle", why, len);
      goto fail;
    }
    r = d->mem_map(va + segs[i].offset, segs[i].size, 0, mh, 0);
    (void)d->mem_release(mh); /* the mapping holds it */
    if (r != CUDA_SUCCESS) {
      snapccl_vmm_fail(d, r, "cuMemMap of a peer's segment", why, len);
      goto fail;
    }
    mine[i] = segs[i];
    u->nsegs = i + 1;
  }
  CUmemAccessDesc acc;
  memset(&acc, 0, sizeof acc);
  acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  acc.location.id = cuda_dev;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  r = d->mem_set_access(va, h->extent, &acc, 1);
  if (r != CUDA_SUCCESS) {
    snapccl_vmm_fail(d, r, "cuMemSetAccess on a peer's segments", why, len);
    goto fail;
  }
  return imp;
fail:
  if (imp && imp->local) {
    snapccl_reg_unmap_import(imp);
  } else {
    free(mine);
    free(u);
    free(imp);
  }
  return NULL;
}

struct snapccl_reg_import* snapccl_reg_import_ipc(const struct reg_hdr* h, char* why, size_t len) {
  struct snapccl_reg_import* imp = calloc(1, sizeof *imp);
  struct import_undo* u = calloc(1, sizeof *u);
  if (!imp || !u) {
    free(imp);
    free(u);
    snprintf(why, len, "out of memory");
    return NULL;
  }
  void* p = NULL;
  cudaError_t e = CUDA_TRY(cudaIpcOpenMemHandle(&p, h->ipc, cudaIpcMemLazyEnablePeerAccess));
  if (e != cudaSuccess) {
    snprintf(why, len, "cudaIpcOpenMemHandle failed: %s", cudaGetErrorString(e));
    free(imp);
    free(u);
    return NULL;
  }
  u->kind = MEM_IPC;
  imp->undo = u;
  imp->local = p;
  imp->extent = h->extent;
  return imp;
}

