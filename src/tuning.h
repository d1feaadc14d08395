/* The tuning file: times measured on this host by perf/tune.py, one row per collective,
 * dtype size, launch mode and size range, read once at a communicator's init. Where a
 * row covers a call, the selector compares those times instead of the cost model's
 * estimates (select.c); "nccl" is one of the names, NVIDIA's own call.
 *
 * Format (text, one record per line, '#' starts a comment line):
 *   snapccl-tuning 1                                   version, first line
 *   topology <key>                                     must equal this host's key
 *   row <coll> <dtype bytes> <mode> <lo> <hi> <winner> <name>=<us> ...
 *   end                                                last line: a cut file has none
 * coll: allreduce, allgather or reducescatter; dtype bytes 1, 2, 4 or 8; mode eager or
 * graph; lo..hi the call's bytes (count x dtype size), inclusive; winner the name of
 * the least time. Rows of one (coll, dtype bytes, mode) must not overlap. */
#ifndef SNAPCCL_TUNING_H
#define SNAPCCL_TUNING_H

#include <stddef.h>
#include <stdint.h>

#include "nccl.h"

#define SNAPCCL_TUNING_VERSION 1
#define SNAPCCL_TUNING_MAX_BYTES (1u << 20) /* a larger file is refused, not read */
#define SNAPCCL_TUNING_MAX_ROWS 8192
#define SNAPCCL_TUNING_MAX_ALGOS 24 /* times per row */
#define SNAPCCL_TUNING_NAME_LEN 32
#define SNAPCCL_TUNING_KEY_LEN 256

enum snapccl_tuning_mode { TUNING_EAGER = 0, TUNING_GRAPH = 1 };

struct snapccl_tuning_row {
  uint8_t coll;  /* enum snapccl_coll_kind */
  uint8_t dsize; /* 1, 2, 4, 8 */
  uint8_t mode;  /* enum snapccl_tuning_mode */
  uint8_t n;     /* times in the row */
  uint64_t lo, hi;
  char name[SNAPCCL_TUNING_MAX_ALGOS][SNAPCCL_TUNING_NAME_LEN];
  double us[SNAPCCL_TUNING_MAX_ALGOS];
};

struct snapccl_tuning {
  uint64_t hash; /* of the file's bytes: what ranks compare at init */
  char key[SNAPCCL_TUNING_KEY_LEN];
  char source[512]; /* the path it came from, for logs */
  int nrows;        /* sorted by (coll, dsize, mode, lo) */
  struct snapccl_tuning_row rows[];
};

/* This host's topology as a file's "topology" line says it (no spaces inside fields):
 * "gpu=<model> link=<kind> gpus=<n> world=<n> per_gpu=<n> procs=<n>". */
void snapccl_tuning_key(char* out, size_t len, const char* gpu_model, const char* link, int ngpus,
                        int world, int per_gpu, int procs);

/* Parses a whole file's text for a host whose key is `key` (NULL: any key). Returns the
 * table (caller frees with free()), or NULL with the reason in why. */
struct snapccl_tuning* snapccl_tuning_parse(const char* text, size_t len, const char* key,
                                            char* why, size_t wlen);

/* Reads and parses the file at path. Returns 1 and *out; 0 and the reason (unreadable,
 * a directory, too large, and every parse error); -1 when there is no file at all (which
 * is no news where the path is only the default). */
int snapccl_tuning_read(const char* path, const char* key, struct snapccl_tuning** out, char* why,
                        size_t wlen);

/* The row covering a call of `bytes` bytes, or NULL. */
const struct snapccl_tuning_row* snapccl_tuning_find(const struct snapccl_tuning* t, int coll,
                                                     size_t dsize, int mode, uint64_t bytes);
/* The row's time for algorithm `name`; 0 when the row has none. */
int snapccl_tuning_time(const struct snapccl_tuning_row* row, const char* name, double* us);

/* Where the file is looked for when SNAPCCL_TUNING_FILE is unset:
 * $XDG_CACHE_HOME/snapccl/tuning-<hash of key>.txt, else ~/.cache/snapccl/...; 0 if
 * neither directory is known. */
int snapccl_tuning_default_path(const char* key, char* out, size_t len);

struct snapccl_comm;
/* At init, after the peers are known: reads the file (SNAPCCL_TUNING_FILE, else the
 * default path for `key`), and lets every rank agree on it through the init's exchange:
 * the ranks keep it only if every one of them read the same bytes; otherwise every rank
 * drops it and says why. Sets comm->tuning (NULL: the cost model decides). Fails only
 * when the exchange itself fails. */
ncclResult_t snapccl_tuning_setup(struct snapccl_comm* comm, const char* key);
/* This communicator's key, from the GPU (CUDA) and the peers' table. */
void snapccl_tuning_comm_key(const struct snapccl_comm* comm, char* out, size_t len);

#endif
