/* Registered buffers (registration.c): every rank's counterpart of a registered range
 * mapped into every rank, exchanged once per registration, collectively. */
#ifndef SNAPCCL_TRANSPORT_REGISTRATION_H
#define SNAPCCL_TRANSPORT_REGISTRATION_H

#include <stddef.h>

#include "nccl.h"

struct snapccl_comm;

/* Collective: every rank of comm calls it in the same order. Registers [buff, buff +
 * size); *out gets the handle the application holds (`handle` if not NULL, as when the
 * real library's window is the application's handle, else one of ours). Memory that
 * cannot be mapped into every rank still registers (local only: collectives stage it);
 * only a failed out-of-band exchange is an error. */
ncclResult_t snapccl_reg_register(struct snapccl_comm* comm, void* buff, size_t size, int symmetric, void* handle,
                                  void** out);
/* The two halves of snapccl_reg_register, for a registration deferred to a group's end:
 * prepare (local, at the call: numbers it, makes its handle, g->handle; NULL without
 * memory), then complete (collective; on failure g is freed). */
struct snapccl_reg_range;
struct snapccl_reg_range* snapccl_reg_prepare(struct snapccl_comm* comm, void* buff, size_t size, int symmetric,
                                              void* handle);
ncclResult_t snapccl_reg_complete(struct snapccl_comm* comm, struct snapccl_reg_range* g);
/* A prepared registration that will never be completed. */
void snapccl_reg_abandon(struct snapccl_reg_range* g);
/* Local: unmaps this rank's mappings of the peers' counterparts (shared ones stay while
 * another range holds them). ncclInvalidUsage for a handle the communicator does not know. */
ncclResult_t snapccl_reg_deregister(struct snapccl_comm* comm, void* handle, const char* func);
/* Whether handle is a registration of comm. */
int snapccl_reg_known(struct snapccl_comm* comm, const void* handle);
/* Rank r's counterpart of [ptr, ptr + bytes) in this process, when a registration holds
 * that span and every rank maps it; else NULL. */
void* snapccl_reg_peer(struct snapccl_comm* comm, const void* ptr, size_t bytes, int r);
/* The registered-buffer arguments of a two-shot all-reduce of `bytes` on this rank
 * (kernels/kargs.h, struct snapccl_reg_args): the exchange runs once any registration was
 * mapped in every rank (agreed, never undone); the descriptor names this rank's send and
 * receive ranges when both are registered and mapped everywhere, and `scalable` says the
 * reduction may read peers' inputs unscaled by their own scalar (else it stays 0: stage). */
struct snapccl_reg_args;
void snapccl_reg_call(struct snapccl_comm* comm, const void* send, void* recv, size_t bytes, int scalable,
                      struct snapccl_reg_args* out);
/* At destroy: every registration left, its mappings undone; counters at INFO. */
void snapccl_reg_free_all(struct snapccl_comm* comm);

#endif
