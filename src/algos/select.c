/* The collectives' algorithm table and their selection (the rule is pick.h's). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/cost.h"
#include "algos/pick.h"
#include "algos/select_cache.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "log.h"

static const struct snapccl_algo* const table[] = {
    &snapccl_allreduce_lamport,   &snapccl_allreduce_oneshot, &snapccl_allreduce_twoshot,
    &snapccl_allgather_direct,    &snapccl_reducescatter_direct, &snapccl_allreduce_copy,
    &snapccl_allgather_copy,      &snapccl_reducescatter_copy,
    &snapccl_allreduce_lowprec,
    &snapccl_allreduce_nvls_lamport, &snapccl_allreduce_nvls_oneshot, &snapccl_allreduce_nvls_twoshot,
    &snapccl_allgather_nvls,         &snapccl_reducescatter_nvls,
    &snapccl_allreduce_nvls_lamport_twin, &snapccl_allreduce_nvls_oneshot_twin,
    &snapccl_allreduce_nvls_twoshot_twin, &snapccl_allgather_nvls_twin, &snapccl_reducescatter_nvls_twin,
    &snapccl_allreduce_ce,           &snapccl_allgather_ce,           &snapccl_reducescatter_ce,
};
#define NALGOS ((int)(sizeof table / sizeof table[0]))

int snapccl_algo_count(void) { return NALGOS; }
const struct snapccl_algo* snapccl_algo_at(int i) { return i >= 0 && i < NALGOS ? table[i] : NULL; }

int snapccl_algo_forced(const char* spec, const char* key, char* name, size_t len) {
  if (!spec || !len) return 0;
  size_t kl = strlen(key);
  for (const char* p = spec; *p;) {
    const char* end = strchr(p, ',');
    size_t item = end ? (size_t)(end - p) : strlen(p);
    if (item > kl + 1 && !strncmp(p, key, kl) && p[kl] == ':') {
      size_t nl = item - kl - 1;
      if (nl >= len) nl = len - 1;
      memcpy(name, p + kl + 1, nl);
      name[nl] = 0;
      return 1;
    }
    p += item + (end ? 1 : 0);
  }
  return 0;
}

const char* snapccl_algo_why_not(const struct snapccl_algo* a, const struct snapccl_coll* c) {
  const char* why = a->opt_in ? a->opt_in(c) : NULL;
  return why ? why : a->can_run(c);
}

/* Once per collective and power-of-two size class, per communicator: whether the call
 * goes to `name` because of the tuning file's times or the model's estimates. */
static void log_choice(const struct snapccl_coll* c, const char* name, int forced, double us,
                       int measured) {
  if (!snapccl_log_enabled(LOG_INFO, SUB_ALGO)) return;
  unsigned long long bytes = c->count * snapccl_dtype_size(c->dtype);
  uint64_t bit = 1ull << snapccl_size_class(bytes);
  if (atomic_fetch_or_explicit(&c->comm->algo_logged[c->kind], bit, memory_order_relaxed) & bit) return;
  if (forced)
    INFO(SUB_ALGO, "comm rank %d: %s of %llu B (%s) -> %s (forced by SNAPCCL_ALGO)", c->comm->rank,
         snapccl_coll_name(c->kind), bytes, snapccl_dtype_name(c->dtype), name);
  else
    INFO(SUB_ALGO, "comm rank %d: %s of %llu B (%s) -> %s (%s %.1f us)", c->comm->rank,
         snapccl_coll_name(c->kind), bytes, snapccl_dtype_name(c->dtype), name,
         measured ? "tuning file: measured" : "cost model: estimate", us);
}

/* The call as pick.h's rule sees the table: the entries of the call's collective, costed
 * by the tuning file's row for the call where there is one (cost.h). */
struct sel {
  const struct snapccl_coll* c;
  const struct snapccl_tuning_row* row;
};

static int entry(const struct snapccl_menu* m, int i, const char** name, unsigned* flags) {
  const struct sel* s = m->call;
  if (table[i]->kind != s->c->kind) return 0;
  *name = table[i]->name;
  *flags = (table[i]->only_when_named ? PICK_NAMED_ONLY : 0u) | (table[i]->opt_in ? PICK_OPT_IN : 0u);
  return 1;
}
static const char* can_run(const struct snapccl_menu* m, int i, char* buf, size_t len) {
  (void)buf, (void)len;
  return snapccl_algo_why_not(table[i], ((const struct sel*)m->call)->c);
}
static double cost_us(const struct snapccl_menu* m, int i) {
  const struct sel* s = m->call;
  int measured;
  return snapccl_cost_select_us(s->row, table[i]->name, table[i]->cost_us(s->c), &measured);
}

/* NVIDIA's library is a candidate where the call would reach it: a real communicator
 * under ours (interposed, fallback, or one we made with a real one underneath). */
static int nccl_reachable(const struct snapccl_comm* comm) { return comm->real_comm != NULL; }

/* Why NVIDIA's library takes a call (choose's *to_nccl). */
enum { TO_NCCL_NO = 0, TO_NCCL_FORCED, TO_NCCL_CHEAPER, TO_NCCL_ONLY /* none of ours can */ };

/* The choice: an algorithm of ours, or NULL with *to_nccl set when NVIDIA's library
 * takes the call, or NULL and the reason there is none in p->why. *us and *measured:
 * the cost that decided. */
