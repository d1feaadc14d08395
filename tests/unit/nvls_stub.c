/* The stub driver of the multicast tests (test_nvls_gate*.c, one binary): a driver and
 * an NVML table over fake device memory (host memory behind fake handles), logging every
 * call per rank, failing the one a test names; and fake communicators run as threads,
 * through the real bootstrap and the real multicast setup. See nvls_stub.h. */
#include "nvls_stub.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "bootstrap.h"
#include "comm.h"
#include "env.h"
#include "error.h"
#include "oob.h"
#include "transport/multicast.h"
#include "transport/transport_impl.h"

/* ---------------------------------------------------------------- helpers */

int gpu_visible(void) {
  int n = 0;
  if (CUDA_TRY(cudaGetDeviceCount(&n)) != cudaSuccess) return 0;
  return n > 0;
}


double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void env_set(const char* name, const char* v) {
  if (v) setenv(name, v, 1);
  else unsetenv(name);
  snapccl_env_reload();
}

/* ---------------------------------------------------------------- the stub driver */

/* Per rank (thread-local in threads; the only rank in a forked child). */
static _Thread_local int t_rank = -1;
struct stub_rank g_rank[MAXR];
int64_t g_expect_creator_pid; /* a forked importer checks the exporter's tag */
int g_all_in_process;        /* every rank is a thread here: device counts are visible */

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
static atomic_int g_live_handles, g_live_va, g_live_maps, g_live_binds;
atomic_int g_mc_releases, g_inits;

void stub_reset(void) {
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

void stub_install(void) {
  stub_reset();
  snapccl_mc_set_driver(&g_stub);
  snapccl_mc_set_nvml(&g_nvml_stub);
  env_set("NCCL_NVLS_ENABLE", NULL);
  env_set("SNAPCCL_BOOTSTRAP_TIMEOUT", "20");
}
void stub_remove(void) {
  env_set("SNAPCCL_NVLS", NULL);
  env_set("NCCL_NVLS_ENABLE", NULL);
  snapccl_mc_set_driver(NULL);
  snapccl_mc_set_nvml(NULL);
}

/* ---------------------------------------------------------------- fake communicators */


#define RCHECK(cond)                                                                 \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "rank %d: check `%s` failed at line %d (%s)\n", rank, #cond, __LINE__, \
              snapccl_last_error());                                                 \
      return __LINE__;                                                               \
    }                                                                                \
  } while (0)

/* One rank: rendezvous, peer table, setup, verdict, free. */
int run_rank(struct world* w, int rank) {
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

void world_init(struct world* w, int n) {
  memset(w, 0, sizeof *w);
  w->n = n;
  for (int r = 0; r < n; r++) w->cfg[r].gpu = r, w->cfg[r].usable = 1;
}

/* Every rank a thread of this process. */
void run_threads(struct world* w) {
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

int has(const char* log, const char* call) {
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

void assert_no_multicast_calls(const struct world* w) {
  for (int r = 0; r < w->n; r++)
    for (size_t i = 0; i < NELEMS(multicast_calls); i++) {
      cr_assert(!has(w->out[r].log_setup, multicast_calls[i]) && !has(w->out[r].log_free, multicast_calls[i]),
                "rank %d called %s with the gate closed: [%s] [%s]", r, multicast_calls[i], w->out[r].log_setup,
                w->out[r].log_free);
    }
}

void assert_balanced(void) {
  cr_assert_eq(atomic_load(&g_live_handles), 0, "handles left: %d", atomic_load(&g_live_handles));
  cr_assert_eq(atomic_load(&g_live_va), 0, "address ranges left: %d", atomic_load(&g_live_va));
  cr_assert_eq(atomic_load(&g_live_maps), 0, "mappings left: %d", atomic_load(&g_live_maps));
  cr_assert_eq(atomic_load(&g_live_binds), 0, "bindings left: %d", atomic_load(&g_live_binds));
}

void assert_closed(const struct world* w, const char* why) {
  for (int r = 0; r < w->n; r++) {
    cr_assert(!w->out[r].open, "rank %d opened", r);
    cr_assert(strstr(w->out[r].reason, why), "rank %d's reason \"%s\" does not mention \"%s\"", r,
              w->out[r].reason, why);
  }
}
