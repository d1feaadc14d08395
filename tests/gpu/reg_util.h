/* Registered buffers for the GPU tests (test_registration.c in one process,
 * test_multiproc.c across processes): device memory of three kinds, registered on every
 * local rank at once, the peers' mappings checked through their contents, and cases run
 * on the registered memory. Failures come back as -1 with a message (no Criterion), so
 * forked ranks use the same code. */
#ifndef SNAPCCL_TESTS_GPU_REG_UTIL_H
#define SNAPCCL_TESTS_GPU_REG_UTIL_H

#include <cuda.h>
#include <stddef.h>

#include "common.h"

enum reg_mem { REG_CUDA_MALLOC, REG_CUMEM_3SEGS, REG_NCCL_MEM_ALLOC, REG_NMEM };
enum reg_mode { REG_NONE = 0, REG_COMM = 1, REG_WINDOW = 2 }; /* perf's -R values */

extern const char* const reg_mem_name[REG_NMEM];

/* One device region: cudaMalloc, three separate cuMem allocations mapped back to back
 * (a range spanning several segments, as PyTorch's expandable segments make), or
 * ncclMemAlloc. */
struct reg_region {
  int mem;
  char* ptr;
  size_t bytes;
  size_t seg, nsegs;                 /* cuMem: segment size and count */
  CUmemGenericAllocationHandle h[3];
};
int reg_region_alloc(struct reg_region* g, int mem, int dev, size_t bytes, char* err);
/* Frees it the way its kind wants (cuMem: unmap, release, free the addresses). */
int reg_region_free(struct reg_region* g, char* err);

/* Every local rank's send and recv region, as guarded t_bufs (send_cap / recv_cap
 * payload bytes), and their registration handles. */
struct reg_bufs {
  struct reg_region send[T_MAXR], recv[T_MAXR];
  struct t_bufs b;
  void* send_h[T_MAXR];
  void* recv_h[T_MAXR];
  int mode;
};
int reg_bufs_alloc(struct t_world* w, struct reg_bufs* rb, int mem, size_t send_cap, size_t recv_cap, char* err);
int reg_bufs_free(struct t_world* w, struct reg_bufs* rb, char* err);

/* Registers [ptr, ptr + bytes) of every local rank (ptrs[r]) in one group: handles[r]. */
int reg_register(struct t_world* w, int mode, char* const* ptrs, size_t bytes, void** handles, char* err);
int reg_deregister(struct t_world* w, int mode, void** handles, char* err);
/* Registers / deregisters rb's whole send and recv regions. */
int reg_bufs_register(struct t_world* w, struct reg_bufs* rb, int mode, char* err);
int reg_bufs_deregister(struct t_world* w, struct reg_bufs* rb, char* err);

/* Writes rank r's pattern into bytes [0, 4096) of its send region (before registering:
 * the registration is collective, so every pattern is in place when it returns). */
int reg_pattern_write(struct t_world* w, struct reg_bufs* rb, char* err);
/* For every local rank r, every rank p and byte offsets 0..15: snapcclCommRegisteredPeer
 * finds p's counterpart of a pointer inside the registered send region, and reading it
 * gives p's pattern at that offset; expect_mapped 0: it must find none. */
int reg_pattern_check(struct t_world* w, struct reg_bufs* rb, int expect_mapped, char* err);

/* A spread of all-reduce (library's choice, two-shot, one-shot), all-gather and
 * reduce-scatter cases on rb's memory: dtypes, ops, odd counts, in place, byte offsets
 * 1..15; each against the CPU reference, outputs poisoned first. */
int reg_run_cases(struct t_world* w, struct reg_bufs* rb, uint64_t seed, char* err);
/* The largest send / recv payload reg_run_cases needs at n ranks. */
size_t reg_cases_send_cap(int n);
size_t reg_cases_recv_cap(int n);

#endif
