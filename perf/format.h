/* nccl-tests' text output: header, table rows, footer. Pure formatting onto a FILE, so
 * the selftest checks the layout byte for byte without a GPU. Column widths follow
 * nccl-tests so that scripts parsing its output parse ours. */
#ifndef PERF_FORMAT_H_
#define PERF_FORMAT_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "args.h"

/* v right-aligned in exactly `width` characters: 2, 1 or 0 decimals, whichever fits,
 * else exponent notation. out must hold width + 1 bytes. */
void perf_fmt_num(double v, int width, char* out);

/* The run description lines ("# Collective test starting: ...", "# nThread ..."). */
void perf_print_config(FILE* f, const char* prog, const struct perf_opts* o, int headers_version,
                       int library_version, const char* library_desc);

/* "#  Rank  0 Group  0 Pid  1234 on  host device  0 [0000:18:00] NVIDIA H100" */
int perf_format_device_line(char* buf, size_t len, int rank, int pid, const char* host, int dev,
                            int pci_domain, int pci_bus, int pci_device, const char* name);

void perf_print_table_header(FILE* f, int report_cputime);

/* One table row is start + two halves (out-of-place, in-place) + end. */
void perf_print_row_start(FILE* f, size_t bytes, size_t count, const char* type,
                          const char* op, int root);
void perf_print_row_half(FILE* f, double time_us, double algbw, double busbw, int checked,
                         int64_t wrong);
void perf_print_row_end(FILE* f);

/* "# snapccl algorithm: <name> from <bytes> B" */
void perf_print_algorithm(FILE* f, const char* name, size_t bytes);

/* Footer; min_bw < 0: no NCCL_TESTS_MIN_BW check. mem: optional "GPU memory usage"
 * text (NULL: none). last_error: the library's last error string ("" : none). */
void perf_print_footer(FILE* f, const char* prog, int errors, double avg_busbw, double min_bw,
                       const char* mem, const char* last_error);

/* "12.5 MB"-style rendering for the memory report. */
void perf_fmt_mem(int64_t bytes, char* out, size_t len);

#endif
