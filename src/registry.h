/* Handle -> communicator map. Standalone, the handle is our own struct; interposed,
 * it is the real NCCL's ncclComm_t and our state hangs off it here. A handle that is
 * not in the registry is not ours: API entry points refuse it (standalone) or forward
 * it to the real library (interposed). */
#ifndef SNAPCCL_REGISTRY_H
#define SNAPCCL_REGISTRY_H

#include "nccl.h"

struct snapccl_comm;

ncclResult_t snapccl_registry_add(const void* handle, struct snapccl_comm* comm);
/* NULL if the handle is unknown. */
struct snapccl_comm* snapccl_registry_find(const void* handle);
/* Removes and returns the entry (NULL if unknown). */
struct snapccl_comm* snapccl_registry_remove(const void* handle);
/* Number of live entries (tests, leak checks). */
int snapccl_registry_count(void);

#endif
