/* Logging in NCCL's shape: "host:pid:tid [dev] SNAPCCL LEVEL msg".
 * Level and subsystems come from SNAPCCL_DEBUG / SNAPCCL_DEBUG_SUBSYS, falling back to
 * NCCL_DEBUG / NCCL_DEBUG_SUBSYS so existing habits keep working (env.c's table). */
#ifndef SNAPCCL_LOG_H
#define SNAPCCL_LOG_H

enum snapccl_log_level { LOG_NONE = 0, LOG_VERSION = 1, LOG_WARN = 2, LOG_INFO = 3, LOG_TRACE = 4 };

enum snapccl_subsys {
  SUB_INIT = 1u << 0,
  SUB_COLL = 1u << 1,
  SUB_BOOT = 1u << 2,
  SUB_TRANSPORT = 1u << 3,
  SUB_ALGO = 1u << 4,
  SUB_ENV = 1u << 5,
  SUB_INTERPOSE = 1u << 6,
  SUB_ALL = ~0u
};

void snapccl_log(enum snapccl_log_level level, unsigned subsys, const char* file, int line,
                 const char* fmt, ...) __attribute__((format(printf, 5, 6)));
int snapccl_log_enabled(enum snapccl_log_level level, unsigned subsys);
/* Takes level and subsystems again from the settings (after env.c re-read them). */
void snapccl_log_reload(void);
/* The CUDA device logged in the [dev] field for this thread; -1 = unknown. */
void snapccl_log_set_device(int dev);

#define WARN(...) snapccl_log(LOG_WARN, SUB_ALL, __FILE__, __LINE__, __VA_ARGS__)
#define INFO(sub, ...)                                                        \
  do {                                                                        \
    if (snapccl_log_enabled(LOG_INFO, (sub)))                                 \
      snapccl_log(LOG_INFO, (sub), __FILE__, __LINE__, __VA_ARGS__);          \
  } while (0)
#define TRACE(sub, ...)                                                       \
  do {                                                                        \
    if (snapccl_log_enabled(LOG_TRACE, (sub)))                                \
      snapccl_log(LOG_TRACE, (sub), __FILE__, __LINE__, __VA_ARGS__);         \
  } while (0)

#endif
