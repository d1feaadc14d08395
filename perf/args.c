/* Command-line parsing (args.h), with nccl-tests' option letters and defaults. */
#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "coll.h"
#include "datagen.h"

void perf_opts_default(struct perf_opts* o) {
  memset(o, 0, sizeof(*o));
  o->nthreads = 1;
  o->ngpus = 1;
  o->minbytes = 32u << 20;
  o->maxbytes = 32u << 20;
  o->stepbytes = 1u << 20;
  o->stepfactor = 1;
  o->iters = 20;
  o->agg_iters = 1;
  o->warmup_iters = 1;
  o->run_cycles = 1;
  o->datacheck = 1;
  o->op = PERF_OP_SUM;
  o->dtype = PERF_FLOAT;
  o->average = 1;
  o->cta_policy = -1;
}

int perf_parse_size(const char* s, size_t* out) {
  char* end;
  double v, unit = 1.0;
  errno = 0;
  v = strtod(s, &end);
  /* !(v >= 0) also refuses "nan", which no comparison below would catch and whose
   * conversion to size_t is undefined. */
  if (end == s || errno != 0 || !(v >= 0)) return -1;
  while (isspace((unsigned char)*end)) end++;
  switch (*end) {
  case 'G': case 'g': unit = 1024.0 * 1024.0 * 1024.0; end++; break;
  case 'M': case 'm': unit = 1024.0 * 1024.0; end++; break;
  case 'K': case 'k': unit = 1024.0; end++; break;
  case '\0': break;
  default: return -1;
  }
  if (*end != '\0') return -1;
  v *= unit;
  if (v >= 18446744073709551616.0) return -1; /* 2^64 */
  *out = (size_t)v;
  return 0;
}

