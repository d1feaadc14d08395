/* C entry points of the NVLink multicast kernels (src/kernels/multimem.cu) and of their
 * unicast twins. One kernel per dtype (float32, float16, bfloat16) and variant (multicast
 * or twin) for the reductions, one per variant for the dtype-blind all-gather; the
 * algorithm is a run-time field. */
#ifndef SNAPCCL_MULTIMEM_H
#define SNAPCCL_MULTIMEM_H

#include <cuda_runtime.h>

#include "kernels/kargs.h"

#ifdef __cplusplus
extern "C" {
#endif

enum snapccl_mm_kind {
  MM_ONESHOT = 0,       /* all-reduce: copy in, barrier, reducing load of the whole buffer */
  MM_TWOSHOT = 1,       /* all-reduce: reducing load of my slice, multicast store, barrier */
  MM_REDUCESCATTER = 2, /* reducing load of my slice */
  MM_ALLGATHER = 3,     /* multicast store of my input (bytes) */
  MM_LAMPORT = 4,       /* all-reduce: multicast store into Lamport slots, local reduction */
};

/* What the multimem kernels need besides the common arguments. The multicast buffer
 * mirrors the workspace layout (a.lay): the same offsets hold flags, one-shot, Lamport
 * and staging regions. */
struct snapccl_mm_args {
  char* mc;  /* multicast mapping of the buffer; NULL selects the unicast twin, which uses
                every rank's workspace (a.ws[r]) as that rank's replica */
  char* uc;  /* this rank's replica, unicast (multicast variant only) */
  int kind;  /* enum snapccl_mm_kind */
};

/* The grid is `blocks` x SNAPCCL_THREADS; kind and dtype pick the kernel. */
cudaError_t snapccl_launch_multimem(const struct snapccl_kargs* a, const struct snapccl_mm_args* m,
                                    int blocks, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
