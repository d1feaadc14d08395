/* The selection rule every algorithm table shares (src/algos/pick.h), on a synthetic
 * table: the properties an algorithm carries (opt-in, only when named), the order of
 * costs and ties, SNAPCCL_ALGO's name, and the reasons given when nothing runs. The
 * collectives' and the fused call's own tables are tested through their selectors in
 * test_lowprec_settings.c, test_nvls_gate.c and test_fused.c. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "algos/pick.h"

struct row {
  const char* name;
  unsigned flags;
  int serves;          /* 0: another collective's entry */
  const char* refusal; /* NULL: can run */
  double cost;
};

struct table {
  const struct row* rows;
  int n;
};

static int entry(const struct snapccl_menu* m, int i, const char** name, unsigned* flags) {
  const struct table* t = m->call;
  *name = t->rows[i].name;
  *flags = t->rows[i].flags;
  return t->rows[i].serves;
}
static const char* can_run(const struct snapccl_menu* m, int i, char* buf, size_t len) {
  const struct table* t = m->call;
  if (!t->rows[i].refusal) return NULL;
  snprintf(buf, len, "%s", t->rows[i].refusal); /* written into buf, which the rule reuses */
  return buf;
}
static double cost_us(const struct snapccl_menu* m, int i) {
  const struct table* t = m->call;
  return t->rows[i].cost;
}

static struct snapccl_pick pick(const struct row* rows, int n, const char* forced) {
  const struct table t = {rows, n};
  const struct snapccl_menu menu = {.key = "allreduce", .noun = "allreduce", .kind = "an algorithm",
                                    .none = "no algorithm for this collective", .count = n,
                                    .call = &t, .entry = entry, .can_run = can_run,
                                    .cost_us = cost_us};
  struct snapccl_pick p;
  memset(&p, 0x5a, sizeof p); /* poisoned: every field must be written */
  snapccl_pick(&menu, forced, &p);
  return p;
}

#define N(rows) ((int)(sizeof(rows) / sizeof((rows)[0])))

Test(pick, cheapest_then_earlier) {
  const struct row rows[] = {{"a", 0, 1, NULL, 5.0}, {"b", 0, 1, NULL, 2.0}, {"c", 0, 1, NULL, 2.0},
                             {"d", 0, 0, NULL, 0.5} /* another collective's */};
  struct snapccl_pick p = pick(rows, N(rows), NULL);
  cr_assert_eq(p.index, 1, "the cheapest, the earlier of a tie; other collectives' entries ignored");
  cr_assert_eq(p.forced, 0);
}

Test(pick, named_only_never_by_cost) {
  const struct row rows[] = {{"plain", 0, 1, NULL, 5.0}, {"twin", PICK_NAMED_ONLY, 1, NULL, 1.0}};
  cr_assert_eq(pick(rows, N(rows), NULL).index, 0, "a cheaper named-only entry is not asked");
  struct snapccl_pick p = pick(rows, N(rows), "twin");
  cr_assert_eq(p.index, 1, "named, it runs");
  cr_assert_eq(p.forced, 1);
  /* Alone, and not named: nothing runs, and its reason does not count. */
  const struct row only[] = {{"twin", PICK_NAMED_ONLY, 1, "the twin's reason", 1.0}};
  p = pick(only, N(only), NULL);
  cr_assert_eq(p.index, -1);
  cr_assert_str_eq(p.why, "snapccl cannot run this allreduce: no algorithm for this collective");
}

Test(pick, opt_in_wins_when_it_runs) {
  const struct row rows[] = {{"cheap", 0, 1, NULL, 0.0}, {"lossy", PICK_OPT_IN, 1, NULL, 100.0}};
  cr_assert_eq(pick(rows, N(rows), NULL).index, 1, "enabled and able: over any estimate");
  const struct row off[] = {{"cheap", 0, 1, NULL, 3.0}, {"lossy", PICK_OPT_IN, 1, "off", 0.0}};
  cr_assert_eq(pick(off, N(off), NULL).index, 0, "declining, it is passed over");
}

Test(pick, first_refusal_is_the_reason) {
  const struct row rows[] = {{"x", 0, 0, "not mine", 1.0}, {"a", 0, 1, "no transport", 1.0},
                             {"b", 0, 1, "too large", 1.0}};
  struct snapccl_pick p = pick(rows, N(rows), NULL);
  cr_assert_eq(p.index, -1);
  cr_assert_str_eq(p.why, "snapccl cannot run this allreduce: no transport");
}

Test(pick, forced) {
  const struct row rows[] = {{"a", 0, 1, NULL, 1.0}, {"b", 0, 1, "too large", 9.0},
                             {"c", 0, 0, NULL, 1.0}, {"d", PICK_OPT_IN, 1, "off", 0.0}};
  struct snapccl_pick p = pick(rows, N(rows), "b");
  cr_assert_eq(p.index, -1, "a forced entry that cannot run is not replaced by another");
  cr_assert_eq(p.forced, 1);
  cr_assert_str_eq(p.why, "SNAPCCL_ALGO forces allreduce:b, which cannot run this call: too large");
  p = pick(rows, N(rows), "d");
  cr_assert_str_eq(p.why, "SNAPCCL_ALGO forces allreduce:d, which cannot run this call: off");
  p = pick(rows, N(rows), "c");
  cr_assert_eq(p.index, -1, "another collective's entry is not this one's");
  cr_assert_str_eq(p.why, "SNAPCCL_ALGO names allreduce:c, which is not an algorithm of snapccl "
                          "(a, b, d, nccl)");
}
