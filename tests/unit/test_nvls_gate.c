/* NVLink multicast without any multicast: the gate's decision table, the choice of
 * handle transport, file-descriptor passing, and the whole setup driven through a STUB
 * driver table over fake device memory (ranks as threads, or as forked processes, with
 * the real out-of-band bootstrap).
 *
 * One binary of three files: this one (the gate, the handle choice, fd passing: no
 * driver at all), test_nvls_stub.c (the setup on the stub driver, ranks as threads and as
 * forked processes) and nvls_stub.c (the stub and the fake communicators, nvls_stub.h).
 *
 * Safety: SNAPCCL_NVLS=1 is set only inside the stub tests, after the stub table is
 * installed, and those tests skip themselves when a GPU is visible, so no real driver
 * can ever be reached from here. Forked children report through their exit code (and
 * stderr), never through Criterion. */
#include "nvls_stub.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "transport/fd_passing.h"
#include "transport/multicast.h"

/* ---------------------------------------------------------------- the gate */

Test(gate, decision_table) {
  static const int nvls[] = {0, 1, 2, -1};
  static const char* const nccl[] = {NULL, "", "0", "1", "2", "00", "-0", "junk", "1x"};
  static const int nccl_allows[] = {1, 1, 0, 1, 1, 0, 0, 0, 0};
  static const int device[] = {-1, 0, 1};
  int opened = 0, combos = 0;
  for (size_t a = 0; a < NELEMS(nvls); a++)
    for (size_t b = 0; b < NELEMS(nccl); b++)
      for (size_t c = 0; c < NELEMS(device); c++)
        for (int agree = 0; agree <= 1; agree++) {
          struct snapccl_mc_gate_in in = {nvls[a], nccl[b], device[c], agree};
          struct snapccl_mc_gate g;
          memset(&g, 0x5a, sizeof g);
          snapccl_mc_gate_decide(&in, &g);
          combos++;
          const int want = nvls[a] == 1 && nccl_allows[b] && device[c] == 1 && agree;
          cr_assert_eq(g.open, want, "SNAPCCL_NVLS=%d NCCL_NVLS_ENABLE=%s device=%d agree=%d: open=%d", nvls[a],
                       nccl[b] ? nccl[b] : "(unset)", device[c], agree, g.open);
          opened += g.open;
          /* The reason names the first condition that fails, in the gate's order. */
          const char* key = want ? NULL
                            : nvls[a] != 1 ? "SNAPCCL_NVLS"
                            : !nccl_allows[b] ? "NCCL_NVLS_ENABLE"
                            : device[c] < 0 ? "unknown"
                            : device[c] == 0 ? "does not support"
                                             : "not every rank";
          if (want) cr_assert_eq(g.reason[0], 0, "an open gate has no reason: %s", g.reason);
          else cr_assert(strstr(g.reason, key), "reason \"%s\" should mention \"%s\"", g.reason, key);
        }
  cr_assert_eq(combos, 4 * 9 * 3 * 2);
  cr_assert_eq(opened, 4, "exactly SNAPCCL_NVLS=1 x NCCL_NVLS_ENABLE unset, empty, 1 or 2 x supported x agreed");
}

Test(gate, environment_stage) {
  char why[160];
  cr_assert(!snapccl_mc_env_allows(0, NULL, why, sizeof why) && strstr(why, "SNAPCCL_NVLS=1"));
  cr_assert(!snapccl_mc_env_allows(1, "0", why, sizeof why) && strstr(why, "turns NVLink multicast off"));
  cr_assert(!snapccl_mc_env_allows(1, "off", why, sizeof why) && strstr(why, "not a number"));
  cr_assert(snapccl_mc_env_allows(1, "1", why, sizeof why));
  cr_assert(snapccl_mc_env_allows(1, NULL, why, sizeof why));
  cr_assert(snapccl_mc_env_allows(1, "", why, sizeof why));
}

/* ---------------------------------------------------------------- handle choice */

