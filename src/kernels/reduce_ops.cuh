// Element types and reductions over 16-byte packs. One trait per ncclDataType_t gives
// the storage type and the accumulator the kernels reduce in (fp32 for the 8- and
// 16-bit floats, the same width with wrap-around for integers, as NCCL's results are).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "coll.h"
#include "kernels/device_common.cuh"
#include "nccl.h"

namespace snap {

// Integer add/multiply without signed-overflow UB: wrap like the hardware does.
template <typename A> __device__ __forceinline__ A wadd(A x, A y) { return x + y; }
template <typename A> __device__ __forceinline__ A wmul(A x, A y) { return x * y; }
template <> __device__ __forceinline__ int32_t wadd(int32_t x, int32_t y) {
  return (int32_t)((uint32_t)x + (uint32_t)y);
}
template <> __device__ __forceinline__ int32_t wmul(int32_t x, int32_t y) {
  return (int32_t)((uint32_t)x * (uint32_t)y);
}
template <> __device__ __forceinline__ int64_t wadd(int64_t x, int64_t y) {
  return (int64_t)((uint64_t)x + (uint64_t)y);
}
template <> __device__ __forceinline__ int64_t wmul(int64_t x, int64_t y) {
  return (int64_t)((uint64_t)x * (uint64_t)y);
}
template <typename A> __device__ __forceinline__ A vmax(A x, A y) { return x > y ? x : y; }
template <typename A> __device__ __forceinline__ A vmin(A x, A y) { return x < y ? x : y; }
template <> __device__ __forceinline__ float vmax(float x, float y) { return fmaxf(x, y); }
template <> __device__ __forceinline__ float vmin(float x, float y) { return fminf(x, y); }
template <> __device__ __forceinline__ double vmax(double x, double y) { return fmax(x, y); }
template <> __device__ __forceinline__ double vmin(double x, double y) { return fmin(x, y); }

template <int DT> struct Type;

#define SNAP_INT_TYPE(DT, S, A)                                              \
  template <> struct Type<DT> {                                              \
    using Storage = S;                                                       \
    using Acc = A;                                                           \
    static constexpr bool is_float = false;                                  \
    __device__ static Acc to(S x) { return (Acc)x; }                         \
    __device__ static S from(Acc x) { return (S)x; }                         \
  };
SNAP_INT_TYPE(ncclInt8, int8_t, int32_t)
SNAP_INT_TYPE(ncclUint8, uint8_t, uint32_t)
SNAP_INT_TYPE(ncclInt32, int32_t, int32_t)
SNAP_INT_TYPE(ncclUint32, uint32_t, uint32_t)
SNAP_INT_TYPE(ncclInt64, int64_t, int64_t)
SNAP_INT_TYPE(ncclUint64, uint64_t, uint64_t)
#undef SNAP_INT_TYPE

template <> struct Type<ncclFloat32> {
  using Storage = float;
  using Acc = float;
  static constexpr bool is_float = true;
  __device__ static Acc to(float x) { return x; }
  __device__ static float from(Acc x) { return x; }
};
template <> struct Type<ncclFloat64> {
  using Storage = double;
  using Acc = double;
  static constexpr bool is_float = true;
  __device__ static Acc to(double x) { return x; }
  __device__ static double from(Acc x) { return x; }
};
template <> struct Type<ncclFloat16> {
  using Storage = __half;
  using Acc = float;
  static constexpr bool is_float = true;
  __device__ static Acc to(__half x) { return __half2float(x); }
  __device__ static __half from(Acc x) { return __float2half_rn(x); }
};
template <> struct Type<ncclBfloat16> {
  using Storage = __nv_bfloat16;
  using Acc = float;
  static constexpr bool is_float = true;
  __device__ static Acc to(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from(Acc x) { return __float2bfloat16_rn(x); }
};
// fp8 stays raw bytes; conversions go through the hardware cvt instructions.
template <> struct Type<ncclFloat8e4m3> {
  using Storage = __nv_fp8_storage_t;
  using Acc = float;
  static constexpr bool is_float = true;
  __device__ static Acc to(Storage x) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(x, __NV_E4M3)));
  }
  __device__ static Storage from(Acc x) { return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3); }
};
template <> struct Type<ncclFloat8e5m2> {
  using Storage = __nv_fp8_storage_t;
  using Acc = float;
  static constexpr bool is_float = true;
  __device__ static Acc to(Storage x) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(x, __NV_E5M2)));
  }
  __device__ static Storage from(Acc x) { return __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2); }
};

// The four reduction shapes. SUM covers ncclSum, PreMulSum and both averages. PreMulSum
// (and the floating-point average, a PreMulSum by 1/nranks) scales each rank's input by
// that rank's own scalar, so the owner of the data scales it (prescale) before anything
// else sees it, rounding to the dtype like NCCL; the reduction then only sums. Integer
// averages divide at the end.
enum RedKind { RED_SUM = 0, RED_PROD = 1, RED_MAX = 2, RED_MIN = 3 };

