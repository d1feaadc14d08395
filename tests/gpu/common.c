/* Helpers of the GPU suite; see common.h. */
#include "common.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../acceptance_matrix.h"
#include "../fnv.h"
#include "common_check.h"
#include "env.h"
#include "error.h"
#include "kernels/kargs.h"
#include "snapccl.h"

/* ---------------------------------------------------------------- basics */

struct dtinfo {
  const char* name;
  int size, is_float, is_signed, ebits, mbits, bias;
};
static const struct dtinfo dts[ncclNumTypes] = {
    [ncclInt8] = {"int8", 1, 0, 1, 0, 0, 0},          [ncclUint8] = {"uint8", 1, 0, 0, 0, 0, 0},
    [ncclInt32] = {"int32", 4, 0, 1, 0, 0, 0},        [ncclUint32] = {"uint32", 4, 0, 0, 0, 0, 0},
    [ncclInt64] = {"int64", 8, 0, 1, 0, 0, 0},        [ncclUint64] = {"uint64", 8, 0, 0, 0, 0, 0},
    [ncclFloat16] = {"half", 2, 1, 1, 5, 10, 15},     [ncclFloat32] = {"float32", 4, 1, 1, 8, 23, 127},
    [ncclFloat64] = {"float64", 8, 1, 1, 11, 52, 1023}, [ncclBfloat16] = {"bfloat16", 2, 1, 1, 8, 7, 127},
    [ncclFloat8e4m3] = {"e4m3", 1, 1, 1, 4, 3, 7},    [ncclFloat8e5m2] = {"e5m2", 1, 1, 1, 5, 2, 15},
};

const ncclDataType_t t_all_dtypes[12] = {
    ncclInt8,    ncclUint8,   ncclInt32,    ncclUint32,     ncclInt64,     ncclUint64,
    ncclFloat16, ncclFloat32, ncclFloat64,  ncclBfloat16,   ncclFloat8e4m3, ncclFloat8e5m2};

size_t t_dt_size(ncclDataType_t dt) { return (size_t)dts[dt].size; }
const char* t_dt_name(ncclDataType_t dt) { return dts[dt].name; }
int t_dt_is_float(ncclDataType_t dt) { return dts[dt].is_float; }

const char* t_op_name(int op) {
  static const char* const names[T_NOPS] = {"sum", "prod", "max", "min", "avg", "premul-host", "premul-dev"};
  return op >= 0 && op < T_NOPS ? names[op] : "?";
}
const char* t_coll_name(int coll) {
  return coll == T_AR ? "allreduce" : coll == T_AG ? "allgather" : "reducescatter";
}

int t_fail(char* err, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, T_ERRLEN, fmt, ap);
  va_end(ap);
  return -1;
}

static void prefix(char* err, const char* pre) {
  char tmp[T_ERRLEN];
  snprintf(tmp, sizeof tmp, "%.600s: %.1400s", pre, err);
  memcpy(err, tmp, sizeof tmp);
}

int t_gpu_count(void) {
  int n = 0;
  if (CUDA_TRY(cudaGetDeviceCount(&n)) != cudaSuccess) return 0;
  return n;
}

int t_gpu_count_forked(void) {
  pid_t p = fork();
  if (p < 0) return 0;
  if (p == 0) {
    signal(SIGALRM, SIG_DFL);
    alarm(60);
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    _exit(n > 100 ? 100 : n < 0 ? 0 : n);
  }
  int st = 0;
  double end = t_now() + 70;
  for (;;) {
    pid_t r = waitpid(p, &st, WNOHANG);
    if (r == p) break;
    if ((r < 0 && errno != EINTR) || t_now() > end) {
      kill(p, SIGKILL);
      waitpid(p, &st, 0);
      return 0;
    }
    t_sleep_ms(2);
  }
  return WIFEXITED(st) ? WEXITSTATUS(st) : 0;
}

double t_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void t_sleep_ns(long ns) {
  struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
void t_sleep_ms(int ms) { t_sleep_ns((long)ms * 1000000L); }

void t_env_defaults(void) {
  setenv("SNAPCCL_SHARED_GPU", "1", 1);
  unsetenv("SNAPCCL_ALGO");
  unsetenv("SNAPCCL_NCCL_LIB"); /* standalone: snapccl's own kernels run every call */
  setenv("SNAPCCL_TIMEOUT_MS", "15000", 0);
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "30", 0);
  snapccl_env_reload();
}

void t_env_set(const char* name, const char* value) {
  if (value) setenv(name, value, 1);
  else unsetenv(name);
  snapccl_env_reload();
}

double t_wait_bound_s(void) { return (double)snapccl_env()->timeout_ms / 1000.0 + 10.0; }

