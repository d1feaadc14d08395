/* The environment settings (src/env.c): values that do not parse, lie outside a
 * setting's range, would wrap in its type, or do not fit its buffer are refused with a
 * WARN naming the variable, and the default stands; values at the limits are taken. */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "env.h"

static const char* const touched[] = {
    "SNAPCCL_SHARED_GPU", "SNAPCCL_MAX_BLOCKS", "SNAPCCL_LOWPREC_GROUP", "SNAPCCL_NCCL_LIB",
    "SNAPCCL_BOOTSTRAP_TIMEOUT", "SNAPCCL_TIMEOUT_MS", "SNAPCCL_BUFFSIZE", "SNAPCCL_SOCKET_IFNAME",
    "NCCL_SOCKET_IFNAME", "SNAPCCL_NVLS", "SNAPCCL_ALGO", "SNAPCCL_LOWPREC_MIN_BYTES"};

static void setup(void) {
  for (size_t i = 0; i < sizeof touched / sizeof touched[0]; i++) unsetenv(touched[i]);
  setenv("SNAPCCL_DEBUG", "WARN", 1);
  snapccl_env_reload();
}

TestSuite(settings, .init = setup);

/* Re-reads the environment with stderr going to a file; returns what was logged. */
static char* reload_logged(void) {
  char path[] = "/tmp/snapccl_settings_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  fflush(stderr);
  int saved = dup(2);
  cr_assert_geq(saved, 0);
  cr_assert_eq(dup2(fd, 2), 2);
  snapccl_env_reload();
  fflush(stderr);
  cr_assert_eq(dup2(saved, 2), 2);
  close(saved);
  off_t n = lseek(fd, 0, SEEK_END);
  char* text = calloc(1, (size_t)n + 1);
  cr_assert_eq(pread(fd, text, (size_t)n, 0), n);
  close(fd);
  return text;
}

/* The values of the report: each wrapped silently into another setting. */
Test(settings, wrapping_integers_refused) {
  setenv("SNAPCCL_LOWPREC_GROUP", "4294967328", 1); /* 2^32 + 32: read as 32 */
  setenv("SNAPCCL_MAX_BLOCKS", "-4294967295", 1);   /* read as 1 */
  setenv("SNAPCCL_SHARED_GPU", "4294967296", 1);    /* read as 0 */
  setenv("SNAPCCL_TIMEOUT_MS", "99999999999999999999", 1); /* beyond int64 */
  char* log = reload_logged();
  const struct snapccl_env* e = snapccl_env();
  cr_assert_eq(e->lowprec_group, 256);
  cr_assert_eq(e->max_blocks, 0);
  cr_assert_eq(e->shared_gpu, 0);
  cr_assert_eq(e->timeout_ms, 300000);
  const char* names[] = {"SNAPCCL_LOWPREC_GROUP", "SNAPCCL_MAX_BLOCKS", "SNAPCCL_SHARED_GPU",
                         "SNAPCCL_TIMEOUT_MS"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    char want[96];
    snprintf(want, sizeof want, "WARN %s=", names[i]);
    cr_assert(strstr(log, want) != NULL, "no WARN naming %s in:\n%s", names[i], log);
  }
  cr_assert(strstr(log, "using the default 256") != NULL, "%s", log);
  free(log);
}

