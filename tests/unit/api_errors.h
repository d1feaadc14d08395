/* What the API error tests share (test_api_errors*.c, one binary): NCCL's exact code
 * and a reason naming the problem for every bad input, checked by EXPECT; fake
 * communicators; the standalone set-up every suite starts from. */
#ifndef SNAPCCL_TEST_API_ERRORS_H
#define SNAPCCL_TEST_API_ERRORS_H

#include <criterion/criterion.h>

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bootstrap.h"
#include "coll.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "group.h"
#include "nccl.h"
#include "registry.h"

/* ---- helpers ---- */

/* Checks a result: the exact code and, for failures, a non-empty last error that
 * contains every given needle (case-insensitive). */
static inline void check_result(const char* expr, int line, ncclResult_t got, ncclResult_t want,
                                const char* needle1, const char* needle2) {
  const char* err = ncclGetLastError(NULL);
  cr_assert_eq(got, want, "line %d: %s returned %d (%s), expected %d (%s); last error: \"%s\"",
               line, expr, (int)got, ncclGetErrorString(got), (int)want,
               ncclGetErrorString(want), err ? err : "(null)");
  if (want == ncclSuccess) return;
  cr_assert(err != NULL && err[0] != '\0', "line %d: %s failed with an empty ncclGetLastError()",
            line, expr);
  if (needle1)
    cr_assert(strcasestr(err, needle1) != NULL,
              "line %d: %s: last error \"%s\" does not mention \"%s\"", line, expr, err, needle1);
  if (needle2)
    cr_assert(strcasestr(err, needle2) != NULL,
              "line %d: %s: last error \"%s\" does not mention \"%s\"", line, expr, err, needle2);
}

/* Clears the last error first, so the text checked is the one this call left. */
#define EXPECT2(call, code, needle1, needle2)                                  \
  do {                                                                         \
    snapccl_clear_last_error();                                                \
    ncclResult_t r_ = (call);                                                  \
    check_result(#call, __LINE__, r_, (code), (needle1), (needle2));           \
  } while (0)
#define EXPECT(call, code, needle) EXPECT2(call, code, needle, NULL)
/* For ncclGroupEnd reporting the error of a call made inside the group: the reason is
 * the one that call left, so the last error is not cleared first. */
#define EXPECT_KEEP(call, code, needle)                                        \
  do {                                                                         \
    ncclResult_t r_ = (call);                                                  \
    check_result(#call, __LINE__, r_, (code), (needle), NULL);                 \
  } while (0)
#define EXPECT_OK(call) EXPECT2(call, ncclSuccess, NULL, NULL)

/* A communicator as far as the API's checks can tell: initialized, registered, with
 * nranks ranks, but no bootstrap, transport or GPU behind it. */
static inline struct snapccl_comm* fake_new(int nranks, int rank) {
  struct snapccl_comm* c = NULL;
  cr_assert_eq(snapccl_comm_alloc(&c), ncclSuccess);
  cr_assert_not_null(c);
  cr_assert_eq(snapccl_config_parse(NULL, &c->config), ncclSuccess);
  c->nranks = nranks;
  c->rank = rank;
  c->cuda_dev = 3;
  atomic_store(&c->async_state, ncclSuccess);
  cr_assert_eq(snapccl_registry_add(c, c), ncclSuccess);
  return c;
}

static inline void fake_free(struct snapccl_comm* c) {
  if (snapccl_registry_remove(c) == c) snapccl_comm_free(c);
}

#define H(c) ((ncclComm_t)(c))

static inline int have_gpu(void) {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

static inline ncclUniqueId zero_id(void) {
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  return id;
}

static inline void setup(void) {
  /* Standalone mode: no real NCCL to hand unknown handles to. */
  unsetenv("SNAPCCL_NCCL_LIB");
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "5", 1);
  unsetenv("SNAPCCL_SOCKET_IFNAME");
  unsetenv("NCCL_SOCKET_IFNAME");
  snapccl_env_reload();
}

/* A handle that was never a communicator (never dereferenced by a correct library). */
#define BOGUS_COMM ((ncclComm_t)(uintptr_t)0x7f00deadbee0ull)

/* Send and receive buffers the calls point at (never touched: every call fails or
 * returns before it would). */
extern float g_sendbuf[64], g_recvbuf[64 * 8];

#endif
