/* Lifetime: a process soak. The parent (which never touches CUDA) forks two-rank worlds
 * on one GPU (SNAPCCL_SHARED_GPU=1), several at a time; each world runs random
 * collectives of random sizes until the parent kills one of its ranks with SIGKILL at a
 * random moment. The survivor must then
 *   - see ncclRemoteError from ncclCommGetAsyncError within SNAPCCL_TIMEOUT_MS + 1 s of
 *     the kill (and no error before it),
 *   - get out of ncclCommAbort within 1 s,
 *   - create a new communicator and run a checked all-reduce on it.
 *
 *   gpu_lifetime_soak [KILLS [SLOTS [SECONDS [TIMEOUT_MS [MAX_DELAY_MS]]]]]
 *        defaults:      300     6      170       2000        300
 *
 * It stops after KILLS kills or SECONDS (whichever first), then prints the count, the
 * worst times and every failure. Exit status 0 when no kill went wrong, 77 without a GPU. */
#include <cuda_runtime.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "lifetime.h"

#define MAX_SLOTS 16
#define MAX_COUNT (1u << 18) /* floats per rank and call */

/* What a world and the parent tell each other (shared memory, set up before fork). */
struct slot {
  int ready[2];    /* rank r has its communicator and runs collectives */
  double kill_at;  /* CLOCK_MONOTONIC seconds of the SIGKILL, 0 before */
  int done;        /* the survivor's report below is complete */
  int code;        /* what ncclCommGetAsyncError said */
  double err_at, abort_s;
  int new_comm_ok, calls;
  char msg[512];
};

static double load_d(const double* p) {
  double v;
  __atomic_load(p, &v, __ATOMIC_ACQUIRE);
  return v;
}
static int load_i(const int* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static void report(struct slot* s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(struct slot* s, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->msg, sizeof s->msg, fmt, ap);
  va_end(ap);
}

/* A rank's whole life (in a child). Returns its exit status. */
static int rank_main(struct slot* s, int rank, int fd, double timeout_s, uint64_t seed) {
  char err[T_ERRLEN];
  cudaStream_t stream;
  struct lt_bufs bufs, small;
  float* big_recv = NULL;
  if (cudaSetDevice(0) != cudaSuccess || cudaStreamCreate(&stream) != cudaSuccess ||
      lt_bufs_alloc(&bufs, MAX_COUNT, err) || lt_bufs_alloc(&small, 1024, err) ||
      cudaMalloc((void**)&big_recv, 2 * MAX_COUNT * sizeof(float)) != cudaSuccess) {
    report(s, "setup: %s", err);
    return 1;
  }
  ncclUniqueId id;
  ncclResult_t r = ncclSuccess;
  if (rank == 0 && (r = ncclGetUniqueId(&id)) == ncclSuccess && write(fd, &id, sizeof id) != (ssize_t)sizeof id)
    r = ncclSystemError;
  if (rank == 1 && read(fd, &id, sizeof id) != (ssize_t)sizeof id) r = ncclSystemError;
  ncclComm_t comm = NULL;
  if (r == ncclSuccess) r = ncclCommInitRank(&comm, 2, id, rank);
  if (r == ncclSuccess && lt_allreduce_check(&comm, &stream, &small, &rank, 1, 2, 30.0, err) != 0) {
    report(s, "first all-reduce: %s", err);
    return 1;
  }
  if (r != ncclSuccess) {
    report(s, "init: %s (%s)", ncclGetErrorString(r), ncclGetLastError(NULL));
    return 1;
  }
  __atomic_store_n(&s->ready[rank], 1, __ATOMIC_RELEASE);
  /* Random collectives until the peer is gone. */
  ncclResult_t as = ncclSuccess;
  double err_at = 0;
  int calls = 0;
  for (;;) {
    uint64_t x = t_rand(&seed);
    size_t count = 1 + (size_t)(t_rand(&seed) % (1u << (4 + x % 15)));
    if (count > MAX_COUNT) count = MAX_COUNT;
    int coll = (int)((x >> 8) % 3);
    if (coll == 0) r = ncclAllReduce(bufs.send, bufs.recv, count, ncclFloat32, ncclSum, comm, stream);
    else if (coll == 1) r = ncclAllGather(bufs.send, big_recv, count, ncclFloat32, comm, stream);
    else r = ncclReduceScatter(big_recv, bufs.recv, count, ncclFloat32, ncclSum, comm, stream);
    double bound = t_now() + timeout_s + 10.0;
    while (r == ncclSuccess) {
      if (ncclCommGetAsyncError(comm, &as) != ncclSuccess || as != ncclSuccess) break;
      cudaError_t e = cudaStreamQuery(stream);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) {
        report(s, "stream: %s", cudaGetErrorString(e));
        return 1;
      }
      if (t_now() > bound) {
        report(s, "a collective neither finished nor failed within SNAPCCL_TIMEOUT_MS + 10 s");
        return 1;
      }
      t_sleep_ms(1);
    }
    if (r != ncclSuccess || as != ncclSuccess) {
      err_at = t_now();
      if (r != ncclSuccess) as = r;
      break;
    }
    calls++;
  }
  s->calls = calls;
  s->code = (int)as;
  s->err_at = err_at;
  snprintf(s->msg, sizeof s->msg, "%s", ncclGetLastError(NULL));
  double t0 = t_now();
  r = ncclCommAbort(comm);
  s->abort_s = t_now() - t0;
  if (r != ncclSuccess) snprintf(s->msg, sizeof s->msg, "ncclCommAbort: %s", ncclGetErrorString(r));
  /* A new communicator in this very process, used once. */
  ncclComm_t fresh = NULL;
  int zero = 0;
  s->new_comm_ok = ncclGetUniqueId(&id) == ncclSuccess && ncclCommInitRank(&fresh, 1, id, 0) == ncclSuccess &&
                   lt_allreduce_check(&fresh, &stream, &small, &zero, 1, 1, 30.0, err) == 0 &&
                   ncclCommDestroy(fresh) == ncclSuccess;
  if (!s->new_comm_ok) snprintf(s->msg, sizeof s->msg, "new communicator: %s", ncclGetLastError(NULL));
  __atomic_store_n(&s->done, 1, __ATOMIC_RELEASE);
  return 0;
}

