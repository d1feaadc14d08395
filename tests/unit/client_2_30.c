/* A program as built against NVIDIA's NCCL 2.30 headers, linked against snapccl's
 * libnccl.so.2: every host function of those headers (nccl_2_30_functions.h) is
 * declared with 2.30's signature and referenced. No GPU needed.
 *
 * What fails, and how:
 *   - a signature of 2.30 that disagrees with the one include/nccl.h declares: the
 *     build ("conflicting types"), since this file includes our header first;
 *   - a name (or its pnccl* alias) that our libnccl.so.2 does not export: the run, one
 *     line per name (the references are weak, so the program still loads and can say
 *     which are missing);
 *   - a trampoline of real_extras.h whose stub answers with a value of another type
 *     than 2.30's return type, or without a reason naming the function (standalone);
 *   - in fallback mode, a trampoline that does not reach the real library's function
 *     with the caller's arguments, or a function the real library lacks that does not
 *     say so.
 *
 *   client_2_30 standalone   SNAPCCL_NCCL_LIB empty: no real NCCL anywhere
 *   client_2_30 fallback     SNAPCCL_NCCL_LIB names the stand-in library (fake_nccl.c)
 *   client_2_30 host         SNAPCCL_NCCL_LIB names a GPU host's NVIDIA library: from 2.30
 *                            on, ncclCommMemStats and ncclParamGet reach it; before, they
 *                            say the library does not provide them
 * Exit status 0 when every check passed. */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "nccl.h"
#include "real_extras.h"
#include "snapccl.h"

#include "nccl_2_30_functions.h"

/* 2.30's types that snapccl's 2.27 header lacks, in NVIDIA's layouts. */
typedef enum { MEMSTAT_TOTAL = 3 } ncclCommMemStat_t; /* ncclStatGpuMemTotal */
typedef struct {
  int opCnt, peer, sigIdx, ctx;
} ncclWaitSignalDesc_t;
typedef struct ncclParamHandle* ncclParamHandle_t;
typedef struct ncclTeam {
  int nRanks, rank, stride;
} ncclTeam_t;
typedef struct ncclMultimemHandle {
  void* mcBasePtr;
} ncclMultimemHandle_t;
typedef struct ncclCommProperties ncclCommProperties_t;
typedef struct ncclDevCommRequirements ncclDevCommRequirements_t;
typedef struct ncclDevComm ncclDevComm_t;
typedef struct ncclDevResourceRequirements ncclDevResourceRequirements_t;
typedef struct ncclGinBarrierHandle ncclGinBarrierHandle_t;
typedef struct ncclLsaBarrierHandle ncclLsaBarrierHandle_t;
typedef struct ncclLLA2AHandle ncclLLA2AHandle_t;

/* Every function with 2.30's signature. Weak: a missing one is NULL at run time. */
#define DECLARE(ret, name, params) extern ret name params __attribute__((weak));
#define DECLARE_WITH_ALIAS(ret, name, params) DECLARE(ret, name, params) DECLARE(ret, p##name, params)
NCCL_2_30_NCCL_H_FUNCTIONS(DECLARE_WITH_ALIAS)
NCCL_2_30_DEVICE_H_FUNCTIONS(DECLARE)
NCCL_2_30_UNDECLARED_FUNCTIONS(DECLARE)

typedef void (*any_fn)(void);
struct row {
  const char* header;
  const char* returns;
  const char* name;
  any_fn addr;
  any_fn alias; /* the pnccl* alias; NULL where the header declares none */
};
#define ROW_WITH_ALIAS(ret, name, params) {"nccl.h", #ret, #name, (any_fn)name, (any_fn)p##name},
#define ROW(ret, name, params) {"nccl_device.h", #ret, #name, (any_fn)name, NULL},
#define ROW_UNDECLARED(ret, name, params) {"(no header)", #ret, #name, (any_fn)name, NULL},
static const struct row rows[] = {
    NCCL_2_30_NCCL_H_FUNCTIONS(ROW_WITH_ALIAS)
    NCCL_2_30_DEVICE_H_FUNCTIONS(ROW)
    NCCL_2_30_UNDECLARED_FUNCTIONS(ROW_UNDECLARED)
};
enum { NROWS = sizeof rows / sizeof rows[0] };
#define COUNT_ONE(ret, name, params) +1
_Static_assert(0 NCCL_2_30_NCCL_H_FUNCTIONS(COUNT_ONE) == 64, "nccl.h of 2.30 has 64 functions");
_Static_assert(0 NCCL_2_30_DEVICE_H_FUNCTIONS(COUNT_ONE) == 16, "16 device-API host functions");

