/* ncclGroupStart/End: per-thread nesting; calls made inside a group are deferred to the
 * outermost End. Inits are deferred too because a rendezvous blocks: one thread that
 * inits several ranks inside a group (nccl-tests -g N) must not wait on itself. */
#ifndef SNAPCCL_GROUP_H
#define SNAPCCL_GROUP_H

#include "coll.h"
#include "nccl.h"

struct snapccl_comm;

int snapccl_group_depth(void);
ncclResult_t snapccl_group_start(void);
ncclResult_t snapccl_group_end(void);
/* ncclGroupSimulateEnd: closes the group like End, but issues no collective; sums the
 * cost model's estimates of the deferred ones. */
ncclResult_t snapccl_group_simulate_end(float* estimated_us);
/* A call inside a group failed: ncclGroupEnd reports it and issues nothing. */
void snapccl_group_record_error(ncclResult_t res);

/* Deferral, only valid while snapccl_group_depth() > 0. */
ncclResult_t snapccl_group_defer_init(struct snapccl_comm* comm, const ncclUniqueId* id,
                                      int nranks, int rank, int cuda_dev);
ncclResult_t snapccl_group_defer_coll(const struct snapccl_coll* coll);
/* A registration (transport/registration.h) prepared at the call, completed at the
 * outermost ncclGroupEnd after the inits, one thread per communicator. */
struct snapccl_reg_range;
ncclResult_t snapccl_group_defer_reg(struct snapccl_comm* comm, struct snapccl_reg_range* range);
/* ncclCommDestroy, ncclCommAbort and ncclCommFinalize inside a group, as in NCCL, take
 * effect at the outermost ncclGroupEnd, after the group's inits and collectives (an
 * init deferred to it may belong to that very communicator). how: SNAPCCL_END_*. */
ncclResult_t snapccl_group_defer_end(struct snapccl_comm* comm, int how);

#endif
