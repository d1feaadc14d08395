// lowprec_kernels: how fast the low-precision all-reduce's quantiser and dequantiser run
// on their own, next to the GPU's own copy (docs/LOWPREC.md, "Kernel throughput").
//
//   lowprec_kernels [-e BYTES] [-G GROUP] [-i ITERS] [-B BLOCKS] [-w]
//
// For every dtype (float16, bfloat16, float32) and format (fp8, int8, int4), on one GPU:
//   quantise    the user buffer (BYTES, default 256 MiB) into scale words and codes,
//   dequantise  the codes back into a buffer of the dtype,
//   copy        cudaMemcpyAsync of the same BYTES, device to device,
// each timed over ITERS launches (CUDA events) on a grid that fills the GPU at the
// kernel's residency (two blocks of 256 threads per SM, as the collective's; with -w one
// block of 512 threads per SM, as its wide mode), or of BLOCKS blocks (the all-reduce
// runs at most SNAPCCL_MAX_BLOCKS = 128 per rank, 256 threads each). The
// kernels run kernels/lowprec_tile.cuh's quantise_put and get_dequantise, the very
// functions of the all-reduce's steps 1 and 3, with the codes in plain device memory
// instead of a peer's staging.
//
// Columns: time per pass; "GB/s" = the dtype bytes (BYTES) per second, the rate at
// which a pass eats or produces user data; "traffic" = bytes read + written per second
// (dtype bytes + codes + scales), to compare with the copy's (2 x BYTES per pass), the
// memory's practical limit.
//
// Before timing, each (dtype, format) checks the round trip on 1M + 37 elements (odd:
// a partial last group) against the CPU (lp::quant_group + lp::decode, the reference
// arithmetic): every output bit must match. Exit status 1 on a mismatch.
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#include "cuda_tool.h"
#include "kernels/lowprec_tile.cuh"
#include "nccl.h"

using namespace snap;
using ull = unsigned long long;

namespace {

// Calls f(gi, v, e0, team) for every warp step over the count elements' groups, the
// grid striding as a whole: each lane's U groups (gi[u], v[u] valid elements from e0[u]).
template <int DT, typename F> __device__ __forceinline__ void for_each_step(ull count, int G, const F& f) {
  constexpr int U = lp::Shape<DT>::U;
  const lp::Team tm(G, threadIdx.x & 31);
  const ull ng = (count + G - 1) / G, step = (ull)U * tm.per_warp;
  const ull warp = ((ull)blockIdx.x * blockDim.x + threadIdx.x) >> 5, warps = (ull)gridDim.x * blockDim.x / 32;
  for (ull gs = warp * step; gs < ng; gs += warps * step) {
    ull gi[U], e0[U];
    int v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      gi[u] = gs + u * tm.per_warp + tm.idx;
      e0[u] = gi[u] * G;
      v[u] = tm.active() && gi[u] < ng ? (int)(count - e0[u] < (ull)G ? count - e0[u] : (ull)G) : 0;
    }
    f(gi, v, e0, tm);
  }
}

// TH: SNAPCCL_THREADS (two blocks per SM) or SNAPCCL_LP_WIDE_THREADS (one), as the collective.
template <int TH> constexpr int min_blocks() { return TH == SNAPCCL_THREADS ? SNAPCCL_MIN_BLOCKS_PER_SM : 1; }

template <int DT, int FMT, int TH>
__global__ void __launch_bounds__(TH, min_blocks<TH>())
    quantise_kernel(const char* in, ull count, int G, unsigned* scales, char* pay) {
  const lp::Access acc = lp::access_of(in, lp::Shape<DT>::ES);
  const int P = lp::payload_bytes(FMT, G);
  for_each_step<DT>(count, G, [&](const ull(&gi)[lp::Shape<DT>::U], const int(&v)[lp::Shape<DT>::U],
                                  const ull(&e0)[lp::Shape<DT>::U], const lp::Team& tm) {
    lp::quantise_put<DT, FMT>(in, acc, G, e0, v, gi, scales, pay, P, tm);
  });
}

