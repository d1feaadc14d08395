/* One collective call as the rest of the library sees it, after argument checks. */
#ifndef SNAPCCL_COLL_H
#define SNAPCCL_COLL_H

#include <stddef.h>
#include <stdint.h>

#include "nccl.h"

enum snapccl_coll_kind { COLL_ALLREDUCE = 0, COLL_ALLGATHER = 1, COLL_REDUCESCATTER = 2, COLL_NKINDS };

/* Reductions as the kernels apply them. ncclAvg becomes a pre-multiply by 1/nranks for
 * floating types and a sum followed by an integer division otherwise, as in NCCL. */
enum snapccl_devop {
  DEVOP_SUM = 0,
  DEVOP_PROD = 1,
  DEVOP_MAX = 2,
  DEVOP_MIN = 3,
  DEVOP_PREMULSUM = 4, /* every input times a scalar, then summed */
  DEVOP_SUMPOSTDIV = 5, /* integer average: sum, then divide by nranks */
  DEVOP_COUNT
};

/* Where a PreMulSum scalar comes from. ncclAvg on floating types uses RECIPROCAL:
 * the kernel multiplies by 1/nranks computed in dtype. */
enum snapccl_scalar_mode { SCALAR_NONE = 0, SCALAR_BITS = 1, SCALAR_DEVICE = 2, SCALAR_RECIPROCAL = 3 };

struct snapccl_comm;
struct snapccl_algo;

struct snapccl_coll {
  enum snapccl_coll_kind kind;
  const void* sendbuff;
  void* recvbuff;
  size_t count; /* NCCL's meaning: allreduce count, allgather sendcount, reducescatter recvcount */
  ncclDataType_t dtype;
  ncclRedOp_t op; /* as the user passed it */
  enum snapccl_devop devop;
  /* The PreMulSum scalar: how the kernel finds it (see enum snapccl_scalar_mode). */
  int scalar_mode;
  uint64_t scalar_bits;   /* SCALAR_BITS: the value's bytes in dtype */
  const void* scalar_dev; /* SCALAR_DEVICE: where the value lives on the device */
  struct snapccl_comm* comm;
  cudaStream_t stream;
  /* The algorithm once selected (NULL before): a call checked at ncclGroupEnd or chosen by
   * the interposer is issued without being selected a second time. */
  const struct snapccl_algo* algo;
};

const char* snapccl_coll_name(enum snapccl_coll_kind kind);

/* Power-of-two size classes, for counting and logging calls by size: class c holds
 * messages of [2^c, 2^(c+1)) bytes (class 0 also 0 bytes), the last one everything from
 * 2^(SNAPCCL_SIZE_CLASSES-1) up. At most 64, so a class set fits a uint64_t. */
#define SNAPCCL_SIZE_CLASSES 48
int snapccl_size_class(unsigned long long bytes);
size_t snapccl_dtype_size(ncclDataType_t dtype);
const char* snapccl_dtype_name(ncclDataType_t dtype);
int snapccl_dtype_is_float(ncclDataType_t dtype);

/* Validates the arguments like NCCL (NULL comm or buffers, dtype and op ranges, count
 * overflow) and resolves the op; fills *out. */
ncclResult_t snapccl_coll_prepare(enum snapccl_coll_kind kind, const void* sendbuff,
                                  void* recvbuff, size_t count, ncclDataType_t dtype,
                                  ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream,
                                  const char* func, struct snapccl_coll* out);
/* The same checks on a communicator struct, recording nothing: 1 if snapccl could take
 * the call (interposed mode forwards it unchanged otherwise, for NCCL to judge). */
int snapccl_coll_prepare_quiet(enum snapccl_coll_kind kind, const void* sendbuff, void* recvbuff,
                               size_t count, ncclDataType_t dtype, ncclRedOp_t op,
                               struct snapccl_comm* comm, cudaStream_t stream,
                               struct snapccl_coll* out);
/* The selector's estimate of a prepared call's time, in microseconds. */
double snapccl_coll_estimate_us(const struct snapccl_coll* coll);
/* Whether an algorithm can run the call (the reason recorded if not); launches nothing.
 * Keeps the algorithm in coll->algo for snapccl_coll_issue. */
ncclResult_t snapccl_coll_check(struct snapccl_coll* coll);
/* Runs a prepared call now (outside a group, or at the outermost ncclGroupEnd), with
 * coll->algo when set, else the selector's choice. */
ncclResult_t snapccl_coll_issue(const struct snapccl_coll* coll);

#endif
