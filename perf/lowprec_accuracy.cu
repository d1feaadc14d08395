// lowprec_accuracy: how accurate, how exact and how fast snapccl's opt-in low-precision
// all-reduce is (docs/LOWPREC.md).
//
//   lowprec_accuracy [-n COUNT] [--markdown]          accuracy table (CPU only)
//   lowprec_accuracy --verify [-n COUNT]              the library against the simulation (GPU)
//   lowprec_accuracy --perf [-b MIN] [-e MAX] [-f F]  bus bandwidth, low vs full precision (GPU)
//
// Accuracy: the algorithm is SIMULATED on the CPU with src/kernels/lowprec_math.cuh, the
// very arithmetic the kernels run (per-rank quantisation in groups, fp32 sum in rank
// order, one re-quantisation, decoding, rounding to the dtype), for every format, group
// size {32, 128, 256, 1024}, dtype {float16, bfloat16, float32} and world size {2, 4, 8}, on
// four input distributions (per rank, COUNT elements, rounded to the dtype):
//   normal    N(0, 1)
//   uniform   U(-1, 1)
//   student   Student-t with 3 degrees of freedom (heavy tails)
//   outliers  N(0, 1) with 0.5% of the elements multiplied by 100
// and compared with the exact sum of the same inputs in fp64: relative L2 error
// ||out - ref|| / ||ref|| and the largest absolute error. Rows "full" are the
// full-precision all-reduce (fp32 sum in rank order, one rounding to the dtype) for
// scale. Sum only (avg divides the same sum by N before the last quantisation).
//
// --verify (needs a GPU): runs ncclAllReduce on snapccl with snapcclCommSetLowPrecision
// for every format x group x dtype x world size (ranks share GPUs when there are fewer,
// through SNAPCCL_SHARED_GPU=1) and checks that every rank's output equals the
// simulation bit for bit. Exit status 1 on any difference.
//
// --perf (needs a GPU): time per all-reduce and bus bandwidth counted on the UNQUANTISED
// size (algbw x 2(n-1)/n, as all_reduce_perf), full precision (snapccl's own choice with
// low precision off) next to each format, for world sizes -g (default: the GPU count, at
// least 2 with shared GPUs), of dtype -d (float16, the default; bfloat16; float32).
// Built with -DSNAPCCL_LP_TRACE, library included (docs/LOWPREC.md, "Where a round's time
// goes"), --perf also prints where the last call of each format spent its time, per rank,
// round and step.
#include <algorithm>

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cuda_tool.h"
#include "kernels/lowprec_math.cuh"
#include "nccl.h"
#include "snapccl.h"

using namespace snap;

namespace {

const int kFormats[] = {lp::FMT_FP8, lp::FMT_INT8, lp::FMT_INT4};
const char* const kFormatNames[] = {"off", "fp8", "int8", "int4"};
const int kGroups[] = {32, 128, 256, 1024};
const int kDtypes[] = {ncclFloat16, ncclBfloat16, ncclFloat32};
const int kWorlds[] = {2, 4, 8};
const char* const kDists[] = {"normal", "uniform", "student", "outliers"};
constexpr int kNDists = 4;

const char* dtype_name(int dt) { return dt == ncclFloat16 ? "float16" : dt == ncclBfloat16 ? "bfloat16" : "float32"; }
size_t dtype_size(int dt) { return dt == ncclFloat32 ? 4 : 2; }
// A dtype name as dtype_name writes it (or nccl-tests' half/bfloat16/float), -1 otherwise.
int dtype_of(const char* s) {
  if (!strcmp(s, "float16") || !strcmp(s, "half")) return ncclFloat16;
  if (!strcmp(s, "bfloat16")) return ncclBfloat16;
  if (!strcmp(s, "float32") || !strcmp(s, "float")) return ncclFloat32;
  return -1;
}

// ---------------------------------------------------------------- data

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
struct Rng {
  uint64_t s;
  double uniform() { return ((double)((s = mix(s)) >> 11) + 0.5) * 0x1.0p-53; } // (0, 1)
  double normal() { return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform()); }
};