/* ---- the parent ---- */

enum { IDLE, STARTING, RUNNING, KILLED };
struct world {
  int state;
  pid_t pid[2];
  int victim;
  double since, kill_plan;
};

struct totals {
  int kills, failures, new_comms;
  double worst_err_s, worst_abort_s, sum_err_s;
};

static void reap_all(struct world* w) {
  for (int r = 0; r < 2; r++)
    if (w->pid[r] > 0) {
      kill(w->pid[r], SIGKILL);
      waitpid(w->pid[r], NULL, 0);
      w->pid[r] = 0;
    }
  w->state = IDLE;
}

static void start_world(struct world* w, struct slot* s, double timeout_s, uint64_t seed) {
  memset(s, 0, sizeof *s);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  fflush(NULL);
  for (int r = 0; r < 2; r++) {
    w->pid[r] = fork();
    if (w->pid[r] == 0) {
      close(sv[1 - r]);
      _exit(rank_main(s, r, sv[r], timeout_s, t_mix(seed + (uint64_t)r)));
    }
    if (w->pid[r] < 0) w->pid[r] = 0; /* the world fails to come up; reaped below */
  }
  close(sv[0]);
  close(sv[1]);
  w->state = STARTING;
  w->since = t_now();
}

static void fail_world(struct world* w, struct totals* t, int slot, const char* what, const struct slot* s) {
  printf("FAIL world in slot %d: %s%s%s\n", slot, what, s->msg[0] ? ": " : "", s->msg);
  fflush(stdout);
  t->failures++;
  reap_all(w);
}

/* The survivor's report, judged. */
static void judge(struct world* w, struct totals* t, int slot, const struct slot* s, double timeout_s) {
  double kill_at = load_d(&s->kill_at), lag = s->err_at - kill_at;
  char what[256];
  t->kills++;
  if (s->code != ncclRemoteError) {
    snprintf(what, sizeof what, "the survivor saw %s, not ncclRemoteError", ncclGetErrorString((ncclResult_t)s->code));
    fail_world(w, t, slot, what, s);
    return;
  }
  if (s->err_at < kill_at || lag > timeout_s + 1.0) {
    snprintf(what, sizeof what, "the error came %.3f s after the kill (allowed: 0 to %.1f s)", lag,
             timeout_s + 1.0);
    fail_world(w, t, slot, what, s);
    return;
  }
  if (s->abort_s > 1.0) {
    snprintf(what, sizeof what, "ncclCommAbort took %.3f s", s->abort_s);
    fail_world(w, t, slot, what, s);
    return;
  }
  if (!s->new_comm_ok) {
    fail_world(w, t, slot, "no new communicator after the abort", s);
    return;
  }
  t->new_comms++;
  t->sum_err_s += lag;
  if (lag > t->worst_err_s) t->worst_err_s = lag;
  if (s->abort_s > t->worst_abort_s) t->worst_abort_s = s->abort_s;
}

