/* NVLink multicast without any multicast: the gate's decision table, the choice of
 * handle transport, file-descriptor passing, and the whole setup driven through a STUB
 * driver table over fake device memory (ranks as threads, or as forked processes, with
 * the real out-of-band bootstrap).
 *
 * Safety: SNAPCCL_NVLS=1 is set only inside the stub tests, after the stub table is
 * installed, and those tests skip themselves when a GPU is visible, so no real driver
 * can ever be reached from here. Forked children report through their exit code (and
 * stderr), never through Criterion. */
#include <criterion/criterion.h>

#include <cuda_runtime.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "oob.h"
#include "transport/fd_passing.h"
#include "transport/multicast.h"
#include "transport/transport_impl.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))
#define MAXR 8
#define GRAN (2u << 20)

/* ---------------------------------------------------------------- helpers */

static int gpu_visible(void) {
  int n = 0;
  if (CUDA_TRY(cudaGetDeviceCount(&n)) != cudaSuccess) return 0;
  return n > 0;
}

/* Every test that opens the gate (stubs only) starts here. */
#define REQUIRE_NO_GPU()                                                                    \
  do {                                                                                      \
    if (gpu_visible())                                                                      \
      cr_skip_test("a GPU is visible: the stubbed multicast tests run only where none is"); \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void env_set(const char* name, const char* v) {
  if (v) setenv(name, v, 1);
  else unsetenv(name);
  snapccl_env_reload();
}

/* ---------------------------------------------------------------- the stub driver */

/* Per rank (thread-local in threads; the only rank in a forked child). */
static _Thread_local int t_rank = -1;
struct stub_rank {
  char log[4096];
  int ordinal;
  int attr_mc, attr_posix, attr_fabric;
  const char* fail; /* a table member name to fail on this rank */
  /* NVML answer */
  int fabric_ok;
  unsigned clique;
  unsigned char uuid0;
  int fabric_state;
};
static struct stub_rank g_rank[MAXR];
static int64_t g_expect_creator_pid; /* a forked importer checks the exporter's tag */
static int g_all_in_process;        /* every rank is a thread here: device counts are visible */

/* The objects behind fake handles. */
struct stub_obj {
  int kind; /* 1: multicast object, 2: physical memory */
  uint64_t tag;
  size_t size;
  unsigned ndev;
  int remote; /* imported from another process: its device count is not visible here */
};
struct stub_mc_state {
  uint64_t tag;
  atomic_int added;
  unsigned ndev;
};
static struct stub_mc_state g_mcs[32];
static atomic_int g_nmcs;
static atomic_int g_live_handles, g_live_va, g_live_maps, g_live_binds, g_mc_releases, g_inits;

static void stub_reset(void) {
  memset(g_rank, 0, sizeof g_rank);
  for (int r = 0; r < MAXR; r++) g_rank[r].attr_mc = g_rank[r].attr_posix = 1, g_rank[r].ordinal = r;
  memset(g_mcs, 0, sizeof g_mcs);
  atomic_store(&g_nmcs, 0);
  atomic_store(&g_live_handles, 0), atomic_store(&g_live_va, 0), atomic_store(&g_live_maps, 0);
  atomic_store(&g_live_binds, 0), atomic_store(&g_mc_releases, 0), atomic_store(&g_inits, 0);
}

static void logc(const char* name) {
  if (t_rank < 0 || t_rank >= MAXR) return;
  char* l = g_rank[t_rank].log;
  size_t n = strlen(l);
  snprintf(l + n, sizeof g_rank[0].log - n, " %s", name);
}

static CUresult call(const char* name) {
  logc(name);
  const char* f = t_rank >= 0 ? g_rank[t_rank].fail : NULL;
  return f && !strcmp(f, name) ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS;
}

static struct stub_mc_state* mc_state(uint64_t tag) {
  int n = atomic_load(&g_nmcs);
  for (int i = 0; i < n; i++)
    if (g_mcs[i].tag == tag) return &g_mcs[i];
  return NULL;
}

static CUmemGenericAllocationHandle new_handle(int kind, uint64_t tag, size_t size, unsigned ndev, int remote) {
  struct stub_obj* o = calloc(1, sizeof *o);
  o->kind = kind, o->tag = tag, o->size = size, o->ndev = ndev, o->remote = remote;
  atomic_fetch_add(&g_live_handles, 1);
  return (CUmemGenericAllocationHandle)(uintptr_t)o;
}
static struct stub_obj* obj(CUmemGenericAllocationHandle h) { return (struct stub_obj*)(uintptr_t)h; }

static CUresult s_get_error_string(CUresult e, const char** s) {
  (void)e;
  *s = "stub failure";
  return CUDA_SUCCESS;
}
static CUresult s_device_get(CUdevice* d, int ordinal) {
  CUresult r = call("device_get");
  *d = 100 + ordinal;
  return r;
}
static CUresult s_device_get_attribute(int* v, CUdevice_attribute a, CUdevice d) {
  (void)d;
  const struct stub_rank* R = &g_rank[t_rank < 0 ? 0 : t_rank];
  if (a == CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED) *v = R->attr_mc, logc("attr:multicast");
  else if (a == CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED) *v = R->attr_posix, logc("attr:posix");
  else if (a == CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED) *v = R->attr_fabric, logc("attr:fabric");
  else return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}
static CUresult s_multicast_get_granularity(size_t* g, const CUmulticastObjectProp* p, CUmulticastGranularity_flags o) {
  if (p->numDevices < 2 || p->size == 0 || o != CU_MULTICAST_GRANULARITY_MINIMUM) return CUDA_ERROR_INVALID_VALUE;
  *g = GRAN;
  return call("multicast_get_granularity");
}
static CUresult s_multicast_create(CUmemGenericAllocationHandle* h, const CUmulticastObjectProp* p) {
  CUresult r = call("multicast_create");
  if (r != CUDA_SUCCESS) return r;
  if (p->size % GRAN || !p->handleTypes) return CUDA_ERROR_INVALID_VALUE;
  int i = atomic_fetch_add(&g_nmcs, 1);
  g_mcs[i].tag = ((uint64_t)getpid() << 16) | (uint64_t)i;
  g_mcs[i].ndev = p->numDevices;
  atomic_init(&g_mcs[i].added, 0);
  *h = new_handle(1, g_mcs[i].tag, p->size, p->numDevices, 0);
  return CUDA_SUCCESS;
}
static CUresult s_multicast_add_device(CUmemGenericAllocationHandle h, CUdevice d) {
  CUresult r = call("multicast_add_device");
  if (r != CUDA_SUCCESS) return r;
  if (obj(h)->kind != 1 || d != 100 + g_rank[t_rank].ordinal) return CUDA_ERROR_INVALID_VALUE;
  struct stub_mc_state* m = mc_state(obj(h)->tag);
  if (m) atomic_fetch_add(&m->added, 1);
  return CUDA_SUCCESS;
}
static CUresult s_multicast_bind_mem(CUmemGenericAllocationHandle mc, size_t mo, CUmemGenericAllocationHandle mem,
                                     size_t off, size_t size, unsigned long long f) {
  CUresult r = call("multicast_bind_mem");
  if (r != CUDA_SUCCESS) return r;
  if (obj(mc)->kind != 1 || obj(mem)->kind != 2 || mo || off || f || size != obj(mem)->size) return CUDA_ERROR_INVALID_VALUE;
  struct stub_mc_state* m = mc_state(obj(mc)->tag);
  /* The driver wants every device added before memory is bound. */
  if (g_all_in_process && m && (unsigned)atomic_load(&m->added) != m->ndev) return CUDA_ERROR_NOT_READY;
  atomic_fetch_add(&g_live_binds, 1);
  return CUDA_SUCCESS;
}
static CUresult s_multicast_unbind(CUmemGenericAllocationHandle mc, CUdevice d, size_t o, size_t size) {
  (void)d, (void)o, (void)size, (void)mc;
  atomic_fetch_sub(&g_live_binds, 1);
  return call("multicast_unbind");
}
static CUresult s_mem_get_allocation_granularity(size_t* g, const CUmemAllocationProp* p,
                                                 CUmemAllocationGranularity_flags o) {
  (void)o;
  if (p->location.type != CU_MEM_LOCATION_TYPE_DEVICE) return CUDA_ERROR_INVALID_VALUE;
  *g = GRAN;
  return call("mem_get_allocation_granularity");
}
static CUresult s_mem_create(CUmemGenericAllocationHandle* h, size_t size, const CUmemAllocationProp* p,
                             unsigned long long f) {
  CUresult r = call("mem_create");
  if (r != CUDA_SUCCESS) return r;
  if (f || p->type != CU_MEM_ALLOCATION_TYPE_PINNED || p->location.id != g_rank[t_rank].ordinal || size % GRAN)
    return CUDA_ERROR_INVALID_VALUE;
  *h = new_handle(2, 0, size, 0, 0);
  return CUDA_SUCCESS;
}
static CUresult s_mem_release(CUmemGenericAllocationHandle h) {
  CUresult r = call("mem_release");
  if (obj(h)->kind == 1) atomic_fetch_add(&g_mc_releases, 1);
  free(obj(h));
  atomic_fetch_sub(&g_live_handles, 1);
  return r;
}
static CUresult s_mem_export(void* sh, CUmemGenericAllocationHandle h, CUmemAllocationHandleType t,
                             unsigned long long f) {
  CUresult r = call("mem_export_to_shareable_handle");
  if (r != CUDA_SUCCESS) return r;
  if (obj(h)->kind != 1 || f) return CUDA_ERROR_INVALID_VALUE;
  uint64_t tag = obj(h)->tag;
  if (t == CU_MEM_HANDLE_TYPE_FABRIC) {
    CUmemFabricHandle* fh = sh;
    memset(fh, 0, sizeof *fh);
    memcpy(fh->data, "stubfab!", 8);
    memcpy(fh->data + 8, &tag, 8);
    return CUDA_SUCCESS;
  }
  if (t != CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) return CUDA_ERROR_INVALID_VALUE;
  int fd = memfd_create("stub-mc", MFD_CLOEXEC);
  if (fd < 0 || pwrite(fd, &tag, 8, 0) != 8) return CUDA_ERROR_OPERATING_SYSTEM;
  *(int*)sh = fd;
  return CUDA_SUCCESS;
}
static CUresult s_mem_import(CUmemGenericAllocationHandle* h, void* sh, CUmemAllocationHandleType t) {
  CUresult r = call("mem_import_from_shareable_handle");
  if (r != CUDA_SUCCESS) return r;
  uint64_t tag = 0;
  if (t == CU_MEM_HANDLE_TYPE_FABRIC) {
    const CUmemFabricHandle* fh = sh;
    if (memcmp(fh->data, "stubfab!", 8) != 0) return CUDA_ERROR_INVALID_VALUE;
    memcpy(&tag, fh->data + 8, 8);
  } else {
    int fd = (int)(uintptr_t)sh;
    if (pread(fd, &tag, 8, 0) != 8) return CUDA_ERROR_INVALID_HANDLE;
  }
  struct stub_mc_state* m = mc_state(tag);
  if (!m && g_expect_creator_pid && (int64_t)(tag >> 16) != g_expect_creator_pid) return CUDA_ERROR_INVALID_HANDLE;
  *h = new_handle(1, tag, 0, m ? m->ndev : 0, !m);
  return CUDA_SUCCESS;
}
static CUresult s_mem_address_reserve(CUdeviceptr* p, size_t size, size_t align, CUdeviceptr addr,
                                      unsigned long long f) {
  CUresult r = call("mem_address_reserve");
  if (r != CUDA_SUCCESS) return r;
  if (align != GRAN || addr || f || size % GRAN) return CUDA_ERROR_INVALID_VALUE;
  void* m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
  *p = (CUdeviceptr)(uintptr_t)m;
  atomic_fetch_add(&g_live_va, 1);
  return CUDA_SUCCESS;
}
static CUresult s_mem_address_free(CUdeviceptr p, size_t size) {
  munmap((void*)(uintptr_t)p, size);
  atomic_fetch_sub(&g_live_va, 1);
  return call("mem_address_free");
}
static CUresult s_mem_map(CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h,
                          unsigned long long f) {
  CUresult r = call("mem_map");
  if (r != CUDA_SUCCESS) return r;
  if (!p || off || f || !h || size % GRAN) return CUDA_ERROR_INVALID_VALUE;
  atomic_fetch_add(&g_live_maps, 1);
  return CUDA_SUCCESS;
}
static CUresult s_mem_unmap(CUdeviceptr p, size_t size) {
  (void)p, (void)size;
  atomic_fetch_sub(&g_live_maps, 1);
  return call("mem_unmap");
}
static CUresult s_mem_set_access(CUdeviceptr p, size_t size, const CUmemAccessDesc* d, size_t n) {
  CUresult r = call("mem_set_access");
  if (r != CUDA_SUCCESS) return r;
  if (!p || !size || n != 1 || d->location.type != CU_MEM_LOCATION_TYPE_DEVICE ||
      d->location.id != g_rank[t_rank].ordinal || d->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
    return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}
/* The replica is host memory here: zeros, then the Lamport sentinel, as the kernels do. */
static int s_init_replica(CUdeviceptr uc, size_t size, const struct snapccl_ws_layout* lay) {
  if (call("init_replica") != CUDA_SUCCESS) return -1;
  char* p = (char*)(uintptr_t)uc;
  size_t lam = 2ull * (size_t)lay->nranks * lay->oneshot_bytes;
  if (lay->lamport_off + lam > size) return -1;
  memset(p, 0, lay->lamport_off + lam);
  for (size_t i = 0; i < lam / 8; i++) ((uint64_t*)(p + lay->lamport_off))[i] = 0x8000000080000000ull;
  atomic_fetch_add(&g_inits, 1);
  return 0;
}

static const struct snapccl_mc_driver g_stub = {
    .get_error_string = s_get_error_string,
    .device_get = s_device_get,
    .device_get_attribute = s_device_get_attribute,
    .multicast_get_granularity = s_multicast_get_granularity,
    .multicast_create = s_multicast_create,
    .multicast_add_device = s_multicast_add_device,
    .multicast_bind_mem = s_multicast_bind_mem,
    .multicast_unbind = s_multicast_unbind,
    .mem_get_allocation_granularity = s_mem_get_allocation_granularity,
    .mem_create = s_mem_create,
    .mem_release = s_mem_release,
    .mem_export_to_shareable_handle = s_mem_export,
    .mem_import_from_shareable_handle = s_mem_import,
    .mem_address_reserve = s_mem_address_reserve,
    .mem_address_free = s_mem_address_free,
    .mem_map = s_mem_map,
    .mem_unmap = s_mem_unmap,
    .mem_set_access = s_mem_set_access,
    .init_replica = s_init_replica,
};

/* NVML stub: every rank's fabric facts from g_rank. */
static int n_init(void) { logc("nvml_init"); return 0; }
static int n_shutdown(void) { return 0; }
static int n_by_bus(const char* bus, void** dev) {
  (void)bus;
  *dev = &g_rank[t_rank];
  return 0;
}
static int n_fabric(void* dev, struct snapccl_nvml_fabric_info* fi) {
  const struct stub_rank* R = dev;
  logc("nvml_fabric");
  if (!R->fabric_ok) return 3; /* NVML_ERROR_NOT_SUPPORTED */
  memset(fi, 0, sizeof *fi);
  fi->cluster_uuid[0] = R->uuid0;
  fi->clique_id = R->clique;
  fi->state = (unsigned char)R->fabric_state;
  fi->status = 0;
  return 0;
}
static const struct snapccl_nvml g_nvml_stub = {n_init, n_shutdown, n_by_bus, n_fabric};

static void stub_install(void) {
  stub_reset();
  snapccl_mc_set_driver(&g_stub);
  snapccl_mc_set_nvml(&g_nvml_stub);
  env_set("NCCL_NVLS_ENABLE", NULL);
  env_set("SNAPCCL_BOOTSTRAP_TIMEOUT", "20");
}
static void stub_remove(void) {
  env_set("SNAPCCL_NVLS", NULL);
  env_set("NCCL_NVLS_ENABLE", NULL);
  snapccl_mc_set_driver(NULL);
  snapccl_mc_set_nvml(NULL);
}

/* ---------------------------------------------------------------- fake communicators */

struct rank_cfg {
  uint64_t host, proc; /* 0: the real ones */
  int gpu;             /* GPU identity (ranks with the same value share a GPU) */
  int usable;
};

struct rank_out {
  int rc;   /* 0 ok, else the failing line */
  int open;
  int handle;
  char reason[200];
  char log_setup[4096];
  char log_free[4096];
  int sentinel_ok;
};

struct world {
  int n;
  ncclUniqueId id;
  struct rank_cfg cfg[MAXR];
  struct rank_out out[MAXR];
};

#define RCHECK(cond)                                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "rank %d: check `%s` failed at line %d (%s)\n", rank, #cond, __LINE__, \
              snapccl_last_error());                                                 \
      return __LINE__;                                                               \
    }                                                                                \
  } while (0)

