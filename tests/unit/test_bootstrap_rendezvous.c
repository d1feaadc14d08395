/* The TCP bootstrap working: rendezvous, ring collectives (allgather, bcast, barrier)
 * and tagged messages across forked processes and threads. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bootstrap.h"
#include "bootstrap_util.h"
#include "env.h"
#include "error.h"
#include "socket.h"

TestSuite(bootstrap, .init = setup, .timeout = 60);

/* ---- functional cases ---- */

Test(bootstrap, one_rank) {
  ncclUniqueId id;
  struct snapccl_bootstrap* b = NULL;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_init(&id, 0, 1, &b), ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(rank_main_with(b, 0, 1), 0);
  snapccl_bootstrap_destroy(b);
}

Test(bootstrap, two_ranks) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked(&id, 2, rank_main, 20);
}

Test(bootstrap, three_ranks) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked(&id, 3, rank_main, 20);
}

Test(bootstrap, eight_ranks) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  run_forked(&id, 8, rank_main, 30);
}

struct rank_thread {
  struct snapccl_bootstrap* b;
  int rank, n, rc;
};

static void* rank_thread_main(void* p) {
  struct rank_thread* t = p;
  t->rc = rank_main_with(t->b, t->rank, t->n);
  return NULL;
}

Test(bootstrap, four_ranks_as_threads) {
  ncclUniqueId id;
  struct snapccl_bootstrap* b[4];
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 4, b);
  pthread_t th[4];
  struct rank_thread t[4];
  for (int r = 0; r < 4; r++) {
    t[r] = (struct rank_thread){b[r], r, 4, -1};
    cr_assert_eq(pthread_create(&th[r], NULL, rank_thread_main, &t[r]), 0);
  }
  for (int r = 0; r < 4; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < 4; r++) {
    cr_expect_eq(t[r].rc, 0, "rank %d failed its check at line %d", r, t[r].rc);
    snapccl_bootstrap_destroy(b[r]);
  }
}

Test(bootstrap, size_mismatch_is_invalid_usage) {
  ncclUniqueId id;
  struct snapccl_bootstrap* b[2];
  char buf[32] = {0};
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 2, b);
  /* Arriving while the receive waits (direct path) and queued first (queue path). */
  cr_assert_eq(snapccl_bootstrap_send(b[0], 1, 1, buf, 10), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 1, buf, 20), ncclInvalidUsage);
  cr_assert_eq(snapccl_bootstrap_send(b[0], 1, 3, buf, 10), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_send(b[0], 1, 2, buf, 10), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 2, buf, 10), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 3, buf, 11), ncclInvalidUsage);
  cr_assert(strstr(snapccl_last_error(), "expects 11") != NULL, "%s", snapccl_last_error());
  snapccl_bootstrap_destroy(b[0]);
  snapccl_bootstrap_destroy(b[1]);
}

