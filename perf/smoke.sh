#!/usr/bin/env bash
# smoke.sh: a short end-to-end pass over the perf tools on a GPU host, against snapccl
# and (when found) NVIDIA's libnccl: the GPU selftest, every collective with every type
# and op checked, graph mode, the less common flags, host_overhead, and a small
# compare.sh. Minutes, not hours; for correctness of the tools, not for numbers.
#
#   perf/smoke.sh [-o OUTDIR] [--nccl-lib DIR] [--bin DIR] [--snapccl-lib DIR] [--libs "snapccl nccl"]
#
# OUTDIR (default perf/out/smoke) gets one log per step and summary.txt (PASS/FAIL per step).
set -u -o pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
out=$here/out/smoke
bindir=$repo/build/perf
snap_lib=$repo/build/src
nccl_lib=""
libs="snapccl nccl"
step_timeout=300
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    --nccl-lib) nccl_lib=$2; shift 2 ;;
    --snapccl-lib) snap_lib=$2; shift 2 ;;
    --bin) bindir=$2; shift 2 ;;
    --libs) libs=$2; shift 2 ;;
    --timeout) step_timeout=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "smoke.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
fails=0

# step <name> <expect: ok|fail> <library dir or -> <command...>
step() {
  local name=$1 expect=$2 dir=$3
  shift 3
  local log=$out/$name.log rc verdict
  if [ "$dir" = - ]; then
    timeout "$step_timeout" "$@" >"$log" 2>&1
  else
    LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" timeout "$step_timeout" "$@" >"$log" 2>&1
  fi
  rc=$?
  verdict=PASS
  if [ "$expect" = ok ] && [ "$rc" != 0 ]; then verdict=FAIL; fi
  if [ "$expect" = ok ] && grep -q "^# Out of bounds values : [1-9]" "$log"; then verdict=FAIL; fi
  [ "$verdict" = FAIL ] && fails=$((fails + 1))
  printf '%s %-40s exit %3s  %s\n' "$verdict" "$name" "$rc" "$*" | tee -a "$summary"
}

if [ -z "$nccl_lib" ]; then
  for d in $(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF}' | xargs -r -n1 dirname) \
      /usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64; do
    if [ -e "$d/libnccl.so.2" ] && [ "$(readlink -f "$d/libnccl.so.2")" != "$(readlink -f "$snap_lib/libnccl.so.2")" ]; then
      nccl_lib=$d; break
    fi
  done
fi
echo "snapccl: $snap_lib   NVIDIA NCCL: ${nccl_lib:-not found}" | tee -a "$summary"

step gpu_selftest ok - "$bindir/perf_gpu_selftest"

for lib in $libs; do
  dir=$snap_lib
  if [ "$lib" = nccl ]; then
    [ -n "$nccl_lib" ] || continue
    dir=$nccl_lib
  fi
  for c in all_reduce all_gather reduce_scatter; do
    step "${lib}_${c}_all_types_ops" ok "$dir" "$bindir/${c}_perf" -b 8 -e 16M -f 8 -d all -o all -c 1 -n 3 -w 1
    step "${lib}_${c}_graph" ok "$dir" "$bindir/${c}_perf" -b 8 -e 64M -f 4 -G 2 -c 2 -o all
    step "${lib}_${c}_1G" ok "$dir" "$bindir/${c}_perf" -b 1G -e 1G -c 1 -n 5
  done
  b=$bindir/all_reduce_perf
  step "${lib}_blocking1_agg4" ok "$dir" "$b" -b 1K -e 1M -f 32 -z 1 -m 4 -c 1
  step "${lib}_blocking3" ok "$dir" "$b" -b 1K -e 1M -f 32 -z 3 -c 1
  step "${lib}_unalign_cputime_min" ok "$dir" "$b" -b 1K -e 1M -f 32 -u 1 -C 1 -a 2 -d half
  step "${lib}_register_memory_cycles" ok "$dir" "$b" -b 1K -e 1M -f 32 -R 1 -M 1 -N 2 -y 1
  step "${lib}_cudamalloc_timeout" ok "$dir" env SNAPCCL_PERF_ALLOC=cuda "$b" -b 1K -e 1M -f 32 -T 60 -o mulsum -d bfloat16
  step "${lib}_host_overhead" ok "$dir" "$bindir/host_overhead" -n 2000 -w 200
  step "${lib}_min_bw_fails" fail "$dir" env NCCL_TESTS_MIN_BW=1e9 "$b" -b 1K -e 1K
  step "${lib}_bad_device" fail "$dir" env NCCL_TESTS_DEVICE=99 "$b" -b 1K -e 1K
done
# Several ranks on one GPU: snapccl only (NCCL refuses duplicate GPUs).
step snapccl_shared_gpu_g2 ok "$snap_lib" env SNAPCCL_SHARED_GPU=1 "$bindir/all_reduce_perf" -b 8 -e 16M -f 8 -g 2 -o all -c 1
step snapccl_shared_gpu_t2 ok "$snap_lib" env SNAPCCL_SHARED_GPU=1 "$bindir/all_gather_perf" -b 8 -e 16M -f 8 -t 2 -g 1 -c 1
if [ -n "$nccl_lib" ]; then
  step compare_small ok - "$here/compare.sh" -o "$out/compare" --nccl-lib "$nccl_lib" --snapccl-lib "$snap_lib" \
    --bin "$bindir" -e 64M -f 4 --reps 1 --extra "-n 10"
fi
echo "$fails failing step(s)" | tee -a "$summary"
[ "$fails" = 0 ]