/* One rank: rendezvous, peer table, setup, verdict, free. */
static int run_rank(struct world* w, int rank) {
  struct rank_out* o = &w->out[rank];
  const struct rank_cfg* cfg = &w->cfg[rank];
  t_rank = rank;
  struct snapccl_comm* c = NULL;
  RCHECK(snapccl_comm_alloc(&c) == ncclSuccess);
  c->rank = rank, c->nranks = w->n, c->cuda_dev = g_rank[rank].ordinal;
  RCHECK(snapccl_bootstrap_init(&w->id, rank, w->n, &c->boot) == ncclSuccess);
  c->peers = calloc((size_t)w->n, sizeof *c->peers);
  RCHECK(c->peers);
  struct snapccl_peer_info* me = &c->peers[rank];
  me->rank = rank, me->cuda_dev = c->cuda_dev, me->pid = (int32_t)getpid();
  me->host_hash = cfg->host ? cfg->host : 0x4057;
  me->proc_hash = cfg->proc ? cfg->proc : (uint64_t)getpid();
  me->gpu_uuid[0] = (uint8_t)cfg->gpu;
  snprintf(me->bus_id, sizeof me->bus_id, "0000:%02x:00.0", cfg->gpu);
  RCHECK(snapccl_oob_allgather(c, c->peers, sizeof *me) == ncclSuccess);
  for (int r = 0; r < w->n; r++) {
    int first = 1;
    for (int q = 0; q < r; q++) first &= c->peers[q].gpu_uuid[0] != c->peers[r].gpu_uuid[0];
    c->nlocal_gpus += first;
    c->ranks_in_proc += c->peers[r].proc_hash == me->proc_hash;
  }
  struct snapccl_ws_layout lay;
  snapccl_ws_layout_compute(&lay, w->n, 2, 0);
  RCHECK(snapccl_nvls_setup_core(c, &lay, cfg->usable) == ncclSuccess);
  RCHECK(c->nvls);
  o->open = c->nvls->open;
  o->handle = c->nvls->handle;
  snprintf(o->reason, sizeof o->reason, "%s", c->nvls->reason);
  snprintf(o->log_setup, sizeof o->log_setup, "%s", g_rank[rank].log);
  g_rank[rank].log[0] = 0;
  if (o->open) {
    const uint64_t* l = (const uint64_t*)((const char*)(uintptr_t)c->nvls->uc_va + lay.lamport_off);
    o->sentinel_ok = l[0] == 0x8000000080000000ull &&
                     l[2ull * (size_t)w->n * lay.oneshot_bytes / 8 - 1] == 0x8000000080000000ull &&
                     c->nvls->size % GRAN == 0 && c->nvls->size >= lay.total;
  }
  /* Free only once every rank is done with setup (as ncclCommDestroy after use would). */
  RCHECK(snapccl_oob_barrier(c) == ncclSuccess);
  snapccl_nvls_free(c);
  RCHECK(c->nvls == NULL);
  snprintf(o->log_free, sizeof o->log_free, "%s", g_rank[rank].log);
  RCHECK(snapccl_oob_barrier(c) == ncclSuccess);
  snapccl_bootstrap_destroy(c->boot);
  free(c->peers);
  pthread_mutex_destroy(&c->lock);
  free(c);
  return 0;
}

