/* The launch path every algorithm shares: complete the kernel arguments, launch on the
 * communicator's GPU in the communicator's call order (transport/order.c). */
#ifndef SNAPCCL_ALGO_LAUNCH_H
#define SNAPCCL_ALGO_LAUNCH_H

#include "coll.h"
#include "kernels/launch.h"

typedef cudaError_t (*snapccl_launcher_fn)(const struct snapccl_kargs* a, int blocks, cudaStream_t s);

struct snapccl_geom {
  int blocks;
  int mode;                       /* staged kernel mode */
  unsigned long long count;       /* as the kernel counts it (bytes for all-gather) */
  unsigned long long chunk_elems; /* staged kernels */
};

ncclResult_t snapccl_launch_coll(const struct snapccl_coll* coll, snapccl_launcher_fn fn,
                                 const struct snapccl_geom* g);
/* The same for a kernel that takes more than the common arguments: `extra` is passed
 * through to fn untouched (the multimem and fused kernels' own arguments). */
typedef cudaError_t (*snapccl_launcher_ex_fn)(const struct snapccl_kargs* a, const void* extra,
                                              int blocks, cudaStream_t s);
ncclResult_t snapccl_launch_coll_ex(const struct snapccl_coll* coll, snapccl_launcher_ex_fn fn,
                                    const void* extra, const struct snapccl_geom* g);

/* Makes the communicator's GPU current for a launch (the runtime is asked only when the
 * process sees several GPUs); *prev is what snapccl_device_leave restores. */
ncclResult_t snapccl_device_enter(const struct snapccl_comm* comm, int* prev);
void snapccl_device_leave(const struct snapccl_comm* comm, int prev);

/* NULL if the communicator's transport can run collectives, else why not. */
const char* snapccl_transport_unusable(const struct snapccl_coll* coll);
/* Agreed block cap and layout of the call's communicator. */
int snapccl_coll_max_blocks(const struct snapccl_coll* coll);
/* Agreed count of blocks that may each fill a whole SM (see transport.h). */
int snapccl_coll_whole_sms(const struct snapccl_coll* coll);
const struct snapccl_ws_layout* snapccl_coll_layout(const struct snapccl_coll* coll);
/* Why the call's data does not fit the one-shot buffer, or NULL when it does. */
const char* snapccl_oneshot_unfit(const struct snapccl_coll* coll);

/* One-shot kernels: a block per `block_bytes` of the message, within the agreed cap. */
void snapccl_oneshot_geometry(const struct snapccl_coll* coll, unsigned block_bytes,
                              struct snapccl_geom* g);
/* Splits `units` of a slice (`unit_bytes` of user data each) over blocks and rounds: enough
 * blocks that each starts with at least `min_block_bytes`, within the agreed cap; as few rounds as
 * `cap` units per block and round allow; each block's share of a round balanced, rounded
 * up to a multiple of `quantum` (a divisor of cap) and at most cap. Returns the share (0
 * for no units) and sets *blocks. */
unsigned long long snapccl_split_rounds(const struct snapccl_coll* coll, unsigned long long units,
                                        unsigned long long unit_bytes, unsigned long long cap,
                                        unsigned long long quantum, unsigned long long min_block_bytes,
                                        int* blocks);
/* Staged pipelines: blocks and per-round chunk for `elems` elements of `esize` bytes
 * per slice; identical on every rank (only agreed values go in). */
void snapccl_staged_geometry(const struct snapccl_coll* coll, unsigned long long slice_elems,
                             size_t esize, struct snapccl_geom* g);
/* The rounds that geometry takes for the slice (each round costs a flag exchange). */
double snapccl_staged_rounds(const struct snapccl_coll* coll, unsigned long long slice_elems,
                             size_t esize);

#endif
