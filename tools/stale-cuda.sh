#!/usr/bin/env bash
# Meson 1.0 (Debian 12's) gives nvcc no dependency-file flags, so ninja does not know which
# headers a CUDA object includes: after a header edit the kernels compiled before it stay
# stale while host code changes (seen: a block cap in kernels/kargs.h, which moved the flag
# layout under kernels that kept the old one). If any header is newer than any CUDA object
# of BUILD_DIR, this touches every .cu source, so that the next ninja recompiles them all.
#   tools/stale-cuda.sh [BUILD_DIR]      (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
[ -d "$build" ] || exit 0
oldest=$(find "$build" -name '*.cu.o' -printf '%T@ %p\n' | sort -n | head -1 | cut -d' ' -f2-)
[ -n "$oldest" ] || exit 0
newer=$(find src include perf tests \( -name '*.h' -o -name '*.cuh' \) -newer "$oldest" | head -1)
if [ -n "$newer" ]; then
  echo "stale-cuda: $newer is newer than $oldest: every .cu source touched" >&2
  find src perf tests -name '*.cu' -exec touch {} +
fi
