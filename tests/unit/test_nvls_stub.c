/* The multicast setup against the stub driver (part of test_nvls_gate): no driver call
 * when the gate stays closed, the exact call sequence when it opens (one process, POSIX
 * fd across threads and processes, fabric across fake hosts), a fault at each step rolled
 * back on every rank, and ranks as forked processes. */
#include "nvls_stub.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bootstrap.h"
#include "error.h"
#include "transport/multicast.h"

/* ---------------------------------------------------------------- stubbed setup */

TestSuite(stub, .init = stub_install, .fini = stub_remove, .timeout = 120);

/* Gate closed by the environment: not one driver call, not even a query. */
Test(stub, closed_by_environment_makes_no_call) {
  REQUIRE_NO_GPU();
  static const struct {
    const char *nvls, *nccl, *why;
  } env[] = {{NULL, NULL, "SNAPCCL_NVLS"},  {"0", NULL, "SNAPCCL_NVLS"},          {"2", "1", "SNAPCCL_NVLS"},
             {"1", "0", "NCCL_NVLS_ENABLE"}, {"1", "no", "NCCL_NVLS_ENABLE"}};
  for (size_t i = 0; i < NELEMS(env); i++) {
    struct world w;
    world_init(&w, 2);
    stub_reset();
    env_set("SNAPCCL_NVLS", env[i].nvls);
    env_set("NCCL_NVLS_ENABLE", env[i].nccl);
    run_threads(&w);
    assert_closed(&w, env[i].why);
    for (int r = 0; r < 2; r++)
      cr_assert_eq(w.out[r].log_setup[0] + w.out[r].log_free[0], 0, "case %zu rank %d called [%s] [%s]", i, r,
                   w.out[r].log_setup, w.out[r].log_free);
  }
}

/* Closed by one GPU's answer: only the two queries, on every rank. */
Test(stub, closed_by_device_makes_no_multicast_call) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 3);
  g_rank[1].attr_mc = 0;
  run_threads(&w);
  assert_closed(&w, "does not support");
  assert_no_multicast_calls(&w);
  for (int r = 0; r < 3; r++) {
    cr_assert_str_eq(w.out[r].log_setup, " device_get attr:multicast", "rank %d", r);
    cr_assert(r == 1 || strstr(w.out[r].reason, "rank 1"), "rank %d: %s", r, w.out[r].reason);
  }
}

/* Closed by what needs no driver at all: one rank, a shared GPU, no transport. */
Test(stub, closed_by_applicability_makes_no_call) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 1);
  run_threads(&w);
  assert_closed(&w, "single rank");
  cr_assert_eq(w.out[0].log_setup[0], 0, "[%s]", w.out[0].log_setup);

  world_init(&w, 3);
  stub_reset();
  w.cfg[2].gpu = 0; /* SNAPCCL_SHARED_GPU */
  run_threads(&w);
  assert_closed(&w, "share a GPU");
  for (int r = 0; r < 3; r++) cr_assert_eq(w.out[r].log_setup[0], 0, "rank %d: [%s]", r, w.out[r].log_setup);

  world_init(&w, 2);
  stub_reset();
  w.cfg[0].usable = w.cfg[1].usable = 0;
  run_threads(&w);
  assert_closed(&w, "transport");
  for (int r = 0; r < 2; r++) cr_assert_eq(w.out[r].log_setup[0], 0, "rank %d: [%s]", r, w.out[r].log_setup);
}

static const char* const open_seq_creator =
    " device_get attr:multicast attr:posix attr:fabric multicast_get_granularity mem_get_allocation_granularity"
    " multicast_create multicast_add_device mem_create multicast_bind_mem mem_address_reserve mem_map"
    " mem_set_access mem_address_reserve mem_map mem_set_access init_replica";
static const char* const open_seq_other =
    " device_get attr:multicast attr:posix attr:fabric multicast_get_granularity mem_get_allocation_granularity"
    " multicast_add_device mem_create multicast_bind_mem mem_address_reserve mem_map mem_set_access"
    " mem_address_reserve mem_map mem_set_access init_replica";
static const char* const free_seq =
    " multicast_unbind mem_unmap mem_address_free mem_unmap mem_address_free mem_release";
/* ... and its own reference to the object (no sharing across processes). */
static const char* const free_seq_own =
    " multicast_unbind mem_unmap mem_address_free mem_unmap mem_address_free mem_release mem_release";