/* A whole integer in [lo, hi] (any base strtol accepts, as nccl-tests does). */
static int parse_int(const char* s, int lo, int hi, int* out) {
  char* end;
  long v;
  errno = 0;
  v = strtol(s, &end, 0);
  if (end == s || *end != '\0' || errno != 0 || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

void perf_usage(FILE* f, const char* prog) {
  fprintf(f,
          "USAGE: %s [options]   (nccl-tests' flags; sizes take K/M/G suffixes)\n"
          "  -t,--nthreads <n>        threads per process (default 1)\n"
          "  -g,--ngpus <n>           GPUs, i.e. ranks, per thread (default 1)\n"
          "  -b,--minbytes <size>     smallest size (default 32M)\n"
          "  -e,--maxbytes <size>     largest size (default 32M)\n"
          "  -i,--stepbytes <size>    size increment when -f is 1 (default 1M)\n"
          "  -f,--stepfactor <n>      size multiplier (default 1: use -i)\n"
          "  -n,--iters <n>           timed iterations per size (default 20)\n"
          "  -m,--agg_iters <n>       collectives per iteration, in one group (default 1)\n"
          "  -w,--warmup_iters <n>    warm-up iterations per size (default 1)\n"
          "  -N,--run_cycles <n>      repeat the size sweep n times, 0 = forever (default 1)\n"
          "  -p,--parallel_init <0/1> each thread creates its own communicators\n"
          "  -c,--check <n>           checked iterations per size, 0 = no check (default 1)\n"
          "  -o,--op <sum/prod/min/max/avg/mulsum/all>   reduction (default sum)\n"
          "  -d,--datatype <type/all> int8 uint8 int32 uint32 int64 uint64 half float double\n"
          "                           bfloat16 f8e4m3 f8e5m2 (default float)\n"
          "  -r,--root <n>            root rank (printed only: these collectives have none)\n"
          "  -z,--blocking <0-3>      1: sync+barrier after each collective, 2: sync only,\n"
          "                           3: sync+barrier after each iteration, barrier not timed\n"
          "  -y,--stream_null <0/1>   use the default stream\n"
          "  -T,--timeout <s>         abort a collective that takes longer (default 0: never)\n"
          "  -G,--cudagraph <n>       capture the iterations in a CUDA graph, launch it n times\n"
          "  -C,--report_cputime <0/1> report host time of the issue loop instead\n"
          "  -a,--average <0-3>       time over ranks: 0 rank 0, 1 mean, 2 min, 3 max (default 1)\n"
          "  -R,--local_register <0-2> 1: ncclCommRegister buffers, 2: symmetric windows\n"
          "  -x,--cta_policy <n>      ncclConfig_t.CTAPolicy for the communicators\n"
          "  -M,--memory <0/1>        report GPU memory use\n"
          "  -u,--unalign <n>         offset buffers by n elements\n"
          "  -I -K -S -J -D -V        accepted for compatibility, ignored\n"
          "  --dry_run                print the configuration and table layout, use no GPU\n"
          "  -h,--help\n"
          "Environment: SNAPCCL_SHARED_GPU=1 puts rank i on GPU i %% device count;\n"
          "NCCL_TESTS_DEVICE=<n> starts this process's GPUs at device n;\n"
          "NCCL_TESTS_MIN_BW=<GB/s> fails the run below 90%% of that average bus bandwidth;\n"
          "SNAPCCL_PERF_ALLOC=cuda allocates buffers with cudaMalloc instead of ncclMemAlloc.\n",
          prog);
}

/* Remembers an accepted-but-ignored option for the header ("-J -I"). */
static void add_note(struct perf_opts* o, int c) {
  char tag[3] = {'-', (char)c, '\0'};
  size_t len = strlen(o->notes);
  if (strstr(o->notes, tag) != NULL || len + 4 > sizeof(o->notes)) return;
  if (len) strcat(o->notes, " ");
  strcat(o->notes, tag);
}

int perf_parse_args(int argc, char** argv, struct perf_opts* o, FILE* out, FILE* err) {
  static const struct option longopts[] = {
    {"nthreads", required_argument, 0, 't'},      {"ngpus", required_argument, 0, 'g'},
    {"minbytes", required_argument, 0, 'b'},      {"maxbytes", required_argument, 0, 'e'},
    {"stepbytes", required_argument, 0, 'i'},     {"stepfactor", required_argument, 0, 'f'},
    {"iters", required_argument, 0, 'n'},         {"agg_iters", required_argument, 0, 'm'},
    {"warmup_iters", required_argument, 0, 'w'},  {"run_cycles", required_argument, 0, 'N'},
    {"parallel_init", required_argument, 0, 'p'}, {"check", required_argument, 0, 'c'},
    {"op", required_argument, 0, 'o'},            {"datatype", required_argument, 0, 'd'},
    {"root", required_argument, 0, 'r'},          {"blocking", required_argument, 0, 'z'},
    {"stream_null", required_argument, 0, 'y'},   {"timeout", required_argument, 0, 'T'},
    {"cudagraph", required_argument, 0, 'G'},     {"report_cputime", required_argument, 0, 'C'},
    {"report_timestamps", required_argument, 0, 'S'},
    {"output_file", required_argument, 0, 'J'},   {"average", required_argument, 0, 'a'},
    {"local_register", required_argument, 0, 'R'}, {"cta_policy", required_argument, 0, 'x'},
    {"device_implementation", required_argument, 0, 'D'},
    {"device_cta_count", required_argument, 0, 'V'}, {"memory", required_argument, 0, 'M'},
    {"unalign", required_argument, 0, 'u'},       {"per_iter_timing", required_argument, 0, 'I'},
    {"per_iter_skip", required_argument, 0, 'K'}, {"dry_run", no_argument, 0, 1},
    {"help", no_argument, 0, 'h'},                {0, 0, 0, 0}};
  const char* prog = argc > 0 && argv[0] ? argv[0] : "perf";
  const char* slash = strrchr(prog, '/');
  int c, bad = 0;
  if (slash) prog = slash + 1;
  optind = 0; /* glibc: 0 re-initialises getopt completely */
  opterr = 0; /* we word the messages ourselves */
  while ((c = getopt_long(argc, argv, ":t:g:b:e:i:f:n:m:w:N:p:I:K:c:o:d:r:z:y:T:hG:C:a:R:x:D:V:J:S:M:u:",
                          longopts, NULL)) != -1) {
    int r = 0, v = 0;
    switch (c) {
    case 't': r = parse_int(optarg, 1, 1024, &o->nthreads); break;
    case 'g': r = parse_int(optarg, 1, 1024, &o->ngpus); break;
    case 'b': r = perf_parse_size(optarg, &o->minbytes); break;
    case 'e': r = perf_parse_size(optarg, &o->maxbytes); break;
    case 'i': r = perf_parse_size(optarg, &o->stepbytes); break;
    case 'f': r = parse_int(optarg, 0, INT_MAX, &v); o->stepfactor = (size_t)v; break;
    case 'n': r = parse_int(optarg, 1, INT_MAX, &o->iters); break;
    case 'm': r = parse_int(optarg, 1, INT_MAX, &o->agg_iters); break;
    case 'w': r = parse_int(optarg, 0, INT_MAX, &o->warmup_iters); break;
    case 'N': r = parse_int(optarg, 0, INT_MAX, &o->run_cycles); break;
    case 'p': r = parse_int(optarg, 0, 1, &o->parallel_init); break;
    case 'c': r = parse_int(optarg, 0, INT_MAX, &o->datacheck); break;
    case 'o':
      o->op = perf_op_from_name(optarg);
      r = o->op == -2 ? -1 : 0;
      break;
    case 'd':
      o->dtype = perf_type_from_name(optarg);
      r = o->dtype == -2 ? -1 : 0;
      break;
    case 'r': r = parse_int(optarg, INT_MIN, INT_MAX, &o->root); break;
    case 'z': r = parse_int(optarg, 0, 3, &o->blocking); break;
    case 'y': r = parse_int(optarg, 0, 1, &o->stream_null); break;
    case 'T': r = parse_int(optarg, 0, INT_MAX, &o->timeout); break;
    case 'G': r = parse_int(optarg, 0, INT_MAX, &o->graph_launches); break;
    case 'C': r = parse_int(optarg, 0, 1, &o->report_cputime); break;
    case 'a': r = parse_int(optarg, 0, 3, &o->average); break;
    case 'R': r = parse_int(optarg, 0, 2, &o->local_register); break;
    case 'x': r = parse_int(optarg, 0, INT_MAX, &o->cta_policy); break;
    case 'M': r = parse_int(optarg, 0, 1, &o->memory_report); break;
    case 'u': r = parse_int(optarg, 0, 4096, &o->unalign); break;
    case 'I': case 'K': case 'S': case 'J': case 'D': case 'V': add_note(o, c); break;
    case 1: o->dry_run = 1; break;
    case 'h': perf_usage(out, prog); return 1;
    case ':':
      fprintf(err, "%s: option %s needs a value\n", prog, argv[optind - 1]);
      bad = 1;
      break;
    default:
      if (optopt)
        fprintf(err, "%s: unknown option -%c (-h lists them)\n", prog, optopt);
      else
        fprintf(err, "%s: unknown option %s (-h lists them)\n", prog, argv[optind - 1]);
      bad = 1;
      break;
    }
    if (r != 0) {
      fprintf(err, "%s: invalid value '%s' for -%c (-h lists the values)\n", prog, optarg, c);
      bad = 1;
    }
  }
  if (!bad && optind < argc) {
    fprintf(err, "%s: unexpected argument '%s'\n", prog, argv[optind]);
    bad = 1;
  }
  if (bad) return -1;
  if (o->minbytes > o->maxbytes) {
    fprintf(err, "%s: invalid sizes for 'minbytes' and 'maxbytes': %zu > %zu\n", prog,
            o->minbytes, o->maxbytes);
    return -1;
  }
  if (o->stepfactor > 1 && o->minbytes == 0) {
    fprintf(err, "%s: -b 0 with -f %zu would never grow; start at 1 byte or more\n", prog,
            o->stepfactor);
    return -1;
  }
  if (o->stepfactor <= 1 && o->stepbytes == 0 && o->minbytes < o->maxbytes) {
    fprintf(err, "%s: -i 0 with -f 1 would never grow\n", prog);
    return -1;
  }
  if (o->graph_launches > 0 && o->blocking != 0) {
    /* Waiting on a stream inside a capture is illegal, so nccl-tests' blocking modes and
     * graphs do not mix; graphs win, as in nccl-tests for -z 3. */
    fprintf(err, "%s: blocking mode (-z %d) is incompatible with CUDA graph mode (-G). "
            "Disabling.\n", prog, o->blocking);
    o->blocking = 0;
  }
  return 0;
}
