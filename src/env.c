#include "env.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernels/lowprec.h"
#include "log.h"
#include "snapccl.h"

enum kind { K_INT, K_I64, K_DOUBLE, K_STR, K_NAME };

/* K_NAME: the words a setting takes (any case), and the int each one stores. */
struct name_value {
  const char* name;
  int value;
};

struct setting {
  struct snapccl_env_entry e;
  enum kind kind;
  size_t offset;
  size_t size; /* of the destination, for strings */
  const struct name_value* names; /* K_NAME: NULL-terminated */
  /* After parsing: 0 when the value is not one the setting takes (the default is used
   * instead); may also adjust it. NULL: every parsed value is taken. */
  int (*check)(void* value);
  const char* expect; /* what a valid value is, for the warning; NULL: "a valid value" */
  int debug;          /* one of the log's own settings (snapccl_env_reload_debug) */
  /* Numbers: the accepted range; lo == hi == 0 means the type's whole range. A value
   * outside it, beyond the type, not finite, or (strings) not fitting its buffer is
   * refused: a wrapped integer or a cut path would be another setting than asked for. */
  long long lo, hi;
};

#define F(field) \
  .offset = offsetof(struct snapccl_env, field), .size = sizeof(((struct snapccl_env*)0)->field)

static const struct name_value lowprec_formats[] = {
    {"off", SNAPCCL_LOWPREC_OFF}, {"none", SNAPCCL_LOWPREC_OFF}, {"0", SNAPCCL_LOWPREC_OFF},
    {"fp8", SNAPCCL_LOWPREC_FP8}, {"e4m3", SNAPCCL_LOWPREC_FP8}, {"int8", SNAPCCL_LOWPREC_INT8},
    {"int4", SNAPCCL_LOWPREC_INT4}, {NULL, 0}};

static int name_lookup(const struct name_value* names, const char* s) {
  for (const struct name_value* n = names; n->name; n++)
    if (!strcasecmp(s, n->name)) return n->value;
  return -1;
}

int snapccl_lowprec_parse_format(const char* s) {
  return !s || !*s ? SNAPCCL_LOWPREC_OFF : name_lookup(lowprec_formats, s);
}

int snapccl_lowprec_group_ok(int group) {
  return group >= SNAPCCL_LP_GROUP_MIN && group <= SNAPCCL_LP_GROUP_MAX && group % 32 == 0;
}

static int check_lowprec_group(void* v) { return snapccl_lowprec_group_ok(*(int*)v); }
/* A byte count below 0 means none: every size qualifies. */
static int check_not_negative(void* v) {
  if (*(int64_t*)v < 0) *(int64_t*)v = 0;
  return 1;
}