static int failures;
#define FAIL(...)                    \
  do {                               \
    fprintf(stderr, "FAIL: ");       \
    fprintf(stderr, __VA_ARGS__);    \
    fputc('\n', stderr);             \
    failures++;                      \
  } while (0)

static const struct row* find_row(const char* name) {
  for (int i = 0; i < NROWS; i++)
    if (!strcmp(rows[i].name, name)) return &rows[i];
  return NULL;
}

/* Every function exported, by our libnccl.so.2, with its alias the same code. The one
 * strong reference of this program, snapcclGetVersion, ties it to our library. */
static void check_exports(void) {
  const char* ours = NULL;
  Dl_info info;
  if (dladdr((void*)(uintptr_t)snapcclGetVersion, &info) && info.dli_fname) ours = info.dli_fname;
  if (!ours || !strstr(ours, "libnccl.so.2")) {
    FAIL("snapcclGetVersion does not come from our libnccl.so.2 (from %s)", ours ? ours : "nowhere");
    return;
  }
  int missing = 0;
  for (int i = 0; i < NROWS; i++) {
    const struct row* r = &rows[i];
    if (!r->addr) {
      FAIL("%s (%s of NCCL 2.30) is not exported by %s", r->name, r->header, ours);
      missing++;
      continue;
    }
    if (!dladdr((void*)(uintptr_t)r->addr, &info) || !info.dli_fname ||
        strcmp(info.dli_fname, ours) != 0)
      FAIL("%s resolves to %s, not to %s", r->name, info.dli_fname ? info.dli_fname : "?", ours);
    if (!strcmp(r->header, "nccl.h")) {
      if (!r->alias) FAIL("p%s (nccl.h of NCCL 2.30) is not exported by %s", r->name, ours);
      else if (r->alias != r->addr) FAIL("p%s is not the same function as %s", r->name, r->name);
    }
  }
  printf("%d functions of NCCL 2.30's headers checked, %d missing, in %s\n", NROWS, missing, ours);
}

/* Every trampoline is a function of NVIDIA's headers (or library), and, with no real
 * NCCL, answers with a value of the function's return type and a reason naming it. */
#define EXTRA_NAME(name, returns) #name,
static const char* const extras[] = {SNAPCCL_EXTRA_FUNCTIONS(EXTRA_NAME)};

static void reset_last_error(void) {
  int n;
  (void)ncclCommCount(NULL, &n); /* leaves a reason that names no extra */
}

static int last_error_names(const char* name) {
  const char* e = ncclGetLastError(NULL);
  size_t len = strlen(name);
  /* The name itself, not a longer one it starts (ncclParamGet in ncclParamGetI8). */
  for (const char* p = e ? strstr(e, name) : NULL; p; p = strstr(p + 1, name)) {
    char next = p[len];
    if (!(next == '_' || (next >= 'A' && next <= 'Z') || (next >= 'a' && next <= 'z') ||
          (next >= '0' && next <= '9')))
      return 1;
  }
  return 0;
}

/* The trampolines ignore their arguments when no real library is there, which is what
 * makes calling them through a parameterless type harmless here. */
static void check_standalone_stubs(void) {
  int n = 0;
  for (size_t i = 0; i < sizeof extras / sizeof extras[0]; i++) {
    const struct row* r = find_row(extras[i]);
    if (!r) {
      FAIL("%s is a trampoline of real_extras.h, but no function of NCCL 2.30's headers",
           extras[i]);
      continue;
    }
    if (!r->addr) continue; /* reported by check_exports */
    reset_last_error();
    const char* got = "";
    char buf[64];
    if (!strcmp(r->returns, "ncclResult_t")) {
      ncclResult_t res = ((ncclResult_t(*)(void))r->addr)();
      if (res != ncclInvalidUsage) {
        snprintf(buf, sizeof buf, "returned %d, not ncclInvalidUsage", (int)res);
        got = buf;
      }
    } else if (!strcmp(r->returns, "ncclTeam_t")) {
      ncclTeam_t t = ((ncclTeam_t(*)(void))r->addr)();
      if (t.nRanks || t.rank || t.stride) {
        snprintf(buf, sizeof buf, "returned the team {%d, %d, %d}, not the empty one", t.nRanks,
                 t.rank, t.stride);
        got = buf;
      }
    } else if (!strcmp(r->returns, "int")) {
      int v = ((int (*)(void))r->addr)();
      if (v != -1) {
        snprintf(buf, sizeof buf, "returned %d, not -1", v);
        got = buf;
      }
    } else if (!strcmp(r->returns, "void")) {
      ((void (*)(void))r->addr)();
    } else {
      FAIL("%s: no stub check for return type %s", r->name, r->returns);
      continue;
    }
    if (*got) FAIL("%s (returns %s) standalone: %s", r->name, r->returns, got);
    if (!last_error_names(r->name))
      FAIL("%s standalone: ncclGetLastError() \"%s\" does not name it", r->name,
           ncclGetLastError(NULL));
    n++;
  }
  printf("%d trampolines answered standalone\n", n);
}

