/* The memory kinds of a registration (registration.c): how this rank describes its range
 * for the peers (cudaMalloc memory: one allocation and its legacy IPC handle; cuMem
 * memory: the run of mappings covering it, each segment's handle exported as a POSIX fd),
 * and how a peer's description becomes a mapping here, and is undone. Private to
 * transport/. */
#ifndef SNAPCCL_TRANSPORT_REG_MEMORY_H
#define SNAPCCL_TRANSPORT_REG_MEMORY_H

#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "transport/fd_passing.h"
#include "transport/reg_cache.h"

/* Segments one registration may span: 4096 of PyTorch's 20 MiB pages are 80 GiB. */
#define REG_MAX_SEGS 4096

enum { MEM_NONE = 0, MEM_IPC, MEM_VMM };

/* What a rank tells the others about its range (first allgather). */
struct reg_hdr {
  uint64_t seq;
  uint64_t base, size;
  uint64_t start, id, extent; /* the allocation (IPC) or the run of segments (VMM) */
  int32_t kind, nsegs;
  int32_t symmetric, pad;
  cudaIpcMemHandle_t ipc;
  struct snapccl_fd_address fd;
  char reason[120]; /* why kind is MEM_NONE */
};

/* One cuMem segment of a range (second allgather): its place in the run, its size. */
struct reg_seg {
  uint64_t offset, size;
};

/* This rank's memory, described for export. */
struct local_mem {
  struct reg_hdr hdr;
  struct reg_seg* segs;
  int* fds;
  struct snapccl_fd_server* server;
};

/* How an import is undone. */
struct import_undo {
  int kind;
  int nsegs;
  struct reg_seg* segs; /* MEM_VMM: the mappings inside [local, local + extent) */
};

/* Fills lm's header from lm->hdr.base and size: its kind (MEM_NONE with the reason when
 * the range cannot be mapped elsewhere), the allocation or run of segments holding it,
 * and with `export` the handles a peer of another process needs (the IPC handle, or each
 * segment's fd and the socket serving them). */
void snapccl_reg_describe(struct local_mem* lm, int export);
/* What snapccl_reg_describe held: the fds, the segment list, the socket. */
void snapccl_reg_local_free(struct local_mem* lm);
/* Rank h's run of cuMem segments mapped on GPU cuda_dev from the fds this rank fetched
 * (closed here), or NULL with the reason. */
struct snapccl_reg_import* snapccl_reg_import_vmm(int cuda_dev, const struct reg_hdr* h, const struct reg_seg* segs,
                                                  int* fds, char* why, size_t len);
/* A peer's cudaMalloc allocation opened by its legacy IPC handle, or NULL with the reason. */
struct snapccl_reg_import* snapccl_reg_import_ipc(const struct reg_hdr* h, char* why, size_t len);
/* Undoes an import and frees it. */
void snapccl_reg_unmap_import(struct snapccl_reg_import* imp);

#endif
