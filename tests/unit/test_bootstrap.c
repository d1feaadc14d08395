/* The TCP bootstrap: rendezvous, ring collectives and tagged messages across forked
 * processes and threads, refusal of forged peers, and bounded failure (timeouts,
 * abort). Multi-process cases create the id in the parent before fork (the root
 * thread lives in the parent) and let each child run one rank and _exit with 0 or a
 * failure code (its stderr names the failed check). */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "env.h"
#include "error.h"
#include "socket.h"

/* ---- helpers ---- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void set_timeout(const char* seconds) {
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", seconds, 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

static void setup(void) { set_timeout("10"); }

/* Inside a rank (child process or thread): report the failed check and return its line. */
#define RCHECK(cond)                                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "rank %d: check `%s` failed at line %d (last error: %s)\n", rank, \
              #cond, __LINE__, snapccl_last_error());                                  \
      return __LINE__;                                                                 \
    }                                                                                  \
  } while (0)

/* Deterministic bytes: every rank can regenerate any rank's payload. */
static void fill(void* p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e5ull;
  unsigned char* c = p;
  for (size_t i = 0; i < n; i++) {
    if (i % 8 == 0) {
      x += 0x9e3779b97f4a7c15ull;
      uint64_t z = x;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      x ^= z ^ (z >> 31);
    }
    c[i] = (unsigned char)(x >> (8 * (i % 8)));
  }
}

static uint64_t seed_of(int a, int b, int c) { return ((uint64_t)a << 40) ^ ((uint64_t)b << 20) ^ (uint64_t)c; }

static int same_as(const void* got, size_t n, uint64_t seed) {
  unsigned char* want = malloc(n ? n : 1);
  fill(want, n, seed);
  int ok = memcmp(got, want, n) == 0;
  free(want);
  return ok;
}

/* Waits (at most 2 s) until every other thread of this process has been asleep for a
 * few consecutive looks, e.g. the root thread parked in poll(). A thread that is
 * running may hold a lock (an allocator's: sanitizer runtimes do not guard fork), and
 * a fork at that moment would hand the child a lock nobody releases. */
static void quiesce_threads(void) {
  pid_t self = (pid_t)syscall(SYS_gettid);
  int calm = 0;
  for (double end = now_s() + 2.0; calm < 3 && now_s() < end; sleep_ms(1)) {
    DIR* d = opendir("/proc/self/task");
    if (!d) return;
    int all_asleep = 1;
    for (struct dirent* e; (e = readdir(d)) != NULL;) {
      pid_t tid = (pid_t)atoi(e->d_name);
      if (tid <= 0 || tid == self) continue;
      char path[64], buf[512];
      snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
      FILE* f = fopen(path, "r");
      if (!f) continue;
      size_t k = fread(buf, 1, sizeof buf - 1, f);
      fclose(f);
      buf[k] = 0;
      const char* st = strrchr(buf, ')'); /* "tid (comm) S ..." */
      if (st && st[1] == ' ' && st[2] != 'S') all_asleep = 0;
    }
    closedir(d);
    calm = all_asleep ? calm + 1 : 0;
  }
}

typedef int (*rank_fn)(const ncclUniqueId* id, int rank, int nranks);

/* Forks nranks children running fn, waits for them at most bound_s seconds (then kills
 * them) and asserts each exited with 0.
 *
 * The children wait at a gate until every fork is done: the root thread runs in this
 * process, and a fork while it holds a lock (an allocator's, stdio's) would hand the
 * child a lock nobody will release. While no child has started, the root is idle. */
