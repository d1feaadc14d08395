/* Verifiable data for the perf binaries: what every rank puts in its send buffer and
 * what every output element must then hold. Shared, unchanged, by the host (C11: unit
 * tests, scalars) and the GPU (datacheck.cu fills and checks 1 GiB buffers in place),
 * so the two can never disagree.
 *
 * Scheme. Every input is a small integer, possibly scaled by 2^-s (float types), chosen
 * so that the exact reduction over the ranks, and every partial reduction in any order,
 * is exactly representable in the element type: a correct library must then produce the
 * expected bits exactly, whichever algorithm and order it uses. Per (type, op, nranks):
 *   sum/avg/mulsum  only K of the nranks ranks contribute a non-zero value to a given
 *                   element (which K rotates with the element), each of magnitude <= B,
 *                   with K*B*(avg: nranks, mulsum: 2) <= the largest integer the type
 *                   holds exactly (fp8 e5m2: 8, e4m3: 16, bf16: 256, half: 2048, ...).
 *                   avg inputs are nranks*w so that sum/nranks is the integer sum of w.
 *   prod            factors are +-1 or +-2, at most L twos per element (2^L exact).
 *   max/min         any value in [-B, B] (unsigned: [0, B]).
 *   mulsum          rank r premultiplies by 1 + (r & 1) (ncclRedOpCreatePreMulSum).
 * Exactness has one hole: avg on a float type with nranks not a power of two, where a
 * library may scale each input by a rounded 1/nranks. Those compare within tol_ulps.
 *
 * Everything here is a static inline function of integers and doubles: no CUDA
 * intrinsics, no libm, so host and device compute bit-identical values. */
#ifndef PERF_DATAGEN_H_
#define PERF_DATAGEN_H_

#include <stdint.h>

#ifdef __CUDACC__
#define PERF_HD __host__ __device__
#else
#define PERF_HD
#endif

/* Element types; the values are ncclDataType_t's (coll.c asserts that). */
enum {
  PERF_INT8 = 0, PERF_UINT8 = 1, PERF_INT32 = 2, PERF_UINT32 = 3, PERF_INT64 = 4,
  PERF_UINT64 = 5, PERF_HALF = 6, PERF_FLOAT = 7, PERF_DOUBLE = 8, PERF_BF16 = 9,
  PERF_F8E4M3 = 10, PERF_F8E5M2 = 11, PERF_NUM_TYPES = 12
};

/* Operations: the first five are ncclRedOp_t's; MULSUM is ncclRedOpCreatePreMulSum;
 * NONE is AllGather's plain copy. */
enum {
  PERF_OP_SUM = 0, PERF_OP_PROD = 1, PERF_OP_MAX = 2, PERF_OP_MIN = 3, PERF_OP_AVG = 4,
  PERF_OP_MULSUM = 5, PERF_OP_NONE = 6, PERF_NUM_OPS = 7
};

enum { PERF_KIND_SINT = 0, PERF_KIND_UINT = 1, PERF_KIND_FLOAT = 2 };

/* Largest magnitude of a single generated value (before avg/mulsum factors): small,
 * like nccl-tests' values, yet enough to exercise several mantissa bits. */
#define PERF_VALUE_CAP 100

/* Byte written over outputs before a checked run: decodes to a value no correct
 * result can take (signed: the type's minimum; unsigned: its maximum; float: NaN). */
PERF_HD static inline unsigned perf_poison_byte(int dt) {
  return (dt == PERF_INT8 || dt == PERF_INT32 || dt == PERF_INT64) ? 0x80u : 0xFFu;
}

PERF_HD static inline int perf_dt_size(int dt) {
  switch (dt) {
  case PERF_INT8: case PERF_UINT8: case PERF_F8E4M3: case PERF_F8E5M2: return 1;
  case PERF_HALF: case PERF_BF16: return 2;
  case PERF_INT32: case PERF_UINT32: case PERF_FLOAT: return 4;
  case PERF_INT64: case PERF_UINT64: case PERF_DOUBLE: return 8;
  default: return 0;
  }
}

PERF_HD static inline int perf_dt_kind(int dt) {
  switch (dt) {
  case PERF_INT8: case PERF_INT32: case PERF_INT64: return PERF_KIND_SINT;
  case PERF_UINT8: case PERF_UINT32: case PERF_UINT64: return PERF_KIND_UINT;
  default: return PERF_KIND_FLOAT;
  }
}