static struct snapccl_mc_peer peer(uint64_t host, uint64_t proc, int posix, int fabric) {
  struct snapccl_mc_peer p;
  memset(&p, 0, sizeof p);
  p.host_hash = host, p.proc_hash = proc, p.posix_fd_supported = posix, p.fabric_supported = fabric;
  p.fabric_known = 1, p.fabric_state = SNAPCCL_NVML_FABRIC_STATE_COMPLETED, p.clique_id = 7;
  p.cluster_uuid[3] = 0xab;
  return p;
}

Test(handle, choice_from_fabric_info) {
  char why[160];
  struct snapccl_mc_peer p[4];
  /* One process: the handle itself, whatever the device can export. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, 1, 0, 0);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_PROCESS);
  /* One host, several processes: POSIX fd. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, 10 + r, 1, 1);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_POSIX_FD);
  /* ... no POSIX fds on one GPU: fabric if the domain is right, else none. */
  p[2].posix_fd_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_FABRIC);
  p[1].fabric_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "rank 2") && strstr(why, "POSIX"), "%s", why);
  /* Several hosts: fabric, only within one NVLink domain (cluster and clique). */
  for (int r = 0; r < 4; r++) p[r] = peer(100 + r, 10 + r, 1, 1);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_FABRIC);
  struct snapccl_mc_peer q[4];
  memcpy(q, p, sizeof q), q[3].fabric_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "rank 3") && strstr(why, "fabric handles"), "%s", why);
  memcpy(q, p, sizeof q), q[1].fabric_known = 0;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "NVML"), "%s", why);
  memcpy(q, p, sizeof q), q[2].fabric_state = 2; /* still registering */
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "not registered"), "%s", why);
  memcpy(q, p, sizeof q), q[2].fabric_status = 1;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  memcpy(q, p, sizeof q), q[1].cluster_uuid[0] = 1;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "another NVLink domain"), "%s", why);
  memcpy(q, p, sizeof q), q[3].clique_id = 8;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "another NVLink domain"), "%s", why);
  memcpy(q, p, sizeof q);
  for (int r = 0; r < 4; r++) memset(q[r].cluster_uuid, 0, 16);
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "no NVLink cluster"), "%s", why);
  /* Mixed: two processes on one host, one of them with two ranks: still POSIX fd. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, r < 2 ? 10 : 11, 1, 0);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_POSIX_FD);
}

/* ---------------------------------------------------------------- fd passing */

struct recv_job {
  struct snapccl_fd_address addr;
  double timeout;
  int fd;
  ncclResult_t res;
};
static void* recv_thread(void* p) {
  struct recv_job* j = p;
  j->res = snapccl_fd_receive(&j->addr, j->timeout, &j->fd);
  return NULL;
}

static int same_file(int a, int b) {
  struct stat x, y;
  return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_ino == y.st_ino && x.st_dev == y.st_dev;
}

Test(fd, passes_a_descriptor_between_threads_and_processes) {
  struct snapccl_fd_server* s = NULL;
  struct snapccl_fd_address addr;
  cr_assert_eq(snapccl_fd_server_open(&s, &addr), ncclSuccess, "%s", snapccl_last_error());
  int memfd = memfd_create("fd-test", MFD_CLOEXEC);
  cr_assert(memfd >= 0 && pwrite(memfd, "payload!", 8, 0) == 8);
  /* Two clients: a thread of this process and a child process. */
  struct recv_job j = {addr, 10, -1, ncclInternalError};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &j), 0);
  pid_t child = fork();
  cr_assert(child >= 0);
  if (child == 0) {
    int fd = -1;
    char buf[8];
    if (snapccl_fd_receive(&addr, 10, &fd) != ncclSuccess) _exit(1);
    if (pread(fd, buf, 8, 0) != 8 || memcmp(buf, "payload!", 8) != 0) _exit(2);
    _exit(0);
  }
  int32_t pids[2] = {(int32_t)getpid(), (int32_t)child};
  cr_assert_eq(snapccl_fd_server_serve(s, memfd, 2, pids, 2, 20), ncclSuccess, "%s", snapccl_last_error());
  pthread_join(th, NULL);
  int st = 0;
  waitpid(child, &st, 0);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child could not receive (status %d)", st);
  cr_assert_eq(j.res, ncclSuccess, "%s", snapccl_last_error());
  cr_assert(same_file(j.fd, memfd), "the thread received another file");
  close(j.fd);
  close(memfd);
  snapccl_fd_server_close(s);
}

