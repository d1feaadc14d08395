/* A prepared call on its way to an algorithm: checked at a group's end, issued now or
 * then, estimated for ncclGroupSimulateEnd. The algorithm is chosen once (select.c) and
 * kept in the call. */
#include "algos/algo.h"
#include "coll.h"
#include "error.h"
#include "host_profile.h"

ncclResult_t snapccl_coll_check(struct snapccl_coll* coll) {
  if (coll->algo) return ncclSuccess;
  return snapccl_algo_select(coll, &coll->algo);
}

ncclResult_t snapccl_coll_issue(const struct snapccl_coll* coll) {
  const struct snapccl_algo* a = coll->algo;
  if (!a) SNAP_CHECK(snapccl_algo_select(coll, &a));
  SNAP_PROF_MARK(PROF_SELECT);
  return a->launch(coll);
}

double snapccl_coll_estimate_us(const struct snapccl_coll* coll) {
  const struct snapccl_algo* a;
  if (snapccl_algo_select(coll, &a) != ncclSuccess) return 0.0;
  return a->cost_us(coll);
}
