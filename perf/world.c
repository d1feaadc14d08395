/* perf_world_*: MPI when built with PERF_MPI, else a world of one process. */
#include "world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#ifdef PERF_MPI
#include <mpi.h>

static int g_rank, g_size, g_local_rank, g_local_size;

#define PERF_MPICHECK(call)                                                  \
  do {                                                                       \
    int perf_mpi_rc_ = (call);                                               \
    if (perf_mpi_rc_ != MPI_SUCCESS) {                                       \
      char perf_mpi_msg_[MPI_MAX_ERROR_STRING];                              \
      int perf_mpi_len_ = 0;                                                 \
      MPI_Error_string(perf_mpi_rc_, perf_mpi_msg_, &perf_mpi_len_);         \
      perf_report("MPI failure %s:%d '%s': %s", __FILE__, __LINE__, #call,   \
                  perf_mpi_msg_);                                            \
      return -1;                                                             \
    }                                                                        \
  } while (0)

int perf_world_init(int* argc, char*** argv, int threads_needed) {
  int provided = 0;
  MPI_Comm local;
  /* SERIALIZED suffices: several threads may call MPI, never two at once (team.c lets
   * only the last thread to arrive talk to the other processes). */
  int wanted = threads_needed ? MPI_THREAD_SERIALIZED : MPI_THREAD_SINGLE;
  PERF_MPICHECK(MPI_Init_thread(argc, argv, wanted, &provided));
  if (provided < wanted)
    perf_report("warning: MPI provides thread level %d, %d was asked for", provided, wanted);
  /* Errors come back as codes, checked and reported with their text. */
  PERF_MPICHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  PERF_MPICHECK(MPI_Comm_rank(MPI_COMM_WORLD, &g_rank));
  PERF_MPICHECK(MPI_Comm_size(MPI_COMM_WORLD, &g_size));
  /* The processes sharing this host: their order picks the GPUs (local rank). */
  PERF_MPICHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank,
                                    MPI_INFO_NULL, &local));
  PERF_MPICHECK(MPI_Comm_rank(local, &g_local_rank));
  PERF_MPICHECK(MPI_Comm_size(local, &g_local_size));
  PERF_MPICHECK(MPI_Comm_free(&local));
  return 0;
}

void perf_world_finalize(void) { MPI_Finalize(); }
void perf_world_abort(int code) { MPI_Abort(MPI_COMM_WORLD, code); exit(code); }
int perf_world_rank(void) { return g_rank; }
int perf_world_size(void) { return g_size; }
int perf_world_local_rank(void) { return g_local_rank; }
int perf_world_local_size(void) { return g_local_size; }
int perf_world_is_mpi(void) { return 1; }

int perf_world_barrier(void) {
  PERF_MPICHECK(MPI_Barrier(MPI_COMM_WORLD));
  return 0;
}

int perf_world_bcast(void* buf, size_t len) {
  PERF_MPICHECK(MPI_Bcast(buf, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD));
  return 0;
}

static MPI_Op mpi_op(int red) {
  return red == PERF_RED_MIN ? MPI_MIN : red == PERF_RED_MAX ? MPI_MAX : MPI_SUM;
}

int perf_world_allreduce_double(double* v, int red) {
  PERF_MPICHECK(MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_DOUBLE, mpi_op(red), MPI_COMM_WORLD));
  return 0;
}

int perf_world_allreduce_i64(int64_t* v, int red) {
  PERF_MPICHECK(MPI_Allreduce(MPI_IN_PLACE, v, 1, MPI_INT64_T, mpi_op(red), MPI_COMM_WORLD));
  return 0;
}

int perf_world_gather(const void* in, size_t len, void* out) {
  PERF_MPICHECK(MPI_Gather(in, (int)len, MPI_BYTE, out, (int)len, MPI_BYTE, 0, MPI_COMM_WORLD));
  return 0;
}

#else /* one process */

int perf_world_init(int* argc, char*** argv, int threads_needed) {
  (void)argc;
  (void)argv;
  (void)threads_needed;
  return 0;
}
void perf_world_finalize(void) {}
void perf_world_abort(int code) { exit(code); }
int perf_world_rank(void) { return 0; }
int perf_world_size(void) { return 1; }
int perf_world_local_rank(void) { return 0; }
int perf_world_local_size(void) { return 1; }
int perf_world_is_mpi(void) { return 0; }
int perf_world_barrier(void) { return 0; }
int perf_world_bcast(void* buf, size_t len) {
  (void)buf;
  (void)len;
  return 0;
}
int perf_world_allreduce_double(double* v, int red) {
  (void)v;
  (void)red;
  return 0;
}
int perf_world_allreduce_i64(int64_t* v, int red) {
  (void)v;
  (void)red;
  return 0;
}
int perf_world_gather(const void* in, size_t len, void* out) {
  memcpy(out, in, len);
  return 0;
}

#endif
