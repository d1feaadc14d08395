/* fused_rmsnorm_bench: all-reduce + residual add + RMSNorm, fused (snapccl's
 * snapcclAllReduceResidualRMSNormEx) against unfused (the loaded libnccl's ncclAllReduce,
 * then snapccl's separate residual + RMSNorm kernel, compiled into this binary), eager and
 * in CUDA graphs, for a grid of token counts and hidden sizes.
 *
 * One process drives -g N ranks (ncclCommInitRank in a group, as the perf binaries do).
 * The library is the libnccl.so.2 the loader finds (build/src by RUNPATH, or NVIDIA's with
 * LD_LIBRARY_PATH): under NVIDIA's, only the unfused columns are measured. With
 * SNAPCCL_SHARED_GPU=1 rank i uses GPU i % (device count), so -g 4 runs on one GPU
 * (snapccl only).
 *
 *   fused_rmsnorm_bench -g 2                       # tokens 1..4096 x hidden 4096, 8192, bf16
 *   fused_rmsnorm_bench -g 8 -t 1,16,256 -H 8192 -d half -n 200
 *
 * Times are per call (every rank's call issued, divided by the iterations), host-measured
 * from the first issue to the last stream's completion, as nccl-tests does; graph times
 * launch one graph per rank holding -n calls. "check" compares one fused call's outputs
 * with one unfused call's under snapccl (bitwise equal: same sums, same row code). */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "algo.h"
#include "fused_bench.h"
#include "nccl_api.h"

#define MAXR 16

typedef ncclResult_t (*fused_fn)(const void*, const void*, const void*, void*, void*, size_t, size_t,
                                 float, ncclDataType_t, ncclComm_t, cudaStream_t,
                                 const snapcclFusedOptions*);
typedef ncclResult_t (*query_fn)(ncclComm_t, size_t, size_t, ncclDataType_t,
                                 const snapcclFusedOptions*, const char**);

struct opts {
  int ranks, iters, warmup, graph, check;
  ncclDataType_t dt;
  size_t tokens[32], hidden[32];
  int ntokens, nhidden;
  float eps;
};

struct rank {
  int dev;
  ncclComm_t comm;
  cudaStream_t stream;
  void *in, *res, *gamma, *norm, *rout, *sum, *norm2, *rout2;
};

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CUDA(x)                                                                             \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      fprintf(stderr, "fused_rmsnorm_bench: %s failed: %s\n", #x, cudaGetErrorString(e_)); \
      exit(2);                                                                              \
    }                                                                                       \
  } while (0)
#define NCCL(x)                                                                             \
  do {                                                                                      \
    ncclResult_t r_ = (x);                                                                  \
    if (r_ != ncclSuccess) {                                                                \
      fprintf(stderr, "fused_rmsnorm_bench: %s failed: %s (%s)\n", #x,                     \
              perf_nccl_error_string(r_), perf_nccl_last_error());                          \
      exit(2);                                                                              \
    }                                                                                       \
  } while (0)

static int parse_list(const char* s, size_t* out, int max) {
  int n = 0;
  for (const char* p = s; *p && n < max;) {
    char* end = NULL;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || v == 0) return -1;
    out[n++] = (size_t)v;
    p = *end == ',' ? end + 1 : end;
    if (*end && *end != ',') return -1;
  }
  return n;
}

static void usage(const char* prog) {
  fprintf(stderr,
          "usage: %s [-g ranks] [-n iters] [-w warmup] [-t tokens,...] [-H hidden,...]\n"
          "          [-d bfloat16|half|float] [-G 0|1] [-c 0|1] [-e eps]\n"
          "defaults: -g 2 -n 100 -w 10 -t 1,4,16,64,256,1024,4096 -H 4096,8192 -d bfloat16 -G 1 -c 1\n",
          prog);
}