/* A list served by index (registration's cuMem segments): each of two child processes
 * fetches every descriptor, in its own order, and gets the right file each time; an
 * index past the list is refused. */
Test(fd, serves_a_list_by_index) {
  struct snapccl_fd_server* s = NULL;
  struct snapccl_fd_address addr;
  cr_assert_eq(snapccl_fd_server_open(&s, &addr), ncclSuccess, "%s", snapccl_last_error());
  int fds[3];
  for (int i = 0; i < 3; i++) {
    fds[i] = memfd_create("fd-list", MFD_CLOEXEC);
    char tag = (char)('a' + i);
    cr_assert(fds[i] >= 0 && pwrite(fds[i], &tag, 1, 0) == 1);
  }
  pid_t child[2];
  for (int c = 0; c < 2; c++) {
    child[c] = fork();
    cr_assert(child[c] >= 0);
    if (child[c] == 0) {
      for (int k = 0; k < 3; k++) {
        const uint32_t i = (uint32_t)(c ? 2 - k : k);
        int fd = -1;
        char tag = 0;
        if (snapccl_fd_receive_index(&addr, i, 10, &fd) != ncclSuccess) _exit(1);
        if (pread(fd, &tag, 1, 0) != 1 || tag != (char)('a' + i)) _exit(2);
        close(fd);
      }
      _exit(0);
    }
  }
  int32_t pids[2] = {(int32_t)child[0], (int32_t)child[1]};
  cr_assert_eq(snapccl_fd_server_serve_many(s, fds, 3, 2, pids, 2, 20), ncclSuccess, "%s", snapccl_last_error());
  for (int c = 0; c < 2; c++) {
    int st = 0;
    waitpid(child[c], &st, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %d", c, st);
  }
  /* Past the list: the server counts no fetch and the client gets nothing. */
  pid_t late = fork();
  cr_assert(late >= 0);
  if (late == 0) {
    int fd = -1;
    _exit(snapccl_fd_receive_index(&addr, 3, 3, &fd) == ncclSuccess ? 1 : 0);
  }
  int32_t lp = (int32_t)late;
  cr_assert_neq(snapccl_fd_server_serve_many(s, fds, 3, 1, &lp, 1, 1.5), ncclSuccess, "served index 3 of 3");
  int st = 0;
  waitpid(late, &st, 0);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a client asking past the list got a descriptor");
  for (int i = 0; i < 3; i++) close(fds[i]);
  snapccl_fd_server_close(s);
}

Test(fd, refuses_strangers_and_wrong_nonces) {
  struct snapccl_fd_server* s = NULL;
  struct snapccl_fd_address addr;
  cr_assert_eq(snapccl_fd_server_open(&s, &addr), ncclSuccess);
  int memfd = memfd_create("fd-test", MFD_CLOEXEC);
  /* A client that does not know the nonce. */
  struct recv_job j = {addr, 3, -1, ncclSuccess};
  j.addr.nonce[0] ^= 1;
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &j), 0);
  int32_t me = (int32_t)getpid();
  cr_assert_neq(snapccl_fd_server_serve(s, memfd, 1, &me, 1, 1.5), ncclSuccess, "served a wrong nonce");
  pthread_join(th, NULL);
  cr_assert_neq(j.res, ncclSuccess, "a client with a wrong nonce got a descriptor");
  /* A client whose pid is not a rank's. */
  struct recv_job k = {addr, 3, -1, ncclSuccess};
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &k), 0);
  int32_t other = me + 1;
  cr_assert_neq(snapccl_fd_server_serve(s, memfd, 1, &other, 1, 1.5), ncclSuccess, "served a stranger");
  pthread_join(th, NULL);
  cr_assert_neq(k.res, ncclSuccess, "a stranger got a descriptor");
  /* A client that expects another server pid refuses to talk. */
  struct snapccl_fd_address wrong = addr;
  wrong.pid = me + 1;
  int fd = -1;
  cr_assert_neq(snapccl_fd_receive(&wrong, 1, &fd), ncclSuccess);
  close(memfd);
  snapccl_fd_server_close(s);
}
