/* Where the host time of one eager collective goes, step by step (-Dhost_profile=true).
 * Each mark charges the cycles since the previous mark of this thread's call to a step,
 * so the steps of one call add up to its time from entry to the last mark. Built without
 * the option, every mark is an empty statement: the normal library pays nothing. */
#ifndef SNAPCCL_HOST_PROFILE_H
#define SNAPCCL_HOST_PROFILE_H

enum snapccl_prof_step {
  PROF_LOOKUP = 0, /* handle -> communicator, forwarding decision, readiness */
  PROF_CHECKS,     /* argument checks and op resolution */
  PROF_SELECT,     /* choice of algorithm */
  PROF_ARGS,       /* grid and kernel arguments */
  PROF_LAUNCH,     /* device switch, stream order, launch (the memcpy at one rank) */
  PROF_REAL,       /* a forwarded call inside NVIDIA's library */
  PROF_STEPS
};

#ifdef SNAPCCL_HOST_PROFILE
#include <stdint.h>

struct snapccl_prof {
  uint64_t last; /* counter at the previous mark; 0: no call open on this thread */
  uint64_t ticks[PROF_STEPS];
  uint64_t calls;
};
extern _Thread_local struct snapccl_prof snapccl_prof_tls;

static inline uint64_t snapccl_prof_now(void) {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_ia32_rdtsc(); /* invariant TSC on every host we run; ~7 ns to read */
#else
  extern uint64_t snapccl_prof_clock_ns(void);
  return snapccl_prof_clock_ns();
#endif
}
/* A collective call starts on this thread. */
static inline void snapccl_prof_begin(void) {
  snapccl_prof_tls.calls++;
  snapccl_prof_tls.last = snapccl_prof_now();
}
static inline void snapccl_prof_mark(enum snapccl_prof_step s) {
  if (!snapccl_prof_tls.last) return; /* issued at a group's end: not a timed eager call */
  uint64_t t = snapccl_prof_now();
  snapccl_prof_tls.ticks[s] += t - snapccl_prof_tls.last;
  snapccl_prof_tls.last = t;
}
/* The call's last step: later marks of this thread belong to no call. */
static inline void snapccl_prof_end(enum snapccl_prof_step s) {
  snapccl_prof_mark(s);
  snapccl_prof_tls.last = 0;
}
#define SNAP_PROF_BEGIN() snapccl_prof_begin()
#define SNAP_PROF_MARK(s) snapccl_prof_mark(s)
#define SNAP_PROF_END(s) snapccl_prof_end(s)

/* Exported by a profiling build only (found with dlsym by perf/host_overhead): this
 * thread's calls since the last reset and the mean nanoseconds of each step per call,
 * with the steps' names; returns the number of steps (at most max), and resets when
 * asked. */
__attribute__((visibility("default"))) int snapcclHostProfileRead(int reset, unsigned long long* calls,
                                                                  double* ns, const char** names, int max);
#else
#define SNAP_PROF_BEGIN() ((void)0)
#define SNAP_PROF_MARK(s) ((void)0)
#define SNAP_PROF_END(s) ((void)0)
#endif

#endif
