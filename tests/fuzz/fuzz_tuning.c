/* libFuzzer target: the tuning file's parser (src/tuning.c) on arbitrary bytes, as a
 * file left in the cache directory or named by SNAPCCL_TUNING_FILE can hold them. The
 * first byte picks whether the topology must match (a real key) or any key passes, so
 * both the header checks and the rows behind them are reached. An accepted file must
 * hold what the format promises: rows sorted, not overlapping, each found by its own
 * range, each with a least time. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tuning.h"

#define CHECK(cond) \
  do {              \
    if (!(cond)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const char* key = data[0] & 1 ? "gpu=NVIDIA_H100 link=shared gpus=1 world=2 per_gpu=2 procs=1" : NULL;
  char why[300];
  /* The text in a buffer of its exact length: a read past it is an ASan report. */
  char* text = malloc(size - 1 ? size - 1 : 1);
  CHECK(text);
  memcpy(text, data + 1, size - 1);
  struct snapccl_tuning* t = snapccl_tuning_parse(text, size - 1, key, why, sizeof why);
  if (t) {
    for (int i = 0; i < t->nrows; i++) {
      const struct snapccl_tuning_row* r = &t->rows[i];
      CHECK(r->n > 0 && r->lo <= r->hi);
      CHECK(snapccl_tuning_find(t, r->coll, r->dsize, r->mode, r->lo) == r);
      CHECK(snapccl_tuning_find(t, r->coll, r->dsize, r->mode, r->hi) == r);
      double us;
      CHECK(snapccl_tuning_time(r, r->name[0], &us) && us > 0);
    }
  } else {
    CHECK(why[0]); /* a refusal always says why */
  }
  free(t);
  free(text);
  return 0;
}