/* Exponent and mantissa widths of the float types (0 for integers). */
PERF_HD static inline int perf_dt_ebits(int dt) {
  switch (dt) {
  case PERF_HALF: return 5; case PERF_FLOAT: return 8; case PERF_DOUBLE: return 11;
  case PERF_BF16: return 8; case PERF_F8E4M3: return 4; case PERF_F8E5M2: return 5;
  default: return 0;
  }
}
PERF_HD static inline int perf_dt_mbits(int dt) {
  switch (dt) {
  case PERF_HALF: return 10; case PERF_FLOAT: return 23; case PERF_DOUBLE: return 52;
  case PERF_BF16: return 7; case PERF_F8E4M3: return 3; case PERF_F8E5M2: return 2;
  default: return 0;
  }
}

/* Largest n such that every integer in [0, n] is exact in the type (integers: the
 * largest value of the type, capped at 2^62 so that it stays exact in a double). */
PERF_HD static inline double perf_dt_max_exact(int dt) {
  switch (dt) {
  case PERF_INT8: return 127.0;
  case PERF_UINT8: return 255.0;
  case PERF_INT32: return 2147483647.0;
  case PERF_UINT32: return 4294967295.0;
  case PERF_INT64: case PERF_UINT64: return 4611686018427387904.0; /* 2^62 */
  case PERF_HALF: return 2048.0;
  case PERF_FLOAT: return 16777216.0;
  case PERF_DOUBLE: return 9007199254740992.0;
  case PERF_BF16: return 256.0;
  case PERF_F8E4M3: return 16.0;
  case PERF_F8E5M2: return 8.0;
  default: return 0.0;
  }
}

/* Largest L with 2^L exact in the type (bounds products). */
PERF_HD static inline int perf_dt_max_log2(int dt) {
  switch (dt) {
  case PERF_INT8: return 6; case PERF_UINT8: return 7;
  case PERF_INT32: return 30; case PERF_UINT32: return 31;
  case PERF_INT64: return 62; case PERF_UINT64: return 62;
  case PERF_HALF: return 15; case PERF_FLOAT: return 62; case PERF_DOUBLE: return 62;
  case PERF_BF16: return 62; case PERF_F8E4M3: return 8; case PERF_F8E5M2: return 15;
  default: return 0;
  }
}

/* splitmix64's finaliser: a cheap, well-mixed hash of element index, rank and seed. */
PERF_HD static inline uint64_t perf_mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* Everything the generator needs, fixed per (type, op, nranks); passed to kernels by
 * value. */
struct perf_scheme {
  int dt, op, nranks;
  int kind;           /* PERF_KIND_* */
  int contrib;        /* K: ranks with a non-neutral value per element (sum-like, prod) */
  int64_t vmax;       /* B: largest magnitude of one value */
  int negative;       /* values may be negative */
  int scaled;         /* float types: element values scaled by 2^-(0..3) */
  unsigned tol_ulps;  /* 0: exact compare */
};

PERF_HD static inline int perf_is_pow2(int n) { return n > 0 && (n & (n - 1)) == 0; }

PERF_HD static inline struct perf_scheme perf_scheme_make(int dt, int op, int nranks) {
  struct perf_scheme s;
  double maxe = perf_dt_max_exact(dt);
  s.dt = dt;
  s.op = op;
  s.nranks = nranks < 1 ? 1 : nranks;
  s.kind = perf_dt_kind(dt);
  s.negative = s.kind != PERF_KIND_UINT;
  s.scaled = s.kind == PERF_KIND_FLOAT && op != PERF_OP_PROD;
  s.tol_ulps = 0;
  s.contrib = s.nranks;
  s.vmax = PERF_VALUE_CAP;
  if (op == PERF_OP_SUM || op == PERF_OP_AVG || op == PERF_OP_MULSUM) {
    double mult = op == PERF_OP_AVG ? (double)s.nranks : op == PERF_OP_MULSUM ? 2.0 : 1.0;
    double budget = maxe / mult; /* bound on K*B */
    double k = budget < (double)s.nranks ? budget : (double)s.nranks;
    double b;
    if (k < 1.0) k = 0.0; /* the type cannot hold even one input: all zeros */
    s.contrib = (int)k;
    b = s.contrib > 0 ? budget / (double)s.contrib : 1.0;
    if (b > PERF_VALUE_CAP) b = PERF_VALUE_CAP;
    s.vmax = b < 1.0 ? 1 : (int64_t)b;
    if (op == PERF_OP_AVG && s.kind == PERF_KIND_FLOAT) {
      /* Cancellation would turn a rounded 1/nranks into many ulps of a small result. */
      s.negative = 0;
      if (!perf_is_pow2(s.nranks)) s.tol_ulps = 2u * (unsigned)s.contrib + 2u;
    }
  } else if (op == PERF_OP_PROD) {
    int l = perf_dt_max_log2(dt);
    s.contrib = l < s.nranks ? l : s.nranks;
    s.vmax = 2;
  } else { /* max, min, none */
    s.vmax = maxe < PERF_VALUE_CAP ? (int64_t)maxe : PERF_VALUE_CAP;
  }
  return s;
}