static void* rank_thread(void* p) {
  struct world* w = ((struct world**)p)[0];
  int rank = (int)(intptr_t)((void**)p)[1];
  w->out[rank].rc = run_rank(w, rank);
  return NULL;
}

static void world_init(struct world* w, int n) {
  memset(w, 0, sizeof *w);
  w->n = n;
  for (int r = 0; r < n; r++) w->cfg[r].gpu = r, w->cfg[r].usable = 1;
}

/* Every rank a thread of this process. */
static void run_threads(struct world* w) {
  pthread_t th[MAXR];
  void* args[MAXR][2];
  g_all_in_process = 1;
  cr_assert_eq(snapccl_bootstrap_create_root(&w->id), ncclSuccess, "%s", snapccl_last_error());
  for (int r = 0; r < w->n; r++) {
    args[r][0] = w, args[r][1] = (void*)(intptr_t)r;
    cr_assert_eq(pthread_create(&th[r], NULL, rank_thread, args[r]), 0);
  }
  for (int r = 0; r < w->n; r++) pthread_join(th[r], NULL);
  for (int r = 0; r < w->n; r++) cr_assert_eq(w->out[r].rc, 0, "rank %d failed at line %d", r, w->out[r].rc);
}

static int has(const char* log, const char* call) {
  char pat[96];
  snprintf(pat, sizeof pat, " %s", call);
  for (const char* p = log; (p = strstr(p, pat)); p++)
    if (p[strlen(pat)] == ' ' || p[strlen(pat)] == 0) return 1;
  return 0;
}

