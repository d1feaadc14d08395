/* The per-communicator cache of chosen algorithms (select_cache.h). */
#include "algos/select_cache.h"

#include "comm.h"
#include "env.h"

/* Invalidations of every communicator at once. A stamp is this plus the communicator's
 * own count plus the settings' reloads (SNAPCCL_ALGO, the low-precision settings): all
 * only grow, so any invalidation changes the sum, and an entry stamped before it never
 * matches again. */
static _Atomic uint64_t g_generation;

#define STAMP_MASK ((1ull << 48) - 1)

static uint64_t stamp_now(struct snapccl_comm* comm) {
  return (atomic_load_explicit(&g_generation, memory_order_acquire) + snapccl_env_generation() +
          atomic_load_explicit(&comm->select_cache.generation, memory_order_acquire)) & STAMP_MASK;
}

/* Everything but the count in one word; bit 63 set so that an empty entry (0) matches
 * no call. The op is the user's value (a custom PreMulSum operator's id included), its
 * resolution (devop, scalar mode) is what the algorithms look at. 0 for a call the key
 * cannot hold exactly (an op id beyond 28 bits): such a call is never cached. */
static uint64_t shape_of(const struct snapccl_coll* c) {
  const uint32_t op = (uint32_t)c->op;
  if (op >> 28) return 0;
  return 1ull << 63 | (uint64_t)((unsigned)c->scalar_mode & 0xfu) << 44 |
         (uint64_t)((unsigned)c->devop & 0xfu) << 40 | (uint64_t)((unsigned)c->dtype & 0xffu) << 32 |
         (uint64_t)((unsigned)c->kind & 0xfu) << 28 | op;
}

/* The entry by the count's power-of-two class and the count, shifted by the shape: the
 * sizes programs repeat are a ladder of powers of two (every class its own entry: 5 is
 * odd, so 64 classes land on 64 entries) or neighbouring counts (consecutive entries),
 * and neither collides with itself. */
static struct snapccl_select_entry* slot(struct snapccl_comm* comm, uint64_t count, uint64_t shape) {
  uint64_t h = shape * 0x9e3779b97f4a7c15ull;
  const uint64_t cls = count ? 63u - (uint64_t)__builtin_clzll(count) : 0;
  h = (h >> 58) + 5u * cls + count;
  return &comm->select_cache.entries[h & (SNAPCCL_SELECT_CACHE_ENTRIES - 1)];
}

int snapccl_select_cache_get(struct snapccl_comm* comm, const struct snapccl_coll* c, uint64_t* stamp,
                             int* index, int* outcome) {
  const uint64_t count = (uint64_t)c->count, shape = shape_of(c);
  *stamp = stamp_now(comm);
  if (!shape) return 0;
  struct snapccl_select_entry* e = slot(comm, count, shape);
  uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
  if (s1 & 1u) return 0;
  uint64_t k_count = atomic_load_explicit(&e->count, memory_order_relaxed);
  uint64_t k_shape = atomic_load_explicit(&e->shape, memory_order_relaxed);
  uint64_t answer = atomic_load_explicit(&e->answer, memory_order_relaxed);
  atomic_thread_fence(memory_order_acquire);
  if (atomic_load_explicit(&e->seq, memory_order_relaxed) != s1) return 0;
  if (k_count != count || k_shape != shape || answer >> 16 != *stamp) return 0;
  *index = (int)(answer & 0xffu) - 1;
  *outcome = (int)(answer >> 8 & 0xffu);
  return 1;
}

void snapccl_select_cache_put(struct snapccl_comm* comm, const struct snapccl_coll* c, uint64_t stamp,
                              int index, int outcome) {
  const uint64_t count = (uint64_t)c->count, shape = shape_of(c);
  if (!shape || index < -1 || index >= 0xff || outcome < 0 || outcome > 0xff) return;
  struct snapccl_select_entry* e = slot(comm, count, shape);
  uint32_t s = atomic_load_explicit(&e->seq, memory_order_relaxed);
  /* Another thread writes it: leave it to that one. */
  if ((s & 1u) || !atomic_compare_exchange_strong_explicit(&e->seq, &s, s + 1, memory_order_acquire,
                                                           memory_order_relaxed))
    return;
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&e->count, count, memory_order_relaxed);
  atomic_store_explicit(&e->shape, shape, memory_order_relaxed);
  atomic_store_explicit(&e->answer, (stamp & STAMP_MASK) << 16 | (uint64_t)outcome << 8 | (uint64_t)(index + 1),
                        memory_order_relaxed);
  atomic_store_explicit(&e->seq, s + 2, memory_order_release);
}

void snapccl_select_cache_invalidate(struct snapccl_comm* comm) {
  if (comm) atomic_fetch_add_explicit(&comm->select_cache.generation, 1, memory_order_acq_rel);
  else atomic_fetch_add_explicit(&g_generation, 1, memory_order_acq_rel);
}
