/* The per-communicator cache of chosen algorithms (src/algos/select_cache.h) without a
 * GPU, on fake communicators: a repeated call is answered from the cache, the answer is
 * always what the full selection gives (snapcclQueryAlgorithm, which never uses the
 * cache), every cause of a changed choice invalidates it (settings re-read,
 * snapcclCommSetLowPrecision, a tuning file, the explicit invalidation buffer
 * registration uses), and counts on either side of a power-of-two boundary are kept
 * apart. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/select_cache.h"
#include "comm.h"
#include "env.h"
#include "fake_comm.h"
#include "kernels/kargs.h"
#include "nccl.h"
#include "snapccl.h"
#include "tuning.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB");
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_LOWPREC");
  unsetenv("SNAPCCL_LOWPREC_MIN_BYTES");
  unsetenv("SNAPCCL_DEBUG");
  unsetenv("NCCL_DEBUG");
  unsetenv("SNAPCCL_TUNING_FILE");
  snapccl_env_reload();
}

TestSuite(select_cache, .init = setup);

static const enum snapccl_coll_kind kinds[] = {COLL_ALLREDUCE, COLL_ALLGATHER, COLL_REDUCESCATTER};

static struct snapccl_coll prepared(struct snapccl_comm* c, enum snapccl_coll_kind kind, size_t count,
                                    ncclDataType_t dt, ncclRedOp_t op) {
  static char dummy[16];
  struct snapccl_coll coll;
  cr_assert(snapccl_coll_prepare_quiet(kind, dummy, dummy, count, dt, op, c, NULL, &coll));
  return coll;
}

static int index_of(const struct snapccl_algo* a) {
  for (int i = 0; i < snapccl_algo_count(); i++)
    if (snapccl_algo_at(i) == a) return i;
  cr_assert_fail("not in the table");
  return -1;
}

/* The algorithm the full selection names (uncached), or "nccl"/NULL. */
static const char* uncached(struct snapccl_comm* c, const struct snapccl_coll* x) {
  const char* name = NULL;
  if (snapcclQueryAlgorithm((ncclComm_t)c, snapccl_coll_name(x->kind), x->count, x->dtype, x->op, &name) !=
      ncclSuccess)
    return NULL;
  return name;
}

/* The selector's answer for x, checked against the full selection; *hit: whether the
 * cache held it before the call. */
static const struct snapccl_algo* selected(struct snapccl_comm* c, const struct snapccl_coll* x, int* hit) {
  uint64_t stamp;
  int index, outcome;
  const int was = snapccl_select_cache_get(c, x, &stamp, &index, &outcome);
  if (hit) *hit = was;
  const struct snapccl_algo* a = NULL;
  ncclResult_t r = snapccl_algo_select(x, &a);
  const char* want = uncached(c, x);
  if (r != ncclSuccess) {
    cr_assert(!want || !strcmp(want, "nccl"), "select failed where the full selection names %s", want);
    return NULL;
  }
  cr_assert_not_null(want);
  cr_assert_str_eq(a->name, want, "%s of %zu: cached %s, full selection %s", snapccl_coll_name(x->kind),
                   x->count, a->name, want);
  return a;
}

Test(select_cache, second_call_hits_and_the_cache_is_what_answers) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, 4096, ncclFloat32, ncclSum);
  int hit;
  const struct snapccl_algo* a = selected(c, &x, &hit);
  cr_assert_not_null(a);
  cr_assert_not(hit, "an empty cache");
  cr_assert_eq(selected(c, &x, &hit), a);
  cr_assert(hit, "the second call was not remembered");

  /* Plant another answer under the current stamp: the selector must return it, which
   * shows it reads the cache rather than choosing again. */
  uint64_t stamp;
  int index, outcome;
  cr_assert(snapccl_select_cache_get(c, &x, &stamp, &index, &outcome));
  cr_assert_eq(index, index_of(a));
  const struct snapccl_algo* other = NULL;
  for (int i = 0; i < snapccl_algo_count() && !other; i++)
    if (snapccl_algo_at(i)->kind == COLL_ALLREDUCE && snapccl_algo_at(i) != a) other = snapccl_algo_at(i);
  snapccl_select_cache_put(c, &x, stamp, index_of(other), outcome);
  const struct snapccl_algo* got = NULL;
  cr_assert_eq(snapccl_algo_select(&x, &got), ncclSuccess);
  cr_assert_eq(got, other, "the planted entry was not used");

  /* The explicit invalidation (what registering a buffer calls) drops it. */
  snapccl_select_cache_invalidate(c);
  cr_assert_eq(selected(c, &x, &hit), a);
  cr_assert_not(hit);
  /* So does the process-wide one. */
  snapccl_select_cache_invalidate(NULL);
  cr_assert_eq(selected(c, &x, &hit), a);
  cr_assert_not(hit);
  fake_comm_free(c);
}

Test(select_cache, key_holds_every_argument_the_choice_reads) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, 1000, ncclFloat32, ncclSum);
  int hit;
  (void)selected(c, &x, NULL);
  const struct snapccl_coll variants[] = {
      prepared(c, COLL_ALLREDUCE, 1000, ncclFloat16, ncclSum),  prepared(c, COLL_ALLREDUCE, 1000, ncclFloat32, ncclMax),
      prepared(c, COLL_ALLREDUCE, 1000, ncclFloat32, ncclAvg),  prepared(c, COLL_ALLGATHER, 1000, ncclFloat32, ncclSum),
      prepared(c, COLL_REDUCESCATTER, 1000, ncclFloat32, ncclSum), prepared(c, COLL_ALLREDUCE, 1001, ncclFloat32, ncclSum),
  };
  for (size_t i = 0; i < NELEMS(variants); i++) {
    uint64_t stamp;
    int index, outcome;
    cr_assert_not(snapccl_select_cache_get(c, &variants[i], &stamp, &index, &outcome), "variant %zu hit", i);
  }
  uint64_t stamp;
  int index, outcome;
  cr_assert(snapccl_select_cache_get(c, &x, &stamp, &index, &outcome));
  (void)selected(c, &x, &hit);
  cr_assert(hit);
  fake_comm_free(c);
}

