/* The host profile's per-thread counters and their reading (host_profile.h); compiled
 * only with -Dhost_profile=true. */
#include "host_profile.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

_Thread_local struct snapccl_prof snapccl_prof_tls;

uint64_t snapccl_prof_clock_ns(void);
uint64_t snapccl_prof_clock_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
static uint64_t t0, n0;
static void start_interval(void) {
  t0 = snapccl_prof_now();
  n0 = snapccl_prof_clock_ns();
  struct timespec d = {0, 20 * 1000 * 1000};
  nanosleep(&d, NULL);
}
#endif

/* Nanoseconds per counter tick: the counter against CLOCK_MONOTONIC since the first
 * read (which waits 20 ms once, so that the interval is never tiny). */
static double ns_per_tick(void) {
#if defined(__x86_64__) || defined(__i386__)
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, start_interval);
  uint64_t t = snapccl_prof_now(), n = snapccl_prof_clock_ns();
  return t > t0 ? (double)(n - n0) / (double)(t - t0) : 0.0;
#else
  return 1.0;
#endif
}

int snapcclHostProfileRead(int reset, unsigned long long* calls, double* ns, const char** names,
                           int max) {
  static const char* const step_names[PROF_STEPS] = {
      [PROF_LOOKUP] = "lookup", [PROF_CHECKS] = "checks", [PROF_SELECT] = "select",
      [PROF_ARGS] = "args",     [PROF_LAUNCH] = "launch", [PROF_REAL] = "nccl"};
  struct snapccl_prof* p = &snapccl_prof_tls;
  const double k = ns_per_tick();
  int n = max < PROF_STEPS ? max : PROF_STEPS;
  if (calls) *calls = p->calls;
  for (int i = 0; i < n; i++) {
    if (ns) ns[i] = p->calls ? (double)p->ticks[i] * k / (double)p->calls : 0.0;
    if (names) names[i] = step_names[i];
  }
  if (reset) memset(p, 0, sizeof *p);
  return n;
}
