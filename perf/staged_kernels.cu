// staged_kernels: the staged collectives' data path per block, next to a plain copy kernel
// with the same bytes and blocks, and the fixed cost of the small all-reduces.
//
//   staged_kernels [-e BYTES] [-B LIST] [-r RANKS] [-n ITERS] [-s SIZES]
//
// RANKS ranks (default 2) share GPU 0 in one process (SNAPCCL_SHARED_GPU=1, one
// ncclCommInitAll), as on the one-GPU test bed; every rank's traffic then goes through
// the one GPU's memory, so the bound here is HBM, not a link.
//
// Bandwidth, for each block count B of LIST (default 1,2,4,8,16,32,64,0; 0 = the
// library's default cap): a child process with SNAPCCL_MAX_BLOCKS=B times AllReduce
// (two-shot), ReduceScatter and AllGather of BYTES (default 256 MiB, float, sum, out of
// place; BYTES is the input of AllReduce and ReduceScatter and the output of AllGather,
// as nccl-tests count it), and a copy kernel that moves BYTES on each of RANKS streams
// at once with B blocks each (the same batched loop, kernels/staging.cuh). Columns:
//   algbw     BYTES / time
//   /block    algbw / B (B = the blocks each rank's kernel ran; for 0 the cap's rule)
//   hbm       bytes the kernels of all ranks read + wrote in HBM per call (below)
//   hbm GB/s  hbm / time;  copy GB/s  the copy kernel's read + write rate, same blocks
//   bound     hbm / (read + write rate of cudaMemcpyAsync over the whole GPU): the time
//             the call would take at the memory's practical limit; "of bound" = bound /
//             time (1.0 = at the limit)
// HBM bytes per rank with N ranks and S = BYTES: AllReduce 2(3N-2)/N S (push (N-1)/N S
// read and written, reduce S read and S/N + (N-1)/N S written, gather (N-1)/N S read and
// written); ReduceScatter (3N-1)/N S; AllGather (3N-1)/N S.
//
// Fixed cost (-s SIZES, default 8,64K,256K,1M,2M): AllReduce of each size with each
// algorithm forced (SNAPCCL_ALGO=allreduce:NAME), eager and inside a CUDA graph, in us
// per call; "-" where the algorithm cannot run the size.
//
// Every timed configuration is checked once on poisoned outputs against the exact sums
// (small integers as floats); a mismatch ends the run with status 1.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include "cuda_tool.h"
#include "kernels/staging.cuh"
#include "nccl.h"

using ull = unsigned long long;

#define NC_OK(call)                                                                                    \
  do {                                                                                                 \
    ncclResult_t r_ = (call);                                                                          \
    if (r_ != ncclSuccess) {                                                                           \
      fprintf(stderr, "%s:%d: %s: %s (%s)\n", __FILE__, __LINE__, #call, ncclGetErrorString(r_),       \
              ncclGetLastError(NULL));                                                                 \
      exit(2);                                                                                         \
    }                                                                                                  \
  } while (0)