Test(select_cache, size_class_boundaries_kept_apart) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  for (size_t k = 0; k < NELEMS(kinds); k++)
    for (int e = 1; e <= 28; e++) {
      const size_t counts[] = {((size_t)1 << e) - 1, (size_t)1 << e, ((size_t)1 << e) + 1};
      const struct snapccl_algo* first[3];
      for (int i = 0; i < 3; i++) {
        struct snapccl_coll x = prepared(c, kinds[k], counts[i], ncclBfloat16, ncclSum);
        first[i] = selected(c, &x, NULL);
      }
      /* Each still answers for itself (an entry evicted by a neighbour just misses). */
      for (int i = 0; i < 3; i++) {
        struct snapccl_coll x = prepared(c, kinds[k], counts[i], ncclBfloat16, ncclSum);
        cr_assert_eq(selected(c, &x, NULL), first[i]);
      }
    }
  /* A sweep through every count near the one-shot buffer's limit, where the choice moves
   * inside a size class: cached answers equal the full selection's on both sides. */
  const unsigned long long lim = snapccl_oneshot_slot_bytes(2) / 2; /* bfloat16 elements */
  for (int pass = 0; pass < 2; pass++)
    for (unsigned long long n = lim - 3; n <= lim + 3; n++) {
      struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, (size_t)n, ncclBfloat16, ncclSum);
      int hit;
      (void)selected(c, &x, &hit);
      if (pass) cr_assert(hit, "count %llu not remembered", n);
    }
  fake_comm_free(c);
}

Test(select_cache, settings_reload_invalidates) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, 4096, ncclFloat32, ncclSum);
  const struct snapccl_algo* a = selected(c, &x, NULL);
  const char* force = strcmp(a->name, "oneshot") ? "allreduce:oneshot" : "allreduce:twoshot";
  setenv("SNAPCCL_ALGO", force, 1);
  snapccl_env_reload();
  int hit;
  const struct snapccl_algo* b = selected(c, &x, &hit);
  cr_assert_not(hit);
  cr_assert_str_eq(b->name, strchr(force, ':') + 1);
  /* Handed to NVIDIA's library: the selector refuses, from the cache too. */
  setenv("SNAPCCL_ALGO", "allreduce:nccl", 1);
  snapccl_env_reload();
  const struct snapccl_algo* none = NULL;
  cr_assert_neq(snapccl_algo_select(&x, &none), ncclSuccess);
  cr_assert_neq(snapccl_algo_choose(&x, &none), ncclSuccess);
  cr_assert_neq(snapccl_algo_choose(&x, &none), ncclSuccess, "a remembered refusal");
  unsetenv("SNAPCCL_ALGO");
  snapccl_env_reload();
  cr_assert_eq(selected(c, &x, &hit), a);
  cr_assert_not(hit);
  fake_comm_free(c);
}

Test(select_cache, low_precision_setting_invalidates_only_its_communicator) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  struct snapccl_comm* d = fake_comm_new(2, 16);
  struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, 1 << 22, ncclBfloat16, ncclSum);
  struct snapccl_coll y = prepared(d, COLL_ALLREDUCE, 1 << 22, ncclBfloat16, ncclSum);
  const struct snapccl_algo* a = selected(c, &x, NULL);
  (void)selected(d, &y, NULL);
  cr_assert_str_neq(a->name, "lowprec");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_FP8, 0, 0), ncclSuccess);
  int hit;
  cr_assert_str_eq(selected(c, &x, &hit)->name, "lowprec");
  cr_assert_not(hit);
  (void)selected(d, &y, &hit);
  cr_assert(hit, "another communicator's choices stay");
  cr_assert_eq(snapcclCommSetLowPrecision((ncclComm_t)c, SNAPCCL_LOWPREC_ENV, 0, 0), ncclSuccess);
  cr_assert_eq(selected(c, &x, &hit), a);
  cr_assert_not(hit);
  fake_comm_free(c);
  fake_comm_free(d);
}

Test(select_cache, tuning_file_invalidates) {
  struct snapccl_comm* c = fake_comm_new(2, 16);
  struct snapccl_coll x = prepared(c, COLL_ALLREDUCE, 1024, ncclFloat32, ncclSum);
  const struct snapccl_algo* a = selected(c, &x, NULL);
  const char* other = strcmp(a->name, "twoshot") ? "twoshot" : "oneshot";
  char key[256], text[1024], why[400] = "";
  snapccl_tuning_key(key, sizeof key, "NVIDIA_H100", "nvlink", 2, 2, 1, 1);
  snprintf(text, sizeof text, "snapccl-tuning 1\ntopology %s\nrow allreduce 4 eager 0 1048576 %s %s=1 %s=50\nend\n",
           key, other, other, a->name);
  struct snapccl_tuning* t = snapccl_tuning_parse(text, strlen(text), key, why, sizeof why);
  cr_assert_not_null(t, "%s", why);
  /* As snapccl_tuning_setup installs one (tests/unit/test_tuning.c runs that one). */
  c->tuning = t;
  snapccl_select_cache_invalidate(c);
  int hit;
  cr_assert_str_eq(selected(c, &x, &hit)->name, other);
  cr_assert_not(hit);
  c->tuning = NULL;
  snapccl_select_cache_invalidate(c);
  free(t);
  fake_comm_free(c);
}
