/* Calls on one communicator run one after another (the device epoch and the staging
 * slots assume it). On one stream that is free; when the application switches streams,
 * the new stream waits for the event recorded after our previous call. During capture
 * the graph's own edges order the captured work, and events recorded outside a capture
 * cannot be waited on inside it, so nothing is added there. The same event is what
 * snapccl_transport_quiesce waits for. */
#include <pthread.h>

#include "error.h"
#include "transport/transport.h"
#include "transport/transport_impl.h"

ncclResult_t snapccl_transport_ordered(struct snapccl_comm* comm, cudaStream_t s,
                                       cudaError_t (*enqueue)(void* ctx), void* ctx) {
  struct snapccl_transport* t = comm->transport;
  enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(s, &cap));
  int capturing = cap != cudaStreamCaptureStatusNone;
  pthread_mutex_lock(&t->lock);
  if (!capturing && t->have_last_stream && t->last_stream != s) {
    cudaError_t e = cudaStreamWaitEvent(s, t->order_event, 0);
    if (e != cudaSuccess) {
      pthread_mutex_unlock(&t->lock);
      SNAP_FAIL(ncclUnhandledCudaError, "cudaStreamWaitEvent failed: %s", cudaGetErrorString(e));
    }
  }
  cudaError_t e = enqueue(ctx);
  if (e == cudaSuccess && !capturing) {
    e = cudaEventRecord(t->order_event, s);
    t->last_stream = s;
    t->have_last_stream = 1;
  }
  pthread_mutex_unlock(&t->lock);
  if (e != cudaSuccess)
    SNAP_FAIL(ncclUnhandledCudaError, "kernel launch failed: %s", cudaGetErrorString(e));
  return ncclSuccess;
}