/* Open, every rank in this process: the creator's handle is shared, no export. */
Test(stub, open_one_process_call_sequence) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 4);
  run_threads(&w);
  for (int r = 0; r < 4; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_PROCESS);
    cr_assert(w.out[r].sentinel_ok, "rank %d: the replica was not initialised", r);
    cr_assert_str_eq(w.out[r].log_setup, r ? open_seq_other : open_seq_creator, "rank %d", r);
    /* The last of the ranks to free releases the shared object as well. */
    cr_assert(!strncmp(w.out[r].log_free, free_seq, strlen(free_seq)), "rank %d: [%s]", r, w.out[r].log_free);
  }
  cr_assert_eq(atomic_load(&g_mc_releases), 1, "the shared object is released once");
  cr_assert_eq(atomic_load(&g_inits), 4);
  assert_balanced();
}

/* Open, ranks in (what they report as) different processes of one host: the creator
 * exports a POSIX fd, the others fetch it over the Unix socket and import it. */
Test(stub, open_posix_fd_call_sequence) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 3);
  for (int r = 0; r < 3; r++) w.cfg[r].proc = 0x1000 + (uint64_t)r;
  run_threads(&w);
  for (int r = 0; r < 3; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_POSIX_FD);
    cr_assert_eq(has(w.out[r].log_setup, "mem_export_to_shareable_handle"), r == 0, "rank %d: [%s]", r,
                 w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "mem_import_from_shareable_handle"), r != 0, "rank %d: [%s]", r,
                 w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "multicast_create"), r == 0);
    cr_assert_str_eq(w.out[r].log_free, free_seq_own, "rank %d", r);
  }
  cr_assert_eq(atomic_load(&g_mc_releases), 3, "every rank releases its own reference");
  assert_balanced();
}

/* Open across (fake) hosts of one NVLink domain: NVML is asked, fabric handles travel
 * through the out-of-band allgather. A rank in another clique closes it before any
 * multicast call. */
Test(stub, open_fabric_and_domain_mismatch) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 2);
  for (int r = 0; r < 2; r++) {
    w.cfg[r].host = 0x500 + (uint64_t)r, w.cfg[r].proc = 0x900 + (uint64_t)r;
    g_rank[r].attr_fabric = 1, g_rank[r].fabric_ok = 1, g_rank[r].clique = 4, g_rank[r].uuid0 = 9;
    g_rank[r].fabric_state = SNAPCCL_NVML_FABRIC_STATE_COMPLETED;
  }
  run_threads(&w);
  for (int r = 0; r < 2; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_FABRIC);
    cr_assert(has(w.out[r].log_setup, "nvml_fabric"), "[%s]", w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "mem_export_to_shareable_handle"), r == 0);
    cr_assert_eq(has(w.out[r].log_setup, "mem_import_from_shareable_handle"), r == 1);
  }
  assert_balanced();

  world_init(&w, 2);
  for (int r = 0; r < 2; r++) {
    w.cfg[r].host = 0x500 + (uint64_t)r, w.cfg[r].proc = 0x900 + (uint64_t)r;
    g_rank[r].log[0] = 0;
  }
  g_rank[1].clique = 5;
  run_threads(&w);
  assert_closed(&w, "another NVLink domain");
  assert_no_multicast_calls(&w);
  assert_balanced();
}

/* A failure on one rank at any step closes the gate on every rank and undoes exactly
 * what was done. */
Test(stub, failure_at_each_step_rolls_back_everywhere) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  static const struct {
    const char* fn;
    int rank;
    const char* says;
  } faults[] = {
      {"multicast_get_granularity", 1, "cuMulticastGetGranularity"},
      {"multicast_create", 0, "cuMulticastCreate"},
      {"mem_export_to_shareable_handle", 0, "cuMemExportToShareableHandle"},
      {"mem_import_from_shareable_handle", 2, "cuMemImportFromShareableHandle"},
      {"multicast_add_device", 1, "cuMulticastAddDevice"},
      {"mem_create", 2, "cuMemCreate"},
      {"multicast_bind_mem", 1, "cuMulticastBindMem"},
      {"mem_map", 0, "cuMemMap"},
      {"mem_set_access", 2, "cuMemSetAccess"},
      {"init_replica", 1, "initialising"},
  };
  for (size_t i = 0; i < NELEMS(faults); i++) {
    struct world w;
    world_init(&w, 3);
    stub_reset();
    for (int r = 0; r < 3; r++) w.cfg[r].proc = 0x2000 + (uint64_t)r; /* POSIX fd: export and import */
    g_rank[faults[i].rank].fail = faults[i].fn;
    run_threads(&w);
    assert_closed(&w, faults[i].says);
    for (int r = 0; r < 3; r++) {
      if (r != faults[i].rank && strcmp(faults[i].fn, "multicast_create") != 0 &&
          strcmp(faults[i].fn, "mem_export_to_shareable_handle") != 0)
        cr_assert(strstr(w.out[r].reason, "rank "), "%s: rank %d: %s", faults[i].fn, r, w.out[r].reason);
      cr_assert_eq(w.out[r].log_free[0], 0, "%s: rank %d freed after rollback: [%s]", faults[i].fn, r,
                   w.out[r].log_free);
    }
    /* No device is added before the object exists everywhere, nothing is bound before
     * every device is added. */
    if (!strcmp(faults[i].fn, "multicast_create") || !strcmp(faults[i].fn, "mem_export_to_shareable_handle"))
      for (int r = 0; r < 3; r++) cr_assert(!has(w.out[r].log_setup, "multicast_add_device"), "%s", faults[i].fn);
    if (!strcmp(faults[i].fn, "multicast_add_device"))
      for (int r = 0; r < 3; r++) cr_assert(!has(w.out[r].log_setup, "mem_create"), "%s", faults[i].fn);
    assert_balanced();
  }
}

