/* Finding the real NCCL: mode detection and the real library's function table. */
#include "real_nccl.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "env.h"
#include "error.h"
#include "log.h"
#include "real_extras.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_decided;
static enum snapccl_mode g_mode;
static struct snapccl_real g_real;
static char g_path[512];
static void* g_handle;

/* Targets of the trampolines of real_extras.S, in SNAPCCL_EXTRA_FUNCTIONS order. */
#define SNAPCCL_EXTRA_COUNT_ONE(name, returns) +1
enum { EXTRA_COUNT = 0 SNAPCCL_EXTRA_FUNCTIONS(SNAPCCL_EXTRA_COUNT_ONE) };
__attribute__((visibility("hidden"))) void* snapccl_extra_targets[EXTRA_COUNT];
#define SNAPCCL_EXTRA_NAME(name, returns) #name,
static const char* const extra_names[EXTRA_COUNT] = {SNAPCCL_EXTRA_FUNCTIONS(SNAPCCL_EXTRA_NAME)};

/* What a trampoline runs when no real library provides its function: one stub per
 * function, so that the reason names it, returning a value of the function's type
 * (real_extras.h). The stubs take no parameters: the caller's arguments sit unread in
 * registers and on its own stack, which the System V convention leaves to the caller. */
static void unavailable(const char* name) {
  int v = 0;
  if (g_handle && g_real.ncclGetVersion) g_real.ncclGetVersion(&v);
  if (g_handle)
    snapccl_error(ncclInvalidUsage, name,
                  "the NCCL that snapccl hands calls to (%s, version code %d) does not provide "
                  "it: the program was built against a newer nccl.h than that library", g_path, v);
  else
    snapccl_error(ncclInvalidUsage, name,
                  "a function of NCCL newer than snapccl's API level (%d.%d.%d), which only a "
                  "real NCCL can serve: none was found (set SNAPCCL_NCCL_LIB to NVIDIA's "
                  "libnccl.so.2, or preload snapccl over it)", NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
}
struct extra_team { int nRanks, rank, stride; }; /* ncclTeam_t's layout */
#define STUB_RESULT(name) \
  static ncclResult_t stub_##name(void) { unavailable(#name); return ncclInvalidUsage; }
#define STUB_TEAM(name) \
  static struct extra_team stub_##name(void) { unavailable(#name); return (struct extra_team){0, 0, 0}; }
#define STUB_INT(name) \
  static int stub_##name(void) { unavailable(#name); return -1; }
#define STUB_VOID(name) \
  static void stub_##name(void) { unavailable(#name); }
#define SNAPCCL_EXTRA_STUB(name, returns) STUB_##returns(name)
SNAPCCL_EXTRA_FUNCTIONS(SNAPCCL_EXTRA_STUB)
#define SNAPCCL_EXTRA_STUB_ADDR(name, returns) (void*)stub_##name,
static void* const extra_stubs[EXTRA_COUNT] = {SNAPCCL_EXTRA_FUNCTIONS(SNAPCCL_EXTRA_STUB_ADDR)};

/* Is the object defining `sym` (found through handle h) a copy of snapccl? */
static int is_snapccl(void* h) { return h && dlsym(h, "snapcclGetVersion") != NULL; }

static int load_table(void* h, const char* path) {
  if (!h || is_snapccl(h) || !dlsym(h, "ncclCommInitRank")) return 0;
#define SNAPCCL_REAL_LOAD(ret, name, params) g_real.name = (ret(*) params)dlsym(h, #name);
  SNAPCCL_REAL_FUNCTIONS(SNAPCCL_REAL_LOAD)
#undef SNAPCCL_REAL_LOAD
  g_handle = h;
  snprintf(g_path, sizeof g_path, "%s", path ? path : "?");
  return 1;
}

/* A libnccl that the application loaded, possibly into a local scope that dlsym's
 * RTLD_NEXT does not search (Python extension modules are dlopen'ed RTLD_LOCAL). */
static int find_loaded(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  char* out = data;
  const char* name = info->dlpi_name;
  if (!name || !strstr(name, "libnccl.so")) return 0;
  void* h = dlopen(name, RTLD_NOW | RTLD_NOLOAD);
  if (!h) return 0;
  int real = !is_snapccl(h) && dlsym(h, "ncclCommInitRank");
  dlclose(h);
  if (!real) return 0;
  snprintf(out, 512, "%s", name);
  return 1;
}

static void decide_locked(void) {
  memset(&g_real, 0, sizeof g_real);
  g_mode = MODE_STANDALONE;
  g_path[0] = 0;
  /* 1. Preloaded in front of a real libnccl in the global scope. */
  void* sym = dlsym(RTLD_NEXT, "ncclCommInitRank");
  Dl_info info;
  if (sym && dladdr(sym, &info) && info.dli_fname) {
    void* h = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    if (load_table(h, info.dli_fname)) g_mode = MODE_INTERPOSED;
    else if (h) dlclose(h);
  }
  /* 2. A real libnccl loaded elsewhere in the process. */
  if (g_mode == MODE_STANDALONE) {
    char path[512] = "";
    if (dl_iterate_phdr(find_loaded, path) && path[0]) {
      void* h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
      if (load_table(h, path)) g_mode = MODE_INTERPOSED;
      else if (h) dlclose(h);
    }
  }
  /* 3. Loaded in place of libnccl, with the real one named. DEEPBIND: the real
   * library's calls to its own exported functions must never land in ours. */
  const char* lib = snapccl_env()->nccl_lib;
  if (g_mode == MODE_STANDALONE && lib[0]) {
    void* h = dlopen(lib, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) {
      WARN("SNAPCCL_NCCL_LIB=%s could not be loaded: %s; running standalone", lib, dlerror());
    } else if (load_table(h, lib)) {
      g_mode = MODE_FALLBACK;
    } else {
      WARN("SNAPCCL_NCCL_LIB=%s is not a real NCCL (it is snapccl, or lacks ncclCommInitRank); "
           "running standalone", lib);
      dlclose(h);
    }
  }
  for (int i = 0; i < EXTRA_COUNT; i++) {
    void* f = g_handle ? dlsym(g_handle, extra_names[i]) : NULL;
    snapccl_extra_targets[i] = f ? f : extra_stubs[i];
  }
  __atomic_store_n(&g_decided, 1, __ATOMIC_RELEASE);
  if (g_mode != MODE_STANDALONE) {
    int v = 0;
    if (g_real.ncclGetVersion) g_real.ncclGetVersion(&v);
    INFO(SUB_INTERPOSE, "snapccl %s over %s (NCCL %d)", snapccl_mode_name(g_mode), g_path, v);
  } else {
    INFO(SUB_INTERPOSE, "snapccl standalone (no real NCCL found)");
  }
}

static void decide(void) {
  if (__atomic_load_n(&g_decided, __ATOMIC_ACQUIRE)) return;
  pthread_mutex_lock(&g_lock);
  if (!g_decided) decide_locked();
  pthread_mutex_unlock(&g_lock);
}

/* Called by the trampolines on first use (real_extras.S). */
__attribute__((visibility("hidden"))) void snapccl_extra_resolve(void);
void snapccl_extra_resolve(void) { decide(); }

enum snapccl_mode snapccl_mode(void) {
  decide();
  return g_mode;
}

const struct snapccl_real* snapccl_real(void) {
  decide();
  return g_mode == MODE_STANDALONE ? NULL : &g_real;
}

const char* snapccl_real_path(void) {
  decide();
  return g_path;
}

const char* snapccl_mode_name(enum snapccl_mode mode) {
  static const char* const names[] = {"standalone", "interposed", "fallback"};
  return (unsigned)mode < 3 ? names[mode] : "?";
}

void snapccl_real_reset(void) {
  pthread_mutex_lock(&g_lock);
  if (g_handle) dlclose(g_handle);
  g_handle = NULL;
  g_decided = 0;
  pthread_mutex_unlock(&g_lock);
}
