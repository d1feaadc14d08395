/* Every tunable, declared once (env.c's table) with its name, default and meaning,
 * read from the environment in one place. */
#ifndef SNAPCCL_ENV_H
#define SNAPCCL_ENV_H

#include <stddef.h>
#include <stdint.h>

struct snapccl_env {
  char debug[16];              /* SNAPCCL_DEBUG, else NCCL_DEBUG: log level (log.c) */
  char debug_subsys[256];      /* SNAPCCL_DEBUG_SUBSYS, else NCCL_DEBUG_SUBSYS (log.c) */
  int shared_gpu;              /* SNAPCCL_SHARED_GPU: let ranks share a GPU */
  char socket_ifname[64];      /* SNAPCCL_SOCKET_IFNAME, else NCCL_SOCKET_IFNAME */
  double bootstrap_timeout_s;  /* SNAPCCL_BOOTSTRAP_TIMEOUT */
  int64_t timeout_ms;          /* SNAPCCL_TIMEOUT_MS: bound of every device-side wait */
  int64_t buffsize;            /* SNAPCCL_BUFFSIZE: staging bytes per rank and communicator */
  char algo[256];              /* SNAPCCL_ALGO: forced algorithms */
  int max_blocks;              /* SNAPCCL_MAX_BLOCKS: CTAs per rank and call */
  char nccl_lib[512];          /* SNAPCCL_NCCL_LIB: the real libnccl for fallback mode */
  int nvls;                    /* SNAPCCL_NVLS: open the multicast gate (never on lent hosts) */
  char nccl_nvls_enable[64];   /* NCCL_NVLS_ENABLE as NCCL reads it; "" when unset */
  int lowprec;                 /* SNAPCCL_LOWPREC: SNAPCCL_LOWPREC_OFF, _FP8, _INT8, _INT4 */
  int lowprec_group;           /* SNAPCCL_LOWPREC_GROUP: elements per scale, valid */
  int64_t lowprec_min_bytes;   /* SNAPCCL_LOWPREC_MIN_BYTES (>= 0): smaller all-reduces stay exact */
  char tuning_file[512];       /* SNAPCCL_TUNING_FILE: measured times (tuning.h); "" = default path */
};

/* The settings, parsed once on first use. What parsing has to say (a value set, a value
 * refused) is logged after the settings are in place, so the log, which takes its own
 * level from them, can be set up by the first line it prints. */
const struct snapccl_env* snapccl_env(void);
/* Parses the environment again (tests change it between cases). */
void snapccl_env_reload(void);
/* How many times the settings were re-read: a value computed from them is stale once
 * this changes. */
unsigned long long snapccl_env_generation(void);
/* Parses again only the log's settings (ncclResetDebugInit). */
void snapccl_env_reload_debug(void);

/* Parses value as the setting `name` (range and length checks included) into its field
 * of *env, without looking at the environment. Returns 1 if accepted; 0 with the reason
 * in why if refused (the field then holds the default). For tests and fuzzing. */
int snapccl_env_parse_value(const char* name, const char* value, struct snapccl_env* env,
                            char* why, size_t wlen);

/* The table, for documentation checks and for printing at INFO. */
struct snapccl_env_entry {
  const char* name;
  const char* fallback; /* an NCCL_* variable read when name is unset, or NULL */
  const char* def;
  const char* doc;
};
size_t snapccl_env_table(const struct snapccl_env_entry** entries);

/* The low-precision vocabulary, shared by the table and snapcclCommSetLowPrecision:
 * "off", "fp8", "int8", "int4" (any case; also "none", "0", "" and NULL for off, "e4m3"
 * for fp8) as SNAPCCL_LOWPREC_* numbers, -1 for anything else; and whether a group
 * size is one the kernels take (a multiple of 32 from 32 to 1024). */
int snapccl_lowprec_parse_format(const char* s);
int snapccl_lowprec_group_ok(int group);

#endif
