/* Helpers shared by the bootstrap suites (bootstrap_util.h). */
#include "bootstrap_util.h"

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "env.h"
#include "socket.h"

double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void set_timeout(const char* seconds) {
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", seconds, 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

void setup(void) { set_timeout("10"); }

/* The token packs the saved stderr (low 16 bits) and the file (high bits). */
int stderr_capture_begin(void) {
  char path[] = "/tmp/snapccl_stderr_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  cr_assert(saved >= 0 && saved < 0x10000 && fd < 0x8000);
  cr_assert_eq(dup2(fd, 2), 2);
  return fd << 16 | saved;
}

char* stderr_capture_end(int token) {
  int fd = token >> 16, saved = token & 0xffff;
  fflush(stderr);
  cr_assert_eq(dup2(saved, 2), 2);
  close(saved);
  off_t n = lseek(fd, 0, SEEK_END);
  char* text = calloc(1, (size_t)n + 1);
  cr_assert_not_null(text);
  cr_assert_eq(pread(fd, text, (size_t)n, 0), n);
  close(fd);
  return text;
}

void stderr_capture_wait(int token, const char* needle) {
  int fd = token >> 16;
  for (double end = now_s() + 5.0;; sleep_ms(10)) {
    fflush(stderr);
    off_t n = lseek(fd, 0, SEEK_END);
    char* text = calloc(1, (size_t)n + 1);
    cr_assert_not_null(text);
    cr_assert_eq(pread(fd, text, (size_t)n, 0), n);
    int found = strstr(text, needle) != NULL;
    free(text);
    if (found) return;
    cr_assert_lt(now_s(), end, "\"%s\" was not logged", needle);
  }
}

int count_of(const char* text, const char* needle) {
  int n = 0;
  for (const char* p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* Deterministic bytes: every rank can regenerate any rank's payload. */
void fill(void* p, size_t n, uint64_t seed) {
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

uint64_t seed_of(int a, int b, int c) { return ((uint64_t)a << 40) ^ ((uint64_t)b << 20) ^ (uint64_t)c; }

int same_as(const void* got, size_t n, uint64_t seed) {
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

/* Forks nranks children running fn, waits for them at most bound_s seconds (then kills
 * them) and asserts each exited with 0.
 *
 * The children wait at a gate until every fork is done: the root thread runs in this
 * process, and a fork while it holds a lock (an allocator's, stdio's) would hand the
 * child a lock nobody will release. While no child has started, the root is idle. */
void run_forked(const ncclUniqueId* id, int nranks, rank_fn fn, double bound_s) {
  run_forked_hook(id, nranks, fn, bound_s, NULL, NULL);
}

void run_forked_hook(const ncclUniqueId* id, int nranks, rank_fn fn, double bound_s,
                     void (*forked)(void*), void* arg) {
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
  if (forked) forked(arg);
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
void init_in_threads(const ncclUniqueId* id, int nranks, struct snapccl_bootstrap** out) {
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

int rank_main_with(struct snapccl_bootstrap* b, int rank, int n) {
  int rc;
  RCHECK(snapccl_bootstrap_rank(b) == rank && snapccl_bootstrap_nranks(b) == n);
  if ((rc = check_allgather(b, rank, n))) return rc;
  if ((rc = check_bcast(b, rank, n))) return rc;
  for (int i = 0; i < 3; i++) RCHECK(snapccl_bootstrap_barrier(b) == ncclSuccess);
  if ((rc = check_p2p(b, rank, n))) return rc;
  RCHECK(snapccl_bootstrap_barrier(b) == ncclSuccess);
  return 0;
}

int rank_main(const ncclUniqueId* id, int rank, int n) {
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, rank, n, &b) == ncclSuccess);
  int rc = rank_main_with(b, rank, n);
  snapccl_bootstrap_destroy(b);
  return rc;
}

/* A rank that only rendezvouses and runs one allgather (refusal cases). */
int rank_small(const ncclUniqueId* id, int rank, int n) {
  struct snapccl_bootstrap* b = NULL;
  RCHECK(snapccl_bootstrap_init(id, rank, n, &b) == ncclSuccess);
  int v[16] = {0};
  v[rank] = rank * 7 + 1;
  RCHECK(snapccl_bootstrap_allgather(b, v, sizeof v[0]) == ncclSuccess);
  for (int r = 0; r < n; r++) RCHECK(v[r] == r * 7 + 1);
  snapccl_bootstrap_destroy(b);
  return 0;
}

/* ---- forged peers ---- */

struct snapccl_unique_id id_fields(const ncclUniqueId* id) {
  struct snapccl_unique_id u;
  memcpy(&u, id->internal, sizeof u);
  return u;
}

int raw_connect(const ncclUniqueId* id) {
  struct snapccl_unique_id u = id_fields(id);
  cr_assert_eq(u.family, AF_INET);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = u.port};
  memcpy(&a.sin_addr, u.addr, 4);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0);
  cr_assert_eq(connect(fd, (struct sockaddr*)&a, sizeof a), 0, "connect: %s", strerror(errno));
  return fd;
}

void raw_send(int fd, const void* p, size_t n) {
  cr_assert_eq(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* A HELLO as a real rank would send it (listener 127.0.0.1:listen_port). */
struct hello_msg forged_hello(const ncclUniqueId* id, int rank, int nranks, uint16_t listen_port) {
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
int closed_within(int fd, int ms) {
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
int refused_port(uint16_t* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof a;
  cr_assert_eq(bind(fd, (struct sockaddr*)&a, sizeof a), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr*)&a, &l), 0);
  *port = ntohs(a.sin_port);
  return fd;
}

int raw_listen(struct sockaddr_in* a) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t l = sizeof *a;
  cr_assert_eq(bind(fd, (struct sockaddr*)a, sizeof *a), 0);
  cr_assert_eq(listen(fd, 16), 0);
  cr_assert_eq(getsockname(fd, (struct sockaddr*)a, &l), 0);
  return fd;
}

int raw_accept(int lfd) {
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  cr_assert_eq(poll(&p, 1, 5000), 1, "nobody connected");
  int fd = accept(lfd, NULL, NULL);
  cr_assert_geq(fd, 0);
  return fd;
}

void raw_read(int fd, void* buf, size_t n) {
  for (size_t got = 0; got < n;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert_eq(poll(&p, 1, 5000), 1, "no data");
    ssize_t k = recv(fd, (char*)buf + got, n - got, 0);
    cr_assert_gt(k, 0, "connection closed");
    got += (size_t)k;
  }
}

int raw_connect_to(const struct wire_addr* w) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = w->port};
  memcpy(&a.sin_addr, w->addr, 4);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  cr_assert_eq(connect(fd, (struct sockaddr*)&a, sizeof a), 0, "%s", strerror(errno));
  return fd;
}
