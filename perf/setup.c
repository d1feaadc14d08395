/* Communicators, streams and buffers of a set of ranks (perf.h). Called once for all
 * of the process's ranks, or by each thread for its own with -p 1. */
#include "perf.h"

#include <stdlib.h>

#include "check.h"

int64_t perf_free_mem_min(const struct perf_thread* thr) {
  int64_t lowest = INT64_MAX;
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    size_t fr = 0, total = 0;
    if (cudaSetDevice(thr->gpus[i]) == cudaSuccess && cudaMemGetInfo(&fr, &total) == cudaSuccess &&
        (int64_t)fr < lowest)
      lowest = (int64_t)fr;
  }
  return lowest == INT64_MAX ? 0 : lowest;
}

int perf_setup_comms(struct perf_run* run, struct perf_thread* thr) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  int64_t before;
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    if (run->o.stream_null)
      thr->streams[i] = NULL;
    else
      PERF_CUDA(cudaStreamCreateWithFlags(&thr->streams[i], cudaStreamNonBlocking));
  }
  before = run->o.memory_report ? perf_free_mem_min(thr) : 0;
  if (run->o.cta_policy >= 0) config.CTAPolicy = run->o.cta_policy;
  /* All ranks of this thread in one group: one thread cannot otherwise create several
   * communicators of the same clique (each init waits for its peers). */
  PERF_NCCL(ncclGroupStart());
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    if (run->o.cta_policy >= 0)
      PERF_NCCL(ncclCommInitRankConfig(&thr->comms[i], run->nranks, run->id,
                                       thr->first_rank + i, &config));
    else
      PERF_NCCL(ncclCommInitRank(&thr->comms[i], run->nranks, run->id, thr->first_rank + i));
  }
  PERF_NCCL(ncclGroupEnd());
  if (run->o.memory_report) thr->mem_init = before - perf_free_mem_min(thr);
  return 0;
}

int perf_setup_buffers(struct perf_run* run, struct perf_thread* thr) {
  int64_t before = run->o.memory_report ? perf_free_mem_min(thr) : 0;
  int i;
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    /* ncclMemAlloc by default, as nccl-tests: memory the library can map into peers,
     * so that both libraries get the buffers they are designed for. */
    if (run->use_cuda_malloc) {
      PERF_CUDA(cudaMalloc((void**)&thr->send[i], run->bufbytes));
      PERF_CUDA(cudaMalloc((void**)&thr->recv[i], run->bufbytes));
    } else {
      PERF_NCCL(ncclMemAlloc((void**)&thr->send[i], run->bufbytes));
      PERF_NCCL(ncclMemAlloc((void**)&thr->recv[i], run->bufbytes));
    }
    PERF_CUDA(cudaMalloc((void**)&thr->wrong[i], sizeof(unsigned long long)));
  }
  if (run->o.local_register == 1) {
    /* Grouped too: NCCL's registration is local, snapccl's exchanges the peers' mappings
     * collectively (at the group's end when grouped), and one thread may drive several
     * ranks (-g). */
    PERF_NCCL(ncclGroupStart());
    for (i = 0; i < thr->ngpus; i++) {
      PERF_NCCL(ncclCommRegister(thr->comms[i], thr->send[i], run->bufbytes, &thr->send_reg[i]));
      PERF_NCCL(ncclCommRegister(thr->comms[i], thr->recv[i], run->bufbytes, &thr->recv_reg[i]));
    }
    PERF_NCCL(ncclGroupEnd());
  } else if (run->o.local_register == 2) {
    /* Window registration is collective over the communicator: group the ranks. */
    PERF_NCCL(ncclGroupStart());
    for (i = 0; i < thr->ngpus; i++) {
      PERF_NCCL(ncclCommWindowRegister(thr->comms[i], thr->send[i], run->bufbytes,
                                       (ncclWindow_t*)&thr->send_reg[i], NCCL_WIN_COLL_SYMMETRIC));
      PERF_NCCL(ncclCommWindowRegister(thr->comms[i], thr->recv[i], run->bufbytes,
                                       (ncclWindow_t*)&thr->recv_reg[i], NCCL_WIN_COLL_SYMMETRIC));
    }
    PERF_NCCL(ncclGroupEnd());
  }
  if (run->o.memory_report) thr->mem_buffers = before - perf_free_mem_min(thr);
  return 0;
}

int perf_teardown(struct perf_run* run, struct perf_thread* thr) {
  int i;
  if (run->o.local_register == 1) {
    for (i = 0; i < thr->ngpus; i++) {
      if (thr->send_reg[i]) PERF_NCCL(ncclCommDeregister(thr->comms[i], thr->send_reg[i]));
      if (thr->recv_reg[i]) PERF_NCCL(ncclCommDeregister(thr->comms[i], thr->recv_reg[i]));
    }
  } else if (run->o.local_register == 2) {
    PERF_NCCL(ncclGroupStart());
    for (i = 0; i < thr->ngpus; i++) {
      if (thr->send_reg[i])
        PERF_NCCL(ncclCommWindowDeregister(thr->comms[i], (ncclWindow_t)thr->send_reg[i]));
      if (thr->recv_reg[i])
        PERF_NCCL(ncclCommWindowDeregister(thr->comms[i], (ncclWindow_t)thr->recv_reg[i]));
    }
    PERF_NCCL(ncclGroupEnd());
  }
  for (i = 0; i < thr->ngpus; i++) {
    if (thr->comms[i]) PERF_NCCL(ncclCommDestroy(thr->comms[i]));
    thr->comms[i] = NULL;
  }
  for (i = 0; i < thr->ngpus; i++) {
    PERF_CUDA(cudaSetDevice(thr->gpus[i]));
    if (run->use_cuda_malloc) {
      if (thr->send[i]) PERF_CUDA(cudaFree(thr->send[i]));
      if (thr->recv[i]) PERF_CUDA(cudaFree(thr->recv[i]));
    } else {
      if (thr->send[i]) PERF_NCCL(ncclMemFree(thr->send[i]));
      if (thr->recv[i]) PERF_NCCL(ncclMemFree(thr->recv[i]));
    }
    if (thr->wrong[i]) PERF_CUDA(cudaFree(thr->wrong[i]));
    if (thr->streams[i]) PERF_CUDA(cudaStreamDestroy(thr->streams[i]));
    thr->send[i] = thr->recv[i] = NULL;
    thr->wrong[i] = NULL;
    thr->streams[i] = NULL;
  }
  free(thr->pending_ops);
  free(thr->pending_idx);
  thr->pending_ops = NULL;
  thr->pending_idx = NULL;
  thr->npending = thr->pending_cap = 0;
  return 0;
}
