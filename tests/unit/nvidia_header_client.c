/* A program built against NVIDIA's own nccl.h (the CUDA toolkit's, NCCL 2.28 there)
 * and linked against libsnapccl: what an application compiled for NVIDIA's NCCL sees
 * when snapccl serves its calls. It runs without a GPU and uses only functions of the
 * 2.27 API. Exit status 0 when every check passed; each failed check prints its line.
 *
 * This file must never see snapccl's include/ directory (see tests/meson.build). */
/* NVIDIA's header declares ncclGroupStart() and friends without (void). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <nccl.h>
#pragma GCC diagnostic pop

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if NCCL_VERSION_CODE == 22707
#error "built against snapccl's include/nccl.h instead of NVIDIA's"
#endif

static int failures;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "FAIL line %d: %s (last error: \"%s\")\n", __LINE__, #cond,   \
              ncclGetLastError(NULL) ? ncclGetLastError(NULL) : "(null)");           \
      failures++;                                                                    \
    }                                                                                \
  } while (0)

/* The code `want` and, for a failure, a last error that mentions `needle`. */
static void expect(const char* expr, int line, ncclResult_t got, ncclResult_t want,
                   const char* needle) {
  const char* e = ncclGetLastError(NULL);
  if (got != want) {
    fprintf(stderr, "FAIL line %d: %s returned %d (%s), expected %d (last error: \"%s\")\n",
            line, expr, (int)got, ncclGetErrorString(got), (int)want, e ? e : "(null)");
    failures++;
  } else if (want != ncclSuccess && (!e || !*e || (needle && !strstr(e, needle)))) {
    fprintf(stderr, "FAIL line %d: %s: last error \"%s\" does not mention \"%s\"\n", line,
            expr, e ? e : "(null)", needle ? needle : "");
    failures++;
  }
}
#define EXPECT(call, want, needle) expect(#call, __LINE__, (call), (want), (needle))

int main(void) {
  /* Version: the library's level, in NVIDIA's encoding. */
  int v = 0;
  EXPECT(ncclGetVersion(&v), ncclSuccess, NULL);
  CHECK(v == NCCL_VERSION(2, 27, 7));
  EXPECT(ncclGetVersion(NULL), ncclInvalidArgument, "version");

  /* Error strings, NVIDIA's texts. */
  CHECK(strcmp(ncclGetErrorString(ncclSuccess), "no error") == 0);
  CHECK(strcmp(ncclGetErrorString(ncclInvalidArgument),
               "invalid argument (run with NCCL_DEBUG=WARN for details)") == 0);
  CHECK(strcmp(ncclGetErrorString(ncclInProgress), "NCCL operation in progress") == 0);
  CHECK(strcmp(ncclGetErrorString(ncclNumResults), "unknown result code") == 0);
  CHECK(ncclGetLastError(NULL) != NULL);

  /* A unique id needs no GPU. */
  ncclUniqueId id;
  memset(&id, 0, sizeof id);
  EXPECT(ncclGetUniqueId(&id), ncclSuccess, NULL);
  ncclUniqueId zero;
  memset(&zero, 0, sizeof zero);
  CHECK(memcmp(&id, &zero, sizeof id) != 0);
  EXPECT(ncclGetUniqueId(NULL), ncclInvalidArgument, "NULL");

  /* Bad input. */
  ncclComm_t comm = NULL;
  int n = -1;
  EXPECT(ncclCommInitRank(&comm, 0, id, 0), ncclInvalidArgument, "rank");
  EXPECT(ncclCommInitRank(&comm, 2, id, 2), ncclInvalidArgument, "rank");
  EXPECT(ncclCommInitRank(&comm, 2, zero, 0), ncclInvalidArgument, "unique id");
  EXPECT(ncclCommCount(NULL, &n), ncclInvalidArgument, "comm");
  EXPECT(ncclCommUserRank(NULL, &n), ncclInvalidArgument, "comm");
  EXPECT(ncclAllReduce(NULL, NULL, 1, ncclFloat, ncclSum, NULL, NULL), ncclInvalidArgument,
         "comm");
  EXPECT(ncclCommDestroy(NULL), ncclSuccess, NULL);
  EXPECT(ncclCommAbort(NULL), ncclSuccess, NULL);
  EXPECT(ncclGroupEnd(), ncclInvalidUsage, "ncclGroupStart");
  EXPECT(ncclGroupStart(), ncclSuccess, NULL);
  EXPECT(ncclGroupEnd(), ncclSuccess, NULL);
  EXPECT(ncclCommInitAll(NULL, 1, NULL), ncclInvalidArgument, "comm");

  /* NVIDIA's 2.28 config is larger than 2.27's: its .size must not make it invalid.
   * With a zeroed id the failure is the id's, which shows the config was accepted. */
  ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
  CHECK(cfg.size > 72);
  EXPECT(ncclCommInitRankConfig(&comm, 2, zero, 0, &cfg), ncclInvalidArgument, "unique id");
  cfg.blocking = 7;
  EXPECT(ncclCommInitRankConfig(&comm, 2, zero, 0, &cfg), ncclInvalidArgument, "blocking");
  ncclConfig_t raw;
  memset(&raw, 0, sizeof raw);
  EXPECT(ncclCommInitRankConfig(&comm, 2, zero, 0, &raw), ncclInvalidArgument,
         "NCCL_CONFIG_INITIALIZER");
  EXPECT(ncclGroupSimulateEnd(NULL), ncclInvalidUsage, "ncclGroupStart"); /* = GroupEnd */

  /* A well-formed init on a host without a GPU fails cleanly (a GPU lets it succeed). */
  comm = NULL;
  ncclResult_t r = ncclCommInitRank(&comm, 1, id, 0);
  if (r == ncclSuccess) {
    printf("ncclCommInitRank succeeded (a GPU is present)\n");
    CHECK(comm != NULL);
    EXPECT(ncclCommCount(comm, &n), ncclSuccess, NULL);
    CHECK(n == 1);
    EXPECT(ncclCommDestroy(comm), ncclSuccess, NULL);
  } else {
    const char* e = ncclGetLastError(NULL);
    printf("ncclCommInitRank without a GPU: %d (%s): %s\n", (int)r, ncclGetErrorString(r),
           e ? e : "(null)");
    CHECK(r == ncclUnhandledCudaError || r == ncclSystemError || r == ncclInvalidUsage);
    CHECK(e != NULL && e[0] != '\0');
    CHECK(comm == NULL);
  }

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