double draw(Rng& r, int dist) {
  switch (dist) {
    case 0: return r.normal();
    case 1: return 2.0 * r.uniform() - 1.0;
    case 2: { // Student-t, 3 degrees of freedom: Z / sqrt(chi2_3 / 3)
      double z = r.normal(), a = r.normal(), b = r.normal(), c = r.normal();
      return z / sqrt((a * a + b * b + c * c) / 3.0);
    }
    default: {
      double v = r.normal();
      return r.uniform() < 0.005 ? v * 100.0 : v;
    }
  }
}

void store(int dt, float v, void* p, size_t i) {
  if (dt == ncclFloat32) static_cast<uint32_t*>(p)[i] = lp::Elem<ncclFloat32>::store(v);
  else if (dt == ncclFloat16) static_cast<uint16_t*>(p)[i] = lp::Elem<ncclFloat16>::store(v);
  else static_cast<uint16_t*>(p)[i] = lp::Elem<ncclBfloat16>::store(v);
}
float load(int dt, const void* p, size_t i) {
  if (dt == ncclFloat32) return lp::Elem<ncclFloat32>::load(static_cast<const uint32_t*>(p)[i]);
  if (dt == ncclFloat16) return lp::Elem<ncclFloat16>::load(static_cast<const uint16_t*>(p)[i]);
  return lp::Elem<ncclBfloat16>::load(static_cast<const uint16_t*>(p)[i]);
}

// Rank r's input, rounded to the dtype; a function of (seed, dist, rank).
void make_input(int dt, int dist, int rank, size_t count, uint64_t seed, void* p) {
  Rng g{mix(seed ^ mix(0xacc0ull + (uint64_t)dist * 131 + (uint64_t)rank))};
  for (size_t i = 0; i < count; i++) store(dt, (float)draw(g, dist), p, i);
}

// The full-precision all-reduce: fp32 sum in rank order, one rounding to the dtype.
void full_precision(int dt, int n, size_t count, void* const* in, void* out) {
  for (size_t i = 0; i < count; i++) {
    float acc = load(dt, in[0], i);
    for (int r = 1; r < n; r++) acc = lp::add(acc, load(dt, in[r], i));
    store(dt, acc, out, i);
  }
}

struct Err {
  double rel_l2, max_abs;
};
Err error(int dt, int n, size_t count, void* const* in, const void* out) {
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < count; i++) {
    double ref = 0;
    for (int r = 0; r < n; r++) ref += load(dt, in[r], i);
    double d = (double)load(dt, out, i) - ref;
    num += d * d;
    den += ref * ref;
    if (fabs(d) > mx || d != d) mx = d != d ? INFINITY : fabs(d);
  }
  return Err{den > 0 ? sqrt(num / den) : sqrt(num), mx};
}

// ---------------------------------------------------------------- accuracy

int accuracy(size_t count, uint64_t seed, bool markdown) {
  void* in[8];
  for (int r = 0; r < 8; r++) in[r] = malloc(count * 4);
  void* out = malloc(count * 4);
  printf("# snapccl low-precision all-reduce: accuracy of the CPU simulation (kernels/lowprec_math.cuh)\n");
  printf("# %zu elements per rank, sum; error against the exact fp64 sum of the dtype inputs\n", count);
  printf("# each cell: relative L2 error / max absolute error\n");
  if (markdown) {
    printf("\n| format | group | dtype | ranks |");
    for (int d = 0; d < kNDists; d++) printf(" %s |", kDists[d]);
    printf("\n| --- | --- | --- | --- |");
    for (int d = 0; d < kNDists; d++) printf(" --- |");
    printf("\n");
  } else {
    printf("%-6s %6s %-9s %5s", "format", "group", "dtype", "ranks");
    for (int d = 0; d < kNDists; d++) printf("  %-22s", kDists[d]);
    printf("\n");
  }
  auto row = [&](const char* fmt, int group, int dt, int n, const Err* e) {
    char g[16];
    if (group) snprintf(g, sizeof g, "%d", group);
    else snprintf(g, sizeof g, "-");
    if (markdown) printf("| %s | %s | %s | %d |", fmt, g, dtype_name(dt), n);
    else printf("%-6s %6s %-9s %5d", fmt, g, dtype_name(dt), n);
    for (int d = 0; d < kNDists; d++) {
      char cell[64];
      snprintf(cell, sizeof cell, "%.2e / %.2e", e[d].rel_l2, e[d].max_abs);
      if (markdown) printf(" %s |", cell);
      else printf("  %-22s", cell);
    }
    printf("\n");
    fflush(stdout);
  };
  // Inputs per (dtype, dist, world): generated once, reused by every format and group.
  for (int f = -1; f < 3; f++)
    for (int gi = 0; gi < (f < 0 ? 1 : 4); gi++)
      for (int dt : kDtypes)
        for (int n : kWorlds) {
          Err e[kNDists];
          for (int d = 0; d < kNDists; d++) {
            for (int r = 0; r < n; r++) make_input(dt, d, r, count, seed, in[r]);
            if (f < 0) full_precision(dt, n, count, in, out);
            else lp::simulate_any(kFormats[f], kGroups[gi], dt, n, false, count, in, out);
            e[d] = error(dt, n, count, in, out);
          }
          row(f < 0 ? "full" : kFormatNames[kFormats[f]], f < 0 ? 0 : kGroups[gi], dt, n, e);
        }
  for (int r = 0; r < 8; r++) free(in[r]);
  free(out);
  return 0;
}