void t_set_algo(int coll, const char* algo) {
  char want[128] = "";
  if (algo) snprintf(want, sizeof want, "%s:%s", t_coll_name(coll), algo);
  const char* cur = getenv("SNAPCCL_ALGO");
  if (!strcmp(cur ? cur : "", want)) return;
  t_env_set("SNAPCCL_ALGO", want[0] ? want : NULL);
}

/* ---------------------------------------------------------------- encodings */

struct fmt {
  int ebits, mbits, bias, ieee; /* !ieee: e4m3 (no infinities, NaN = all ones) */
  double maxv;
};
static const struct fmt F_HALF = {5, 10, 15, 1, 65504.0};
static const struct fmt F_BF16 = {8, 7, 127, 1, 3.3895313892515355e38};
static const struct fmt F_E4M3 = {4, 3, 7, 0, 448.0};
static const struct fmt F_E5M2 = {5, 2, 15, 1, 57344.0};

static uint32_t enc(const struct fmt* f, double v) {
  const uint32_t sign = signbit(v) ? 1u << (f->ebits + f->mbits) : 0;
  const uint32_t emask = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
  const uint32_t inf = f->ieee ? emask << f->mbits : (emask << f->mbits) | mmask;
  if (isnan(v)) return sign | (emask << f->mbits) | (f->ieee ? 1u << (f->mbits - 1) : mmask);
  double a = fabs(v);
  if (isinf(a)) return sign | inf;
  const int emin = 1 - f->bias;
  int e = 0;
  frexp(a, &e); /* a = m 2^e, m in [0.5, 1): a's unbiased exponent is e - 1 */
  int E = a == 0 ? emin : e - 1;
  if (E < emin) E = emin;
  double q = ldexp(1.0, E - f->mbits);        /* the spacing of a's binade */
  double r = nearbyint(a / q) * q;            /* exact scaling; rounds to nearest even */
  if (r > f->maxv) return sign | inf;         /* e4m3: NaN */
  if (r == 0) return sign;
  frexp(r, &e);
  E = e - 1;
  if (E < emin) return sign | (uint32_t)(r / ldexp(1.0, emin - f->mbits));
  uint32_t mant = (uint32_t)(r / ldexp(1.0, E - f->mbits)) - (1u << f->mbits);
  return sign | (uint32_t)(E + f->bias) << f->mbits | mant;
}

static double dec(const struct fmt* f, uint32_t b) {
  const uint32_t emask = (1u << f->ebits) - 1, mmask = (1u << f->mbits) - 1;
  uint32_t ex = (b >> f->mbits) & emask, m = b & mmask;
  double v;
  if (f->ieee && ex == emask) v = m ? NAN : INFINITY;
  else if (!f->ieee && ex == emask && m == mmask) v = NAN;
  else if (ex == 0) v = ldexp((double)m, 1 - f->bias - f->mbits);
  else v = ldexp((double)(m | (1u << f->mbits)), (int)ex - f->bias - f->mbits);
  return (b >> (f->ebits + f->mbits)) & 1 ? -v : v;
}

uint16_t t_half_enc(double v) { return (uint16_t)enc(&F_HALF, v); }
double t_half_dec(uint16_t b) { return dec(&F_HALF, b); }
uint16_t t_bf16_enc(double v) { return (uint16_t)enc(&F_BF16, v); }
double t_bf16_dec(uint16_t b) { return dec(&F_BF16, b); }
uint8_t t_e4m3_enc(double v) { return (uint8_t)enc(&F_E4M3, v); }
double t_e4m3_dec(uint8_t b) { return dec(&F_E4M3, b); }
uint8_t t_e5m2_enc(double v) { return (uint8_t)enc(&F_E5M2, v); }
double t_e5m2_dec(uint8_t b) { return dec(&F_E5M2, b); }

static double* tab_half;
static double* tab_bf16;
static double tab_e4m3[256], tab_e5m2[256];
static pthread_once_t tab_once = PTHREAD_ONCE_INIT;
static void tab_init(void) {
  tab_half = malloc(65536 * sizeof(double));
  tab_bf16 = malloc(65536 * sizeof(double));
  if (!tab_half || !tab_bf16) abort();
  for (uint32_t i = 0; i < 65536; i++) {
    tab_half[i] = dec(&F_HALF, i);
    tab_bf16[i] = dec(&F_BF16, i);
  }
  for (uint32_t i = 0; i < 256; i++) {
    tab_e4m3[i] = dec(&F_E4M3, i);
    tab_e5m2[i] = dec(&F_E5M2, i);
  }
}

static uint64_t raw_u(const unsigned char* p, int size) {
  uint64_t v = 0;
  memcpy(&v, p, (size_t)size); /* little-endian hosts */
  return v;
}
static int64_t raw_s(uint64_t v, int size) {
  int sh = 64 - 8 * size;
  return sh ? (int64_t)(v << sh) >> sh : (int64_t)v;
}

