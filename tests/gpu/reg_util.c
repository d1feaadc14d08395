/* Registered buffers for the GPU tests: see reg_util.h. */
#include "reg_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "snapccl.h"
#include "transport/vmm_driver.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define PATTERN_BYTES 4096
#define BIG_COUNT ((size_t)65537)

const char* const reg_mem_name[REG_NMEM] = {"cudaMalloc", "cuMem (3 segments)", "ncclMemAlloc"};

static int cu_fail(const struct snapccl_vmm_driver* d, CUresult r, const char* what, char* err) {
  char why[200];
  snapccl_vmm_fail(d, r, what, why, sizeof why);
  return t_fail(err, "%s", why);
}

/* Three allocations of one segment size each, mapped back to back. */
static int cumem_alloc(struct reg_region* g, int dev, size_t bytes, char* err) {
  char why[200] = "";
  const struct snapccl_vmm_driver* d = snapccl_vmm_driver(why, sizeof why);
  if (!d) return t_fail(err, "cuMem: %s", why);
  CUmemAllocationProp prop;
  memset(&prop, 0, sizeof prop);
  prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
  prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  prop.location.id = dev;
  prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
  size_t gran = 0;
  CUresult r = d->mem_get_allocation_granularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
  if (r != CUDA_SUCCESS) return cu_fail(d, r, "cuMemGetAllocationGranularity", err);
  g->nsegs = 3;
  g->seg = ((bytes + 2) / 3 + gran - 1) / gran * gran;
  g->bytes = g->seg * 3; /* registered whole: a range over all three segments */
  CUdeviceptr va = 0;
  r = d->mem_address_reserve(&va, g->seg * 3, gran, 0, 0);
  if (r != CUDA_SUCCESS) return cu_fail(d, r, "cuMemAddressReserve", err);
  g->ptr = (char*)(uintptr_t)va;
  for (size_t i = 0; i < 3; i++) {
    r = d->mem_create(&g->h[i], g->seg, &prop, 0);
    if (r != CUDA_SUCCESS) return cu_fail(d, r, "cuMemCreate", err);
    r = d->mem_map(va + i * g->seg, g->seg, 0, g->h[i], 0);
    if (r != CUDA_SUCCESS) return cu_fail(d, r, "cuMemMap", err);
  }
  CUmemAccessDesc acc;
  memset(&acc, 0, sizeof acc);
  acc.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
  acc.location.id = dev;
  acc.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
  r = d->mem_set_access(va, g->seg * 3, &acc, 1);
  if (r != CUDA_SUCCESS) return cu_fail(d, r, "cuMemSetAccess", err);
  return 0;
}

int reg_region_alloc(struct reg_region* g, int mem, int dev, size_t bytes, char* err) {
  memset(g, 0, sizeof *g);
  g->mem = mem;
  g->bytes = bytes;
  if (cudaSetDevice(dev) != cudaSuccess) return t_fail(err, "cudaSetDevice(%d) failed", dev);
  if (mem == REG_CUDA_MALLOC) {
    cudaError_t e = cudaMalloc((void**)&g->ptr, bytes);
    if (e != cudaSuccess) return t_fail(err, "cudaMalloc: %s", cudaGetErrorString(e));
    return 0;
  }
  if (mem == REG_NCCL_MEM_ALLOC) {
    ncclResult_t res = ncclMemAlloc((void**)&g->ptr, bytes);
    if (res != ncclSuccess) return t_fail(err, "ncclMemAlloc: %s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
    return 0;
  }
  return cumem_alloc(g, dev, bytes, err);
}

int reg_region_free(struct reg_region* g, char* err) {
  int rc = 0;
  if (!g->ptr) return 0;
  if (g->mem == REG_CUDA_MALLOC) {
    if (cudaFree(g->ptr) != cudaSuccess) rc = t_fail(err, "cudaFree failed");
  } else if (g->mem == REG_NCCL_MEM_ALLOC) {
    ncclResult_t res = ncclMemFree(g->ptr);
    if (res != ncclSuccess) rc = t_fail(err, "ncclMemFree: %s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  } else {
    const struct snapccl_vmm_driver* d = snapccl_vmm_driver(NULL, 0);
    const CUdeviceptr va = (CUdeviceptr)(uintptr_t)g->ptr;
    for (size_t i = 0; d && i < g->nsegs; i++) {
      if (!g->h[i]) continue;
      if (d->mem_unmap(va + i * g->seg, g->seg) != CUDA_SUCCESS) rc = t_fail(err, "cuMemUnmap failed");
      if (d->mem_release(g->h[i]) != CUDA_SUCCESS) rc = t_fail(err, "cuMemRelease failed");
    }
    if (d && d->mem_address_free(va, g->seg * g->nsegs) != CUDA_SUCCESS) rc = t_fail(err, "cuMemAddressFree failed");
  }
  g->ptr = NULL;
  return rc;
}

int reg_bufs_alloc(struct t_world* w, struct reg_bufs* rb, int mem, size_t send_cap, size_t recv_cap, char* err) {
  memset(rb, 0, sizeof *rb);
  rb->b.send_cap = send_cap, rb->b.recv_cap = recv_cap;
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (reg_region_alloc(&rb->send[r], mem, w->dev[r], send_cap + 2 * T_GUARD + 16, err) != 0 ||
        reg_region_alloc(&rb->recv[r], mem, w->dev[r], recv_cap + 2 * T_GUARD + 16, err) != 0)
      return -1;
    if (cudaMalloc(&rb->b.scalar[r], 16) != cudaSuccess) return t_fail(err, "cudaMalloc of a scalar failed");
    rb->b.send[r] = rb->send[r].ptr;
    rb->b.recv[r] = rb->recv[r].ptr;
  }
  return 0;
}

int reg_bufs_free(struct t_world* w, struct reg_bufs* rb, char* err) {
  int rc = 0;
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (reg_region_free(&rb->send[r], err) != 0 || reg_region_free(&rb->recv[r], err) != 0) rc = -1;
    cudaFree(rb->b.scalar[r]);
    rb->b.scalar[r] = NULL;
  }
  return rc;
}

