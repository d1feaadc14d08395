/* Argument checks and operator resolution shared by the three collectives. */
#include "coll.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "error.h"
#include "host_profile.h"

static const struct {
  const char* name;
  size_t size;
  int is_float;
} dtypes[ncclNumTypes] = {
    [ncclInt8] = {"int8", 1, 0},         [ncclUint8] = {"uint8", 1, 0},
    [ncclInt32] = {"int32", 4, 0},       [ncclUint32] = {"uint32", 4, 0},
    [ncclInt64] = {"int64", 8, 0},       [ncclUint64] = {"uint64", 8, 0},
    [ncclFloat16] = {"half", 2, 1},      [ncclFloat32] = {"float", 4, 1},
    [ncclFloat64] = {"double", 8, 1},    [ncclBfloat16] = {"bfloat16", 2, 1},
    [ncclFloat8e4m3] = {"f8e4m3", 1, 1}, [ncclFloat8e5m2] = {"f8e5m2", 1, 1},
};

static const char* const coll_names[COLL_NKINDS] = {
    [COLL_ALLREDUCE] = "allreduce",
    [COLL_ALLGATHER] = "allgather",
    [COLL_REDUCESCATTER] = "reducescatter",
};

const char* snapccl_coll_name(enum snapccl_coll_kind kind) { return coll_names[kind]; }

_Static_assert(SNAPCCL_SIZE_CLASSES <= 64, "a set of size classes must fit a uint64_t");

int snapccl_size_class(unsigned long long bytes) {
  int cls = 0;
  while (cls < SNAPCCL_SIZE_CLASSES - 1 && (1ull << (cls + 1)) <= bytes) cls++;
  return cls;
}

size_t snapccl_dtype_size(ncclDataType_t dtype) {
  return ((int)dtype >= 0 && dtype < ncclNumTypes) ? dtypes[dtype].size : 0;
}

const char* snapccl_dtype_name(ncclDataType_t dtype) {
  return ((int)dtype >= 0 && dtype < ncclNumTypes) ? dtypes[dtype].name : "invalid";
}

int snapccl_dtype_is_float(ncclDataType_t dtype) {
  return ((int)dtype >= 0 && dtype < ncclNumTypes) ? dtypes[dtype].is_float : 0;
}

/* The checks, without side effects: NULL and a static reason when the call is valid
 * enough for snapccl, else the code and a reason built into `why`. */
static ncclResult_t check_op(struct snapccl_coll* c, char* why, size_t len) {
  static const enum snapccl_devop builtin[ncclNumOps] = {
      [ncclSum] = DEVOP_SUM, [ncclProd] = DEVOP_PROD, [ncclMax] = DEVOP_MAX,
      [ncclMin] = DEVOP_MIN, [ncclAvg] = DEVOP_SUM /* refined below */};
  c->scalar_mode = SCALAR_NONE;
  if (c->kind == COLL_ALLGATHER) { /* no reduction: the op is not an argument */
    c->devop = DEVOP_SUM;
    return ncclSuccess;
  }
  if ((int)c->op < 0) {
    snprintf(why, len, "invalid reduction operation %d", (int)c->op);
    return ncclInvalidArgument;
  }
  if (c->op < ncclNumOps) {
    c->devop = builtin[c->op];
    if (c->op == ncclAvg) {
      if (snapccl_dtype_is_float(c->dtype)) {
        c->devop = DEVOP_PREMULSUM;
        c->scalar_mode = SCALAR_RECIPROCAL;
      } else {
        c->devop = DEVOP_SUMPOSTDIV;
      }
    }
    return ncclSuccess;
  }
  struct snapccl_comm* comm = c->comm;
  int found = 0;
  ncclDataType_t made_for = c->dtype;
  pthread_mutex_lock(&comm->lock);
  for (int i = 0; i < SNAPCCL_MAX_REDOPS && !found; i++) {
    const struct snapccl_redop* r = &comm->redops[i];
    if (!r->in_use || r->op_id != (int)c->op) continue;
    found = 1;
    made_for = r->dtype;
    c->devop = DEVOP_PREMULSUM;
    c->scalar_mode = r->residence == ncclScalarHostImmediate ? SCALAR_BITS : SCALAR_DEVICE;
    c->scalar_bits = r->host_scalar;
    c->scalar_dev = r->dev_scalar;
  }
  pthread_mutex_unlock(&comm->lock);
  if (!found) {
    snprintf(why, len, "invalid reduction operation %d (not created on this communicator, or "
             "destroyed)", (int)c->op);
    return ncclInvalidArgument;
  }
  /* NCCL compares the datatypes only for a call with elements (taskAppend returns
   * before for count 0), so an empty call with a mismatched operator succeeds. */
  if (made_for != c->dtype && c->count > 0) {
    snprintf(why, len, "reduction operation %d was made for %s, not for %s", (int)c->op,
             snapccl_dtype_name(made_for), snapccl_dtype_name(c->dtype));
    return ncclInvalidArgument;
  }
  return ncclSuccess;
}