namespace {

constexpr int MAXR = 8;

// Rank r's input element i: a small integer, so every sum is exact in float.
__host__ __device__ inline float input_value(int r, ull i) { return (float)((i * 7 + (ull)r * 13) % 61) - 30.0f; }

__global__ void fill_kernel(float* p, ull n, int r) {
  for (ull i = blockIdx.x * (ull)blockDim.x + threadIdx.x; i < n; i += (ull)gridDim.x * blockDim.x)
    p[i] = input_value(r, i);
}

// kind 0 all-reduce, 1 reduce-scatter, 2 all-gather; n = elements of this rank's output.
__global__ void check_kernel(const float* out, ull n, int kind, int rank, int nranks, ull* bad) {
  for (ull i = blockIdx.x * (ull)blockDim.x + threadIdx.x; i < n; i += (ull)gridDim.x * blockDim.x) {
    float want = 0;
    if (kind == 2) {
      const ull per = n / nranks;
      want = input_value((int)(i / per), i % per);
    } else {
      const ull at = kind == 0 ? i : (ull)rank * n + i;
      for (int r = 0; r < nranks; r++) want += input_value(r, at);
    }
    if (out[i] != want) atomicAdd(bad, 1ull);
  }
}

// The plain copy: block b moves its share of n bytes with the collectives' batched loop.
__global__ void __launch_bounds__(SNAPCCL_THREADS) copy_kernel(const char* src, char* dst, ull n) {
  const ull per = (n / gridDim.x + SNAPCCL_PACK - 1) / SNAPCCL_PACK * SNAPCCL_PACK;
  const ull off = per * blockIdx.x;
  if (off >= n) return;
  const ull len = n - off < per ? n - off : per;
  const char* s = src + off;
  char* d = dst + off;
  snap::move_piece(
      len, [&](ull p, int nb) { return snap::ld_n(s + p * SNAPCCL_PACK, nb); },
      [&](ull p, snap::Pack v, int nb) { snap::st_n(d + p * SNAPCCL_PACK, v, nb); });
}

struct World {
  int n = 0;
  ncclComm_t comm[MAXR];
  cudaStream_t stream[MAXR];
  float* send[MAXR];
  float* recv[MAXR];
  ull* bad = nullptr;
};

void world_init(World& w, int nranks, size_t bytes) {
  int devs[MAXR] = {0};
  w.n = nranks;
  NC_OK(ncclCommInitAll(w.comm, nranks, devs));
  for (int r = 0; r < nranks; r++) {
    CUDA_OK(cudaStreamCreateWithFlags(&w.stream[r], cudaStreamNonBlocking));
    CUDA_OK(cudaMalloc(&w.send[r], bytes));
    CUDA_OK(cudaMalloc(&w.recv[r], bytes));
    fill_kernel<<<256, 256>>>(w.send[r], bytes / sizeof(float), r);
  }
  CUDA_OK(cudaMalloc(&w.bad, sizeof(ull)));
  CUDA_OK(cudaDeviceSynchronize());
}

// One call of every rank, in one group (one thread drives them all).
void issue(World& w, int kind, size_t bytes) {
  const size_t count = bytes / sizeof(float);
  NC_OK(ncclGroupStart());
  for (int r = 0; r < w.n; r++) {
    if (kind == 0) NC_OK(ncclAllReduce(w.send[r], w.recv[r], count, ncclFloat32, ncclSum, w.comm[r], w.stream[r]));
    if (kind == 1)
      NC_OK(ncclReduceScatter(w.send[r], w.recv[r], count / w.n, ncclFloat32, ncclSum, w.comm[r], w.stream[r]));
    if (kind == 2) NC_OK(ncclAllGather(w.send[r], w.recv[r], count / w.n, ncclFloat32, w.comm[r], w.stream[r]));
  }
  NC_OK(ncclGroupEnd());
}

void sync_all(World& w) {
  for (int r = 0; r < w.n; r++) CUDA_OK(cudaStreamSynchronize(w.stream[r]));
}

// Poisoned outputs, one call, exact check of every rank's output.
void check(World& w, int kind, size_t bytes) {
  const ull out_elems = (kind == 1 ? bytes / w.n : bytes) / sizeof(float);
  for (int r = 0; r < w.n; r++) CUDA_OK(cudaMemset(w.recv[r], 0xff, bytes));
  CUDA_OK(cudaDeviceSynchronize());
  issue(w, kind, bytes);
  sync_all(w);
  for (int r = 0; r < w.n; r++) {
    CUDA_OK(cudaMemset(w.bad, 0, sizeof(ull)));
    check_kernel<<<256, 256>>>(w.recv[r], out_elems, kind, r, w.n, w.bad);
    ull bad = 0;
    CUDA_OK(cudaMemcpy(&bad, w.bad, sizeof bad, cudaMemcpyDeviceToHost));
    if (bad) {
      fprintf(stderr, "WRONG: kind %d, %zu bytes, rank %d: %llu of %llu elements\n", kind, bytes, r, bad, out_elems);
      exit(1);
    }
  }
}

// Microseconds per call of `iters` calls (events around them on every stream; the
// slowest stream counts). graph: the calls are captured once and the graph replayed.
double time_calls(World& w, int kind, size_t bytes, int iters, bool graph) {
  std::vector<cudaEvent_t> t0(w.n), t1(w.n);
  for (int r = 0; r < w.n; r++) {
    CUDA_OK(cudaEventCreate(&t0[r]));
    CUDA_OK(cudaEventCreate(&t1[r]));
  }
  cudaGraphExec_t exec = nullptr;
  if (graph) {
    // Capture every rank's stream into one graph: rank 0's stream forks into the others.
    cudaEvent_t fork, join[MAXR];
    CUDA_OK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CUDA_OK(cudaStreamBeginCapture(w.stream[0], cudaStreamCaptureModeRelaxed));
    CUDA_OK(cudaEventRecord(fork, w.stream[0]));
    for (int r = 1; r < w.n; r++) CUDA_OK(cudaStreamWaitEvent(w.stream[r], fork, 0));
    for (int i = 0; i < iters; i++) issue(w, kind, bytes);
    for (int r = 1; r < w.n; r++) {
      CUDA_OK(cudaEventCreateWithFlags(&join[r], cudaEventDisableTiming));
      CUDA_OK(cudaEventRecord(join[r], w.stream[r]));
      CUDA_OK(cudaStreamWaitEvent(w.stream[0], join[r], 0));
    }
    cudaGraph_t g;
    CUDA_OK(cudaStreamEndCapture(w.stream[0], &g));
    CUDA_OK(cudaGraphInstantiate(&exec, g, 0));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaGraphLaunch(exec, w.stream[0])); // warm
    CUDA_OK(cudaStreamSynchronize(w.stream[0]));
  } else {
    for (int i = 0; i < 3; i++) issue(w, kind, bytes);
    sync_all(w);
  }
  for (int r = 0; r < w.n; r++) CUDA_OK(cudaEventRecord(t0[r], w.stream[r]));
  if (graph) {
    CUDA_OK(cudaGraphLaunch(exec, w.stream[0]));
  } else {
    for (int i = 0; i < iters; i++) issue(w, kind, bytes);
  }
  for (int r = 0; r < w.n; r++) CUDA_OK(cudaEventRecord(t1[r], graph ? w.stream[0] : w.stream[r]));
  sync_all(w);
  float worst = 0;
  for (int r = 0; r < w.n; r++) {
    float ms = 0;
    CUDA_OK(cudaEventElapsedTime(&ms, graph ? t0[0] : t0[r], t1[r]));
    if (ms > worst) worst = ms;
    CUDA_OK(cudaEventDestroy(t0[r]));
    CUDA_OK(cudaEventDestroy(t1[r]));
  }
  if (exec) CUDA_OK(cudaGraphExecDestroy(exec));
  return worst * 1e3 / iters;
}