/* Table members that create, change or map multicast state (everything but the three
 * queries allowed before the gate decides: device_get, the multicast attribute, and
 * error strings). */
static const char* const multicast_calls[] = {
    "multicast_get_granularity", "multicast_create", "multicast_add_device", "multicast_bind_mem",
    "multicast_unbind", "mem_get_allocation_granularity", "mem_create", "mem_release",
    "mem_export_to_shareable_handle", "mem_import_from_shareable_handle", "mem_address_reserve",
    "mem_address_free", "mem_map", "mem_unmap", "mem_set_access", "init_replica"};

static void assert_no_multicast_calls(const struct world* w) {
  for (int r = 0; r < w->n; r++)
    for (size_t i = 0; i < NELEMS(multicast_calls); i++) {
      cr_assert(!has(w->out[r].log_setup, multicast_calls[i]) && !has(w->out[r].log_free, multicast_calls[i]),
                "rank %d called %s with the gate closed: [%s] [%s]", r, multicast_calls[i], w->out[r].log_setup,
                w->out[r].log_free);
    }
}

static void assert_balanced(void) {
  cr_assert_eq(atomic_load(&g_live_handles), 0, "handles left: %d", atomic_load(&g_live_handles));
  cr_assert_eq(atomic_load(&g_live_va), 0, "address ranges left: %d", atomic_load(&g_live_va));
  cr_assert_eq(atomic_load(&g_live_maps), 0, "mappings left: %d", atomic_load(&g_live_maps));
  cr_assert_eq(atomic_load(&g_live_binds), 0, "bindings left: %d", atomic_load(&g_live_binds));
}

