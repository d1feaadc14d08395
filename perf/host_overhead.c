/* host_overhead: the host (CPU) time one eager ncclAllReduce / ncclAllGather /
 * ncclReduceScatter call takes from entry to return, for small sizes, next to the
 * cheapest launches of an empty kernel in the same run: the bare <<<>>> launch,
 * cudaLaunchKernel with an argument block packed per call, cuLaunchKernel with its
 * parameters prepared once. World size 1, or -g N ranks sharing the one GPU, a thread
 * each (snapccl with SNAPCCL_SHARED_GPU=1; NVIDIA's NCCL refuses it). It measures
 * whichever libnccl is loaded, so comparing snapccl with NCCL is running it twice with
 * different LD_LIBRARY_PATH (compare.sh does), or under LD_PRELOAD.
 *
 * Each sample is the wall time around one call on the calling thread. The stream is
 * synchronised every -s calls, outside the timed region, so the GPU's queue never
 * fills and back-pressure is not mistaken for call overhead. A library built with
 * -Dhost_profile=true exports snapcclHostProfileRead; each row is then followed by the
 * mean time of each step of the call (src/host_profile.h). */
#include <dlfcn.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "algo.h"
#include "args.h"
#include "check.h"
#include "coll.h"
#include "datagen.h"
#include "launch_probe.h"
#include "nccl_api.h"

#define HO_MAX_RANKS 8

struct ho_opts {
  size_t minbytes, maxbytes;
  size_t stepfactor;
  int calls, warmup, sync_every, dtype, op, nranks;
  int colls[3], ncolls;
};

static void usage(FILE* f, const char* prog) {
  fprintf(f,
          "USAGE: %s [options]\n"
          "  -b <size>   smallest size (default 8)\n"
          "  -e <size>   largest size (default 64K)\n"
          "  -f <n>      size multiplier (default 2)\n"
          "  -n <n>      timed calls per size (default 10000)\n"
          "  -w <n>      warm-up calls per size (default 1000)\n"
          "  -s <n>      synchronise the stream every n calls, untimed (default 32)\n"
          "  -d <type>   element type (default float)\n"
          "  -o <op>     sum/prod/max/min/avg (default sum)\n"
          "  -c <list>   allreduce,allgather,reducescatter or all (default all)\n"
          "  -g <n>      ranks sharing the one GPU, a thread each (default 1, at most 8;\n"
          "              more than 1 needs snapccl with SNAPCCL_SHARED_GPU=1)\n"
          "Environment: NCCL_TESTS_DEVICE=<n> picks the GPU (default 0).\n",
          prog);
}

static int parse_count(const char* s, int lo, int* out) {
  char* end;
  long v = strtol(s, &end, 0);
  if (end == s || *end != '\0' || v < lo || v > 100000000) return -1;
  *out = (int)v;
  return 0;
}

static int parse_colls(const char* s, struct ho_opts* o) {
  char buf[128];
  char* tok;
  char* save = NULL;
  o->ncolls = 0;
  if (strcmp(s, "all") == 0) {
    o->colls[0] = PERF_ALLREDUCE;
    o->colls[1] = PERF_ALLGATHER;
    o->colls[2] = PERF_REDUCESCATTER;
    o->ncolls = 3;
    return 0;
  }
  snprintf(buf, sizeof(buf), "%s", s);
  for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    int id = strcmp(tok, "allreduce") == 0       ? PERF_ALLREDUCE
             : strcmp(tok, "allgather") == 0     ? PERF_ALLGATHER
             : strcmp(tok, "reducescatter") == 0 ? PERF_REDUCESCATTER
                                                 : -1;
    if (id < 0 || o->ncolls == 3) return -1;
    o->colls[o->ncolls++] = id;
  }
  return o->ncolls ? 0 : -1;
}

