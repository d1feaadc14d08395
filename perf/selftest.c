/* perf_selftest: CPU-only checks of the perf binaries' pieces: option parsing, table
 * formatting, byte counts and bandwidth formulas, and above all the data scheme of
 * datagen.h, whose promise (every reduction exact in every type, in any order) is
 * verified here by reducing in the element type's own arithmetic, with rounding after
 * every step, in several orders. Exit status 0 when everything holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "coll.h"
#include "datagen.h"
#include "expect.h"
#include "format.h"
#include "team.h"

/* A memory stream: *buf holds the text once f is closed (caller frees). */
static FILE* capture(char** buf, size_t* len) {
  FILE* f = open_memstream(buf, len);
  if (!f) {
    perror("open_memstream");
    exit(2);
  }
  return f;
}

static void test_sizes(void) {
  size_t v = 0;
  EXPECT(perf_parse_size("8", &v) == 0 && v == 8, "8");
  EXPECT(perf_parse_size("1K", &v) == 0 && v == 1024, "1K");
  EXPECT(perf_parse_size("1k", &v) == 0 && v == 1024, "1k");
  EXPECT(perf_parse_size("0.5M", &v) == 0 && v == 524288, "0.5M");
  EXPECT(perf_parse_size("1G", &v) == 0 && v == 1073741824, "1G");
  EXPECT(perf_parse_size("2 G", &v) == 0 && v == 2147483648u, "2 G");
  EXPECT(perf_parse_size("abc", &v) == -1, "abc");
  EXPECT(perf_parse_size("-1", &v) == -1, "-1");
  EXPECT(perf_parse_size("1X", &v) == -1, "1X");
  EXPECT(perf_parse_size("1GB", &v) == -1, "1GB");
  /* Not numbers of bytes: NaN (strtod accepts it) and infinities, in any spelling. */
  const char* not_sizes[] = {"nan", "NAN", "-nan", "nan(0x1)", "nanK", "inf", "infinity", "-inf", "1e400"};
  for (size_t i = 0; i < sizeof not_sizes / sizeof not_sizes[0]; i++) {
    v = 12345;
    EXPECT(perf_parse_size(not_sizes[i], &v) == -1 && v == 12345, not_sizes[i]);
  }
}

static int parse(struct perf_opts* o, const char* line) {
  char buf[512];
  char* argv[64];
  int argc = 0;
  char* tok;
  FILE* devnull = fopen("/dev/null", "w");
  int rc;
  snprintf(buf, sizeof(buf), "prog %s", line);
  for (tok = strtok(buf, " "); tok && argc < 63; tok = strtok(NULL, " ")) argv[argc++] = tok;
  argv[argc] = NULL;
  perf_opts_default(o);
  rc = perf_parse_args(argc, argv, o, devnull, devnull);
  fclose(devnull);
  return rc;
}

