#include "env.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

enum kind { K_INT, K_I64, K_DOUBLE, K_STR };

/* A setting: where it lands, and which values it accepts. A value that does not parse,
 * lies outside [lo, hi], or (strings) does not fit, is refused with a WARN naming the
 * variable, and the default stands: a wrapped integer or a truncated path would be a
 * different setting than the one asked for. lo == hi == 0 means the whole range of the
 * field's type; doubles must also be finite. */
struct setting {
  struct snapccl_env_entry e;
  enum kind kind;
  size_t offset;
  size_t size; /* of the destination */
  long long lo, hi;
};

/* F: a field that takes its type's whole range; R: one limited to [lo, hi]. */
#define F(field) offsetof(struct snapccl_env, field), sizeof(((struct snapccl_env*)0)->field), 0, 0
#define R(field, lo, hi) \
  offsetof(struct snapccl_env, field), sizeof(((struct snapccl_env*)0)->field), lo, hi

static const struct setting table[] = {
    {{"SNAPCCL_SHARED_GPU", NULL, "0",
      "1 lets several ranks of one communicator use the same GPU (test beds); 0 refuses "
      "them like NCCL (\"Duplicate GPU detected\")"},
     K_INT, R(shared_gpu, 0, 1)},
    {{"SNAPCCL_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "",
      "network interface of the bootstrap sockets (prefix match, ^ excludes, = exact); "
      "empty: loopback, which serves every rank of one host"},
     K_STR, F(socket_ifname)},
    {{"SNAPCCL_BOOTSTRAP_TIMEOUT", NULL, "120",
      "seconds that one bootstrap connect, accept, send or receive may take"},
     K_DOUBLE, R(bootstrap_timeout_s, 0, 10000000)},
    {{"SNAPCCL_TIMEOUT_MS", NULL, "300000",
      "milliseconds a device-side wait for a peer may take before the collective fails "
      "with ncclRemoteError; large enough for processes time-slicing one GPU"},
     K_I64, R(timeout_ms, 1, 1000000000000)},
    {{"SNAPCCL_BUFFSIZE", NULL, "67108864",
      "bytes of staging memory per rank and communicator (rounded to what the layout "
      "needs); larger means fewer pipeline rounds"},
     K_I64, R(buffsize, 0, 1ll << 40)},
    {{"SNAPCCL_ALGO", NULL, "",
      "force algorithms: <collective>:<name>[,...], e.g. allreduce:twoshot,allgather:direct "
      "(and fused:<name> for the fused all-reduce + RMSNorm); a call the forced algorithm "
      "cannot run fails with the reason, or goes to NVIDIA's NCCL when interposed"},
     K_STR, F(algo)},
    {{"SNAPCCL_MAX_BLOCKS", NULL, "0",
      "upper bound on thread blocks per rank and call (0: half the GPU's block slots by occupancy, at most 128)"},
     K_INT, R(max_blocks, 0, 1024)},
    {{"SNAPCCL_NCCL_LIB", NULL, "",
      "path of NVIDIA's libnccl.so.2 to hand unsupported calls to when snapccl is linked "
      "in place of libnccl"},
     K_STR, F(nccl_lib)},
    {{"SNAPCCL_NVLS", NULL, "0",
      "1 allows NVLink multicast where the hardware, NCCL_NVLS_ENABLE and every rank agree; "
      "never set it on shared hosts that forbid multicast"},
     K_INT, R(nvls, 0, 1)},
    {{"SNAPCCL_LOWPREC", NULL, "off",
      "opt-in lossy all-reduce: off, fp8 (E4M3), int8 or int4; sum and avg of float16, "
      "bfloat16 and float32 travel quantised in groups with one scale each (docs/LOWPREC.md)"},
     K_STR, F(lowprec)},
    {{"SNAPCCL_LOWPREC_GROUP", NULL, "256",
      "elements per low-precision group (one fp32 scale each): a multiple of 32 from 32 to 1024"},
     K_INT, R(lowprec_group, 32, 1024)},
    {{"SNAPCCL_LOWPREC_MIN_BYTES", NULL, "8388608",
      "all-reduces smaller than this many bytes stay in full precision when SNAPCCL_LOWPREC is on"},
     K_I64, F(lowprec_min_bytes)},
    /* @lowprec-env@ */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapccl_env g_env;
static int g_loaded;

/* The type's own range, where the table gives none. */
static void type_range(const struct setting* s, long long* lo, long long* hi) {
  *lo = s->lo;
  *hi = s->hi;
  if (*lo || *hi) return;
  if (s->kind == K_INT) *lo = INT_MIN, *hi = INT_MAX;
  else *lo = LLONG_MIN, *hi = LLONG_MAX;
}

/* Stores text v into dst as setting s; returns 0 with the reason in why if v is refused
 * (dst is then untouched). */
static int store(const struct setting* s, char* dst, const char* v, char* why, size_t wlen) {
  char* end = NULL;
  long long lo, hi;
  type_range(s, &lo, &hi);
  errno = 0;
  switch (s->kind) {
    case K_INT:
    case K_I64: {
      long long x = strtoll(v, &end, 0);
      if (end == v || *end) return snprintf(why, wlen, "is not an integer"), 0;
      if (errno == ERANGE || x < lo || x > hi)
        return snprintf(why, wlen, "is outside [%lld, %lld]", lo, hi), 0;
      if (s->kind == K_INT) *(int*)dst = (int)x;
      else *(int64_t*)dst = x;
      return 1;
    }
    case K_DOUBLE: {
      double x = strtod(v, &end);
      if (end == v || *end) return snprintf(why, wlen, "is not a number"), 0;
      /* !(x >= lo) also catches NaN. */
      if (errno == ERANGE || !isfinite(x) || !(x >= (double)lo) || !(x <= (double)hi))
        return snprintf(why, wlen, "is not a finite number in [%lld, %lld]", lo, hi), 0;
      *(double*)dst = x;
      return 1;
    }
    case K_STR: {
      size_t n = strlen(v);
      if (n >= s->size)
        return snprintf(why, wlen, "is %zu characters long, more than the %zu allowed", n,
                        s->size - 1), 0;
      memcpy(dst, v, n + 1);
      return 1;
    }
  }
  return snprintf(why, wlen, "has an unknown kind"), 0;
}

static void parse_one(const struct setting* s, struct snapccl_env* env) {
  const char* src = s->e.name;
  const char* v = getenv(src);
  if ((!v || !*v) && s->e.fallback) v = getenv(src = s->e.fallback);
  char* dst = (char*)env + s->offset;
  char why[96];
  if (!store(s, dst, s->e.def, why, sizeof why)) /* defaults always parse */
    WARN("default of %s %s", s->e.name, why);
  if (!v || !*v) return;
  if (store(s, dst, v, why, sizeof why)) {
    INFO(SUB_ENV, "%s set by environment to %s", src, v);
    return;
  }
  /* The value may be long (that may be why it is refused): show its start. */
  WARN("%s=%.80s%s %s; using the default %s", src, v, strlen(v) > 80 ? "..." : "", why,
       s->e.def[0] ? s->e.def : "(empty)");
}

int snapccl_env_parse_value(const char* name, const char* value, struct snapccl_env* env,
                            char* why, size_t wlen) {
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
    const struct setting* s = &table[i];
    if (strcmp(s->e.name, name) != 0) continue;
    char* dst = (char*)env + s->offset;
    if (!store(s, dst, s->e.def, why, wlen)) return 0;
    return store(s, dst, value, why, wlen);
  }
  snprintf(why, wlen, "is no setting");
  return 0;
}

static void load_locked(void) {
  static unsigned long long generation;
  struct snapccl_env env;
  memset(&env, 0, sizeof env);
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) parse_one(&table[i], &env);
  env.generation = ++generation;
  g_env = env;
  __atomic_store_n(&g_loaded, 1, __ATOMIC_RELEASE);
}

const struct snapccl_env* snapccl_env(void) {
  if (!__atomic_load_n(&g_loaded, __ATOMIC_ACQUIRE)) {
    pthread_mutex_lock(&g_lock);
    if (!g_loaded) load_locked();
    pthread_mutex_unlock(&g_lock);
  }
  return &g_env;
}

void snapccl_env_reload(void) {
  pthread_mutex_lock(&g_lock);
  load_locked();
  pthread_mutex_unlock(&g_lock);
  snapccl_log_reload();
}

size_t snapccl_env_table(const struct snapccl_env_entry** entries) {
  static struct snapccl_env_entry list[sizeof table / sizeof table[0]];
  for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) list[i] = table[i].e;
  *entries = list;
  return sizeof table / sizeof table[0];
}