int reg_register(struct t_world* w, int mode, char* const* ptrs, size_t bytes, void** handles, char* err) {
  ncclResult_t res = ncclGroupStart();
  for (int r = w->first; r < w->first + w->nlocal && res == ncclSuccess; r++) {
    handles[r] = NULL;
    if (mode == REG_COMM) res = ncclCommRegister(w->comm[r], ptrs[r], bytes, &handles[r]);
    else res = ncclCommWindowRegister(w->comm[r], ptrs[r], bytes, (ncclWindow_t*)&handles[r], NCCL_WIN_COLL_SYMMETRIC);
  }
  ncclResult_t end = ncclGroupEnd();
  if (res == ncclSuccess) res = end;
  if (res != ncclSuccess)
    return t_fail(err, "%s: %s (%s)", mode == REG_COMM ? "ncclCommRegister" : "ncclCommWindowRegister",
                  ncclGetErrorString(res), ncclGetLastError(NULL));
  return 0;
}

int reg_deregister(struct t_world* w, int mode, void** handles, char* err) {
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (!handles[r]) continue;
    ncclResult_t res = mode == REG_COMM ? ncclCommDeregister(w->comm[r], handles[r])
                                        : ncclCommWindowDeregister(w->comm[r], (ncclWindow_t)handles[r]);
    if (res != ncclSuccess)
      return t_fail(err, "deregistering rank %d: %s (%s)", r, ncclGetErrorString(res), ncclGetLastError(NULL));
    handles[r] = NULL;
  }
  return 0;
}

int reg_bufs_register(struct t_world* w, struct reg_bufs* rb, int mode, char* err) {
  char* s[T_MAXR] = {0};
  char* v[T_MAXR] = {0};
  rb->mode = mode;
  for (int r = w->first; r < w->first + w->nlocal; r++) s[r] = rb->send[r].ptr, v[r] = rb->recv[r].ptr;
  if (reg_register(w, mode, s, rb->send[w->first].bytes, rb->send_h, err) != 0) return -1;
  return reg_register(w, mode, v, rb->recv[w->first].bytes, rb->recv_h, err);
}

int reg_bufs_deregister(struct t_world* w, struct reg_bufs* rb, char* err) {
  if (reg_deregister(w, rb->mode, rb->send_h, err) != 0) return -1;
  return reg_deregister(w, rb->mode, rb->recv_h, err);
}

static unsigned char pattern(int rank, size_t i) { return (unsigned char)(t_mix(((uint64_t)rank << 32) | i) >> 7); }

/* The pattern sits in the first and the last 4 KiB of a send region: a cuMem region's
 * first and third segments. */
static size_t pattern_base(const struct reg_region* g, int k) { return k ? g->bytes - PATTERN_BYTES : 0; }

