/* Out-of-band rendezvous and small host collectives over TCP, used by every
 * communicator at init (peer info, IPC handles, splits) and never per collective call.
 *
 * Shape: ncclGetUniqueId opens a root listener and a root thread; each rank connects to
 * the root with the id's nonce and its own listener address; the root answers with the
 * table of all listeners; ranks then connect a ring (allgather, broadcast, barrier) and
 * keep their listener for tagged point-to-point messages (used where the ring cannot
 * be, e.g. shrinking away dead ranks). Every connect, accept, send and receive is
 * bounded by SNAPCCL_BOOTSTRAP_TIMEOUT; every message carries a checked length. */
#ifndef SNAPCCL_BOOTSTRAP_H
#define SNAPCCL_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

#include "nccl.h"

/* Layout of ncclUniqueId.internal for ids made by snapccl (128 bytes in all). */
#define SNAPCCL_ID_MAGIC 0x534e4150434c4944ull /* "SNAPCLID" */
struct snapccl_unique_id {
  uint64_t magic;        /* SNAPCCL_ID_MAGIC */
  uint64_t nonce[2];     /* random; every peer must present it */
  uint16_t family;       /* AF_INET or AF_INET6 */
  uint16_t port;         /* network byte order */
  uint32_t scope_id;     /* IPv6 scope */
  uint8_t addr[16];      /* IPv4 in the first 4 bytes, or IPv6 */
  uint8_t reserved[80];
};
_Static_assert(sizeof(struct snapccl_unique_id) == NCCL_UNIQUE_ID_BYTES, "id layout");

struct snapccl_bootstrap;

/* Opens the root listener, starts the root thread (it serves one rendezvous and exits,
 * or gives up after the bootstrap timeout) and writes the id. */
ncclResult_t snapccl_bootstrap_create_root(ncclUniqueId* id);

/* ncclInvalidArgument unless the id was produced by snapccl_bootstrap_create_root
 * (checks the magic and that the address is plausible). */
ncclResult_t snapccl_bootstrap_check_id(const ncclUniqueId* id);

/* Rendezvous of `nranks` ranks through the root named by id. Blocks until all ranks
 * arrived or the timeout passed. */
ncclResult_t snapccl_bootstrap_init(const ncclUniqueId* id, int rank, int nranks,
                                    struct snapccl_bootstrap** out);
/* The same, failing promptly (ncclRemoteError) once abort_fd (an eventfd, or -1) is
 * readable, from the rendezvous on; the bootstrap keeps watching it afterwards, next to
 * its own abort. */
ncclResult_t snapccl_bootstrap_init_abortable(const ncclUniqueId* id, int rank, int nranks,
                                              int abort_fd, struct snapccl_bootstrap** out);

int snapccl_bootstrap_rank(const struct snapccl_bootstrap* b);
int snapccl_bootstrap_nranks(const struct snapccl_bootstrap* b);

/* data holds nranks * bytes; this rank's slot (at rank * bytes) is filled on entry,
 * every slot on return. */
ncclResult_t snapccl_bootstrap_allgather(struct snapccl_bootstrap* b, void* data, size_t bytes);
/* bytes from root's data to every rank's data. */
ncclResult_t snapccl_bootstrap_bcast(struct snapccl_bootstrap* b, void* data, size_t bytes,
                                     int root);
ncclResult_t snapccl_bootstrap_barrier(struct snapccl_bootstrap* b);

/* Tagged point to point through the peer's listener; a receive matches (peer, tag)
 * and keeps unexpected messages for later receives. Sizes must match exactly. */
ncclResult_t snapccl_bootstrap_send(struct snapccl_bootstrap* b, int peer, int tag,
                                    const void* data, size_t bytes);
ncclResult_t snapccl_bootstrap_recv(struct snapccl_bootstrap* b, int peer, int tag, void* data,
                                    size_t bytes);

/* Makes operations in progress (in other threads) and later ones fail promptly. */
void snapccl_bootstrap_abort(struct snapccl_bootstrap* b);
void snapccl_bootstrap_destroy(struct snapccl_bootstrap* b);

#endif
