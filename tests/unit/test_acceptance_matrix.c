/* The acceptance matrix (tests/acceptance_matrix.h) on the CPU: every cell's arguments
 * through snapccl's checks at world size 1, on a "fake" communicator (initialised and
 * registered, no transport or GPU behind it; calls that pass the checks are not issued).
 *   - standalone: the checks give NVIDIA's code, and a refusal leaves a reason naming
 *     the function and the dtype; the public entry point refuses the same cells;
 *   - interposed: snapccl takes a call only if its quiet checks pass, so a cell NVIDIA
 *     refuses is handed to NVIDIA's library (which then refuses it itself).
 * Plus the rules around the matrix: an empty call passes before the datatype rules, a
 * world size above 1 keeps fp8 PreMulSum, GPUs older than sm_90 refuse fp8 reductions.
 * The same cells on a GPU, against either library: tests/gpu/acceptance_matrix.c. */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../acceptance_matrix.h"
#include "coll.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "registry.h"

#define COUNT 8
static uint64_t g_send[COUNT * 2], g_recv[COUNT * 2];
static uint64_t g_device_scalar_stand_in; /* a device scalar is kept, never read, by checks */

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB"); /* standalone */
  snapccl_env_reload();
}
TestSuite(matrix, .init = setup);

static struct snapccl_comm* fake_new(int nranks) {
  struct snapccl_comm* c = NULL;
  cr_assert_eq(snapccl_comm_alloc(&c), ncclSuccess);
  cr_assert_eq(snapccl_config_parse(NULL, &c->config), ncclSuccess);
  c->nranks = nranks;
  c->rank = 0;
  atomic_store(&c->async_state, ncclSuccess);
  cr_assert_eq(snapccl_registry_add(c, c), ncclSuccess);
  return c;
}

static void fake_free(struct snapccl_comm* c) {
  if (snapccl_registry_remove(c) == c) snapccl_comm_free(c);
}

static const enum snapccl_coll_kind kind_of[] = {
    [MX_ALLREDUCE] = COLL_ALLREDUCE, [MX_ALLGATHER] = COLL_ALLGATHER,
    [MX_REDUCESCATTER] = COLL_REDUCESCATTER};

/* The cell's operator; *created says whether to destroy it afterwards. */
static ncclRedOp_t make_op(const struct mx_cell* m, struct snapccl_comm* c, int* created) {
  static const ncclRedOp_t builtin[] = {[MX_SUM] = ncclSum, [MX_PROD] = ncclProd,
                                        [MX_MAX] = ncclMax, [MX_MIN] = ncclMin,
                                        [MX_AVG] = ncclAvg, [MX_NO_OP] = ncclSum};
  *created = m->op == MX_PREMULSUM_HOST || m->op == MX_PREMULSUM_DEVICE;
  if (!*created) return builtin[m->op];
  ncclRedOp_t op;
  uint64_t one = mx_scalar_one[m->dtype];
  void* scalar = m->op == MX_PREMULSUM_HOST ? (void*)&one : (void*)&g_device_scalar_stand_in;
  ncclScalarResidence_t where =
      m->op == MX_PREMULSUM_HOST ? ncclScalarHostImmediate : ncclScalarDevice;
  cr_assert_eq(ncclRedOpCreatePreMulSum(&op, scalar, m->dtype, where, (ncclComm_t)c), ncclSuccess,
               "creating the operator: %s", ncclGetLastError(NULL));
  return op;
}

static ncclResult_t call_public(const struct mx_cell* m, ncclRedOp_t op, struct snapccl_comm* c) {
  ncclComm_t h = (ncclComm_t)c;
  switch (m->coll) {
    case MX_ALLREDUCE: return ncclAllReduce(g_send, g_recv, COUNT, m->dtype, op, h, NULL);
    case MX_ALLGATHER: return ncclAllGather(g_send, g_recv, COUNT, m->dtype, h, NULL);
    default: return ncclReduceScatter(g_send, g_recv, COUNT, m->dtype, op, h, NULL);
  }
}

#define CELL_FMT "%s %s %s"
#define CELL_ARGS(m) mx_coll_names[(m)->coll], snapccl_dtype_name((m)->dtype), mx_op_names[(m)->op]

Test(matrix, world_size_1_answers_as_nccl_2_28_3) {
  struct snapccl_comm* c = fake_new(1);
  int refused = 0;
  for (size_t i = 0; i < MX_NCELLS; i++) {
    const struct mx_cell* m = &mx_cells[i];
    int created;
    ncclRedOp_t op = make_op(m, c, &created);
    struct snapccl_coll out;
    snapccl_clear_last_error();
    ncclResult_t got = snapccl_coll_prepare(kind_of[m->coll], g_send, g_recv, COUNT, m->dtype, op,
                                            (ncclComm_t)c, NULL, "ncclMatrixCall", &out);
    cr_expect_eq(got, m->nccl_2_28_3, CELL_FMT ": %d, NCCL 2.28.3 answers %d (%s)", CELL_ARGS(m),
                 (int)got, (int)m->nccl_2_28_3, ncclGetLastError(NULL));
    /* Interposed, this decides: taken by snapccl, or handed to NVIDIA's library. */
    int taken = snapccl_coll_prepare_quiet(kind_of[m->coll], g_send, g_recv, COUNT, m->dtype, op,
                                           c, NULL, &out);
    cr_expect_eq(taken, m->nccl_2_28_3 == ncclSuccess,
                 CELL_FMT ": interposed, snapccl would %s it", CELL_ARGS(m),
                 taken ? "take" : "hand NVIDIA");
    if (m->nccl_2_28_3 != ncclSuccess) {
      refused++;
      const char* e = ncclGetLastError(NULL);
      cr_expect(strstr(e, "ncclMatrixCall") && strstr(e, snapccl_dtype_name(m->dtype)),
                CELL_FMT ": reason \"%s\" names neither the call nor the dtype", CELL_ARGS(m), e);
      snapccl_clear_last_error();
      got = call_public(m, op, c);
      cr_expect_eq(got, m->nccl_2_28_3, CELL_FMT " (public entry point): %d", CELL_ARGS(m),
                   (int)got);
      cr_expect(strstr(ncclGetLastError(NULL), "nccl") != NULL, CELL_FMT ": no reason left",
                CELL_ARGS(m));
    }
    if (created) cr_assert_eq(ncclRedOpDestroy(op, (ncclComm_t)c), ncclSuccess);
  }
  cr_expect_eq(refused, 2 * 2 * 3, "the table refuses 12 cells: 2 fp8 x 2 reductions x 3 ops");
  fake_free(c);
}

