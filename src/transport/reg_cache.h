/* The registration cache of one communicator (pure C, no CUDA: tests/unit/test_reg_cache.c).
 *
 * Two tables:
 * - ranges: what the application registered (base, size), each with the address in this
 *   process of every rank's counterpart, found for any pointer inside a range;
 * - imports: peers' allocations mapped into this process, one per (peer, allocation),
 *   shared by every range that reaches into it and counted, so that registering the same
 *   memory twice, or two ranges of one allocation, maps it once, and deregistering one
 *   range leaves the others' mappings in place.
 * The cache only keeps the books; mapping and unmapping are registration.c's. Not
 * thread-safe: the communicator's lock guards it. */
#ifndef SNAPCCL_TRANSPORT_REG_CACHE_H
#define SNAPCCL_TRANSPORT_REG_CACHE_H

#include <stddef.h>
#include <stdint.h>

/* A peer's allocation (or run of cuMem segments) mapped here. The key is the owner's
 * allocation start and an id that changes when the owner frees and reallocates at the
 * same address (its buffer id, or a digest of its segments). */
struct snapccl_reg_import {
  int peer;
  uint64_t start;  /* the allocation's first byte in the owner's address space */
  uint64_t id;
  uint64_t extent; /* bytes mapped */
  char* local;     /* where they are mapped in this process */
  int refs;        /* ranges holding it */
  void* undo;      /* what unmapping needs (registration.c's) */
};

struct snapccl_reg_range {
  void* handle;     /* what the application holds for it (ours: the range itself) */
  uint64_t seq;     /* registration number on this communicator, the same on every rank */
  uintptr_t base;
  size_t size;
  int symmetric;    /* ncclCommWindowRegister with NCCL_WIN_COLL_SYMMETRIC */
  int all_mapped;   /* every rank maps every rank's counterpart (agreed by all ranks) */
  int nranks;
  char** peer;      /* [nranks]: rank r's counterpart of base in this process, or NULL */
  struct snapccl_reg_import** held; /* [nranks]: the import each peer[] lies in, or NULL */
};

struct snapccl_reg_cache {
  struct snapccl_reg_range** ranges; /* sorted by base */
  size_t nranges, cap_ranges;
  size_t max_size; /* the largest range ever added: bounds the search below a pointer */
  struct snapccl_reg_import** imports;
  size_t nimports, cap_imports;
  uint64_t next_seq;
};

/* A fresh range of nranks (peer[] and held[] zeroed); NULL without memory. */
struct snapccl_reg_range* snapccl_reg_range_new(int nranks);
void snapccl_reg_range_delete(struct snapccl_reg_range* r);

/* 0 on success, -1 without memory. */
int snapccl_reg_cache_add(struct snapccl_reg_cache* c, struct snapccl_reg_range* r);
/* Takes r out of the cache; 1 if it was there (a handle the cache never saw is refused). */
int snapccl_reg_cache_remove(struct snapccl_reg_cache* c, const struct snapccl_reg_range* r);
/* The range the application's handle names, or NULL (a stale or foreign handle). */
struct snapccl_reg_range* snapccl_reg_cache_by_handle(const struct snapccl_reg_cache* c, const void* handle);
/* The range holding all of [ptr, ptr + bytes) (bytes 0 counts as 1), the latest added
 * where several do; NULL if none. */
const struct snapccl_reg_range* snapccl_reg_cache_find(const struct snapccl_reg_cache* c, const void* ptr,
                                                       size_t bytes);
/* Rank r's counterpart of ptr (inside range g) in this process, or NULL if unmapped. */
char* snapccl_reg_peer_ptr(const struct snapccl_reg_range* g, int r, const void* ptr);

/* The import of (peer, start, id) covering extent bytes, its count raised; NULL if none. */
struct snapccl_reg_import* snapccl_reg_import_get(struct snapccl_reg_cache* c, int peer, uint64_t start,
                                                  uint64_t id, uint64_t extent);
/* Adds a fresh import with one reference; 0 on success, -1 without memory. */
int snapccl_reg_import_add(struct snapccl_reg_cache* c, struct snapccl_reg_import* imp);
/* Drops one reference; when it was the last, takes the import out of the cache and
 * returns 1: the caller unmaps and frees it. */
int snapccl_reg_import_put(struct snapccl_reg_cache* c, struct snapccl_reg_import* imp);

/* Frees the tables (not the entries: the caller takes every range and import out first). */
void snapccl_reg_cache_clear(struct snapccl_reg_cache* c);

#endif
