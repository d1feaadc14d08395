/* The transport's state and the pieces setup is made of (one file each). */
#ifndef SNAPCCL_TRANSPORT_IMPL_H
#define SNAPCCL_TRANSPORT_IMPL_H

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdint.h>

#include "comm.h"
#include "kernels/kargs.h"

struct snapccl_transport {
  int usable;          /* collectives can run (P2P, kernels for this GPU, rank count) */
  char reason[200];    /* why not, when !usable */
  int max_blocks;      /* agreed by all ranks: blocks of SNAPCCL_THREADS a call may use */
  int whole_sms;       /* agreed: blocks a call may use if each fills an SM (a kernel of
                          wider blocks, as the low-precision one may launch) */
  struct snapccl_ws_layout lay;
  char* ws_local;      /* cudaMalloc'd, exported through legacy CUDA IPC */
  char* ws[SNAPCCL_MAX_RANKS]; /* every rank's workspace in this process's address space */
  int ipc_opened[SNAPCCL_MAX_RANKS];
  struct snapccl_status* status_host; /* cudaHostAlloc'd, mapped */
  struct snapccl_status* status_dev;
  struct snapccl_kargs kargs; /* filled at setup; each launch copies and completes it */
  /* Cross-stream ordering: calls on one communicator run one after another even when
   * the application switches streams (see transport/order.c). */
  cudaStream_t last_stream;
  int have_last_stream;
  cudaEvent_t order_event;
  pthread_mutex_t lock;
};

/* workspace.c */
void snapccl_ws_layout_compute(struct snapccl_ws_layout* lay, int nranks, int max_blocks,
                               int64_t buffsize);
ncclResult_t snapccl_ws_alloc(struct snapccl_transport* t, int cuda_dev);
/* peers.c */
ncclResult_t snapccl_peers_map(struct snapccl_comm* comm, struct snapccl_transport* t);
ncclResult_t snapccl_peers_probe(struct snapccl_comm* comm, struct snapccl_transport* t);
void snapccl_peers_unmap(struct snapccl_comm* comm, struct snapccl_transport* t);
/* topology.c */
void snapccl_topology_log(const struct snapccl_comm* comm);

#endif