static void test_args(void) {
  struct perf_opts o;
  EXPECT(parse(&o, "") == 0, "empty command line");
  EXPECT(o.minbytes == 32u << 20 && o.maxbytes == 32u << 20 && o.iters == 20 &&
             o.warmup_iters == 1 && o.datacheck == 1 && o.op == PERF_OP_SUM &&
             o.dtype == PERF_FLOAT && o.average == 1 && o.nthreads == 1 && o.ngpus == 1,
         "nccl-tests defaults");
  EXPECT(parse(&o, "-b 8 -e 1G -f 2 -g 4 -t 2 -d all -o mulsum -c 0 -n 5 -w 3 -m 2 -N 2") == 0,
         "typical line");
  EXPECT(o.minbytes == 8 && o.maxbytes == 1073741824 && o.stepfactor == 2 && o.ngpus == 4 &&
             o.nthreads == 2 && o.dtype == -1 && o.op == PERF_OP_MULSUM && o.datacheck == 0 &&
             o.iters == 5 && o.warmup_iters == 3 && o.agg_iters == 2 && o.run_cycles == 2,
         "typical line values");
  EXPECT(parse(&o, "--minbytes 1K --maxbytes 4K --stepfactor 4 --datatype bfloat16 --op avg") == 0 &&
             o.minbytes == 1024 && o.maxbytes == 4096 && o.stepfactor == 4 &&
             o.dtype == PERF_BF16 && o.op == PERF_OP_AVG,
         "long options");
  EXPECT(parse(&o, "-G 1 -z 1") == 0 && o.graph_launches == 1 && o.blocking == 0,
         "-z disabled with -G");
  EXPECT(parse(&o, "-z 1") == 0 && o.blocking == 1, "-z 1");
  EXPECT(parse(&o, "-a 3 -C 1 -R 2 -x 1 -M 1 -u 1 -T 30 -y 1 -p 1 -r 2") == 0 && o.average == 3 &&
             o.report_cputime == 1 && o.local_register == 2 && o.cta_policy == 1 &&
             o.memory_report == 1 && o.unalign == 1 && o.timeout == 30 && o.stream_null == 1 &&
             o.parallel_init == 1 && o.root == 2,
         "less common flags");
  EXPECT(parse(&o, "-J out.json -I 1 -K 2 -S 1 -J x") == 0 && strcmp(o.notes, "-J -I -K -S") == 0,
         "ignored options noted once each: '%s'", o.notes);
  EXPECT(parse(&o, "-d f8e4m3") == 0 && o.dtype == PERF_F8E4M3, "f8e4m3");
  EXPECT(parse(&o, "-d f8e5m2 -o prod") == 0 && o.dtype == PERF_F8E5M2 && o.op == PERF_OP_PROD,
         "f8e5m2");
  EXPECT(parse(&o, "-o all") == 0 && o.op == -1, "-o all");
  EXPECT(parse(&o, "-d fp32") == -1, "unknown type rejected");
  EXPECT(parse(&o, "-o none") == -1, "'none' is not an option value");
  EXPECT(parse(&o, "-g") == -1, "missing value");
  EXPECT(parse(&o, "-g x") == -1, "non-numeric value");
  EXPECT(parse(&o, "-g 0") == -1, "zero GPUs");
  EXPECT(parse(&o, "-q 1") == -1, "unknown option");
  EXPECT(parse(&o, "-b 2G -e 1G") == -1, "min > max");
  EXPECT(parse(&o, "-b 0 -e 1K -f 2") == -1, "zero start with factor");
  EXPECT(parse(&o, "-b 0 -e 1K -i 0") == -1, "zero step");
  EXPECT(parse(&o, "extra") == -1, "stray argument");
  EXPECT(parse(&o, "-h") == 1, "help");
  EXPECT(parse(&o, "--dry_run -b 8") == 0 && o.dry_run == 1, "--dry_run");
}

static void test_names(void) {
  int i;
  for (i = 0; i < PERF_NUM_TYPES; i++)
    EXPECT(perf_type_from_name(perf_type_names[i]) == i, "type %s", perf_type_names[i]);
  for (i = 0; i < PERF_OP_NONE; i++)
    EXPECT(perf_op_from_name(perf_op_names[i]) == i, "op %s", perf_op_names[i]);
  EXPECT(perf_type_from_name("all") == -1 && perf_op_from_name("all") == -1, "all");
}

