/* FNV-1a over bytes: how the stand-in NCCL (fake_nccl.c) and the application it serves
 * (interpose_app.c) print ids and lists, so that test_interpose can match the two logs. */
#ifndef SNAPCCL_TEST_FNV_H
#define SNAPCCL_TEST_FNV_H

#include <stddef.h>

static inline unsigned long long fnv(const void* p, size_t n) {
  const unsigned char* b = p;
  unsigned long long h = 1469598103934665603ull;
  for (size_t i = 0; b && i < n; i++) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

#endif
