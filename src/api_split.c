/* ncclCommSplit and ncclCommShrink: a new communicator whose rendezvous is arranged
 * through the parent's bootstrap, then made by the ordinary init path. */
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bootstrap.h"
#include "comm.h"
#include "error.h"
#include "group.h"
#include "interpose.h"
#include "log.h"
#include "oob.h"
#include "registry.h"
#include "transport/transport.h"

/* Tag of the point-to-point message carrying a shrunk communicator's id: a fixed low
 * half, and the shrink's sequence number in the high half. */
#define TAG_SHRINK_ID 0x5348

int snapccl_shrink_tag(unsigned seq) {
  /* 15 bits of the sequence: the tag stays a non-negative int (no signed overflow), and
   * two shrinks of one parent in flight at once differ unless 32768 shrinks apart. */
  return (int)((seq & 0x7fffu) << 16 | TAG_SHRINK_ID);
}

struct split_entry {
  int color, key, rank, pad;
};

static int by_key_then_rank(const void* a, const void* b) {
  const struct split_entry *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return (x->rank > y->rank) - (x->rank < y->rank);
}

static ncclResult_t make_child(struct snapccl_comm* parent, ncclComm_t* newcomm,
                               const ncclUniqueId* id, int nranks, int rank,
                               const struct snapccl_config* cfg) {
  return snapccl_comm_create(newcomm, id, nranks, rank, cfg, parent->cuda_dev);
}

NCCL_API(ncclResult_t, ncclCommSplit, ncclComm_t comm, int color, int key, ncclComm_t* newcomm,
         ncclConfig_t* config) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh))
    return snapccl_adopt_result(snapccl_real()->ncclCommSplit(rh, color, key, newcomm, config), newcomm);
  struct snapccl_comm* p;
  struct snapccl_config cfg;
  ncclResult_t res = ncclSuccess;
  SNAP_CHECK(snapccl_comm_get_ready(comm, __func__, &p));
  if (!newcomm) SNAP_FAIL(ncclInvalidArgument, "newcomm argument is NULL");
  if (color < 0 && color != NCCL_SPLIT_NOCOLOR)
    SNAP_FAIL(ncclInvalidArgument, "color %d is negative and not NCCL_SPLIT_NOCOLOR", color);
  if (config) SNAP_CHECK(snapccl_config_parse(config, &cfg));
  else cfg = p->config; /* the child inherits the parent's configuration */

  int n = p->nranks;
  struct split_entry* all = calloc((size_t)n, sizeof *all);
  ncclUniqueId* ids = calloc((size_t)n, sizeof *ids);
  struct split_entry* members = calloc((size_t)n, sizeof *members);
  if (!all || !ids || !members) {
    res = snapccl_error(ncclSystemError, __func__, "out of memory");
    goto out;
  }
  all[p->rank] = (struct split_entry){color, key, p->rank, 0};
  SNAP_CHECK_GOTO(snapccl_oob_allgather(p, all, sizeof *all), res, out);

  int m = 0, newrank = -1;
  for (int r = 0; r < n; r++)
    if (color != NCCL_SPLIT_NOCOLOR && all[r].color == color) members[m++] = all[r];
  qsort(members, (size_t)m, sizeof *members, by_key_then_rank);
  for (int i = 0; i < m; i++)
    if (members[i].rank == p->rank) newrank = i;
  /* The first member of each color hosts the child's rendezvous. */
  if (m > 0 && members[0].rank == p->rank)
    SNAP_CHECK_GOTO(snapccl_bootstrap_create_root(&ids[p->rank]), res, out);
  SNAP_CHECK_GOTO(snapccl_oob_allgather(p, ids, sizeof *ids), res, out);
  if (color == NCCL_SPLIT_NOCOLOR) {
    *newcomm = NULL;
    goto out;
  }
  res = make_child(p, newcomm, &ids[members[0].rank], m, newrank, &cfg);
  INFO(SUB_INIT, "comm %p rank %d split color %d key %d -> comm %p rank %d of %d", (void*)comm,
       p->rank, color, key, (void*)*newcomm, newrank, m);
out:
  free(all);
  free(ids);
  free(members);
  return res;
}

