/* Collective descriptions (coll.h). */
#include "coll.h"

#include <string.h>

#include "datagen.h"

/* datagen.h's codes double as NCCL's, so that kernels need no nccl.h. */
#define PERF_SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(PERF_SAME(PERF_INT8, ncclInt8) && PERF_SAME(PERF_UINT8, ncclUint8) &&
                   PERF_SAME(PERF_INT32, ncclInt32) && PERF_SAME(PERF_UINT32, ncclUint32) &&
                   PERF_SAME(PERF_INT64, ncclInt64) && PERF_SAME(PERF_UINT64, ncclUint64) &&
                   PERF_SAME(PERF_HALF, ncclFloat16) && PERF_SAME(PERF_FLOAT, ncclFloat32) &&
                   PERF_SAME(PERF_DOUBLE, ncclFloat64) && PERF_SAME(PERF_BF16, ncclBfloat16) &&
                   PERF_SAME(PERF_F8E4M3, ncclFloat8e4m3) &&
                   PERF_SAME(PERF_F8E5M2, ncclFloat8e5m2) &&
                   PERF_SAME(PERF_NUM_TYPES, ncclNumTypes),
               "datagen.h type codes must equal ncclDataType_t");
_Static_assert(PERF_SAME(PERF_OP_SUM, ncclSum) && PERF_SAME(PERF_OP_PROD, ncclProd) &&
                   PERF_SAME(PERF_OP_MAX, ncclMax) && PERF_SAME(PERF_OP_MIN, ncclMin) &&
                   PERF_SAME(PERF_OP_AVG, ncclAvg),
               "datagen.h op codes must equal ncclRedOp_t");

const struct perf_coll perf_coll_allreduce = {PERF_ALLREDUCE, "AllReduce", "allreduce", 1};
const struct perf_coll perf_coll_allgather = {PERF_ALLGATHER, "AllGather", "allgather", 0};
const struct perf_coll perf_coll_reducescatter = {PERF_REDUCESCATTER, "ReduceScatter",
                                                  "reducescatter", 1};

const char* const perf_type_names[PERF_NUM_TYPES] = {
  "int8", "uint8", "int32", "uint32", "int64", "uint64",
  "half", "float", "double", "bfloat16", "f8e4m3", "f8e5m2"};

const char* const perf_op_names[PERF_NUM_OPS] = {"sum", "prod", "max", "min", "avg", "mulsum",
                                                 "none"};

int perf_type_from_name(const char* name) {
  int i;
  if (strcmp(name, "all") == 0) return -1;
  for (i = 0; i < PERF_NUM_TYPES; i++)
    if (strcmp(name, perf_type_names[i]) == 0) return i;
  return -2;
}

int perf_op_from_name(const char* name) {
  int i;
  if (strcmp(name, "all") == 0) return -1;
  for (i = 0; i < PERF_OP_NONE; i++) /* "none" is AllGather's label, not an option */
    if (strcmp(name, perf_op_names[i]) == 0) return i;
  return -2;
}

void perf_coll_counts(const struct perf_coll* c, size_t count, size_t eltsize, int nranks,
                      struct perf_counts* out) {
  size_t n = nranks > 0 ? (size_t)nranks : 1;
  size_t align = eltsize && eltsize <= 16 ? 16 / eltsize : 1;
  size_t base = (count / n) & ~(align - 1);
  switch (c->id) {
  case PERF_ALLGATHER:
    out->send = base;
    out->recv = base * n;
    out->param = base;
    out->send_ip = base; /* rank r's input is block r of the output */
    out->recv_ip = 0;
    break;
  case PERF_REDUCESCATTER:
    out->send = base * n;
    out->recv = base;
    out->param = base;
    out->send_ip = 0;
    out->recv_ip = base; /* rank r's output is block r of the input */
    break;
  default:
    out->send = count;
    out->recv = count;
    out->param = count;
    out->send_ip = 0;
    out->recv_ip = 0;
    break;
  }
}

void perf_coll_bw(const struct perf_coll* c, size_t param, size_t eltsize, double sec,
                  int nranks, double* algbw, double* busbw) {
  double n = (double)(nranks > 0 ? nranks : 1);
  double bytes = (double)param * (double)eltsize;
  double factor;
  if (c->id == PERF_ALLREDUCE) {
    factor = 2.0 * (n - 1.0) / n;
  } else {
    bytes *= n; /* the whole gathered / scattered buffer */
    factor = (n - 1.0) / n;
  }
  *algbw = sec > 0 ? bytes / 1.0e9 / sec : 0.0;
  *busbw = *algbw * factor;
}

ncclResult_t perf_coll_run(const struct perf_coll* c, const void* sendbuf, void* recvbuf,
                           size_t param, ncclDataType_t dt, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  switch (c->id) {
  case PERF_ALLGATHER: return ncclAllGather(sendbuf, recvbuf, param, dt, comm, stream);
  case PERF_REDUCESCATTER:
    return ncclReduceScatter(sendbuf, recvbuf, param, dt, op, comm, stream);
  default: return ncclAllReduce(sendbuf, recvbuf, param, dt, op, comm, stream);
  }
}
