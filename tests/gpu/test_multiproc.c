/* Ranks in separate processes sharing the GPU (each rank r on GPU r % ndev): the
 * collectives of every algorithm over a spread of dtypes, ops and counts at world sizes
 * 2 and 3; init and clean destroy at 2 and 4; the low-precision all-reduce on large
 * calls (wide blocks, several rounds); a peer SIGKILLed in the middle of a loop
 * of all-reduces (of copy-engine all-gathers, reduce-scatters, all-reduces too), which
 * the survivor must notice within SNAPCCL_TIMEOUT_MS + 1 s.
 *
 * This process never touches CUDA: it forks the ranks first, then creates the unique id
 * (its bootstrap root thread lives here) and hands it to them through pipes. Ranks never
 * use Criterion; they report through their exit status, stderr and a pipe. Processes
 * time-slice the GPU (milliseconds per flag round trip), so the cases are small but for
 * the low-precision ones, which must be large enough for 64 blocks and two rounds.
 * compute-sanitizer does not follow ranks forked without exec, so the sanitizer runs of
 * run_gpu_suite.sh use the in-process subset of test_allreduce.c instead. */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../fnv.h"
#include "common.h"
#include "kernels/lowprec.h"
#include "reg_util.h"
#include "snapccl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define EXIT_SKIP 77

/* ---------------------------------------------------------------- forked ranks */

typedef int (*rank_fn)(int rank, int nranks, const ncclUniqueId* id, const void* arg, int report_fd);

struct mp {
  int n;
  pid_t pid[T_MAXR];
  int report[T_MAXR];
  int status[T_MAXR];
  int reaped[T_MAXR];
};


static int io_full(int fd, void* buf, size_t len, int writing) {
  char* p = buf;
  while (len) {
    ssize_t k = writing ? write(fd, p, len) : read(fd, p, len);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    p += k, len -= (size_t)k;
  }
  return 0;
}

static void mp_kill_all(struct mp* m) {
  for (int r = 0; r < m->n; r++)
    if (m->pid[r] > 0 && !m->reaped[r]) kill(m->pid[r], SIGKILL);
  for (int r = 0; r < m->n; r++)
    if (m->pid[r] > 0 && !m->reaped[r]) waitpid(m->pid[r], &m->status[r], 0), m->reaped[r] = 1;
}

static int mp_spawn(struct mp* m, int n, rank_fn fn, const void* arg, int limit_s, char* err) {
  int idp[T_MAXR][2], rep[T_MAXR][2];
  const pid_t parent = getpid();
  memset(m, 0, sizeof *m);
  m->n = n;
  signal(SIGPIPE, SIG_IGN); /* a rank that died must not take us with it */
  for (int r = 0; r < n; r++)
    if (pipe(idp[r]) != 0 || pipe(rep[r]) != 0) return t_fail(err, "pipe: %s", strerror(errno));
  fflush(stdout);
  fflush(stderr);
  for (int r = 0; r < n; r++) {
    pid_t p = fork();
    if (p < 0) {
      mp_kill_all(m);
      return t_fail(err, "fork: %s", strerror(errno));
    }
    if (p == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(2);
      signal(SIGALRM, SIG_DFL); /* whatever the test runner installed: the alarm kills */
      alarm((unsigned)limit_s);
      for (int j = 0; j < n; j++) {
        close(idp[j][1]);
        close(rep[j][0]);
        if (j != r) close(idp[j][0]), close(rep[j][1]);
      }
      ncclUniqueId id;
      if (io_full(idp[r][0], &id, sizeof id, 0) != 0) _exit(3);
      _exit(fn(r, n, &id, arg, rep[r][1]));
    }
    m->pid[r] = p;
  }
  for (int r = 0; r < n; r++) close(idp[r][0]), close(rep[r][1]), m->report[r] = rep[r][0];
  ncclUniqueId id;
  ncclResult_t res = ncclGetUniqueId(&id);
  int rc = 0;
  if (res != ncclSuccess)
    rc = t_fail(err, "ncclGetUniqueId: %s (%s)", ncclGetErrorString(res), ncclGetLastError(NULL));
  for (int r = 0; r < n; r++) {
    if (!rc && io_full(idp[r][1], &id, sizeof id, 1) != 0)
      rc = t_fail(err, "handing the id to rank %d: %s", r, strerror(errno));
    close(idp[r][1]);
  }
  if (rc) mp_kill_all(m);
  return rc;
}

