/* The crossover table: for each collective and dtype, the sizes (powers of two, 1 B to
 * 1 GiB) at which each choice holds, as snapcclQueryAlgorithm would answer on this
 * communicator. Printed at INFO at init; tests pin it (tests/unit/test_select_table.c). */
#include "algos/select_table.h"

#include <stdio.h>
#include <string.h>

#include "algos/algo.h"
#include "coll.h"
#include "comm.h"

/* One dtype of each size and kind the algorithms tell apart (Lamport: floats only). */
static const ncclDataType_t dtypes[] = {ncclInt8, ncclFloat8e4m3, ncclFloat16, ncclBfloat16,
                                        ncclInt32, ncclFloat32, ncclInt64, ncclFloat64};
#define MAX_LOG2 30

static void size_text(unsigned long long b, char* out, size_t len) {
  if (b >= (1ull << 30)) snprintf(out, len, "%lluG", b >> 30);
  else if (b >= (1ull << 20)) snprintf(out, len, "%lluM", b >> 20);
  else if (b >= (1ull << 10)) snprintf(out, len, "%lluK", b >> 10);
  else snprintf(out, len, "%llu", b);
}

static const char* answer(struct snapccl_comm* comm, enum snapccl_coll_kind kind, size_t count,
                          ncclDataType_t dt) {
  static char dummy; /* selection never depends on buffer addresses */
  struct snapccl_coll c;
  const char* name = NULL;
  if (!snapccl_coll_prepare_quiet(kind, &dummy, &dummy, count, dt, ncclSum, comm, NULL, &c) ||
      snapccl_algo_query(&c, &name) != ncclSuccess)
    return "-";
  return name;
}

void snapccl_select_table_line(struct snapccl_comm* comm, enum snapccl_coll_kind kind,
                               ncclDataType_t dt, char* out, size_t len) {
  const size_t es = snapccl_dtype_size(dt);
  size_t n = (size_t)snprintf(out, len, "%-13s %-9s", snapccl_coll_name(kind), snapccl_dtype_name(dt));
  const char* cur = NULL;
  unsigned long long from = 0, last = 0;
  for (int l = 0; l <= MAX_LOG2 + 1 && n < len; l++) {
    unsigned long long bytes = 1ull << l;
    const char* name = l <= MAX_LOG2 ? (bytes < es ? NULL : answer(comm, kind, bytes / es, dt)) : "";
    if (!name) continue;
    if (cur && strcmp(name, cur)) { /* the range [from, last] ends */
      char a[16], b[16];
      size_text(from, a, sizeof a);
      size_text(last, b, sizeof b);
      n += (size_t)snprintf(out + n, len - n, " %s-%s:%s", a, b, cur);
    }
    if (!cur || strcmp(name, cur)) from = bytes, cur = name;
    last = bytes;
  }
}

/* "allreduce     algorithms: lamport oneshot ... lowprec(opt-in) x_twin(named-only)". */
static void algorithms_line(enum snapccl_coll_kind kind, char* out, size_t len) {
  size_t n = (size_t)snprintf(out, len, "%-13s algorithms:", snapccl_coll_name(kind));
  for (int i = 0; i < snapccl_algo_count() && n < len; i++) {
    const struct snapccl_algo* a = snapccl_algo_at(i);
    if (a->kind != kind) continue;
    n += (size_t)snprintf(out + n, len - n, " %s%s", a->name,
                          a->only_when_named ? "(named-only)" : a->opt_in ? "(opt-in)" : "");
  }
}

void snapccl_select_table(struct snapccl_comm* comm, void (*emit)(void* arg, const char* line),
                          void* arg) {
  char line[1024];
  for (int k = 0; k < COLL_NKINDS; k++) {
    algorithms_line((enum snapccl_coll_kind)k, line, sizeof line);
    emit(arg, line);
  }
  for (int k = 0; k < COLL_NKINDS; k++)
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
      snapccl_select_table_line(comm, (enum snapccl_coll_kind)k, dtypes[d], line, sizeof line);
      emit(arg, line);
    }
}
