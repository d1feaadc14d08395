/* Lifetime: many communicators alive at once, as PyTorch makes them (one world, then a
 * communicator per process group, split from it), two ranks on one GPU
 * (SNAPCCL_SHARED_GPU=1): every one usable (a checked all-reduce each, all alive at
 * once), the GPU memory each holds, and everything given back when they are destroyed.
 *
 *   gpu_lifetime_splits [COMMS]          (default 64)
 *
 * The world comes from ncclCommInitAll (after a first one, made and destroyed, so that
 * the figures do not count what CUDA loads once); each rank's thread splits it COMMS times
 * (ncclCommSplit is collective, so the two ranks split from two threads, as two
 * processes would). Exit status 0 when all passed, 77 without a GPU. */
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "lifetime.h"

#define COUNT 4096
#define MAX_COMMS 1024

struct splitter {
  ncclComm_t world;
  int rank, n;
  ncclComm_t* out;
  ncclResult_t res;
  char err[T_ERRLEN];
};

static void* split_main(void* p) {
  struct splitter* s = p;
  cudaSetDevice(0);
  for (int k = 0; k < s->n; k++) {
    s->res = ncclCommSplit(s->world, 0, s->rank, &s->out[k], NULL);
    if (s->res != ncclSuccess) {
      snprintf(s->err, sizeof s->err, "split %d of rank %d: %s (%s)", k, s->rank,
               ncclGetErrorString(s->res), ncclGetLastError(NULL));
      return NULL;
    }
  }
  return NULL;
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 64;
  if (n < 1 || n > MAX_COMMS) {
    fprintf(stderr, "usage: %s [COMMS 1..%d]\n", argv[0], MAX_COMMS);
    return 2;
  }
  setenv("SNAPCCL_SHARED_GPU", "1", 1);
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 0);
  setenv("SNAPCCL_TIMEOUT_MS", "15000", 0);
  if (t_gpu_count() <= 0) {
    printf("skip: no GPU\n");
    return LT_SKIP;
  }
  char err[T_ERRLEN];
  const int devs[2] = {0, 0}, ranks[2] = {0, 1};
  static ncclComm_t children[2][MAX_COMMS];
  struct lt_bufs bufs[2];
  cudaStream_t streams[2];
  ncclComm_t world[2];
  struct lt_usage base, with_world, with_all, after;
  if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&streams[0]) != cudaSuccess ||
      cudaStreamCreate(&streams[1]) != cudaSuccess || lt_bufs_alloc(&bufs[0], COUNT, err) ||
      lt_bufs_alloc(&bufs[1], COUNT, err))
    goto fail;
  /* A first world, made and destroyed: CUDA loads the kernels and keeps them. */
  ncclResult_t r = ncclCommInitAll(world, 2, devs);
  if (r != ncclSuccess || lt_allreduce_check(world, streams, bufs, ranks, 2, 2, 30.0, err)) {
    if (r != ncclSuccess) snprintf(err, sizeof err, "ncclCommInitAll: %s (%s)", ncclGetErrorString(r), ncclGetLastError(NULL));
    goto fail;
  }
  ncclCommDestroy(world[0]);
  ncclCommDestroy(world[1]);
  lt_settle();
  if (lt_usage_now(&base, err)) goto fail;
  lt_usage_print("before the world", &base);
  r = ncclCommInitAll(world, 2, devs);
  if (r != ncclSuccess) {
    snprintf(err, sizeof err, "ncclCommInitAll: %s (%s)", ncclGetErrorString(r), ncclGetLastError(NULL));
    goto fail;
  }
  if (lt_allreduce_check(world, streams, bufs, ranks, 2, 2, 30.0, err) || lt_usage_now(&with_world, err))
    goto fail;
  lt_usage_print("with the world", &with_world);

  double t0 = t_now();
  struct splitter sp[2];
  pthread_t th[2];
  for (int q = 0; q < 2; q++) {
    sp[q] = (struct splitter){world[q], q, n, children[q], ncclInternalError, ""};
    if (pthread_create(&th[q], NULL, split_main, &sp[q]) != 0) {
      snprintf(err, sizeof err, "pthread_create failed");
      goto fail;
    }
  }
  for (int q = 0; q < 2; q++) pthread_join(th[q], NULL);
  for (int q = 0; q < 2; q++)
    if (sp[q].res != ncclSuccess) {
      snprintf(err, sizeof err, "%s", sp[q].err);
      goto fail;
    }
  double split_s = t_now() - t0;
  /* All alive at once, each used. */
  for (int k = 0; k < n; k++) {
    ncclComm_t pair[2] = {children[0][k], children[1][k]};
    if (lt_allreduce_check(pair, streams, bufs, ranks, 2, 2, 30.0, err)) {
      char msg[T_ERRLEN];
      snprintf(msg, sizeof msg, "communicator %d of %d: %.1900s", k, n, err);
      memcpy(err, msg, sizeof msg);
      goto fail;
    }
  }
  if (lt_usage_now(&with_all, err)) goto fail;
  char label[64];
  snprintf(label, sizeof label, "with %d more communicators", n);
  lt_usage_print(label, &with_all);
  double per = (with_all.gpu_used_mib - with_world.gpu_used_mib) / n;
  printf("%d communicators of 2 ranks split from one world in %.2f s, each used once\n", n, split_s);
  printf("GPU memory per communicator: %.1f MiB (both ranks), %.1f MiB per rank; the world: %.1f MiB\n",
         per, per / 2, with_world.gpu_used_mib - base.gpu_used_mib);

  for (int k = 0; k < n; k++)
    for (int q = 0; q < 2; q++)
      if ((r = ncclCommDestroy(children[q][k])) != ncclSuccess) {
        snprintf(err, sizeof err, "ncclCommDestroy: %s", ncclGetErrorString(r));
        goto fail;
      }
  for (int q = 0; q < 2; q++) ncclCommDestroy(world[q]);
  lt_settle();
  if (lt_usage_now(&after, err)) goto fail;
  lt_usage_print("all destroyed", &after);
  /* Back to before the world, but for what CUDA keeps of its first use. */
  int rc = after.gpu_used_mib - base.gpu_used_mib > LT_GPU_SLACK_MIB ? 1 : 0;
  printf("GPU memory after destroying everything: %+.1f MiB against before the world%s\n",
         after.gpu_used_mib - base.gpu_used_mib, rc ? " (FAIL: more than the slack)" : "");
  printf("%s\n", rc ? "FAIL" : "PASS");
  return rc;
fail:
  fprintf(stderr, "FAIL %s\n", err);
  printf("FAIL\n");
  return 1;
}
