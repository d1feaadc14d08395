/* The selector's crossover table, pinned: for 1, 2, 4 and 8 ranks on their own GPUs,
 * with and without NVIDIA's library underneath (then "nccl" is a candidate), and for two
 * ranks sharing one GPU in one process, every collective and dtype, the algorithm chosen at each power of two of bytes, as
 * snapcclQueryAlgorithm answers on a fake communicator. A change to a cost formula or
 * constant shows up here as a diff of tests/unit/golden/select_table.txt, not as a
 * surprise in a benchmark. After a deliberate change:
 *   SNAPCCL_GOLDEN_UPDATE=1 build/tests/unit_test_select_table   (then review the diff) */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "algos/select_table.h"
#include "comm.h"
#include "fake_comm.h"
#include "env.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/transport_impl.h"

#define GOLDEN SNAPCCL_SOURCE_ROOT "/tests/unit/golden/select_table.txt"

static void setup_env(void) {
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_LOWPREC");
  unsetenv("SNAPCCL_NVLS");
  unsetenv("SNAPCCL_BUFFSIZE");
  snapccl_env_reload();
}

static struct snapccl_comm* fake_new(int nranks, int with_nccl) {
  struct snapccl_comm* c = fake_comm_new(nranks, 64);
  c->nlocal_gpus = nranks;
  c->real_comm = with_nccl ? (ncclComm_t)(uintptr_t)0x1000 : NULL; /* asked about, never called */
  return c;
}

/* Two ranks sharing one GPU in one process, at that placement's block cap. */
static struct snapccl_comm* fake_shared_new(void) {
  struct snapccl_comm* c = fake_comm_new(2, 66);
  c->nlocal_gpus = 1;
  c->ranks_on_dev = c->ranks_on_dev_in_proc = 2;
  return c;
}


struct text {
  char* s;
  size_t n, cap;
};

static void append(void* arg, const char* line) {
  struct text* t = arg;
  size_t l = strlen(line);
  if (t->n + l + 2 > t->cap) {
    t->cap = 2 * (t->cap + l + 2);
    t->s = realloc(t->s, t->cap);
    cr_assert(t->s);
  }
  memcpy(t->s + t->n, line, l);
  t->n += l;
  t->s[t->n++] = '\n';
  t->s[t->n] = 0;
}

static char* read_all(const char* path) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* s = malloc((size_t)n + 1);
  cr_assert(s);
  cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
  s[n] = 0;
  fclose(f);
  return s;
}

TestSuite(select_table, .init = setup_env);

Test(select_table, golden) {
  static const int nranks[] = {1, 2, 4, 8};
  struct text t = {0};
  for (size_t r = 0; r < sizeof nranks / sizeof nranks[0]; r++)
    for (int with = 0; with < 2; with++) {
      char head[96];
      snprintf(head, sizeof head, "# %d rank(s) on their own GPUs, %s", nranks[r],
               with ? "NVIDIA's NCCL underneath" : "snapccl alone");
      append(&t, head);
      struct snapccl_comm* c = fake_new(nranks[r], with);
      snapccl_select_table(c, append, &t);
      fake_comm_free(c);
    }
  append(&t, "# 2 ranks sharing one GPU in one process, snapccl alone");
  struct snapccl_comm* shared = fake_shared_new();
  snapccl_select_table(shared, append, &t);
  fake_comm_free(shared);
  if (getenv("SNAPCCL_GOLDEN_UPDATE")) {
    FILE* f = fopen(GOLDEN, "wb");
    cr_assert(f);
    fputs(t.s, f);
    fclose(f);
  }
  char* want = read_all(GOLDEN);
  cr_assert(want, "no %s (SNAPCCL_GOLDEN_UPDATE=1 writes it)", GOLDEN);
  if (strcmp(want, t.s)) {
    /* The first line that differs, then the whole table to diff against the file. */
    const char *a = want, *b = t.s;
    while (*a && *a == *b) a++, b++;
    while (a > want && a[-1] != '\n') a--, b--;
    fprintf(stderr, "selection table now:\n%s", t.s);
    cr_assert_fail("the selection table changed; golden has\n  %.200s\nnow\n  %.200s", a, b);
  }
  free(want);
  free(t.s);
}

/* The table says what snapcclQueryAlgorithm says, cell by cell. */
Test(select_table, matches_query) {
  struct snapccl_comm* c = fake_new(2, 1);
  static const char* const colls[] = {"allreduce", "allgather", "reducescatter"};
  for (int k = 0; k < 3; k++) {
    char line[1024];
    snapccl_select_table_line(c, (enum snapccl_coll_kind)k, ncclFloat32, line, sizeof line);
    for (int l = 2; l <= 30; l++) {
      const char* name = NULL;
      cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, colls[k], (1ull << l) / 4, ncclFloat32, ncclSum, &name),
                   ncclSuccess);
      /* The range holding 2^l in the line names the same algorithm. */
      unsigned long long bytes = 1ull << l;
      int found = 0;
      for (char* p = strchr(line, ' '); p && !found; p = strchr(p + 1, ' ')) {
        char lo[16], hi[16], alg[64];
        if (sscanf(p, " %15[0-9KMG]-%15[0-9KMG]:%63s", lo, hi, alg) != 3) continue;
        unsigned long long vlo = strtoull(lo, NULL, 10), vhi = strtoull(hi, NULL, 10);
        vlo <<= strchr(lo, 'G') ? 30 : strchr(lo, 'M') ? 20 : strchr(lo, 'K') ? 10 : 0;
        vhi <<= strchr(hi, 'G') ? 30 : strchr(hi, 'M') ? 20 : strchr(hi, 'K') ? 10 : 0;
        if (bytes >= vlo && bytes <= vhi) {
          cr_assert_str_eq(alg, name, "%s at %llu B: table %s, query %s", colls[k], bytes, alg, name);
          found = 1;
        }
      }
      cr_assert(found, "%s: no range holds %llu B in \"%s\"", colls[k], bytes, line);
    }
  }
  fake_comm_free(c);
}

/* Two ranks sharing a GPU: where the measured times cross (the shared-GPU constants of
 * cost.c), Lamport for the smallest calls, the one-shot in the middle, the two-shot for
 * the rest. */
Test(select_table, shared_gpu_crossovers) {
  struct snapccl_comm* c = fake_shared_new();
  static const struct {
    size_t bytes;
    const char* want;
  } cases[] = {{64, "lamport"},       {8192, "lamport"},        {131072, "oneshot"},
               {262144, "oneshot"},   {524288, "oneshot"},      {1048576, "twoshot"},
               {8388608, "twoshot"},  {268435456, "twoshot"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char* name = NULL;
    cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, "allreduce", cases[i].bytes / 4, ncclFloat32,
                                       ncclSum, &name),
                 ncclSuccess);
    cr_assert_str_eq(name, cases[i].want, "%zu B: %s, want %s", cases[i].bytes, name, cases[i].want);
  }
  fake_comm_free(c);
}
