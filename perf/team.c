/* Thread team with cross-process reductions (team.h).
 *
 * Each collective operation is a round: threads deposit their value and wait; the last
 * to arrive combines the process's values, does the one MPI call for the process (so
 * MPI is only ever called by one thread at a time), publishes the result and opens
 * the next round. A result stays valid until every thread has left the round, because
 * the next round cannot complete before they all arrive in it. */
#include "team.h"

#include <string.h>

#include "check.h"
#include "world.h"

int perf_team_init(struct perf_team* t, int nthreads) {
  memset(t, 0, sizeof(*t));
  if (nthreads < 1 || nthreads > PERF_MAX_THREADS) {
    perf_report("thread count %d out of range 1..%d", nthreads, PERF_MAX_THREADS);
    return -1;
  }
  t->nthreads = nthreads;
  if (pthread_mutex_init(&t->mu, NULL) != 0 || pthread_cond_init(&t->cv, NULL) != 0) {
    perf_report("pthread mutex/cond init failed");
    return -1;
  }
  return 0;
}

void perf_team_destroy(struct perf_team* t) {
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
}

double perf_combine_double(const double* v, int n, int mode) {
  double acc = v[0];
  int i;
  if (mode == PERF_AVG_RANK0) return v[0];
  for (i = 1; i < n; i++) {
    if (mode == PERF_AVG_MIN) acc = v[i] < acc ? v[i] : acc;
    else if (mode == PERF_AVG_MAX) acc = v[i] > acc ? v[i] : acc;
    else acc += v[i];
  }
  return acc;
}

static int world_red(int mode) {
  return mode == PERF_AVG_MIN ? PERF_RED_MIN : mode == PERF_AVG_MAX ? PERF_RED_MAX : PERF_RED_SUM;
}

/* One round. kind: 0 barrier, 1 double, 2 int64. */
static int team_round(struct perf_team* t, int thread, int kind, double* dv, int64_t* iv,
                      int mode) {
  int rc = 0;
  pthread_mutex_lock(&t->mu);
  if (kind == 1) t->dvals[thread] = *dv;
  if (kind == 2) t->ivals[thread] = *iv;
  if (++t->arrived == t->nthreads) {
    /* Last to arrive: combine, talk to the other processes, release everyone. */
    if (kind == 0) {
      rc = perf_world_barrier();
    } else if (kind == 1) {
      double r = perf_combine_double(t->dvals, t->nthreads, mode);
      if (mode != PERF_AVG_RANK0) rc = perf_world_allreduce_double(&r, world_red(mode));
      if (mode == PERF_AVG_MEAN) r /= (double)t->nthreads * (double)perf_world_size();
      t->dresult = r;
    } else {
      int64_t r = t->ivals[0];
      int i;
      for (i = 1; i < t->nthreads && mode != PERF_AVG_RANK0; i++) {
        if (mode == PERF_AVG_MIN) r = t->ivals[i] < r ? t->ivals[i] : r;
        else if (mode == PERF_AVG_MAX) r = t->ivals[i] > r ? t->ivals[i] : r;
        else r += t->ivals[i];
      }
      if (mode != PERF_AVG_RANK0) rc = perf_world_allreduce_i64(&r, world_red(mode));
      if (mode == PERF_AVG_MEAN) r /= (int64_t)t->nthreads * perf_world_size();
      t->iresult = r;
    }
    if (rc != 0) t->failed = 1;
    t->arrived = 0;
    t->generation++;
    pthread_cond_broadcast(&t->cv);
  } else {
    unsigned long gen = t->generation;
    while (gen == t->generation) pthread_cond_wait(&t->cv, &t->mu);
  }
  if (kind == 1) *dv = t->dresult;
  if (kind == 2) *iv = t->iresult;
  rc = t->failed ? -1 : 0;
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int perf_team_barrier(struct perf_team* t, int thread) {
  return team_round(t, thread, 0, NULL, NULL, 0);
}

int perf_team_allreduce_double(struct perf_team* t, int thread, double* v, int mode) {
  return team_round(t, thread, 1, v, NULL, mode);
}

int perf_team_allreduce_i64(struct perf_team* t, int thread, int64_t* v, int mode) {
  return team_round(t, thread, 2, NULL, v, mode);
}