template <int DT, int FMT, int TH>
__global__ void __launch_bounds__(TH, min_blocks<TH>())
    dequantise_kernel(const unsigned* scales, const char* pay, ull count, int G, char* out) {
  const lp::Access acc = lp::access_of(out, lp::Shape<DT>::ES);
  const int P = lp::payload_bytes(FMT, G);
  for_each_step<DT>(count, G, [&](const ull(&gi)[lp::Shape<DT>::U], const int(&v)[lp::Shape<DT>::U],
                                  const ull(&e0)[lp::Shape<DT>::U], const lp::Team& tm) {
    lp::get_dequantise<DT, FMT>(scales, pay, P, gi, v, out, acc, G, e0, tm);
  });
}

struct Buffers {
  char* in = nullptr;
  char* out = nullptr;
  char* pay = nullptr;
  unsigned* scales = nullptr;
};

bool g_wide = false; // -w

template <int DT, int FMT> void quantise(const Buffers& b, ull count, int G, int blocks, cudaStream_t s) {
  if (g_wide)
    quantise_kernel<DT, FMT, SNAPCCL_LP_WIDE_THREADS><<<blocks, SNAPCCL_LP_WIDE_THREADS, 0, s>>>(b.in, count, G, b.scales, b.pay);
  else
    quantise_kernel<DT, FMT, SNAPCCL_THREADS><<<blocks, SNAPCCL_THREADS, 0, s>>>(b.in, count, G, b.scales, b.pay);
  CUDA_OK(cudaGetLastError());
}
template <int DT, int FMT> void dequantise(const Buffers& b, ull count, int G, int blocks, cudaStream_t s) {
  if (g_wide)
    dequantise_kernel<DT, FMT, SNAPCCL_LP_WIDE_THREADS><<<blocks, SNAPCCL_LP_WIDE_THREADS, 0, s>>>(b.scales, b.pay, count, G, b.out);
  else
    dequantise_kernel<DT, FMT, SNAPCCL_THREADS><<<blocks, SNAPCCL_THREADS, 0, s>>>(b.scales, b.pay, count, G, b.out);
  CUDA_OK(cudaGetLastError());
}
template <int DT, int FMT> void run_pair(const Buffers& b, ull count, int G, int blocks, cudaStream_t s) {
  quantise<DT, FMT>(b, count, G, blocks, s);
  dequantise<DT, FMT>(b, count, G, blocks, s);
}

// Values of N(0, 1) with a few large ones, rounded to the dtype.
template <int DT> void fill(std::vector<typename lp::Elem<DT>::S>& h, uint64_t seed) {
  uint64_t s = seed;
  for (auto& x : h) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double u1 = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    const double u2 = ((double)(s >> 11) + 0.5) * 0x1.0p-53;
    double v = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    if ((s >> 7) % 997 == 0) v *= 100.0;
    x = lp::Elem<DT>::store((float)v);
  }
}