// The copy kernel with `blocks` blocks on every rank's stream at once, us per pass.
double time_copy(World& w, size_t bytes, int blocks, int iters) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaEventRecord(a, 0));
  for (int i = 0; i < iters; i++)
    for (int r = 0; r < w.n; r++)
      copy_kernel<<<blocks, SNAPCCL_THREADS, 0, w.stream[r]>>>((const char*)w.send[r], (char*)w.recv[r], bytes);
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaEventRecord(b, 0));
  CUDA_OK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  return ms * 1e3 / iters;
}

// Read + write rate of cudaMemcpyAsync device to device over the whole GPU, GB/s.
double memcpy_rate(World& w, size_t bytes, int iters) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  CUDA_OK(cudaMemcpyAsync(w.recv[0], w.send[0], bytes, cudaMemcpyDeviceToDevice, w.stream[0]));
  CUDA_OK(cudaEventRecord(a, w.stream[0]));
  for (int i = 0; i < iters; i++)
    CUDA_OK(cudaMemcpyAsync(w.recv[0], w.send[0], bytes, cudaMemcpyDeviceToDevice, w.stream[0]));
  CUDA_OK(cudaEventRecord(b, w.stream[0]));
  CUDA_OK(cudaEventSynchronize(b));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  return 2.0 * bytes * iters / (ms * 1e6);
}

