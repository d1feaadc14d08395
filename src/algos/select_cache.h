/* The collectives' choice of algorithm, remembered per communicator so that a repeated
 * call does not ask every algorithm again (select.c). An entry is keyed by everything
 * the choice reads from the call (collective, exact count, dtype, op and its resolution);
 * the count is exact because the cost
 * formulas and thresholds are not constant within a power-of-two size class, and the
 * cache must answer exactly what the full selection would. Whatever else the choice
 * reads is the communicator's or the process's and changes only through
 * snapccl_select_cache_invalidate: the settings (SNAPCCL_ALGO, the low-precision ones),
 * the tuning file, snapcclCommSetLowPrecision. (Buffer registration changes no choice:
 * the registered two-shot decides in its kernel whether the call runs in place.)
 *
 * Lock-free: each entry is a small seqlock, so a reader never sees half an entry and a
 * writer that finds the entry busy simply does not cache. No allocation: the entries
 * live in the communicator. */
#ifndef SNAPCCL_ALGOS_SELECT_CACHE_H
#define SNAPCCL_ALGOS_SELECT_CACHE_H

#include <stdatomic.h>
#include <stdint.h>

#include "coll.h"

/* Direct-mapped: a program cycling through more distinct calls than this on one
 * communicator misses more, and still gets the same answers. */
#define SNAPCCL_SELECT_CACHE_ENTRIES 64

struct snapccl_select_entry {
  _Atomic uint32_t seq;    /* odd while written */
  _Atomic uint64_t count;  /* key: the call's count */
  _Atomic uint64_t shape;  /* key: collective, dtype, op, resolution (never 0 when set) */
  _Atomic uint64_t answer; /* stamp << 16 | outcome << 8 | algorithm index + 1 */
};

struct snapccl_select_cache {
  _Atomic uint64_t generation; /* this communicator's invalidations */
  struct snapccl_select_entry entries[SNAPCCL_SELECT_CACHE_ENTRIES];
};

struct snapccl_comm;

/* The remembered choice, valid as of *stamp (read before looking, so that an answer
 * computed after a miss is stored against the state it was computed from). 1 on a hit:
 * *index is the algorithm's place in the table (-1: none of ours) and *outcome the
 * selector's reason code; 0 on a miss. */
int snapccl_select_cache_get(struct snapccl_comm* comm, const struct snapccl_coll* c, uint64_t* stamp,
                             int* index, int* outcome);
/* Remembers a choice computed after a miss, under the stamp that miss returned. */
void snapccl_select_cache_put(struct snapccl_comm* comm, const struct snapccl_coll* c, uint64_t stamp,
                              int index, int outcome);
/* Forgets every remembered choice of comm, or of every communicator (comm NULL): call it
 * after changing anything a choice reads, before the change can matter to a call. */
void snapccl_select_cache_invalidate(struct snapccl_comm* comm);

#endif