static void run_forked(const ncclUniqueId* id, int nranks, rank_fn fn, double bound_s) {
  pid_t pids[64];
  int gate[2];
  cr_assert(nranks <= 64);
  cr_assert_eq(pipe(gate), 0);
  quiesce_threads();
  fflush(NULL);
  for (int r = 0; r < nranks; r++) {
    pids[r] = fork();
    cr_assert(pids[r] >= 0, "fork failed: %s", strerror(errno));
    if (pids[r] == 0) {
      char c;
      close(gate[1]);
      while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
      } /* EOF: the parent closed the gate */
      close(gate[0]);
      int rc = fn(id, r, nranks);
      _exit(rc ? 1 + rc % 254 : 0); /* exit codes have 8 bits; never 0 for a failure */
    }
  }
  close(gate[1]); /* open the gate */
  close(gate[0]);
  int status[64], done = 0;
  for (int r = 0; r < nranks; r++) status[r] = -1;
  double end = now_s() + bound_s;
  while (done < nranks && now_s() < end) {
    for (int r = 0; r < nranks; r++) {
      if (status[r] != -1) continue;
      int st;
      if (waitpid(pids[r], &st, WNOHANG) == pids[r]) {
        status[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
        done++;
      }
    }
    if (done < nranks) sleep_ms(5);
  }
  for (int r = 0; r < nranks; r++) {
    if (status[r] != -1) continue;
    kill(pids[r], SIGKILL);
    waitpid(pids[r], NULL, 0);
  }
  for (int r = 0; r < nranks; r++) {
    if (status[r] == -1)
      cr_expect(0, "rank %d/%d still running after %.0f s (killed)", r, nranks, bound_s);
    else if (status[r] >= 1000)
      cr_expect(0, "rank %d/%d died of signal %d", r, nranks, status[r] - 1000);
    else
      cr_expect_eq(status[r], 0, "rank %d/%d failed a check (its stderr names the line)", r, nranks);
  }
}

struct init_arg {
  const ncclUniqueId* id;
  int rank, nranks;
  struct snapccl_bootstrap* b;
  ncclResult_t res;
};

static void* init_thread(void* p) {
  struct init_arg* a = p;
  a->res = snapccl_bootstrap_init(a->id, a->rank, a->nranks, &a->b);
  return NULL;
}

/* Initializes nranks ranks of one id concurrently in threads of this process. */
static void init_in_threads(const ncclUniqueId* id, int nranks, struct snapccl_bootstrap** out) {
  pthread_t th[16];
  struct init_arg a[16];
  for (int r = 0; r < nranks; r++) {
    a[r] = (struct init_arg){id, r, nranks, NULL, ncclInternalError};
    cr_assert_eq(pthread_create(&th[r], NULL, init_thread, &a[r]), 0);
  }
  for (int r = 0; r < nranks; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < nranks; r++) {
    cr_assert_eq(a[r].res, ncclSuccess, "init of rank %d failed: %s", r, snapccl_last_error());
    out[r] = a[r].b;
  }
}

/* ---- the rank program of the functional cases ---- */

static const size_t ag_sizes[] = {0, 1, 13, 1u << 20};

static int check_allgather(struct snapccl_bootstrap* b, int rank, int n) {
  for (size_t si = 0; si < sizeof ag_sizes / sizeof ag_sizes[0]; si++) {
    size_t sz = ag_sizes[si];
    unsigned char* buf = malloc(n * sz + 1);
    memset(buf, 0xa5, n * sz + 1);
    fill(buf + rank * sz, sz, seed_of(rank, (int)si, 1));
    RCHECK(snapccl_bootstrap_allgather(b, buf, sz) == ncclSuccess);
    for (int r = 0; r < n; r++) RCHECK(same_as(buf + r * sz, sz, seed_of(r, (int)si, 1)));
    RCHECK(buf[n * sz] == 0xa5); /* nothing written past the end */
    free(buf);
  }
  return 0;
}

static int check_bcast(struct snapccl_bootstrap* b, int rank, int n) {
  for (int root = 0; root < n; root++) {
    size_t sz = root == n - 1 ? (1u << 20) + 3 : 1000;
    unsigned char* buf = calloc(1, sz);
    if (rank == root) fill(buf, sz, seed_of(root, 7, 2));
    RCHECK(snapccl_bootstrap_bcast(b, buf, sz, root) == ncclSuccess);
    RCHECK(same_as(buf, sz, seed_of(root, 7, 2)));
    free(buf);
    RCHECK(snapccl_bootstrap_bcast(b, NULL, 0, root) == ncclSuccess);
  }
  return 0;
}

