/* The root under a flood of connections that never send a message, as any local user
 * can make (the port is in /proc/net/tcp): the honest ranks still meet, and the root's
 * log stays a few lines long. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bootstrap.h"
#include "bootstrap_util.h"
#include "env.h"
#include "error.h"
#include "log.h"

TestSuite(bootstrap, .init = setup, .timeout = 60);

/* More idle connections than the root ever held pending (256 before, 64 now). The
 * ranks' 10 s timeout is longer than the 8 s they are given: a root that waits for the
 * idle peers to time out, or stops listening, fails the test. */
Test(bootstrap, idle_connections_do_not_stop_rendezvous) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  enum { IDLE = 300 };
  int idle[IDLE];
  for (int i = 0; i < IDLE; i++) idle[i] = raw_connect(&id);
  run_forked(&id, 2, rank_small, 8);
  for (int i = 0; i < IDLE; i++) close(idle[i]);
}

struct junk {
  const ncclUniqueId* id;
  atomic_int stop, opened;
};

/* A connection to the id's root, or -1 (once the rendezvous is over, nobody listens). */
static int try_connect(const ncclUniqueId* id) {
  struct snapccl_unique_id u = id_fields(id);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = u.port};
  memcpy(&a.sin_addr, u.addr, 4);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd >= 0 && connect(fd, (struct sockaddr*)&a, sizeof a) != 0) {
    close(fd);
    fd = -1;
  }
  return fd;
}

/* Keeps opening idle connections, holding the newest 400 (more than any pending set
 * ever held), until told to stop. */
static void* junk_main(void* p) {
  struct junk* j = p;
  int held[400];
  int n = 0;
  while (!atomic_load(&j->stop)) {
    if (n == 400) {
      close(held[0]);
      memmove(held, held + 1, sizeof held - sizeof held[0]);
      n--;
    }
    int fd = try_connect(j->id);
    if (fd >= 0) held[n++] = fd;
    atomic_fetch_add(&j->opened, 1);
    sleep_ms(1);
  }
  for (int i = 0; i < n; i++) close(held[i]);
  return NULL;
}

Test(bootstrap, steady_junk_does_not_starve_ranks) {
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  struct junk j = {&id, 0, 0};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, junk_main, &j), 0);
  while (atomic_load(&j.opened) < 500) sleep_ms(5); /* the pending set is full, churning */
  run_forked(&id, 3, rank_small, 8);
  atomic_store(&j.stop, 1);
  pthread_join(th, NULL);
}

/* Every refused connection used to log its own WARN line. Now: the first few, then
 * the count, and at the end the count of those not logged. */
Test(bootstrap, refusals_logged_with_a_count) {
  setenv("SNAPCCL_DEBUG", "WARN", 1);
  snapccl_env_reload();
  int token = stderr_capture_begin();
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  enum { JUNK = 100 };
  for (int i = 0; i < JUNK; i++) {
    int fd = raw_connect(&id);
    struct wire_hdr h = {0xdeadbeef, MSG_HELLO, 48};
    raw_send(fd, &h, sizeof h);
    cr_assert(closed_within(fd, 2000), "junk %d was not refused", i);
    close(fd);
  }
  run_forked(&id, 2, rank_small, 20);
  stderr_capture_wait(token, "in all;"); /* the count, logged when the rendezvous ends */
  char* log = stderr_capture_end(token);
  unsetenv("SNAPCCL_DEBUG");
  snapccl_env_reload();
  int lines = count_of(log, "refused bootstrap connection from");
  cr_assert(lines >= 1 && lines <= 10, "%d WARN lines for %d refusals:\n%s", lines, JUNK, log);
  cr_assert(strstr(log, "more bootstrap connections (100 in all") != NULL,
            "no line counting the refusals:\n%s", log);
  free(log);
}

/* ---- the root's process out of file descriptors ---- */

struct fd_famine {
  struct rlimit saved;
  int fds[512];
  int n;
  pthread_t releaser;
};

static void* release_later(void* p) {
  struct fd_famine* f = p;
  sleep_ms(500);
  for (int i = 0; i < f->n; i++) close(f->fds[i]);
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &f->saved), 0);
  return NULL;
}

/* The ranks exist (their fd tables are their own); now this process, the root's, gets
 * none for half a second: every accept fails with EMFILE meanwhile. */
static void starve_fds(void* p) {
  struct fd_famine* f = p;
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &f->saved), 0);
  struct rlimit low = f->saved;
  low.rlim_cur = 256;
  cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
  for (f->n = 0; f->n < 512; f->n++) {
    f->fds[f->n] = dup(0);
    if (f->fds[f->n] < 0) break;
  }
  cr_assert_lt(f->n, 512, "the fd table never filled");
  cr_assert_eq(errno, EMFILE);
  cr_assert_eq(pthread_create(&f->releaser, NULL, release_later, f), 0);
}

/* Exhaustion is the root's passing trouble, not every rank's: it backs off, keeps
 * going, and accepts the ranks once descriptors are free again. */
Test(bootstrap, accept_survives_emfile) {
  setenv("SNAPCCL_DEBUG", "WARN", 1);
  snapccl_env_reload();
  ncclUniqueId id;
  cr_assert_eq(snapccl_bootstrap_create_root(&id), ncclSuccess);
  struct fd_famine f;
  int token = stderr_capture_begin();
  run_forked_hook(&id, 2, rank_small, 8, starve_fds, &f);
  pthread_join(f.releaser, NULL);
  char* log = stderr_capture_end(token);
  unsetenv("SNAPCCL_DEBUG");
  snapccl_env_reload();
  cr_assert(strstr(log, "Too many open files") != NULL, "the root never met EMFILE:\n%s", log);
  free(log);
}