/* fake_nccl.c provides ncclCommMemStats and ncclParamGet of 2.30 (and not the rest). */
static void check_fallback(void) {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess || v != 22899)
    FAIL("ncclGetVersion gave %d: the stand-in real library (22899) is not the one serving", v);
  if (!ncclCommMemStats || !ncclParamGet || !ncclCommSuspend || !ncclTeamWorld) return;
  uint64_t value = 0;
  ncclResult_t r = ncclCommMemStats((ncclComm_t)(uintptr_t)0x1230, MEMSTAT_TOTAL, &value);
  if (r != ncclSuccess || value != 0x1230 + MEMSTAT_TOTAL)
    FAIL("ncclCommMemStats through the real library: %d, value 0x%llx (expected 0, 0x%x)",
         (int)r, (unsigned long long)value, 0x1230 + MEMSTAT_TOTAL);
  char buf[8];
  memset(buf, 'x', sizeof buf);
  int len = -1;
  r = ncclParamGet((ncclParamHandle_t)(uintptr_t)0x77, buf, 3, &len);
  if (r != ncclSuccess || len != 0x77 || memcmp(buf, "fak", 3) != 0 || buf[3] != 'x')
    FAIL("ncclParamGet through the real library: %d, len %d, buf \"%.8s\"", (int)r, len, buf);
  reset_last_error();
  r = ncclCommSuspend(NULL, 1);
  if (r != ncclInvalidUsage || !last_error_names("ncclCommSuspend") ||
      !strstr(ncclGetLastError(NULL), "does not provide"))
    FAIL("ncclCommSuspend, which the real library lacks: %d, \"%s\"", (int)r,
         ncclGetLastError(NULL));
  reset_last_error();
  ncclTeam_t t = ncclTeamWorld(NULL);
  if (t.nRanks || t.rank || t.stride || !last_error_names("ncclTeamWorld"))
    FAIL("ncclTeamWorld, which the real library lacks: {%d, %d, %d}, \"%s\"", t.nRanks, t.rank,
         t.stride, ncclGetLastError(NULL));
  printf("fallback: 2.30 functions reach the real library; missing ones say so\n");
}

/* NVIDIA's own library underneath. Both calls pass no communicator or handle, which a
 * 2.30 library refuses with a code of its own (any but "not provided" passes). */
static void check_host_library(void) {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess || v < 22800)
    FAIL("ncclGetVersion gave %d: no NVIDIA library of 2.28 or later is serving", v);
  if (!ncclCommMemStats || !ncclParamGet) return;
  uint64_t value = 0;
  int len = 0;
  char buf[8];
  reset_last_error();
  ncclResult_t r1 = ncclCommMemStats(NULL, MEMSTAT_TOTAL, &value);
  int said1 = strstr(ncclGetLastError(NULL), "does not provide") != NULL;
  printf("ncclCommMemStats(NULL): %d, \"%s\"\n", (int)r1, ncclGetLastError(NULL));
  reset_last_error();
  ncclResult_t r2 = ncclParamGet(NULL, buf, sizeof buf, &len);
  int said2 = strstr(ncclGetLastError(NULL), "does not provide") != NULL;
  printf("ncclParamGet(NULL): %d, \"%s\"\n", (int)r2, ncclGetLastError(NULL));
  const int provided = v >= 23000;
  if (provided ? (said1 || said2) : !(r1 == ncclInvalidUsage && said1 && r2 == ncclInvalidUsage && said2))
    FAIL("NVIDIA's %d %s these functions, and the answers above disagree", v,
         provided ? "provides" : "does not provide");
  printf("host library %d: ncclCommMemStats and ncclParamGet %s\n", v,
         provided ? "answered by it" : "refused with the reason (it lacks them)");
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "standalone") != 0 && strcmp(mode, "fallback") != 0 && strcmp(mode, "host") != 0) {
    fprintf(stderr, "usage: %s standalone|fallback|host\n", argv[0]);
    return 2;
  }
  check_exports();
  if (!strcmp(mode, "standalone")) check_standalone_stubs();
  else if (!strcmp(mode, "fallback")) check_fallback();
  else check_host_library();
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all checks passed\n");
  return 0;
}
