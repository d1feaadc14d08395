/* Process-level flow of a perf binary (perf.h): options, devices, the header, the
 * communicators, the threads, the footer. Launch models:
 *   one process driving -t threads x -g GPUs: ncclGetUniqueId + ncclCommInitRank of every
 *     rank inside one ncclGroupStart/End, every collective of a thread's ranks in a group;
 *   mpirun (the *_mpi binaries): one process per rank (or per -t x -g ranks), the
 *     ncclUniqueId broadcast with MPI.
 * Rank r of a process uses GPU (NCCL_TESTS_DEVICE or local_rank*ranks_per_process) + r,
 * wrapped modulo the device count when SNAPCCL_SHARED_GPU=1. */
#include "perf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "format.h"
#include "world.h"

/* Device-report bytes per process (nccl-tests: 2048). */
#define PERF_REPORT_BLOCK 8192

static const char* basename_of(const char* path) {
  const char* slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static int env_flag(const char* name) {
  const char* v = getenv(name);
  return v && strcmp(v, "1") == 0;
}

static unsigned needed_symbols(const struct perf_run* run) {
  unsigned needs = 0;
  if (run->coll->id == PERF_ALLREDUCE) needs |= PERF_NEED_ALLREDUCE;
  if (run->coll->id == PERF_ALLGATHER) needs |= PERF_NEED_ALLGATHER;
  if (run->coll->id == PERF_REDUCESCATTER) needs |= PERF_NEED_REDUCESCATTER;
  if (run->coll->reduces && (run->o.op == PERF_OP_MULSUM || run->o.op == -1))
    needs |= PERF_NEED_PREMULSUM;
  if (run->o.local_register == 1) needs |= PERF_NEED_REGISTER;
  if (run->o.local_register == 2) needs |= PERF_NEED_WINDOW;
  if (run->o.cta_policy >= 0) needs |= PERF_NEED_CONFIG;
  if (!run->use_cuda_malloc) needs |= PERF_NEED_MEMALLOC;
  return needs;
}

/* Types and ops of the sweep; fp8 only where every GPU is Hopper or newer (as in
 * nccl-tests: older GPUs have no fp8 reductions). */
static void choose_sweep(struct perf_run* run, int min_arch) {
  int i;
  run->ntypes = run->nops = 0;
  if (run->o.dtype >= 0) {
    run->types[run->ntypes++] = run->o.dtype;
  } else {
    for (i = 0; i < PERF_NUM_TYPES; i++) {
      if ((i == PERF_F8E4M3 || i == PERF_F8E5M2) && min_arch < 900) continue;
      run->types[run->ntypes++] = i;
    }
  }
  if (!run->coll->reduces)
    run->ops[run->nops++] = PERF_OP_NONE;
  else if (run->o.op >= 0)
    run->ops[run->nops++] = run->o.op;
  else
    for (i = 0; i < PERF_OP_NONE; i++) run->ops[run->nops++] = i;
}

static void print_header(struct perf_run* run) {
  char lib[1024];
  perf_library_describe(lib, sizeof(lib));
  perf_print_config(run->out, run->prog, &run->o, NCCL_VERSION_CODE, perf_library_version(), lib);
}

/* --dry_run: everything that needs no GPU, so that options and layout can be checked
 * anywhere. Rows carry the sizes and counts that would run; times are zero. */
static int dry_run(struct perf_run* run) {
  size_t size;
  int t, k;
  run->nranks = run->o.nthreads * run->o.ngpus;
  run->maxbytes = run->o.maxbytes;
  choose_sweep(run, 900);
  print_header(run);
  fprintf(run->out, "# dry run: sizes, counts and layout only; no GPU used, times are zero\n");
  fprintf(run->out, "# Using devices\n");
  perf_print_table_header(run->out, run->o.report_cputime);
  for (t = 0; t < run->ntypes; t++) {
    for (k = 0; k < run->nops; k++) {
      size_t elt = (size_t)perf_dt_size(run->types[t]);
      for (size = run->o.minbytes; size <= run->maxbytes;) {
        struct perf_counts c;
        size_t next = run->o.stepfactor > 1 ? size * run->o.stepfactor : size + run->o.stepbytes;
        perf_coll_counts(run->coll, size / elt, elt, run->nranks, &c);
        perf_print_row_start(run->out, (c.send > c.recv ? c.send : c.recv) * elt, c.param,
                             perf_type_names[run->types[t]], perf_op_names[run->ops[k]], -1);
        perf_print_row_half(run->out, 0, 0, 0, 0, 0);
        perf_print_row_half(run->out, 0, 0, 0, 0, 0);
        perf_print_row_end(run->out);
        if (next <= size) break;
        size = next;
      }
    }
  }
  perf_print_footer(run->out, run->prog, 0, 0.0, -1.0, NULL, "");
  return 0;
}

/* GPU of each local rank; reports and fails when one does not exist. */
static int pick_devices(struct perf_run* run, int* gpus, int nlocal) {
  const char* env = getenv("NCCL_TESTS_DEVICE");
  int shared = env_flag("SNAPCCL_SHARED_GPU");
  int count = 0, first, i;
  PERF_CUDA(cudaGetDeviceCount(&count));
  first = env ? atoi(env) : perf_world_local_rank() * nlocal;
  for (i = 0; i < nlocal; i++) {
    gpus[i] = first + i;
    if (shared) gpus[i] %= count;
    if (gpus[i] < 0 || gpus[i] >= count) {
      perf_report("Invalid number of GPUs: %d requested but only %d were found "
                  "(process %d, local rank %d; SNAPCCL_SHARED_GPU=1 shares GPUs between ranks)",
                  first + nlocal, count, run->proc, perf_world_local_rank());
      return -1;
    }
  }
  return 0;
}

/* "# Using devices" and one line per rank, in rank order over all processes. Also
 * returns the smallest GPU memory and compute capability (whole world). */
static int report_devices(struct perf_run* run, const int* gpus, int nlocal, size_t* min_mem,
                          int* min_arch) {
  char* block = calloc(1, PERF_REPORT_BLOCK);
  char* all = run->is_main ? calloc((size_t)run->nprocs, PERF_REPORT_BLOCK) : NULL;
  char host[256];
  size_t used = 0;
  double mem = 1e300, arch = 1e9;
  int i, rc = -1;
  if (!block || (run->is_main && !all)) {
    perf_report("out of host memory");
    goto out;
  }
  perf_hostname(host, sizeof(host));
  for (i = 0; i < nlocal; i++) {
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, gpus[i]) != cudaSuccess) {
      perf_report("cudaGetDeviceProperties(%d) failed", gpus[i]);
      goto out;
    }
    if (used < PERF_REPORT_BLOCK) {
      int n = perf_format_device_line(block + used, PERF_REPORT_BLOCK - used,
                                      run->proc * nlocal + i, (int)getpid(), host, gpus[i],
                                      prop.pciDomainID, prop.pciBusID, prop.pciDeviceID, prop.name);
      if (n > 0) used += (size_t)n;
    }
    if ((double)prop.totalGlobalMem < mem) mem = (double)prop.totalGlobalMem;
    if (prop.major * 100.0 + prop.minor * 10.0 < arch) arch = prop.major * 100.0 + prop.minor * 10.0;
  }
  block[PERF_REPORT_BLOCK - 1] = '\0';
  if (perf_world_gather(block, PERF_REPORT_BLOCK, all) != 0) goto out;
  if (perf_world_allreduce_double(&mem, PERF_RED_MIN) != 0) goto out;
  if (perf_world_allreduce_double(&arch, PERF_RED_MIN) != 0) goto out;
  if (run->is_main) {
    fprintf(run->out, "# Using devices\n");
    for (i = 0; i < run->nprocs; i++) fputs(all + (size_t)i * PERF_REPORT_BLOCK, run->out);
  }
  *min_mem = (size_t)mem;
  *min_arch = (int)arch;
  rc = 0;