double t_get(ncclDataType_t dt, const void* buf, size_t i) {
  const unsigned char* p = (const unsigned char*)buf + i * (size_t)dts[dt].size;
  pthread_once(&tab_once, tab_init);
  switch (dt) {
    case ncclFloat16: return tab_half[raw_u(p, 2)];
    case ncclBfloat16: return tab_bf16[raw_u(p, 2)];
    case ncclFloat8e4m3: return tab_e4m3[*p];
    case ncclFloat8e5m2: return tab_e5m2[*p];
    case ncclFloat32: { float f; memcpy(&f, p, 4); return f; }
    case ncclFloat64: { double d; memcpy(&d, p, 8); return d; }
    default: {
      uint64_t u = raw_u(p, dts[dt].size);
      return dts[dt].is_signed ? (double)raw_s(u, dts[dt].size) : (double)u;
    }
  }
}

void t_put(ncclDataType_t dt, void* buf, size_t i, double v) {
  unsigned char* p = (unsigned char*)buf + i * (size_t)dts[dt].size;
  uint64_t u;
  switch (dt) {
    case ncclFloat16: u = t_half_enc(v); break;
    case ncclBfloat16: u = t_bf16_enc(v); break;
    case ncclFloat8e4m3: u = t_e4m3_enc(v); break;
    case ncclFloat8e5m2: u = t_e5m2_enc(v); break;
    case ncclFloat32: { float f = (float)v; memcpy(p, &f, 4); return; }
    case ncclFloat64: memcpy(p, &v, 8); return;
    default: u = (uint64_t)(int64_t)v; break;
  }
  memcpy(p, &u, (size_t)dts[dt].size);
}

/* ---------------------------------------------------------------- data and references */

uint64_t t_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t t_rand(uint64_t* s) { return t_mix(*s += 0x632be59bd9b4e019ull); }

static void fill_bytes(uint64_t* s, unsigned char* p, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t r = t_rand(s);
    memcpy(p + i, &r, 8);
  }
  if (i < n) {
    uint64_t r = t_rand(s);
    memcpy(p + i, &r, n - i);
  }
}

/* Rank r's input: random bytes for all-gather; full-range integers except small ones
 * (1..3, random sign) for products; floats of magnitude [1/8, 2) ([1/2, 2) for
 * products), built from bits so they are exact in every format. */
static void gen_input(const struct t_case* c, int rank, unsigned char* p, size_t elems) {
  const struct dtinfo* d = &dts[c->dt];
  uint64_t s = t_mix(c->seed ^ t_mix(0x7a11ull + (uint64_t)rank));
  if (c->coll == T_AG || (!d->is_float && c->op != T_PROD)) {
    fill_bytes(&s, p, elems * (size_t)d->size);
    return;
  }
  for (size_t i = 0; i < elems; i++) {
    uint64_t r = t_rand(&s), u;
    if (!d->is_float) {
      int64_t v = 1 + (int64_t)((r >> 8) % 3);
      u = (uint64_t)(d->is_signed && (r & 1) ? -v : v);
    } else {
      int emin = c->op == T_PROD ? -1 : -3;
      uint64_t E = (uint64_t)(emin + (int)((r >> 1) % (uint64_t)(1 - emin)) + d->bias);
      uint64_t mant = (r >> 8) & ((1ull << d->mbits) - 1);
      u = (r & 1) << (d->ebits + d->mbits) | E << d->mbits | mant;
    }
    memcpy(p + i * (size_t)d->size, &u, (size_t)d->size);
  }
}

/* Rank r's PreMulSum scalar: every rank has its own (NCCL: sum of s_r * x_r). */
static double case_scalar(const struct t_case* c, int rank) {
  static const double f[] = {0.5, 0.75, 1.5, -1.25, 2.0};
  static const double si[] = {3, -2, 5, -7}, ui[] = {3, 2, 5, 7};
  uint64_t r = t_mix(c->seed ^ 0x5ca1ab1eull ^ ((uint64_t)rank << 32));
  if (dts[c->dt].is_float) return f[r % 5];
  return dts[c->dt].is_signed ? si[r % 4] : ui[r % 4];
}

/* Element k of the exact integer reduction over every rank, wrapped in the width. */
static uint64_t int_ref(const struct t_case* c, int n, unsigned char* const* in, size_t k,
                        const uint64_t* sbits) {
  const struct dtinfo* d = &dts[c->dt];
  const int sz = d->size;
  const uint64_t mask = sz == 8 ? ~0ull : (1ull << (8 * sz)) - 1;
  uint64_t acc = 0;
  int64_t sacc = 0;
  for (int r = 0; r < n; r++) {
    uint64_t u = raw_u(in[r] + k * (size_t)sz, sz);
    int64_t v = raw_s(u, sz);
    switch (c->op) {
      case T_SUM: case T_AVG: acc += u; break;
      case T_PROD: acc = r ? acc * u : u; break;
      case T_MAX: if (!r || (d->is_signed ? v > sacc : u > acc)) acc = u, sacc = v; break;
      case T_MIN: if (!r || (d->is_signed ? v < sacc : u < acc)) acc = u, sacc = v; break;
      default: acc += u * sbits[r]; break; /* PreMulSum: rank r's own scalar */
    }
  }
  acc &= mask;
  if (c->op == T_AVG)
    acc = d->is_signed ? (uint64_t)(raw_s(acc, sz) / n) & mask : acc / (uint64_t)n;
  return acc;
}

