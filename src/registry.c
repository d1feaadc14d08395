#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "error.h"

/* Open addressing keyed by the handle's address, changed under one mutex. Lookups happen
 * on every call: each thread remembers its last hit with the table's generation, which
 * every change bumps, and a hit of the same handle in the same generation takes no lock.
 * (The application keeps a communicator alive while it calls on it, as with NCCL; the
 * generation only has to say that the mapping is still the one looked up.) */
struct slot {
  const void* key;
  struct snapccl_comm* comm;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic unsigned long long g_generation = 1; /* never 0: 0 marks an empty memo */
static struct slot* g_slots;
static size_t g_cap; /* power of two */
static size_t g_used; /* live entries */
static size_t g_tomb; /* deleted markers */

/* This thread's last lookup (a miss too: forwarded handles are looked up on every call). */
static _Thread_local struct {
  const void* handle;
  struct snapccl_comm* comm;
  unsigned long long generation;
} t_memo;

static void changed_locked(void) { atomic_fetch_add_explicit(&g_generation, 1, memory_order_release); }

static const char tombstone_;
#define TOMB ((const void*)&tombstone_)

static size_t hash_ptr(const void* p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return (size_t)x;
}

static int grow_locked(void) {
  size_t ncap = g_cap ? g_cap * 2 : 64;
  if (g_used * 4 < g_cap) ncap = g_cap; /* only tombstones to clean up */
  struct slot* ns = calloc(ncap, sizeof *ns);
  if (!ns) return 0;
  for (size_t i = 0; i < g_cap; i++) {
    if (!g_slots[i].key || g_slots[i].key == TOMB) continue;
    size_t j = hash_ptr(g_slots[i].key) & (ncap - 1);
    while (ns[j].key) j = (j + 1) & (ncap - 1);
    ns[j] = g_slots[i];
  }
  free(g_slots);
  g_slots = ns;
  g_cap = ncap;
  g_tomb = 0;
  return 1;
}

ncclResult_t snapccl_registry_add(const void* handle, struct snapccl_comm* comm) {
  pthread_mutex_lock(&g_lock);
  if ((g_used + g_tomb + 1) * 2 > g_cap && !grow_locked()) {
    pthread_mutex_unlock(&g_lock);
    SNAP_FAIL(ncclSystemError, "out of memory growing the communicator registry");
  }
  size_t j = hash_ptr(handle) & (g_cap - 1);
  size_t first_tomb = (size_t)-1;
  while (g_slots[j].key) {
    if (g_slots[j].key == handle) { /* re-registration replaces */
      g_slots[j].comm = comm;
      changed_locked();
      pthread_mutex_unlock(&g_lock);
      return ncclSuccess;
    }
    if (g_slots[j].key == TOMB && first_tomb == (size_t)-1) first_tomb = j;
    j = (j + 1) & (g_cap - 1);
  }
  if (first_tomb != (size_t)-1) {
    j = first_tomb;
    g_tomb--;
  }
  g_slots[j].key = handle;
  g_slots[j].comm = comm;
  g_used++;
  changed_locked();
  pthread_mutex_unlock(&g_lock);
  return ncclSuccess;
}

static struct slot* find_locked(const void* handle) {
  if (!g_cap || !handle) return NULL;
  size_t j = hash_ptr(handle) & (g_cap - 1);
  while (g_slots[j].key) {
    if (g_slots[j].key == handle) return &g_slots[j];
    j = (j + 1) & (g_cap - 1);
  }
  return NULL;
}

struct snapccl_comm* snapccl_registry_find(const void* handle) {
  if (t_memo.handle == handle &&
      t_memo.generation == atomic_load_explicit(&g_generation, memory_order_acquire))
    return t_memo.comm;
  pthread_mutex_lock(&g_lock);
  struct slot* s = find_locked(handle);
  struct snapccl_comm* c = s ? s->comm : NULL;
  t_memo.handle = handle;
  t_memo.comm = c;
  t_memo.generation = atomic_load_explicit(&g_generation, memory_order_relaxed);
  pthread_mutex_unlock(&g_lock);
  return c;
}

struct snapccl_comm* snapccl_registry_remove(const void* handle) {
  pthread_mutex_lock(&g_lock);
  struct slot* s = find_locked(handle);
  struct snapccl_comm* c = NULL;
  if (s) {
    c = s->comm;
    s->key = TOMB;
    s->comm = NULL;
    g_used--;
    g_tomb++;
    changed_locked();
  }
  pthread_mutex_unlock(&g_lock);
  return c;
}

int snapccl_registry_count(void) {
  pthread_mutex_lock(&g_lock);
  int n = (int)g_used;
  pthread_mutex_unlock(&g_lock);
  return n;
}
