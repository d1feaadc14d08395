/* Registered buffers (ncclCommRegister, ncclCommWindowRegister), every rank in this
 * process (ranks share the GPU with SNAPCCL_SHARED_GPU=1; across processes:
 * test_multiproc.c, "registered"):
 *   - memory from cudaMalloc, from three cuMem allocations mapped back to back (a range
 *     over several segments, as PyTorch's expandable segments), and from ncclMemAlloc;
 *     both registration calls; every rank finds every rank's counterpart of a pointer
 *     anywhere inside a registered range (byte offsets 0..15) and reads the owner's
 *     data through it;
 *   - collectives on registered memory (all-reduce of the library's choice, two-shot, which
 *     then reads and writes every rank's buffers in place, and one-shot, all-gather,
 *     reduce-scatter; in place; byte offsets 1..15) against the CPU reference on random
 *     data, outputs poisoned first;
 *   - unregistered buffers on the same communicator, and calls whose buffers are
 *     registered on one rank and not on the other (the two-shot's descriptors disagree:
 *     every rank stages);
 *   - a CUDA graph captured on registered buffers, replayed with new data;
 *   - deregistering one of several ranges over one allocation, the others staying;
 *     registering the same range twice; memory freed without deregistering (destroy
 *     must not crash, and a new communicator works). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "reg_util.h"
#include "snapccl.h"

static uint64_t next_seed(void) {
  static uint64_t s = 0x7265ull << 32;
  return t_mix(++s);
}

static void open_world(struct t_world* w, int n) {
  char err[T_ERRLEN];
  t_env_defaults();
  T_OK(t_world_init(w, n, err), err);
}

static void close_world(struct t_world* w) {
  char err[T_ERRLEN];
  T_OK(t_world_free(w, err), err);
}

/* ---------------------------------------------------------------- kinds x calls */

static void kinds(int n, int mode) {
  char err[T_ERRLEN];
  T_REQUIRE_GPU();
  for (int mem = 0; mem < REG_NMEM; mem++) {
    struct t_world w;
    struct reg_bufs rb;
    open_world(&w, n);
    cr_assert(reg_bufs_alloc(&w, &rb, mem, reg_cases_send_cap(n), reg_cases_recv_cap(n), err) == 0, "%s: %s",
              reg_mem_name[mem], err);
    T_OK(reg_pattern_write(&w, &rb, err), err);
    T_OK(reg_pattern_check(&w, &rb, 0, err), err); /* nothing registered yet */
    cr_assert(reg_bufs_register(&w, &rb, mode, err) == 0, "%s: %s", reg_mem_name[mem], err);
    cr_assert(reg_pattern_check(&w, &rb, 1, err) == 0, "%s: %s", reg_mem_name[mem], err);
    cr_assert(reg_run_cases(&w, &rb, next_seed(), err) == 0, "%s: %s", reg_mem_name[mem], err);
    T_OK(reg_bufs_deregister(&w, &rb, err), err);
    cr_assert(reg_pattern_check(&w, &rb, 0, err) == 0, "after deregistering: %s", err);
    T_OK(reg_bufs_free(&w, &rb, err), err);
    close_world(&w);
  }
}

Test(registration, comm_register_ws2, .timeout = 600) { kinds(2, REG_COMM); }
Test(registration, window_symmetric_ws2, .timeout = 600) { kinds(2, REG_WINDOW); }
Test(registration, comm_register_ws3, .timeout = 600) { kinds(3, REG_COMM); }

/* ---------------------------------------------------------------- mixed */

/* Registered and unregistered buffers on one communicator, in turn; then calls whose
 * rank 0 buffers are registered and whose other ranks' are not. */
