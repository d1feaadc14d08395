/* Out-of-band exchange between the ranks of a communicator at init: through our own
 * bootstrap (communicators we created) or through the real NCCL communicator we are
 * attached to (interposed and fallback modes), never per collective call. */
#ifndef SNAPCCL_OOB_H
#define SNAPCCL_OOB_H

#include <stddef.h>

#include "nccl.h"

struct snapccl_comm;

/* data holds nranks * bytes; this rank's slot is filled on entry, all on return. */
ncclResult_t snapccl_oob_allgather(struct snapccl_comm* comm, void* data, size_t bytes);
ncclResult_t snapccl_oob_barrier(struct snapccl_comm* comm);
/* Makes every rank end with the same verdict (or some would wait for peers that gave up):
 * each contributes *ok and, if 0, its reason; a rank whose own *ok is 1 adopts the first
 * failing rank's, as "rank R: reason"; a rank that failed keeps its own reason. */
ncclResult_t snapccl_oob_agree(struct snapccl_comm* comm, int* ok, char* reason, size_t len);

#endif
