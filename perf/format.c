/* nccl-tests-compatible text output (format.h). */
#include "format.h"

#include <math.h>
#include <string.h>

void perf_fmt_num(double v, int width, char* out) {
  static const char* const fixed[] = {"%*.2f", "%*.1f", "%*.0f"};
  size_t i;
  for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
    if (snprintf(out, (size_t)width + 1, fixed[i], width, v) <= width) return;
  snprintf(out, (size_t)width + 1, width >= 7 ? "%*.1e" : "%*.0e", width, v);
}

void perf_print_config(FILE* f, const char* prog, const struct perf_opts* o, int headers_version,
                       int library_version, const char* library_desc) {
  fprintf(f, "# snapccl perf (nccl-tests output format) nccl-headers=%d nccl-library=%d\n",
          headers_version, library_version);
  fprintf(f, "# Collective test starting: %s\n", prog);
  fprintf(f,
          "# nThread %d nGpus %d minBytes %zu maxBytes %zu step: %zu(%s) warmup iters: %d "
          "iters: %d agg iters: %d validation: %d graph: %d unalign: %d\n",
          o->nthreads, o->ngpus, o->minbytes, o->maxbytes,
          o->stepfactor > 1 ? o->stepfactor : o->stepbytes,
          o->stepfactor > 1 ? "factor" : "bytes", o->warmup_iters, o->iters, o->agg_iters,
          o->datacheck, o->graph_launches, o->unalign);
  if (o->blocking == 1)
    fprintf(f, "# Blocking Enabled: wait and barrier after each inner iteration (-m) \n");
  if (o->blocking == 2)
    fprintf(f, "# Blocking Enabled: wait after each inner iteration (-m), no barrier \n");
  if (o->blocking == 3)
    fprintf(f, "# Blocking Enabled: wait and barrier after each outer iteration (-n); "
               "time excludes barrier \n");
  if (o->parallel_init)
    fprintf(f, "# Parallel Init Enabled: threads call into NcclInitRank concurrently \n");
  fprintf(f, "# library: %s\n", library_desc);
  if (o->notes[0]) fprintf(f, "# options accepted but ignored: %s\n", o->notes);
  fprintf(f, "#\n");
}

int perf_format_device_line(char* buf, size_t len, int rank, int pid, const char* host, int dev,
                            int pci_domain, int pci_bus, int pci_device, const char* name) {
  return snprintf(buf, len, "#  Rank %2d Group %2d Pid %6d on %10s device %2d [%04x:%02x:%02x] %s\n",
                  rank, 0, pid, host, dev, pci_domain, pci_bus, pci_device, name);
}

void perf_print_table_header(FILE* f, int report_cputime) {
  const char* t = report_cputime ? "cputime" : "time";
  fprintf(f, "#\n");
  fprintf(f, "# %10s  %12s  %8s  %6s  %6s           out-of-place                       in-place          \n",
          "", "", "", "", "");
  fprintf(f, "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s \n", "size",
          "count", "type", "redop", "root", t, "algbw", "busbw", "#wrong", t, "algbw", "busbw",
          "#wrong");
  fprintf(f, "# %10s  %12s  %8s  %6s  %6s  %7s  %6s  %6s  %6s  %7s  %6s  %6s  %6s \n", "(B)",
          "(elements)", "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
}

void perf_print_row_start(FILE* f, size_t bytes, size_t count, const char* type,
                          const char* op, int root) {
  fprintf(f, "%12zu  %12zu  %8s  %6s  %6d", bytes, count, type, op, root);
}

void perf_print_row_half(FILE* f, double time_us, double algbw, double busbw, int checked,
                         int64_t wrong) {
  char t[8], a[7], b[7];
  perf_fmt_num(time_us, 7, t);
  perf_fmt_num(algbw, 6, a);
  perf_fmt_num(busbw, 6, b);
  if (checked)
    fprintf(f, "  %7s  %6s  %6s  %6g", t, a, b, (double)wrong);
  else
    fprintf(f, "  %7s  %6s  %6s    N/A", t, a, b);
}

void perf_print_row_end(FILE* f) {
  fputc('\n', f);
  fflush(f); /* progress shows line by line, also through pipes and mpirun */
}

void perf_print_algorithm(FILE* f, const char* name, size_t bytes) {
  fprintf(f, "# snapccl algorithm: %s from %zu B\n", name, bytes);
}

void perf_print_footer(FILE* f, const char* prog, int errors, double avg_busbw, double min_bw,
                       const char* mem, const char* last_error) {
  const char* verdict = min_bw < 0 ? "" : (avg_busbw < 0.9 * min_bw ? "FAILED" : "OK");
  fprintf(f, "# %-20s : %d %s\n", "Out of bounds values", errors, errors ? "FAILED" : "OK");
  fprintf(f, "# %-20s : %g %s\n", "Avg bus bandwidth", avg_busbw, verdict);
  fprintf(f, "#\n");
  fprintf(f, "# Collective test concluded: %s\n", prog);
  if (mem) fprintf(f, "# %-20s : %s\n", "GPU memory usage", mem);
  fprintf(f, "#\n");
  if (last_error && last_error[0])
    fprintf(f, "# error: %s\n", last_error);
  else
    fprintf(f, "\n");
  fflush(f);
}

void perf_fmt_mem(int64_t bytes, char* out, size_t len) {
  double v = (double)bytes, a;
  const char* unit = " B";
  int prec;
  if (fabs(v) >= 1024.0 * 1024.0 * 1024.0) {
    unit = " GB";
    v /= 1024.0 * 1024.0 * 1024.0;
  } else if (fabs(v) >= 1024.0 * 1024.0) {
    unit = " MB";
    v /= 1024.0 * 1024.0;
  } else if (fabs(v) >= 1024.0) {
    unit = " KB";
    v /= 1024.0;
  }
  a = fabs(v);
  prec = a < 10.0 ? 2 : a < 100.0 ? 1 : 0;
  snprintf(out, len, "%.*f%s", prec, v, unit);
}