NCCL_API(ncclResult_t, ncclCommShrink, ncclComm_t comm, int* excludeRanksList,
         int excludeRanksCount, ncclComm_t* newcomm, ncclConfig_t* config, int shrinkFlags) {
  ncclComm_t rh;
  if (snapccl_forward_target(comm, &rh)) {
    struct snapccl_comm* ours = snapccl_registry_find(comm);
    if (ours && (shrinkFlags & NCCL_SHRINK_ABORT)) { /* our kernels may wait for the dead */
      snapccl_transport_abort(ours);
      snapccl_transport_quiesce(ours, 1.0);
    }
    return snapccl_adopt_result(snapccl_real()->ncclCommShrink(rh, excludeRanksList, excludeRanksCount,
                                                      newcomm, config, shrinkFlags), newcomm);
  }
  struct snapccl_comm* p;
  struct snapccl_config cfg;
  SNAP_CHECK(snapccl_comm_get(comm, __func__, &p));
  if (!newcomm) SNAP_FAIL(ncclInvalidArgument, "newcomm argument is NULL");
  if (excludeRanksCount < 0 || (excludeRanksCount > 0 && !excludeRanksList))
    SNAP_FAIL(ncclInvalidArgument, "invalid exclude list (%d ranks at %p)", excludeRanksCount,
              (void*)excludeRanksList);
  if (shrinkFlags & ~(NCCL_SHRINK_ABORT))
    SNAP_FAIL(ncclInvalidArgument, "unknown shrink flags 0x%x", shrinkFlags);
  if (config) SNAP_CHECK(snapccl_config_parse(config, &cfg));
  else cfg = p->config;
  /* NCCL's answer to a parent still initializing (ncclCommEnsureReady), not a wait that
   * might never end (its init may be deferred to this very thread's ncclGroupEnd). A
   * parent in error state is what a shrink is for: that one goes on. */
  if (atomic_load(&p->init_busy) != INIT_SETTLED || atomic_load(&p->async_state) == ncclInProgress)
    SNAP_FAIL(ncclInvalidArgument, "communicator %p is still initializing (non-blocking init, or "
              "an init deferred to ncclGroupEnd); shrink it once it is ready", (void*)comm);

  int n = p->nranks;
  char* excluded = calloc((size_t)n, 1);
  if (!excluded) SNAP_FAIL(ncclSystemError, "out of memory");
  for (int i = 0; i < excludeRanksCount; i++) {
    int r = excludeRanksList[i];
    if (r < 0 || r >= n) {
      free(excluded);
      SNAP_FAIL(ncclInvalidArgument, "excluded rank %d out of range [0, %d)", r, n);
    }
    excluded[r] = 1;
  }
  if (excluded[p->rank]) {
    free(excluded);
    SNAP_FAIL(ncclInvalidArgument, "rank %d is in its own exclude list", p->rank);
  }
  if (shrinkFlags & NCCL_SHRINK_ABORT) {
    /* Pending kernels may wait for the excluded (perhaps dead) ranks: stop them. */
    snapccl_transport_abort(p);
    snapccl_transport_quiesce(p, 1.0);
  }
  int m = 0, newrank = -1, root = -1;
  for (int r = 0; r < n; r++) {
    if (excluded[r]) continue;
    if (root < 0) root = r;
    if (r == p->rank) newrank = m;
    m++;
  }
  free(excluded);
  /* The ring of the parent may pass through dead ranks, so the lowest survivor sends the
   * child's id to each survivor point to point. */
  ncclUniqueId id;
  int tag = snapccl_shrink_tag(atomic_fetch_add(&p->shrink_seq, 1));
  if (p->rank == root) {
    SNAP_CHECK(snapccl_bootstrap_create_root(&id));
    for (int r = 0; r < n; r++) {
      int skip = r == root;
      for (int i = 0; i < excludeRanksCount && !skip; i++) skip = excludeRanksList[i] == r;
      if (!skip) SNAP_CHECK(snapccl_bootstrap_send(p->boot, r, tag, &id, sizeof id));
    }
  } else {
    SNAP_CHECK(snapccl_bootstrap_recv(p->boot, root, tag, &id, sizeof id));
  }
  ncclResult_t res = make_child(p, newcomm, &id, m, newrank, &cfg);
  INFO(SUB_INIT, "comm %p rank %d shrink (%d excluded) -> comm %p rank %d of %d", (void*)comm,
       p->rank, excludeRanksCount, (void*)*newcomm, newrank, m);
  return res;
}