int reg_pattern_write(struct t_world* w, struct reg_bufs* rb, char* err) {
  unsigned char buf[PATTERN_BYTES];
  for (int r = w->first; r < w->first + w->nlocal; r++)
    for (int k = 0; k < 2; k++) {
      const size_t base = pattern_base(&rb->send[r], k);
      for (size_t i = 0; i < sizeof buf; i++) buf[i] = pattern(r, base + i);
      if (cudaSetDevice(w->dev[r]) != cudaSuccess ||
          cudaMemcpy(rb->send[r].ptr + base, buf, sizeof buf, cudaMemcpyHostToDevice) != cudaSuccess)
        return t_fail(err, "writing rank %d's pattern failed", r);
    }
  return 0;
}

int reg_pattern_check(struct t_world* w, struct reg_bufs* rb, int expect_mapped, char* err) {
  unsigned char got[256];
  for (int r = w->first; r < w->first + w->nlocal; r++)
    for (int p = 0; p < w->n; p++)
      for (size_t off = 0; off < 32; off++) {
        /* byte offsets 0..15 into the first and the last 4 KiB */
        const size_t at = pattern_base(&rb->send[r], (int)(off / 16)) + (off % 16) * 211 + off % 16;
        void* pp = (void*)1;
        ncclResult_t res = snapcclCommRegisteredPeer(w->comm[r], rb->send[r].ptr + at, sizeof got, p, &pp);
        if (res != ncclSuccess) return t_fail(err, "snapcclCommRegisteredPeer: %s", ncclGetErrorString(res));
        if (!expect_mapped) {
          if (pp) return t_fail(err, "rank %d finds rank %d's counterpart of unregistered memory", r, p);
          continue;
        }
        if (!pp) return t_fail(err, "rank %d has no mapping of rank %d's registered range (offset %zu)", r, p, at);
        if (p >= w->first && p < w->first + w->nlocal && pp != rb->send[p].ptr + at)
          return t_fail(err, "rank %d maps rank %d's buffer at %p, not at its pointer %p", r, p, pp,
                        (void*)(rb->send[p].ptr + at));
        if (cudaSetDevice(w->dev[r]) != cudaSuccess || cudaMemcpy(got, pp, sizeof got, cudaMemcpyDefault) != cudaSuccess)
          return t_fail(err, "rank %d reading rank %d's registered buffer through its mapping failed", r, p);
        for (size_t i = 0; i < sizeof got; i++)
          if (got[i] != pattern(p, at + i))
            return t_fail(err, "rank %d reads byte %zu of rank %d's registered buffer as %u, not %u", r, at + i, p,
                          got[i], pattern(p, at + i));
      }
  return 0;
}

size_t reg_cases_send_cap(int n) { return BIG_COUNT * 8 * (size_t)n; }
size_t reg_cases_recv_cap(int n) { return BIG_COUNT * 8 * (size_t)n; }

int reg_run_cases(struct t_world* w, struct reg_bufs* rb, uint64_t seed, char* err) {
  struct spec {
    int coll;
    ncclDataType_t dt;
    int op;
    size_t count;
    const char* algo;
  };
  static const struct spec specs[] = {
      {T_AR, ncclFloat32, T_SUM, BIG_COUNT, NULL},   {T_AR, ncclFloat32, T_SUM, BIG_COUNT, "twoshot"},
      {T_AR, ncclBfloat16, T_AVG, 4097, "twoshot"},  {T_AR, ncclInt32, T_MAX, 1025, "oneshot"},
      {T_AR, ncclFloat16, T_SUM, 17, "oneshot"},     {T_AR, ncclUint8, T_MIN, 3, NULL},
      {T_AG, ncclInt8, T_SUM, 65537, "direct"},      {T_AG, ncclFloat64, T_SUM, 777, NULL},
      {T_RS, ncclFloat32, T_SUM, 4097, "direct"},    {T_RS, ncclInt64, T_PROD, 33, NULL},
  };
  int k = 0;
  for (size_t i = 0; i < NELEMS(specs); i++)
    for (int ip = 0; ip < 2; ip++)
      for (int mis = 0; mis < 2; mis++, k++) {
        const struct spec* s = &specs[i];
        struct t_case c = t_case_make(s->coll, s->dt, s->op, s->count, ip, s->algo, t_mix(seed + (uint64_t)k));
        if (mis) t_misalign(k, w->n, c.send_off, c.recv_off); /* byte offsets 1..15 */
        if (t_run_case(w, &c, &rb->b, err) != 0) return -1;
      }
  return 0;
}