static void parse(int argc, char** argv, struct opts* o) {
  static const size_t tk[] = {1, 4, 16, 64, 256, 1024, 4096}, hd[] = {4096, 8192};
  memset(o, 0, sizeof *o);
  o->ranks = 2, o->iters = 100, o->warmup = 10, o->graph = 1, o->check = 1, o->eps = 1e-6f;
  o->dt = ncclBfloat16;
  o->ntokens = 7, o->nhidden = 2;
  memcpy(o->tokens, tk, sizeof tk);
  memcpy(o->hidden, hd, sizeof hd);
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage(argv[0]), exit(0);
    if (!v) usage(argv[0]), exit(2);
    i++;
    if (!strcmp(a, "-g")) o->ranks = atoi(v);
    else if (!strcmp(a, "-n")) o->iters = atoi(v);
    else if (!strcmp(a, "-w")) o->warmup = atoi(v);
    else if (!strcmp(a, "-G")) o->graph = atoi(v);
    else if (!strcmp(a, "-c")) o->check = atoi(v);
    else if (!strcmp(a, "-e")) o->eps = (float)atof(v);
    else if (!strcmp(a, "-t")) o->ntokens = parse_list(v, o->tokens, 32);
    else if (!strcmp(a, "-H")) o->nhidden = parse_list(v, o->hidden, 32);
    else if (!strcmp(a, "-d")) {
      if (!strcmp(v, "bfloat16") || !strcmp(v, "bf16")) o->dt = ncclBfloat16;
      else if (!strcmp(v, "half") || !strcmp(v, "fp16")) o->dt = ncclFloat16;
      else if (!strcmp(v, "float") || !strcmp(v, "fp32")) o->dt = ncclFloat32;
      else usage(argv[0]), exit(2);
    } else {
      usage(argv[0]), exit(2);
    }
  }
  if (o->ranks < 1 || o->ranks > MAXR || o->iters < 1 || o->warmup < 0 || o->ntokens < 1 ||
      o->nhidden < 1)
    usage(argv[0]), exit(2);
}

/* ---- data: small dtype values from a hash, identical for a given seed ---- */

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static uint16_t to_half(float f) { /* |f| <= 2, normal or zero: enough for this data */
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, man = u & 0x7fffff;
  if (exp < 103) return (uint16_t)sign;
  int e = (int)exp - 127 + 15;
  if (e <= 0) return (uint16_t)sign; /* tiny: flush (the data never gets there) */
  uint32_t m = man >> 13, rest = man & 0x1fff;
  uint32_t h = sign | ((uint32_t)e << 10) | m;
  if (rest > 0x1000 || (rest == 0x1000 && (m & 1))) h++;
  return (uint16_t)h;
}

static void fill(void* host, size_t n, ncclDataType_t dt, uint64_t seed, float lo, float hi) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    float x = lo + (hi - lo) * (float)((s * 0x2545f4914f6cdd1dull) >> 40) / (float)(1 << 24);
    if (dt == ncclFloat32) ((float*)host)[i] = x;
    else if (dt == ncclBfloat16) ((uint16_t*)host)[i] = to_bf16(x);
    else ((uint16_t*)host)[i] = to_half(x);
  }
}

/* ---- one size ---- */

struct world {
  struct opts* o;
  struct rank r[MAXR];
  fused_fn fused;
  query_fn query;
};

static void issue_fused(struct world* w, size_t T, size_t H, int second) {
  for (int i = 0; i < w->o->ranks; i++) {
    struct rank* r = &w->r[i];
    snapcclFusedOptions opt = SNAPCCL_FUSED_OPTIONS_INITIALIZER;
    CUDA(cudaSetDevice(r->dev));
    NCCL(w->fused(r->in, r->res, r->gamma, second ? r->norm2 : r->norm, second ? r->rout2 : r->rout,
                  T, H, w->o->eps, w->o->dt, r->comm, r->stream, &opt));
  }
}

static void issue_unfused(struct world* w, size_t T, size_t H) {
  NCCL(ncclGroupStart());
  for (int i = 0; i < w->o->ranks; i++) {
    struct rank* r = &w->r[i];
    CUDA(cudaSetDevice(r->dev));
    NCCL(ncclAllReduce(r->in, r->sum, T * H, w->o->dt, ncclSum, r->comm, r->stream));
  }
  NCCL(ncclGroupEnd());
  for (int i = 0; i < w->o->ranks; i++) {
    struct rank* r = &w->r[i];
    CUDA(cudaSetDevice(r->dev));
    CUDA(bench_rmsnorm(r->sum, r->res, r->gamma, r->norm, r->rout, T, H, w->o->eps, (int)w->o->dt,
                       r->stream));
  }
}

static void sync_all(struct world* w) {
  for (int i = 0; i < w->o->ranks; i++) {
    CUDA(cudaSetDevice(w->r[i].dev));
    CUDA(cudaStreamSynchronize(w->r[i].stream));
  }
}