/* x * s as the owner of x scales it before the reduction (PreMulSum, float average):
 * one multiply in the accumulator type (fp32, fp64 for double; exact in fp64 here for
 * every operand width), then rounded to the dtype like NCCL. */
static double prescale(ncclDataType_t dt, double x, double s) {
  if (dt == ncclFloat64) return x * s;
  double p = (double)(float)(x * s);
  unsigned char q[8];
  if (dt == ncclFloat32) return p;
  t_put(dt, q, 0, p);
  return t_get(dt, q, 0);
}

/* Floating results against an fp64 reference: exact for max/min; otherwise the fp32
 * (fp64 for double) accumulation error bound, one ulp of the format for the final
 * rounding, and the smallest subnormal. */
static int check_float(const struct t_case* c, int n, unsigned char* const* in, size_t k0,
                       const unsigned char* got, size_t count, const double* scalar, int rank,
                       char* err) {
  const struct dtinfo* d = &dts[c->dt];
  const double ea = ldexp(1.0, c->dt == ncclFloat64 ? -53 : -24);
  const double ed = ldexp(1.0, -d->mbits), tiny = ldexp(1.0, 1 - d->bias - d->mbits);
  const double inv_n = c->dt == ncclFloat64 ? 1.0 / n : (double)(1.0f / (float)n);
  for (size_t i = 0; i < count; i++) {
    double ref = 0, mag = 0;
    for (int r = 0; r < n; r++) {
      double x = t_get(c->dt, in[r], k0 + i);
      switch (c->op) {
        case T_PROD: ref = r ? ref * x : x; break;
        case T_MAX: ref = r ? fmax(ref, x) : x; break;
        case T_MIN: ref = r ? fmin(ref, x) : x; break;
        case T_SUM: ref += x, mag += fabs(x); break;
        case T_AVG: x = prescale(c->dt, x, inv_n), ref += x, mag += fabs(x); break;
        default: x = prescale(c->dt, x, scalar[r]), ref += x, mag += fabs(x); break;
      }
    }
    double tol = c->op == T_MAX || c->op == T_MIN ? 0.0
                 : c->op == T_PROD ? (2.0 * (n + 1) * ea + ed) * fabs(ref) + tiny
                                   : 2.0 * (n + 2) * ea * mag + ed * fabs(ref) + tiny;
    double g = t_get(c->dt, got, i);
    if (!(fabs(g - ref) <= tol))
      return t_fail(err, "rank %d, element %zu of %zu: got %.10g (bits 0x%llx), expected %.10g "
                  "(tolerance %.3g)", rank, i, count, g,
                  (unsigned long long)raw_u(got + i * (size_t)d->size, d->size), ref, tol);
  }
  return 0;
}

/* ---------------------------------------------------------------- cases */

void t_misalign(int k, int n, int* send_off, int* recv_off) {
  for (int r = 0; r < n; r++) {
    send_off[r] = (k + 5 * r) % 16;
    recv_off[r] = (3 * k + 7 * r + 1) % 16;
  }
}

struct t_case t_case_make(int coll, ncclDataType_t dt, int op, size_t count, int in_place,
                          const char* algo, uint64_t seed) {
  struct t_case c;
  memset(&c, 0, sizeof c);
  c.coll = coll, c.dt = dt, c.op = op, c.count = count, c.in_place = in_place;
  c.algo = algo, c.seed = seed;
  return c;
}

const char* t_case_str(const struct t_case* c, int n, char* buf, size_t len) {
  int k = snprintf(buf, len, "%s %s%s%s count=%zu %s algo=%s nranks=%d seed=0x%llx",
                   t_coll_name(c->coll), t_dt_name(c->dt), c->coll == T_AG ? "" : " ",
                   c->coll == T_AG ? "" : t_op_name(c->op), c->count,
                   c->in_place ? "in-place" : "out-of-place", c->algo ? c->algo : "auto", n,
                   (unsigned long long)c->seed);
  for (int r = 0; r < n && k > 0 && (size_t)k < len; r++)
    if (c->send_off[r] || c->recv_off[r])
      k += snprintf(buf + k, len - (size_t)k, " off[%d]=s%d/r%d", r, c->send_off[r], c->recv_off[r]);
  if (c->null_bufs && k > 0 && (size_t)k < len) snprintf(buf + k, len - (size_t)k, " NULL buffers");
  return buf;
}