/* NCCL returns for count 0 before it compares datatypes (taskAppend). */
Test(matrix, empty_calls_pass_before_the_datatype_rules) {
  struct snapccl_comm* c = fake_new(1);
  struct snapccl_coll out;
  cr_expect_eq(snapccl_coll_prepare(COLL_REDUCESCATTER, NULL, NULL, 0, ncclFloat8e4m3, ncclAvg,
                                    (ncclComm_t)c, NULL, "t", &out), ncclSuccess, "%s",
               ncclGetLastError(NULL));
  ncclRedOp_t op;
  float s = 2.0f;
  cr_assert_eq(ncclRedOpCreatePreMulSum(&op, &s, ncclFloat32, ncclScalarHostImmediate,
                                        (ncclComm_t)c), ncclSuccess);
  /* An operator made for float32, used on float64: fine while empty, refused with data. */
  cr_expect_eq(ncclAllReduce(NULL, NULL, 0, ncclFloat64, op, (ncclComm_t)c, NULL), ncclSuccess,
               "%s", ncclGetLastError(NULL));
  snapccl_clear_last_error();
  cr_expect_eq(ncclAllReduce(g_send, g_recv, COUNT, ncclFloat64, op, (ncclComm_t)c, NULL),
               ncclInvalidArgument);
  cr_expect(strstr(ncclGetLastError(NULL), "made for float") != NULL, "%s",
            ncclGetLastError(NULL));
  cr_assert_eq(ncclRedOpDestroy(op, (ncclComm_t)c), ncclSuccess);
  /* An operator never created is refused whatever the count (ArgsCheck). */
  cr_expect_eq(ncclAllReduce(NULL, NULL, 0, ncclFloat32, op, (ncclComm_t)c, NULL),
               ncclInvalidArgument);
  fake_free(c);
}

/* Only the one-rank path lacks fp8 PreMulSum: two ranks reduce fp8 averages. */
Test(matrix, fp8_premulsum_beyond_world_size_1) {
  struct snapccl_comm* c = fake_new(2);
  struct snapccl_coll out;
  const ncclDataType_t fp8[] = {ncclFloat8e4m3, ncclFloat8e5m2};
  for (int i = 0; i < 2; i++) {
    cr_expect_eq(snapccl_coll_prepare(COLL_ALLREDUCE, g_send, g_recv, COUNT, fp8[i], ncclAvg,
                                      (ncclComm_t)c, NULL, "t", &out), ncclSuccess, "%s",
                 ncclGetLastError(NULL));
    cr_expect_eq(out.devop, DEVOP_PREMULSUM);
  }
  fake_free(c);
}

/* NCCL refuses fp8 reductions when any GPU is older than sm_90 (taskAppend's
 * minCompCap); gathers move bytes and stay allowed. */
Test(matrix, fp8_reductions_need_sm90) {
  struct snapccl_comm* c = fake_new(2);
  c->peers = calloc(2, sizeof *c->peers); /* freed with the communicator */
  cr_assert_not_null(c->peers);
  c->peers[0].cc_major = 9;
  c->peers[1].cc_major = 8;
  c->peers[1].cc_minor = 9;
  struct snapccl_coll out;
  snapccl_clear_last_error();
  cr_expect_eq(snapccl_coll_prepare(COLL_REDUCESCATTER, g_send, g_recv, COUNT, ncclFloat8e5m2,
                                    ncclSum, (ncclComm_t)c, NULL, "t", &out),
               ncclInvalidArgument);
  cr_expect(strstr(ncclGetLastError(NULL), "8.9") != NULL, "%s", ncclGetLastError(NULL));
  cr_expect_eq(snapccl_coll_prepare(COLL_ALLGATHER, g_send, g_recv, COUNT, ncclFloat8e5m2,
                                    ncclSum, (ncclComm_t)c, NULL, "t", &out), ncclSuccess);
  cr_expect_eq(snapccl_coll_prepare(COLL_ALLREDUCE, g_send, g_recv, COUNT, ncclBfloat16, ncclSum,
                                    (ncclComm_t)c, NULL, "t", &out), ncclSuccess);
  cr_expect_eq(snapccl_coll_prepare(COLL_ALLREDUCE, NULL, NULL, 0, ncclFloat8e4m3, ncclSum,
                                    (ncclComm_t)c, NULL, "t", &out), ncclSuccess);
  c->peers[1].cc_major = 9;
  cr_expect_eq(snapccl_coll_prepare(COLL_REDUCESCATTER, g_send, g_recv, COUNT, ncclFloat8e5m2,
                                    ncclSum, (ncclComm_t)c, NULL, "t", &out), ncclSuccess);
  fake_free(c);
}