// The round trip on the GPU against the CPU, bit for bit.
template <int DT, int FMT> bool check(const Buffers& b, int G, int blocks, cudaStream_t s) {
  using S = typename lp::Elem<DT>::S;
  const ull count = (1ull << 20) + 37;
  std::vector<S> h(count), got(count), want(count);
  fill<DT>(h, 0x1234 + DT * 7 + FMT);
  CUDA_OK(cudaMemcpyAsync(b.in, h.data(), count * sizeof(S), cudaMemcpyHostToDevice, s));
  CUDA_OK(cudaMemsetAsync(b.out, 0xA5, count * sizeof(S), s)); // poison
  run_pair<DT, FMT>(b, count, G, blocks, s);
  CUDA_OK(cudaMemcpyAsync(got.data(), b.out, count * sizeof(S), cudaMemcpyDeviceToHost, s));
  CUDA_OK(cudaStreamSynchronize(s));
  float x[lp::GROUP_MAX];
  uint8_t codes[lp::GROUP_MAX];
  for (ull g0 = 0; g0 < count; g0 += G) {
    const int n = count - g0 < (ull)G ? (int)(count - g0) : G;
    for (int i = 0; i < n; i++) x[i] = lp::Elem<DT>::load(h[g0 + i]);
    const uint32_t w = lp::quant_group<FMT>(x, n, codes);
    for (int i = 0; i < n; i++) want[g0 + i] = lp::Elem<DT>::store(lp::decode<FMT>(codes[i], w));
  }
  for (ull i = 0; i < count; i++)
    if (got[i] != want[i]) {
      printf("MISMATCH at element %llu: got 0x%x, want 0x%x\n", i, (unsigned)got[i], (unsigned)want[i]);
      return false;
    }
  return true;
}

float elapsed_us(cudaEvent_t a, cudaEvent_t b, int iters) {
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0f / (float)iters;
}

const char* dtype_name(int dt) { return dt == ncclFloat16 ? "float16" : dt == ncclBfloat16 ? "bfloat16" : "float32"; }
const char* format_name(int f) { return f == lp::FMT_FP8 ? "fp8" : f == lp::FMT_INT8 ? "int8" : "int4"; }

template <int DT, int FMT> bool row(const Buffers& b, size_t bytes, int G, int iters, int blocks, cudaStream_t s) {
  using S = typename lp::Elem<DT>::S;
  const bool ok = check<DT, FMT>(b, G, blocks, s);
  const ull count = bytes / sizeof(S);
  {
    // Timing data: the check's pattern repeated (values matter little: no branch depends
    // on them except the rare non-finite path, which this data never takes).
    std::vector<S> h(1u << 20);
    fill<DT>(h, 99);
    for (size_t off = 0; off < count * sizeof(S); off += h.size() * sizeof(S)) {
      const size_t n = count * sizeof(S) - off < h.size() * sizeof(S) ? count * sizeof(S) - off : h.size() * sizeof(S);
      CUDA_OK(cudaMemcpyAsync(b.in + off, h.data(), n, cudaMemcpyHostToDevice, s));
    }
    CUDA_OK(cudaStreamSynchronize(s));
  }
  const int P = lp::payload_bytes(FMT, G);
  const ull ng = (count + G - 1) / G;
  const double codes = (double)ng * (P + 4);
  cudaEvent_t e[4];
  for (auto& x : e) CUDA_OK(cudaEventCreate(&x));
  for (int k = 0; k < 2; k++) run_pair<DT, FMT>(b, count, G, blocks, s); // warm up
  CUDA_OK(cudaEventRecord(e[0], s));
  for (int k = 0; k < iters; k++) quantise<DT, FMT>(b, count, G, blocks, s);
  CUDA_OK(cudaEventRecord(e[1], s));
  for (int k = 0; k < iters; k++) dequantise<DT, FMT>(b, count, G, blocks, s);
  CUDA_OK(cudaEventRecord(e[2], s));
  for (int k = 0; k < iters; k++)
    CUDA_OK(cudaMemcpyAsync(b.out, b.in, count * sizeof(S), cudaMemcpyDeviceToDevice, s));
  CUDA_OK(cudaEventRecord(e[3], s));
  CUDA_OK(cudaStreamSynchronize(s));
  const double q = elapsed_us(e[0], e[1], iters), d = elapsed_us(e[1], e[2], iters), c = elapsed_us(e[2], e[3], iters);
  const double ub = (double)count * sizeof(S);
  printf("%-9s %-5s %5d  %9.1f %8.0f %8.0f   %9.1f %8.0f %8.0f   %9.1f %8.0f   %s\n", dtype_name(DT),
         format_name(FMT), G, q, ub / q / 1e3, (ub + codes) / q / 1e3, d, ub / d / 1e3, (ub + codes) / d / 1e3, c,
         2 * ub / c / 1e3, ok ? "bitwise ok" : "MISMATCH");
  fflush(stdout);
  for (auto& x : e) CUDA_OK(cudaEventDestroy(x));
  return ok;
}

