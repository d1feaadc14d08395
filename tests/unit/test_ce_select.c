/* The copy-engine algorithms' host side without a GPU (src/algos/ce_*.c): on a fake
 * communicator whose transport says "usable" (as test_lowprec_settings.c), they are never
 * the selector's own choice, SNAPCCL_ALGO picks them, they decline one rank and per-rank
 * PreMulSum scalars (not ncclAvg), and the staging geometry and the flag's step limit are
 * what docs/ARCHITECTURE.md ("Copy-engine algorithms") says. */
#include <criterion/criterion.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "algos/algo.h"
#include "algos/ce_common.h"
#include "comm.h"
#include "fake_comm.h"
#include "env.h"
#include "nccl.h"
#include "registry.h"
#include "snapccl.h"
#include "transport/transport_impl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char* const colls[] = {"allreduce", "allgather", "reducescatter"};
static const char* const ce_names[] = {"ce_allreduce", "ce_allgather", "ce_reducescatter"};

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB");
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_LOWPREC");
  snapccl_env_reload();
}

static struct snapccl_comm* fake_new(int nranks) { return fake_comm_new(nranks, 16); }

static const struct snapccl_algo* find(const char* name) {
  for (int i = 0; i < snapccl_algo_count(); i++)
    if (!strcmp(snapccl_algo_at(i)->name, name)) return snapccl_algo_at(i);
  cr_assert_fail("no %s in the table", name);
  return NULL;
}

static struct snapccl_coll prepared(struct snapccl_comm* c, int kind, size_t count, ncclDataType_t dt,
                                    ncclRedOp_t op) {
  static char dummy[16];
  struct snapccl_coll coll;
  cr_assert(snapccl_coll_prepare_quiet((enum snapccl_coll_kind)kind, dummy, dummy, count, dt, op, c, NULL, &coll));
  return coll;
}

TestSuite(ce_select, .init = setup);

Test(ce_select, never_chosen_unless_named) {
  struct snapccl_comm* c = fake_new(2);
  static const size_t counts[] = {1, 1 << 16, 1 << 26, (size_t)1 << 30};
  for (size_t k = 0; k < NELEMS(counts); k++)
    for (int i = 0; i < 3; i++) {
      const char* name = NULL;
      cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, colls[i], counts[k], ncclBfloat16, ncclSum, &name), ncclSuccess);
      cr_assert(strncmp(name, "ce_", 3) != 0, "%s of %zu picks %s", colls[i], counts[k], name);
    }
  setenv("SNAPCCL_ALGO", "allreduce:ce_allreduce,allgather:ce_allgather,reducescatter:ce_reducescatter", 1);
  snapccl_env_reload();
  for (int i = 0; i < 3; i++) {
    const char* name = NULL;
    cr_assert_eq(snapcclQueryAlgorithm((ncclComm_t)c, colls[i], 12345, ncclInt8, ncclMax, &name), ncclSuccess,
                 "%s", ncclGetLastError(NULL));
    cr_assert_str_eq(name, ce_names[i]);
  }
  fake_comm_free(c);
}

Test(ce_select, refusals) {
  struct snapccl_comm* one = fake_new(1);
  struct snapccl_comm* two = fake_new(2);
  for (int i = 0; i < 3; i++) {
    const struct snapccl_algo* a = find(ce_names[i]);
    struct snapccl_coll x = prepared(one, i, 4096, ncclFloat32, ncclSum);
    cr_assert_not_null(a->can_run(&x), "%s runs one rank", ce_names[i]);
    for (int d = 0; d < 2; d++) {
      struct snapccl_coll y = prepared(two, i, 4097, d ? ncclBfloat16 : ncclInt64, ncclAvg);
      cr_assert_null(a->can_run(&y), "%s declines ncclAvg: %s", ce_names[i], a->can_run(&y));
      cr_assert(a->cost_us(&y) > 0, "%s costs nothing", ce_names[i]);
    }
    struct snapccl_coll z = prepared(two, i, 4097, ncclFloat32, ncclSum);
    z.devop = DEVOP_PREMULSUM;
    z.scalar_mode = SCALAR_BITS; /* a PreMulSum with a host scalar of this rank's own */
    if (i == COLL_ALLGATHER) cr_assert_null(a->can_run(&z), "all-gather moves bytes");
    else cr_assert_not_null(a->can_run(&z), "%s takes a per-rank PreMulSum scalar", ce_names[i]);
  }
  fake_comm_free(one);
  fake_comm_free(two);
}

/* 2 ranks, 16 blocks, 64 MiB: chunks of 512 KiB; staging of 4 x 2 x 16 of them = 64 MiB as
 * two slots of 32 MiB; areas of 32 MiB (all-gather) or 16 MiB (one per rank). */
Test(ce_select, geometry) {
  struct snapccl_comm* c = fake_new(2);
  struct snapccl_coll x = prepared(c, COLL_ALLGATHER, 4096, ncclFloat32, ncclSum);
  struct snapccl_ce_geom g;
  snapccl_ce_geometry(&x, 1, &g);
  cr_assert_eq(g.slot_bytes, 32ull << 20);
  cr_assert_eq(g.area_bytes, 32ull << 20);
  snapccl_ce_geometry(&x, 2, &g);
  cr_assert_eq(g.area_bytes, 16ull << 20);
  const struct snapccl_ws_layout* lay = &c->transport->lay;
  cr_assert(lay->rs_off + 2 * g.slot_bytes <= lay->total, "the slots pass the workspace's end");
  cr_assert(lay->ce_flags_off + SNAPCCL_MAX_RANKS * 8 <= lay->lamport_off, "the flags overlap the Lamport buffers");
  cr_assert_null(snapccl_ce_too_many(SNAPCCL_CE_MAX_STEPS));
  cr_assert_not_null(snapccl_ce_too_many(SNAPCCL_CE_MAX_STEPS + 1));
  fake_comm_free(c);
}
