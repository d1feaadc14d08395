/* Export macro for the NCCL API: every function is defined once as nccl<Name> and
 * exported a second time as the profiling alias pnccl<Name>, as NVIDIA's library does.
 * Only these and snapccl* symbols leave the library (see src/exports.map). Internal
 * code never calls an exported nccl* symbol: under LD_PRELOAD that could land in
 * another library. */
#ifndef SNAPCCL_API_H
#define SNAPCCL_API_H

#define NCCL_API(ret, func, ...)                                              \
  __attribute__((visibility("default"))) ret func(__VA_ARGS__);               \
  __attribute__((visibility("default"), alias(#func))) ret p##func(__VA_ARGS__); \
  ret func(__VA_ARGS__)

#define SNAPCCL_API __attribute__((visibility("default")))

#endif