out:
  free(block);
  free(all);
  return rc;
}

/* nccl-tests' memory rule: keep 1 GiB per 16 GiB (at most 4 GiB) plus 1 GiB free; the
 * rest holds the send and receive buffers of every rank that shares a GPU. */
static void limit_sizes(struct perf_run* run, size_t min_mem, int ranks_per_gpu) {
  const size_t gib = (size_t)1 << 30;
  size_t reserve = (min_mem + 16 * gib - 1) / (16 * gib) * gib;
  size_t avail, cap;
  if (reserve > 4 * gib) reserve = 4 * gib;
  avail = min_mem > reserve + gib ? min_mem - reserve - gib : 0;
  cap = avail / (2 * (size_t)ranks_per_gpu);
  run->maxbytes = run->o.maxbytes;
  if (run->maxbytes > cap) {
    run->maxbytes = cap;
    if (run->o.minbytes > run->maxbytes) run->o.minbytes = run->maxbytes;
    if (run->is_main)
      fprintf(run->out, "#\n# Reducing maxBytes to %zu due to memory limitation\n", run->maxbytes);
  }
  run->bufbytes = run->maxbytes + 8 * (size_t)run->o.unalign + PERF_GUARD_BYTES;
}

struct perf_locals {
  int* gpus;
  ncclComm_t* comms;
  cudaStream_t* streams;
  char** send;
  char** recv;
  void** send_reg;
  void** recv_reg;
  unsigned long long** wrong;
};

