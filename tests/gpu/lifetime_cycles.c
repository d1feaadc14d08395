/* Lifetime: many init/destroy cycles of a two-rank communicator on one GPU
 * (SNAPCCL_SHARED_GPU=1), each with a checked all-reduce, and what the process holds
 * (GPU memory, resident memory, descriptors, threads) back at its start values at the
 * end. The start is measured after cycle 1, once CUDA's lazy allocations are made.
 *
 *   gpu_lifetime_cycles [CYCLES] [inproc|procs]       (defaults: 1000, inproc)
 *
 * inproc: both ranks in this process, through ncclCommInitAll. procs: two forked
 * processes, one rank each, through ncclGetUniqueId (rank 0) and ncclCommInitRank.
 * Exit status 0 when every cycle passed and the figures came back, 77 without a GPU. */
#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "lifetime.h"

#define COUNT 4096

static void env_defaults(void) {
  setenv("SNAPCCL_SHARED_GPU", "1", 1);
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 0); /* also bounds how long ended roots linger */
  setenv("SNAPCCL_TIMEOUT_MS", "15000", 0);
}

static int cycles_inproc(int cycles) {
  char err[T_ERRLEN];
  const int devs[2] = {0, 0}, ranks[2] = {0, 1};
  struct lt_bufs bufs[2];
  cudaStream_t streams[2];
  if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&streams[0]) != cudaSuccess ||
      cudaStreamCreate(&streams[1]) != cudaSuccess || lt_bufs_alloc(&bufs[0], COUNT, err) ||
      lt_bufs_alloc(&bufs[1], COUNT, err)) {
    fprintf(stderr, "FAIL setup: %s\n", err);
    return 1;
  }
  struct lt_usage before, start, end;
  if (lt_usage_now(&before, err)) goto fail;
  lt_usage_print("before cycle 1", &before);
  double t0 = t_now();
  for (int c = 1; c <= cycles; c++) {
    ncclComm_t comms[2] = {NULL, NULL};
    ncclResult_t r = ncclCommInitAll(comms, 2, devs);
    if (r != ncclSuccess) {
      snprintf(err, sizeof err, "cycle %d: ncclCommInitAll: %s (%s)", c, ncclGetErrorString(r),
               ncclGetLastError(NULL));
      goto fail;
    }
    if (lt_allreduce_check(comms, streams, bufs, ranks, 2, 2, 30.0, err)) goto fail;
    for (int k = 0; k < 2; k++)
      if ((r = ncclCommDestroy(comms[k])) != ncclSuccess) {
        snprintf(err, sizeof err, "cycle %d: ncclCommDestroy: %s", c, ncclGetErrorString(r));
        goto fail;
      }
    if (c == 1) {
      lt_settle();
      if (lt_usage_now(&start, err)) goto fail;
      lt_usage_print("start (after cycle 1)", &start);
    }
    if (c % 100 == 0) printf("cycle %d: %.1f ms per cycle so far\n", c, (t_now() - t0) * 1e3 / c);
  }
  lt_settle();
  if (lt_usage_now(&end, err)) goto fail;
  lt_usage_print("end", &end);
  printf("%d cycles in one process (ncclCommInitAll, 2 ranks on GPU 0): %.1f ms each\n", cycles,
         (t_now() - t0) * 1e3 / cycles);
  return lt_usage_compare(&start, &end, "inproc") ? 1 : 0;
fail:
  fprintf(stderr, "FAIL %s\n", err);
  return 1;
}

/* ---- two processes ---- */

