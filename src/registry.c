#include "registry.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "error.h"

/* Open addressing keyed by the handle's address; lookups happen on every call, so
 * they stay O(1) under one uncontended mutex. */
struct slot {
  const void* key;
  struct snapccl_comm* comm;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot* g_slots;
static size_t g_cap; /* power of two */
static size_t g_used; /* live entries */
static size_t g_tomb; /* deleted markers */

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
  pthread_mutex_lock(&g_lock);
  struct slot* s = find_locked(handle);
  struct snapccl_comm* c = s ? s->comm : NULL;
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