// ---------------------------------------------------------------- the library (GPU)

#define NCCL_OK(call)                                                                  \
  do {                                                                                 \
    ncclResult_t r_ = (call);                                                          \
    if (r_ != ncclSuccess) {                                                           \
      fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call,              \
              ncclGetErrorString(r_), ncclGetLastError(NULL));                         \
      exit(2);                                                                         \
    }                                                                                  \
  } while (0)

int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

struct World {
  int n = 0;
  ncclComm_t comm[8];
  cudaStream_t stream[8];
  int dev[8];
  void* send[8];
  void* recv[8];
  size_t cap = 0;

  void open(int nranks, size_t bytes) {
    int g = gpu_count();
    n = nranks;
    cap = bytes;
    if (g < n) setenv("SNAPCCL_SHARED_GPU", "1", 1);
    for (int r = 0; r < n; r++) dev[r] = r % g;
    NCCL_OK(ncclCommInitAll(comm, n, dev));
    for (int r = 0; r < n; r++) {
      CUDA_OK(cudaSetDevice(dev[r]));
      CUDA_OK(cudaStreamCreateWithFlags(&stream[r], cudaStreamNonBlocking));
      CUDA_OK(cudaMalloc(&send[r], bytes));
      CUDA_OK(cudaMalloc(&recv[r], bytes));
      CUDA_OK(cudaMemset(send[r], 0x3C, bytes)); // finite values in every dtype (--perf)
    }
  }
  void close() {
    for (int r = 0; r < n; r++) {
      CUDA_OK(cudaSetDevice(dev[r]));
      cudaFree(send[r]);
      cudaFree(recv[r]);
      cudaStreamDestroy(stream[r]);
      NCCL_OK(ncclCommDestroy(comm[r]));
    }
  }
  void set(int fmt, int group) {
    for (int r = 0; r < n; r++) NCCL_OK(snapcclCommSetLowPrecision(comm[r], fmt, group, 0));
  }
  void allreduce(size_t count, int dt) {
    NCCL_OK(ncclGroupStart());
    for (int r = 0; r < n; r++)
      NCCL_OK(ncclAllReduce(send[r], recv[r], count, (ncclDataType_t)dt, ncclSum, comm[r], stream[r]));
    NCCL_OK(ncclGroupEnd());
  }
  void sync() {
    for (int r = 0; r < n; r++) CUDA_OK(cudaStreamSynchronize(stream[r]));
  }
};