/* 2^-e for e in 0..3 (exact: a division by a power of two). */
PERF_HD static inline double perf_scale_of(uint64_t h) {
  return 1.0 / (double)(1u << ((h >> 40) & 3u));
}

/* Per-element hash, the same on every rank. */
PERF_HD static inline uint64_t perf_elem_hash(uint64_t idx, uint64_t seed) {
  return perf_mix64(perf_mix64(seed) ^ idx);
}

/* The premultiplier rank r applies under mulsum. */
PERF_HD static inline double perf_mulsum_scalar(int rank) { return (rank & 1) ? 2.0 : 1.0; }

/* Input of rank `rank` at element `idx` (the element's index in the rank's send buffer;
 * AllGather: in the rank's own block), as an exact double. */
PERF_HD static inline double perf_input_h(const struct perf_scheme* s, int rank, uint64_t h) {
  uint64_t hr = perf_mix64(h + (uint64_t)rank + 1u);
  uint64_t n = (uint64_t)s->nranks;
  int contributes = (int)(((h % n) + (uint64_t)rank) % n) < s->contrib;
  int neg = s->negative && ((hr >> 33) & 1u);
  double v;
  switch (s->op) {
  case PERF_OP_PROD:
    v = (contributes && (hr & 1u)) ? 2.0 : 1.0;
    return neg ? -v : v;
  case PERF_OP_SUM: case PERF_OP_AVG: case PERF_OP_MULSUM:
    if (!contributes) return 0.0;
    v = (double)(1 + (int64_t)(hr % (uint64_t)s->vmax));
    if (s->op == PERF_OP_AVG) v *= (double)s->nranks;
    break;
  default: /* max, min, none: every rank, 0..B */
    v = (double)(int64_t)(hr % (uint64_t)(s->vmax + 1));
    break;
  }
  if (s->scaled) v *= perf_scale_of(h);
  return (neg && v != 0.0) ? -v : v; /* never -0: it would encode differently from +0 */
}

PERF_HD static inline double perf_input(const struct perf_scheme* s, int rank, uint64_t idx,
                                        uint64_t seed) {
  return perf_input_h(s, rank, perf_elem_hash(idx, seed));
}

/* The exact reduction over all ranks of element idx (the index in the send buffers). */
PERF_HD static inline double perf_reduced(const struct perf_scheme* s, uint64_t idx,
                                          uint64_t seed) {
  uint64_t h = perf_elem_hash(idx, seed);
  double acc = perf_input_h(s, 0, h);
  int r;
  if (s->op == PERF_OP_MULSUM) acc *= perf_mulsum_scalar(0);
  for (r = 1; r < s->nranks; r++) {
    double v = perf_input_h(s, r, h);
    switch (s->op) {
    case PERF_OP_PROD: acc *= v; break;
    case PERF_OP_MAX: acc = v > acc ? v : acc; break;
    case PERF_OP_MIN: acc = v < acc ? v : acc; break;
    case PERF_OP_MULSUM: acc += v * perf_mulsum_scalar(r); break;
    default: acc += v; break; /* sum, avg (divided below) */
    }
  }
  if (s->op == PERF_OP_AVG) acc /= (double)s->nranks; /* exact: inputs are nranks*w */
  return acc;
}

/* Bits of a double, without memcpy or intrinsics (constant cost, identical everywhere). */
PERF_HD static inline uint64_t perf_double_bits(double v) {
  union { double d; uint64_t u; } c;
  c.d = v;
  return c.u;
}
PERF_HD static inline double perf_bits_double(uint64_t u) {
  union { double d; uint64_t u; } c;
  c.u = u;
  return c.d;
}

/* Encodes v into a float format of `eb` exponent and `mb` mantissa bits, rounding to
 * nearest even. e4m3 is the "fn" variant (no infinities, S.1111.111 is NaN). Values too
 * large for the format give NaN: the generator never asks for them, so a NaN expected
 * value shows up as wrong elements rather than as a silent pass. */
