/* perf_world_selftest: the cross-process pieces (world.c) and the thread team on top of
 * them (team.c), without a GPU. Run under mpirun for the MPI build
 * (mpirun -np 3 perf_world_mpi_selftest), or alone for the one-process build. Each
 * process runs two threads, so the team's reductions cross both threads and processes. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "team.h"
#include "world.h"

enum { THREADS = 2 };

static struct perf_team team;
static int failures[THREADS];

#define EXPECT(t, cond, ...)                                                  \
  do {                                                                        \
    if (!(cond)) {                                                            \
      failures[t]++;                                                          \
      fprintf(stderr, "FAIL rank %d thread %d %s:%d: ", perf_world_rank(), t, \
              __FILE__, __LINE__);                                            \
      fprintf(stderr, __VA_ARGS__);                                           \
      fputc('\n', stderr);                                                    \
    }                                                                         \
  } while (0)

static void* thread_main(void* arg) {
  const int t = *(const int*)arg;
  const int p = perf_world_rank(), np = perf_world_size();
  const int me = p * THREADS + t, all = np * THREADS; /* global thread index, count */
  double d;
  int64_t i;
  int k;
  for (k = 0; k < 50; k++) { /* repeated rounds: results must not leak between them */
    d = me + k;
    EXPECT(t, perf_team_allreduce_double(&team, t, &d, PERF_AVG_MEAN) == 0, "mean");
    EXPECT(t, d == (all - 1) / 2.0 + k, "mean %g", d);
    d = me + k;
    EXPECT(t, perf_team_allreduce_double(&team, t, &d, PERF_AVG_MIN) == 0 && d == k, "min %g", d);
    d = me + k;
    EXPECT(t, perf_team_allreduce_double(&team, t, &d, PERF_AVG_MAX) == 0 && d == all - 1 + k,
           "max %g", d);
    d = me + k;
    EXPECT(t, perf_team_allreduce_double(&team, t, &d, PERF_AVG_RANK0) == 0 && d == p * THREADS + k,
           "rank0 %g", d); /* each process: its own thread 0 */
    i = me;
    EXPECT(t, perf_team_allreduce_i64(&team, t, &i, PERF_AVG_SUM) == 0 &&
                  i == (int64_t)all * (all - 1) / 2, "sum %lld", (long long)i);
    EXPECT(t, perf_team_barrier(&team, t) == 0, "barrier");
  }
  return NULL;
}

int main(int argc, char** argv) {
  pthread_t tid[THREADS];
  int ids[THREADS], t, total = 0;
  char id[128], line[64], *lines = NULL;
  if (perf_world_init(&argc, &argv, 1) != 0) return 1;
  /* Broadcast from process 0. */
  memset(id, perf_world_rank() == 0 ? 0x5a : 0, sizeof(id));
  if (perf_world_bcast(id, sizeof(id)) != 0) return 1;
  for (t = 0; t < (int)sizeof(id); t++) total += id[t] != 0x5a;
  if (total) fprintf(stderr, "FAIL rank %d: broadcast\n", perf_world_rank());
  /* Gather in rank order. */
  snprintf(line, sizeof(line), "process %d", perf_world_rank());
  if (perf_world_rank() == 0) lines = calloc((size_t)perf_world_size(), sizeof(line));
  if (perf_world_gather(line, sizeof(line), lines) != 0) return 1;
  if (lines) {
    for (t = 0; t < perf_world_size(); t++) {
      char want[64];
      snprintf(want, sizeof(want), "process %d", t);
      if (strcmp(lines + (size_t)t * sizeof(line), want) != 0) {
        fprintf(stderr, "FAIL gather slot %d: '%s'\n", t, lines + (size_t)t * sizeof(line));
        total++;
      }
    }
    free(lines);
  }
  if (perf_world_local_rank() < 0 || perf_world_local_rank() >= perf_world_local_size()) total++;
  if (perf_team_init(&team, THREADS) != 0) return 1;
  for (t = 0; t < THREADS; t++) {
    ids[t] = t;
    pthread_create(&tid[t], NULL, thread_main, &ids[t]);
  }
  for (t = 0; t < THREADS; t++) {
    pthread_join(tid[t], NULL);
    total += failures[t];
  }
  perf_team_destroy(&team);
  {
    int64_t all = total;
    perf_world_allreduce_i64(&all, PERF_RED_SUM);
    if (perf_world_rank() == 0)
      printf("perf_world_selftest: %d process(es) x %d threads: %s\n", perf_world_size(), THREADS,
             all ? "FAILED" : "all checks passed");
    total = (int)all;
  }
  perf_world_finalize();
  return total ? 1 : 0;
}