static int check_p2p(struct snapccl_bootstrap* b, int rank, int n) {
  unsigned char small[64], *big = malloc(300000), *got = malloc(300000);
  /* Everyone sends first (small messages fit the socket buffers), then receives. */
  for (int p = 0; p < n; p++) {
    if (p == rank) continue;
    fill(small, sizeof small, seed_of(rank, p, 10));
    RCHECK(snapccl_bootstrap_send(b, p, 10, small, sizeof small) == ncclSuccess);
  }
  for (int p = 0; p < n; p++) {
    if (p == rank) continue;
    RCHECK(snapccl_bootstrap_recv(b, p, 10, small, sizeof small) == ncclSuccess);
    RCHECK(same_as(small, sizeof small, seed_of(p, rank, 10)));
  }
  /* Receive-first on odd ranks, send-first on even ranks, with messages larger than
   * the socket buffers, around the ring. */
  if (n > 1) {
    int next = (rank + 1) % n, prev = (rank + n - 1) % n;
    fill(big, 300000, seed_of(rank, next, 11));
    if (rank % 2 == 0) RCHECK(snapccl_bootstrap_send(b, next, 11, big, 300000) == ncclSuccess);
    RCHECK(snapccl_bootstrap_recv(b, prev, 11, got, 300000) == ncclSuccess);
    RCHECK(same_as(got, 300000, seed_of(prev, rank, 11)));
    if (rank % 2 == 1) RCHECK(snapccl_bootstrap_send(b, next, 11, big, 300000) == ncclSuccess);
  }
  /* Unexpected messages: tags sent 3, 2, 1 (1 is empty) to every peer, received 1, 2, 3
   * and from the peers in reverse order, so most arrivals are queued first. */
  for (int p = 0; p < n; p++) {
    if (p == rank) continue;
    for (int tag = 3; tag >= 1; tag--) {
      size_t sz = tag == 1 ? 0 : 40 + tag;
      fill(small, sz, seed_of(rank, p, 20 + tag));
      RCHECK(snapccl_bootstrap_send(b, p, tag, small, sz) == ncclSuccess);
    }
  }
  for (int p = n - 1; p >= 0; p--) {
    if (p == rank) continue;
    for (int tag = 1; tag <= 3; tag++) {
      size_t sz = tag == 1 ? 0 : 40 + tag;
      memset(small, 0, sizeof small);
      RCHECK(snapccl_bootstrap_recv(b, p, tag, tag == 1 ? NULL : small, sz) == ncclSuccess);
      RCHECK(same_as(small, sz, seed_of(p, rank, 20 + tag)));
    }
  }
  /* To itself: queued, so send before recv cannot block. */
  fill(small, sizeof small, seed_of(rank, rank, 30));
  RCHECK(snapccl_bootstrap_send(b, rank, 30, small, sizeof small) == ncclSuccess);
  memset(small, 0, sizeof small);
  RCHECK(snapccl_bootstrap_recv(b, rank, 30, small, sizeof small) == ncclSuccess);
  RCHECK(same_as(small, sizeof small, seed_of(rank, rank, 30)));
  free(big);
  free(got);
  return 0;
}

static int rank_main_with(struct snapccl_bootstrap* b, int rank, int n) {
  int rc;
  RCHECK(snapccl_bootstrap_rank(b) == rank && snapccl_bootstrap_nranks(b) == n);
  if ((rc = check_allgather(b, rank, n))) return rc;
  if ((rc = check_bcast(b, rank, n))) return rc;
  for (int i = 0; i < 3; i++) RCHECK(snapccl_bootstrap_barrier(b) == ncclSuccess);
  if ((rc = check_p2p(b, rank, n))) return rc;
  RCHECK(snapccl_bootstrap_barrier(b) == ncclSuccess);
  return 0;
}

static int rank_main(const ncclUniqueId* id, int rank, int n) {
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, rank, n, &b) == ncclSuccess);
  int rc = rank_main_with(b, rank, n);
  snapccl_bootstrap_destroy(b);
  return rc;
}

/* A rank that only rendezvouses and runs one allgather (refusal cases). */
static int rank_small(const ncclUniqueId* id, int rank, int n) {
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, rank, n, &b) == ncclSuccess);
  int v[16] = {0};
  v[rank] = rank * 7 + 1;
  RCHECK(snapccl_bootstrap_allgather(b, v, sizeof v[0]) == ncclSuccess);
  for (int r = 0; r < n; r++) RCHECK(v[r] == r * 7 + 1);
  snapccl_bootstrap_destroy(b);
  return 0;
}

