/* Interposed and fallback modes: which calls go to the real NCCL, with which handle, and
 * our state for the real library's communicators (attached lazily, never while a stream
 * captures and never inside a collective call's critical path after the first). */
#ifndef SNAPCCL_INTERPOSE_H
#define SNAPCCL_INTERPOSE_H

#include "coll.h"
#include "nccl.h"
#include "real_nccl.h"

struct snapccl_comm;

/* 1 if a call on `handle` belongs to the real library; *real_handle is what to pass it.
 * 0 in standalone mode and for communicators snapccl serves alone. */
int snapccl_forward_target(ncclComm_t handle, ncclComm_t* real_handle);

/* Passes a forwarded call's result through; a failure is noted (ncclGetLastError then
 * asks the real library, and an open group reports it at its end). */
ncclResult_t snapccl_forwarded(ncclResult_t res);

/* Our state for a communicator the real library just created (blocking init done):
 * registers it and attaches now, or later (non-blocking init, inside a group). */
ncclResult_t snapccl_adopt_real_comm(ncclComm_t real_comm, int attach_now);
/* The result of a real init/split/shrink call, passed through: on success (or in
 * progress) the new communicator is adopted, attached now outside a group after a
 * blocking init, else at the group's end or its first collective. */
ncclResult_t snapccl_adopt_result(ncclResult_t r, ncclComm_t* comm);
/* Attaches every adopted communicator still pending, one thread each (attaching is
 * collective, and one thread may drive several ranks). */
ncclResult_t snapccl_attach_pending(void);
/* Lists an adopted communicator for attachment at the end of the current group. */
void snapccl_adopt_later(struct snapccl_comm* comm);
/* Attaches comm if it is pending and the moment is right (no capture on `stream`). */
void snapccl_maybe_attach(struct snapccl_comm* comm, cudaStream_t stream);

/* Communicators snapccl created itself in interposed mode (ranks sharing a GPU): when
 * every rank has its own GPU, also create a real communicator underneath so calls
 * snapccl does not run can still be forwarded. */
ncclResult_t snapccl_make_real_underneath(struct snapccl_comm* comm);

/* Per-communicator counters of calls taken and forwarded, by collective and size class;
 * printed at INFO when the communicator is destroyed. */
void snapccl_count_call(struct snapccl_comm* comm, enum snapccl_coll_kind kind, size_t bytes,
                        int taken);
void snapccl_print_counts(const struct snapccl_comm* comm);

#endif