int verify(size_t count) {
  if (gpu_count() <= 0) {
    printf("# --verify: no GPU, nothing to check (the accuracy table needs none)\n");
    return 0;
  }
  int bad = 0, runs = 0;
  void* in[8];
  for (int r = 0; r < 8; r++) in[r] = malloc(count * 4);
  void* sim = malloc(count * 4);
  void* got = malloc(count * 4);
  for (int n : kWorlds) {
    World w;
    w.open(n, count * 4);
    for (int f : kFormats)
      for (int g : kGroups) {
        w.set(f, g);
        for (int dt : kDtypes)
          for (int d = 0; d < kNDists; d++) {
            const size_t bytes = count * dtype_size(dt);
            for (int r = 0; r < n; r++) {
              make_input(dt, d, r, count, 0x5eedull + (uint64_t)runs, in[r]);
              CUDA_OK(cudaSetDevice(w.dev[r]));
              // On the rank's stream: a plain cudaMemcpy from pageable memory may return
              // before its DMA lands, and it does not order the non-blocking streams.
              CUDA_OK(cudaMemcpyAsync(w.send[r], in[r], bytes, cudaMemcpyHostToDevice, w.stream[r]));
            }
            const char* name = NULL;
            NCCL_OK(snapcclQueryAlgorithm(w.comm[0], "allreduce", count, (ncclDataType_t)dt, ncclSum, &name));
            w.allreduce(count, dt);
            w.sync();
            lp::simulate_any(f, g, dt, n, false, count, in, sim);
            int diff = strcmp(name, "lowprec") != 0;
            for (int r = 0; r < n; r++) {
              CUDA_OK(cudaSetDevice(w.dev[r]));
              CUDA_OK(cudaMemcpy(got, w.recv[r], bytes, cudaMemcpyDeviceToHost));
              if (memcmp(got, sim, bytes)) diff = 1;
            }
            runs++;
            if (diff) {
              bad++;
              printf("MISMATCH: %d ranks, %s, group %d, %s, %s (algorithm %s)\n", n, kFormatNames[f], g,
                     dtype_name(dt), kDists[d], name);
            }
          }
      }
    w.close();
  }
  printf("# --verify: %d of %d runs bitwise equal to the simulation\n", runs - bad, runs);
  for (int r = 0; r < 8; r++) free(in[r]);
  free(sim);
  free(got);
  return bad ? 1 : 0;
}

double now() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#ifdef SNAPCCL_LP_TRACE
// Where the last call's time went, from the kernel's trace (kernels/lowprec.h): per rank
// and round, each step's mean and max over the blocks, in us. A step starts where the
// one before it ended; round 0's starts at the first block's entry into the kernel.
void trace_report(int nranks, size_t bytes, const char* format) {
  static snapccl_lp_trace_t tr;
  static const char* step[] = {"start", "push", "rs_wait", "reduce", "ag_wait", "gather"};
  if (!snapccl_lp_trace_take(&tr)) return;
  unsigned long long t0 = ~0ull, t1 = 0;
  for (int r = 0; r < nranks && r < SNAPCCL_LP_TR_RANKS; r++)
    for (int b = 0; b < SNAPCCL_LP_TR_BLOCKS; b++)
      if (tr[r][b][0][SNAPCCL_LP_TR_ENTRY]) {
        t0 = std::min(t0, tr[r][b][0][SNAPCCL_LP_TR_ENTRY]);
        t1 = std::max(t1, tr[r][b][0][SNAPCCL_LP_TR_EXIT]);
      }
  if (t1 <= t0) return;
  printf("#   trace %zu bytes %s: %.1f us from the first block's entry to the last one's exit\n", bytes,
         format, (double)(t1 - t0) / 1e3);
  for (int r = 0; r < nranks && r < SNAPCCL_LP_TR_RANKS; r++)
    for (int k = 0; k < SNAPCCL_LP_TR_ROUNDS; k++) {
      double sum[6] = {}, mx[6] = {};
      int nb = 0;
      for (int b = 0; b < SNAPCCL_LP_TR_BLOCKS; b++) {
        const unsigned long long* e = tr[r][b][k];
        if (!e[SNAPCCL_LP_TR_ROUND]) continue;
        nb++;
        const unsigned long long from = k ? tr[r][b][k - 1][SNAPCCL_LP_TR_GATHERED] : t0;
        for (int i = 0; i < 6; i++) {
          const double us = (double)(e[SNAPCCL_LP_TR_ROUND + i] - (i ? e[SNAPCCL_LP_TR_ROUND + i - 1] : from)) / 1e3;
          sum[i] += us;
          mx[i] = std::max(mx[i], us);
        }
      }
      if (!nb) break;
      printf("#     rank %d round %2d, %2d blocks, mean/max us:", r, k, nb);
      for (int i = 0; i < 6; i++) printf(" %s %.1f/%.1f", step[i], sum[i] / nb, mx[i]);
      printf("\n");
    }
}
#endif

