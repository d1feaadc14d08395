/* The fused algorithms' own table, SNAPCCL_ALGO's "fused:<name>" item, and the route
 * of a call: one of our algorithms, the real NCCL's all-reduce plus our separate
 * kernel, or a failure with the reason. */
#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "comm.h"
#include "env.h"
#include "fused.h"

static const struct snapccl_fused_algo* const table[] = {
    &snapccl_fused_oneshot, &snapccl_fused_twoshot, &snapccl_fused_unfused, &snapccl_fused_local,
};
#define NALGOS ((int)(sizeof table / sizeof table[0]))

int snapccl_fused_algo_count(void) { return NALGOS; }
const struct snapccl_fused_algo* snapccl_fused_algo_at(int i) {
  return i >= 0 && i < NALGOS ? table[i] : NULL;
}

/* Same grammar as the collectives' items (src/algos/select.c): a comma-separated list
 * of <key>:<name>; the first "fused" item wins. */
int snapccl_fused_forced(const char* spec, char* name, size_t len) {
  return snapccl_algo_forced(spec, "fused", name, len);
}

enum snapccl_fused_route snapccl_fused_route(const struct snapccl_fused* f, int have_real,
                                             int ours_ready, const struct snapccl_fused_algo** algo,
                                             char* why, size_t len) {
  char want[64], buf[256];
  const int forced = snapccl_fused_forced(snapccl_env()->algo, want, sizeof want);
  const enum snapccl_fused_route otherwise = have_real ? FUSED_ROUTE_REAL : FUSED_ROUTE_FAIL;
  *algo = NULL;
  why[0] = 0;
  if (forced && !strcmp(want, "nccl")) {
    if (have_real) {
      snprintf(why, len, "SNAPCCL_ALGO hands the fused call's all-reduce to NVIDIA's NCCL");
      return FUSED_ROUTE_REAL;
    }
    snprintf(why, len, "SNAPCCL_ALGO=fused:nccl, but no NVIDIA NCCL serves this communicator");
    return FUSED_ROUTE_FAIL;
  }
  if (!ours_ready || !f->comm) {
    snprintf(why, len, "snapccl is not attached to this communicator");
    return otherwise;
  }
  if (forced) {
    for (int i = 0; i < NALGOS; i++) {
      if (strcmp(table[i]->name, want)) continue;
      const char* r = table[i]->can_run(f, buf, sizeof buf);
      if (!r) {
        *algo = table[i];
        return FUSED_ROUTE_OURS;
      }
      snprintf(why, len, "SNAPCCL_ALGO forces fused:%s, which cannot run this call: %s", want, r);
      return otherwise;
    }
    snprintf(why, len,
             "SNAPCCL_ALGO names fused:%s, which is not a fused algorithm of snapccl (oneshot, "
             "twoshot, unfused, local, nccl)", want);
    return otherwise;
  }
  const struct snapccl_fused_algo* best = NULL;
  double best_cost = 0;
  /* The first refusal names the root cause best (the transport's, typically). */
  const char* first = NULL;
  char reason[256];
  for (int i = 0; i < NALGOS; i++) {
    const char* r = table[i]->can_run(f, buf, sizeof buf);
    if (r) {
      if (!first) {
        snprintf(reason, sizeof reason, "%s", r); /* r may live in buf, reused next */
        first = reason;
      }
      continue;
    }
    double c = table[i]->cost_us(f);
    if (!best || c < best_cost) {
      best = table[i];
      best_cost = c;
    }
  }
  if (!best) {
    snprintf(why, len, "snapccl cannot run this fused call: %s",
             first ? first : "no fused algorithm");
    return otherwise;
  }
  *algo = best;
  return FUSED_ROUTE_OURS;
}
