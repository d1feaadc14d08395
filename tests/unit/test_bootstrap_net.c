/* Addresses and interfaces of the bootstrap: SNAPCCL_SOCKET_IFNAME selection, IPv6
 * loopback, sockets with deadlines. */
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

/* ---- addresses and interfaces ---- */

Test(bootstrap, interface_selection) {
  union snapccl_sockaddr a;
  char s[80];
  cr_assert_eq(snapccl_socket_pick_addr("", &a), ncclSuccess);
  cr_assert_str_eq(snapccl_sockaddr_str(&a, s, sizeof s), "127.0.0.1:0");
  /* "lo" as prefix, exact name, and in a list; IPv4 is preferred over ::1. */
  const char* picks_lo[] = {"lo", "=lo", "nosuch,lo", "l"};
  for (size_t i = 0; i < sizeof picks_lo / sizeof picks_lo[0]; i++) {
    cr_assert_eq(snapccl_socket_pick_addr(picks_lo[i], &a), ncclSuccess, "%s: %s", picks_lo[i],
                 snapccl_last_error());
    cr_assert_eq(a.sa.sa_family, AF_INET, "%s", picks_lo[i]);
    cr_assert_eq(ntohl(a.sin.sin_addr.s_addr) >> 24, 127u, "%s", picks_lo[i]);
  }
  cr_assert_eq(snapccl_socket_pick_addr("=l", &a), ncclSystemError); /* exact: no "l" */
  cr_assert_eq(snapccl_socket_pick_addr("nosuchif", &a), ncclSystemError);
  cr_assert(strstr(snapccl_last_error(), "nosuchif") != NULL, "%s", snapccl_last_error());
  /* Excluding a prefix never picks it. */
  if (snapccl_socket_pick_addr("^lo", &a) == ncclSuccess)
    cr_assert_neq(ntohl(a.sin.sin_addr.s_addr) >> 24, 127u);

  /* A rendezvous over an explicitly named interface. */
  setenv("SNAPCCL_SOCKET_IFNAME", "=lo", 1);
  snapccl_env_reload();
  ncclUniqueId id;
  struct snapccl_bootstrap* b[2];
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  init_in_threads(&id, 2, b);
  cr_assert_eq(snapccl_bootstrap_send(b[0], 1, 1, "hi", 2), ncclSuccess);
  char c[2];
  cr_assert_eq(snapccl_bootstrap_recv(b[1], 0, 1, c, 2), ncclSuccess);
  cr_assert(c[0] == 'h' && c[1] == 'i');
  snapccl_bootstrap_destroy(b[0]);
  snapccl_bootstrap_destroy(b[1]);
}

Test(bootstrap, ipv6_loopback) {
  union snapccl_sockaddr a, back;
  memset(&a, 0, sizeof a);
  a.sin6.sin6_family = AF_INET6;
  a.sin6.sin6_addr = in6addr_loopback;
  int lfd = -1;
  if (snapccl_socket_listen(&a, &lfd) != ncclSuccess) cr_skip_test("no IPv6 loopback here");
  char s[80], want[80];
  snprintf(want, sizeof want, "[::1]:%u", ntohs(a.sin6.sin6_port));
  cr_assert_str_eq(snapccl_sockaddr_str(&a, s, sizeof s), want);
  struct snapccl_wire_addr w;
  snapccl_sockaddr_to_wire(&a, &w);
  cr_assert_eq(snapccl_sockaddr_from_wire(&w, &back), 0);
  cr_assert_eq(memcmp(&back.sin6.sin6_addr, &in6addr_loopback, 16), 0);
  cr_assert_eq(back.sin6.sin6_port, a.sin6.sin6_port);

  int64_t deadline = snapccl_now_ms() + 5000;
  int cfd = -1, sfd = -1;
  cr_assert_eq(snapccl_socket_connect(&a, deadline, -1, &cfd, "test connect"), ncclSuccess);
  union snapccl_sockaddr peer;
  for (int i = 0; i < 500 && snapccl_socket_try_accept(lfd, &sfd, &peer) != 1; i++) sleep_ms(2);
  cr_assert_geq(sfd, 0);
  char out[3000], in[3000];
  fill(out, sizeof out, 99);
  cr_assert_eq(snapccl_socket_send_all(cfd, out, sizeof out, deadline, -1, "test send"), ncclSuccess);
  cr_assert_eq(snapccl_socket_recv_all(sfd, in, sizeof in, deadline, -1, "test recv"), ncclSuccess);
  cr_assert_eq(memcmp(in, out, sizeof in), 0);
  /* A closed peer is an error, not a hang or SIGPIPE. */
  close(sfd);
  ncclResult_t r = ncclSuccess;
  for (int i = 0; i < 50 && r == ncclSuccess; i++)
    r = snapccl_socket_send_all(cfd, out, sizeof out, deadline, -1, "test send to closed");
  cr_assert_eq(r, ncclRemoteError);
  cr_assert_eq(snapccl_socket_recv_all(cfd, in, 1, deadline, -1, "test recv from closed"),
               ncclRemoteError);
  close(cfd);
  close(lfd);

  /* An IPv6 id passes the id check. */
  struct snapccl_unique_id u;
  memset(&u, 0, sizeof u);
  u.magic = SNAPCCL_ID_MAGIC;
  u.family = AF_INET6;
  u.port = htons(1234);
  memcpy(u.addr, &in6addr_loopback, 16);
  ncclUniqueId id;
  memcpy(id.internal, &u, sizeof u);
  cr_assert_eq(snapccl_bootstrap_check_id(&id), ncclSuccess);
}