static int alloc_locals(struct perf_locals* l, int n) {
  l->gpus = calloc((size_t)n, sizeof(*l->gpus));
  l->comms = calloc((size_t)n, sizeof(*l->comms));
  l->streams = calloc((size_t)n, sizeof(*l->streams));
  l->send = calloc((size_t)n, sizeof(*l->send));
  l->recv = calloc((size_t)n, sizeof(*l->recv));
  l->send_reg = calloc((size_t)n, sizeof(*l->send_reg));
  l->recv_reg = calloc((size_t)n, sizeof(*l->recv_reg));
  l->wrong = calloc((size_t)n, sizeof(*l->wrong));
  if (!l->gpus || !l->comms || !l->streams || !l->send || !l->recv || !l->send_reg ||
      !l->recv_reg || !l->wrong) {
    perf_report("out of host memory");
    return -1;
  }
  return 0;
}

static void free_locals(struct perf_locals* l) {
  free(l->gpus);
  free(l->comms);
  free(l->streams);
  free(l->send);
  free(l->recv);
  free(l->send_reg);
  free(l->recv_reg);
  free(l->wrong);
}

/* A perf_thread over ranks [off, off + n) of the process. */
static void view(struct perf_thread* thr, struct perf_run* run, struct perf_locals* l, int off,
                 int n, int thread) {
  memset(thr, 0, sizeof(*thr));
  thr->run = run;
  thr->thread = thread;
  thr->ngpus = n;
  thr->first_rank = run->proc * run->o.nthreads * run->o.ngpus + off;
  thr->gpus = l->gpus + off;
  thr->comms = l->comms + off;
  thr->streams = l->streams + off;
  thr->send = l->send + off;
  thr->recv = l->recv + off;
  thr->send_reg = l->send_reg + off;
  thr->recv_reg = l->recv_reg + off;
  thr->wrong = l->wrong + off;
}

/* Body of each thread: with -p 1 it also creates and destroys its own ranks. */
static int thread_body(struct perf_thread* thr) {
  struct perf_run* run = thr->run;
  if (run->o.parallel_init) {
    PERF_TRY(perf_setup_comms(run, thr));
    PERF_TRY(perf_setup_buffers(run, thr));
  }
  PERF_TRY(perf_thread_run_tests(thr));
  if (run->o.parallel_init) PERF_TRY(perf_teardown(run, thr));
  return 0;
}

static void* thread_main(void* arg) {
  /* Peers would wait for this thread forever: a failure ends the whole run. */
  if (thread_body((struct perf_thread*)arg) != 0) perf_world_abort(2);
  return NULL;
}

/* Largest v over the processes (v itself when that fails: only a report is at stake). */
static int64_t world_max(int64_t v) {
  int64_t m = v;
  return perf_world_allreduce_i64(&m, PERF_RED_MAX) == 0 ? m : v;
}

