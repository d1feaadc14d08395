#!/usr/bin/env bash
# Runs gpu_fused_preload with libsnapccl.so preloaded over NVIDIA's libnccl and checks,
# besides its own verdict, that the captured call really went through NVIDIA's all-reduce
# (the "-> nccl" choice in snapccl's INFO log).
#   tests/gpu/run_fused_preload.sh BINARY LIBSNAPCCL NVIDIA_NCCL_DIR
set -u
bin=$1 pre=$2 real_dir=$3
out=$(LD_LIBRARY_PATH="$real_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" LD_PRELOAD="$pre" \
  SNAPCCL_DEBUG=INFO SNAPCCL_DEBUG_SUBSYS=ALGO,INTERPOSE,INIT "$bin" 2>&1)
rc=$?
printf '%s\n' "$out"
[ $rc = 0 ] || exit $rc
if ! grep -q -- '-> nccl' <<<"$out"; then
  echo "FAIL: no fused call went through NVIDIA's all-reduce (no '-> nccl' in the log)"
  exit 1
fi
echo "ok   the captured call took the fallback (NVIDIA's all-reduce + snapccl's norm kernel)"