static void assert_closed(const struct world* w, const char* why) {
  for (int r = 0; r < w->n; r++) {
    cr_assert(!w->out[r].open, "rank %d opened", r);
    cr_assert(strstr(w->out[r].reason, why), "rank %d's reason \"%s\" does not mention \"%s\"", r,
              w->out[r].reason, why);
  }
}

/* ---------------------------------------------------------------- the gate */

Test(gate, decision_table) {
  static const int nvls[] = {0, 1, 2, -1};
  static const char* const nccl[] = {NULL, "", "0", "1", "2", "00", "-0", "junk", "1x"};
  static const int nccl_allows[] = {1, 1, 0, 1, 1, 0, 0, 0, 0};
  static const int device[] = {-1, 0, 1};
  int opened = 0, combos = 0;
  for (size_t a = 0; a < NELEMS(nvls); a++)
    for (size_t b = 0; b < NELEMS(nccl); b++)
      for (size_t c = 0; c < NELEMS(device); c++)
        for (int agree = 0; agree <= 1; agree++) {
          struct snapccl_mc_gate_in in = {nvls[a], nccl[b], device[c], agree};
          struct snapccl_mc_gate g;
          memset(&g, 0x5a, sizeof g);
          snapccl_mc_gate_decide(&in, &g);
          combos++;
          const int want = nvls[a] == 1 && nccl_allows[b] && device[c] == 1 && agree;
          cr_assert_eq(g.open, want, "SNAPCCL_NVLS=%d NCCL_NVLS_ENABLE=%s device=%d agree=%d: open=%d", nvls[a],
                       nccl[b] ? nccl[b] : "(unset)", device[c], agree, g.open);
          opened += g.open;
          /* The reason names the first condition that fails, in the gate's order. */
          const char* key = want ? NULL
                            : nvls[a] != 1 ? "SNAPCCL_NVLS"
                            : !nccl_allows[b] ? "NCCL_NVLS_ENABLE"
                            : device[c] < 0 ? "unknown"
                            : device[c] == 0 ? "does not support"
                                             : "not every rank";
          if (want) cr_assert_eq(g.reason[0], 0, "an open gate has no reason: %s", g.reason);
          else cr_assert(strstr(g.reason, key), "reason \"%s\" should mention \"%s\"", g.reason, key);
        }
  cr_assert_eq(combos, 4 * 9 * 3 * 2);
  cr_assert_eq(opened, 4, "exactly SNAPCCL_NVLS=1 x NCCL_NVLS_ENABLE unset, empty, 1 or 2 x supported x agreed");
}

Test(gate, environment_stage) {
  char why[160];
  cr_assert(!snapccl_mc_env_allows(0, NULL, why, sizeof why) && strstr(why, "SNAPCCL_NVLS=1"));
  cr_assert(!snapccl_mc_env_allows(1, "0", why, sizeof why) && strstr(why, "turns NVLink multicast off"));
  cr_assert(!snapccl_mc_env_allows(1, "off", why, sizeof why) && strstr(why, "not a number"));
  cr_assert(snapccl_mc_env_allows(1, "1", why, sizeof why));
  cr_assert(snapccl_mc_env_allows(1, NULL, why, sizeof why));
  cr_assert(snapccl_mc_env_allows(1, "", why, sizeof why));
}

/* ---------------------------------------------------------------- handle choice */

static struct snapccl_mc_peer peer(uint64_t host, uint64_t proc, int posix, int fabric) {
  struct snapccl_mc_peer p;
  memset(&p, 0, sizeof p);
  p.host_hash = host, p.proc_hash = proc, p.posix_fd_supported = posix, p.fabric_supported = fabric;
  p.fabric_known = 1, p.fabric_state = SNAPCCL_NVML_FABRIC_STATE_COMPLETED, p.clique_id = 7;
  p.cluster_uuid[3] = 0xab;
  return p;
}

Test(handle, choice_from_fabric_info) {
  char why[160];
  struct snapccl_mc_peer p[4];
  /* One process: the handle itself, whatever the device can export. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, 1, 0, 0);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_PROCESS);
  /* One host, several processes: POSIX fd. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, 10 + r, 1, 1);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_POSIX_FD);
  /* ... no POSIX fds on one GPU: fabric if the domain is right, else none. */
  p[2].posix_fd_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_FABRIC);
  p[1].fabric_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "rank 2") && strstr(why, "POSIX"), "%s", why);
  /* Several hosts: fabric, only within one NVLink domain (cluster and clique). */
  for (int r = 0; r < 4; r++) p[r] = peer(100 + r, 10 + r, 1, 1);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_FABRIC);
  struct snapccl_mc_peer q[4];
  memcpy(q, p, sizeof q), q[3].fabric_supported = 0;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "rank 3") && strstr(why, "fabric handles"), "%s", why);
  memcpy(q, p, sizeof q), q[1].fabric_known = 0;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "NVML"), "%s", why);
  memcpy(q, p, sizeof q), q[2].fabric_state = 2; /* still registering */
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "not registered"), "%s", why);
  memcpy(q, p, sizeof q), q[2].fabric_status = 1;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  memcpy(q, p, sizeof q), q[1].cluster_uuid[0] = 1;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "another NVLink domain"), "%s", why);
  memcpy(q, p, sizeof q), q[3].clique_id = 8;
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "another NVLink domain"), "%s", why);
  memcpy(q, p, sizeof q);
  for (int r = 0; r < 4; r++) memset(q[r].cluster_uuid, 0, 16);
  cr_assert_eq(snapccl_mc_choose_handle(q, 4, why, sizeof why), MC_HANDLE_NONE);
  cr_assert(strstr(why, "no NVLink cluster"), "%s", why);
  /* Mixed: two processes on one host, one of them with two ranks: still POSIX fd. */
  for (int r = 0; r < 4; r++) p[r] = peer(1, r < 2 ? 10 : 11, 1, 0);
  cr_assert_eq(snapccl_mc_choose_handle(p, 4, why, sizeof why), MC_HANDLE_POSIX_FD);
}