int main(int argc, char** argv) {
  int kills = argc > 1 ? atoi(argv[1]) : 300, nslots = argc > 2 ? atoi(argv[2]) : 6;
  double seconds = argc > 3 ? atof(argv[3]) : 170.0;
  int timeout_ms = argc > 4 ? atoi(argv[4]) : 2000, max_delay_ms = argc > 5 ? atoi(argv[5]) : 300;
  if (kills < 1 || nslots < 1 || nslots > MAX_SLOTS || !(seconds > 0) || timeout_ms < 100 || max_delay_ms < 0) {
    fprintf(stderr, "usage: %s [KILLS [SLOTS 1..%d [SECONDS [TIMEOUT_MS [MAX_DELAY_MS]]]]]\n", argv[0], MAX_SLOTS);
    return 2;
  }
  char tms[32];
  snprintf(tms, sizeof tms, "%d", timeout_ms);
  setenv("SNAPCCL_SHARED_GPU", "1", 1);
  setenv("SNAPCCL_TIMEOUT_MS", tms, 1);
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "30", 0);
  if (t_gpu_count_forked() <= 0) {
    printf("skip: no GPU\n");
    return LT_SKIP;
  }
  double timeout_s = timeout_ms / 1000.0;
  struct slot* shm = mmap(NULL, sizeof(struct slot) * (size_t)nslots, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shm == MAP_FAILED) return 1;
  struct world worlds[MAX_SLOTS];
  memset(worlds, 0, sizeof worlds);
  struct totals t = {0};
  uint64_t rng = 0x50a4ull ^ (uint64_t)getpid();
  double t0 = t_now(), stop = t0 + seconds;
  int launched = 0;
  printf("soak: %d kills or %.0f s, %d worlds at a time, SNAPCCL_TIMEOUT_MS=%d, kills up to %d ms "
         "after a world is up\n", kills, seconds, nslots, timeout_ms, max_delay_ms);
  fflush(stdout);
  for (;;) {
    int busy = 0;
    for (int i = 0; i < nslots; i++) {
      struct world* w = &worlds[i];
      struct slot* s = &shm[i];
      double now = t_now();
      int st;
      switch (w->state) {
        case IDLE:
          if (launched < kills && now < stop) {
            start_world(w, s, timeout_s, t_rand(&rng));
            launched++;
          }
          break;
        case STARTING:
          for (int r = 0; r < 2; r++)
            if (w->pid[r] == 0 || waitpid(w->pid[r], &st, WNOHANG) == w->pid[r]) {
              w->pid[r] = 0;
              fail_world(w, &t, i, "a rank exited before its world was up", s);
              break;
            }
          if (w->state != STARTING) break;
          if (load_i(&s->ready[0]) && load_i(&s->ready[1])) {
            w->victim = (int)(t_rand(&rng) & 1);
            w->kill_plan = now + (double)(t_rand(&rng) % (uint64_t)(max_delay_ms + 1)) / 1000.0;
            w->state = RUNNING;
          } else if (now - w->since > 60.0) {
            fail_world(w, &t, i, "the world did not come up within 60 s", s);
          }
          break;
        case RUNNING:
          if (now >= w->kill_plan) {
            double at = t_now();
            __atomic_store(&s->kill_at, &at, __ATOMIC_RELEASE);
            kill(w->pid[w->victim], SIGKILL);
            waitpid(w->pid[w->victim], NULL, 0);
            w->pid[w->victim] = 0;
            w->since = t_now();
            w->state = KILLED;
          }
          break;
        case KILLED: {
          pid_t survivor = w->pid[1 - w->victim];
          if (waitpid(survivor, &st, WNOHANG) == survivor) {
            w->pid[1 - w->victim] = 0;
            if (!load_i(&s->done)) fail_world(w, &t, i, "the survivor exited without its report", s);
            else judge(w, &t, i, s, timeout_s);
            w->state = IDLE;
          } else if (now - w->since > timeout_s + 30.0) {
            fail_world(w, &t, i, "the survivor hangs", s);
          }
          break;
        }
      }
      busy |= w->state != IDLE;
    }
    if (!busy && (launched >= kills || t_now() >= stop)) break;
    t_sleep_ms(1);
  }
  double elapsed = t_now() - t0;
  printf("soak: %d kills in %.0f s (%.2f s each per world slot), %d failures; the survivors saw "
         "ncclRemoteError %.3f s after the kill on average, %.3f s at worst (SNAPCCL_TIMEOUT_MS=%d); "
         "ncclCommAbort took %.3f s at worst; %d new communicators made and used after an abort\n",
         t.kills, elapsed, t.kills ? elapsed * nslots / t.kills : 0.0, t.failures,
         t.new_comms ? t.sum_err_s / t.new_comms : 0.0,
         t.worst_err_s, timeout_ms, t.worst_abort_s, t.new_comms);
  printf("%s\n", t.failures || !t.kills ? "FAIL" : "PASS");
  return t.failures || !t.kills ? 1 : 0;
}
