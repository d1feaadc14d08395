/* Helpers of the lifetime programs; see lifetime.h. */
#include "lifetime.h"

#include <cuda_runtime.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static double status_field_kib(const char* key) {
  FILE* f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  double v = -1;
  size_t k = strlen(key);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, key, k) && line[k] == ':') v = strtod(line + k + 1, NULL);
  fclose(f);
  return v;
}

static int count_dir(const char* path) {
  DIR* d = opendir(path);
  if (!d) return -1;
  int n = 0;
  for (struct dirent* e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* less the descriptor of the listing itself */
}

int lt_usage_now(struct lt_usage* u, char* err) {
  size_t free_b = 0, total_b = 0;
  cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
  if (e != cudaSuccess) return t_fail(err, "cudaMemGetInfo: %s", cudaGetErrorString(e));
  u->gpu_used_mib = (double)(total_b - free_b) / 1048576.0;
  u->rss_mib = status_field_kib("VmRSS") / 1024.0;
  u->fds = count_dir("/proc/self/fd");
  u->threads = (int)status_field_kib("Threads");
  if (u->rss_mib < 0 || u->fds < 0 || u->threads <= 0) return t_fail(err, "reading /proc/self failed");
  return 0;
}

void lt_usage_print(const char* label, const struct lt_usage* u) {
  printf("%-28s GPU used %9.1f MiB  RSS %8.1f MiB  fds %4d  threads %3d\n", label,
         u->gpu_used_mib, u->rss_mib, u->fds, u->threads);
  fflush(stdout);
}

int lt_usage_compare(const struct lt_usage* s, const struct lt_usage* e, const char* what) {
  double dg = e->gpu_used_mib - s->gpu_used_mib, dr = e->rss_mib - s->rss_mib;
  int ok = fabs(dg) <= LT_GPU_SLACK_MIB && dr <= LT_RSS_SLACK_MIB && e->fds == s->fds &&
           e->threads == s->threads;
  printf("%s: %s (GPU %+.1f MiB of %.0f allowed, RSS %+.1f MiB of %.0f, fds %+d, threads %+d)\n",
         what, ok ? "back at the start values" : "FAIL: not back at the start values", dg,
         LT_GPU_SLACK_MIB, dr, LT_RSS_SLACK_MIB, e->fds - s->fds, e->threads - s->threads);
  fflush(stdout);
  return ok ? 0 : -1;
}

void lt_settle(void) {
  const char* v = getenv("SNAPCCL_BOOTSTRAP_TIMEOUT");
  double s = v ? atof(v) : 120.0;
  if (!(s >= 0) || s > 10.0) s = 10.0;
  t_sleep_ms((int)(s * 1000.0) + 1000);
}

int lt_bufs_alloc(struct lt_bufs* b, size_t count, char* err) {
  b->count = count;
  cudaError_t e = cudaMalloc((void**)&b->send, count * sizeof(float));
  if (e == cudaSuccess) e = cudaMalloc((void**)&b->recv, count * sizeof(float));
  if (e != cudaSuccess) return t_fail(err, "cudaMalloc: %s", cudaGetErrorString(e));
  return 0;
}

void lt_bufs_free(struct lt_bufs* b) {
  cudaFree(b->send);
  cudaFree(b->recv);
  b->send = b->recv = NULL;
}

/* Element i of rank r's input: exact in float32, and so are all the sums. */
static float input_of(int r, size_t i) { return (float)((r + 1) * (int)(1 + i % 7)); }

int lt_allreduce_check(ncclComm_t* comms, cudaStream_t* streams, struct lt_bufs* bufs,
                       const int* ranks, int n, int nranks, double bound_s, char* err) {
  size_t count = bufs[0].count;
  float* host = malloc(count * sizeof(float));
  if (!host) return t_fail(err, "out of host memory");
  int rc = 0;
  for (int k = 0; k < n && !rc; k++) {
    for (size_t i = 0; i < count; i++) host[i] = input_of(ranks[k], i);
    if (cudaMemcpy(bufs[k].send, host, count * sizeof(float), cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemset(bufs[k].recv, 0xff, count * sizeof(float)) != cudaSuccess) /* NaN poison */
      rc = t_fail(err, "staging the inputs failed");
  }
  ncclResult_t r = ncclSuccess;
  if (!rc && n > 1) r = ncclGroupStart();
  for (int k = 0; k < n && !rc && r == ncclSuccess; k++)
    r = ncclAllReduce(bufs[k].send, bufs[k].recv, count, ncclFloat32, ncclSum, comms[k], streams[k]);
  if (!rc && n > 1 && r == ncclSuccess) r = ncclGroupEnd();
  if (!rc && r != ncclSuccess)
    rc = t_fail(err, "ncclAllReduce: %s (%s)", ncclGetErrorString(r), ncclGetLastError(NULL));
  double end = t_now() + bound_s;
  for (int k = 0; k < n && !rc; k++) {
    cudaError_t e;
    while ((e = cudaStreamQuery(streams[k])) == cudaErrorNotReady && t_now() < end) t_sleep_ms(1);
    ncclResult_t as = ncclSuccess;
    ncclCommGetAsyncError(comms[k], &as);
    if (e != cudaSuccess) rc = t_fail(err, "rank %d's stream: %s", ranks[k], cudaGetErrorString(e));
    else if (as != ncclSuccess) rc = t_fail(err, "rank %d: async error %s (%s)", ranks[k],
                                            ncclGetErrorString(as), ncclGetLastError(NULL));
  }
  double factor = nranks * (nranks + 1) / 2.0;
  for (int k = 0; k < n && !rc; k++) {
    if (cudaMemcpy(host, bufs[k].recv, count * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) {
      rc = t_fail(err, "reading the result failed");
      break;
    }
    for (size_t i = 0; i < count && !rc; i++)
      if (host[i] != (float)(factor * (double)(1 + i % 7)))
        rc = t_fail(err, "rank %d element %zu: %g, expected %g", ranks[k], i, (double)host[i],
                    factor * (double)(1 + i % 7));
  }
  free(host);
  return rc;
}