static void test_counts_bw(void) {
  struct perf_counts c;
  double alg, bus;
  perf_coll_counts(&perf_coll_allreduce, 1000, 4, 4, &c);
  EXPECT(c.send == 1000 && c.recv == 1000 && c.param == 1000 && c.send_ip == 0 && c.recv_ip == 0,
         "allreduce counts");
  perf_coll_counts(&perf_coll_allgather, 1000, 4, 4, &c); /* 250 rounded to 16 B = 4 floats */
  EXPECT(c.send == 248 && c.recv == 992 && c.param == 248 && c.send_ip == 248 && c.recv_ip == 0,
         "allgather counts");
  perf_coll_counts(&perf_coll_reducescatter, 1000, 4, 4, &c);
  EXPECT(c.send == 992 && c.recv == 248 && c.param == 248 && c.send_ip == 0 && c.recv_ip == 248,
         "reducescatter counts");
  perf_coll_counts(&perf_coll_allgather, 2, 4, 1, &c); /* 8 B of floats: rounds to nothing */
  EXPECT(c.param == 0 && c.recv == 0, "tiny allgather");
  perf_coll_counts(&perf_coll_allgather, 1000, 8, 3, &c); /* 333 -> even */
  EXPECT(c.param == 332 && c.recv == 996, "allgather doubles over 3 ranks");
  perf_coll_bw(&perf_coll_allreduce, 1000000, 4, 1e-3, 8, &alg, &bus);
  EXPECT(fabs(alg - 4.0) < 1e-12 && fabs(bus - 7.0) < 1e-12, "allreduce bw %g %g", alg, bus);
  perf_coll_bw(&perf_coll_allgather, 250000, 4, 1e-3, 8, &alg, &bus);
  EXPECT(fabs(alg - 8.0) < 1e-12 && fabs(bus - 7.0) < 1e-12, "allgather bw %g %g", alg, bus);
  perf_coll_bw(&perf_coll_reducescatter, 250000, 4, 1e-3, 8, &alg, &bus);
  EXPECT(fabs(alg - 8.0) < 1e-12 && fabs(bus - 7.0) < 1e-12, "reducescatter bw %g %g", alg, bus);
  perf_coll_bw(&perf_coll_allreduce, 1000, 4, 1e-6, 1, &alg, &bus);
  EXPECT(bus == 0.0 && alg > 0, "world size 1: no bus bandwidth");
}

static void test_format(void) {
  char s[16];
  FILE* f;
  size_t len;
  char* buf;
  perf_fmt_num(12.345, 7, s);
  EXPECT(strcmp(s, "  12.35") == 0, "'%s'", s);
  perf_fmt_num(123456.7, 7, s);
  EXPECT(strcmp(s, " 123457") == 0, "'%s'", s);
  perf_fmt_num(12345.67, 7, s);
  EXPECT(strcmp(s, "12345.7") == 0, "'%s'", s);
  perf_fmt_num(1e12, 7, s);
  EXPECT(strcmp(s, "1.0e+12") == 0, "'%s'", s);
  perf_fmt_num(1e12, 6, s);
  EXPECT(strcmp(s, " 1e+12") == 0, "'%s'", s);
  perf_fmt_num(0.0, 6, s);
  EXPECT(strcmp(s, "  0.00") == 0, "'%s'", s);

  f = capture(&buf, &len);
  perf_print_row_start(f, 8, 2, "float", "sum", -1);
  perf_print_row_half(f, 10.5, 0.00076, 0.0, 1, 0);
  perf_print_row_half(f, 9.25, 0.00086, 0.0, 1, 3);
  perf_print_row_end(f);
  perf_print_row_start(f, 1073741824, 268435456, "bfloat16", "mulsum", -1);
  perf_print_row_half(f, 4321.5, 248.47, 434.82, 0, 0);
  perf_print_row_half(f, 4300.25, 249.7, 436.9, 0, 0);
  perf_print_row_end(f);
  fclose(f);
  EXPECT(strcmp(buf,
                "           8             2     float     sum      -1    10.50    0.00    0.00       0     9.25    0.00    0.00       3\n"
                "  1073741824     268435456  bfloat16  mulsum      -1  4321.50  248.47  434.82    N/A  4300.25  249.70  436.90    N/A\n") == 0,
         "rows:\n%s", buf);
  free(buf);

  f = capture(&buf, &len);
  perf_print_table_header(f, 0);
  fclose(f);
  EXPECT(strstr(buf, "#       size         count      type   redop    root     time   algbw   busbw  #wrong     time   algbw   busbw  #wrong \n") != NULL,
         "header:\n%s", buf);
  EXPECT(strstr(buf, "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)             (us)  (GB/s)  (GB/s)         \n") != NULL,
         "units:\n%s", buf);
  free(buf);

  f = capture(&buf, &len);
  perf_print_footer(f, "all_reduce_perf", 0, 12.5, -1.0, NULL, "");
  fclose(f);
  EXPECT(strcmp(buf, "# Out of bounds values : 0 OK\n# Avg bus bandwidth    : 12.5 \n#\n"
                     "# Collective test concluded: all_reduce_perf\n#\n\n") == 0,
         "footer:\n%s", buf);
  free(buf);

  f = capture(&buf, &len);
  perf_print_footer(f, "x", 2, 1.0, 10.0, "Initialization 1.00 KB", "boom");
  fclose(f);
  EXPECT(strstr(buf, "# Out of bounds values : 2 FAILED\n") && strstr(buf, ": 1 FAILED\n") &&
             strstr(buf, "# GPU memory usage     : Initialization 1.00 KB\n") &&
             strstr(buf, "# error: boom\n"),
         "failing footer:\n%s", buf);
  free(buf);

  f = capture(&buf, &len);
  perf_print_algorithm(f, "oneshot", 8);
  fclose(f);
  EXPECT(strcmp(buf, "# snapccl algorithm: oneshot from 8 B\n") == 0, "'%s'", buf);
  free(buf);

  perf_fmt_mem(1536, s, sizeof(s));
  EXPECT(strcmp(s, "1.50 KB") == 0, "'%s'", s);
  perf_fmt_mem((int64_t)300 << 20, s, sizeof(s));
  EXPECT(strcmp(s, "300 MB") == 0, "'%s'", s);
}