Test(registration, unregistered_and_mixed, .timeout = 600) {
  char err[T_ERRLEN];
  const int n = 2;
  T_REQUIRE_GPU();
  struct t_world w;
  struct reg_bufs reg, plain;
  open_world(&w, n);
  T_OK(reg_bufs_alloc(&w, &reg, REG_CUDA_MALLOC, reg_cases_send_cap(n), reg_cases_recv_cap(n), err), err);
  T_OK(reg_bufs_alloc(&w, &plain, REG_NCCL_MEM_ALLOC, reg_cases_send_cap(n), reg_cases_recv_cap(n), err), err);
  T_OK(reg_bufs_register(&w, &reg, REG_COMM, err), err);
  for (int round = 0; round < 2; round++) {
    cr_assert(reg_run_cases(&w, &reg, next_seed(), err) == 0, "registered, round %d: %s", round, err);
    cr_assert(reg_run_cases(&w, &plain, next_seed(), err) == 0, "unregistered, round %d: %s", round, err);
  }
  struct reg_bufs mixed = plain; /* rank 0's regions registered, the others' not */
  mixed.b.send[0] = reg.b.send[0];
  mixed.b.recv[0] = reg.b.recv[0];
  mixed.b.scalar[0] = reg.b.scalar[0];
  cr_assert(reg_run_cases(&w, &mixed, next_seed(), err) == 0, "rank 0 registered, rank 1 not: %s", err);
  T_OK(reg_bufs_deregister(&w, &reg, err), err);
  T_OK(reg_bufs_free(&w, &reg, err), err);
  T_OK(reg_bufs_free(&w, &plain, err), err);
  close_world(&w);
}

/* ---------------------------------------------------------------- graphs */

Test(registration, graph_replayed_with_new_data, .timeout = 600) {
  char err[T_ERRLEN], what[600];
  const int n = 2, replays = 5;
  T_REQUIRE_GPU();
  struct t_world w;
  struct reg_bufs rb;
  open_world(&w, n);
  T_OK(reg_bufs_alloc(&w, &rb, REG_CUMEM_3SEGS, reg_cases_send_cap(n), reg_cases_recv_cap(n), err), err);
  T_OK(reg_bufs_register(&w, &rb, REG_WINDOW, err), err);
  struct t_case c[3] = {
      t_case_make(T_AR, ncclFloat32, T_SUM, 65537, 0, "twoshot", 0),
      t_case_make(T_AR, ncclBfloat16, T_SUM, 1000, 1, "oneshot", 0),
      t_case_make(T_AG, ncclInt32, T_SUM, 4097, 0, "direct", 0),
  };
  t_misalign(3, n, c[0].send_off, c[0].recv_off);
  /* Each case in its own buffers: a replay runs them all before any is checked. */
  struct reg_bufs part[3];
  for (int k = 0; k < 3; k++) {
    part[k] = rb;
    for (int r = 0; r < n; r++) {
      part[k].b.send[r] = rb.b.send[r] + (size_t)k * (reg_cases_send_cap(n) / 3);
      part[k].b.recv[r] = rb.b.recv[r] + (size_t)k * (reg_cases_recv_cap(n) / 3);
    }
    part[k].b.send_cap = reg_cases_send_cap(n) / 3 - 2 * T_GUARD - 16;
    part[k].b.recv_cap = reg_cases_recv_cap(n) / 3 - 2 * T_GUARD - 16;
  }
  struct t_host* h[3] = {NULL, NULL, NULL};
  cudaGraph_t graph[T_MAXR];
  cudaGraphExec_t exec[T_MAXR];
  for (int k = 0; k < 3; k++) {
    c[k].seed = next_seed();
    cr_assert(t_case_prepare(&w, &c[k], &part[k].b, &h[k], err) == 0, "%s", err);
  }
  T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
  for (int r = 0; r < n; r++)
    cr_assert_eq(cudaStreamBeginCapture(w.stream[r], cudaStreamCaptureModeGlobal), cudaSuccess);
  for (int k = 0; k < 3; k++) {
    t_set_algo(c[k].coll, c[k].algo);
    cr_assert_eq(ncclGroupStart(), ncclSuccess);
    for (int r = 0; r < n; r++)
      cr_assert_eq(t_case_call(&w, &c[k], &part[k].b, h[k], r), ncclSuccess, "capturing %s: %s",
                   t_case_str(&c[k], n, what, sizeof what), ncclGetLastError(NULL));
    cr_assert_eq(ncclGroupEnd(), ncclSuccess, "capturing: %s", ncclGetLastError(NULL));
  }
  for (int r = 0; r < n; r++) cr_assert_eq(cudaStreamEndCapture(w.stream[r], &graph[r]), cudaSuccess);
  for (int r = 0; r < n; r++) cr_assert_eq(cudaGraphInstantiate(&exec[r], graph[r], 0), cudaSuccess);
  t_set_algo(T_AR, NULL);
  for (int k = 0; k < 3; k++) t_host_free(&w, h[k]), h[k] = NULL;
  for (int rep = 0; rep < replays; rep++) {
    for (int k = 0; k < 3; k++) {
      c[k].seed = next_seed(); /* new inputs into the captured buffers, outputs poisoned */
      cr_assert(t_case_prepare(&w, &c[k], &part[k].b, &h[k], err) == 0, "%s", err);
    }
    for (int r = 0; r < n; r++) cr_assert_eq(cudaGraphLaunch(exec[r], w.stream[r]), cudaSuccess);
    cr_assert(t_world_sync(&w, t_wait_bound_s(), err) == 0, "replay %d: %s", rep, err);
    for (int k = 0; k < 3; k++) {
      cr_assert(t_case_verify(&w, &c[k], &part[k].b, h[k], 1, err) == 0, "replay %d, %s: %s", rep,
                t_case_str(&c[k], n, what, sizeof what), err);
      t_host_free(&w, h[k]), h[k] = NULL;
    }
  }
  for (int r = 0; r < n; r++) {
    cr_assert_eq(cudaGraphExecDestroy(exec[r]), cudaSuccess);
    cr_assert_eq(cudaGraphDestroy(graph[r]), cudaSuccess);
  }
  T_OK(reg_bufs_deregister(&w, &rb, err), err);
  T_OK(reg_bufs_free(&w, &rb, err), err);
  close_world(&w);
}

