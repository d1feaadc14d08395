/* Every tunable, declared once (env.c's table) with its name, default and meaning,
 * read from the environment in one place. */
#ifndef SNAPCCL_ENV_H
#define SNAPCCL_ENV_H

#include <stddef.h>
#include <stdint.h>

struct snapccl_env {
  int shared_gpu;              /* SNAPCCL_SHARED_GPU: let ranks share a GPU */
  char socket_ifname[64];      /* SNAPCCL_SOCKET_IFNAME, else NCCL_SOCKET_IFNAME */
  double bootstrap_timeout_s;  /* SNAPCCL_BOOTSTRAP_TIMEOUT */
  int64_t timeout_ms;          /* SNAPCCL_TIMEOUT_MS: bound of every device-side wait */
  int64_t buffsize;            /* SNAPCCL_BUFFSIZE: staging bytes per rank and communicator */
  char algo[256];              /* SNAPCCL_ALGO: forced algorithms */
  int max_blocks;              /* SNAPCCL_MAX_BLOCKS: CTAs per rank and call */
  char nccl_lib[512];          /* SNAPCCL_NCCL_LIB: the real libnccl for fallback mode */
  int nvls;                    /* SNAPCCL_NVLS: open the multicast gate (never on lent hosts) */
  char lowprec[16];            /* SNAPCCL_LOWPREC: off, fp8, int8, int4 */
  int lowprec_group;           /* SNAPCCL_LOWPREC_GROUP: elements per scale */
  int64_t lowprec_min_bytes;   /* SNAPCCL_LOWPREC_MIN_BYTES: smaller all-reduces stay exact */
  /* @lowprec-env-fields@ */
  unsigned long long generation; /* not a setting: 1 + how often the environment was re-read,
                                  * so code that derives values from it can cache them */
};

/* The settings, parsed once on first use. */
const struct snapccl_env* snapccl_env(void);
/* Parses the environment again (tests change it between cases). */
void snapccl_env_reload(void);

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

#endif
