/* Bounded failure of the bootstrap: unreachable roots, missing and silent peers, abort
 * and destroyed peers end in an error within the timeout, never a hang. */
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


/* ---- bounded failure ---- */

Test(bootstrap, unreachable_root_fails_in_time) {
  set_timeout("1");
  uint16_t port;
  int hold = refused_port(&port);
  ncclUniqueId id;
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  u.nonce[0] = 42;
  u.family = AF_INET;
  u.port = htons(port);
  u.addr[0] = 127;
  u.addr[3] = 1;
  memcpy(id.internal, &u, sizeof u);
  struct snapccl_bootstrap* b = NULL;
  double t0 = now_s();
  ncclResult_t res = snapccl_bootstrap_init(&id, 0, 2, &b);
  double dt = now_s() - t0;
  cr_assert_eq(res, ncclRemoteError, "%s", snapccl_last_error());
  cr_assert_null(b);
  cr_assert_lt(dt, 3.0, "took %.2f s with a 1 s timeout", dt);
  cr_assert(strstr(snapccl_last_error(), "root") != NULL, "%s", snapccl_last_error());
  close(hold);
}

Test(bootstrap, missing_peer_times_out) {
  set_timeout("1");
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  struct snapccl_bootstrap* b = NULL;
  double t0 = now_s();
  ncclResult_t res = snapccl_bootstrap_init(&id, 0, 2, &b); /* rank 1 never comes */
  double dt = now_s() - t0;
  cr_assert_neq(res, ncclSuccess);
  cr_assert_null(b);
  cr_assert_lt(dt, 3.0, "took %.2f s with a 1 s timeout", dt);
}

Test(bootstrap, recv_from_silent_peer_times_out) {
  ncclUniqueId id;
  struct snapccl_bootstrap* b[2];
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 2, b);
  set_timeout("1");
  char c;
  double t0 = now_s();
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 7, &c, 1), ncclRemoteError);
  double dt = now_s() - t0;
  cr_assert_lt(dt, 3.0, "took %.2f s with a 1 s timeout", dt);
  cr_assert(strstr(snapccl_last_error(), "rank 1: receive from rank 0 tag 7") != NULL, "%s",
            snapccl_last_error());
  /* The ring stays usable after a failed tagged receive. */
  set_timeout("10");
  cr_assert_eq(snapccl_bootstrap_send(b[0], 1, 8, "x", 1), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 8, &c, 1), ncclSuccess);
  cr_assert_eq(c, 'x');
  snapccl_bootstrap_destroy(b[0]);
  snapccl_bootstrap_destroy(b[1]);
}

struct blocked_recv {
  struct snapccl_bootstrap* b;
  ncclResult_t res;
  double returned_at;
};

static void* blocked_recv_main(void* p) {
  struct blocked_recv* r = p;
  char c;
  r->res = snapccl_bootstrap_recv(r->b, 0, 5, &c, 1);
  r->returned_at = now_s();
  return NULL;
}

Test(bootstrap, abort_unblocks_recv) {
  set_timeout("30");
  ncclUniqueId id;
  struct snapccl_bootstrap* b[2];
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 2, b);
  struct blocked_recv r = {b[1], ncclSuccess, 0};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, blocked_recv_main, &r), 0);
  sleep_ms(200);
  double t0 = now_s();
  snapccl_bootstrap_abort(b[1]);
  pthread_join(th, NULL);
  cr_assert_neq(r.res, ncclSuccess);
  cr_assert_lt(r.returned_at - t0, 1.0, "recv returned %.3f s after abort", r.returned_at - t0);
  /* Later operations fail at once too. */
  char c;
  t0 = now_s();
  cr_assert_neq(snapccl_bootstrap_recv(b[1], 0, 5, &c, 1), ncclSuccess);
  cr_assert_neq(snapccl_bootstrap_barrier(b[1]), ncclSuccess);
  cr_assert_neq(snapccl_bootstrap_send(b[1], 0, 5, &c, 1), ncclSuccess);
  cr_assert_lt(now_s() - t0, 1.0);
  snapccl_bootstrap_destroy(b[0]);
  snapccl_bootstrap_destroy(b[1]);
}

/* A destroyed rank makes its peer's ring operation fail (connection closed) rather
 * than wait for the full timeout. */
Test(bootstrap, destroyed_peer_fails_ring_promptly) {
  set_timeout("30");
  ncclUniqueId id;
  struct snapccl_bootstrap* b[2];
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 2, b);
  snapccl_bootstrap_destroy(b[0]);
  double t0 = now_s();
  cr_assert_eq(snapccl_bootstrap_barrier(b[1]), ncclRemoteError);
  cr_assert_lt(now_s() - t0, 2.0);
  snapccl_bootstrap_destroy(b[1]);
}