static const struct setting table[] = {
    {{"SNAPCCL_DEBUG", "NCCL_DEBUG", "",
      "log level: VERSION, WARN, INFO or TRACE; unset (or anything else): nothing is logged"},
     .kind = K_STR, F(debug), .debug = 1},
    {{"SNAPCCL_DEBUG_SUBSYS", "NCCL_DEBUG_SUBSYS", "ALL",
      "subsystems logged at INFO, comma-separated: INIT, COLL, BOOT, TRANSPORT, ALGO, ENV, "
      "INTERPOSE, ALL; a leading ^ logs all but those"},
     .kind = K_STR, F(debug_subsys), .debug = 1},
    {{"SNAPCCL_SHARED_GPU", NULL, "0",
      "1 lets several ranks of one communicator use the same GPU (test beds); 0 refuses "
      "them like NCCL (\"Duplicate GPU detected\")"},
     .kind = K_INT, F(shared_gpu), .lo = 0, .hi = 1},
    {{"SNAPCCL_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME", "",
      "network interface of the bootstrap sockets (prefix match, ^ excludes, = exact); "
      "empty: loopback, which serves every rank of one host"},
     .kind = K_STR, F(socket_ifname)},
    {{"SNAPCCL_BOOTSTRAP_TIMEOUT", NULL, "120",
      "seconds that one bootstrap connect, accept, send or receive may take"},
     .kind = K_DOUBLE, F(bootstrap_timeout_s), .lo = 0, .hi = 10000000},
    {{"SNAPCCL_TIMEOUT_MS", NULL, "300000",
      "milliseconds a device-side wait for a peer may take before the collective fails "
      "with ncclRemoteError; large enough for processes time-slicing one GPU"},
     .kind = K_I64, F(timeout_ms), .lo = 1, .hi = 1000000000000},
    {{"SNAPCCL_BUFFSIZE", NULL, "67108864",
      "bytes of staging memory per rank and communicator (rounded to what the layout "
      "needs); larger means fewer pipeline rounds"},
     .kind = K_I64, F(buffsize), .lo = 0, .hi = 1ll << 40},
    {{"SNAPCCL_ALGO", NULL, "",
      "force algorithms: <collective>:<name>[,...], e.g. allreduce:twoshot,allgather:direct "
      "(and fused:<name> for the fused all-reduce + RMSNorm); a call the forced algorithm "
      "cannot run fails with the reason, or goes to NVIDIA's NCCL when interposed"},
     .kind = K_STR, F(algo)},
    {{"SNAPCCL_MAX_BLOCKS", NULL, "0",
      "upper bound on thread blocks per rank and call (0: half the GPU's block slots by occupancy, at most 128)"},
     .kind = K_INT, F(max_blocks), .lo = 0, .hi = 1024},
    {{"SNAPCCL_NCCL_LIB", NULL, "",
      "path of NVIDIA's libnccl.so.2 to hand unsupported calls to when snapccl is linked "
      "in place of libnccl"},
     .kind = K_STR, F(nccl_lib)},
    {{"SNAPCCL_NVLS", NULL, "0",
      "1 allows NVLink multicast where the hardware, NCCL_NVLS_ENABLE and every rank agree; "
      "never set it on shared hosts that forbid multicast"},
     .kind = K_INT, F(nvls), .lo = 0, .hi = 1},
    {{"NCCL_NVLS_ENABLE", NULL, "",
      "NCCL's own multicast switch, respected: set to 0 (or to anything but a number), it "
      "keeps snapccl's NVLink multicast off too"},
     .kind = K_STR, F(nccl_nvls_enable)},
    {{"SNAPCCL_LOWPREC", NULL, "off",
      "opt-in lossy all-reduce: off, fp8 (E4M3), int8 or int4; sum and avg of float16, "
      "bfloat16 and float32 travel quantised in groups with one scale each (docs/LOWPREC.md)"},
     .kind = K_NAME, F(lowprec), .names = lowprec_formats,
     .expect = "off, fp8, int8 or int4"},
    {{"SNAPCCL_LOWPREC_GROUP", NULL, "256",
      "elements per low-precision group (one fp32 scale each): a multiple of 32 from 32 to 1024"},
     .kind = K_INT, F(lowprec_group), .check = check_lowprec_group, .lo = 32, .hi = 1024,
     .expect = "a multiple of 32 from 32 to 1024"},
    {{"SNAPCCL_LOWPREC_MIN_BYTES", NULL, "8388608",
      "all-reduces smaller than this many bytes stay in full precision when SNAPCCL_LOWPREC is on"},
     .kind = K_I64, F(lowprec_min_bytes), .check = check_not_negative},
    {{"SNAPCCL_TUNING_FILE", NULL, "",
      "tuning file written by perf/tune.py, read at each communicator's init; where it covers "
      "a call, its measured times choose the algorithm (NVIDIA's NCCL included). Empty: "
      "$XDG_CACHE_HOME/snapccl/tuning-<topology hash>.txt (~/.cache without XDG_CACHE_HOME) if "
      "there is one"},
     .kind = K_STR, F(tuning_file)},
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct snapccl_env g_env;
static int g_loaded;
static unsigned long long g_generation; /* reloads so far (snapccl_env_generation) */

/* The type's own range, where the table gives none. */
static void type_range(const struct setting* s, long long* lo, long long* hi) {
  *lo = s->lo;
  *hi = s->hi;
  if (*lo || *hi) return;
  if (s->kind == K_INT) *lo = INT_MIN, *hi = INT_MAX;
  else *lo = LLONG_MIN, *hi = LLONG_MAX;
}

/* Stores text v into dst as s takes it; returns 0 with the reason in why if v does not
 * parse, lies outside the range, does not fit, or fails the check. */
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
      break;
    }
    case K_DOUBLE: {
      double x = strtod(v, &end);
      if (end == v || *end) return snprintf(why, wlen, "is not a number"), 0;
      /* !(x >= lo) also catches NaN. */
      if (errno == ERANGE || !isfinite(x) || !(x >= (double)lo) || !(x <= (double)hi))
        return snprintf(why, wlen, "is not a finite number in [%lld, %lld]", lo, hi), 0;
      *(double*)dst = x;
      break;
    }
    case K_STR: {
      size_t n = strlen(v);
      if (n >= s->size)
        return snprintf(why, wlen, "is %zu characters long, more than the %zu allowed", n,
                        s->size - 1), 0;
      memcpy(dst, v, n + 1);
      break;
    }
    case K_NAME: {
      int x = name_lookup(s->names, v);
      if (x < 0) return snprintf(why, wlen, "is not %s", s->expect ? s->expect : "a valid value"), 0;
      *(int*)dst = x;
      break;
    }
  }
  if (s->check && !s->check(dst))
    return snprintf(why, wlen, "is not %s", s->expect ? s->expect : "a valid value"), 0;
  return 1;
}