int t_algo_accepts(const struct t_case* c, int nranks) {
  if (c->count == 0 || !c->algo) return 1;
  size_t bytes = c->count * t_dt_size(c->dt);
  int premul = c->coll != T_AG && (c->op == T_PREMUL_HOST || c->op == T_PREMUL_DEV);
  if (!strcmp(c->algo, "copy")) return nranks == 1 && !premul; /* one rank, data unchanged */
  /* Copy engine (src/algos/ce_*.c): two ranks or more; every dtype; not a PreMulSum with
   * each rank's own scalar (host or device: the test gives every rank its own). */
  if (!strncmp(c->algo, "ce_", 3)) {
    static const char* const ce[] = {[T_AR] = "ce_allreduce", [T_AG] = "ce_allgather", [T_RS] = "ce_reducescatter"};
    return !strcmp(c->algo, ce[c->coll]) && nranks > 1 && !premul;
  }
  if (c->coll != T_AR) return !strcmp(c->algo, "direct");
  if (!strcmp(c->algo, "lamport")) return dts[c->dt].is_float && bytes <= snapccl_oneshot_slot_bytes(nranks);
  if (!strcmp(c->algo, "oneshot")) return bytes <= snapccl_oneshot_slot_bytes(nranks);
  return !strcmp(c->algo, "twoshot");
}

_Static_assert((int)T_PREMUL_DEV == (int)MX_PREMULSUM_DEVICE, "enum t_op and enum mx_op agree");

ncclResult_t t_nccl_refuses(const struct t_case* c, int nranks) {
  static const enum mx_coll colls[] = {[T_AR] = MX_ALLREDUCE, [T_AG] = MX_ALLGATHER,
                                       [T_RS] = MX_REDUCESCATTER};
  if (nranks != 1 || c->count == 0) return ncclSuccess;
  const int op = c->coll == T_AG ? (int)MX_NO_OP : c->op;
  for (size_t i = 0; i < MX_NCELLS; i++)
    if (mx_cells[i].coll == colls[c->coll] && mx_cells[i].dtype == c->dt && (int)mx_cells[i].op == op)
      return mx_cells[i].nccl_2_28_3;
  return ncclSuccess;
}

size_t t_case_send_bytes(const struct t_case* c, int n) {
  return c->count * t_dt_size(c->dt) * (c->coll == T_RS ? (size_t)n : 1);
}
size_t t_case_recv_bytes(const struct t_case* c, int n) {
  int whole = c->coll == T_AG || (c->coll == T_RS && c->in_place);
  return c->count * t_dt_size(c->dt) * (whole ? (size_t)n : 1);
}

/* ---------------------------------------------------------------- running a case */

struct t_host {
  int n;
  size_t in_elems, in_bytes, out_bytes;
  unsigned char* in[T_MAXR];
  unsigned char* expect; /* integers and all-gather: every rank's exact result */
  unsigned char* first_out;
  unsigned char* stage; /* two images of stage_cap bytes: downloaded and expected */
  size_t stage_cap;
  double scalar[T_MAXR]; /* each rank's PreMulSum scalar, and its bytes in the dtype */
  uint64_t sbits[T_MAXR];
  ncclRedOp_t op[T_MAXR];
  int have_op[T_MAXR];
};

static unsigned char guard_byte(size_t pos) { return (unsigned char)(0x5Au ^ (pos * 0x9Du)); }

static size_t first_diff(const unsigned char* a, const unsigned char* b, size_t n) {
  if (!memcmp(a, b, n)) return n;
  size_t i = 0;
  while (a[i] == b[i]) i++;
  return i;
}

static int exact(const struct t_case* c) { return c->coll == T_AG || !dts[c->dt].is_float; }
static size_t esz(const struct t_case* c) { return t_dt_size(c->dt); }

static char* region_send(const struct t_case* c, struct t_bufs* b, int r) {
  return b->send[r] + T_GUARD + c->send_off[r];
}
static char* region_recv(const struct t_case* c, struct t_bufs* b, int r) {
  return b->recv[r] + T_GUARD + c->recv_off[r];
}

/* What we upload around and into a region, and what an untouched region still holds. */
static size_t send_image(const struct t_case* c, const struct t_host* h, int r, unsigned char* img) {
  size_t off = T_GUARD + (size_t)c->send_off[r], span = off + h->in_bytes + T_GUARD;
  for (size_t i = 0; i < span; i++) img[i] = guard_byte(i);
  memcpy(img + off, h->in[r], h->in_bytes);
  return span;
}
static size_t recv_image(const struct t_case* c, const struct t_host* h, int r, unsigned char* img) {
  size_t off = T_GUARD + (size_t)c->recv_off[r], rb = t_case_recv_bytes(c, h->n);
  size_t span = off + rb + T_GUARD;
  for (size_t i = 0; i < span; i++) img[i] = guard_byte(i);
  unsigned char* p = img + off;
  if (c->in_place && c->coll != T_AG) {
    memcpy(p, h->in[r], h->in_bytes);
    return span;
  }
  if (exact(c)) {
    const unsigned char* e = h->expect + (c->coll == T_RS ? (size_t)r * h->out_bytes : 0);
    for (size_t i = 0; i < h->out_bytes; i++) p[i] = (unsigned char)~e[i];
  } else {
    memset(p, 0xFF, h->out_bytes); /* NaN in every floating format */
  }
  if (c->in_place) memcpy(p + (size_t)r * h->in_bytes, h->in[r], h->in_bytes);
  return span;
}