/* 0: run, 1: help shown, -1: bad command line. */
static int parse(int argc, char** argv, struct ho_opts* o) {
  int c, v;
  o->minbytes = 8;
  o->maxbytes = 64 * 1024;
  o->stepfactor = 2;
  o->calls = 10000;
  o->warmup = 1000;
  o->sync_every = 32;
  o->dtype = PERF_FLOAT;
  o->op = PERF_OP_SUM;
  o->nranks = 1;
  parse_colls("all", o);
  while ((c = getopt(argc, argv, "b:e:f:n:w:s:d:o:c:g:h")) != -1) {
    int r = 0;
    switch (c) {
    case 'b': r = perf_parse_size(optarg, &o->minbytes); break;
    case 'e': r = perf_parse_size(optarg, &o->maxbytes); break;
    case 'f': r = parse_count(optarg, 2, &v); o->stepfactor = (size_t)v; break;
    case 'n': r = parse_count(optarg, 1, &o->calls); break;
    case 'w': r = parse_count(optarg, 0, &o->warmup); break;
    case 's': r = parse_count(optarg, 1, &o->sync_every); break;
    case 'd': o->dtype = perf_type_from_name(optarg); r = o->dtype < 0 ? -1 : 0; break;
    case 'o':
      o->op = perf_op_from_name(optarg);
      r = (o->op < 0 || o->op == PERF_OP_MULSUM) ? -1 : 0;
      break;
    case 'c': r = parse_colls(optarg, o); break;
    case 'g': r = parse_count(optarg, 1, &o->nranks); r = r || o->nranks > HO_MAX_RANKS ? -1 : 0; break;
    case 'h': usage(stdout, argv[0]); return 1;
    default: usage(stderr, argv[0]); return -1;
    }
    if (r != 0) {
      fprintf(stderr, "%s: invalid value '%s' for -%c\n", argv[0], optarg, c);
      return -1;
    }
  }
  if (optind < argc || o->minbytes == 0 || o->minbytes > o->maxbytes) {
    fprintf(stderr, "%s: need 0 < -b <= -e and no other arguments\n", argv[0]);
    return -1;
  }
  return 0;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

/* What a row times: the three launches of an empty kernel, or a collective (PERF_*). */
enum { HO_EMPTY = 100, HO_RUNTIME, HO_DRIVER };

static const char* what_name(int id) {
  switch (id) {
  case HO_EMPTY: return "launch_empty";
  case HO_RUNTIME: return "cudaLaunchKernel";
  case HO_DRIVER: return "cuLaunchKernel";
  case PERF_ALLGATHER: return "allgather";
  case PERF_REDUCESCATTER: return "reducescatter";
  default: return "allreduce";
  }
}

/* The library's step profile (a -Dhost_profile=true build of snapccl), or NULL. */
typedef int (*prof_read_fn)(int reset, unsigned long long* calls, double* ns, const char** names, int max);
static prof_read_fn g_prof;
#define HO_MAX_STEPS 8

struct row {
  double median, p99, mean, min, max;
  int nsteps;
  double step_ns[HO_MAX_STEPS];
  const char* step_names[HO_MAX_STEPS];
};

/* One rank's thread and what it shares with the others. */
struct team {
  const struct ho_opts* o;
  pthread_barrier_t barrier;
  ncclUniqueId id;
  int dev;
  atomic_int failed; /* a rank failed: every rank stops at the next barrier */
  struct row rows[HO_MAX_RANKS];
  double bare_median, bare_p99; /* of launch_empty */
};

struct rank_ctx {
  struct team* team;
  int rank;
  ncclComm_t comm;
  cudaStream_t stream;
  void *send, *recv;
  double* samples;
};

static int one_call(const struct ho_opts* o, int id, struct rank_ctx* r, size_t count, int k) {
  ncclResult_t res;
  switch (id) {
  case HO_EMPTY: PERF_CUDA(probe_launch_empty(r->stream)); return 0;
  case HO_RUNTIME: PERF_CUDA(probe_launch_runtime(r->stream, (unsigned long long)k)); return 0;
  case HO_DRIVER: {
    int e = probe_launch_driver(r->stream, (unsigned long long)k);
    if (e != 0) {
      perf_report("cuLaunchKernel failed: CUresult %d", e);
      return -1;
    }
    return 0;
  }
  case PERF_ALLGATHER:
    res = ncclAllGather(r->send, r->recv, count, (ncclDataType_t)o->dtype, r->comm, r->stream);
    break;
  case PERF_REDUCESCATTER:
    res = ncclReduceScatter(r->send, r->recv, count, (ncclDataType_t)o->dtype, (ncclRedOp_t)o->op,
                            r->comm, r->stream);
    break;
  default:
    res = ncclAllReduce(r->send, r->recv, count, (ncclDataType_t)o->dtype, (ncclRedOp_t)o->op,
                        r->comm, r->stream);
  }
  if (res != ncclSuccess) {
    perf_report_nccl(what_name(id), res, __FILE__, __LINE__);
    return -1;
  }
  return 0;
}

/* n calls; samples (when given) receive each call's microseconds. */
static int run_calls(const struct ho_opts* o, int id, struct rank_ctx* r, size_t count, int n,
                     double* samples) {
  for (int k = 0; k < n; k++) {
    double t0 = now_us();
    int rc = one_call(o, id, r, count, k);
    double t1 = now_us();
    if (rc != 0) return -1;
    if (samples) samples[k] = t1 - t0;
    if ((k + 1) % o->sync_every == 0) PERF_CUDA(cudaStreamSynchronize(r->stream));
  }
  PERF_CUDA(cudaStreamSynchronize(r->stream));
  return 0;
}

/* Warm-up, then the timed calls and their statistics (and step profile) into *out. */
static int time_row(const struct ho_opts* o, int id, struct rank_ctx* r, size_t count, struct row* out) {
  double sum = 0;
  const int n = o->calls;
  PERF_TRY(run_calls(o, id, r, count, o->warmup, NULL));
  if (g_prof) g_prof(1, NULL, NULL, NULL, 0);
  PERF_TRY(run_calls(o, id, r, count, n, r->samples));
  out->nsteps = g_prof && id < HO_EMPTY ? g_prof(1, NULL, out->step_ns, out->step_names, HO_MAX_STEPS) : 0;
  for (int k = 0; k < n; k++) sum += r->samples[k];
  qsort(r->samples, (size_t)n, sizeof(double), cmp_double);
  out->median = r->samples[n / 2];
  out->p99 = r->samples[(n * 99 + 99) / 100 - 1];
  out->mean = sum / n;
  out->min = r->samples[0];
  out->max = r->samples[n - 1];
  return 0;
}

static void print_header(void) {
  printf("# %16s  %4s  %8s  %8s  %8s  %6s  %8s  %9s  %9s  %9s  %9s  %9s  %10s  %8s\n", "what",
         "rank", "size", "count", "type", "redop", "calls", "median_us", "p99_us", "mean_us",
         "min_us", "max_us", "over_bare", "p99_x");
}

/* over_bare: median minus launch_empty's median (us); p99_x: p99 over launch_empty's p99. */
static void print_row(const struct team* t, int id, int rank, size_t count, const struct row* w) {
  const struct ho_opts* o = t->o;
  size_t elt = (size_t)perf_dt_size(o->dtype);
  int probe = id >= HO_EMPTY;
  printf("  %16s  %4d  %8zu  %8zu  %8s  %6s  %8d  %9.3f  %9.3f  %9.3f  %9.3f  %9.3f  %10.3f  %8.2f\n",
         what_name(id), rank, count * elt, count, probe ? "-" : perf_type_names[o->dtype],
         probe || id == PERF_ALLGATHER ? "none" : perf_op_names[o->op], o->calls, w->median, w->p99,
         w->mean, w->min, w->max, w->median - t->bare_median, t->bare_p99 > 0 ? w->p99 / t->bare_p99 : 0.0);
  if (w->nsteps) {
    printf("#   steps (ns per call):");
    for (int i = 0; i < w->nsteps; i++) printf(" %s %.0f", w->step_names[i], w->step_ns[i]);
    printf("\n");
  }
}

/* The yardsticks, on rank 0's stream before any collective. */
static int measure_probes(struct team* t, struct rank_ctx* r) {
  static const int ids[] = {HO_EMPTY, HO_RUNTIME, HO_DRIVER};
  char why[256];
  int have_driver = probe_setup(why, sizeof why) == 0;
  if (!have_driver) printf("# cuLaunchKernel row skipped: %s\n", why);
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    struct row w;
    if (ids[i] == HO_DRIVER && !have_driver) continue;
    PERF_TRY(time_row(t->o, ids[i], r, 0, &w));
    if (ids[i] == HO_EMPTY) {
      t->bare_median = w.median;
      t->bare_p99 = w.p99;
    }
    print_row(t, ids[i], 0, 0, &w);
    fflush(stdout);
  }
  return 0;
}