/* The whole run once the world exists. Returns 0, 1 (wrong data / too slow) or -1. */
static int run_all(struct perf_run* run) {
  const int nlocal = run->o.nthreads * run->o.ngpus;
  struct perf_locals l;
  struct perf_thread* thr = NULL;
  struct perf_thread all;
  pthread_t* tids = NULL;
  char missing[1024], lib[1024], mem[256];
  const char* min_bw_env = getenv("NCCL_TESTS_MIN_BW");
  double min_bw = min_bw_env ? atof(min_bw_env) : -1.0, bw_sum = 0, avg_bw;
  int64_t errors = 0;
  int bw_count = 0, min_arch = 0, t, ranks_per_gpu = 1, devcount = 0;
  size_t min_mem = 0;

  memset(&l, 0, sizeof(l));
  run->proc = perf_world_rank();
  run->nprocs = perf_world_size();
  run->is_main = run->proc == 0;
  run->nranks = run->nprocs * nlocal;
  run->use_cuda_malloc = getenv("SNAPCCL_PERF_ALLOC") && strcmp(getenv("SNAPCCL_PERF_ALLOC"), "cuda") == 0;
  if (perf_nccl_check_symbols(needed_symbols(run), missing, sizeof(missing)) != 0) {
    perf_library_describe(lib, sizeof(lib));
    perf_report("the loaded libnccl (%s) does not define: %s", lib, missing);
    return -1;
  }
  if (alloc_locals(&l, nlocal) != 0) return -1;
  if (run->is_main) print_header(run);
  PERF_TRY(pick_devices(run, l.gpus, nlocal));
  PERF_TRY(report_devices(run, l.gpus, nlocal, &min_mem, &min_arch));
  if (env_flag("SNAPCCL_SHARED_GPU")) {
    PERF_CUDA(cudaGetDeviceCount(&devcount));
    ranks_per_gpu = (perf_world_local_size() * nlocal + devcount - 1) / devcount;
  }
  limit_sizes(run, min_mem, ranks_per_gpu);
  choose_sweep(run, min_arch);

  if (run->proc == 0) PERF_NCCL(ncclGetUniqueId(&run->id));
  PERF_TRY(perf_world_bcast(&run->id, sizeof(run->id)));
  PERF_TRY(perf_team_init(&run->team, run->o.nthreads));

  thr = calloc((size_t)run->o.nthreads, sizeof(*thr));
  tids = calloc((size_t)run->o.nthreads, sizeof(*tids));
  if (!thr || !tids) {
    perf_report("out of host memory");
    return -1;
  }
  view(&all, run, &l, 0, nlocal, 0);
  if (!run->o.parallel_init) {
    PERF_TRY(perf_setup_comms(run, &all));
    PERF_TRY(perf_setup_buffers(run, &all));
  }
  if (run->is_main) perf_print_table_header(run->out, run->o.report_cputime);
  fflush(run->out);

  for (t = 0; t < run->o.nthreads; t++) view(&thr[t], run, &l, t * run->o.ngpus, run->o.ngpus, t);
  for (t = 1; t < run->o.nthreads; t++) {
    if (pthread_create(&tids[t], NULL, thread_main, &thr[t]) != 0) {
      perf_report("pthread_create failed");
      return -1;
    }
  }
  if (thread_body(&thr[0]) != 0) {
    if (run->o.nthreads > 1) perf_world_abort(2); /* others may wait on thread 0 */
    return -1;
  }
  for (t = 1; t < run->o.nthreads; t++) pthread_join(tids[t], NULL);

  for (t = 0; t < run->o.nthreads; t++) {
    bw_sum += thr[t].bw_sum;
    bw_count += thr[t].bw_count;
    errors += thr[t].errors;
    if (thr[t].mem_coll > all.mem_coll) all.mem_coll = thr[t].mem_coll;
    if (thr[t].mem_init > all.mem_init) all.mem_init = thr[t].mem_init;
    if (thr[t].mem_buffers > all.mem_buffers) all.mem_buffers = thr[t].mem_buffers;
  }
  PERF_TRY(perf_world_allreduce_i64(&errors, PERF_RED_SUM));
  if (run->o.memory_report) {
    char a[32], b[32], c[32], d[32];
    int64_t mi = world_max(all.mem_init), mb = world_max(all.mem_buffers),
            mc = world_max(all.mem_coll);
    perf_fmt_mem(mi, a, sizeof(a));
    perf_fmt_mem(mb, b, sizeof(b));
    perf_fmt_mem(mc, c, sizeof(c));
    perf_fmt_mem(mi + mb + mc, d, sizeof(d));
    snprintf(mem, sizeof(mem), "Initialization %s | User-Allocated %s | Collective %s | Total  %s",
             a, b, c, d);
  }
  if (!run->o.parallel_init) PERF_TRY(perf_teardown(run, &all));
  avg_bw = bw_count ? bw_sum / bw_count : 0.0;
  if (run->is_main)
    perf_print_footer(run->out, run->prog, (int)errors, avg_bw, min_bw,
                      run->o.memory_report ? mem : NULL, perf_nccl_last_error());
  perf_team_destroy(&run->team);
  free(thr);
  free(tids);
  free_locals(&l);
  return (errors || (min_bw >= 0 && avg_bw < 0.9 * min_bw)) ? 1 : 0;
}

int perf_main(int argc, char** argv, const struct perf_coll* coll) {
  static struct perf_run run; /* large (the team's buffers); one per process */
  int rc;
  run.coll = coll;
  run.out = stdout;
  run.prog = basename_of(argc > 0 ? argv[0] : "perf");
  perf_opts_default(&run.o);
  rc = perf_parse_args(argc, argv, &run.o, stdout, stderr);
  if (rc != 0) return rc > 0 ? 0 : 2;
  setvbuf(stdout, NULL, _IOLBF, 0); /* rows appear as they are measured */
  if (run.o.dry_run) return dry_run(&run);
  if (perf_world_init(&argc, &argv, run.o.nthreads > 1) != 0) return 2;
  rc = run_all(&run);
  if (rc < 0) perf_world_abort(2); /* the other processes may be waiting for this one */
  perf_world_finalize();
  return rc;
}
