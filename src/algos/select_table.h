/* The selector's crossover table in words (select_table.c). */
#ifndef SNAPCCL_ALGOS_SELECT_TABLE_H
#define SNAPCCL_ALGOS_SELECT_TABLE_H

#include <stddef.h>

#include "coll.h"

struct snapccl_comm;

/* "allreduce     float32   4-512K:lamport 1M-1G:twoshot": the answer of the selector
 * for each power of two of bytes from the dtype's size to 1 GiB, equal answers merged
 * into ranges; "-" where nothing of ours nor NVIDIA's NCCL can run the call. */
void snapccl_select_table_line(struct snapccl_comm* comm, enum snapccl_coll_kind kind,
                               ncclDataType_t dt, char* out, size_t len);
/* First each collective's algorithms (perf/tune.py reads them: "<coll> algorithms: a b
 * c(opt-in) d(named-only)"), then a line per collective and dtype the algorithms tell
 * apart. */
void snapccl_select_table(struct snapccl_comm* comm, void (*emit)(void* arg, const char* line),
                          void* arg);

#endif
