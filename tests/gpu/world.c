/* The GPU suite's worlds (communicators and streams of the ranks this process drives)
 * and their device buffers; see common.h. */
#include <string.h>

#include "../fnv.h"
#include "common.h"
#include "common_check.h"

static int world_finish(struct t_world* w, char* err) {
  w->hash = FNV_OFFSET_BASIS;
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    int count = -1, dev = -1, rank = -1;
    CU(cudaSetDevice(w->dev[r]));
    CU(cudaStreamCreateWithFlags(&w->stream[r], cudaStreamNonBlocking));
    NC(ncclCommCount(w->comm[r], &count));
    NC(ncclCommCuDevice(w->comm[r], &dev));
    NC(ncclCommUserRank(w->comm[r], &rank));
    if (count != w->n || dev != w->dev[r] || rank != r)
      return t_fail(err, "rank %d: ncclCommCount/CuDevice/UserRank say %d/%d/%d, expected %d/%d/%d",
                  r, count, dev, rank, w->n, w->dev[r], r);
  }
  return 0;
}

int t_world_init(struct t_world* w, int nranks, char* err) {
  memset(w, 0, sizeof *w);
  if (nranks < 1 || nranks > T_MAXR) return t_fail(err, "bad world size %d", nranks);
  w->n = w->nlocal = nranks;
  if ((w->ndev = t_gpu_count()) <= 0) return t_fail(err, "no GPU");
  for (int r = 0; r < nranks; r++) w->dev[r] = r % w->ndev;
  ncclResult_t res = ncclCommInitAll(w->comm, nranks, w->dev);
  if (res != ncclSuccess)
    return t_fail(err, "ncclCommInitAll of %d ranks on %d GPU(s) failed: %s (%s)", nranks, w->ndev,
                ncclGetErrorString(res), ncclGetLastError(NULL));
  return world_finish(w, err);
}

int t_world_init_rank(struct t_world* w, int nranks, int rank, const ncclUniqueId* id, char* err) {
  memset(w, 0, sizeof *w);
  w->n = nranks, w->first = rank, w->nlocal = 1;
  if ((w->ndev = t_gpu_count()) <= 0) return t_fail(err, "no GPU");
  w->dev[rank] = rank % w->ndev;
  CU(cudaSetDevice(w->dev[rank]));
  ncclResult_t res = ncclCommInitRank(&w->comm[rank], nranks, *id, rank);
  if (res != ncclSuccess)
    return t_fail(err, "ncclCommInitRank(rank %d of %d, GPU %d) failed: %s (%s)", rank, nranks,
                w->dev[rank], ncclGetErrorString(res), ncclGetLastError(NULL));
  return world_finish(w, err);
}

int t_world_free(struct t_world* w, char* err) {
  int rc = 0;
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (w->comm[r]) {
      ncclResult_t res = ncclCommDestroy(w->comm[r]);
      if (res != ncclSuccess && !rc)
        rc = t_fail(err, "ncclCommDestroy(rank %d) failed: %s (%s)", r, ncclGetErrorString(res),
                  ncclGetLastError(NULL));
      w->comm[r] = NULL;
    }
    if (w->stream[r]) {
      cudaError_t e = cudaStreamDestroy(w->stream[r]);
      if (e != cudaSuccess && !rc)
        rc = t_fail(err, "cudaStreamDestroy(rank %d) failed: %s", r, cudaGetErrorString(e));
      w->stream[r] = NULL;
    }
  }
  return rc;
}

int t_world_sync(struct t_world* w, double timeout_s, char* err) {
  const double t0 = t_now();
  for (;;) {
    int pending = -1;
    for (int r = w->first; r < w->first + w->nlocal && pending < 0; r++) {
      cudaError_t e = cudaStreamQuery(w->stream[r]);
      if (e == cudaErrorNotReady) pending = r;
      else if (e != cudaSuccess)
        return t_fail(err, "rank %d's stream failed: %s", r, cudaGetErrorString(e));
    }
    if (pending < 0) break;
    double el = t_now() - t0;
    if (el > timeout_s) {
      ncclResult_t ae = ncclSuccess;
      ncclCommGetAsyncError(w->comm[pending], &ae);
      return t_fail(err, "rank %d's stream still busy after %.1f s (async error: %s; last error: %s)",
                  pending, timeout_s, ncclGetErrorString(ae), ncclGetLastError(NULL));
    }
    if (el > 0.002) t_sleep_ns(100000);
  }
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    ncclResult_t ae = ncclInternalError;
    NC(ncclCommGetAsyncError(w->comm[r], &ae));
    if (ae != ncclSuccess)
      return t_fail(err, "rank %d reports an asynchronous error: %s (%s)", r, ncclGetErrorString(ae),
                  ncclGetLastError(NULL));
  }
  return 0;
}

int t_bufs_alloc(struct t_world* w, struct t_bufs* b, size_t send_cap, size_t recv_cap, char* err) {
  memset(b, 0, sizeof *b);
  b->send_cap = send_cap, b->recv_cap = recv_cap;
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    CU(cudaSetDevice(w->dev[r]));
    CU(cudaMalloc((void**)&b->send[r], send_cap + 2 * T_GUARD + 16));
    CU(cudaMalloc((void**)&b->recv[r], recv_cap + 2 * T_GUARD + 16));
    CU(cudaMalloc(&b->scalar[r], 16));
  }
  return 0;
}

void t_bufs_free(struct t_world* w, struct t_bufs* b) {
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    cudaFree(b->send[r]);
    cudaFree(b->recv[r]);
    cudaFree(b->scalar[r]);
    b->send[r] = b->recv[r] = NULL, b->scalar[r] = NULL;
  }
}