static int full_io(int fd, void* p, size_t n, int out) {
  for (size_t done = 0; done < n;) {
    ssize_t k = out ? write(fd, (char*)p + done, n - done) : read(fd, (char*)p + done, n - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    done += (size_t)k;
  }
  return 0;
}

/* Both ranks reach this point before either goes on. */
static int barrier(int fd) {
  char c = 'b';
  return full_io(fd, &c, 1, 1) || full_io(fd, &c, 1, 0) ? -1 : 0;
}

static int rank_cycles(int rank, int fd, int cycles) {
  char err[T_ERRLEN];
  struct lt_bufs bufs;
  cudaStream_t stream;
  char label[64];
  if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&stream) != cudaSuccess ||
      lt_bufs_alloc(&bufs, COUNT, err)) {
    fprintf(stderr, "FAIL rank %d setup: %s\n", rank, err);
    return 1;
  }
  struct lt_usage start, end;
  double t0 = t_now();
  for (int c = 1; c <= cycles; c++) {
    ncclUniqueId id;
    ncclResult_t r = ncclSuccess;
    if (rank == 0 && (r = ncclGetUniqueId(&id)) == ncclSuccess && full_io(fd, &id, sizeof id, 1))
      r = ncclSystemError;
    if (rank == 1 && full_io(fd, &id, sizeof id, 0)) r = ncclSystemError;
    ncclComm_t comm = NULL;
    if (r == ncclSuccess) r = ncclCommInitRank(&comm, 2, id, rank);
    if (r != ncclSuccess) {
      snprintf(err, sizeof err, "cycle %d: init: %s (%s)", c, ncclGetErrorString(r), ncclGetLastError(NULL));
      goto fail;
    }
    if (lt_allreduce_check(&comm, &stream, &bufs, &rank, 1, 2, 30.0, err)) goto fail;
    if ((r = ncclCommDestroy(comm)) != ncclSuccess) {
      snprintf(err, sizeof err, "cycle %d: ncclCommDestroy: %s", c, ncclGetErrorString(r));
      goto fail;
    }
    if (c == 1) { /* both ranks measure the device in the same state */
      lt_settle();
      if (barrier(fd) || lt_usage_now(&start, err) || barrier(fd)) goto fail;
      snprintf(label, sizeof label, "rank %d start (after cycle 1)", rank);
      lt_usage_print(label, &start);
    }
    if (rank == 0 && c % 100 == 0) printf("cycle %d: %.1f ms per cycle so far\n", c, (t_now() - t0) * 1e3 / c);
  }
  lt_settle();
  if (barrier(fd) || lt_usage_now(&end, err) || barrier(fd)) goto fail;
  snprintf(label, sizeof label, "rank %d end", rank);
  lt_usage_print(label, &end);
  snprintf(label, sizeof label, "procs, rank %d", rank);
  if (rank == 0)
    printf("%d cycles across 2 processes (ncclCommInitRank, both on GPU 0): %.1f ms each\n",
           cycles, (t_now() - t0) * 1e3 / cycles);
  return lt_usage_compare(&start, &end, label) ? 1 : 0;
fail:
  fprintf(stderr, "FAIL rank %d: %s\n", rank, err);
  return 1;
}

static int cycles_procs(int cycles) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 1;
  fflush(NULL);
  pid_t pid[2];
  for (int r = 0; r < 2; r++) {
    pid[r] = fork();
    if (pid[r] < 0) return 1;
    if (pid[r] == 0) {
      close(sv[1 - r]);
      int rc = rank_cycles(r, sv[r], cycles);
      fflush(NULL); /* _exit does not */
      _exit(rc);
    }
  }
  close(sv[0]);
  close(sv[1]);
  int rc = 0;
  for (int r = 0; r < 2; r++) {
    int st = 0;
    while (waitpid(pid[r], &st, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  }
  return rc;
}

int main(int argc, char** argv) {
  int cycles = argc > 1 ? atoi(argv[1]) : 1000;
  const char* mode = argc > 2 ? argv[2] : "inproc";
  if (cycles < 2 || (strcmp(mode, "inproc") && strcmp(mode, "procs"))) {
    fprintf(stderr, "usage: %s [CYCLES>=2] [inproc|procs]\n", argv[0]);
    return 2;
  }
  env_defaults();
  /* This process forks ranks in procs mode: it asks for GPUs from a child. */
  if (t_gpu_count_forked() <= 0) {
    printf("skip: no GPU\n");
    return LT_SKIP;
  }
  int rc = !strcmp(mode, "inproc") ? cycles_inproc(cycles) : cycles_procs(cycles);
  printf("%s\n", rc ? "FAIL" : "PASS");
  return rc;
}