/* Microseconds per call: eager, or one graph per rank holding `iters` calls. */
static double measure(struct world* w, size_t T, size_t H, int fused, int graph) {
  const int iters = w->o->iters;
  for (int k = 0; k < w->o->warmup; k++) fused ? issue_fused(w, T, H, 0) : issue_unfused(w, T, H);
  sync_all(w);
  if (!graph) {
    double t0 = now_s();
    for (int k = 0; k < iters; k++) fused ? issue_fused(w, T, H, 0) : issue_unfused(w, T, H);
    sync_all(w);
    return (now_s() - t0) * 1e6 / iters;
  }
  cudaGraphExec_t exec[MAXR];
  for (int i = 0; i < w->o->ranks; i++) {
    CUDA(cudaSetDevice(w->r[i].dev));
    CUDA(cudaStreamBeginCapture(w->r[i].stream, cudaStreamCaptureModeRelaxed));
  }
  for (int k = 0; k < iters; k++) fused ? issue_fused(w, T, H, 0) : issue_unfused(w, T, H);
  for (int i = 0; i < w->o->ranks; i++) {
    cudaGraph_t g;
    CUDA(cudaSetDevice(w->r[i].dev));
    CUDA(cudaStreamEndCapture(w->r[i].stream, &g));
    CUDA(cudaGraphInstantiate(&exec[i], g, 0));
    CUDA(cudaGraphDestroy(g));
  }
  for (int i = 0; i < w->o->ranks; i++) { /* one untimed replay */
    CUDA(cudaSetDevice(w->r[i].dev));
    CUDA(cudaGraphLaunch(exec[i], w->r[i].stream));
  }
  sync_all(w);
  double t0 = now_s();
  for (int i = 0; i < w->o->ranks; i++) {
    CUDA(cudaSetDevice(w->r[i].dev));
    CUDA(cudaGraphLaunch(exec[i], w->r[i].stream));
  }
  sync_all(w);
  double us = (now_s() - t0) * 1e6 / iters;
  for (int i = 0; i < w->o->ranks; i++) CUDA(cudaGraphExecDestroy(exec[i]));
  return us;
}

/* Elements of rank 0's norm_out and residual_out that differ between a fused call and an
 * unfused one under snapccl: none (the same sums, the same row code), up to the sign of a
 * zero sum (the one-shot's Lamport slots carry +0 for -0). */
static long compare(struct world* w, size_t T, size_t H) {
  const size_t es = w->o->dt == ncclFloat32 ? 4 : 2, n = T * H;
  issue_fused(w, T, H, 1);
  issue_unfused(w, T, H);
  sync_all(w);
  unsigned char *a = malloc(n * es), *b = malloc(n * es);
  long bad = 0;
  if (!a || !b) exit(2);
  for (int k = 0; k < 2; k++) {
    CUDA(cudaSetDevice(w->r[0].dev));
    CUDA(cudaMemcpy(a, k ? w->r[0].rout2 : w->r[0].norm2, n * es, cudaMemcpyDeviceToHost));
    CUDA(cudaMemcpy(b, k ? w->r[0].rout : w->r[0].norm, n * es, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) {
      if (!memcmp(a + i * es, b + i * es, es)) continue;
      int zeros = 1; /* +0 against -0 */
      for (size_t j = 0; j < es; j++)
        zeros &= ((a[i * es + j] | b[i * es + j]) & (j == es - 1 ? 0x7f : 0xff)) == 0;
      bad += !zeros;
    }
  }
  free(a), free(b);
  return bad;
}

static void run_size(struct world* w, size_t T, size_t H) {
  const struct opts* o = w->o;
  const size_t es = o->dt == ncclFloat32 ? 4 : 2, bytes = T * H * es;
  void* host = malloc(bytes);
  if (!host) exit(2);
  for (int i = 0; i < o->ranks; i++) {
    struct rank* r = &w->r[i];
    CUDA(cudaSetDevice(r->dev));
    void** bufs[] = {&r->in, &r->res, &r->norm, &r->rout, &r->sum, &r->norm2, &r->rout2};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) CUDA(cudaMalloc(bufs[k], bytes));
    CUDA(cudaMalloc(&r->gamma, H * es));
    fill(host, T * H, o->dt, 1000 + (uint64_t)i, -1, 1);
    CUDA(cudaMemcpy(r->in, host, bytes, cudaMemcpyHostToDevice));
    fill(host, T * H, o->dt, 7, -2, 2); /* the residual is the same on every rank */
    CUDA(cudaMemcpy(r->res, host, bytes, cudaMemcpyHostToDevice));
    fill(host, H, o->dt, 11, 0.5f, 1.5f);
    CUDA(cudaMemcpy(r->gamma, host, H * es, cudaMemcpyHostToDevice));
  }
  free(host);
  const char* algo = "-";
  if (w->query && w->query(w->r[0].comm, T, H, o->dt, NULL, &algo) != ncclSuccess) algo = "?";
  double fe = -1, fg = -1, ue, ug = -1;
  if (w->fused) fe = measure(w, T, H, 1, 0);
  ue = measure(w, T, H, 0, 0);
  if (o->graph) {
    if (w->fused) fg = measure(w, T, H, 1, 1);
    ug = measure(w, T, H, 0, 1);
  }
  long bad = w->fused && o->check ? compare(w, T, H) : -1;
  char f1[16] = "N/A", f2[16] = "N/A", s1[16] = "N/A", s2[16] = "N/A", g2[16] = "N/A", ck[24] = "N/A";
  if (fe >= 0) snprintf(f1, sizeof f1, "%.2f", fe), snprintf(s1, sizeof s1, "%.2fx", ue / fe);
  if (fg >= 0) snprintf(f2, sizeof f2, "%.2f", fg), snprintf(s2, sizeof s2, "%.2fx", ug / fg);
  if (ug >= 0) snprintf(g2, sizeof g2, "%.2f", ug);
  if (bad >= 0) snprintf(ck, sizeof ck, "%ld", bad);
  printf("%8zu %7zu %-8s %11s %11.2f %8s %11s %11s %8s %7s\n", T, H, algo, f1, ue, s1, f2, g2, s2, ck);
  fflush(stdout);
  for (int i = 0; i < o->ranks; i++) {
    struct rank* r = &w->r[i];
    CUDA(cudaSetDevice(r->dev));
    void* bufs[] = {r->in, r->res, r->norm, r->rout, r->sum, r->norm2, r->rout2, r->gamma};
    for (size_t k = 0; k < sizeof bufs / sizeof bufs[0]; k++) cudaFree(bufs[k]);
  }
}

