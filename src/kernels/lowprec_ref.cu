// The CPU reference of the low-precision all-reduce, for C callers (tests): thin
// extern "C" wrappers around kernels/lowprec_math.cuh, the arithmetic the kernels run.
// Host code only.
#include <cuda_fp8.h>

#include "kernels/lowprec.h"
#include "kernels/lowprec_math.cuh"

using namespace snap;

extern "C" int snapccl_lp_simulate(int format, int group, int dtype, int nranks, int avg,
                                   size_t count, const void* const* inputs, void* output) {
  return lp::simulate_any(format, group, dtype, nranks, avg != 0, count, inputs, output) ? 0 : -1;
}

extern "C" uint32_t snapccl_lp_quant_group(int format, const float* x, int n, unsigned char* codes) {
  if (n < 0) n = 0;
  if (n > lp::GROUP_MAX) n = lp::GROUP_MAX;
  switch (format) {
    case lp::FMT_FP8: return lp::quant_group<lp::FMT_FP8>(x, n, codes);
    case lp::FMT_INT8: return lp::quant_group<lp::FMT_INT8>(x, n, codes);
    case lp::FMT_INT4: return lp::quant_group<lp::FMT_INT4>(x, n, codes);
    default: return 0;
  }
}

extern "C" float snapccl_lp_decode(int format, unsigned char code, uint32_t word) {
  switch (format) {
    case lp::FMT_FP8: return lp::decode<lp::FMT_FP8>(code, word);
    case lp::FMT_INT8: return lp::decode<lp::FMT_INT8>(code, word);
    case lp::FMT_INT4: return lp::decode<lp::FMT_INT4>(code, word);
    default: return 0.0f;
  }
}

extern "C" unsigned char snapccl_lp_e4m3_encode(float y) { return lp::e4m3_encode(y); }
extern "C" float snapccl_lp_e4m3_decode(unsigned char code) { return lp::e4m3_decode(code); }
extern "C" unsigned char snapccl_lp_e4m3_encode_nv(float y) {
  return (unsigned char)__nv_cvt_float_to_fp8(y, __NV_SATFINITE, __NV_E4M3);
}

extern "C" float snapccl_lp_load(int dtype, const void* elem) {
  switch (dtype) {
    case ncclFloat32: {
      uint32_t b;
      memcpy(&b, elem, 4);
      return lp::Elem<ncclFloat32>::load(b);
    }
    case ncclFloat16: {
      uint16_t b;
      memcpy(&b, elem, 2);
      return lp::Elem<ncclFloat16>::load(b);
    }
    case ncclBfloat16: {
      uint16_t b;
      memcpy(&b, elem, 2);
      return lp::Elem<ncclBfloat16>::load(b);
    }
    default: return 0.0f;
  }
}

extern "C" void snapccl_lp_store(int dtype, float v, void* elem) {
  switch (dtype) {
    case ncclFloat32: {
      uint32_t b = lp::Elem<ncclFloat32>::store(v);
      memcpy(elem, &b, 4);
      break;
    }
    case ncclFloat16: {
      uint16_t b = lp::Elem<ncclFloat16>::store(v);
      memcpy(elem, &b, 2);
      break;
    }
    case ncclBfloat16: {
      uint16_t b = lp::Elem<ncclBfloat16>::store(v);
      memcpy(elem, &b, 2);
      break;
    }
    default: break;
  }
}