static void test_codec(void) {
  EXPECT(perf_encode(PERF_HALF, 1.0) == 0x3C00, "half 1");
  EXPECT(perf_encode(PERF_HALF, -2.0) == 0xC000, "half -2");
  EXPECT(perf_encode(PERF_HALF, 0.125) == 0x3000, "half 1/8");
  EXPECT(perf_encode(PERF_HALF, 65504.0) == 0x7BFF, "half max");
  EXPECT(perf_encode(PERF_HALF, ldexp(1.0, -24)) == 0x0001, "half min subnormal");
  EXPECT(perf_encode(PERF_HALF, 1.0 + ldexp(1.0, -11)) == 0x3C00, "half tie to even");
  EXPECT(perf_encode(PERF_HALF, 1.0 + 3 * ldexp(1.0, -11)) == 0x3C02, "half tie up to even");
  EXPECT(perf_float_is_nan(PERF_HALF, perf_encode(PERF_HALF, 65536.0)), "half overflow -> NaN");
  EXPECT(perf_encode(PERF_BF16, 1.0) == 0x3F80, "bf16 1");
  EXPECT(perf_encode(PERF_BF16, -3.0) == 0xC040, "bf16 -3");
  EXPECT(perf_encode(PERF_FLOAT, 1.0) == 0x3F800000, "float 1");
  EXPECT(perf_encode(PERF_FLOAT, -0.375) == 0xBEC00000, "float -0.375");
  EXPECT(perf_encode(PERF_DOUBLE, 1.0) == 0x3FF0000000000000ull, "double 1");
  EXPECT(perf_encode(PERF_F8E4M3, 1.0) == 0x38, "e4m3 1");
  EXPECT(perf_encode(PERF_F8E4M3, 16.0) == 0x58, "e4m3 16");
  EXPECT(perf_encode(PERF_F8E4M3, 448.0) == 0x7E, "e4m3 max");
  EXPECT(perf_encode(PERF_F8E4M3, -0.125) == 0xA0, "e4m3 -1/8");
  EXPECT(perf_encode(PERF_F8E4M3, ldexp(1.0, -9)) == 0x01, "e4m3 min subnormal");
  EXPECT(perf_float_is_nan(PERF_F8E4M3, perf_encode(PERF_F8E4M3, 480.0)), "e4m3 overflow");
  EXPECT(perf_encode(PERF_F8E5M2, 1.0) == 0x3C, "e5m2 1");
  EXPECT(perf_encode(PERF_F8E5M2, 8.0) == 0x48, "e5m2 8");
  EXPECT(perf_encode(PERF_F8E5M2, 57344.0) == 0x7B, "e5m2 max");
  EXPECT(perf_encode(PERF_F8E5M2, ldexp(1.0, -16)) == 0x01, "e5m2 min subnormal");
  EXPECT(perf_encode(PERF_INT8, -1.0) == 0xFF && perf_encode(PERF_INT32, -2.0) == 0xFFFFFFFEu,
         "signed ints");
  EXPECT(perf_encode(PERF_UINT64, 9223372036854775808.0) == 0x8000000000000000ull, "uint64 2^63");
  EXPECT(perf_bits_match(PERF_FLOAT, 0x3F800001, 0x3F800000, 1) &&
             !perf_bits_match(PERF_FLOAT, 0x3F800001, 0x3F800000, 0),
         "ulp tolerance");
  EXPECT(perf_bits_match(PERF_HALF, 0x8000, 0x0000, 0), "-0 == +0");
  EXPECT(!perf_bits_match(PERF_HALF, 0x7E00, 0x7E00, 5), "NaN never matches");
  EXPECT(perf_bits_match(PERF_HALF, 0x0001, 0x8001, 2) && !perf_bits_match(PERF_HALF, 0x0001, 0x8001, 1),
         "ulps across zero");
}