/* ---- forged peers: raw TCP to the root, mirroring bootstrap.c's wire format ---- */

#define WIRE_MAGIC 0x534e4250u
enum { MSG_HELLO = 1, MSG_TABLE = 2 };
struct wire_hdr {
  uint32_t magic, type;
  uint64_t len;
};
struct wire_addr {
  uint16_t family, port;
  uint32_t scope_id;
  uint8_t addr[16];
};
struct hello_msg {
  struct wire_hdr h;
  uint64_t nonce[2];
  int32_t rank, nranks;
  struct wire_addr listen;
};

static struct snapccl_unique_id id_fields(const ncclUniqueId* id) {
  struct snapccl_unique_id u;
  memcpy(&u, id->internal, sizeof u);
  return u;
}

static int raw_connect(const ncclUniqueId* id) {
  struct snapccl_unique_id u = id_fields(id);
  cr_assert_eq(u.family, AF_INET);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = u.port};
  memcpy(&a.sin_addr, u.addr, 4);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0);
  cr_assert_eq(connect(fd, (struct sockaddr*)&a, sizeof a), 0, "connect: %s", strerror(errno));
  return fd;
}

static void raw_send(int fd, const void* p, size_t n) {
  cr_assert_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* A HELLO as a real rank would send it (listener 127.0.0.1:listen_port). */
static struct hello_msg forged_hello(const ncclUniqueId* id, int rank, int nranks, uint16_t listen_port) {
  struct snapccl_unique_id u = id_fields(id);
  struct hello_msg m;
  memset(&m, 0, sizeof m);
  m.h = (struct wire_hdr){WIRE_MAGIC, MSG_HELLO, sizeof m - sizeof m.h};
  m.nonce[0] = u.nonce[0];
  m.nonce[1] = u.nonce[1];
  m.rank = rank;
  m.nranks = nranks;
  m.listen.family = AF_INET;
  m.listen.port = htons(listen_port);
  m.listen.addr[0] = 127;
  m.listen.addr[3] = 1;
  return m;
}

/* 1 if the peer closed fd (EOF or reset) within ms, 0 if it is still open. */
static int closed_within(int fd, int ms) {
  double end = now_s() + ms / 1000.0;
  for (;;) {
    int left = (int)((end - now_s()) * 1000);
    if (left < 0) left = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int k = poll(&p, 1, left);
    if (k == 0) return 0;
    if (k < 0) continue;
    char c[256];
    ssize_t r = recv(fd, c, sizeof c, MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return 1;
    /* data: not what we wait for here; keep draining */
  }
}

/* A bound, not listening, port: connecting there is refused. */
static int refused_port(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr*)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr*)&a, &l), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

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

/* ---- refusals at a rank's listener: the test plays the root and rank 1 ---- */

enum { MSG_RING_HELLO = 3, MSG_P2P = 4 };
struct ident_msg {
  struct wire_hdr h;
  uint64_t nonce[2];
  int32_t from, tag;
};

static int raw_listen(struct sockaddr_in* a) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof *a;
  cr_assert_eq(bind(fd, (struct sockaddr*)a, sizeof *a), 0);
  cr_assert_eq(listen(fd, 16), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr*)a, &l), 0);
  return fd;
}

static int raw_accept(int lfd) {
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 5000), 1, "nobody connected");
  int fd = accept(lfd, NULL, NULL);
  cr_assert_geq(fd, 0);
  return fd;
}

static void raw_read(int fd, void* buf, size_t n) {
  for (size_t got = 0; got < n;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1, "no data");
    ssize_t k = recv(fd, (char*)buf + got, n - got, 0);
    cr_assert_gt(k, 0, "connection closed");
    got += (size_t)k;
  }
}

static int raw_connect_to(const struct wire_addr* w) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = w->port};
  memcpy(&a.sin_addr, w->addr, 4);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert_eq(connect(fd, (struct sockaddr*)&a, sizeof a), 0, "%s", strerror(errno));
  return fd;
}

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