/* Every rank runs the same rows in step (the collectives wait for each other); rank 0
 * prints every rank's row. */
static int measure_colls(struct team* t, struct rank_ctx* r) {
  const struct ho_opts* o = t->o;
  size_t elt = (size_t)perf_dt_size(o->dtype);
  for (int i = 0; i < o->ncolls; i++) {
    int id = o->colls[i];
    for (size_t size = o->minbytes; size <= o->maxbytes; size *= o->stepfactor) {
      size_t count = size / elt;
      pthread_barrier_wait(&t->barrier);
      if (t->failed) return -1;
      if (time_row(o, id, r, count, &t->rows[r->rank]) != 0) t->failed = 1;
      pthread_barrier_wait(&t->barrier);
      if (t->failed) return -1;
      if (r->rank == 0) {
        for (int k = 0; k < o->nranks; k++) print_row(t, id, k, count, &t->rows[k]);
        fflush(stdout);
      }
    }
  }
  return 0;
}

static int rank_setup(struct team* t, struct rank_ctx* r) {
  const struct ho_opts* o = t->o;
  /* All-gather receives nranks times the per-rank count; reduce-scatter sends it. */
  size_t bytes = o->maxbytes * (size_t)o->nranks;
  PERF_CUDA(cudaSetDevice(t->dev));
  PERF_CUDA(cudaStreamCreateWithFlags(&r->stream, cudaStreamNonBlocking));
  PERF_NCCL(ncclCommInitRank(&r->comm, o->nranks, t->id, r->rank));
  PERF_NCCL(ncclMemAlloc(&r->send, bytes));
  PERF_NCCL(ncclMemAlloc(&r->recv, bytes));
  PERF_CUDA(cudaMemset(r->send, 0, bytes));
  r->samples = malloc((size_t)o->calls * sizeof(double));
  if (!r->samples) {
    perf_report("out of host memory");
    return -1;
  }
  return 0;
}