/* Every half / bf16 / fp8 bit pattern decodes and re-encodes to itself. */
static void test_codec_roundtrip(void) {
  static const int types[] = {PERF_HALF, PERF_BF16, PERF_F8E4M3, PERF_F8E5M2};
  size_t t;
  for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
    int dt = types[t], bits = 8 * perf_dt_size(dt), bad = 0;
    uint64_t b;
    for (b = 0; b < ((uint64_t)1 << bits); b++) {
      double v = perf_decode_float(dt, b);
      if (perf_float_is_nan(dt, b) || isinf(v)) continue;
      if (perf_encode(dt, v) != b) bad++;
    }
    EXPECT(bad == 0, "%s: %d patterns do not round-trip", perf_type_names[dt], bad);
  }
}

/* The element type's arithmetic on exact doubles: the result rounded to the type
 * (integers: the type's wrap-around, flagged since it must never happen). */
static double to_type(int dt, double v, int* overflow) {
  if (perf_dt_kind(dt) == PERF_KIND_FLOAT) {
    uint64_t b = perf_encode(dt, v);
    if (perf_float_is_nan(dt, b)) *overflow = 1;
    return perf_decode_float(dt, b);
  }
  {
    double lo = perf_dt_kind(dt) == PERF_KIND_SINT ? -ldexp(1.0, 8 * perf_dt_size(dt) - 1) : 0.0;
    double hi = perf_dt_kind(dt) == PERF_KIND_SINT ? ldexp(1.0, 8 * perf_dt_size(dt) - 1)
                                                   : ldexp(1.0, 8 * perf_dt_size(dt));
    if (v < lo || v >= hi || v != floor(v)) *overflow = 1;
    return v;
  }
}

static double combine(int dt, int op, double a, double b, int* overflow) {
  switch (op) {
  case PERF_OP_PROD: return to_type(dt, a * b, overflow);
  case PERF_OP_MAX: return a > b ? a : b;
  case PERF_OP_MIN: return a < b ? a : b;
  default: return to_type(dt, a + b, overflow);
  }
}

/* Reduces v[0..n) (already premultiplied) in the element type, sequentially from a
 * starting point: order 0 forward, 1 backward, 3 starting half-way round. */
static double reduce_in_type(int dt, int op, const double* v, int n, int order, int* overflow) {
  double acc = v[order == 1 ? n - 1 : order == 3 ? n / 2 : 0];
  int i;
  for (i = 1; i < n; i++) {
    int k = order == 1 ? n - 1 - i : order == 3 ? (n / 2 + i) % n : i;
    acc = combine(dt, op, acc, v[k], overflow);
  }
  return acc;
}

/* Pairwise tree reduction in the element type (order 2). */
static double tree_in_type(int dt, int op, const double* v, int n, int* overflow) {
  double a[128], b[128];
  int m = n, i;
  memcpy(a, v, (size_t)n * sizeof(double));
  while (m > 1) {
    int k = 0;
    for (i = 0; i + 1 < m; i += 2) b[k++] = combine(dt, op, a[i], a[i + 1], overflow);
    if (m & 1) b[k++] = a[m - 1];
    memcpy(a, b, (size_t)k * sizeof(double));
    m = k;
  }
  return a[0];
}

