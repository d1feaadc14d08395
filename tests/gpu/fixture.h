/* A world of ranks with one set of buffers, as the collective tests open it, run cases
 * in and close it; failures are Criterion assertions (include after criterion.h and
 * common.h). */
#ifndef SNAPCCL_TEST_GPU_FIXTURE_H
#define SNAPCCL_TEST_GPU_FIXTURE_H

#include "common.h"

struct t_fixture {
  struct t_world w;
  struct t_bufs b;
};

/* n ranks and buffers of the given capacities, in the environment as it is now. */
static inline void t_fixture_init(struct t_fixture* f, int n, size_t send_cap, size_t recv_cap) {
  char err[T_ERRLEN];
  T_OK(t_world_init(&f->w, n, err), err);
  T_OK(t_bufs_alloc(&f->w, &f->b, send_cap, recv_cap, err), err);
}

/* The same after resetting the environment to the suite's defaults. */
static inline void t_fixture_open(struct t_fixture* f, int n, size_t send_cap, size_t recv_cap) {
  t_env_defaults();
  t_fixture_init(f, n, send_cap, recv_cap);
}

static inline void t_fixture_close(struct t_fixture* f) {
  char err[T_ERRLEN];
  t_bufs_free(&f->w, &f->b);
  T_OK(t_world_free(&f->w, err), err);
}

/* One case on every rank, checked against the CPU reference. */
static inline void t_fixture_run(struct t_fixture* f, const struct t_case* c) {
  char err[T_ERRLEN];
  T_OK(t_run_case(&f->w, c, &f->b, err), err);
}

#endif