PERF_HD static inline uint64_t perf_encode_float(double v, int eb, int mb, int fn) {
  uint64_t b = perf_double_bits(v);
  uint64_t sign = b >> 63;
  int dexp = (int)((b >> 52) & 0x7FF);
  uint64_t sig = b & ((1ull << 52) - 1);
  int bias = (1 << (eb - 1)) - 1;
  uint64_t nan = (((uint64_t)1 << (eb + mb)) - 1) | (sign << (eb + mb)); /* all ones */
  int e, shift;
  uint64_t q, rem, half, out;
  if (eb == 11 && mb == 52) return b;
  if (dexp == 0x7FF) return nan;
  if (dexp == 0) return sign << (eb + mb); /* zero (double subnormals never occur) */
  sig |= 1ull << 52;
  e = dexp - 1023 + bias; /* biased target exponent */
  if (e >= 1) {
    shift = 52 - mb;
  } else {
    shift = 52 - mb + (1 - e); /* subnormal: the leading 1 moves into the fraction */
    e = 0;
  }
  if (shift > 63) {
    q = 0;
  } else {
    q = sig >> shift;
    rem = sig & ((1ull << shift) - 1);
    half = 1ull << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
  }
  if (e >= 1) {
    /* q holds the implicit 1 at bit mb; a carry out of the mantissa bumps the exponent */
    if (q >> (mb + 1)) { q >>= 1; e++; }
    q &= ((uint64_t)1 << mb) - 1;
  } else if (q >> mb) {
    e = 1; /* rounded up into the smallest normal */
    q &= ((uint64_t)1 << mb) - 1;
  }
  if (fn) {
    if (e > (1 << eb) - 1 || (e == (1 << eb) - 1 && q == ((uint64_t)1 << mb) - 1)) return nan;
  } else if (e >= (1 << eb) - 1) {
    return nan;
  }
  out = (sign << (eb + mb)) | ((uint64_t)e << mb) | q;
  return out;
}

/* The element bits of v in type dt (v exact for integers). */
PERF_HD static inline uint64_t perf_encode(int dt, double v) {
  int size = perf_dt_size(dt);
  uint64_t mask = size == 8 ? ~0ull : (((uint64_t)1 << (8 * size)) - 1);
  switch (perf_dt_kind(dt)) {
  case PERF_KIND_SINT: return (uint64_t)(int64_t)v & mask;
  case PERF_KIND_UINT: return (uint64_t)v & mask;
  default: return perf_encode_float(v, perf_dt_ebits(dt), perf_dt_mbits(dt), dt == PERF_F8E4M3);
  }
}

PERF_HD static inline int perf_float_is_nan(int dt, uint64_t bits) {
  int eb = perf_dt_ebits(dt), mb = perf_dt_mbits(dt);
  uint64_t emax = ((uint64_t)1 << eb) - 1;
  uint64_t e = (bits >> mb) & emax;
  uint64_t m = bits & (((uint64_t)1 << mb) - 1);
  if (dt == PERF_F8E4M3) return e == emax && m == (((uint64_t)1 << mb) - 1);
  return e == emax && m != 0;
}

/* Float bits mapped onto a line where neighbouring values differ by one (ulp distance). */
PERF_HD static inline int64_t perf_float_ordinal(int dt, uint64_t bits) {
  int w = perf_dt_ebits(dt) + perf_dt_mbits(dt);
  uint64_t mag = bits & (((uint64_t)1 << w) - 1);
  return ((bits >> w) & 1u) ? -(int64_t)mag : (int64_t)mag;
}

/* Whether an output element's bits are right: integers exactly, floats exactly (or
 * within tol ulps), +0 and -0 equal, NaN never. */
PERF_HD static inline int perf_bits_match(int dt, uint64_t got, uint64_t want, unsigned tol) {
  int64_t a, b, d;
  if (perf_dt_kind(dt) != PERF_KIND_FLOAT) return got == want;
  if (perf_float_is_nan(dt, got)) return 0;
  a = perf_float_ordinal(dt, got);
  b = perf_float_ordinal(dt, want);
  d = a > b ? a - b : b - a;
  return d <= (int64_t)tol;
}

/* Decodes float bits to a double (host-side reports and tests). */
PERF_HD static inline double perf_decode_float(int dt, uint64_t bits) {
  int eb = perf_dt_ebits(dt), mb = perf_dt_mbits(dt);
  int bias = (1 << (eb - 1)) - 1;
  uint64_t emax = ((uint64_t)1 << eb) - 1;
  uint64_t e = (bits >> mb) & emax;
  uint64_t m = bits & (((uint64_t)1 << mb) - 1);
  int neg = (int)((bits >> (eb + mb)) & 1u);
  double v;
  int i, ex;
  if (dt == PERF_DOUBLE) return perf_bits_double(bits);
  if (perf_float_is_nan(dt, bits)) return perf_bits_double(0x7FF8000000000000ull);
  if (e == emax && dt != PERF_F8E4M3) {
    v = perf_bits_double(0x7FF0000000000000ull); /* infinity */
    return neg ? -v : v;
  }
  v = (double)(e ? (m | ((uint64_t)1 << mb)) : m);
  ex = (e ? (int)e : 1) - bias - mb;
  for (i = 0; i < ex; i++) v *= 2.0;
  for (i = 0; i > ex; i--) v *= 0.5;
  return neg ? -v : v;
}

#endif
