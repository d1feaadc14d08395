/* ncclConfig_t as the application passed it, read into struct snapccl_config. */
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "error.h"

#define CONFIG_MAGIC 0xcafebeefu

/* Reads the fields an older or newer caller's struct actually has (.size says how far
 * it reaches); unknown trailing fields of newer NCCL headers are ignored. */
ncclResult_t snapccl_config_parse(const ncclConfig_t* user, struct snapccl_config* out) {
  memset(out, 0, sizeof *out);
  out->blocking = 1;
  out->min_ctas = out->max_ctas = 0;
  if (!user) return ncclSuccess;
  if (user->magic != CONFIG_MAGIC || user->size < offsetof(ncclConfig_t, blocking) + sizeof(int))
    SNAP_FAIL(ncclInvalidArgument,
              "config is not initialized with NCCL_CONFIG_INITIALIZER (magic 0x%x, size %zu)",
              user->magic, user->size);
#define HAS(field) (user->size >= offsetof(ncclConfig_t, field) + sizeof(user->field))
#define SET(field) (HAS(field) && user->field != NCCL_CONFIG_UNDEF_INT)
  if (SET(blocking)) {
    if (user->blocking != 0 && user->blocking != 1)
      SNAP_FAIL(ncclInvalidArgument, "config.blocking must be 0 or 1, not %d", user->blocking);
    out->blocking = user->blocking;
  }
  if (SET(minCTAs)) {
    if (user->minCTAs <= 0) SNAP_FAIL(ncclInvalidArgument, "config.minCTAs %d must be positive", user->minCTAs);
    out->min_ctas = user->minCTAs;
  }
  if (SET(maxCTAs)) {
    if (user->maxCTAs <= 0) SNAP_FAIL(ncclInvalidArgument, "config.maxCTAs %d must be positive", user->maxCTAs);
    out->max_ctas = user->maxCTAs;
  }
  if (SET(cgaClusterSize) && user->cgaClusterSize < 0)
    SNAP_FAIL(ncclInvalidArgument, "config.cgaClusterSize %d is negative", user->cgaClusterSize);
  if (SET(splitShare)) {
    if (user->splitShare != 0 && user->splitShare != 1)
      SNAP_FAIL(ncclInvalidArgument, "config.splitShare must be 0 or 1, not %d", user->splitShare);
    out->split_share = user->splitShare;
  }
  if (HAS(commName) && user->commName) snprintf(out->name, sizeof out->name, "%s", user->commName);
#undef SET
#undef HAS
  if (out->min_ctas < 0 || out->max_ctas < 0 || (out->max_ctas && out->min_ctas > out->max_ctas))
    SNAP_FAIL(ncclInvalidArgument, "config minCTAs %d / maxCTAs %d are inconsistent",
              out->min_ctas, out->max_ctas);
  return ncclSuccess;
}
