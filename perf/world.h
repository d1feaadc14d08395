/* The processes of a run: one (plain build) or mpirun's (PERF_MPI build). Everything
 * the perf code needs from MPI is here, so the rest compiles once for both builds. */
#ifndef PERF_WORLD_H_
#define PERF_WORLD_H_

#include <stddef.h>
#include <stdint.h>

enum { PERF_RED_SUM = 0, PERF_RED_MIN = 1, PERF_RED_MAX = 2 };

/* threads_needed: MPI calls will come from several threads (one at a time). */
int perf_world_init(int* argc, char*** argv, int threads_needed);
void perf_world_finalize(void);
/* Ends every process of the run (after a failure on this one). */
void perf_world_abort(int code);

int perf_world_rank(void);
int perf_world_size(void);
/* This process's index among the run's processes on the same host, and their number. */
int perf_world_local_rank(void);
int perf_world_local_size(void);
/* Whether this build talks MPI (for messages). */
int perf_world_is_mpi(void);

int perf_world_barrier(void);
/* From process 0 to all. */
int perf_world_bcast(void* buf, size_t len);
int perf_world_allreduce_double(double* v, int red);
int perf_world_allreduce_i64(int64_t* v, int red);
/* Process 0 receives every process's len bytes, in rank order, into out (which only
 * process 0 needs to provide, size * len bytes). */
int perf_world_gather(const void* in, size_t len, void* out);

#endif
