/* Peer memory of a communicator: each rank's workspace (flags, Lamport and staging
 * buffers, the device-resident epoch), mapped into every peer; the host-mapped abort
 * and error words; P2P and topology checks at init. */
#ifndef SNAPCCL_TRANSPORT_H
#define SNAPCCL_TRANSPORT_H

#include "comm.h"
#include "nccl.h"

struct snapccl_kargs;
struct snapccl_ws_layout;

/* Fills the transport's fields of this rank's peer info (before the init allgather). */
ncclResult_t snapccl_transport_local_info(struct snapccl_comm* comm, struct snapccl_peer_info* me);
/* Collective over the communicator's bootstrap: allocate, exchange, map, probe. */
ncclResult_t snapccl_transport_setup(struct snapccl_comm* comm);
/* Reads the device-side error word; on a device-reported failure records it as the
 * communicator's asynchronous error. Cheap: a host-mapped load. */
void snapccl_transport_poll_error(struct snapccl_comm* comm);
/* Tells every kernel of this communicator to leave its waits now. */
void snapccl_transport_abort(struct snapccl_comm* comm);
/* Waits up to timeout_s for this communicator's kernels to finish; 0 if they did. */
int snapccl_transport_quiesce(struct snapccl_comm* comm, double timeout_s);
/* Unmaps and frees; safe on a communicator whose setup failed halfway. */
void snapccl_transport_free(struct snapccl_comm* comm);

/* ---- what the algorithms may know of it (its state is transport_impl.h's) ---- */

/* NULL if the communicator's transport can run collectives, else why not. */
const char* snapccl_transport_unusable_reason(const struct snapccl_comm* comm);
/* Agreed by every rank: blocks of SNAPCCL_THREADS a call may use (0 without a transport),
 * blocks a call may use if each fills a whole SM, and the workspace layout. */
int snapccl_transport_max_blocks(const struct snapccl_comm* comm);
int snapccl_transport_whole_sms(const struct snapccl_comm* comm);
const struct snapccl_ws_layout* snapccl_transport_layout(const struct snapccl_comm* comm);
/* The kernel arguments prepared at setup (every rank's workspace, the layout, the status
 * block, the timeout); each launch copies and completes them. */
const struct snapccl_kargs* snapccl_transport_kargs(const struct snapccl_comm* comm);
/* Runs enqueue(ctx), which puts one call's work on `stream`, in this communicator's call
 * order (transport/order.c): after the previous call's work when the stream changed. */
ncclResult_t snapccl_transport_ordered(struct snapccl_comm* comm, cudaStream_t stream,
                                       cudaError_t (*enqueue)(void* ctx), void* ctx);

#endif