/* ---------------------------------------------------------------- stubbed setup */

TestSuite(stub, .init = stub_install, .fini = stub_remove, .timeout = 120);

/* Gate closed by the environment: not one driver call, not even a query. */
Test(stub, closed_by_environment_makes_no_call) {
  REQUIRE_NO_GPU();
  static const struct {
    const char *nvls, *nccl, *why;
  } env[] = {{NULL, NULL, "SNAPCCL_NVLS"},  {"0", NULL, "SNAPCCL_NVLS"},          {"2", "1", "SNAPCCL_NVLS"},
             {"1", "0", "NCCL_NVLS_ENABLE"}, {"1", "no", "NCCL_NVLS_ENABLE"}};
  for (size_t i = 0; i < NELEMS(env); i++) {
    struct world w;
    world_init(&w, 2);
    stub_reset();
    env_set("SNAPCCL_NVLS", env[i].nvls);
    env_set("NCCL_NVLS_ENABLE", env[i].nccl);
    run_threads(&w);
    assert_closed(&w, env[i].why);
    for (int r = 0; r < 2; r++)
      cr_assert_eq(w.out[r].log_setup[0] + w.out[r].log_free[0], 0, "case %zu rank %d called [%s] [%s]", i, r,
                   w.out[r].log_setup, w.out[r].log_free);
  }
}

/* Closed by one GPU's answer: only the two queries, on every rank. */
Test(stub, closed_by_device_makes_no_multicast_call) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 3);
  g_rank[1].attr_mc = 0;
  run_threads(&w);
  assert_closed(&w, "does not support");
  assert_no_multicast_calls(&w);
  for (int r = 0; r < 3; r++) {
    cr_assert_str_eq(w.out[r].log_setup, " device_get attr:multicast", "rank %d", r);
    cr_assert(r == 1 || strstr(w.out[r].reason, "rank 1"), "rank %d: %s", r, w.out[r].reason);
  }
}

/* Closed by what needs no driver at all: one rank, a shared GPU, no transport. */
Test(stub, closed_by_applicability_makes_no_call) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 1);
  run_threads(&w);
  assert_closed(&w, "single rank");
  cr_assert_eq(w.out[0].log_setup[0], 0, "[%s]", w.out[0].log_setup);

  world_init(&w, 3);
  stub_reset();
  w.cfg[2].gpu = 0; /* SNAPCCL_SHARED_GPU */
  run_threads(&w);
  assert_closed(&w, "share a GPU");
  for (int r = 0; r < 3; r++) cr_assert_eq(w.out[r].log_setup[0], 0, "rank %d: [%s]", r, w.out[r].log_setup);

  world_init(&w, 2);
  stub_reset();
  w.cfg[0].usable = w.cfg[1].usable = 0;
  run_threads(&w);
  assert_closed(&w, "transport");
  for (int r = 0; r < 2; r++) cr_assert_eq(w.out[r].log_setup[0], 0, "rank %d: [%s]", r, w.out[r].log_setup);
}

static const char* const open_seq_creator =
    " device_get attr:multicast attr:posix attr:fabric multicast_get_granularity mem_get_allocation_granularity"
    " multicast_create multicast_add_device mem_create multicast_bind_mem mem_address_reserve mem_map"
    " mem_set_access mem_address_reserve mem_map mem_set_access init_replica";
static const char* const open_seq_other =
    " device_get attr:multicast attr:posix attr:fabric multicast_get_granularity mem_get_allocation_granularity"
    " multicast_add_device mem_create multicast_bind_mem mem_address_reserve mem_map mem_set_access"
    " mem_address_reserve mem_map mem_set_access init_replica";
static const char* const free_seq =
    " multicast_unbind mem_unmap mem_address_free mem_unmap mem_address_free mem_release";
/* ... and its own reference to the object (no sharing across processes). */
static const char* const free_seq_own =
    " multicast_unbind mem_unmap mem_address_free mem_unmap mem_address_free mem_release mem_release";

/* Open, every rank in this process: the creator's handle is shared, no export. */
Test(stub, open_one_process_call_sequence) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 4);
  run_threads(&w);
  for (int r = 0; r < 4; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_PROCESS);
    cr_assert(w.out[r].sentinel_ok, "rank %d: the replica was not initialised", r);
    cr_assert_str_eq(w.out[r].log_setup, r ? open_seq_other : open_seq_creator, "rank %d", r);
    /* The last of the ranks to free releases the shared object as well. */
    cr_assert(!strncmp(w.out[r].log_free, free_seq, strlen(free_seq)), "rank %d: [%s]", r, w.out[r].log_free);
  }
  cr_assert_eq(atomic_load(&g_mc_releases), 1, "the shared object is released once");
  cr_assert_eq(atomic_load(&g_inits), 4);
  assert_balanced();
}

/* Open, ranks in (what they report as) different processes of one host: the creator
 * exports a POSIX fd, the others fetch it over the Unix socket and import it. */
Test(stub, open_posix_fd_call_sequence) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 3);
  for (int r = 0; r < 3; r++) w.cfg[r].proc = 0x1000 + (uint64_t)r;
  run_threads(&w);
  for (int r = 0; r < 3; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_POSIX_FD);
    cr_assert_eq(has(w.out[r].log_setup, "mem_export_to_shareable_handle"), r == 0, "rank %d: [%s]", r,
                 w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "mem_import_from_shareable_handle"), r != 0, "rank %d: [%s]", r,
                 w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "multicast_create"), r == 0);
    cr_assert_str_eq(w.out[r].log_free, free_seq_own, "rank %d", r);
  }
  cr_assert_eq(atomic_load(&g_mc_releases), 3, "every rank releases its own reference");
  assert_balanced();
}

