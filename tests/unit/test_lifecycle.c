/* A communicator's end, without a GPU: ncclCommDestroy, ncclCommAbort, ncclCommFinalize
 * and ncclCommShrink on communicators whose init is deferred to an open group or still
 * running, and the bookkeeping of shrinks. Every call must return, with NCCL's code. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm.h"
#include "env.h"
#include "error.h"
#include "nccl.h"

static void setup(void) {
  unsetenv("SNAPCCL_NCCL_LIB");
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

TestSuite(shrink, .init = setup);

/* The tag that carries a shrunk communicator's id: never negative (it was computed
 * with a signed multiplication that overflowed from the 32768th shrink on), and
 * distinct between shrinks close in sequence. */
Test(shrink, tag_stays_in_range) {
  const unsigned seqs[] = {0, 1, 32767, 32768, 32769, 65535, 65536, 1u << 20, UINT_MAX};
  for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
    int t = snapccl_shrink_tag(seqs[i]);
    cr_assert_geq(t, 0, "shrink %u: tag %d", seqs[i], t);
    cr_assert_neq(t, snapccl_shrink_tag(seqs[i] + 1), "shrinks %u and %u share a tag", seqs[i],
                  seqs[i] + 1);
  }
  for (unsigned s = 0; s < 70000; s++) cr_assert_geq(snapccl_shrink_tag(s), 0, "shrink %u", s);
}

/* ---- ncclCommAbort of an init in progress ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void long_bootstrap_timeout(void) {
  setup();
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "30", 1);
  snapccl_env_reload();
}

TestSuite(abort, .init = long_bootstrap_timeout, .timeout = 60);

/* ncclCommInitRank's path after its argument checks and cudaGetDevice (which fails on
 * a machine without a CUDA driver): the communicator, its handle, its init. */
static ncclResult_t create(ncclComm_t* c, const ncclUniqueId* id, int nranks, int rank,
                           int blocking) {
  struct snapccl_config cfg;
  cr_assert_eq(snapccl_config_parse(NULL, &cfg), ncclSuccess);
  cfg.blocking = blocking;
  return snapccl_comm_create(c, id, nranks, rank, &cfg, 0);
}

/* A non-blocking init whose peer never comes waits at the root; the abort cancels it
 * (the rendezvous runs before any CUDA call, so no GPU is needed). The abort used to
 * return only when the 30 s bootstrap timeout ended the init. */
Test(abort, cancels_nonblocking_init) {
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL;
  cr_assert_eq(create(&c, &id, 2, 0, 0), ncclInProgress, "%s", ncclGetLastError(NULL));
  sleep_ms(200);
  ncclResult_t st = ncclSuccess;
  cr_assert_eq(ncclCommGetAsyncError(c, &st), ncclSuccess);
  cr_assert_eq(st, ncclInProgress, "the init ended without its peer");
  double t0 = now_s();
  cr_assert_eq(ncclCommAbort(c), ncclSuccess, "%s", ncclGetLastError(NULL));
  double dt = now_s() - t0;
  cr_assert_lt(dt, 5.0, "ncclCommAbort took %.1f s (the bootstrap timeout is 30 s)", dt);
  cr_assert_eq(ncclCommGetAsyncError(c, &st), ncclInvalidArgument, "the handle survived the abort");
}

/* ---- the end of a communicator whose init is deferred to the open group ---- */

static void short_bootstrap_timeout(void) {
  setup();
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "1", 1);
  snapccl_env_reload();
}

TestSuite(in_group, .init = short_bootstrap_timeout, .timeout = 30);

/* NCCL's Destroy inside a group takes effect at the group's end; here the init, which
 * is deferred to that same end, runs first (and fails: rank 1 never comes), then the
 * communicator is destroyed. Destroy used to wait for that init for ever. */
Test(in_group, destroy_waits_for_group_end) {
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL;
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  cr_assert_eq(create(&c, &id, 2, 0, 1), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclCommDestroy(c), ncclSuccess, "%s", ncclGetLastError(NULL));
  ncclResult_t st;
  cr_assert_eq(ncclCommGetAsyncError(c, &st), ncclInvalidArgument, "the handle outlived Destroy");
  cr_assert_eq(ncclCommDestroy(c), ncclInvalidArgument, "destroyed twice");
  cr_assert_eq(ncclGroupEnd(), ncclRemoteError, "%s", ncclGetLastError(NULL));
}

/* Abort inside the group: at once for the init (it never starts its rendezvous), the
 * rest at the group's end, which has nothing to report. */
Test(in_group, abort_cancels_deferred_init) {
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "20", 1);
  snapccl_env_reload();
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL;
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  cr_assert_eq(create(&c, &id, 2, 0, 1), ncclSuccess, "%s", ncclGetLastError(NULL));
  double t0 = now_s();
  cr_assert_eq(ncclCommAbort(c), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclGroupEnd(), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_lt(now_s() - t0, 5.0, "the aborted init ran into the 20 s bootstrap timeout");
  ncclResult_t st;
  cr_assert_eq(ncclCommGetAsyncError(c, &st), ncclInvalidArgument, "the handle outlived Abort");
}

/* Finalize inside the group, then Destroy: both at the group's end, in that order. */
Test(in_group, finalize_then_destroy) {
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL;
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  cr_assert_eq(create(&c, &id, 2, 0, 1), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclCommFinalize(c), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclCommDestroy(c), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclGroupEnd(), ncclRemoteError, "%s", ncclGetLastError(NULL));
}

/* A shrink needs its parent ready, which an init deferred to this group's end cannot
 * be before it: NCCL would start the child next to the parent's init (its
 * ncclCommEnsureReady sees no error yet); here it is refused, saying why. */
Test(in_group, shrink_of_pending_parent_refused) {
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL, child = NULL;
  int exclude[1] = {1};
  cr_assert_eq(ncclGroupStart(), ncclSuccess);
  cr_assert_eq(create(&c, &id, 2, 0, 1), ncclSuccess, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclCommShrink(c, exclude, 1, &child, NULL, NCCL_SHRINK_DEFAULT), ncclInvalidArgument);
  cr_assert(strstr(ncclGetLastError(NULL), "still initializing") != NULL, "%s",
            ncclGetLastError(NULL));
  cr_assert_eq(ncclCommAbort(c), ncclSuccess);
  cr_assert_eq(ncclGroupEnd(), ncclSuccess, "%s", ncclGetLastError(NULL));
}

/* Outside a group, NCCL answers Destroy and Finalize of a communicator still
 * initializing with ncclInvalidArgument (and the handle stays valid). */
Test(in_group, destroy_of_nonblocking_init_refused) {
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "20", 1);
  snapccl_env_reload();
  ncclUniqueId id;
  cr_assert_eq(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t c = NULL;
  cr_assert_eq(create(&c, &id, 2, 0, 0), ncclInProgress, "%s", ncclGetLastError(NULL));
  cr_assert_eq(ncclCommDestroy(c), ncclInvalidArgument);
  cr_assert(strstr(ncclGetLastError(NULL), "still initializing") != NULL, "%s",
            ncclGetLastError(NULL));
  cr_assert_eq(ncclCommFinalize(c), ncclInvalidArgument);
  ncclResult_t st;
  cr_assert_eq(ncclCommGetAsyncError(c, &st), ncclSuccess);
  cr_assert_eq(st, ncclInProgress);
  cr_assert_eq(ncclCommAbort(c), ncclSuccess);
}
