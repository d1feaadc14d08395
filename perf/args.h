/* Command line of the perf binaries: nccl-tests' flags, defaults and meanings. */
#ifndef PERF_ARGS_H_
#define PERF_ARGS_H_

#include <stddef.h>
#include <stdio.h>

struct perf_opts {
  int nthreads;        /* -t  threads per process */
  int ngpus;           /* -g  GPUs (ranks) per thread */
  size_t minbytes;     /* -b */
  size_t maxbytes;     /* -e */
  size_t stepbytes;    /* -i  used when stepfactor <= 1 */
  size_t stepfactor;   /* -f */
  int iters;           /* -n */
  int agg_iters;       /* -m  collectives aggregated in one group per iteration */
  int warmup_iters;    /* -w */
  int run_cycles;      /* -N  0 = forever */
  int parallel_init;   /* -p  each thread creates its own communicators */
  int datacheck;       /* -c  checked iterations per size (0: no check) */
  int op;              /* -o  PERF_OP_* or -1 (all) */
  int dtype;           /* -d  PERF_* type or -1 (all) */
  int root;            /* -r  printed only: these collectives have no root */
  int blocking;        /* -z  0, 1 sync+barrier, 2 sync, 3 sync+barrier per outer iter */
  int stream_null;     /* -y  use the legacy default stream */
  int timeout;         /* -T  seconds; 0 = none */
  int graph_launches;  /* -G  capture the iterations in a CUDA graph, launch it this often */
  int report_cputime;  /* -C  report host time of the issue loop instead of wall time */
  int average;         /* -a  0 rank 0, 1 mean, 2 min, 3 max over ranks */
  int local_register;  /* -R  0 none, 1 ncclCommRegister, 2 symmetric window */
  int cta_policy;      /* -x  ncclConfig_t.CTAPolicy, -1 = leave unset */
  int memory_report;   /* -M */
  int unalign;         /* -u  offset buffers by this many elements */
  int dry_run;         /* --dry_run: print what would run, touch no GPU */
  char notes[512];     /* options accepted but ignored, reported in the header */
};

void perf_opts_default(struct perf_opts* o);

/* Parses argv into o. Returns 0 to run, 1 when help was printed (exit 0), -1 on a
 * bad command line (message on err). Resets getopt, so it may be called repeatedly. */
int perf_parse_args(int argc, char** argv, struct perf_opts* o, FILE* out, FILE* err);

/* nccl-tests' size syntax: a number with an optional K, M or G suffix (binary units).
 * Returns -1 when s is not a size. */
int perf_parse_size(const char* s, size_t* out);

void perf_usage(FILE* f, const char* prog);

#endif