static int ulps_between(int dt, double a, double b) {
  int64_t x = perf_float_ordinal(dt, perf_encode(dt, a)), y = perf_float_ordinal(dt, perf_encode(dt, b));
  return (int)(x > y ? x - y : y - x);
}

/* The scheme's promise, for one (type, op, nranks): inputs and results representable,
 * every reduction order exact (or within tol_ulps where avg needs a rounded 1/n), the
 * poison pattern never a valid result, and not everything zero. */
static void check_scheme(int dt, int op, int n) {
  const struct perf_scheme s = perf_scheme_make(dt, op, n);
  const uint64_t seeds[] = {1, 2, 0x5eed, 987654321};
  const uint64_t poison = (perf_poison_byte(dt) * 0x0101010101010101ull) &
                          (perf_dt_size(dt) == 8 ? ~0ull : (((uint64_t)1 << (8 * perf_dt_size(dt))) - 1));
  int nonzero = 0, bad = 0, elems = 0;
  size_t si;
  for (si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
    uint64_t idx;
    for (idx = 0; idx < 400; idx++) {
      double in[128], pre[128];
      double want = perf_reduced(&s, idx, seeds[si]);
      uint64_t want_bits = perf_encode(dt, want);
      int overflow = 0, r, order;
      elems++;
      if (perf_dt_kind(dt) == PERF_KIND_FLOAT && perf_float_is_nan(dt, want_bits)) bad++;
      if (to_type(dt, want, &overflow) != want || overflow) {
        if (bad++ < 3)
          fprintf(stderr, "  %s %s n=%d idx=%llu: result %g not exact\n", perf_type_names[dt],
                  perf_op_names[op], n, (unsigned long long)idx, want);
        continue;
      }
      if (want_bits == poison) bad++;
      if (want != 0) nonzero++;
      for (r = 0; r < n; r++) {
        in[r] = perf_input(&s, r, idx, seeds[si]);
        if (to_type(dt, in[r], &overflow) != in[r]) overflow = 1;
        pre[r] = op == PERF_OP_MULSUM ? to_type(dt, in[r] * perf_mulsum_scalar(r), &overflow) : in[r];
      }
      if (overflow) {
        if (bad++ < 3)
          fprintf(stderr, "  %s %s n=%d idx=%llu: input not exact\n", perf_type_names[dt],
                  perf_op_names[op], n, (unsigned long long)idx);
        continue;
      }
      for (order = 0; order < 4; order++) {
        double got;
        int ovf = 0;
        if (order == 2) {
          got = tree_in_type(dt, op == PERF_OP_AVG || op == PERF_OP_MULSUM ? PERF_OP_SUM : op, pre,
                             n, &ovf);
        } else {
          got = reduce_in_type(dt, op == PERF_OP_AVG || op == PERF_OP_MULSUM ? PERF_OP_SUM : op,
                               pre, n, order, &ovf);
        }
        if (op == PERF_OP_AVG) {
          /* Sum, then divide: integers truncate, floats round once. */
          got = perf_dt_kind(dt) == PERF_KIND_FLOAT ? to_type(dt, got / n, &ovf) : trunc(got / n);
        }
        if (ovf || perf_encode(dt, got) != want_bits) {
          if (bad++ < 3)
            fprintf(stderr, "  %s %s n=%d idx=%llu order %d: got %g want %g%s\n",
                    perf_type_names[dt], perf_op_names[op], n, (unsigned long long)idx, order, got,
                    want, ovf ? " (overflow)" : "");
        }
      }
      if (op == PERF_OP_AVG && perf_dt_kind(dt) == PERF_KIND_FLOAT) {
        /* Premultiply by 1/n rounded to the type (what NCCL does for float avg), sum. */
        double c = to_type(dt, 1.0 / n, &overflow), scaled[128] = {0}, got;
        int ovf = 0;
        for (r = 0; r < n; r++) scaled[r] = to_type(dt, in[r] * c, &ovf);
        got = reduce_in_type(dt, PERF_OP_SUM, scaled, n, 0, &ovf);
        if (ovf || ulps_between(dt, got, want) > (int)s.tol_ulps) {
          if (bad++ < 3)
            fprintf(stderr, "  %s avg n=%d idx=%llu premul: got %g want %g (%d ulps > %u)\n",
                    perf_type_names[dt], n, (unsigned long long)idx, got, want,
                    ulps_between(dt, got, want), s.tol_ulps);
        }
      }
    }
  }
  EXPECT(bad == 0, "%s %s n=%d: %d problems", perf_type_names[dt], perf_op_names[op], n, bad);
  /* A scheme of zeros proves nothing; only fp8 avg over many ranks is allowed to be. */
  EXPECT(nonzero > 0 || s.contrib == 0 || op == PERF_OP_PROD, "%s %s n=%d: all results zero",
         perf_type_names[dt], perf_op_names[op], n);
  EXPECT(op != PERF_OP_AVG || perf_dt_kind(dt) != PERF_KIND_FLOAT || perf_is_pow2(n) ||
             s.tol_ulps > 0,
         "avg tolerance");
  (void)elems;
}