template <int DT> struct Reducer {
  using T = Type<DT>;
  using S = typename T::Storage;
  using A = typename T::Acc;
  static constexpr int EPP = SNAPCCL_PACK / sizeof(S);
  A scale;     // this rank's PreMulSum scalar
  int premul;  // scale applies (PreMulSum, floating-point average)
  int postdiv; // nranks for an integer average, else 0

  __device__ static void unpack(const Pack& p, S (&e)[EPP]) { memcpy(e, &p, sizeof e); }
  __device__ static Pack pack(const S (&e)[EPP]) {
    Pack p;
    memcpy(&p, e, sizeof e);
    return p;
  }

  // This rank's own input as every rank must see it (scaled by its own scalar).
  __device__ __forceinline__ Pack prescale(const Pack& p) const {
    if (!premul) return p;
    S e[EPP];
    unpack(p, e);
#pragma unroll
    for (int i = 0; i < EPP; i++) e[i] = T::from(wmul(T::to(e[i]), scale));
    return pack(e);
  }
  template <int RK> __device__ __forceinline__ void first(A (&acc)[EPP], const Pack& p) const {
    S e[EPP];
    unpack(p, e);
#pragma unroll
    for (int i = 0; i < EPP; i++) acc[i] = T::to(e[i]);
  }
  template <int RK> __device__ __forceinline__ void add(A (&acc)[EPP], const Pack& p) const {
    S e[EPP];
    unpack(p, e);
#pragma unroll
    for (int i = 0; i < EPP; i++) {
      A x = T::to(e[i]);
      if (RK == RED_SUM) acc[i] = wadd(acc[i], x);
      else if (RK == RED_PROD) acc[i] = wmul(acc[i], x);
      else if (RK == RED_MAX) acc[i] = vmax(acc[i], x);
      else acc[i] = vmin(acc[i], x);
    }
  }
  __device__ __forceinline__ Pack finish(const A (&acc)[EPP]) const {
    S e[EPP];
#pragma unroll
    for (int i = 0; i < EPP; i++) {
      e[i] = T::from(acc[i]);
      if (!T::is_float && postdiv) e[i] = (S)(e[i] / (S)postdiv); // wrap first, as NCCL does
    }
    return pack(e);
  }
};

// Packs per thread that a reduction loads from one source before adding any of them.
// Its accumulators and the widened lanes of 8- and 16-bit types live in registers too:
// these are the largest batches that keep the staged kernels inside the 128 registers
// of two blocks per SM without spilling (ptxas -v, CUDA 13.0, sm_90).
template <int DT> constexpr int reduce_batch() {
  return DT == ncclFloat32 || DT == ncclInt32 || DT == ncclUint32                 ? 4
         : DT == ncclFloat16 || DT == ncclBfloat16 || DT == ncclFloat64            ? 2
                                                                                    : 1;
}

__device__ __forceinline__ int red_kind(int devop) {
  switch (devop) {
    case DEVOP_PROD: return RED_PROD;
    case DEVOP_MAX: return RED_MAX;
    case DEVOP_MIN: return RED_MIN;
    default: return RED_SUM; // SUM, PREMULSUM, SUMPOSTDIV
  }
}

template <int DT> __device__ __forceinline__ Reducer<DT> make_reducer(const snapccl_kargs& a) {
  using T = Type<DT>;
  Reducer<DT> r;
  r.scale = (typename T::Acc)1;
  r.premul = a.devop == DEVOP_PREMULSUM;
  r.postdiv = a.devop == DEVOP_SUMPOSTDIV ? a.nranks : 0;
  if (a.devop == DEVOP_PREMULSUM) {
    typename T::Storage s;
    if (a.scalar_mode == SCALAR_BITS) {
      memcpy(&s, &a.scalar_bits, sizeof s);
      r.scale = T::to(s);
    } else if (a.scalar_mode == SCALAR_DEVICE) {
      memcpy(&s, a.scalar_dev, sizeof s);
      r.scale = T::to(s);
    } else if (a.scalar_mode == SCALAR_RECIPROCAL) {
      r.scale = (typename T::Acc)1 / (typename T::Acc)a.nranks;
    }
  }
  return r;
}

} // namespace snap

// The dtypes the kernels are instantiated for, as X-macro lists: X(DT, extra...) is
// expanded once per dtype with the list's extra arguments passed on.
#define SNAP_FOR_EACH_FLOAT_DTYPE(X, ...)                                                        \
  X(ncclFloat16, __VA_ARGS__) X(ncclFloat32, __VA_ARGS__) X(ncclFloat64, __VA_ARGS__)            \
  X(ncclBfloat16, __VA_ARGS__) X(ncclFloat8e4m3, __VA_ARGS__) X(ncclFloat8e5m2, __VA_ARGS__)
#define SNAP_FOR_EACH_DTYPE(X, ...)                                                              \
  X(ncclInt8, __VA_ARGS__) X(ncclUint8, __VA_ARGS__) X(ncclInt32, __VA_ARGS__)                   \
  X(ncclUint32, __VA_ARGS__) X(ncclInt64, __VA_ARGS__) X(ncclUint64, __VA_ARGS__)                \
  SNAP_FOR_EACH_FLOAT_DTYPE(X, __VA_ARGS__)

// Host-side switch from a run-time dtype to the kernel instantiated for it. Only the
// dtype is a template parameter; the reduction is chosen inside the kernel.
#define SNAP_DTYPE_CASE_(DT, KERNEL, ...) \
  case DT: KERNEL<DT> __VA_ARGS__; break;
#define SNAP_DTYPE_SWITCH(dtype, KERNEL, ...)                  \
  switch (dtype) {                                             \
    SNAP_FOR_EACH_DTYPE(SNAP_DTYPE_CASE_, KERNEL, __VA_ARGS__) \
    default: return cudaErrorInvalidValue;                     \
  }
#define SNAP_FLOAT_DTYPE_SWITCH(dtype, KERNEL, ...)                  \
  switch (dtype) {                                                   \
    SNAP_FOR_EACH_FLOAT_DTYPE(SNAP_DTYPE_CASE_, KERNEL, __VA_ARGS__) \
    default: return cudaErrorInvalidValue;                           \
  }
