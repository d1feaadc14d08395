#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "env.h"

static struct {
  pthread_mutex_t lock;
  int loaded;
  enum snapccl_log_level level;
  unsigned subsys;
  char host[64];
} g_log = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Thread_local int t_device = -1;

static const struct {
  const char* name;
  unsigned bit;
} subsys_names[] = {
    {"INIT", SUB_INIT},   {"COLL", SUB_COLL},           {"BOOT", SUB_BOOT},
    {"BOOTSTRAP", SUB_BOOT}, {"TRANSPORT", SUB_TRANSPORT}, {"P2P", SUB_TRANSPORT},
    {"ALGO", SUB_ALGO},   {"TUNING", SUB_ALGO},         {"ENV", SUB_ENV},
    {"INTERPOSE", SUB_INTERPOSE}, {"ALL", SUB_ALL},
};

/* "INIT,COLL" enables those; "^INIT" enables everything but INIT, as in NCCL. */
static unsigned parse_subsys(const char* s) {
  if (!s || !*s) return SUB_ALL;
  int invert = s[0] == '^';
  if (invert) s++;
  unsigned mask = 0;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  char* save = NULL;
  for (char* tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    for (size_t i = 0; i < sizeof subsys_names / sizeof subsys_names[0]; i++)
      if (strcasecmp(tok, subsys_names[i].name) == 0) mask |= subsys_names[i].bit;
  }
  return invert ? ~mask : mask;
}

static void load_locked(const struct snapccl_env* env) {
  static const struct {
    const char* name;
    enum snapccl_log_level level;
  } levels[] = {{"VERSION", LOG_VERSION}, {"WARN", LOG_WARN}, {"INFO", LOG_INFO}, {"TRACE", LOG_TRACE}};
  g_log.level = LOG_NONE;
  for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
    if (!strcasecmp(env->debug, levels[i].name)) g_log.level = levels[i].level;
  g_log.subsys = parse_subsys(env->debug_subsys);
  if (gethostname(g_log.host, sizeof g_log.host) != 0) snprintf(g_log.host, sizeof g_log.host, "?");
  g_log.host[sizeof g_log.host - 1] = 0;
  char* dot = strchr(g_log.host, '.');
  if (dot) *dot = 0;
  g_log.loaded = 1;
}

/* The settings are read before taking the lock: reading them the first time logs what
 * they say, which comes back here (and finds them read). */
static void ensure_loaded(void) {
  if (__atomic_load_n(&g_log.loaded, __ATOMIC_ACQUIRE)) return;
  const struct snapccl_env* env = snapccl_env();
  pthread_mutex_lock(&g_log.lock);
  if (!g_log.loaded) load_locked(env);
  pthread_mutex_unlock(&g_log.lock);
}

void snapccl_log_reload(void) {
  const struct snapccl_env* env = snapccl_env();
  pthread_mutex_lock(&g_log.lock);
  load_locked(env);
  pthread_mutex_unlock(&g_log.lock);
}

void snapccl_log_set_device(int dev) { t_device = dev; }

int snapccl_log_enabled(enum snapccl_log_level level, unsigned subsys) {
  ensure_loaded();
  if (level > g_log.level) return 0;
  return level == LOG_WARN || (g_log.subsys & subsys) != 0;
}

void snapccl_log(enum snapccl_log_level level, unsigned subsys, const char* file, int line,
                 const char* fmt, ...) {
  if (!snapccl_log_enabled(level, subsys)) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const char* lname = level == LOG_WARN ? "WARN" : level == LOG_TRACE ? "TRACE" : "INFO";
  const char* base = strrchr(file, '/');
  base = base ? base + 1 : file;
  /* One fprintf per line so lines of different threads do not interleave. */
  if (level == LOG_TRACE)
    fprintf(stderr, "%s:%d:%ld [%d] SNAPCCL %s %s:%d %s\n", g_log.host, (int)getpid(),
            (long)syscall(SYS_gettid), t_device, lname, base, line, msg);
  else
    fprintf(stderr, "%s:%d:%ld [%d] SNAPCCL %s %s\n", g_log.host, (int)getpid(),
            (long)syscall(SYS_gettid), t_device, lname, msg);
}