void t_host_free(struct t_world* w, struct t_host* h) {
  char err[T_ERRLEN];
  if (!h) return;
  (void)t_case_release_ops(w, h, err);
  for (int r = 0; r < h->n; r++) free(h->in[r]);
  free(h->expect);
  free(h->first_out);
  free(h->stage);
  free(h);
}

int t_case_release_ops(struct t_world* w, struct t_host* h, char* err) {
  int rc = 0;
  for (int r = 0; r < h->n; r++) {
    if (!h->have_op[r]) continue;
    h->have_op[r] = 0;
    ncclResult_t res = ncclRedOpDestroy(h->op[r], w->comm[r]);
    if (res != ncclSuccess && !rc)
      rc = t_fail(err, "ncclRedOpDestroy(rank %d) failed: %s (%s)", r, ncclGetErrorString(res),
                ncclGetLastError(NULL));
  }
  return rc;
}

static int prepare(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h,
                   char* err) {
  const int n = w->n;
  const size_t es = esz(c), sb = t_case_send_bytes(c, n), rb = t_case_recv_bytes(c, n);
  if ((!c->in_place && sb > b->send_cap) || rb > b->recv_cap)
    return t_fail(err, "the case needs %zu/%zu bytes; the buffers hold %zu/%zu", sb, rb,
                b->send_cap, b->recv_cap);
  for (int r = 0; r < n; r++)
    if (c->send_off[r] < 0 || c->send_off[r] > 15 || c->recv_off[r] < 0 || c->recv_off[r] > 15)
      return t_fail(err, "offsets must be 0..15");
  h->in_elems = c->count * (c->coll == T_RS ? (size_t)n : 1);
  h->in_bytes = h->in_elems * es;
  h->out_bytes = c->count * es * (c->coll == T_AG ? (size_t)n : 1);
  h->stage_cap = (sb > rb ? sb : rb) + 2 * T_GUARD + 16;
  if (!(h->stage = malloc(2 * h->stage_cap)) || !(h->first_out = malloc(h->out_bytes + 1)))
    return t_fail(err, "out of host memory");
  for (int r = 0; r < n; r++) {
    if (!(h->in[r] = malloc(h->in_bytes + 1))) return t_fail(err, "out of host memory");
    gen_input(c, r, h->in[r], h->in_elems);
  }
  for (int r = 0; r < n; r++) {
    h->scalar[r] = case_scalar(c, r);
    t_put(c->dt, &h->sbits[r], 0, h->scalar[r]);
  }
  if (exact(c)) {
    size_t total = c->coll == T_AR ? h->out_bytes : (size_t)n * c->count * es;
    if (!(h->expect = malloc(total + 1))) return t_fail(err, "out of host memory");
    if (c->coll == T_AG) {
      for (int r = 0; r < n; r++) memcpy(h->expect + (size_t)r * h->in_bytes, h->in[r], h->in_bytes);
    } else {
      for (size_t k = 0; k < total / es; k++) {
        uint64_t v = int_ref(c, n, h->in, k, h->sbits);
        memcpy(h->expect + k * es, &v, es);
      }
    }
  }
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (c->coll == T_AG || (c->op != T_PREMUL_HOST && c->op != T_PREMUL_DEV)) continue;
    int dev = c->op == T_PREMUL_DEV;
    if (dev) CU(cudaMemcpyAsync(b->scalar[r], &h->sbits[r], es, cudaMemcpyHostToDevice, w->stream[r]));
    NC(ncclRedOpCreatePreMulSum(&h->op[r], dev ? b->scalar[r] : (void*)&h->sbits[r], c->dt,
                                dev ? ncclScalarDevice : ncclScalarHostImmediate, w->comm[r]));
    h->have_op[r] = 1;
  }
  /* On the rank's own stream: a plain cudaMemcpy from pageable memory may return before
   * its DMA lands, and the legacy stream does not order the non-blocking rank streams.
   * Pageable sources are staged before cudaMemcpyAsync returns, so h->stage is reusable. */
  for (int r = w->first; r < w->first + w->nlocal; r++) {
    if (!c->in_place)
      CU(cudaMemcpyAsync(b->send[r], h->stage, send_image(c, h, r, h->stage), cudaMemcpyHostToDevice, w->stream[r]));
    CU(cudaMemcpyAsync(b->recv[r], h->stage, recv_image(c, h, r, h->stage), cudaMemcpyHostToDevice, w->stream[r]));
  }
  return 0;
}

