/* Refusals at a rank's own listener: the test plays the root and rank 1 and forges ring
 * connections and tagged messages while the real rank 0 waits. */
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

/* ---- refusals at a rank's listener: the test plays the root and rank 1 ---- */

struct lone_rank {
  const ncclUniqueId* id;
  ncclResult_t init_res, recv_res;
  char got[4];
};

static void* lone_rank_main(void* p) {
  struct lone_rank* r = p;
  struct snapccl_bootstrap* b = NULL;
  r->init_res = snapccl_bootstrap_init(r->id, 0, 2, &b);
  if (r->init_res == ncclSuccess) {
    r->recv_res = snapccl_bootstrap_recv(b, 1, 5, r->got, sizeof r->got);
    snapccl_bootstrap_destroy(b);
  }
  return NULL;
}

Test(bootstrap, rank_listener_refuses_forgeries) {
  struct sockaddr_in root_a, peer_a;
  int root_l = raw_listen(&root_a), peer_l = raw_listen(&peer_a);
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  u.nonce[0] = 0x1111;
  u.nonce[1] = 0x2222;
  u.family = AF_INET;
  u.port = root_a.sin_port;
  memcpy(u.addr, &root_a.sin_addr, 4);
  ncclUniqueId id;
  memcpy(id.internal, &u, sizeof u);

  struct lone_rank r = {&id, ncclInternalError, ncclInternalError, {0}};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, lone_rank_main, &r), 0);

  /* As the root: take rank 0's HELLO, answer with a table naming our fake rank 1. */
  int root_c = raw_accept(root_l);
  struct hello_msg hello;
  raw_read(root_c, &hello, sizeof hello);
  cr_assert_eq(hello.h.magic, WIRE_MAGIC);
  cr_assert_eq(hello.h.type, MSG_HELLO);
  cr_assert_eq(hello.rank, 0);
  cr_assert_eq(hello.nranks, 2);
  cr_assert(hello.nonce[0] == u.nonce[0] && hello.nonce[1] == u.nonce[1]);
  struct {
    struct wire_hdr h;
    struct wire_addr a[2];
  } table;
  memset(&table, 0, sizeof table);
  table.h = (struct wire_hdr){WIRE_MAGIC, MSG_TABLE, sizeof table.a};
  table.a[0] = hello.listen;
  table.a[1].family = AF_INET;
  table.a[1].port = peer_a.sin_port;
  memcpy(table.a[1].addr, &peer_a.sin_addr, 4);
  raw_send(root_c, &table, sizeof table);

  /* As rank 1: rank 0 connects its ring to us. */
  int next_c = raw_accept(peer_l);
  struct ident_msg ring;
  raw_read(next_c, &ring, sizeof ring);
  cr_assert_eq(ring.h.type, MSG_RING_HELLO);
  cr_assert_eq(ring.from, 0);

  /* Forgeries while rank 0 waits for its ring connection. */
  struct ident_msg m = {{WIRE_MAGIC, MSG_RING_HELLO, 24}, {u.nonce[0], u.nonce[1]}, 1, 0};
  struct ident_msg bad[4] = {m, m, m, m};
  bad[0].nonce[0] ^= 1;                 /* wrong nonce */
  bad[1].from = 5;                      /* no such rank */
  bad[2].h = (struct wire_hdr){WIRE_MAGIC, MSG_P2P, 1ull << 50}; /* oversized P2P */
  bad[3].h.magic ^= 0x100;              /* not our protocol */
  for (int i = 0; i < 4; i++) {
    int fd = raw_connect_to(&hello.listen);
    raw_send(fd, &bad[i], sizeof bad[i]);
    cr_assert(closed_within(fd, 2000), "forgery %d was not refused", i);
    close(fd);
  }
  int trunc = raw_connect_to(&hello.listen); /* truncated, then silent */
  raw_send(trunc, &m, sizeof m - 3);

  /* The real ring connection completes rank 0's init. */
  int prev_c = raw_connect_to(&hello.listen);
  raw_send(prev_c, &m, sizeof m);
  /* Once the ring exists, a second RING_HELLO is refused. */
  int again = raw_connect_to(&hello.listen);
  raw_send(again, &m, sizeof m);
  cr_assert(closed_within(again, 2000), "late RING_HELLO was not refused");
  close(again);

  /* A proper tagged message reaches rank 0's pending receive. */
  int p2p = raw_connect_to(&hello.listen);
  struct ident_msg pm = {{WIRE_MAGIC, MSG_P2P, 24 + 4}, {u.nonce[0], u.nonce[1]}, 1, 5};
  raw_send(p2p, &pm, sizeof pm);
  raw_send(p2p, "abcd", 4);
  pthread_join(th, NULL);
  cr_assert_eq(r.init_res, ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(r.recv_res, ncclSuccess, "%s", snapccl_last_error());
  cr_assert_eq(memcmp(r.got, "abcd", 4), 0);
  /* rank 0 is destroyed: its listener closed every connection it held. */
  cr_assert(closed_within(trunc, 2000));
  const int mine[] = {p2p, prev_c, next_c, root_c, trunc};
  for (size_t i = 0; i < sizeof mine / sizeof mine[0]; i++) close(mine[i]);
  close(root_l);
  close(peer_l);
}
