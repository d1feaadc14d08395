/* libFuzzer target: the settings parsers on arbitrary input, as a user (or a job
 * launcher's environment) can give them.
 *
 * The first byte picks what is parsed:
 *   0  one value of one setting of env.c's table (the second byte picks the setting),
 *      parsed twice: the same verdict, the same bytes;
 *   1  one variable through the environment itself (setenv, snapccl_env_reload), which
 *      also re-reads the logging settings (SNAPCCL_DEBUG, SNAPCCL_DEBUG_SUBSYS);
 *   2  an ncclConfig_t of arbitrary size, version and contents, in a buffer exactly as
 *      long as its size field says, so a read past what the caller's struct had is an
 *      AddressSanitizer report;
 *   3  SNAPCCL_SOCKET_IFNAME's interface filter (snapccl_socket_pick_addr). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "env.h"
#include "error.h"
#include "socket.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

/* The input as a string (NULs inside end it early, as the environment would). */
static char* text_of(const uint8_t* d, size_t n) {
  char* s = malloc(n + 1);
  CHECK(s);
  memcpy(s, d, n);
  s[n] = 0;
  return s;
}

static void one_value(const uint8_t* d, size_t n) {
  const struct snapccl_env_entry* e;
  size_t count = snapccl_env_table(&e);
  if (n < 1 || !count) return;
  const char* name = e[d[0] % count].name;
  char* v = text_of(d + 1, n - 1);
  struct snapccl_env a, b;
  char why_a[128] = "", why_b[128] = "";
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  int ok_a = snapccl_env_parse_value(name, v, &a, why_a, sizeof why_a);
  int ok_b = snapccl_env_parse_value(name, v, &b, why_b, sizeof why_b);
  CHECK(ok_a == ok_b && memcmp(&a, &b, sizeof a) == 0);
  CHECK(ok_a || why_a[0]);
  free(v);
}

static void through_environment(const uint8_t* d, size_t n) {
  static const char* const names[] = {"SNAPCCL_DEBUG", "SNAPCCL_DEBUG_SUBSYS", "NCCL_DEBUG_SUBSYS",
                                      "SNAPCCL_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME",
                                      "SNAPCCL_BOOTSTRAP_TIMEOUT", "SNAPCCL_ALGO",
                                      "SNAPCCL_NCCL_LIB", "SNAPCCL_MAX_BLOCKS"};
  if (n < 1) return;
  const char* name = names[d[0] % (sizeof names / sizeof names[0])];
  char* v = text_of(d + 1, n - 1);
  setenv(name, v, 1);
  snapccl_env_reload();
  const struct snapccl_env* env = snapccl_env();
  /* Strings are whole or absent, always terminated; numbers in range. */
  CHECK(memchr(env->socket_ifname, 0, sizeof env->socket_ifname));
  CHECK(memchr(env->algo, 0, sizeof env->algo) && memchr(env->nccl_lib, 0, sizeof env->nccl_lib));
  CHECK(env->max_blocks >= 0 && env->max_blocks <= 1024);
  CHECK(env->bootstrap_timeout_s >= 0 && env->bootstrap_timeout_s <= 1e7);
  unsetenv(name);
  free(v);
}

static void config(const uint8_t* d, size_t n) {
  enum { HEAD = offsetof(ncclConfig_t, blocking) }; /* size, magic, version: in every release */
  if (n < HEAD) return;
  /* The caller's promise: its struct is .size bytes long (and has the head). The buffer
   * is exactly that long, so AddressSanitizer reports any read past it. */
  size_t sz;
  memcpy(&sz, d, sizeof sz);
  if (sz > n) sz = n;
  size_t len = sz < HEAD ? HEAD : sz;
  uint8_t* buf = malloc(len);
  CHECK(buf);
  memcpy(buf, d, len);
  memcpy(buf, &sz, sizeof sz);
  /* Pointers point at a string, or are NULL, as a valid caller's do. */
  static const char name[] = "fuzzed";
  const char* ptrs[2] = {NULL, name};
  const size_t offs[2] = {offsetof(ncclConfig_t, netName), offsetof(ncclConfig_t, commName)};
  for (int i = 0; i < 2; i++)
    if (offs[i] + sizeof(char*) <= len) memcpy(buf + offs[i], &ptrs[buf[offs[i]] & 1], sizeof(char*));
  struct snapccl_config out;
  ncclResult_t r = snapccl_config_parse((const ncclConfig_t*)(void*)buf, &out);
  CHECK(r == ncclSuccess || r == ncclInvalidArgument);
  if (r == ncclSuccess) {
    CHECK(out.blocking == 0 || out.blocking == 1);
    CHECK(out.min_ctas >= 0 && out.max_ctas >= 0);
    CHECK(!out.max_ctas || out.min_ctas <= out.max_ctas);
    CHECK(memchr(out.name, 0, sizeof out.name));
  }
  free(buf);
}

static void ifname(const uint8_t* d, size_t n) {
  char* v = text_of(d, n);
  union snapccl_sockaddr a;
  ncclResult_t r = snapccl_socket_pick_addr(v, &a);
  CHECK(r == ncclSuccess || r == ncclSystemError);
  if (r == ncclSuccess) CHECK(a.sa.sa_family == AF_INET || a.sa.sa_family == AF_INET6);
  free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n < 1) return 0;
  switch (d[0] % 4) {
    case 0: one_value(d + 1, n - 1); break;
    case 1: through_environment(d + 1, n - 1); break;
    case 2: config(d + 1, n - 1); break;
    default: ifname(d + 1, n - 1); break;
  }
  return 0;
}
