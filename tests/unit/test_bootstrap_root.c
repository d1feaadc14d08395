/* The root of a rendezvous and the ids it hands out: id checks, and refusal of forged
 * or mistaken peers (wrong nonce, truncated or oversized messages, bad ranks) while the
 * honest ranks still meet. */
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

/* ---- ids ---- */

Test(bootstrap, check_id) {
  ncclUniqueId id, bad;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  cr_assert_eq(snapccl_bootstrap_check_id(&id), ncclSuccess);
  struct snapccl_unique_id u = id_fields(&id);
  cr_assert_eq(u.magic, SNAPCCL_ID_MAGIC);
  cr_assert(u.nonce[0] || u.nonce[1]);

  memset(&bad, 0, sizeof bad);
  snapccl_clear_last_error();
  cr_assert_eq(snapccl_bootstrap_check_id(&bad), ncclInvalidArgument);
  cr_assert(strstr(snapccl_last_error(), "magic") != NULL, "%s", snapccl_last_error());

  struct snapccl_unique_id v = u;
  v.family = 12345;
  memcpy(bad.internal, &v, sizeof v);
  cr_assert_eq(snapccl_bootstrap_check_id(&bad), ncclInvalidArgument);
  cr_assert(strstr(snapccl_last_error(), "address") != NULL, "%s", snapccl_last_error());
  v = u;
  v.port = 0;
  memcpy(bad.internal, &v, sizeof v);
  cr_assert_eq(snapccl_bootstrap_check_id(&bad), ncclInvalidArgument);

  struct snapccl_bootstrap* b = (struct snapccl_bootstrap*)&bad; /* must be reset to NULL */
  cr_assert_eq(snapccl_bootstrap_init(&bad, 0, 1, &b), ncclInvalidArgument);
  cr_assert_null(b);
  cr_assert_eq(snapccl_bootstrap_init(&id, 2, 2, &b), ncclInvalidArgument);
  cr_assert_eq(snapccl_bootstrap_init(&id, 0, 0, &b), ncclInvalidArgument);
}

/* ---- refusals at the root ---- */

Test(bootstrap, wrong_nonce_refused) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  /* Claims rank 0 first; were it accepted, the real rank 0 would be a duplicate. */
  int fd = raw_connect(&id);
  struct hello_msg m = forged_hello(&id, 0, 2, 9);
  m.nonce[1] ^= 1;
  raw_send(fd, &m, sizeof m);
  cr_assert(closed_within(fd, 2000), "root kept a peer with a wrong nonce");
  close(fd);
  run_forked(&id, 2, rank_small, 20);
}

Test(bootstrap, truncated_hello_refused) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  struct hello_msg m = forged_hello(&id, 0, 3, 9);
  /* Half a HELLO then silence: must not stall the root (ranks use 10 s timeouts, we
   * allow them 8 s in all, so a root stuck on this peer fails the test). */
  int stalled = raw_connect(&id);
  raw_send(stalled, &m, sizeof m / 2);
  /* Half a HELLO then close. */
  int cut = raw_connect(&id);
  raw_send(cut, &m, sizeof m - 1);
  close(cut);
  /* Header only, wrong magic. */
  int junk = raw_connect(&id);
  struct wire_hdr h = {0xdeadbeef, MSG_HELLO, sizeof m - sizeof m.h};
  raw_send(junk, &h, sizeof h);
  cr_assert(closed_within(junk, 2000), "root kept a peer with a bad magic");
  close(junk);
  run_forked(&id, 3, rank_small, 8);
  /* The root finished: it closed the stalled peer too. */
  cr_assert(closed_within(stalled, 2000), "root left the truncated peer open");
  close(stalled);
}

Test(bootstrap, oversized_length_refused) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  int fd = raw_connect(&id);
  struct wire_hdr h = {WIRE_MAGIC, MSG_HELLO, 1ull << 40};
  raw_send(fd, &h, sizeof h);
  /* Refused on the header alone, long before the 10 s timeout. */
  double t0 = now_s();
  cr_assert(closed_within(fd, 2000), "root kept a peer announcing 1 TiB");
  cr_assert_lt(now_s() - t0, 2.0);
  close(fd);
  /* A HELLO-sized length with the wrong type is refused as well. */
  fd = raw_connect(&id);
  h = (struct wire_hdr){WIRE_MAGIC, MSG_TABLE, 48};
  raw_send(fd, &h, sizeof h);
  cr_assert(closed_within(fd, 2000), "root kept a peer sending a TABLE");
  close(fd);
  run_forked(&id, 2, rank_small, 20);
}

/* Ranks out of range, disagreeing nranks and duplicates are refused; the rendezvous
 * of the peers that were accepted still completes (all forged here). */
Test(bootstrap, bad_ranks_refused) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  int first = raw_connect(&id);
  struct hello_msg m = forged_hello(&id, 1, 2, 9);
  raw_send(first, &m, sizeof m);
  cr_assert(!closed_within(first, 200), "root refused a valid HELLO");

  const struct { int rank, nranks; const char* what; } bad[] = {
      {1, 2, "duplicate rank"}, {0, 3, "nranks differs"}, {2, 2, "rank out of range"},
      {-1, 2, "negative rank"}, {0, 0, "zero nranks"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int fd = raw_connect(&id);
    m = forged_hello(&id, bad[i].rank, bad[i].nranks, 9);
    raw_send(fd, &m, sizeof m);
    cr_assert(closed_within(fd, 2000), "root kept a peer with %s", bad[i].what);
    close(fd);
  }
  /* A bad listener address is refused. */
  int fd = raw_connect(&id);
  m = forged_hello(&id, 0, 2, 0);
  raw_send(fd, &m, sizeof m);
  cr_assert(closed_within(fd, 2000), "root kept a peer with port 0");
  close(fd);

  int second = raw_connect(&id);
  m = forged_hello(&id, 0, 2, 10);
  raw_send(second, &m, sizeof m);
  /* Both now get the table: rank 0 -> port 10, rank 1 -> port 9. */
  int fds[2] = {second, first};
  for (int r = 0; r < 2; r++) {
    struct {
      struct wire_hdr h;
      struct wire_addr a[2];
    } t;
    size_t got = 0;
    while (got < sizeof t) {
      struct pollfd p = {.fd = fds[r], .events = POLLIN};
      cr_assert_eq(poll(&p, 1, 5000), 1, "no table for rank %d", r);
      ssize_t k = recv(fds[r], (char*)&t + got, sizeof t - got, 0);
      cr_assert_gt(k, 0);
      got += (size_t)k;
    }
    cr_assert_eq(t.h.magic, WIRE_MAGIC);
    cr_assert_eq(t.h.type, MSG_TABLE);
    cr_assert_eq(t.h.len, sizeof t.a);
    cr_assert_eq(ntohs(t.a[0].port), 10);
    cr_assert_eq(ntohs(t.a[1].port), 9);
    close(fds[r]);
  }
}