/* ---------------------------------------------------------------- lifecycle */

/* Ranges over one allocation: the whole, its first half, its second half twice. */
Test(registration, deregister_one_of_several_and_twice, .timeout = 300) {
  char err[T_ERRLEN];
  const int n = 2;
  T_REQUIRE_GPU();
  for (int mem = 0; mem < REG_NMEM; mem++) {
    struct t_world w;
    struct reg_bufs rb;
    open_world(&w, n);
    T_OK(reg_bufs_alloc(&w, &rb, mem, reg_cases_send_cap(n), reg_cases_recv_cap(n), err), err);
    T_OK(reg_pattern_write(&w, &rb, err), err);
    const size_t bytes = rb.send[0].bytes, half = bytes / 2;
    char* whole[T_MAXR] = {0};
    char* hi[T_MAXR] = {0};
    for (int r = 0; r < n; r++) whole[r] = rb.send[r].ptr, hi[r] = rb.send[r].ptr + half;
    void *hw[T_MAXR], *hl[T_MAXR], *h2a[T_MAXR], *h2b[T_MAXR];
    T_OK(reg_register(&w, REG_COMM, whole, bytes, hw, err), err);
    T_OK(reg_register(&w, REG_COMM, whole, half, hl, err), err);
    T_OK(reg_register(&w, REG_WINDOW, hi, bytes - half, h2a, err), err);
    T_OK(reg_register(&w, REG_WINDOW, hi, bytes - half, h2b, err), err); /* the same range twice */
    for (int r = 0; r < n; r++) cr_assert_neq(h2a[r], h2b[r], "two registrations, two handles");
    cr_assert(reg_pattern_check(&w, &rb, 1, err) == 0, "%s, all registered: %s", reg_mem_name[mem], err);
    T_OK(reg_deregister(&w, REG_COMM, hw, err), err); /* the whole: the halves stay */
    cr_assert(reg_pattern_check(&w, &rb, 1, err) == 0, "%s, the whole deregistered: %s", reg_mem_name[mem], err);
    T_OK(reg_deregister(&w, REG_WINDOW, h2a, err), err); /* one of the twins: the other stays */
    cr_assert(reg_pattern_check(&w, &rb, 1, err) == 0, "%s, one twin deregistered: %s", reg_mem_name[mem], err);
    ncclResult_t again = ncclCommWindowDeregister(w.comm[0], (ncclWindow_t)h2a[0]);
    cr_assert_neq(again, ncclSuccess, "a handle deregistered twice is refused");
    T_OK(reg_deregister(&w, REG_WINDOW, h2b, err), err); /* the upper half: unregistered now */
    for (int r = 0; r < n; r++) {
      void* pp = (void*)1;
      cr_assert_eq(snapcclCommRegisteredPeer(w.comm[r], hi[r] + 100, 16, 1 - r, &pp), ncclSuccess);
      cr_assert_null(pp, "rank %d still maps a deregistered range", r);
      cr_assert_eq(snapcclCommRegisteredPeer(w.comm[r], whole[r] + 100, 16, 1 - r, &pp), ncclSuccess);
      cr_assert_not_null(pp, "rank %d lost the lower half's registration", r);
    }
    cr_assert(reg_run_cases(&w, &rb, next_seed(), err) == 0, "%s: %s", reg_mem_name[mem], err);
    T_OK(reg_deregister(&w, REG_COMM, hl, err), err);
    T_OK(reg_bufs_free(&w, &rb, err), err);
    close_world(&w);
  }
}