int t_case_prepare(struct t_world* w, const struct t_case* c, struct t_bufs* b,
                   struct t_host** out, char* err) {
  struct t_host* h = calloc(1, sizeof *h);
  *out = NULL;
  if (!h) return t_fail(err, "out of host memory");
  h->n = w->n;
  if (prepare(w, c, b, h, err) != 0) {
    t_host_free(w, h);
    return -1;
  }
  *out = h;
  return 0;
}

/* The ncclRedOp_t of each test op; the PreMulSum ones are created per rank (h->op). */
static const ncclRedOp_t builtin[] = {ncclSum, ncclProd, ncclMax, ncclMin, ncclAvg, ncclSum, ncclSum};

ncclResult_t t_case_call(struct t_world* w, const struct t_case* c, struct t_bufs* b,
                         struct t_host* h, int r) {
  const size_t es = esz(c);
  char* rv = c->null_bufs ? NULL : region_recv(c, b, r);
  char* sd = c->null_bufs ? NULL : region_send(c, b, r);
  if (c->in_place && !c->null_bufs) {
    sd = rv + (c->coll == T_AG ? (size_t)r * c->count * es : 0);
    if (c->coll == T_RS) rv += (size_t)r * c->count * es;
  }
  ncclRedOp_t op = h->have_op[r] ? h->op[r] : builtin[c->op];
  if (c->coll == T_AR) return ncclAllReduce(sd, rv, c->count, c->dt, op, w->comm[r], w->stream[r]);
  if (c->coll == T_AG) return ncclAllGather(sd, rv, c->count, c->dt, w->comm[r], w->stream[r]);
  return ncclReduceScatter(sd, rv, c->count, c->dt, op, w->comm[r], w->stream[r]);
}

int t_case_issue(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h,
                 int* issued, char* err) {
  const ncclResult_t refused = t_nccl_refuses(c, w->n);
  const int accept = !refused && t_algo_accepts(c, w->n), grouped = w->nlocal > 1;
  *issued = 0;
  t_set_algo(c->coll, c->algo);
  if (c->count > 0) {
    const char* name = NULL;
    int r = w->first;
    ncclResult_t q = snapcclQueryAlgorithm(w->comm[r], t_coll_name(c->coll), c->count, c->dt,
                                           h->have_op[r] ? h->op[r] : builtin[c->op], &name);
    if (refused) {
      if (q != refused)
        return t_fail(err, "snapcclQueryAlgorithm returns %s for a call NCCL refuses with %s",
                    ncclGetErrorString(q), ncclGetErrorString(refused));
    } else if (accept && (q != ncclSuccess || (c->algo && strcmp(name, c->algo) != 0))) {
      return t_fail(err, "snapcclQueryAlgorithm says %s (%s), expected %s", ncclGetErrorString(q),
                  q == ncclSuccess ? name : ncclGetLastError(NULL), c->algo ? c->algo : "success");
    } else if (!accept && q != ncclInvalidUsage)
      return t_fail(err, "snapcclQueryAlgorithm returns %s (%s) for a call %s must decline",
                  ncclGetErrorString(q), q == ncclSuccess ? name : "", c->algo);
  }
  ncclResult_t first = ncclSuccess, res;
  if (grouped) NC(ncclGroupStart());
  for (int r = w->first; r < w->first + w->nlocal; r++)
    if ((res = t_case_call(w, c, b, h, r)) != ncclSuccess && first == ncclSuccess) first = res;
  if (grouped && (res = ncclGroupEnd()) != ncclSuccess && first == ncclSuccess) first = res;
  char last[512];
  snprintf(last, sizeof last, "%s", ncclGetLastError(NULL));
  if (t_case_release_ops(w, h, err) != 0) return -1;
  if (refused) {
    if (first != refused || !last[0])
      return t_fail(err, "NCCL refuses this call with %s; snapccl returned %s (\"%s\")",
                  ncclGetErrorString(refused), ncclGetErrorString(first), last);
    return 0;
  }
  if (accept) {
    if (first != ncclSuccess)
      return t_fail(err, "the call failed: %s (%s)", ncclGetErrorString(first), last);
    *issued = c->count > 0;
    return 0;
  }
  if (first != ncclInvalidUsage)
    return t_fail(err, "%s must decline this call with ncclInvalidUsage, but it returned %s",
                c->algo, ncclGetErrorString(first));
  if (!strstr(last, "SNAPCCL_ALGO"))
    return t_fail(err, "the declined call's last error does not name SNAPCCL_ALGO: \"%s\"", last);
  return 0;
}

