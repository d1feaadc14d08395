/* A rank the root will not admit hears why, in its own error: the root's reason
 * travels back as a message (before, the rank saw only "peer closed the connection",
 * and the reason was logged in the root's process alone), and an id that was used up
 * says so, in the root's process and in others. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootstrap.h"
#include "bootstrap_util.h"
#include "env.h"
#include "error.h"

TestSuite(bootstrap, .init = setup, .timeout = 60);

/* A forged rank 0 of 2 is in (its HELLO was sent before the next rank even connects,
 * so the root reads it first); then a real rank with (rank, nranks) is refused with a
 * reason containing `needle`, and hears it. */
static void refused_with(int rank, int nranks, const char* needle) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  int first = raw_connect(&id);
  struct hello_msg m = forged_hello(&id, 0, 2, 9);
  raw_send(first, &m, sizeof m);
  struct snapccl_bootstrap* b = (struct snapccl_bootstrap*)&id;
  ncclResult_t r = snapccl_bootstrap_init(&id, rank, nranks, &b);
  const char* err = snapccl_last_error();
  cr_assert_eq(r, ncclInvalidUsage, "rank %d of %d: %d, %s", rank, nranks, r, err);
  cr_assert_null(b);
  cr_assert(strstr(err, "refused this rank") && strstr(err, needle), "%s", err);
  close(first);
}

Test(bootstrap, nranks_mismatch_reason_reaches_rank) { refused_with(1, 3, "nranks differs"); }

Test(bootstrap, duplicate_rank_reason_reaches_rank) { refused_with(0, 2, "duplicate rank"); }

static void meet_in_threads(const ncclUniqueId* id) {
  struct snapccl_bootstrap* b[2];
  init_in_threads(id, 2, b);
  snapccl_bootstrap_destroy(b[0]);
  snapccl_bootstrap_destroy(b[1]);
}

/* Reusing an id in the root's process fails at once, saying why. (It used to retry
 * "Connection refused" until the timeout.) */
Test(bootstrap, reused_id_in_root_process) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  meet_in_threads(&id);
  struct snapccl_bootstrap* b = NULL;
  double t0 = now_s();
  cr_assert_eq(snapccl_bootstrap_init(&id, 0, 2, &b), ncclInvalidUsage, "%s",
               snapccl_last_error());
  cr_assert_lt(now_s() - t0, 5.0);
  cr_assert(strstr(snapccl_last_error(), "used up") != NULL, "%s", snapccl_last_error());
  cr_assert_eq(snapccl_bootstrap_check_id(&id), ncclInvalidUsage);
}

static void meet_now(void* arg) { meet_in_threads(arg); }

/* The rank reusing the id lives in another process, which never saw the rendezvous:
 * the ended root, still listening for a while, tells it. */
static int reuse_rank(const ncclUniqueId* id, int rank, int n) {
  (void)n;
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, 1, 2, &b) == ncclInvalidUsage);
  RCHECK(strstr(snapccl_last_error(), "used up") != NULL);
  RCHECK(strstr(snapccl_last_error(), "refused this rank") != NULL);
  return 0;
}

Test(bootstrap, reused_id_in_another_process) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked_hook(&id, 1, reuse_rank, 20, meet_now, &id);
}

/* A rank whose root gave up waiting for the others hears that, not "peer closed". */
static int lonely_rank(const ncclUniqueId* id, int rank, int n) {
  (void)n;
  set_timeout("10"); /* longer than the root's: the root gives up first */
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, 0, 2, &b) == ncclRemoteError);
  RCHECK(strstr(snapccl_last_error(), "gave up") != NULL);
  RCHECK(strstr(snapccl_last_error(), "1 of 2 ranks") != NULL);
  return 0;
}

Test(bootstrap, root_gave_up_reason_reaches_rank) {
  set_timeout("1");
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked(&id, 1, lonely_rank, 20);
}
