/* Peer memory of a communicator: each rank's workspace (flags, Lamport and staging
 * buffers, the device-resident epoch), mapped into every peer; the host-mapped abort
 * and error words; P2P and topology checks at init. */
#ifndef SNAPCCL_TRANSPORT_H
#define SNAPCCL_TRANSPORT_H

#include "comm.h"
#include "nccl.h"

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

#endif
