/* The fused algorithms' own table, SNAPCCL_ALGO's "fused:<name>" item, and the route
 * of a call: one of our algorithms, the real NCCL's all-reduce plus our separate
 * kernel, or a failure with the reason. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/pick.h"
#include "comm.h"
#include "env.h"
#include "fused.h"
#include "log.h"

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

/* The table as pick.h's rule sees it: every entry serves every fused call. */
static int entry(const struct snapccl_menu* m, int i, const char** name, unsigned* flags) {
  (void)m;
  *name = table[i]->name;
  *flags = 0;
  return 1;
}
static const char* can_run(const struct snapccl_menu* m, int i, char* buf, size_t len) {
  return table[i]->can_run(m->call, buf, len);
}
static double cost_us(const struct snapccl_menu* m, int i) { return table[i]->cost_us(m->call); }

enum snapccl_fused_route snapccl_fused_route(const struct snapccl_fused* f, int have_real,
                                             int ours_ready, const struct snapccl_fused_algo** algo,
                                             char* why, size_t len) {
  char want[64];
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
  const struct snapccl_menu menu = {
      .key = "fused", .noun = "fused call", .kind = "a fused algorithm", .none = "no fused algorithm",
      .count = NALGOS, .call = f, .entry = entry, .can_run = can_run, .cost_us = cost_us};
  struct snapccl_pick p;
  snapccl_pick(&menu, forced ? want : NULL, &p);
  if (p.index < 0) {
    snprintf(why, len, "%s", p.why);
    return otherwise;
  }
  *algo = table[p.index];
  return FUSED_ROUTE_OURS;
}

void snapccl_fused_log_choice(const struct snapccl_fused* f, const struct snapccl_fused_algo* a) {
  /* Per entry, and one for the real route: size classes already logged in this process. */
  static atomic_ullong logged[NALGOS + 1];
  if (!snapccl_log_enabled(LOG_INFO, SUB_ALGO)) return;
  unsigned long long bytes = (unsigned long long)f->tokens * f->hidden * snapccl_dtype_size(f->dtype);
  int slot = NALGOS;
  for (int i = 0; i < NALGOS; i++)
    if (table[i] == a) slot = i;
  uint64_t bit = 1ull << snapccl_size_class(bytes);
  if (atomic_fetch_or_explicit(&logged[slot], bit, memory_order_relaxed) & bit) return;
  INFO(SUB_ALGO, "fused all-reduce+residual+RMSNorm of %zu x %zu %s (%llu B) -> %s (estimate %.1f us)",
       f->tokens, f->hidden, snapccl_dtype_name(f->dtype), bytes, a ? a->name : "nccl",
       a ? a->cost_us(f) : 0.0);
}
