/* ncclConfig_t as the application passed it, read into struct snapccl_config.
 *
 * The struct grew over NCCL releases, and a program built against an older header
 * hands us an older, shorter struct. Its `version` (set by NCCL_CONFIG_INITIALIZER)
 * says which fields it has, its `size` how far it reaches; a field is read only if
 * both say it is there. Size alone is not enough: NCCL 2.14's struct is 20 bytes of
 * fields padded to 24, and the padding, never initialised, sits where 2.17 put
 * cgaClusterSize. NCCL itself resets by version the fields an older header lacked. */
#include <stdio.h>
#include <string.h>

#include "comm.h"
#include "error.h"

#define CONFIG_MAGIC 0xcafebeefu

/* The first release whose ncclConfig_t had each field we read (NVIDIA's nccl.h). */
#define SINCE_BLOCKING NCCL_VERSION(2, 14, 0)
#define SINCE_CTAS NCCL_VERSION(2, 17, 0) /* cgaClusterSize, minCTAs, maxCTAs, netName */
#define SINCE_SPLIT_SHARE NCCL_VERSION(2, 18, 0)
#define SINCE_COMM_NAME NCCL_VERSION(2, 27, 0) /* with collnetEnable ... nvlsCTAs */

/* Does the caller's struct hold the field at [offset, offset + size)? */
static int has(const ncclConfig_t* user, unsigned since, size_t offset, size_t size) {
  return user->version >= since && user->size >= offset + size;
}

ncclResult_t snapccl_config_parse(const ncclConfig_t* user, struct snapccl_config* out) {
  memset(out, 0, sizeof *out);
  out->blocking = 1;
  out->min_ctas = out->max_ctas = 0;
  if (!user) return ncclSuccess;
  /* size, magic and version are in every release's struct; a struct too small for
   * even blocking came from no NCCL header. */
  if (user->magic != CONFIG_MAGIC || user->size < offsetof(ncclConfig_t, blocking) + sizeof(int))
    SNAP_FAIL(ncclInvalidArgument,
              "config is not initialized with NCCL_CONFIG_INITIALIZER (magic 0x%x, size %zu)",
              user->magic, user->size);
#define HAS(field, since) has(user, (since), offsetof(ncclConfig_t, field), sizeof(user->field))
#define SET(field, since) (HAS(field, since) && user->field != NCCL_CONFIG_UNDEF_INT)
  if (SET(blocking, SINCE_BLOCKING)) {
    if (user->blocking != 0 && user->blocking != 1)
      SNAP_FAIL(ncclInvalidArgument, "config.blocking must be 0 or 1, not %d", user->blocking);
    out->blocking = user->blocking;
  }
  if (SET(minCTAs, SINCE_CTAS)) {
    if (user->minCTAs <= 0) SNAP_FAIL(ncclInvalidArgument, "config.minCTAs %d must be positive", user->minCTAs);
    out->min_ctas = user->minCTAs;
  }
  if (SET(maxCTAs, SINCE_CTAS)) {
    if (user->maxCTAs <= 0) SNAP_FAIL(ncclInvalidArgument, "config.maxCTAs %d must be positive", user->maxCTAs);
    out->max_ctas = user->maxCTAs;
  }
  if (SET(cgaClusterSize, SINCE_CTAS) && user->cgaClusterSize < 0)
    SNAP_FAIL(ncclInvalidArgument, "config.cgaClusterSize %d is negative", user->cgaClusterSize);
  if (SET(splitShare, SINCE_SPLIT_SHARE)) {
    if (user->splitShare != 0 && user->splitShare != 1)
      SNAP_FAIL(ncclInvalidArgument, "config.splitShare must be 0 or 1, not %d", user->splitShare);
    out->split_share = user->splitShare;
  }
  if (HAS(commName, SINCE_COMM_NAME) && user->commName)
    snprintf(out->name, sizeof out->name, "%s", user->commName);
#undef SET
#undef HAS
  if (out->min_ctas < 0 || out->max_ctas < 0 || (out->max_ctas && out->min_ctas > out->max_ctas))
    SNAP_FAIL(ncclInvalidArgument, "config minCTAs %d / maxCTAs %d are inconsistent",
              out->min_ctas, out->max_ctas);
  return ncclSuccess;
}