static int mp_read(struct mp* m, int r, void* buf, size_t len, double timeout_s, char* err) {
  char* p = buf;
  double end = t_now() + timeout_s;
  while (len) {
    struct pollfd pfd = {m->report[r], POLLIN, 0};
    int left = (int)((end - t_now()) * 1000);
    if (left <= 0) return t_fail(err, "rank %d reported nothing within %.0f s", r, timeout_s);
    int k = poll(&pfd, 1, left);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) continue;
    ssize_t got = read(m->report[r], p, len);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return t_fail(err, "rank %d closed its report pipe (it exited early)", r);
    p += got, len -= (size_t)got;
  }
  return 0;
}

static int mp_wait(struct mp* m, double timeout_s, char* err) {
  double end = t_now() + timeout_s;
  for (;;) {
    int left = 0;
    for (int r = 0; r < m->n; r++) {
      if (m->reaped[r]) continue;
      pid_t p = waitpid(m->pid[r], &m->status[r], WNOHANG);
      if (p == m->pid[r]) m->reaped[r] = 1;
      else left++;
    }
    if (!left) return 0;
    if (t_now() > end) {
      int r = 0;
      while (m->reaped[r]) r++;
      mp_kill_all(m);
      return t_fail(err, "rank %d (and %d rank(s) in all) still ran after %.0f s; killed", r, left, timeout_s);
    }
    t_sleep_ms(5);
  }
}