double hbm_bytes(int kind, int n, double s) {
  const double per = kind == 0 ? 2.0 * (3 * n - 2) / n * s : (3.0 * n - 1) / n * s;
  return per * n;
}

// The library's block cap with ranks sharing one GPU in one process (docs/ARCHITECTURE.md,
// "Residency"): half the GPU's slots of two blocks per SM, split over the ranks, <= 128.
// At 256 MiB every staged grid is the whole cap (32 KiB of slice per block is far less).
int default_cap(int nranks) {
  int sms = 0;
  CUDA_OK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int cap = sms * 2 / 2 / nranks;
  return cap < 128 ? cap : 128;
}

const char* const kind_name[] = {"allreduce", "reducescatter", "allgather"};

struct Opts {
  size_t bytes = 256u << 20;
  int nranks = 2, iters = 10;
  std::vector<int> blocks{1, 2, 4, 8, 16, 32, 64, 0};
  std::vector<size_t> sizes{8, 64u << 10, 256u << 10, 1u << 20, 2u << 20};
};

// Child: one block count. Prints one row per collective and the copy's row.
void run_bandwidth(const Opts& o, int cap) {
  World w;
  world_init(w, o.nranks, o.bytes);
  const int blocks = cap ? cap : default_cap(o.nranks);
  const double mc = memcpy_rate(w, o.bytes, o.iters);
  for (int kind = 0; kind < 3; kind++) {
    check(w, kind, o.bytes);
    const double us = time_calls(w, kind, o.bytes, o.iters, false);
    const double hbm = hbm_bytes(kind, o.nranks, (double)o.bytes);
    const double algbw = o.bytes / (us * 1e3), bound = hbm / (mc * 1e3);
    printf("%-14s %6d %10.1f %9.1f %8.2f %10.0f %9.1f %9s %9.1f %8.2f\n", kind_name[kind], blocks, us, algbw,
           algbw / blocks, hbm / 1048576.0, hbm / (us * 1e3), "", bound, bound / us);
  }
  const double cu = time_copy(w, o.bytes, blocks, o.iters);
  const double traffic = 2.0 * o.bytes * o.nranks;
  printf("%-14s %6d %10.1f %9.1f %8.2f %10.0f %9s %9.1f    (cudaMemcpyAsync %.0f GB/s read+write)\n", "copy",
         blocks, cu, o.bytes / (cu * 1e3), o.bytes / (cu * 1e3) / blocks, traffic / 1048576.0, "",
         traffic / (cu * 1e3), mc);
  fflush(stdout);
}

// Child: one forced algorithm over the sizes, eager and graph.
void run_fixed(const Opts& o, const char* algo) {
  World w;
  const size_t maxb = o.sizes.back();
  world_init(w, o.nranks, maxb < 4096 ? 4096 : maxb);
  for (size_t s : o.sizes) {
    const size_t count = s / sizeof(float) ? s / sizeof(float) : 1;
    const size_t bytes = count * sizeof(float);
    // Can the forced algorithm run this size? Ask the library what it would pick.
    ncclResult_t ok = ncclGroupStart();
    for (int r = 0; r < w.n && ok == ncclSuccess; r++)
      ok = ncclAllReduce(w.send[r], w.recv[r], count, ncclFloat32, ncclSum, w.comm[r], w.stream[r]);
    ncclResult_t end = ncclGroupEnd();
    if (ok != ncclSuccess || end != ncclSuccess) {
      printf("%-10s %10zu %10s %10s\n", algo, bytes, "-", "-");
      continue;
    }
    sync_all(w);
    check(w, 0, bytes);
    const double eager = time_calls(w, 0, bytes, 200, false), graph = time_calls(w, 0, bytes, 200, true);
    printf("%-10s %10zu %10.2f %10.2f\n", algo, bytes, eager, graph);
  }
  fflush(stdout);
}