static void test_scheme(void) {
  static const int ranks[] = {1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 24, 32, 64, 72, 128};
  size_t ri;
  int dt, op;
  for (dt = 0; dt < PERF_NUM_TYPES; dt++)
    for (op = 0; op < PERF_OP_NONE; op++)
      for (ri = 0; ri < sizeof(ranks) / sizeof(ranks[0]); ri++) check_scheme(dt, op, ranks[ri]);
  /* AllGather inputs: exact, never poison, and not constant. */
  for (dt = 0; dt < PERF_NUM_TYPES; dt++) {
    const struct perf_scheme s = perf_scheme_make(dt, PERF_OP_NONE, 8);
    int r, distinct = 0, bad = 0, ovf = 0;
    uint64_t i;
    double first = perf_input(&s, 0, 0, 7);
    for (r = 0; r < 8; r++)
      for (i = 0; i < 256; i++) {
        double v = perf_input(&s, r, i, 7);
        if (to_type(dt, v, &ovf) != v || ovf) bad++;
        if (v != first) distinct = 1;
      }
    EXPECT(bad == 0 && distinct, "%s allgather inputs", perf_type_names[dt]);
  }
  /* Different seeds give different data (a stale result cannot pass a later check). */
  {
    const struct perf_scheme s = perf_scheme_make(PERF_FLOAT, PERF_OP_SUM, 4);
    int same = 0;
    uint64_t i;
    for (i = 0; i < 1000; i++) same += perf_reduced(&s, i, 1) == perf_reduced(&s, i, 2);
    EXPECT(same < 200, "seeds 1 and 2 agree on %d of 1000 elements", same);
  }
}

static void test_team_combine(void) {
  const double v[4] = {3.0, 1.0, 4.0, 2.0};
  EXPECT(perf_combine_double(v, 4, PERF_AVG_RANK0) == 3.0, "rank0");
  EXPECT(perf_combine_double(v, 4, PERF_AVG_MIN) == 1.0, "min");
  EXPECT(perf_combine_double(v, 4, PERF_AVG_MAX) == 4.0, "max");
  EXPECT(perf_combine_double(v, 4, PERF_AVG_MEAN) == 10.0, "mean (sum before division)");
  {
    struct perf_team t;
    double d = 5.0;
    int64_t w = 7;
    EXPECT(perf_team_init(&t, 1) == 0, "team init");
    EXPECT(perf_team_allreduce_double(&t, 0, &d, PERF_AVG_MEAN) == 0 && d == 5.0, "1-thread mean");
    EXPECT(perf_team_allreduce_i64(&t, 0, &w, PERF_AVG_SUM) == 0 && w == 7, "1-thread sum");
    EXPECT(perf_team_barrier(&t, 0) == 0, "barrier");
    perf_team_destroy(&t);
  }
}

int main(void) {
  test_sizes();
  test_args();
  test_names();
  test_counts_bw();
  test_format();
  test_codec();
  test_codec_roundtrip();
  test_scheme();
  test_team_combine();
  if (failures) {
    fprintf(stderr, "perf_selftest: %d failure(s)\n", failures);
    return 1;
  }
  printf("perf_selftest: all checks passed\n");
  return 0;
}
