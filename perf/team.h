/* The threads of one process (-t), and through world.h all processes: barriers and
 * the few reductions the timing loop needs (times, wrong-element counts). */
#ifndef PERF_TEAM_H_
#define PERF_TEAM_H_

#include <pthread.h>
#include <stdint.h>

/* How a per-rank value combines over the team (nccl-tests' -a, plus a sum). */
enum { PERF_AVG_RANK0 = 0, PERF_AVG_MEAN = 1, PERF_AVG_MIN = 2, PERF_AVG_MAX = 3,
       PERF_AVG_SUM = 4 };

#define PERF_MAX_THREADS 1024

struct perf_team {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int nthreads;
  int arrived;
  unsigned long generation;
  int failed;                     /* a world call failed: every waiter returns -1 */
  double dvals[PERF_MAX_THREADS]; /* this round's per-thread inputs */
  int64_t ivals[PERF_MAX_THREADS];
  double dresult;
  int64_t iresult;
};

int perf_team_init(struct perf_team* t, int nthreads);
void perf_team_destroy(struct perf_team* t);

/* Every thread of every process waits for all the others. */
int perf_team_barrier(struct perf_team* t, int thread);
/* Combines v over all threads of all processes (mode PERF_AVG_*); every caller gets the
 * result. RANK0 gives each process its own thread 0's value, without talking to the
 * others: only process 0 prints, so what is shown is rank 0's (as in nccl-tests). */
int perf_team_allreduce_double(struct perf_team* t, int thread, double* v, int mode);
int perf_team_allreduce_i64(struct perf_team* t, int thread, int64_t* v, int mode);

/* The in-process combination step (tested by the selftest): RANK0 takes v[0], MIN and
 * MAX the extreme, MEAN and SUM the sum (MEAN divides later, by the world's count). */
double perf_combine_double(const double* v, int n, int mode);

#endif