/* What NCCL 2.28 refuses once a call has elements, after the checks above (enqueue.cc
 * taskAppend; the table of tests/acceptance_matrix.h has the source of each). */
static ncclResult_t check_like_nccl_enqueue(const struct snapccl_coll* c, char* why, size_t len) {
  int fp8 = c->dtype == ncclFloat8e4m3 || c->dtype == ncclFloat8e5m2;
  if (c->count == 0 || !fp8 || c->kind == COLL_ALLGATHER) return ncclSuccess;
  const struct snapccl_comm* comm = c->comm;
  for (int i = 0; comm->peers && i < comm->nranks; i++)
    if (comm->peers[i].cc_major < 9) {
      snprintf(why, len, "%s reductions need GPUs of compute capability 9.0 or newer, and rank "
               "%d's is %d.%d (NCCL refuses them too)", snapccl_dtype_name(c->dtype), i,
               comm->peers[i].cc_major, comm->peers[i].cc_minor);
      return ncclInvalidArgument;
    }
  /* NCCL's one-rank path has no PreMulSum kernel for fp8 (device/onerank.cu): ncclAvg
   * and custom PreMulSum operators on fp8 fail at world size 1, and only there. */
  if (comm->nranks == 1 && c->devop == DEVOP_PREMULSUM) {
    snprintf(why, len, "%s with %s at world size 1: NCCL has no one-rank PreMulSum for %s and "
             "refuses the call, so snapccl does too", snapccl_dtype_name(c->dtype),
             c->op == ncclAvg ? "ncclAvg" : "a PreMulSum operator", snapccl_dtype_name(c->dtype));
    return ncclInvalidArgument;
  }
  return ncclSuccess;
}

static ncclResult_t check(enum snapccl_coll_kind kind, const void* sendbuff, void* recvbuff,
                          size_t count, ncclDataType_t dtype, ncclRedOp_t op,
                          struct snapccl_comm* c, cudaStream_t stream, struct snapccl_coll* out,
                          char* why, size_t len) {
  memset(out, 0, sizeof *out);
  if ((int)dtype < 0 || dtype >= ncclNumTypes) {
    snprintf(why, len, "invalid type %d", (int)dtype);
    return ncclInvalidArgument;
  }
  size_t esize = snapccl_dtype_size(dtype);
  /* Whole buffers in bytes must fit in size_t (and in the kernels' 64-bit offsets). */
  size_t mult = kind == COLL_ALLREDUCE ? 1 : (size_t)c->nranks;
  if (count > SIZE_MAX / esize / mult) {
    snprintf(why, len, "count %zu of %s times %zu ranks overflows the address space", count,
             snapccl_dtype_name(dtype), mult);
    return ncclInvalidArgument;
  }
  if (count > 0 && (!sendbuff || !recvbuff)) {
    snprintf(why, len, "%s is NULL with count %zu", sendbuff ? "recvbuff" : "sendbuff", count);
    return ncclInvalidArgument;
  }
  out->kind = kind;
  out->sendbuff = sendbuff;
  out->recvbuff = recvbuff;
  out->count = count;
  out->dtype = dtype;
  out->op = op;
  out->comm = c;
  out->stream = stream;
  ncclResult_t r = check_op(out, why, len);
  return r != ncclSuccess ? r : check_like_nccl_enqueue(out, why, len);
}

ncclResult_t snapccl_coll_prepare(enum snapccl_coll_kind kind, const void* sendbuff,
                                  void* recvbuff, size_t count, ncclDataType_t dtype,
                                  ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream,
                                  const char* func, struct snapccl_coll* out) {
  struct snapccl_comm* c;
  char why[256];
  memset(out, 0, sizeof *out);
  SNAP_CHECK(snapccl_comm_get_ready(comm, func, &c));
  SNAP_PROF_MARK(PROF_LOOKUP);
  ncclResult_t r = check(kind, sendbuff, recvbuff, count, dtype, op, c, stream, out, why, sizeof why);
  SNAP_PROF_MARK(PROF_CHECKS);
  if (r != ncclSuccess) return snapccl_error(r, func, "%s", why);
  return ncclSuccess;
}

int snapccl_coll_prepare_quiet(enum snapccl_coll_kind kind, const void* sendbuff, void* recvbuff,
                               size_t count, ncclDataType_t dtype, ncclRedOp_t op,
                               struct snapccl_comm* comm, cudaStream_t stream,
                               struct snapccl_coll* out) {
  char why[256];
  return check(kind, sendbuff, recvbuff, count, dtype, op, comm, stream, out, why, sizeof why) ==
         ncclSuccess;
}