/* 0 when every rank exited 0; *skipped when all exited EXIT_SKIP. */
static int mp_check(const struct mp* m, int* skipped, char* err) {
  int skips = 0;
  for (int r = 0; r < m->n; r++) {
    int st = m->status[r];
    if (WIFEXITED(st) && WEXITSTATUS(st) == EXIT_SKIP) skips++;
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      return t_fail(err, "rank %d %s %d (see its messages on stderr)", r,
                  WIFEXITED(st) ? "exited with" : "was killed by signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
  }
  *skipped = skips == m->n;
  if (skips && !*skipped) return t_fail(err, "%d of %d ranks saw no GPU", skips, m->n);
  return 0;
}

static void mp_close(struct mp* m) {
  for (int r = 0; r < m->n; r++) close(m->report[r]);
}

#define RANK_FAIL(...)                                                     \
  do {                                                                     \
    fprintf(stderr, "[rank %d pid %d] ", rank, (int)getpid());             \
    fprintf(stderr, __VA_ARGS__);                                          \
    fprintf(stderr, "\n");                                                 \
    return 1;                                                              \
  } while (0)

/* ---------------------------------------------------------------- collectives */

/* The same list on every rank (deterministic seeds): all-reduce of each algorithm over
 * dtypes x counts with rotating ops and placements, then all-gather and reduce-scatter;
 * every third case with misaligned pointers. */
static int build_cases(int n, struct t_case* out, int max) {
  static const ncclDataType_t dts[] = {ncclFloat32, ncclBfloat16, ncclInt32,   ncclUint8,
                                       ncclFloat64, ncclFloat8e5m2, ncclFloat16, ncclInt64};
  static const char* const algos[] = {"lamport", "oneshot", "twoshot"};
  static const size_t counts[] = {3, 4097, 65537};
  int k = 0;
  for (size_t a = 0; a < NELEMS(algos); a++)
    for (size_t d = 0; d < NELEMS(dts); d++)
      for (size_t i = 0; i < NELEMS(counts) && k < max; i++) {
        if (a == 0 && !t_dt_is_float(dts[d])) continue;
        out[k] = t_case_make(T_AR, dts[d], k % T_NOPS, counts[i], k & 1, algos[a],
                             t_mix(0x6d70ull ^ ((uint64_t)n << 40) ^ (uint64_t)k));
        k++;
      }
  for (int coll = T_AG; coll <= T_RS; coll++)
    for (size_t d = 0; d < 4; d++)
      for (size_t i = 0; i < NELEMS(counts) && k < max; i++) {
        out[k] = t_case_make(coll, dts[(d * 3 + i) % NELEMS(dts)], (k * 3) % T_NOPS, counts[i], k & 1,
                             i & 1 ? "direct" : NULL, t_mix(0x6d71ull ^ ((uint64_t)n << 40) ^ (uint64_t)k));
        k++;
      }
  for (int i = 0; i < k; i++)
    if (i % 3 == 0)
      for (int r = 0; r < n; r++) out[i].send_off[r] = (i + 5 * r) % 16, out[i].recv_off[r] = (i + 3 * r + 1) % 16;
  return k;
}

static int cases_rank(int rank, int n, const ncclUniqueId* id, const void* arg, int report) {
  char err[T_ERRLEN];
  struct t_world w;
  struct t_bufs b;
  struct t_case c[128];
  if (t_gpu_count() <= 0) return EXIT_SKIP;
  t_env_defaults();
  if (t_world_init_rank(&w, n, rank, id, err) != 0) RANK_FAIL("%s", err);
  (void)arg;
  int k = build_cases(n, c, (int)NELEMS(c));
  size_t sc = 0, rc = 0;
  for (int i = 0; i < k; i++) {
    size_t s = t_case_send_bytes(&c[i], n), r = t_case_recv_bytes(&c[i], n);
    sc = s > sc ? s : sc, rc = r > rc ? r : rc;
  }
  if (t_bufs_alloc(&w, &b, sc, rc, err) != 0) RANK_FAIL("%s", err);
  for (int i = 0; i < k; i++)
    if (t_run_case(&w, &c[i], &b, err) != 0) {
      ncclCommAbort(w.comm[rank]); /* the peers time out instead of waiting for us */
      RANK_FAIL("case %d of %d: %s", i, k, err); /* err names the case */
    }
  t_bufs_free(&w, &b);
  if (t_world_free(&w, err) != 0) RANK_FAIL("%s", err);
  if (write(report, &w.hash, sizeof w.hash) != (ssize_t)sizeof w.hash) RANK_FAIL("report: %s", strerror(errno));
  return 0;
}

/* fn on n forked ranks, each of which reports the hash of its results: all must agree.
 * arg goes to fn. */
static void run_hashed(int n, rank_fn fn, const void* arg) {
  char err[T_ERRLEN];
  struct mp m;
  int skipped = 0;
  uint64_t hash[T_MAXR];
  T_REQUIRE_GPU_FORKED();
  t_env_defaults();
  T_OK(mp_spawn(&m, n, fn, arg, 400, err), err);
  T_OK(mp_wait(&m, 400, err), err);
  T_OK(mp_check(&m, &skipped, err), err);
  if (skipped) cr_skip_test("no GPU");
  for (int r = 0; r < n; r++) T_OK(mp_read(&m, r, &hash[r], sizeof hash[r], 5, err), err);
  for (int r = 1; r < n; r++) cr_assert_eq(hash[r], hash[0], "rank %d's results differ bitwise from rank 0's", r);
  mp_close(&m);
}

Test(multiproc, ws2_cases, .timeout = 420) { run_hashed(2, cases_rank, NULL); }
Test(multiproc, ws3_cases, .timeout = 420) { run_hashed(3, cases_rank, NULL); }

/* ---------------------------------------------------------------- init and destroy */

static int init_rank(int rank, int n, const ncclUniqueId* id, const void* arg, int report) {
  char err[T_ERRLEN];
  struct t_world w;
  (void)arg, (void)report;
  if (t_gpu_count() <= 0) return EXIT_SKIP;
  t_env_defaults();
  if (t_world_init_rank(&w, n, rank, id, err) != 0) RANK_FAIL("%s", err); /* checks the queries */
  struct t_case a = t_case_make(T_AR, ncclFloat32, T_SUM, 1000, 0, NULL, 0x1417);
  struct t_case g = t_case_make(T_AG, ncclInt32, T_SUM, 300, 1, NULL, 0x1418);
  if (t_run_case_alloc(&w, &a, err) != 0 || t_run_case_alloc(&w, &g, err) != 0) RANK_FAIL("%s", err);
  if (t_world_free(&w, err) != 0) RANK_FAIL("%s", err);
  return 0;
}

static void init_test(int n) {
  char err[T_ERRLEN];
  struct mp m;
  int skipped = 0;
  T_REQUIRE_GPU_FORKED();
  t_env_defaults();
  T_OK(mp_spawn(&m, n, init_rank, NULL, 120, err), err);
  T_OK(mp_wait(&m, 120, err), err);
  T_OK(mp_check(&m, &skipped, err), err);
  if (skipped) cr_skip_test("no GPU");
  mp_close(&m);
}

Test(mp_init, ws2, .timeout = 150) { init_test(2); }
Test(mp_init, ws4, .timeout = 150) { init_test(4); }

/* ---------------------------------------------------------------- registered buffers */

/* Every memory kind under both registration calls (tests/gpu/reg_util.h): legacy IPC of
 * cudaMalloc memory, cuMem segments passed as POSIX fds, ncclMemAlloc memory. Each rank
 * reads every peer's data through its mapping, then runs the cases on the registered
 * memory; window registrations are freed without deregistering, and the next kind's
 * memory may land at the same addresses. */
static int registered_rank(int rank, int n, const ncclUniqueId* id, const void* arg, int report) {
  char err[T_ERRLEN];
  struct t_world w;
  (void)arg, (void)report;
  if (t_gpu_count() <= 0) return EXIT_SKIP;
  t_env_defaults();
  if (t_world_init_rank(&w, n, rank, id, err) != 0) RANK_FAIL("%s", err);
  for (int mem = 0; mem < REG_NMEM; mem++)
    for (int mode = REG_COMM; mode <= REG_WINDOW; mode++) {
      struct reg_bufs rb;
      if (reg_bufs_alloc(&w, &rb, mem, reg_cases_send_cap(n), reg_cases_recv_cap(n), err) != 0 ||
          reg_pattern_write(&w, &rb, err) != 0 || reg_bufs_register(&w, &rb, mode, err) != 0 ||
          reg_pattern_check(&w, &rb, 1, err) != 0 ||
          reg_run_cases(&w, &rb, 0x7265ull + (uint64_t)(mem * 2 + mode), err) != 0 ||
          (mode == REG_COMM && reg_bufs_deregister(&w, &rb, err) != 0)) {
        ncclCommAbort(w.comm[rank]); /* the peers time out instead of waiting for us */
        RANK_FAIL("%s, %s: %s", reg_mem_name[mem], mode == REG_COMM ? "ncclCommRegister" : "window", err);
      }
      if (reg_bufs_free(&w, &rb, err) != 0) RANK_FAIL("%s", err);
    }
  if (t_world_free(&w, err) != 0) RANK_FAIL("%s", err);
  return 0;
}

static void registered_test(int n) {
  char err[T_ERRLEN];
  struct mp m;
  int skipped = 0;
  T_REQUIRE_GPU_FORKED();
  t_env_defaults();
  T_OK(mp_spawn(&m, n, registered_rank, NULL, 400, err), err);
  T_OK(mp_wait(&m, 400, err), err);
  T_OK(mp_check(&m, &skipped, err), err);
  if (skipped) cr_skip_test("no GPU");
  mp_close(&m);
}

Test(multiproc, registered_ws2, .timeout = 420) { registered_test(2); }
Test(multiproc, registered_ws3, .timeout = 420) { registered_test(3); }

/* ---------------------------------------------------------------- low precision */

/* One rank per process, as on a host with a GPU per rank: the transport's promise (half
 * the GPU: 128 blocks of 256 threads, or 66 whole SMs on an H100) is this rank's alone, so
 * the calls below need every block, over two rounds, in shapes that ranks sharing a GPU in
 * one process (test_lowprec.c) never reach. Every rank's output must equal the CPU
 * simulation bit for bit. */
struct lp_mp_case {
  int fmt, group;
  ncclDataType_t dt;
  size_t count;
};
static const struct lp_mp_case lp_mp_cases[] = {
    {SNAPCCL_LOWPREC_FP8, 256, ncclFloat16, 20000003},
    {SNAPCCL_LOWPREC_INT4, 128, ncclBfloat16, 36000001},
    {SNAPCCL_LOWPREC_INT8, 1024, ncclFloat32, 20000000},
};

/* Roughly unit-variance values with rare large ones, a function of (case, rank). */
static void lp_mp_gen(const struct lp_mp_case* c, int k, int rank, unsigned char* p) {
  uint64_t s = t_mix(0x10ecull ^ ((uint64_t)k << 32) ^ t_mix(0x1e7ull + (uint64_t)rank));
  for (size_t i = 0; i < c->count; i++) {
    const uint64_t r = t_rand(&s);
    double v = ((double)(r >> 11) * 0x1.0p-53 - 0.5) * 3.4;
    if ((r & 0x3ff) == 7) v *= 300;
    t_put(c->dt, p, i, v);
  }
}

/* arg: SNAPCCL_MAX_BLOCKS for the ranks (NULL: the default cap). */
static int lowprec_rank(int rank, int n, const ncclUniqueId* id, const void* arg, int report) {
  char err[T_ERRLEN];
  struct t_world w;
  if (t_gpu_count() <= 0) return EXIT_SKIP;
  t_env_defaults();
  t_env_set("SNAPCCL_MAX_BLOCKS", (const char*)arg);
  if (t_world_init_rank(&w, n, rank, id, err) != 0) RANK_FAIL("%s", err);
  for (int k = 0; k < (int)NELEMS(lp_mp_cases); k++) {
    const struct lp_mp_case* c = &lp_mp_cases[k];
    const size_t bytes = c->count * t_dt_size(c->dt);
    unsigned char* in[T_MAXR] = {0};
    unsigned char *want = malloc(bytes), *got = malloc(bytes);
    void *dsend = NULL, *drecv = NULL;
    if (!want || !got) RANK_FAIL("out of memory");
    for (int r = 0; r < n; r++) {
      if (!(in[r] = malloc(bytes))) RANK_FAIL("out of memory");
      lp_mp_gen(c, k, r, in[r]);
    }
    if (cudaMalloc(&dsend, bytes) != cudaSuccess || cudaMalloc(&drecv, bytes) != cudaSuccess ||
        cudaMemcpy(dsend, in[rank], bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemset(drecv, 0xff, bytes) != cudaSuccess) /* NaN in every dtype */
      RANK_FAIL("case %d: device buffers: %s", k, cudaGetErrorString(cudaGetLastError()));
    const char* algo = NULL;
    if (snapcclCommSetLowPrecision(w.comm[rank], c->fmt, c->group, 0) != ncclSuccess ||
        snapcclQueryAlgorithm(w.comm[rank], "allreduce", c->count, c->dt, ncclSum, &algo) != ncclSuccess)
      RANK_FAIL("case %d: %s", k, ncclGetLastError(w.comm[rank]));
    if (!algo || strcmp(algo, "lowprec")) RANK_FAIL("case %d: %s chosen, not lowprec", k, algo ? algo : "nothing");
    if (ncclAllReduce(dsend, drecv, c->count, c->dt, ncclSum, w.comm[rank], w.stream[rank]) != ncclSuccess)
      RANK_FAIL("case %d: ncclAllReduce: %s", k, ncclGetLastError(w.comm[rank]));
    if (t_world_sync(&w, t_wait_bound_s(), err) != 0) RANK_FAIL("case %d: %s", k, err);
    if (cudaMemcpy(got, drecv, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
      RANK_FAIL("case %d: copy back: %s", k, cudaGetErrorString(cudaGetLastError()));
    if (snapccl_lp_simulate(c->fmt, c->group, c->dt, n, 0, c->count, (const void* const*)in, want) != 0)
      RANK_FAIL("case %d: the simulation refused it", k);
    const size_t es = t_dt_size(c->dt);
    for (size_t i = 0; i < c->count; i++)
      if (memcmp(got + i * es, want + i * es, es))
        RANK_FAIL("case %d (%s, group %d, %s, count %zu): element %zu is %g, the simulation's %g", k,
                  c->fmt == SNAPCCL_LOWPREC_FP8 ? "fp8" : c->fmt == SNAPCCL_LOWPREC_INT8 ? "int8" : "int4", c->group,
                  t_dt_name(c->dt), c->count, i, t_get(c->dt, got, i), t_get(c->dt, want, i));
    w.hash = fnv_continue(w.hash, got, bytes);
    if (cudaFree(dsend) != cudaSuccess || cudaFree(drecv) != cudaSuccess) RANK_FAIL("cudaFree failed");
    for (int r = 0; r < n; r++) free(in[r]);
    free(want);
    free(got);
  }
  if (t_world_free(&w, err) != 0) RANK_FAIL("%s", err);
  if (write(report, &w.hash, sizeof w.hash) != (ssize_t)sizeof w.hash) RANK_FAIL("report: %s", strerror(errno));
  return 0;
}

/* Two ranks as processes each have the GPU's whole-SM promise to themselves, as one rank per
 * GPU does: capped at 64 blocks, the calls run 512-thread blocks (64 <= 66 whole SMs on an
 * H100/H200); at the default cap, 128 blocks of 256 threads. Both over two rounds. */
Test(mp_lowprec, ws2_wide_rounds, .timeout = 420) { run_hashed(2, lowprec_rank, "64"); }
Test(mp_lowprec, ws2_narrow_128, .timeout = 420) { run_hashed(2, lowprec_rank, NULL); }

/* ---------------------------------------------------------------- a killed peer */

#define KILL_TIMEOUT_MS 2000

struct detect {
  double when; /* CLOCK_MONOTONIC seconds at which the error was seen */
  int async_error;
  int names_timeout;
  double abort_s;
  char msg[256];
};

/* The collective a killed-peer loop runs: all-reduce, but for the copy-engine all-gather
 * and reduce-scatter, which are their own collectives. */
static int loop_coll(const char* algo) {
  return !strcmp(algo, "ce_allgather") ? T_AG : !strcmp(algo, "ce_reducescatter") ? T_RS : T_AR;
}

/* Element i of rank r's input, and of rank `rank`'s expected output, at two ranks. */
static float loop_in(int r, size_t i) { return (float)(r + 1) * (float)(1 + i % 7); }
static float loop_out(int coll, int rank, size_t count, size_t i) {
  if (coll == T_AG) return loop_in((int)(i / count), i % count);
  return 3.0f * (float)(1 + (coll == T_RS ? (size_t)rank * count + i : i) % 7);
}

static int loop_rank(int rank, int n, const ncclUniqueId* id, const void* arg, int report) {
  char err[T_ERRLEN];
  struct t_world w;
  const char* algo = arg;
  const int coll = loop_coll(algo);
  const size_t count = strcmp(algo, "twoshot") ? 4096 : 1 << 18;
  const size_t in_n = coll == T_RS ? count * (size_t)n : count, out_n = coll == T_AG ? count * (size_t)n : count;
  if (t_gpu_count() <= 0) return EXIT_SKIP;
  t_env_defaults();
  t_env_set("SNAPCCL_TIMEOUT_MS", "2000");
  if (t_world_init_rank(&w, n, rank, id, err) != 0) RANK_FAIL("%s", err);
  t_set_algo(coll, algo);
  float *send = NULL, *recv = NULL, *host = malloc((in_n > out_n ? in_n : out_n) * sizeof *host);
  if (!host || cudaMalloc((void**)&send, in_n * 4) != cudaSuccess || cudaMalloc((void**)&recv, out_n * 4) != cudaSuccess)
    RANK_FAIL("out of memory");
  for (size_t i = 0; i < in_n; i++) host[i] = loop_in(rank, i);
  if (cudaMemcpy(send, host, in_n * 4, cudaMemcpyHostToDevice) != cudaSuccess ||
      cudaDeviceSynchronize() != cudaSuccess) /* a pageable upload may return before it lands */
    RANK_FAIL("upload failed");
  ncclComm_t comm = w.comm[rank];
  cudaStream_t s = w.stream[rank];
  ncclResult_t ae = ncclSuccess;
  const double start = t_now();
  for (int it = 0; ae == ncclSuccess; it++) {
    ncclResult_t res = coll == T_AG ? ncclAllGather(send, recv, count, ncclFloat32, comm, s)
                     : coll == T_RS ? ncclReduceScatter(send, recv, count, ncclFloat32, ncclSum, comm, s)
                                    : ncclAllReduce(send, recv, count, ncclFloat32, ncclSum, comm, s);
    double wait_end = t_now() + 30;
    cudaError_t e;
    while ((e = cudaStreamQuery(s)) == cudaErrorNotReady && t_now() < wait_end) t_sleep_ms(1);
    if (e != cudaSuccess) RANK_FAIL("iteration %d: the stream %s", it, e == cudaErrorNotReady ? "never completed" : cudaGetErrorString(e));
    if (ncclCommGetAsyncError(comm, &ae) != ncclSuccess) RANK_FAIL("ncclCommGetAsyncError failed");
    if (ae != ncclSuccess) break;
    if (res != ncclSuccess) RANK_FAIL("iteration %d: %s: %s (%s)", it, algo, ncclGetErrorString(res), ncclGetLastError(NULL));
    if (cudaMemcpy(host, recv, out_n * 4, cudaMemcpyDeviceToHost) != cudaSuccess) RANK_FAIL("download failed");
    for (size_t i = 0; i < out_n; i++)
      if (host[i] != loop_out(coll, rank, count, i)) RANK_FAIL("iteration %d: element %zu is %g", it, i, host[i]);
    if (it == 20 && write(report, "R", 1) != 1) RANK_FAIL("report: %s", strerror(errno));
    if (t_now() - start > 100) RANK_FAIL("no error within 100 s of looping");
  }
  struct detect d;
  memset(&d, 0, sizeof d);
  d.when = t_now();
  d.async_error = (int)ae;
  snprintf(d.msg, sizeof d.msg, "%s", ncclGetLastError(comm));
  d.names_timeout = strstr(d.msg, "SNAPCCL_TIMEOUT_MS") != NULL;
  double t0 = t_now();
  ncclResult_t res = ncclCommAbort(comm);
  d.abort_s = t_now() - t0;
  if (write(report, &d, sizeof d) != (ssize_t)sizeof d) RANK_FAIL("report: %s", strerror(errno));
  if (res != ncclSuccess) RANK_FAIL("ncclCommAbort: %s", ncclGetErrorString(res));
  return 0;
}

static void killed_peer(const char* algo) {
  char err[T_ERRLEN];
  struct mp m;
  struct detect d;
  char ready;
  int skipped = 0;
  T_REQUIRE_GPU_FORKED();
  t_env_defaults();
  T_OK(mp_spawn(&m, 2, loop_rank, algo, 150, err), err);
  for (int r = 0; r < 2; r++)
    if (mp_read(&m, r, &ready, 1, 90, err) != 0) {
      char why[T_ERRLEN];
      (void)mp_wait(&m, 20, why);
      if (mp_check(&m, &skipped, why) == 0 && skipped) cr_skip_test("no GPU");
      cr_assert_fail("%s (%s)", err, why);
    }
  t_sleep_ms(150); /* both ranks are inside the loop */
  const double killed = t_now();
  cr_assert_eq(kill(m.pid[1], SIGKILL), 0);
  int got = mp_read(&m, 0, &d, sizeof d, KILL_TIMEOUT_MS / 1000.0 + 20, err);
  T_OK(mp_wait(&m, 30, err), err);
  cr_assert(WIFSIGNALED(m.status[1]) && WTERMSIG(m.status[1]) == SIGKILL, "rank 1 was not the one killed");
  cr_assert(got == 0, "the survivor did not report: %s (status 0x%x)", err, m.status[0]);
  cr_assert(WIFEXITED(m.status[0]) && WEXITSTATUS(m.status[0]) == 0,
            "the survivor failed (status 0x%x; see stderr)", m.status[0]);
  cr_assert_eq(d.async_error, ncclRemoteError, "async error %s (%s)",
               ncclGetErrorString((ncclResult_t)d.async_error), d.msg);
  cr_assert(d.names_timeout, "the last error does not name SNAPCCL_TIMEOUT_MS: %s", d.msg);
  double delay = d.when - killed;
  cr_log_info("%s: the survivor saw the error %.3f s after the kill; ncclCommAbort took %.3f s",
              algo, delay, d.abort_s);
  cr_assert(delay >= 0, "the survivor saw an error %.3f s before the kill: %s", -delay, d.msg);
  cr_assert_leq(delay, KILL_TIMEOUT_MS / 1000.0 + 1.0, "the survivor needed %.3f s to see the error", delay);
  cr_assert_lt(d.abort_s, 1.5, "ncclCommAbort took %.3f s", d.abort_s);
  mp_close(&m);
}

Test(killed_peer, lamport, .timeout = 180) { killed_peer("lamport"); }
Test(killed_peer, oneshot, .timeout = 180) { killed_peer("oneshot"); }
Test(killed_peer, twoshot, .timeout = 180) { killed_peer("twoshot"); }
/* The copy-engine algorithms: the survivor waits in their one-warp sync kernel. */
Test(killed_peer, ce_allgather, .timeout = 180) { killed_peer("ce_allgather"); }
Test(killed_peer, ce_reducescatter, .timeout = 180) { killed_peer("ce_reducescatter"); }
Test(killed_peer, ce_allreduce, .timeout = 180) { killed_peer("ce_allreduce"); }
