#include "oob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bootstrap.h"
#include "comm.h"
#include "error.h"
#include "real_nccl.h"

/* Through the real communicator: a small all-gather on a private stream, staged
 * through device memory from the stream-ordered allocator (no device-wide sync). */
static ncclResult_t real_allgather(struct snapccl_comm* c, void* data, size_t bytes) {
  const struct snapccl_real* real = snapccl_real();
  if (!real || !real->ncclAllGather) SNAP_FAIL(ncclInternalError, "no real ncclAllGather");
  ncclResult_t res = ncclSuccess;
  char* buf = NULL;
  size_t total = bytes * (size_t)c->nranks;
  cudaStream_t s = c->oob_stream;
  CUDA_CHECK(cudaMallocAsync((void**)&buf, total, s));
  CUDA_CHECK_GOTO(cudaMemcpyAsync(buf + bytes * (size_t)c->rank, (char*)data + bytes * (size_t)c->rank,
                                  bytes, cudaMemcpyHostToDevice, s), res, out);
  res = real->ncclAllGather(buf + bytes * (size_t)c->rank, buf, bytes, ncclInt8, c->real_comm, s);
  if (res != ncclSuccess) {
    snapccl_error(res, __func__, "real ncclAllGather of %zu bytes failed", bytes);
    goto out;
  }
  CUDA_CHECK_GOTO(cudaMemcpyAsync(data, buf, total, cudaMemcpyDeviceToHost, s), res, out);
out:
  cudaFreeAsync(buf, s);
  {
    cudaError_t e = cudaStreamSynchronize(s);
    if (e != cudaSuccess && res == ncclSuccess)
      res = snapccl_error(ncclUnhandledCudaError, __func__, "cudaStreamSynchronize: %s",
                          cudaGetErrorString(e));
  }
  return res;
}

ncclResult_t snapccl_oob_allgather(struct snapccl_comm* comm, void* data, size_t bytes) {
  if (comm->boot) return snapccl_bootstrap_allgather(comm->boot, data, bytes);
  if (comm->real_comm) return bytes ? real_allgather(comm, data, bytes) : ncclSuccess;
  SNAP_FAIL(ncclInternalError, "communicator has no out-of-band channel");
}

ncclResult_t snapccl_oob_barrier(struct snapccl_comm* comm) {
  if (comm->boot) return snapccl_bootstrap_barrier(comm->boot);
  char* v = calloc((size_t)comm->nranks, 1);
  if (!v) SNAP_FAIL(ncclSystemError, "out of memory");
  ncclResult_t r = snapccl_oob_allgather(comm, v, 1);
  free(v);
  return r;
}

ncclResult_t snapccl_oob_agree(struct snapccl_comm* comm, int* ok, char* reason, size_t len) {
  struct vote {
    int32_t ok;
    char reason[156];
  };
  struct vote* v = calloc((size_t)comm->nranks, sizeof *v);
  if (!v) SNAP_FAIL(ncclSystemError, "out of memory");
  v[comm->rank].ok = *ok;
  snprintf(v[comm->rank].reason, sizeof v[0].reason, "%s", *ok ? "" : reason);
  ncclResult_t res = snapccl_oob_allgather(comm, v, sizeof *v);
  if (res == ncclSuccess && *ok)
    for (int r = 0; r < comm->nranks; r++)
      if (!v[r].ok) {
        snprintf(reason, len, "rank %d: %s", r, v[r].reason);
        *ok = 0;
        break;
      }
  free(v);
  return res;
}