int main(int argc, char** argv) {
  struct opts o;
  parse(argc, argv, &o);
  char missing[512], lib[4096];
  if (perf_nccl_check_symbols(PERF_NEED_ALLREDUCE, missing, sizeof missing)) {
    fprintf(stderr, "fused_rmsnorm_bench: the loaded libnccl lacks %s\n", missing);
    return 2;
  }
  struct world w;
  memset(&w, 0, sizeof w);
  w.o = &o;
  w.fused = (fused_fn)dlsym(RTLD_DEFAULT, "snapcclAllReduceResidualRMSNormEx");
  w.query = (query_fn)dlsym(RTLD_DEFAULT, "snapcclQueryFusedAlgorithm");
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev < 1) {
    fprintf(stderr, "fused_rmsnorm_bench: no GPU\n");
    return 2;
  }
  const char* shared = getenv("SNAPCCL_SHARED_GPU");
  int share = shared && atoi(shared) == 1;
  if (!share && o.ranks > ndev) {
    fprintf(stderr, "fused_rmsnorm_bench: %d ranks need %d GPUs (%d here); SNAPCCL_SHARED_GPU=1 "
            "lets snapccl's ranks share them\n", o.ranks, o.ranks, ndev);
    return 2;
  }
  ncclUniqueId id;
  NCCL(ncclGetUniqueId(&id));
  NCCL(ncclGroupStart());
  for (int i = 0; i < o.ranks; i++) {
    w.r[i].dev = i % ndev;
    CUDA(cudaSetDevice(w.r[i].dev));
    NCCL(ncclCommInitRank(&w.r[i].comm, o.ranks, id, i));
  }
  NCCL(ncclGroupEnd());
  for (int i = 0; i < o.ranks; i++) {
    CUDA(cudaSetDevice(w.r[i].dev));
    CUDA(cudaStreamCreateWithFlags(&w.r[i].stream, cudaStreamNonBlocking));
    CUDA(bench_rmsnorm_load());
  }
  perf_library_describe(lib, sizeof lib);
  const char* dts = o.dt == ncclBfloat16 ? "bfloat16" : o.dt == ncclFloat16 ? "half" : "float";
  printf("# fused_rmsnorm_bench: %d ranks on %d GPU(s), %s, eps %g, %d iterations (%d warm-up)\n",
         o.ranks, ndev < o.ranks ? ndev : o.ranks, dts, (double)o.eps, o.iters, o.warmup);
  printf("# library: %s\n", lib);
  printf("# fused: snapcclAllReduceResidualRMSNormEx%s\n", w.fused ? "" : " (not in this library: N/A)");
  printf("# unfused: ncclAllReduce (grouped over the ranks), then the separate residual+RMSNorm kernel\n");
  printf("# times in us per call; speedup = unfused / fused; check = elements differing (fused vs unfused)\n");
  printf("#%7s %7s %-8s %11s %11s %8s %11s %11s %8s %7s\n", "tokens", "hidden", "algo", "fused", "unfused",
         "speedup", "fused", "unfused", "speedup", "check");
  printf("#%7s %7s %-8s %11s %11s %8s %11s %11s %8s %7s\n", "", "", "", "eager", "eager", "", "graph",
         "graph", "", "");
  for (int h = 0; h < o.nhidden; h++)
    for (int t = 0; t < o.ntokens; t++) run_size(&w, o.tokens[t], o.hidden[h]);
  for (int i = 0; i < o.ranks; i++) {
    CUDA(cudaSetDevice(w.r[i].dev));
    CUDA(cudaStreamDestroy(w.r[i].stream));
    NCCL(ncclCommDestroy(w.r[i].comm));
  }
  return 0;
}
