/* host_overhead: the host (CPU) time one eager ncclAllReduce / ncclAllGather /
 * ncclReduceScatter call takes from entry to return, at world size 1 on one GPU, for
 * small sizes. It measures whichever libnccl is loaded, so comparing snapccl with NCCL
 * is running it twice with different LD_LIBRARY_PATH (compare.sh does).
 *
 * Each sample is the wall time around one call on the calling thread. The stream is
 * synchronised every -s calls, outside the timed region, so the GPU's queue never
 * fills and back-pressure is not mistaken for call overhead. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "algo.h"
#include "args.h"
#include "check.h"
#include "coll.h"
#include "datagen.h"
#include "nccl_api.h"

struct ho_opts {
  size_t minbytes, maxbytes;
  size_t stepfactor;
  int calls, warmup, sync_every, dtype, op;
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
  parse_colls("all", o);
  while ((c = getopt(argc, argv, "b:e:f:n:w:s:d:o:c:h")) != -1) {
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

static const char* coll_name(int id) {
  return id == PERF_ALLGATHER ? "allgather" : id == PERF_REDUCESCATTER ? "reducescatter" : "allreduce";
}

static ncclResult_t one_call(int id, void* send, void* recv, size_t count, int dt, int op,
                             ncclComm_t comm, cudaStream_t stream) {
  switch (id) {
  case PERF_ALLGATHER: return ncclAllGather(send, recv, count, (ncclDataType_t)dt, comm, stream);
  case PERF_REDUCESCATTER:
    return ncclReduceScatter(send, recv, count, (ncclDataType_t)dt, (ncclRedOp_t)op, comm, stream);
  default:
    return ncclAllReduce(send, recv, count, (ncclDataType_t)dt, (ncclRedOp_t)op, comm, stream);
  }
}

/* n calls; samples (n of them) receive each call's microseconds. */
static int run_calls(const struct ho_opts* o, int id, void* send, void* recv, size_t count,
                     ncclComm_t comm, cudaStream_t stream, int n, double* samples) {
  int k;
  for (k = 0; k < n; k++) {
    double t0 = now_us(), t1;
    ncclResult_t r = one_call(id, send, recv, count, o->dtype, o->op, comm, stream);
    t1 = now_us();
    if (r != ncclSuccess) {
      perf_report_nccl(coll_name(id), r, __FILE__, __LINE__);
      return -1;
    }
    if (samples) samples[k] = t1 - t0;
    if ((k + 1) % o->sync_every == 0) PERF_CUDA(cudaStreamSynchronize(stream));
  }
  PERF_CUDA(cudaStreamSynchronize(stream));
  return 0;
}

static int measure(const struct ho_opts* o, ncclComm_t comm, cudaStream_t stream, void* send,
                   void* recv) {
  double* samples = malloc((size_t)o->calls * sizeof(double));
  size_t elt = (size_t)perf_dt_size(o->dtype), size;
  int i;
  if (!samples) {
    perf_report("out of host memory");
    return -1;
  }
  printf("# %13s  %10s  %8s  %8s  %6s  %8s  %9s  %9s  %9s  %9s  %9s\n", "collective", "size",
         "count", "type", "redop", "calls", "median_us", "p99_us", "mean_us", "min_us", "max_us");
  for (i = 0; i < o->ncolls; i++) {
    int id = o->colls[i];
    for (size = o->minbytes; size <= o->maxbytes; size *= o->stepfactor) {
      size_t count = size / elt;
      double sum = 0;
      int k;
      if (run_calls(o, id, send, recv, count, comm, stream, o->warmup, NULL) != 0 ||
          run_calls(o, id, send, recv, count, comm, stream, o->calls, samples) != 0) {
        free(samples);
        return -1;
      }
      for (k = 0; k < o->calls; k++) sum += samples[k];
      qsort(samples, (size_t)o->calls, sizeof(double), cmp_double);
      printf("  %13s  %10zu  %8zu  %8s  %6s  %8d  %9.3f  %9.3f  %9.3f  %9.3f  %9.3f\n",
             coll_name(id), count * elt, count, perf_type_names[o->dtype],
             id == PERF_ALLGATHER ? "none" : perf_op_names[o->op], o->calls,
             samples[o->calls / 2], samples[(o->calls * 99 + 99) / 100 - 1], sum / o->calls,
             samples[0], samples[o->calls - 1]);
      fflush(stdout);
    }
  }
  free(samples);
  return 0;
}

static int run(const struct ho_opts* o) {
  char lib[1024], missing[512];
  const char* env = getenv("NCCL_TESTS_DEVICE");
  int dev = env ? atoi(env) : 0;
  unsigned needs = PERF_NEED_ALLREDUCE | PERF_NEED_ALLGATHER | PERF_NEED_REDUCESCATTER |
                   PERF_NEED_MEMALLOC;
  struct cudaDeviceProp prop;
  ncclUniqueId id;
  ncclComm_t comm;
  cudaStream_t stream;
  void *send, *recv;
  perf_library_describe(lib, sizeof(lib));
  if (perf_nccl_check_symbols(needs, missing, sizeof(missing)) != 0) {
    perf_report("the loaded libnccl (%s) does not define: %s", lib, missing);
    return -1;
  }
  PERF_CUDA(cudaSetDevice(dev));
  PERF_CUDA(cudaGetDeviceProperties(&prop, dev));
  printf("# host_overhead: host time of one eager call, entry to return; world size 1\n");
  printf("# library: %s\n", lib);
  printf("# device %d: %s\n", dev, prop.name);
  printf("# %d timed calls per size after %d warm-up calls; stream synchronised every %d "
         "calls, untimed\n#\n", o->calls, o->warmup, o->sync_every);
  PERF_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  PERF_NCCL(ncclGetUniqueId(&id));
  PERF_NCCL(ncclCommInitRank(&comm, 1, id, 0));
  PERF_NCCL(ncclMemAlloc(&send, o->maxbytes));
  PERF_NCCL(ncclMemAlloc(&recv, o->maxbytes));
  PERF_CUDA(cudaMemset(send, 0, o->maxbytes));
  PERF_TRY(measure(o, comm, stream, send, recv));
  PERF_NCCL(ncclCommDestroy(comm));
  PERF_NCCL(ncclMemFree(send));
  PERF_NCCL(ncclMemFree(recv));
  PERF_CUDA(cudaStreamDestroy(stream));
  return 0;
}

int main(int argc, char** argv) {
  struct ho_opts o;
  int rc = parse(argc, argv, &o);
  if (rc != 0) return rc > 0 ? 0 : 2;
  return run(&o) == 0 ? 0 : 1;
}
