/* The acceptance matrix: NVIDIA NCCL 2.28.3's answer to every dtype x op x collective
 * at world size 1, which snapccl must give too (standalone: the same code plus a reason
 * in ncclGetLastError; interposed: the call is handed to NVIDIA's library, which then
 * answers). Used by tests/unit/test_acceptance_matrix.c (argument checks, no GPU) and
 * tests/gpu/acceptance_matrix.c (the real calls, against either library).
 *
 * Where the answers come from (NVIDIA/nccl v2.28.3-1):
 *   - src/misc/argcheck.cc ArgsCheck: dtype and op ranges, custom op known to the
 *     communicator; every cell here passes.
 *   - src/enqueue.cc taskAppend: a count of 0 returns ncclSuccess before anything else;
 *     fp8 reductions on a GPU older than sm_90 are ncclInvalidArgument (not in this
 *     table, which is for sm_90 and newer: H100, H200); hostToDevRedOp turns ncclAvg on
 *     a floating type into PreMulSum by 1/nranks (integers: sum then divide), and a
 *     custom op into its PreMulSum; at world size 1 the call then goes to
 *     ncclLaunchOneRank.
 *   - src/device/onerank.cu ncclLaunchOneRank: a copy unless the op is PreMulSum, else a
 *     kernel chosen by dtype, in host code where the fp8 cases sit under
 *     `__CUDA_ARCH__ >= 900`, which the host compilation never defines: PreMulSum on
 *     f8e4m3 / f8e5m2 (ncclAvg, or a custom PreMulSum with either scalar) falls to
 *     `default: return ncclInvalidArgument` (with no warning text). Unchanged through
 *     v2.30.7-1.
 *   - AllGather takes no op (NVIDIA passes ncclSum): a copy for every dtype.
 * Every cell has count > 0 (8 elements), distinct send and receive buffers, and custom
 * ops created on the same communicator for the cell's dtype (scalar 1). Read from the
 * source; tests/gpu/acceptance_matrix.c measures every cell against NVIDIA's library on
 * a GPU host and prints any that differs from this table. */
#ifndef SNAPCCL_TEST_ACCEPTANCE_MATRIX_H
#define SNAPCCL_TEST_ACCEPTANCE_MATRIX_H

#include <stdint.h>

#include "nccl.h"

enum mx_coll { MX_ALLREDUCE, MX_ALLGATHER, MX_REDUCESCATTER };
enum mx_op {
  MX_SUM,
  MX_PROD,
  MX_MAX,
  MX_MIN,
  MX_AVG,
  MX_PREMULSUM_HOST,   /* ncclRedOpCreatePreMulSum, ncclScalarHostImmediate */
  MX_PREMULSUM_DEVICE, /* ncclRedOpCreatePreMulSum, ncclScalarDevice */
  MX_NO_OP,            /* AllGather */
};

struct mx_cell {
  enum mx_coll coll;
  ncclDataType_t dtype;
  enum mx_op op;
  ncclResult_t nccl_2_28_3; /* NVIDIA's answer at world size 1 on sm_90 */
};

static const struct mx_cell mx_cells[] = {
    {MX_ALLREDUCE,     ncclInt8,       MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclInt8,       MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclUint8,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclInt32,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclUint32,     MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclInt64,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclUint64,     MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat16,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat32,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat64,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_AVG,              ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_ALLREDUCE,     ncclBfloat16,   MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_AVG,              ncclInvalidArgument},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_PREMULSUM_HOST,   ncclInvalidArgument},
    {MX_ALLREDUCE,     ncclFloat8e4m3, MX_PREMULSUM_DEVICE, ncclInvalidArgument},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_SUM,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_PROD,             ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_MAX,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_MIN,              ncclSuccess},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_AVG,              ncclInvalidArgument},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_PREMULSUM_HOST,   ncclInvalidArgument},
    {MX_ALLREDUCE,     ncclFloat8e5m2, MX_PREMULSUM_DEVICE, ncclInvalidArgument},

    {MX_ALLGATHER,     ncclInt8,       MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclUint8,      MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclInt32,      MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclUint32,     MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclInt64,      MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclUint64,     MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclFloat16,    MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclFloat32,    MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclFloat64,    MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclBfloat16,   MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclFloat8e4m3, MX_NO_OP,            ncclSuccess},
    {MX_ALLGATHER,     ncclFloat8e5m2, MX_NO_OP,            ncclSuccess},

    {MX_REDUCESCATTER, ncclInt8,       MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclInt8,       MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclUint8,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclInt32,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclUint32,     MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclInt64,      MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclUint64,     MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat16,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat32,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat64,    MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_AVG,              ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_PREMULSUM_HOST,   ncclSuccess},
    {MX_REDUCESCATTER, ncclBfloat16,   MX_PREMULSUM_DEVICE, ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_AVG,              ncclInvalidArgument},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_PREMULSUM_HOST,   ncclInvalidArgument},
    {MX_REDUCESCATTER, ncclFloat8e4m3, MX_PREMULSUM_DEVICE, ncclInvalidArgument},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_SUM,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_PROD,             ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_MAX,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_MIN,              ncclSuccess},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_AVG,              ncclInvalidArgument},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_PREMULSUM_HOST,   ncclInvalidArgument},
    {MX_REDUCESCATTER, ncclFloat8e5m2, MX_PREMULSUM_DEVICE, ncclInvalidArgument},
};
#define MX_NCELLS (sizeof mx_cells / sizeof mx_cells[0])
_Static_assert(MX_NCELLS == 2 * 12 * 7 + 12, "12 dtypes x 7 ops x 2 reductions + 12 gathers");

/* The scalar 1 in each dtype's bytes, for the PreMulSum cells (little-endian). */
static const uint64_t mx_scalar_one[ncclNumTypes] = {
    [ncclInt8] = 1,          [ncclUint8] = 1,           [ncclInt32] = 1,
    [ncclUint32] = 1,        [ncclInt64] = 1,           [ncclUint64] = 1,
    [ncclFloat16] = 0x3c00,  [ncclFloat32] = 0x3f800000, [ncclFloat64] = 0x3ff0000000000000ull,
    [ncclBfloat16] = 0x3f80, [ncclFloat8e4m3] = 0x38,    [ncclFloat8e5m2] = 0x3c,
};

static const char* const mx_coll_names[] = {"AllReduce", "AllGather", "ReduceScatter"};
static const char* const mx_op_names[] = {"sum", "prod", "max", "min", "avg",
                                          "premulsum-host", "premulsum-device", "-"};

#endif
