/* The selection rule shared by every algorithm table: see pick.h. */
#include "algos/pick.h"

#include <stdio.h>
#include <string.h>

/* "a, b, c, nccl": the names SNAPCCL_ALGO accepts for this call. */
static void list_names(const struct snapccl_menu* m, char* out, size_t len) {
  size_t n = 0;
  out[0] = 0;
  for (int i = 0; i < m->count && n < len; i++) {
    const char* name;
    unsigned flags;
    if (m->entry(m, i, &name, &flags)) n += (size_t)snprintf(out + n, len - n, "%s, ", name);
  }
  if (n < len) snprintf(out + n, len - n, "nccl");
}

static void pick_named(const struct snapccl_menu* m, const char* want, struct snapccl_pick* out) {
  char buf[256];
  out->forced = 1;
  for (int i = 0; i < m->count; i++) {
    const char* name;
    unsigned flags;
    if (!m->entry(m, i, &name, &flags) || strcmp(name, want) != 0) continue;
    const char* r = m->can_run(m, i, buf, sizeof buf);
    if (!r) {
      out->index = i;
      return;
    }
    snprintf(out->why, sizeof out->why, "SNAPCCL_ALGO forces %s:%s, which cannot run this call: %s",
             m->key, want, r);
    return;
  }
  char names[200];
  list_names(m, names, sizeof names);
  snprintf(out->why, sizeof out->why, "SNAPCCL_ALGO names %s:%s, which is not %s of snapccl (%s)",
           m->key, want, m->kind, names);
}

void snapccl_pick(const struct snapccl_menu* m, const char* forced, struct snapccl_pick* out) {
  out->index = -1;
  out->forced = 0;
  out->why[0] = 0;
  if (forced) {
    pick_named(m, forced, out);
    return;
  }
  char buf[256], first[256] = "";
  int best = -1, best_opt_in = 0;
  double best_cost = 0;
  for (int i = 0; i < m->count; i++) {
    const char* name;
    unsigned flags;
    if (!m->entry(m, i, &name, &flags) || (flags & PICK_NAMED_ONLY)) continue;
    const char* r = m->can_run(m, i, buf, sizeof buf);
    if (r) {
      /* The first refusal names the root cause best (the transport's, typically). */
      if (!first[0]) snprintf(first, sizeof first, "%s", r);
      continue;
    }
    const int opt_in = (flags & PICK_OPT_IN) != 0;
    const double cost = m->cost_us(m, i);
    if (best < 0 || opt_in > best_opt_in || (opt_in == best_opt_in && cost < best_cost)) {
      best = i;
      best_opt_in = opt_in;
      best_cost = cost;
    }
  }
  out->index = best;
  if (best < 0)
    snprintf(out->why, sizeof out->why, "snapccl cannot run this %s: %s", m->noun,
             first[0] ? first : m->none);
}
