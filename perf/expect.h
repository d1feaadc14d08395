/* The self-tests' check: counts a failure and says where, without stopping (the
 * program's exit status is failures != 0). */
#ifndef SNAPCCL_PERF_EXPECT_H
#define SNAPCCL_PERF_EXPECT_H

#include <stdio.h>

static int failures;

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      failures++;                                          \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                        \
      fputc('\n', stderr);                                 \
    }                                                      \
  } while (0)

#endif
