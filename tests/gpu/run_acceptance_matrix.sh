#!/usr/bin/env bash
# The acceptance matrix on a GPU host against NVIDIA's library and snapccl's three modes:
#   tests/gpu/run_acceptance_matrix.sh NVIDIA_LIBNCCL [BUILD_DIR]
#     NVIDIA_LIBNCCL  NVIDIA's libnccl.so.2 (e.g. /lib/x86_64-linux-gnu/libnccl.so.2, or
#                     PyTorch's .../site-packages/nvidia/nccl/lib/libnccl.so.2)
#     BUILD_DIR       snapccl's build directory (default: build)
# Runs build/tests/gpu/gpu_acceptance_matrix four times: on NVIDIA's library (checks the
# table's answers), on snapccl standalone, snapccl preloaded over NVIDIA's (interposed),
# and snapccl's libnccl.so.2 with SNAPCCL_NCCL_LIB (fallback). Each run prints any cell
# that differs from the table; the summary has one line per run. Exit 0 when none differ.
set -u
[ $# -ge 1 ] || { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
real=$(readlink -f "$1")
build=${2:-build}
bin=$build/tests/gpu/gpu_acceptance_matrix
[ -f "$real" ] || { echo "no $1" >&2; exit 2; }
[ -x "$bin" ] || { echo "no $bin: build first (ninja -C $build)" >&2; exit 2; }
realdir=$(dirname "$real")
# The real library must be found as libnccl.so.2 in a directory of its own, ahead of ours.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
ln -s "$real" "$stage/libnccl.so.2"
base=${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
failed=0
summary=""
run() { # NAME ENV...
  local name=$1 rc
  shift
  echo "=== $name: $*"
  env "$@" "$bin"
  rc=$?
  summary+=$(printf '%-12s exit %s' "$name" "$rc")$'\n'
  [ "$rc" = 0 ] || failed=1
}
run nvidia LD_LIBRARY_PATH="$stage:$realdir$base"
run standalone SNAPCCL_NCCL_LIB=
run interposed LD_LIBRARY_PATH="$stage:$realdir$base" \
  LD_PRELOAD="$(readlink -f "$build/src/libsnapccl.so")"
run fallback SNAPCCL_NCCL_LIB="$real"
echo "=== summary (exit 0: every cell as NVIDIA 2.28.3 answers)"
printf '%s' "$summary"
exit $failed