static int rank_teardown(struct rank_ctx* r) {
  free(r->samples);
  if (r->comm) PERF_NCCL(ncclCommDestroy(r->comm));
  if (r->send) PERF_NCCL(ncclMemFree(r->send));
  if (r->recv) PERF_NCCL(ncclMemFree(r->recv));
  if (r->stream) PERF_CUDA(cudaStreamDestroy(r->stream));
  return 0;
}

static int rank_main(struct team* t, struct rank_ctx* r) {
  int rc = rank_setup(t, r);
  if (rc != 0) t->failed = 1;
  pthread_barrier_wait(&t->barrier); /* every rank's init done (or failed) */
  if (!t->failed && r->rank == 0) rc = measure_probes(t, r);
  if (rc != 0) t->failed = 1;
  if (!t->failed) rc = measure_colls(t, r);
  else pthread_barrier_wait(&t->barrier); /* rank 0's probes decided for everyone */
  if (rank_teardown(r) != 0) rc = -1;
  return rc;
}

struct thread_arg {
  struct team* team;
  struct rank_ctx ctx;
  int rc;
};

static void* rank_thread(void* p) {
  struct thread_arg* a = p;
  a->rc = rank_main(a->team, &a->ctx);
  return NULL;
}

static int run(const struct ho_opts* o) {
  char lib[1024], missing[512];
  const char* env = getenv("NCCL_TESTS_DEVICE");
  const char* preload = getenv("LD_PRELOAD");
  unsigned needs = PERF_NEED_ALLREDUCE | PERF_NEED_ALLGATHER | PERF_NEED_REDUCESCATTER |
                   PERF_NEED_MEMALLOC;
  struct cudaDeviceProp prop;
  struct team t;
  struct thread_arg args[HO_MAX_RANKS];
  pthread_t threads[HO_MAX_RANKS];
  int rc = 0;
  memset(&t, 0, sizeof t);
  memset(args, 0, sizeof args);
  t.o = o;
  t.dev = env ? atoi(env) : 0;
  perf_library_describe(lib, sizeof(lib));
  if (perf_nccl_check_symbols(needs, missing, sizeof(missing)) != 0) {
    perf_report("the loaded libnccl (%s) does not define: %s", lib, missing);
    return -1;
  }
  g_prof = (prof_read_fn)dlsym(RTLD_DEFAULT, "snapcclHostProfileRead");
  PERF_CUDA(cudaSetDevice(t.dev));
  PERF_CUDA(cudaGetDeviceProperties(&prop, t.dev));
  printf("# host_overhead: host time of one eager call, entry to return; world size %d%s\n",
         o->nranks, o->nranks > 1 ? " (ranks share one GPU, a thread each)" : "");
  printf("# library: %s\n", lib);
  if (preload && *preload) printf("# LD_PRELOAD: %s\n", preload);
  printf("# device %d: %s\n", t.dev, prop.name);
  printf("# %d timed calls per row after %d warm-up calls; stream synchronised every %d "
         "calls, untimed\n", o->calls, o->warmup, o->sync_every);
  printf("# over_bare: median - launch_empty's median (us); p99_x: p99 / launch_empty's p99%s\n#\n",
         g_prof ? "; steps: the library's host profile" : "");
  print_header();
  PERF_NCCL(ncclGetUniqueId(&t.id));
  if (pthread_barrier_init(&t.barrier, NULL, (unsigned)o->nranks) != 0) {
    perf_report("pthread_barrier_init failed");
    return -1;
  }
  for (int r = 0; r < o->nranks; r++) {
    args[r].team = &t;
    args[r].ctx.team = &t;
    args[r].ctx.rank = r;
    if (pthread_create(&threads[r], NULL, rank_thread, &args[r]) != 0) {
      perf_report("pthread_create failed");
      /* the threads started wait at the first barrier forever: end the process */
      exit(1);
    }
  }
  for (int r = 0; r < o->nranks; r++) {
    pthread_join(threads[r], NULL);
    if (args[r].rc != 0) rc = -1;
  }
  pthread_barrier_destroy(&t.barrier);
  return rc;
}

int main(int argc, char** argv) {
  struct ho_opts o;
  int rc = parse(argc, argv, &o);
  if (rc != 0) return rc > 0 ? 0 : 2;
  return run(&o) == 0 ? 0 : 1;
}