/* Memory freed while registered: the destroy must not crash, and the next world works. */
Test(registration, freed_without_deregistering, .timeout = 300) {
  char err[T_ERRLEN];
  const int n = 2;
  T_REQUIRE_GPU();
  for (int mem = 0; mem < REG_NMEM; mem++) {
    struct t_world w;
    struct reg_bufs rb;
    open_world(&w, n);
    T_OK(reg_bufs_alloc(&w, &rb, mem, reg_cases_send_cap(n), reg_cases_recv_cap(n), err), err);
    T_OK(reg_bufs_register(&w, &rb, mem == REG_CUMEM_3SEGS ? REG_WINDOW : REG_COMM, err), err);
    cr_assert(reg_run_cases(&w, &rb, next_seed(), err) == 0, "%s: %s", reg_mem_name[mem], err);
    T_OK(t_world_sync(&w, t_wait_bound_s(), err), err);
    T_OK(reg_bufs_free(&w, &rb, err), err);
    close_world(&w);
    struct t_case c = t_case_make(T_AR, ncclFloat32, T_SUM, 4097, 0, NULL, next_seed());
    open_world(&w, n);
    cr_assert(t_run_case_alloc(&w, &c, err) == 0, "after %s memory was freed registered: %s", reg_mem_name[mem], err);
    close_world(&w);
  }
}

/* Registration outside a group with one rank per thread would need a thread per rank;
 * a lone rank (world of 1) registers without an exchange. */
Test(registration, world_of_one, .timeout = 120) {
  char err[T_ERRLEN];
  T_REQUIRE_GPU();
  struct t_world w;
  struct reg_bufs rb;
  open_world(&w, 1);
  T_OK(reg_bufs_alloc(&w, &rb, REG_NCCL_MEM_ALLOC, reg_cases_send_cap(1), reg_cases_recv_cap(1), err), err);
  T_OK(reg_pattern_write(&w, &rb, err), err);
  T_OK(reg_bufs_register(&w, &rb, REG_COMM, err), err);
  T_OK(reg_pattern_check(&w, &rb, 1, err), err);
  T_OK(reg_run_cases(&w, &rb, next_seed(), err), err);
  T_OK(reg_bufs_deregister(&w, &rb, err), err);
  T_OK(reg_bufs_free(&w, &rb, err), err);
  close_world(&w);
}