std::vector<size_t> parse_sizes(const char* s) {
  std::vector<size_t> v;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  for (char* t = strtok(buf, ","); t; t = strtok(nullptr, ",")) v.push_back(tool_parse_size(t));
  return v;
}

// Runs f in a child process whose environment has name=value (the library reads its
// settings once per process). The parent never touches CUDA.
template <class F> int in_child(const char* name, const char* value, F f) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    setenv(name, value, 1);
    f();
    exit(0);
  }
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) {
    perror("waitpid");
    exit(2);
  }
  if (WIFSIGNALED(st)) fprintf(stderr, "staged_kernels: the child for %s=%s died of signal %d\n", name, value, WTERMSIG(st));
  if (WIFEXITED(st) && WEXITSTATUS(st)) fprintf(stderr, "staged_kernels: the child for %s=%s exited with %d\n", name, value, WEXITSTATUS(st));
  return WIFEXITED(st) ? WEXITSTATUS(st) : 2;
}

} // namespace

int main(int argc, char** argv) {
  Opts o;
  int c;
  while ((c = getopt(argc, argv, "e:B:r:n:s:h")) != -1) {
    switch (c) {
      case 'e': o.bytes = tool_parse_size(optarg); break;
      case 'B': {
        o.blocks.clear();
        for (size_t v : parse_sizes(optarg)) o.blocks.push_back((int)v);
        break;
      }
      case 'r': o.nranks = atoi(optarg); break;
      case 'n': o.iters = atoi(optarg); break;
      case 's': o.sizes = parse_sizes(optarg); break;
      default:
        fprintf(stderr, "usage: %s [-e BYTES] [-B LIST] [-r RANKS] [-n ITERS] [-s SIZES]\n", argv[0]);
        return 2;
    }
  }
  if (o.nranks < 2 || o.nranks > MAXR || o.bytes % (o.nranks * 16)) {
    fprintf(stderr, "ranks must be 2..%d and BYTES a multiple of 16 x ranks\n", MAXR);
    return 2;
  }
  setvbuf(stdout, nullptr, _IOLBF, 0); // a child that dies keeps the rows it printed
  setenv("SNAPCCL_SHARED_GPU", "1", 1);
  int status = 0;
  printf("# staged_kernels: %d ranks sharing GPU 0 in one process, float sum, %zu bytes, %d iterations\n", o.nranks,
         o.bytes, o.iters);
  printf("%-14s %6s %10s %9s %8s %10s %9s %9s %9s %8s\n", "#kernel", "blocks", "time(us)", "algbw", "/block",
         "hbm(MiB)", "hbm GB/s", "copy GB/s", "bound(us)", "of bound");
  for (int b : o.blocks) {
    char v[16];
    snprintf(v, sizeof v, "%d", b);
    status |= in_child("SNAPCCL_MAX_BLOCKS", v, [&] { run_bandwidth(o, b); });
  }
  printf("\n# fixed cost: all-reduce, us per call (eager, CUDA graph), algorithm forced\n");
  printf("%-10s %10s %10s %10s\n", "#algorithm", "bytes", "eager", "graph");
  for (const char* algo : {"lamport", "oneshot", "twoshot"}) {
    char v[64];
    snprintf(v, sizeof v, "allreduce:%s", algo);
    status |= in_child("SNAPCCL_ALGO", v, [&] { run_fixed(o, algo); });
  }
  return status;
}