static const struct snapccl_algo* choose(const struct snapccl_coll* c, struct snapccl_pick* p,
                                         int* to_nccl, double* us, int* measured) {
  const struct sel s = {c, snapccl_cost_row(c)};
  const struct snapccl_menu menu = {
      .key = snapccl_coll_name(c->kind), .noun = snapccl_coll_name(c->kind), .kind = "an algorithm",
      .none = "no algorithm for this collective", .count = NALGOS, .call = &s,
      .entry = entry, .can_run = can_run, .cost_us = cost_us};
  char want[64];
  const int forced = snapccl_algo_forced(snapccl_env()->algo, menu.key, want, sizeof want);
  *to_nccl = TO_NCCL_NO;
  *us = 0;
  *measured = 0;
  if (forced && !strcmp(want, "nccl")) {
    p->index = -1;
    p->forced = 1;
    *to_nccl = TO_NCCL_FORCED;
    snprintf(p->why, sizeof p->why, "SNAPCCL_ALGO hands this collective to NVIDIA's NCCL");
    return NULL;
  }
  snapccl_pick(&menu, forced ? want : NULL, p);
  const struct snapccl_algo* a = p->index >= 0 ? table[p->index] : NULL;
  if (a) *us = snapccl_cost_select_us(s.row, a->name, a->cost_us(c), measured);
  /* Forced, or opt-in (the user asked for it): no contest. */
  if (p->forced || (a && a->opt_in) || !nccl_reachable(c->comm)) return a;
  int nccl_measured;
  double nccl_us = snapccl_cost_select_us(s.row, "nccl", snapccl_cost_nccl_us(c), &nccl_measured);
  if (a && nccl_us >= *us) return a;
  *to_nccl = a ? TO_NCCL_CHEAPER : TO_NCCL_ONLY;
  if (a) {
    snprintf(p->why, sizeof p->why, "NVIDIA's NCCL is faster here (%s %.1f us, %s %.1f us)",
             nccl_measured ? "measured" : "estimated", nccl_us, a->name, *us);
    *us = nccl_us;
    *measured = nccl_measured;
    p->index = -1;
  }
  return NULL;
}

/* choose()'s answer, from the communicator's cache when it holds it. The cache is
 * bypassed while the choices are logged (SNAPCCL_DEBUG=INFO with ALGO, or TRACE), so
 * the log says what it always said; the answers are the same either way. A miss
 * computes and remembers the answer; *p, *us and *measured are set only then
 * (*fresh = 1). */
static const struct snapccl_algo* choose_cached(const struct snapccl_coll* c, struct snapccl_pick* p,
                                                int* to_nccl, double* us, int* measured, int* fresh) {
  const int use = !snapccl_log_enabled(LOG_INFO, SUB_ALGO);
  uint64_t stamp = 0;
  int index;
  if (use && snapccl_select_cache_get(c->comm, c, &stamp, &index, to_nccl) && index < NALGOS) {
    *fresh = 0;
    return index >= 0 ? table[index] : NULL;
  }
  *fresh = 1;
  const struct snapccl_algo* a = choose(c, p, to_nccl, us, measured);
  if (use) snapccl_select_cache_put(c->comm, c, stamp, a ? p->index : -1, *to_nccl);
  return a;
}

ncclResult_t snapccl_algo_select(const struct snapccl_coll* c, const struct snapccl_algo** out) {
  struct snapccl_pick p;
  int to_nccl, measured, fresh;
  double us;
  const struct snapccl_algo* a = choose_cached(c, &p, &to_nccl, &us, &measured, &fresh);
  if (!a && !fresh) a = choose(c, &p, &to_nccl, &us, &measured); /* for the reason */
  if (!a) SNAP_FAIL(ncclInvalidUsage, "%s", p.why);
  *out = a;
  if (fresh) log_choice(c, a->name, p.forced, us, measured);
  return ncclSuccess;
}

ncclResult_t snapccl_algo_choose(const struct snapccl_coll* c, const struct snapccl_algo** out) {
  struct snapccl_pick p;
  int to_nccl, measured, fresh;
  double us;
  const struct snapccl_algo* a = choose_cached(c, &p, &to_nccl, &us, &measured, &fresh);
  if (!a) {
    if (!fresh) return ncclInvalidUsage; /* logged when it was computed */
    if (to_nccl == TO_NCCL_FORCED || to_nccl == TO_NCCL_CHEAPER) log_choice(c, "nccl", p.forced, us, measured);
    TRACE(SUB_ALGO, "%s of %zu elements goes to NCCL: %s", snapccl_coll_name(c->kind), c->count, p.why);
    return ncclInvalidUsage;
  }
  *out = a;
  if (fresh) log_choice(c, a->name, p.forced, us, measured);
  return ncclSuccess;
}

ncclResult_t snapccl_algo_query(const struct snapccl_coll* c, const char** name) {
  struct snapccl_pick p;
  int to_nccl, measured;
  double us;
  const struct snapccl_algo* a = choose(c, &p, &to_nccl, &us, &measured);
  if (!a && !to_nccl) SNAP_FAIL(ncclInvalidUsage, "%s", p.why);
  *name = a ? a->name : "nccl";
  return ncclSuccess;
}
