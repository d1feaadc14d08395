/* FNV-1a over bytes, for the test suites: how the stand-in NCCL (unit/fake_nccl.c) and the
 * application it serves (unit/interpose_app.c) print ids and lists, so that test_interpose
 * can match the two logs; and the GPU suite's hash of every rank's results (gpu/world.c),
 * which ranks in separate processes compare. */
#ifndef SNAPCCL_TEST_FNV_H
#define SNAPCCL_TEST_FNV_H

#include <stddef.h>

#define FNV_OFFSET_BASIS 0xcbf29ce484222325ull

/* The hash h continued over n bytes at p (p NULL: h). */
static inline unsigned long long fnv_continue(unsigned long long h, const void* p, size_t n) {
  const unsigned char* b = p;
  for (size_t i = 0; b && i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

static inline unsigned long long fnv(const void* p, size_t n) { return fnv_continue(FNV_OFFSET_BASIS, p, n); }

#endif
