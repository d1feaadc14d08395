/* The three collectives the perf binaries measure, described the way nccl-tests
 * describes them: buffer element counts per size, bandwidth formulas, the NCCL call. */
#ifndef PERF_COLL_H_
#define PERF_COLL_H_

#include <stddef.h>

#include "nccl_api.h"

enum { PERF_ALLREDUCE = 0, PERF_ALLGATHER = 1, PERF_REDUCESCATTER = 2 };

struct perf_coll {
  int id;
  const char* name;   /* "AllReduce", as nccl-tests names it */
  const char* query;  /* "allreduce": snapcclQueryAlgorithm's collective name */
  int reduces;        /* takes a reduction op (AllGather does not: redop "none") */
};

extern const struct perf_coll perf_coll_allreduce;
extern const struct perf_coll perf_coll_allgather;
extern const struct perf_coll perf_coll_reducescatter;

/* Element counts for one size (nccl-tests' getCollByteCount):
 *   send/recv   elements in the send and receive buffers
 *   param       the count argument of the NCCL call
 *   send_ip/recv_ip  in-place: where, in units of rank*elements, the send and receive
 *               data sit inside the receive buffer */
struct perf_counts {
  size_t send, recv, param, send_ip, recv_ip;
};

/* count: elements of the nominal size (size / element size). AllGather and
 * ReduceScatter round the per-rank part down to a multiple of 16 bytes. */
void perf_coll_counts(const struct perf_coll* c, size_t count, size_t eltsize, int nranks,
                      struct perf_counts* out);

/* algbw = bytes moved per rank's buffer / time; busbw = algbw * the collective's
 * factor (AllReduce 2(n-1)/n, AllGather and ReduceScatter (n-1)/n), in GB/s. */
void perf_coll_bw(const struct perf_coll* c, size_t param, size_t eltsize, double sec,
                  int nranks, double* algbw, double* busbw);

ncclResult_t perf_coll_run(const struct perf_coll* c, const void* sendbuf, void* recvbuf,
                           size_t param, ncclDataType_t dt, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream);

/* nccl-tests' type and op names; index = PERF_* type / op code. */
extern const char* const perf_type_names[];
extern const char* const perf_op_names[];
/* A name to its code; -1 for "all", -2 when unknown. */
int perf_type_from_name(const char* name);
int perf_op_from_name(const char* name);

#endif