/* ---------------------------------------------------------------- forked processes */

/* Runs rank r of w in a child; the child's environment gets SNAPCCL_NVLS=nvls[r]. */
static void run_processes(struct world* w, const char* const* nvls, int* codes) {
  cr_assert_eq(snapccl_bootstrap_create_root(&w->id), ncclSuccess, "%s", snapccl_last_error());
  g_all_in_process = 0;
  pid_t pids[MAXR];
  int fds[MAXR][2];
  for (int r = 0; r < w->n; r++) {
    cr_assert_eq(pipe(fds[r]), 0);
    pids[r] = fork();
    cr_assert(pids[r] >= 0);
    if (pids[r] == 0) {
      close(fds[r][0]);
      env_set("SNAPCCL_NVLS", nvls[r]);
      w->cfg[r].proc = 0; /* the real process: distinct per child */
      int rc = run_rank(w, r);
      ssize_t wr = write(fds[r][1], &w->out[r], sizeof w->out[r]);
      (void)wr;
      _exit(rc ? (rc & 0x7f) | 0x80 : 0);
    }
    close(fds[r][1]);
    if (r == 0) g_expect_creator_pid = pids[0]; /* importers check whose object they got */
  }
  g_expect_creator_pid = 0;
  double end = now_s() + 90;
  for (int r = 0; r < w->n; r++) {
    int st = 0;
    for (;;) {
      pid_t p = waitpid(pids[r], &st, WNOHANG);
      if (p == pids[r]) break;
      if (now_s() > end) {
        for (int q = 0; q < w->n; q++) kill(pids[q], SIGKILL);
        waitpid(pids[r], &st, 0);
        break;
      }
      usleep(2000);
    }
    codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
    ssize_t got = read(fds[r][0], &w->out[r], sizeof w->out[r]);
    if (got != (ssize_t)sizeof w->out[r]) memset(&w->out[r], 0, sizeof w->out[r]);
    close(fds[r][0]);
  }
}

/* Two real processes: the creator's POSIX fd crosses the process boundary. */
Test(stub, processes_posix_fd) {
  REQUIRE_NO_GPU();
  struct world w;
  world_init(&w, 2);
  static const char* const nvls[] = {"1", "1"};
  int codes[MAXR];
  run_processes(&w, nvls, codes);
  for (int r = 0; r < 2; r++) {
    cr_assert_eq(codes[r], 0, "rank %d exited with %d", r, codes[r]);
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_POSIX_FD);
    cr_assert_str_eq(w.out[r].log_free, free_seq_own);
  }
  cr_assert(has(w.out[0].log_setup, "mem_export_to_shareable_handle"), "[%s]", w.out[0].log_setup);
  cr_assert(has(w.out[1].log_setup, "mem_import_from_shareable_handle"), "[%s]", w.out[1].log_setup);
}

/* The processes disagree: one lacks SNAPCCL_NVLS. It makes no call at all, the other
 * only asks its GPU, and both stay closed. */
Test(stub, processes_disagree) {
  REQUIRE_NO_GPU();
  struct world w;
  world_init(&w, 2);
  static const char* const nvls[] = {"1", NULL};
  int codes[MAXR];
  run_processes(&w, nvls, codes);
  for (int r = 0; r < 2; r++) cr_assert_eq(codes[r], 0, "rank %d exited with %d", r, codes[r]);
  assert_closed(&w, "SNAPCCL_NVLS");
  cr_assert_str_eq(w.out[0].log_setup, " device_get attr:multicast");
  cr_assert_eq(w.out[1].log_setup[0], 0, "[%s]", w.out[1].log_setup);
  assert_no_multicast_calls(&w);
}
