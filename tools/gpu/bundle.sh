#!/usr/bin/env bash
# Assembles what a run on a lent GPU host needs into gpu-carry/ (git-ignored): the
# libraries, the GPU suite, perf binaries, the demo, Criterion's shared libraries, and
# NVIDIA's nccl-tests built against our header+library and against NVIDIA's; packed as
# gpu-carry.tar.xz (the binaries share most of their bytes, static cudart and kernels:
# ~85 MB pack into ~3 MB, well under the device tool's 64 MiB).
#
#   tools/gpu/bundle.sh [NCCL_TESTS_OURS_DIR] [NCCL_TESTS_NVIDIA_DIR]
#     (defaults /tmp/nt-ours/bin and /tmp/nt-nvidia, as `perf/build-nccl-tests.sh ...
#      --build-dir /tmp/nt-ours` and a plain `make BUILDDIR=/tmp/nt-nvidia` leave them;
#      an MPI build's _mpi suffix is dropped; missing binaries are skipped)
#   OLD_LIB=DIR tools/gpu/bundle.sh ...: also carries the libraries in DIR (another
#     build's src/, e.g. of the previous commit) as gpu-carry/old, for A/B runs in one
#     call (run.sh datapath)
#
# Carry gpu-carry.tar.xz; on the host tools/gpu/run.sh PHASE unpacks it and links
# gpu-carry/build to build/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
ours=${1:-/tmp/nt-ours/bin}
nvidia=${2:-/tmp/nt-nvidia}
out=gpu-carry
PATH=$PATH:/usr/local/cuda/bin ninja -C build >/dev/null
rm -rf "$out"
mkdir -p "$out/build/src" "$out/build/tests/gpu" "$out/build/perf" "$out/nccl-tests/ours" \
  "$out/nccl-tests/nvidia"
find build/src -maxdepth 1 \( -name 'libsnapccl.so*' -o -name 'libnccl.so*' \) ! -name '*.p' \
  -exec cp -a {} "$out/build/src/" \;
cp build/tests/gpu/gpu_test_* build/tests/gpu/gpu_lifetime_* build/tests/gpu/gpu_fused_preload build/tests/gpu/gpu_acceptance_matrix \
  "$out/build/tests/gpu/" 2>/dev/null || true
for f in build/perf/*; do [ -f "$f" ] && [ -x "$f" ] && cp "$f" "$out/build/perf/"; done
cp build/snapccl_demo "$out/build/"
# The 2.30 client, for the fallback check over the host's own NVIDIA library.
mkdir -p "$out/build/tests"
cp build/tests/unit_client_2_30 "$out/build/tests/"
if [ -n "${OLD_LIB:-}" ]; then
  mkdir -p "$out/old"
  find "$OLD_LIB" -maxdepth 1 \( -name 'libsnapccl.so*' -o -name 'libnccl.so*' \) ! -name '*.p' \
    -exec cp -a {} "$out/old/" \;
fi
../shared/gpu-host/bundle-deps.sh "$out/build/gpu-deps" >/dev/null
pick() { # DIR NAME DEST: NAME or NAME_mpi from DIR, as DEST/NAME
  if [ -x "$1/$2" ]; then cp "$1/$2" "$3/$2"; elif [ -x "$1/${2}_mpi" ]; then cp "$1/${2}_mpi" "$3/$2"; fi
}
for b in all_reduce_perf all_gather_perf reduce_scatter_perf; do pick "$ours" $b "$out/nccl-tests/ours"; done
for b in all_reduce_perf all_gather_perf reduce_scatter_perf broadcast_perf reduce_perf \
  sendrecv_perf alltoall_perf; do
  pick "$nvidia" $b "$out/nccl-tests/nvidia"
done
find "$out" -type f -perm -u+x ! -name '*.sh' -exec strip --strip-unneeded {} + 2>/dev/null || true
find "$out/build/src" -name '*.so*' -type f -exec strip --strip-unneeded {} +
tar -cf - "$out" | xz -T2 -6 >gpu-carry.tar.xz
echo "bundle: $(du -sh "$out" | cut -f1) in $out, packed into gpu-carry.tar.xz ($(du -h gpu-carry.tar.xz | cut -f1))"