/* Open across (fake) hosts of one NVLink domain: NVML is asked, fabric handles travel
 * through the out-of-band allgather. A rank in another clique closes it before any
 * multicast call. */
Test(stub, open_fabric_and_domain_mismatch) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  struct world w;
  world_init(&w, 2);
  for (int r = 0; r < 2; r++) {
    w.cfg[r].host = 0x500 + (uint64_t)r, w.cfg[r].proc = 0x900 + (uint64_t)r;
    g_rank[r].attr_fabric = 1, g_rank[r].fabric_ok = 1, g_rank[r].clique = 4, g_rank[r].uuid0 = 9;
    g_rank[r].fabric_state = SNAPCCL_NVML_FABRIC_STATE_COMPLETED;
  }
  run_threads(&w);
  for (int r = 0; r < 2; r++) {
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_FABRIC);
    cr_assert(has(w.out[r].log_setup, "nvml_fabric"), "[%s]", w.out[r].log_setup);
    cr_assert_eq(has(w.out[r].log_setup, "mem_export_to_shareable_handle"), r == 0);
    cr_assert_eq(has(w.out[r].log_setup, "mem_import_from_shareable_handle"), r == 1);
  }
  assert_balanced();

  world_init(&w, 2);
  for (int r = 0; r < 2; r++) {
    w.cfg[r].host = 0x500 + (uint64_t)r, w.cfg[r].proc = 0x900 + (uint64_t)r;
    g_rank[r].log[0] = 0;
  }
  g_rank[1].clique = 5;
  run_threads(&w);
  assert_closed(&w, "another NVLink domain");
  assert_no_multicast_calls(&w);
  assert_balanced();
}

/* A failure on one rank at any step closes the gate on every rank and undoes exactly
 * what was done. */
Test(stub, failure_at_each_step_rolls_back_everywhere) {
  REQUIRE_NO_GPU();
  env_set("SNAPCCL_NVLS", "1");
  static const struct {
    const char* fn;
    int rank;
    const char* says;
  } faults[] = {
      {"multicast_get_granularity", 1, "cuMulticastGetGranularity"},
      {"multicast_create", 0, "cuMulticastCreate"},
      {"mem_export_to_shareable_handle", 0, "cuMemExportToShareableHandle"},
      {"mem_import_from_shareable_handle", 2, "cuMemImportFromShareableHandle"},
      {"multicast_add_device", 1, "cuMulticastAddDevice"},
      {"mem_create", 2, "cuMemCreate"},
      {"multicast_bind_mem", 1, "cuMulticastBindMem"},
      {"mem_map", 0, "cuMemMap"},
      {"mem_set_access", 2, "cuMemSetAccess"},
      {"init_replica", 1, "initialising"},
  };
  for (size_t i = 0; i < NELEMS(faults); i++) {
    struct world w;
    world_init(&w, 3);
    stub_reset();
    for (int r = 0; r < 3; r++) w.cfg[r].proc = 0x2000 + (uint64_t)r; /* POSIX fd: export and import */
    g_rank[faults[i].rank].fail = faults[i].fn;
    run_threads(&w);
    assert_closed(&w, faults[i].says);
    for (int r = 0; r < 3; r++) {
      if (r != faults[i].rank && strcmp(faults[i].fn, "multicast_create") != 0 &&
          strcmp(faults[i].fn, "mem_export_to_shareable_handle") != 0)
        cr_assert(strstr(w.out[r].reason, "rank "), "%s: rank %d: %s", faults[i].fn, r, w.out[r].reason);
      cr_assert_eq(w.out[r].log_free[0], 0, "%s: rank %d freed after rollback: [%s]", faults[i].fn, r,
                   w.out[r].log_free);
    }
    /* No device is added before the object exists everywhere, nothing is bound before
     * every device is added. */
    if (!strcmp(faults[i].fn, "multicast_create") || !strcmp(faults[i].fn, "mem_export_to_shareable_handle"))
      for (int r = 0; r < 3; r++) cr_assert(!has(w.out[r].log_setup, "multicast_add_device"), "%s", faults[i].fn);
    if (!strcmp(faults[i].fn, "multicast_add_device"))
      for (int r = 0; r < 3; r++) cr_assert(!has(w.out[r].log_setup, "mem_create"), "%s", faults[i].fn);
    assert_balanced();
  }
}

/* ---------------------------------------------------------------- forked processes */

