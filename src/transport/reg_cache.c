/* The registration cache: see reg_cache.h. */
#include "transport/reg_cache.h"

#include <stdlib.h>
#include <string.h>

struct snapccl_reg_range* snapccl_reg_range_new(int nranks) {
  if (nranks < 1) return NULL;
  struct snapccl_reg_range* r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->nranks = nranks;
  r->peer = calloc((size_t)nranks, sizeof *r->peer);
  r->held = calloc((size_t)nranks, sizeof *r->held);
  if (!r->peer || !r->held) {
    snapccl_reg_range_delete(r);
    return NULL;
  }
  return r;
}

void snapccl_reg_range_delete(struct snapccl_reg_range* r) {
  if (!r) return;
  free(r->peer);
  free(r->held);
  free(r);
}

/* Room for one more entry; 0, or -1 without memory. */
static int grow_ranges(struct snapccl_reg_cache* c) {
  if (c->nranges < c->cap_ranges) return 0;
  size_t want = c->cap_ranges ? c->cap_ranges * 2 : 8;
  struct snapccl_reg_range** p = realloc(c->ranges, want * sizeof *p);
  if (!p) return -1;
  c->ranges = p;
  c->cap_ranges = want;
  return 0;
}

static int grow_imports(struct snapccl_reg_cache* c) {
  if (c->nimports < c->cap_imports) return 0;
  size_t want = c->cap_imports ? c->cap_imports * 2 : 8;
  struct snapccl_reg_import** p = realloc(c->imports, want * sizeof *p);
  if (!p) return -1;
  c->imports = p;
  c->cap_imports = want;
  return 0;
}

/* The first index whose range starts above addr. */
static size_t upper_bound(const struct snapccl_reg_cache* c, uintptr_t addr) {
  size_t lo = 0, hi = c->nranges;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c->ranges[mid]->base <= addr) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

int snapccl_reg_cache_add(struct snapccl_reg_cache* c, struct snapccl_reg_range* r) {
  if (grow_ranges(c) != 0) return -1;
  /* After every range of the same base: "latest added" is then the last match. */
  size_t at = upper_bound(c, r->base);
  memmove(&c->ranges[at + 1], &c->ranges[at], (c->nranges - at) * sizeof *c->ranges);
  c->ranges[at] = r;
  c->nranges++;
  if (r->size > c->max_size) c->max_size = r->size;
  return 0;
}

static size_t index_of(const struct snapccl_reg_cache* c, const struct snapccl_reg_range* r) {
  for (size_t i = 0; i < c->nranges; i++)
    if (c->ranges[i] == r) return i;
  return c->nranges;
}

struct snapccl_reg_range* snapccl_reg_cache_by_handle(const struct snapccl_reg_cache* c, const void* handle) {
  if (!handle) return NULL;
  for (size_t i = c->nranges; i-- > 0;)
    if (c->ranges[i]->handle == handle) return c->ranges[i];
  return NULL;
}

int snapccl_reg_cache_remove(struct snapccl_reg_cache* c, const struct snapccl_reg_range* r) {
  size_t i = index_of(c, r);
  if (i == c->nranges) return 0;
  memmove(&c->ranges[i], &c->ranges[i + 1], (c->nranges - i - 1) * sizeof *c->ranges);
  c->nranges--;
  return 1;
}

const struct snapccl_reg_range* snapccl_reg_cache_find(const struct snapccl_reg_cache* c, const void* ptr,
                                                       size_t bytes) {
  const uintptr_t p = (uintptr_t)ptr;
  if (bytes == 0) bytes = 1;
  if (p > UINTPTR_MAX - bytes) return NULL;
  const uintptr_t end = p + bytes;
  /* Ranges may overlap, so walk down from the last one starting at or below p, as far
   * as one of the largest size could still reach p. Among ranges of one base the later
   * added sits later, and is seen first. */
  const struct snapccl_reg_range* best = NULL;
  for (size_t i = upper_bound(c, p); i-- > 0;) {
    const struct snapccl_reg_range* r = c->ranges[i];
    if (p - r->base >= c->max_size) break;
    if (end - r->base <= r->size) {
      /* Prefer the latest added among ranges that hold the span: the largest seq. */
      if (!best || r->seq > best->seq) best = r;
    }
  }
  return best;
}

char* snapccl_reg_peer_ptr(const struct snapccl_reg_range* g, int r, const void* ptr) {
  if (!g || r < 0 || r >= g->nranks || !g->peer[r]) return NULL;
  return g->peer[r] + ((uintptr_t)ptr - g->base);
}

struct snapccl_reg_import* snapccl_reg_import_get(struct snapccl_reg_cache* c, int peer, uint64_t start,
                                                  uint64_t id, uint64_t extent) {
  for (size_t i = 0; i < c->nimports; i++) {
    struct snapccl_reg_import* m = c->imports[i];
    if (m->peer == peer && m->start == start && m->id == id && m->extent >= extent) {
      m->refs++;
      return m;
    }
  }
  return NULL;
}

int snapccl_reg_import_add(struct snapccl_reg_cache* c, struct snapccl_reg_import* imp) {
  if (grow_imports(c) != 0) return -1;
  imp->refs = 1;
  c->imports[c->nimports++] = imp;
  return 0;
}

int snapccl_reg_import_put(struct snapccl_reg_cache* c, struct snapccl_reg_import* imp) {
  if (--imp->refs > 0) return 0;
  for (size_t i = 0; i < c->nimports; i++)
    if (c->imports[i] == imp) {
      c->imports[i] = c->imports[--c->nimports];
      break;
    }
  return 1;
}

void snapccl_reg_cache_clear(struct snapccl_reg_cache* c) {
  free(c->ranges);
  free(c->imports);
  memset(c, 0, sizeof *c);
}
