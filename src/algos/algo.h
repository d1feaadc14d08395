/* The algorithm table: each entry can say whether it runs a call, what the call would
 * cost, and launch it; the selector (select.c, by the rule of pick.h) takes the one
 * SNAPCCL_ALGO names, else an opt-in one the user enabled, else the cheapest. */
#ifndef SNAPCCL_ALGO_H
#define SNAPCCL_ALGO_H

#include "coll.h"
#include "nccl.h"

struct snapccl_algo {
  const char* name;
  enum snapccl_coll_kind kind;
  /* NULL if the call can run, else a static one-line reason. */
  const char* (*can_run)(const struct snapccl_coll* coll);
  /* Estimated microseconds, from the constants in cost.h. */
  double (*cost_us)(const struct snapccl_coll* coll);
  ncclResult_t (*launch)(const struct snapccl_coll* coll);
  /* Properties the selector honours (0 / NULL for a plain algorithm): */
  /* Runs only when SNAPCCL_ALGO names it, never by cost (the multicast kernels' unicast
   * twins, which exist to test those kernels). */
  int only_when_named;
  /* Opt-in (lossy): NULL if the user enabled it for this call's communicator, else why
   * not. Enabled and able to run, it wins over every cost estimate. */
  const char* (*opt_in)(const struct snapccl_coll* coll);
};

/* Why the selector would not take `a` for coll even when named (its opt-in, then
 * can_run); NULL if it would. */
const char* snapccl_algo_why_not(const struct snapccl_algo* a, const struct snapccl_coll* coll);

/* SNAPCCL_ALGO=<key>:<name>[,...] (key: a collective's name, or "fused"): copies the
 * first name given for key into name (truncated to len) and returns 1; 0 if none. */
int snapccl_algo_forced(const char* spec, const char* key, char* name, size_t len);

/* The table, for printing and tests. */
int snapccl_algo_count(void);
const struct snapccl_algo* snapccl_algo_at(int i);

/* The algorithm that would run coll: SNAPCCL_ALGO's choice if set for this collective
 * (failing with the reason if it cannot run the call), else the cheapest that can. */
ncclResult_t snapccl_algo_select(const struct snapccl_coll* coll, const struct snapccl_algo** out);
/* Interposed mode: the algorithm to take the call with, or (non-success, nothing
 * recorded) none, and the call goes to the real NCCL: no algorithm can run it, a forced
 * one cannot, SNAPCCL_ALGO names "nccl" for this collective, or NVIDIA's library is the
 * cheaper (by the tuning file's times, else the cost model's). */
ncclResult_t snapccl_algo_choose(const struct snapccl_coll* coll, const struct snapccl_algo** out);

/* What snapcclQueryAlgorithm answers: the name of the algorithm that would run coll, or
 * "nccl" where NVIDIA's library would take it (forced, or cheaper); fails with the
 * reason when neither can. */
ncclResult_t snapccl_algo_query(const struct snapccl_coll* coll, const char** name);

/* The algorithms, one file each. */
extern const struct snapccl_algo snapccl_allreduce_lamport;
extern const struct snapccl_algo snapccl_allreduce_oneshot;
extern const struct snapccl_algo snapccl_allreduce_twoshot;
extern const struct snapccl_algo snapccl_allgather_direct;
extern const struct snapccl_algo snapccl_reducescatter_direct;
extern const struct snapccl_algo snapccl_allreduce_copy;
extern const struct snapccl_algo snapccl_allgather_copy;
extern const struct snapccl_algo snapccl_reducescatter_copy;
extern const struct snapccl_algo snapccl_allreduce_lowprec;
extern const struct snapccl_algo snapccl_allreduce_nvls_lamport;
extern const struct snapccl_algo snapccl_allreduce_nvls_oneshot;
extern const struct snapccl_algo snapccl_allreduce_nvls_twoshot;
extern const struct snapccl_algo snapccl_allgather_nvls;
extern const struct snapccl_algo snapccl_reducescatter_nvls;
extern const struct snapccl_algo snapccl_allreduce_nvls_lamport_twin;
extern const struct snapccl_algo snapccl_allreduce_nvls_oneshot_twin;
extern const struct snapccl_algo snapccl_allreduce_nvls_twoshot_twin;
extern const struct snapccl_algo snapccl_allgather_nvls_twin;
extern const struct snapccl_algo snapccl_reducescatter_nvls_twin;
extern const struct snapccl_algo snapccl_allreduce_ce;
extern const struct snapccl_algo snapccl_allgather_ce;
extern const struct snapccl_algo snapccl_reducescatter_ce;

#endif