template <int DT> bool dtype_rows(const Buffers& b, size_t bytes, int G, int iters, int blocks, cudaStream_t s) {
  bool ok = row<DT, lp::FMT_FP8>(b, bytes, G, iters, blocks, s);
  ok &= row<DT, lp::FMT_INT8>(b, bytes, G, iters, blocks, s);
  ok &= row<DT, lp::FMT_INT4>(b, bytes, G, iters, blocks, s);
  return ok;
}

} // namespace

int main(int argc, char** argv) {
  size_t bytes = 256u << 20;
  int G = 256, iters = 20, blocks = 0;
  for (int i = 1; i < argc; i++) {
    const char* v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(argv[i], "-e") && v) bytes = tool_parse_size(v), i++;
    else if (!strcmp(argv[i], "-G") && v) G = atoi(v), i++;
    else if (!strcmp(argv[i], "-i") && v) iters = atoi(v), i++;
    else if (!strcmp(argv[i], "-B") && v) blocks = atoi(v), i++;
    else if (!strcmp(argv[i], "-w")) g_wide = true;
    else {
      printf("usage: lowprec_kernels [-e BYTES] [-G GROUP] [-i ITERS] [-B BLOCKS] [-w]\n");
      return !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") ? 0 : 2;
    }
  }
  if (G < lp::GROUP_MIN || G > lp::GROUP_MAX || G % 32 || iters <= 0 || bytes < 16 || blocks < 0) {
    printf("lowprec_kernels: -G must be a multiple of 32 from 32 to 1024, -i > 0, -e >= 16, -B >= 0\n");
    return 2;
  }
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("# lowprec_kernels: no GPU\n");
    return 0;
  }
  bytes = bytes / 16 * 16;
  const size_t check_bytes = ((1u << 20) + 37) * 4 + 16;
  const size_t cap = bytes > check_bytes ? bytes : check_bytes;
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  if (blocks == 0) blocks = prop.multiProcessorCount * (g_wide ? 1 : 2);
  Buffers b;
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  CUDA_OK(cudaMalloc(&b.in, cap));
  CUDA_OK(cudaMalloc(&b.out, cap));
  CUDA_OK(cudaMalloc(&b.pay, cap / 2 + 16)); // 8-bit codes of 16-bit data: half the bytes, at most
  CUDA_OK(cudaMalloc(&b.scales, cap / 32 / 2 * 4 + 64));
  printf("# lowprec_kernels on %s: %zu bytes per pass, group %d, %d iterations, %d blocks x %d threads\n",
         prop.name, bytes, G, iters, blocks, g_wide ? SNAPCCL_LP_WIDE_THREADS : SNAPCCL_THREADS);
  printf("# GB/s: dtype bytes per second; traffic: bytes read + written per second (copy: 2 x bytes)\n");
  printf("%-9s %-5s %5s  %9s %8s %8s   %9s %8s %8s   %9s %8s\n", "dtype", "fmt", "group", "quant_us", "GB/s",
         "traffic", "deq_us", "GB/s", "traffic", "copy_us", "traffic");
  bool ok = dtype_rows<ncclFloat16>(b, bytes, G, iters, blocks, s);
  ok &= dtype_rows<ncclBfloat16>(b, bytes, G, iters, blocks, s);
  ok &= dtype_rows<ncclFloat32>(b, bytes, G, iters, blocks, s);
  CUDA_OK(cudaFree(b.in));
  CUDA_OK(cudaFree(b.out));
  CUDA_OK(cudaFree(b.pay));
  CUDA_OK(cudaFree(b.scales));
  CUDA_OK(cudaStreamDestroy(s));
  return ok ? 0 : 1;
}
