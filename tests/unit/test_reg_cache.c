/* The registration cache (src/transport/reg_cache.h), without a GPU: a pointer anywhere
 * inside a registered range finds it and the peers' counterparts at the same offset;
 * overlapping, nested and repeated ranges; removing one range while others stay;
 * imports shared per (peer, allocation) and counted; stale handles refused; a random
 * workload checked against a brute-force model. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>

#include "transport/reg_cache.h"

static struct snapccl_reg_range* range(struct snapccl_reg_cache* c, uintptr_t base, size_t size, int nranks) {
  struct snapccl_reg_range* r = snapccl_reg_range_new(nranks);
  cr_assert_not_null(r);
  r->handle = r;
  r->seq = c->next_seq++;
  r->base = base;
  r->size = size;
  r->all_mapped = 1;
  for (int i = 0; i < nranks; i++) r->peer[i] = (char*)(uintptr_t)(0x100000000ull * (uint64_t)(i + 1) + base);
  cr_assert_eq(snapccl_reg_cache_add(c, r), 0);
  return r;
}

static void drop(struct snapccl_reg_cache* c, struct snapccl_reg_range* r) {
  cr_assert(snapccl_reg_cache_remove(c, r));
  snapccl_reg_range_delete(r);
}

Test(reg_cache, pointer_inside_finds_range_and_peer_offset) {
  struct snapccl_reg_cache c = {0};
  struct snapccl_reg_range* a = range(&c, 0x10000, 0x1000, 2);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x10000, 0x1000), a);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x10007, 9), a, "an unaligned span inside");
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x10fff, 1), a);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x10fff, 0), a, "0 bytes count as 1");
  cr_assert_null(snapccl_reg_cache_find(&c, (void*)0x10fff, 2), "a span running past the end");
  cr_assert_null(snapccl_reg_cache_find(&c, (void*)0x0ffff, 2), "a span starting before");
  cr_assert_null(snapccl_reg_cache_find(&c, (void*)0x11000, 1));
  cr_assert_null(snapccl_reg_cache_find(&c, (void*)(UINTPTR_MAX - 3), 8), "no overflow past the top");
  cr_assert_eq(snapccl_reg_peer_ptr(a, 1, (void*)0x10005), (char*)(uintptr_t)(0x200000000ull + 0x10005));
  cr_assert_null(snapccl_reg_peer_ptr(a, 2, (void*)0x10005), "rank out of range");
  a->peer[1] = NULL;
  cr_assert_null(snapccl_reg_peer_ptr(a, 1, (void*)0x10005), "unmapped peer");
  drop(&c, a);
  cr_assert_null(snapccl_reg_cache_find(&c, (void*)0x10000, 1));
  snapccl_reg_cache_clear(&c);
}

Test(reg_cache, nested_overlapping_and_twice) {
  struct snapccl_reg_cache c = {0};
  struct snapccl_reg_range* big = range(&c, 0x100000, 0x100000, 2);
  struct snapccl_reg_range* small = range(&c, 0x140000, 0x1000, 2);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x140010, 16), small, "the latest that holds the span");
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x100010, 16), big);
  struct snapccl_reg_range* twice = range(&c, 0x100000, 0x100000, 2);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x140010, 16), twice, "later again: the big one's twin");
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x100010, 16), twice, "of two equal ranges, the later");
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x140f00, 0x200), twice, "a span leaving the small one");
  drop(&c, twice);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x100010, 16), big, "the first registration stays");
  drop(&c, small);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x140010, 16), big);
  cr_assert_eq(snapccl_reg_cache_by_handle(&c, big), big);
  cr_assert_null(snapccl_reg_cache_by_handle(&c, small), "a deregistered handle is unknown");
  cr_assert_null(snapccl_reg_cache_by_handle(&c, NULL));
  cr_assert(!snapccl_reg_cache_remove(&c, small), "a stale handle is refused");
  drop(&c, big);
  snapccl_reg_cache_clear(&c);
}

Test(reg_cache, search_reaches_a_large_range_below_small_ones) {
  struct snapccl_reg_cache c = {0};
  struct snapccl_reg_range* big = range(&c, 0x1000, 1 << 20, 1);
  struct snapccl_reg_range* s[8];
  for (int i = 0; i < 8; i++) s[i] = range(&c, 0x2000 + (uintptr_t)i * 0x100, 0x10, 1);
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x2850, 8), big, "between the small ones");
  cr_assert_eq(snapccl_reg_cache_find(&c, (void*)0x2304, 8), s[3]);
  for (int i = 0; i < 8; i++) drop(&c, s[i]);
  drop(&c, big);
  snapccl_reg_cache_clear(&c);
}

Test(reg_cache, imports_shared_and_counted) {
  struct snapccl_reg_cache c = {0};
  struct snapccl_reg_import* a = calloc(1, sizeof *a);
  *a = (struct snapccl_reg_import){.peer = 1, .start = 0x5000, .id = 7, .extent = 0x4000};
  cr_assert_eq(snapccl_reg_import_add(&c, a), 0);
  cr_assert_eq(a->refs, 1);
  cr_assert_eq(snapccl_reg_import_get(&c, 1, 0x5000, 7, 0x1000), a, "a smaller extent is covered");
  cr_assert_eq(a->refs, 2);
  cr_assert_null(snapccl_reg_import_get(&c, 1, 0x5000, 8, 0x1000), "reallocated: another id");
  cr_assert_null(snapccl_reg_import_get(&c, 2, 0x5000, 7, 0x1000), "another peer");
  cr_assert_null(snapccl_reg_import_get(&c, 1, 0x5000, 7, 0x8000), "a larger extent needs its own mapping");
  cr_assert_eq(snapccl_reg_import_put(&c, a), 0, "one holder left");
  cr_assert_eq(snapccl_reg_import_put(&c, a), 1, "the last: the caller unmaps");
  cr_assert_null(snapccl_reg_import_get(&c, 1, 0x5000, 7, 0x1000), "gone from the cache");
  free(a);
  snapccl_reg_cache_clear(&c);
}

/* Random ranges added and removed; every lookup agrees with a brute-force scan. */
Test(reg_cache, random_against_model) {
  struct snapccl_reg_cache c = {0};
  enum { N = 64 };
  struct snapccl_reg_range* live[N] = {0};
  srand(12345);
  for (int step = 0; step < 4000; step++) {
    int k = rand() % N;
    if (live[k] && rand() % 3 == 0) {
      drop(&c, live[k]);
      live[k] = NULL;
    } else if (!live[k]) {
      live[k] = range(&c, 0x10000 + (uintptr_t)(rand() % 4096) * 16, 1 + (size_t)(rand() % 8192), 1);
    }
    uintptr_t p = 0x10000 + (uintptr_t)(rand() % 70000);
    size_t bytes = (size_t)(rand() % 64);
    const struct snapccl_reg_range* want = NULL;
    for (int i = 0; i < N; i++) {
      const struct snapccl_reg_range* r = live[i];
      size_t b = bytes ? bytes : 1;
      if (r && p >= r->base && p + b <= r->base + r->size && (!want || r->seq > want->seq)) want = r;
    }
    cr_assert_eq(snapccl_reg_cache_find(&c, (void*)p, bytes), want, "step %d: %#lx + %zu", step, (unsigned long)p,
                 bytes);
  }
  for (int i = 0; i < N; i++)
    if (live[i]) drop(&c, live[i]);
  cr_assert_eq(c.nranges, 0);
  snapccl_reg_cache_clear(&c);
}