Test(settings, out_of_range_refused) {
  setenv("SNAPCCL_SHARED_GPU", "2", 1);
  setenv("SNAPCCL_NVLS", "-1", 1);
  setenv("SNAPCCL_LOWPREC_GROUP", "2048", 1);
  setenv("SNAPCCL_BUFFSIZE", "-1", 1);
  setenv("SNAPCCL_BOOTSTRAP_TIMEOUT", "nan", 1);
  char* log = reload_logged();
  const struct snapccl_env* e = snapccl_env();
  cr_assert_eq(e->shared_gpu, 0);
  cr_assert_eq(e->nvls, 0);
  cr_assert_eq(e->lowprec_group, 256);
  cr_assert_eq(e->buffsize, 67108864);
  cr_assert(e->bootstrap_timeout_s == 120.0, "%g", e->bootstrap_timeout_s);
  const char* names[] = {"SNAPCCL_SHARED_GPU=2", "SNAPCCL_NVLS=-1", "SNAPCCL_LOWPREC_GROUP=2048",
                         "SNAPCCL_BUFFSIZE=-1", "SNAPCCL_BOOTSTRAP_TIMEOUT=nan"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    cr_assert(strstr(log, names[i]) != NULL, "no WARN about %s in:\n%s", names[i], log);
  free(log);
}

/* A path one character too long is refused whole: a truncated SNAPCCL_NCCL_LIB would
 * dlopen another file. */
Test(settings, long_strings_refused_not_cut) {
  char path[600];
  memset(path, 'a', sizeof path - 1);
  path[0] = '/';
  path[sizeof path - 1] = 0;
  setenv("SNAPCCL_NCCL_LIB", path, 1);
  char ifname[80];
  memset(ifname, 'e', sizeof ifname - 1);
  ifname[sizeof ifname - 1] = 0;
  setenv("SNAPCCL_SOCKET_IFNAME", ifname, 1);
  char* log = reload_logged();
  const struct snapccl_env* e = snapccl_env();
  cr_assert_str_eq(e->nccl_lib, "", "a cut path was kept: %.40s...", e->nccl_lib);
  cr_assert_str_eq(e->socket_ifname, "");
  cr_assert(strstr(log, "SNAPCCL_NCCL_LIB=") != NULL, "%s", log);
  cr_assert(strstr(log, "SNAPCCL_SOCKET_IFNAME=") != NULL, "%s", log);
  free(log);
  /* The longest that fits is taken as it is. */
  path[sizeof e->nccl_lib - 1] = 0;
  setenv("SNAPCCL_NCCL_LIB", path, 1);
  free(reload_logged());
  cr_assert_str_eq(snapccl_env()->nccl_lib, path);
}

/* Values at and just beyond each limit, through the parser alone. */
Test(settings, limits) {
  const struct {
    const char* name;
    const char* value;
    int ok;
  } cases[] = {
      {"SNAPCCL_SHARED_GPU", "0", 1},          {"SNAPCCL_SHARED_GPU", "1", 1},
      {"SNAPCCL_SHARED_GPU", "-1", 0},         {"SNAPCCL_SHARED_GPU", "1x", 0},
      {"SNAPCCL_SHARED_GPU", "", 0},           {"SNAPCCL_SHARED_GPU", "0x1", 1},
      {"SNAPCCL_MAX_BLOCKS", "1024", 1},       {"SNAPCCL_MAX_BLOCKS", "1025", 0},
      {"SNAPCCL_LOWPREC_GROUP", "32", 1},      {"SNAPCCL_LOWPREC_GROUP", "31", 0},
      {"SNAPCCL_TIMEOUT_MS", "1", 1},          {"SNAPCCL_TIMEOUT_MS", "0", 0},
      {"SNAPCCL_TIMEOUT_MS", "1000000000000", 1}, {"SNAPCCL_TIMEOUT_MS", "1000000000001", 0},
      {"SNAPCCL_BUFFSIZE", "1099511627776", 1}, {"SNAPCCL_BUFFSIZE", "1099511627777", 0},
      {"SNAPCCL_LOWPREC_MIN_BYTES", "-9223372036854775808", 1},
      {"SNAPCCL_LOWPREC_MIN_BYTES", "9223372036854775807", 1},
      {"SNAPCCL_LOWPREC_MIN_BYTES", "9223372036854775808", 0},
      {"SNAPCCL_BOOTSTRAP_TIMEOUT", "0.5", 1}, {"SNAPCCL_BOOTSTRAP_TIMEOUT", "-0.5", 0},
      {"SNAPCCL_BOOTSTRAP_TIMEOUT", "inf", 0}, {"SNAPCCL_BOOTSTRAP_TIMEOUT", "1e999", 0},
      {"SNAPCCL_BOOTSTRAP_TIMEOUT", "10000001", 0},
      {"SNAPCCL_NO_SUCH_SETTING", "1", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct snapccl_env env;
    char why[128] = "";
    memset(&env, 0x5a, sizeof env);
    int ok = snapccl_env_parse_value(cases[i].name, cases[i].value, &env, why, sizeof why);
    cr_assert_eq(ok, cases[i].ok, "%s=%s: %s (%s)", cases[i].name, cases[i].value,
                 ok ? "accepted" : "refused", why);
    if (!ok) cr_assert(why[0], "%s=%s refused without a reason", cases[i].name, cases[i].value);
  }
  struct snapccl_env env;
  char why[128];
  cr_assert(snapccl_env_parse_value("SNAPCCL_MAX_BLOCKS", "077", &env, why, sizeof why));
  cr_assert_eq(env.max_blocks, 63, "strtol's bases, as NCCL's settings");
  cr_assert(!snapccl_env_parse_value("SNAPCCL_MAX_BLOCKS", "-4294967295", &env, why, sizeof why));
  cr_assert_eq(env.max_blocks, 0, "a refused value leaves the default");
}
