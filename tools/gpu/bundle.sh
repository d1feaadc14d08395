#!/usr/bin/env bash
# Assembles what a run on a lent GPU host needs into gpu-carry/ (git-ignored): the
# libraries, the GPU suite, perf binaries, the demo, Criterion's shared libraries, and
# NVIDIA's nccl-tests built against our header+library and against NVIDIA's. Binaries
# are stripped so the whole carry stays well under the device tool's 64 MiB.
#
#   tools/gpu/bundle.sh [NCCL_TESTS_OURS_DIR] [NCCL_TESTS_NVIDIA_DIR]
#     (defaults /tmp/nt-ours and /tmp/nt-nvidia, as perf/build-nccl-tests.sh and a plain
#      `make BUILDDIR=/tmp/nt-nvidia` leave them; missing ones are skipped)
#
# On the host: tools/gpu/run.sh PHASE (it moves gpu-carry/build into place).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
ours=${1:-/tmp/nt-ours}
nvidia=${2:-/tmp/nt-nvidia}
out=gpu-carry
rm -rf "$out"
mkdir -p "$out/build/src" "$out/build/tests/gpu" "$out/build/perf" "$out/nccl-tests/ours" \
  "$out/nccl-tests/nvidia"
cp -a build/src/libsnapccl.so* build/src/libnccl.so* "$out/build/src/"
cp build/tests/gpu/gpu_test_* "$out/build/tests/gpu/" 2>/dev/null || true
for f in build/perf/*; do [ -f "$f" ] && [ -x "$f" ] && cp "$f" "$out/build/perf/"; done
cp build/snapccl_demo "$out/build/"
../shared/gpu-host/bundle-deps.sh "$out/build/gpu-deps" >/dev/null
for b in all_reduce_perf all_gather_perf reduce_scatter_perf; do
  [ -x "$ours/$b" ] && cp "$ours/$b" "$out/nccl-tests/ours/"
done
for b in all_reduce_perf all_gather_perf reduce_scatter_perf broadcast_perf reduce_perf \
  sendrecv_perf alltoall_perf; do
  [ -x "$nvidia/$b" ] && cp "$nvidia/$b" "$out/nccl-tests/nvidia/"
done
find "$out" -type f -perm -u+x ! -name '*.sh' -exec strip --strip-unneeded {} + 2>/dev/null || true
find "$out/build/src" -name '*.so*' -type f -exec strip --strip-unneeded {} +
echo "bundle: $(du -sh "$out" | cut -f1) in $out"