/* Runs rank r of w in a child; the child's environment gets SNAPCCL_NVLS=nvls[r]. */
static void run_processes(struct world* w, const char* const* nvls, int* codes) {
  cr_assert_eq(snapccl_bootstrap_create_root(&w->id), ncclSuccess, "%s", snapccl_last_error());
  g_all_in_process = 0;
  pid_t pids[MAXR];
  int fds[MAXR][2];
  for (int r = 0; r < w->n; r++) {
    cr_assert_eq(pipe(fds[r]), 0);
    pids[r] = fork();
    cr_assert(pids[r] >= 0);
    if (pids[r] == 0) {
      close(fds[r][0]);
      env_set("SNAPCCL_NVLS", nvls[r]);
      w->cfg[r].proc = 0; /* the real process: distinct per child */
      int rc = run_rank(w, r);
      ssize_t wr = write(fds[r][1], &w->out[r], sizeof w->out[r]);
      (void)wr;
      _exit(rc ? (rc & 0x7f) | 0x80 : 0);
    }
    close(fds[r][1]);
    if (r == 0) g_expect_creator_pid = pids[0]; /* importers check whose object they got */
  }
  g_expect_creator_pid = 0;
  double end = now_s() + 90;
  for (int r = 0; r < w->n; r++) {
    int st = 0;
    for (;;) {
      pid_t p = waitpid(pids[r], &st, WNOHANG);
      if (p == pids[r]) break;
      if (now_s() > end) {
        for (int q = 0; q < w->n; q++) kill(pids[q], SIGKILL);
        waitpid(pids[r], &st, 0);
        break;
      }
      usleep(2000);
    }
    codes[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 255;
    ssize_t got = read(fds[r][0], &w->out[r], sizeof w->out[r]);
    if (got != (ssize_t)sizeof w->out[r]) memset(&w->out[r], 0, sizeof w->out[r]);
    close(fds[r][0]);
  }
}

/* Two real processes: the creator's POSIX fd crosses the process boundary. */
Test(stub, processes_posix_fd) {
  REQUIRE_NO_GPU();
  struct world w;
  world_init(&w, 2);
  static const char* const nvls[] = {"1", "1"};
  int codes[MAXR];
  run_processes(&w, nvls, codes);
  for (int r = 0; r < 2; r++) {
    cr_assert_eq(codes[r], 0, "rank %d exited with %d", r, codes[r]);
    cr_assert(w.out[r].open, "rank %d: %s", r, w.out[r].reason);
    cr_assert_eq(w.out[r].handle, MC_HANDLE_POSIX_FD);
    cr_assert_str_eq(w.out[r].log_free, free_seq_own);
  }
  cr_assert(has(w.out[0].log_setup, "mem_export_to_shareable_handle"), "[%s]", w.out[0].log_setup);
  cr_assert(has(w.out[1].log_setup, "mem_import_from_shareable_handle"), "[%s]", w.out[1].log_setup);
}

/* The processes disagree: one lacks SNAPCCL_NVLS. It makes no call at all, the other
 * only asks its GPU, and both stay closed. */
Test(stub, processes_disagree) {
  REQUIRE_NO_GPU();
  struct world w;
  world_init(&w, 2);
  static const char* const nvls[] = {"1", NULL};
  int codes[MAXR];
  run_processes(&w, nvls, codes);
  for (int r = 0; r < 2; r++) cr_assert_eq(codes[r], 0, "rank %d exited with %d", r, codes[r]);
  assert_closed(&w, "SNAPCCL_NVLS");
  cr_assert_str_eq(w.out[0].log_setup, " device_get attr:multicast");
  cr_assert_eq(w.out[1].log_setup[0], 0, "[%s]", w.out[1].log_setup);
  assert_no_multicast_calls(&w);
}

/* ---------------------------------------------------------------- fd passing */

struct recv_job {
  struct snapccl_fd_address addr;
  double timeout;
  int fd;
  ncclResult_t res;
};
static void* recv_thread(void* p) {
  struct recv_job* j = p;
  j->res = snapccl_fd_receive(&j->addr, j->timeout, &j->fd);
  return NULL;
}

static int same_file(int a, int b) {
  struct stat x, y;
  return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_ino == y.st_ino && x.st_dev == y.st_dev;
}

Test(fd, passes_a_descriptor_between_threads_and_processes) {
  struct snapccl_fd_server* s = NULL;
  struct snapccl_fd_address addr;
  cr_assert_eq(snapccl_fd_server_open(&s, &addr), ncclSuccess, "%s", snapccl_last_error());
  int memfd = memfd_create("fd-test", MFD_CLOEXEC);
  cr_assert(memfd >= 0 && pwrite(memfd, "payload!", 8, 0) == 8);
  /* Two clients: a thread of this process and a child process. */
  struct recv_job j = {addr, 10, -1, ncclInternalError};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &j), 0);
  pid_t child = fork();
  cr_assert(child >= 0);
  if (child == 0) {
    int fd = -1;
    char buf[8];
    if (snapccl_fd_receive(&addr, 10, &fd) != ncclSuccess) _exit(1);
    if (pread(fd, buf, 8, 0) != 8 || memcmp(buf, "payload!", 8) != 0) _exit(2);
    _exit(0);
  }
  int32_t pids[2] = {(int32_t)getpid(), (int32_t)child};
  cr_assert_eq(snapccl_fd_server_serve(s, memfd, 2, pids, 2, 20), ncclSuccess, "%s", snapccl_last_error());
  pthread_join(th, NULL);
  int st = 0;
  waitpid(child, &st, 0);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child could not receive (status %d)", st);
  cr_assert_eq(j.res, ncclSuccess, "%s", snapccl_last_error());
  cr_assert(same_file(j.fd, memfd), "the thread received another file");
  close(j.fd);
  close(memfd);
  snapccl_fd_server_close(s);
}

Test(fd, refuses_strangers_and_wrong_nonces) {
  struct snapccl_fd_server* s = NULL;
  struct snapccl_fd_address addr;
  cr_assert_eq(snapccl_fd_server_open(&s, &addr), ncclSuccess);
  int memfd = memfd_create("fd-test", MFD_CLOEXEC);
  /* A client that does not know the nonce. */
  struct recv_job j = {addr, 3, -1, ncclSuccess};
  j.addr.nonce[0] ^= 1;
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &j), 0);
  int32_t me = (int32_t)getpid();
  cr_assert_neq(snapccl_fd_server_serve(s, memfd, 1, &me, 1, 1.5), ncclSuccess, "served a wrong nonce");
  pthread_join(th, NULL);
  cr_assert_neq(j.res, ncclSuccess, "a client with a wrong nonce got a descriptor");
  /* A client whose pid is not a rank's. */
  struct recv_job k = {addr, 3, -1, ncclSuccess};
  cr_assert_eq(pthread_create(&th, NULL, recv_thread, &k), 0);
  int32_t other = me + 1;
  cr_assert_neq(snapccl_fd_server_serve(s, memfd, 1, &other, 1, 1.5), ncclSuccess, "served a stranger");
  pthread_join(th, NULL);
  cr_assert_neq(k.res, ncclSuccess, "a stranger got a descriptor");
  /* A client that expects another server pid refuses to talk. */
  struct snapccl_fd_address wrong = addr;
  wrong.pid = me + 1;
  int fd = -1;
  cr_assert_neq(snapccl_fd_receive(&wrong, 1, &fd), ncclSuccess);
  close(memfd);
  snapccl_fd_server_close(s);
}
