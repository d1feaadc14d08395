/* What host and device agree on: the workspace layout every rank uses, the host-mapped
 * status block, and the kernel arguments. Plain C, included by both sides.
 *
 * Per-call state never lives here on the host side: the epoch and the per-block round
 * counters sit in each rank's workspace header and only kernels advance them, so a CUDA
 * graph that replays a captured launch sees fresh values (docs/ARCHITECTURE.md). */
#ifndef SNAPCCL_KARGS_H
#define SNAPCCL_KARGS_H

#include <stdint.h>

#define SNAPCCL_MAX_RANKS 16
/* Blocks per rank and call. 128 of 256 threads fill two per SM on 64 SMs: half the block
 * slots of an H100/H200 (docs/ARCHITECTURE.md, "Residency"); on two H200s the two-shot and
 * the low-precision all-reduce moved 17-26% more per second with 128 blocks than with 64. */
#define SNAPCCL_MAX_BLOCKS 128
/* 256 threads and at most 128 registers each: two blocks fit on an SM, so ranks sharing
 * a GPU (and other communicators) find room to be resident together. */
#define SNAPCCL_THREADS 256
#define SNAPCCL_MIN_BLOCKS_PER_SM 2
/* 16-byte packs are the unit of every copy and reduction. */
#define SNAPCCL_PACK 16
/* The one-shot regions (flags and Lamport) each hold 2 parities x nranks source slots.
 * A slot is as large as the world size lets a parity stay within 4 MiB, and at least
 * 512 KiB: 16 MiB for both regions up to eight ranks. So two ranks take one-shot
 * all-reduces up to 2 MiB (on two H200s the two-shot lost the 1 MiB all-reduce to NCCL,
 * and at two ranks a one-shot moves no more over the link than a two-shot), eight up to
 * 512 KiB. The GPU tests read the capacity from here too. */
#define SNAPCCL_ONESHOT_PARITY_BYTES (4u << 20)
#define SNAPCCL_ONESHOT_MIN_BYTES (512u << 10)
static inline unsigned long long snapccl_oneshot_slot_bytes(int nranks) {
  unsigned long long b = SNAPCCL_ONESHOT_PARITY_BYTES / (unsigned)(nranks > 0 ? nranks : 1);
  b = b / SNAPCCL_PACK * SNAPCCL_PACK;
  return b < SNAPCCL_ONESHOT_MIN_BYTES ? SNAPCCL_ONESHOT_MIN_BYTES : b;
}

/* Staging chunks, and blocks' shares of a round when they are larger, are multiples of
 * this many bytes (transport/workspace.c, algos/launch.c). */
#define SNAPCCL_STAGING_ALIGN 4096u

/* Flag arrays, each [src rank][block] of uint64 in the receiver's workspace. FLAG_REG:
 * the two-shot all-reduce's start and end barriers when buffers may be registered. */
enum snapccl_flag_kind { FLAG_ONESHOT = 0, FLAG_RS = 1, FLAG_AG = 2, FLAG_REG = 3, FLAG_KINDS = 4 };

/* A call's registered buffers as its rank describes them (registration number + 1 and
 * byte offset from the registered base, of the send and the receive buffer; desc[0] 0:
 * not registered), and where every rank's counterparts lie in this rank's space. */
#define SNAPCCL_REG_DESC_WORDS 4
struct snapccl_reg_args {
  unsigned long long desc[SNAPCCL_REG_DESC_WORDS];
  const char* send[SNAPCCL_MAX_RANKS];
  char* recv[SNAPCCL_MAX_RANKS];
  int exchange; /* the barriers and the descriptor exchange run (agreed: see registration.h) */
  int pad;
};

/* Header at offset 0 of each rank's workspace; touched by that rank's kernels only. */
struct snapccl_ws_header {
  unsigned long long epoch;       /* collectives this rank completed on this communicator */
  unsigned int done_blocks;       /* blocks of the running kernel that finished */
  unsigned int pad;
  unsigned long long block_round[SNAPCCL_MAX_BLOCKS]; /* staged rounds block b ran so far */
};

/* Byte offsets inside every rank's workspace; identical on all ranks of a communicator. */
struct snapccl_ws_layout {
  unsigned long long flags_off;     /* uint64 [FLAG_KINDS][SNAPCCL_MAX_RANKS][SNAPCCL_MAX_BLOCKS] */
  unsigned long long lamport_off;   /* [2 parities][nranks][oneshot_bytes], sentinel-filled */
  unsigned long long oneshot_off;   /* [2 parities][nranks][oneshot_bytes] */
  unsigned long long rs_off;        /* [2 slots][nranks][max_blocks][chunk_bytes] */
  unsigned long long ag_off;        /* [2 slots][nranks][max_blocks][chunk_bytes] */
  unsigned long long probe_off;     /* [SNAPCCL_MAX_RANKS][64 bytes], init-time P2P probe */
  unsigned long long ce_flags_off;  /* uint64 [SNAPCCL_MAX_RANKS]: copy-engine sync flags, by source */
  unsigned long long reg_off;       /* uint64 [SNAPCCL_MAX_RANKS][SNAPCCL_MAX_BLOCKS][4]: peers' call descriptors */
  unsigned long long total;
  unsigned long long oneshot_bytes; /* capacity of one source slot of the one-shot buffers */
  unsigned long long chunk_bytes;   /* capacity of one (slot, src, block) staging chunk */
  int max_blocks;                   /* blocks any call may use on this communicator */
  int nranks;
};

/* Device-side failure codes written to snapccl_status.error. */
enum snapccl_dev_error { DEVERR_NONE = 0, DEVERR_TIMEOUT = 1, DEVERR_ABORTED = 2 };

/* error_where of a wait in the copy-engine algorithms' sync kernel (kernels/ce_sync.cu). */
#define SNAPCCL_WHERE_CE 4

/* Host-mapped (cudaHostAllocMapped), one per rank and communicator. */
struct snapccl_status {
  volatile int abort;    /* host sets 1: every wait of this rank's kernels gives up */
  volatile int error;    /* first device-side failure (enum snapccl_dev_error) */
  volatile int error_peer;  /* the rank that was waited for */
  volatile int error_where; /* enum snapccl_flag_kind, 3 for Lamport data, SNAPCCL_WHERE_CE */
};

/* Modes of the staged kernel (reduce-scatter and/or all-gather through staging). */
enum snapccl_staged_mode { STAGED_ALLREDUCE = 0, STAGED_REDUCESCATTER = 1, STAGED_ALLGATHER = 2 };

struct snapccl_kargs {
  char* ws[SNAPCCL_MAX_RANKS]; /* every rank's workspace, mapped in this rank's space */
  struct snapccl_ws_layout lay;
  struct snapccl_status* status; /* device address of this rank's status block */
  unsigned long long timeout_ns;
  int rank;
  int nranks;
  const void* send;
  void* recv;
  /* Elements: allreduce the whole count; reducescatter recvcount; allgather sendcount
   * (the staged kernel moves all-gather data as bytes, so there count is in bytes). */
  unsigned long long count;
  int dtype;       /* ncclDataType_t */
  int devop;       /* enum snapccl_devop */
  int scalar_mode; /* enum snapccl_scalar_mode */
  int mode;        /* enum snapccl_staged_mode, staged kernel only */
  unsigned long long scalar_bits;
  const void* scalar_dev;
  unsigned long long chunk_elems; /* staged: elements per (block, round), a pack multiple */
};

#endif
