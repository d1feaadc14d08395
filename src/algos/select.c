/* The algorithm table and the selector. */
#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "log.h"
#include "transport/transport_impl.h"

static const struct snapccl_algo* const table[] = {
    &snapccl_allreduce_lamport,   &snapccl_allreduce_oneshot, &snapccl_allreduce_twoshot,
    &snapccl_allgather_direct,    &snapccl_reducescatter_direct, &snapccl_allreduce_copy,
    &snapccl_allgather_copy,      &snapccl_reducescatter_copy,
    &snapccl_allreduce_lowprec,
    &snapccl_allreduce_nvls_lamport, &snapccl_allreduce_nvls_oneshot, &snapccl_allreduce_nvls_twoshot,
    &snapccl_allgather_nvls,         &snapccl_reducescatter_nvls,
    &snapccl_allreduce_nvls_lamport_twin, &snapccl_allreduce_nvls_oneshot_twin,
    &snapccl_allreduce_nvls_twoshot_twin, &snapccl_allgather_nvls_twin, &snapccl_reducescatter_nvls_twin,
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

/* SNAPCCL_ALGO's name for this collective, if any. */
static int forced_name(enum snapccl_coll_kind kind, char* name, size_t len) {
  return snapccl_algo_forced(snapccl_env()->algo, snapccl_coll_name(kind), name, len);
}

static void log_choice(const struct snapccl_coll* c, const struct snapccl_algo* a, int forced) {
  if (!snapccl_log_enabled(LOG_INFO, SUB_ALGO)) return;
  struct snapccl_transport* t = c->comm->transport;
  unsigned long long bytes = c->count * snapccl_dtype_size(c->dtype);
  int cls = 0;
  while (cls < 63 && (1ull << (cls + 1)) <= bytes) cls++;
  uint64_t bit = 1ull << cls;
  /* Once per collective and power-of-two size class, per communicator. */
  if (__atomic_fetch_or(&t->logged[c->kind], bit, __ATOMIC_RELAXED) & bit) return;
  INFO(SUB_ALGO, "comm rank %d: %s of %llu B (%s) -> %s%s (estimate %.1f us)", c->comm->rank,
       snapccl_coll_name(c->kind), bytes, snapccl_dtype_name(c->dtype), a->name,
       forced ? " (forced by SNAPCCL_ALGO)" : "", a->cost_us(c));
}

/* The choice, or the reason there is none (a static string or `buf`). */
static const struct snapccl_algo* choose(const struct snapccl_coll* c, int* forced,
                                         const char** why, char* buf, size_t len) {
  char want[64];
  *forced = forced_name(c->kind, want, sizeof want);
  if (*forced) {
    if (!strcmp(want, "nccl")) {
      *why = "SNAPCCL_ALGO hands this collective to NVIDIA's NCCL";
      return NULL;
    }
    for (int i = 0; i < NALGOS; i++) {
      if (table[i]->kind != c->kind || strcmp(table[i]->name, want) != 0) continue;
      const char* r = table[i]->can_run(c);
      if (r) {
        snprintf(buf, len, "SNAPCCL_ALGO forces %s:%s, which cannot run this call: %s",
                 snapccl_coll_name(c->kind), want, r);
        *why = buf;
        return NULL;
      }
      return table[i];
    }
    snprintf(buf, len, "SNAPCCL_ALGO names %s:%s, which is not an algorithm of snapccl",
             snapccl_coll_name(c->kind), want);
    *why = buf;
    return NULL;
  }
  const struct snapccl_algo* best = NULL;
  double best_cost = 0;
  *why = "no algorithm for this collective";
  for (int i = 0; i < NALGOS; i++) {
    if (table[i]->kind != c->kind) continue;
    const char* r = table[i]->can_run(c);
    if (r) {
      *why = r;
      continue;
    }
    double cost = table[i]->cost_us(c);
    if (!best || cost < best_cost) {
      best = table[i];
      best_cost = cost;
    }
  }
  if (!best) {
    snprintf(buf, len, "snapccl cannot run this %s: %s", snapccl_coll_name(c->kind), *why);
    *why = buf;
  }
  return best;
}

ncclResult_t snapccl_algo_select(const struct snapccl_coll* c, const struct snapccl_algo** out) {
  char buf[320];
  const char* why;
  int forced;
  const struct snapccl_algo* a = choose(c, &forced, &why, buf, sizeof buf);
  if (!a) SNAP_FAIL(ncclInvalidUsage, "%s", why);
  *out = a;
  log_choice(c, a, forced);
  return ncclSuccess;
}

ncclResult_t snapccl_algo_choose(const struct snapccl_coll* c, const struct snapccl_algo** out) {
  char buf[320];
  const char* why;
  int forced;
  const struct snapccl_algo* a = choose(c, &forced, &why, buf, sizeof buf);
  if (!a) {
    TRACE(SUB_ALGO, "%s of %zu elements goes to NCCL: %s", snapccl_coll_name(c->kind), c->count, why);
    return ncclInvalidUsage;
  }
  *out = a;
  log_choice(c, a, forced);
  return ncclSuccess;
}

ncclResult_t snapccl_coll_check(struct snapccl_coll* coll) {
  if (coll->algo) return ncclSuccess;
  return snapccl_algo_select(coll, &coll->algo);
}

ncclResult_t snapccl_coll_issue(const struct snapccl_coll* coll) {
  const struct snapccl_algo* a = coll->algo;
  if (!a) SNAP_CHECK(snapccl_algo_select(coll, &a));
  return a->launch(coll);
}

double snapccl_coll_estimate_us(const struct snapccl_coll* coll) {
  const struct snapccl_algo* a;
  if (snapccl_algo_select(coll, &a) != ncclSuccess) return 0.0;
  return a->cost_us(coll);
}