#define NSETTINGS (sizeof table / sizeof table[0])

/* What a reading of the environment has to say: at most a line per setting, logged once
 * the settings are in place (logging itself reads SNAPCCL_DEBUG from them). */
struct notes {
  int n;
  struct {
    enum snapccl_log_level level;
    char text[400];
  } line[NSETTINGS];
};

static void note(struct notes* n, enum snapccl_log_level level, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct notes* n, enum snapccl_log_level level, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(n->line[n->n].text, sizeof n->line[n->n].text, fmt, ap);
  va_end(ap);
  n->line[n->n++].level = level;
}

static void flush(const struct notes* n) {
  for (int i = 0; i < n->n; i++)
    snapccl_log(n->line[i].level, n->line[i].level == LOG_WARN ? SUB_ALL : SUB_ENV, __FILE__,
                __LINE__, "%s", n->line[i].text);
}

static void parse_one(const struct setting* s, struct snapccl_env* env, struct notes* n) {
  const char* src = s->e.name;
  const char* v = getenv(src);
  if ((!v || !*v) && s->e.fallback) v = getenv(src = s->e.fallback);
  char* dst = (char*)env + s->offset;
  char why[96];
  if (v && *v) {
    if (store(s, dst, v, why, sizeof why)) {
      note(n, LOG_INFO, "%s set by environment to %s", src, v);
      return;
    }
    /* The value may be long (that may be why it is refused): its start is enough. */
    note(n, LOG_WARN, "%s=%.80s%s %s; using the default %s", src, v, strlen(v) > 80 ? "..." : "",
         why, s->e.def[0] ? s->e.def : "(empty)");
  }
  store(s, dst, s->e.def, why, sizeof why); /* defaults always parse */
}

int snapccl_env_parse_value(const char* name, const char* value, struct snapccl_env* env,
                            char* why, size_t wlen) {
  for (size_t i = 0; i < NSETTINGS; i++) {
    const struct setting* s = &table[i];
    if (strcmp(s->e.name, name) != 0) continue;
    char* dst = (char*)env + s->offset;
    if (!store(s, dst, s->e.def, why, wlen)) return 0;
    return store(s, dst, value, why, wlen);
  }
  snprintf(why, wlen, "is no setting");
  return 0;
}

/* All settings, or (debug_only) the log's, the others kept as they are. */
static void load_locked(int debug_only, struct notes* n) {
  struct snapccl_env env = g_env;
  if (!debug_only) memset(&env, 0, sizeof env);
  for (size_t i = 0; i < NSETTINGS; i++)
    if (!debug_only || table[i].debug) parse_one(&table[i], &env, n);
  g_env = env;
  __atomic_store_n(&g_loaded, 1, __ATOMIC_RELEASE);
}

const struct snapccl_env* snapccl_env(void) {
  if (!__atomic_load_n(&g_loaded, __ATOMIC_ACQUIRE)) {
    struct notes n = {0};
    pthread_mutex_lock(&g_lock);
    if (!g_loaded) load_locked(0, &n);
    pthread_mutex_unlock(&g_lock);
    flush(&n);
  }
  return &g_env;
}

static void reload(int debug_only) {
  struct notes n = {0};
  pthread_mutex_lock(&g_lock);
  load_locked(debug_only, &n);
  pthread_mutex_unlock(&g_lock);
  /* SNAPCCL_ALGO and the low-precision settings decide choices of algorithm: the
   * remembered ones (algos/select_cache.h) hold only for the settings they saw. */
  __atomic_add_fetch(&g_generation, 1, __ATOMIC_ACQ_REL);
  snapccl_log_reload();
  flush(&n);
}

void snapccl_env_reload(void) { reload(0); }
unsigned long long snapccl_env_generation(void) { return __atomic_load_n(&g_generation, __ATOMIC_ACQUIRE); }
void snapccl_env_reload_debug(void) { reload(1); }

size_t snapccl_env_table(const struct snapccl_env_entry** entries) {
  static struct snapccl_env_entry list[NSETTINGS];
  for (size_t i = 0; i < NSETTINGS; i++) list[i] = table[i].e;
  *entries = list;
  return NSETTINGS;
}