int perf(size_t minb, size_t maxb, size_t factor, int nranks, int group, int iters, int dt) {
  int g = gpu_count();
  if (g <= 0) {
    printf("# --perf: no GPU\n");
    return 0;
  }
  if (nranks <= 0) nranks = g >= 2 ? g : 2;
  if (nranks > 8) nranks = 8;
  World w;
  w.open(nranks, maxb);
  printf("# snapccl low-precision all-reduce, %d ranks on %d GPU(s), %s sum, group %d, %d iterations\n",
         nranks, g, dtype_name(dt), group, iters);
  printf("# busbw counts the unquantised bytes: algbw x 2(n-1)/n, algbw = bytes / time\n");
  printf("%12s  %-20s", "bytes", "full (us, GB/s)");
  for (int f : kFormats) printf("  %-8s%-12s", kFormatNames[f], " (us, GB/s)");
  printf("\n");
  const size_t es = dtype_size(dt);
  for (size_t bytes = minb; bytes <= maxb; bytes = factor > 1 ? bytes * factor : bytes + minb) {
    size_t count = bytes / es;
    if (!count) continue;
    printf("%12zu", count * es);
    for (int f = -1; f < 3; f++) {
      w.set(f < 0 ? SNAPCCL_LOWPREC_OFF : kFormats[f], group);
      for (int k = 0; k < 3; k++) w.allreduce(count, dt);
      w.sync();
      double t0 = now();
      for (int k = 0; k < iters; k++) w.allreduce(count, dt);
      w.sync();
      double us = (now() - t0) / iters * 1e6;
      double busbw = (double)(count * es) / (us * 1e-6) / 1e9 * 2.0 * (nranks - 1) / nranks;
      printf("  %8.1f %8.2f      ", us, busbw);
#ifdef SNAPCCL_LP_TRACE
      if (f >= 0) {
        printf("\n");
        trace_report(nranks, count * es, kFormatNames[kFormats[f]]);
      }
#endif
    }
    printf("\n");
    fflush(stdout);
  }
  w.set(SNAPCCL_LOWPREC_ENV, 0);
  w.close();
  return 0;
}

void usage() {
  printf("usage: lowprec_accuracy [-n COUNT] [--seed S] [--markdown]    accuracy (CPU simulation)\n"
         "       lowprec_accuracy --verify [-n COUNT]                     library == simulation (GPU)\n"
         "       lowprec_accuracy --perf [-b MIN] [-e MAX] [-f FACTOR] [-g RANKS] [-G GROUP] [-i ITERS]\n"
         "                               [-d float16|bfloat16|float32]\n");
}

} // namespace

int main(int argc, char** argv) {
  size_t count = 65536, minb = 1 << 20, maxb = 256u << 20, factor = 2;
  uint64_t seed = 1;
  int mode = 0, markdown = 0, nranks = 0, group = 256, iters = 20, dt = ncclFloat16;
  for (int i = 1; i < argc; i++) {
    const char* a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--verify")) mode = 1;
    else if (!strcmp(a, "--perf")) mode = 2;
    else if (!strcmp(a, "--markdown")) markdown = 1;
    else if (!strcmp(a, "-n") && v) count = tool_parse_size(v), i++;
    else if (!strcmp(a, "--seed") && v) seed = strtoull(v, NULL, 0), i++;
    else if (!strcmp(a, "-b") && v) minb = tool_parse_size(v), i++;
    else if (!strcmp(a, "-e") && v) maxb = tool_parse_size(v), i++;
    else if (!strcmp(a, "-f") && v) factor = tool_parse_size(v), i++;
    else if (!strcmp(a, "-g") && v) nranks = atoi(v), i++;
    else if (!strcmp(a, "-G") && v) group = atoi(v), i++;
    else if (!strcmp(a, "-d") && v && (dt = dtype_of(v)) >= 0) i++;
    else if (!strcmp(a, "-i") && v) iters = atoi(v), i++;
    else {
      usage();
      return !strcmp(a, "-h") || !strcmp(a, "--help") ? 0 : 2;
    }
  }
  if (count == 0 || minb == 0 || maxb < minb || iters <= 0) {
    usage();
    return 2;
  }
  if (mode == 1) return verify(count);
  if (mode == 2) return perf(minb, maxb, factor, nranks, group, iters, dt);
  return accuracy(count, seed, markdown != 0);
}