static int verify_rank(struct t_world* w, const struct t_case* c, struct t_bufs* b,
                       struct t_host* h, int r, int issued, int first, char* err) {
  unsigned char *got = h->stage, *img = h->stage + h->stage_cap;
  const size_t es = esz(c), off = T_GUARD + (size_t)c->recv_off[r];
  size_t span, d;
  CU(cudaStreamSynchronize(w->stream[r])); /* uploads (and a call, if any) are done */
  if (!c->in_place) {
    span = send_image(c, h, r, img);
    CU(cudaMemcpy(got, b->send[r], span, cudaMemcpyDeviceToHost));
    if ((d = first_diff(got, img, span)) < span)
      return t_fail(err, "rank %d: the send buffer changed at byte %td from its start (0x%02x, was 0x%02x)",
                  r, (ptrdiff_t)d - (ptrdiff_t)(T_GUARD + c->send_off[r]), got[d], img[d]);
  }
  span = recv_image(c, h, r, img);
  CU(cudaMemcpy(got, b->recv[r], span, cudaMemcpyDeviceToHost));
  if (!issued) {
    if ((d = first_diff(got, img, span)) < span)
      return t_fail(err, "rank %d: %s, yet the receive region changed at byte %td from its start",
                  r, c->count ? "the call was declined" : "count is 0", (ptrdiff_t)d - (ptrdiff_t)off);
    return 0;
  }
  const size_t rb = t_case_recv_bytes(c, h->n);
  if ((d = first_diff(got, img, off)) < off)
    return t_fail(err, "rank %d: the guard before the receive buffer changed at byte %td", r,
                (ptrdiff_t)d - (ptrdiff_t)off);
  if ((d = first_diff(got + off + rb, img + off + rb, T_GUARD)) < T_GUARD)
    return t_fail(err, "rank %d: the guard after the receive buffer changed at byte %zu past its end", r, d);
  const unsigned char* res = got + off + (c->in_place && c->coll == T_RS ? (size_t)r * h->out_bytes : 0);
  if (exact(c)) {
    const unsigned char* e = h->expect + (c->coll == T_RS ? (size_t)r * h->out_bytes : 0);
    if ((d = first_diff(res, e, h->out_bytes)) < h->out_bytes) {
      size_t k = d / es;
      return t_fail(err, "rank %d, element %zu of %zu%s: got 0x%llx, expected 0x%llx", r, k,
                  h->out_bytes / es, c->coll == T_AG ? " (all-gather result)" : "",
                  (unsigned long long)raw_u(res + k * es, (int)es),
                  (unsigned long long)raw_u(e + k * es, (int)es));
    }
  } else if (c->coll == T_RS || first) {
    if (check_float(c, h->n, h->in, c->coll == T_RS ? (size_t)r * c->count : 0, res, c->count,
                    h->scalar, r, err) != 0)
      return -1;
    if (c->coll == T_AR) memcpy(h->first_out, res, h->out_bytes);
  } else if ((d = first_diff(res, h->first_out, h->out_bytes)) < h->out_bytes) {
    return t_fail(err, "rank %d's result differs bitwise from rank %d's at element %zu", r,
                w->first, d / es);
  }
  if (c->coll != T_RS && w->nlocal < w->n) w->hash = fnv_continue(w->hash, res, h->out_bytes);
  return 0;
}

int t_case_verify(struct t_world* w, const struct t_case* c, struct t_bufs* b, struct t_host* h,
                  int issued, char* err) {
  for (int r = w->first; r < w->first + w->nlocal; r++)
    if (verify_rank(w, c, b, h, r, issued, r == w->first, err) != 0) return -1;
  return 0;
}

int t_run_case(struct t_world* w, const struct t_case* c, struct t_bufs* b, char* err) {
  struct t_host* h = NULL;
  int issued = 0, rc = t_case_prepare(w, c, b, &h, err);
  if (rc == 0) rc = t_case_issue(w, c, b, h, &issued, err);
  if (rc == 0 && issued) rc = t_world_sync(w, t_wait_bound_s(), err);
  if (rc == 0) rc = t_case_verify(w, c, b, h, issued, err);
  if (rc != 0) {
    char what[600], scratch[T_ERRLEN];
    prefix(err, t_case_str(c, w->n, what, sizeof what));
    (void)t_world_sync(w, t_wait_bound_s(), scratch); /* nothing may still use the buffers */
  }
  t_host_free(w, h);
  return rc;
}

int t_run_case_alloc(struct t_world* w, const struct t_case* c, char* err) {
  struct t_bufs b;
  size_t sb = t_case_send_bytes(c, w->n), rb = t_case_recv_bytes(c, w->n);
  if (t_bufs_alloc(w, &b, sb, rb, err) != 0) {
    t_bufs_free(w, &b);
    return -1;
  }
  int rc = t_run_case(w, c, &b, err);
  t_bufs_free(w, &b);
  return rc;
}
