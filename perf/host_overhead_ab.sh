#!/usr/bin/env bash
# host_overhead_ab.sh: host_overhead A/B in one run on one GPU host: an older snapccl build
# (A) against this one (B), world size 1 and 2 (ranks sharing the GPU), and under
# LD_PRELOAD over NVIDIA's libnccl: NVIDIA's alone, calls we take, calls we forward. The
# same host_overhead binary (B's, which has the yardstick rows) runs every variant; only
# the library differs. Rounds alternate the variants so drift hits all alike.
#
#   perf/host_overhead_ab.sh --old DIR [--new DIR] [--nccl-lib DIR] [-o OUTDIR] [--rounds N] [-- host_overhead args]
#
# DIR: a build directory (its src/ holds libnccl.so.2 and libsnapccl.so). OUTDIR (default
# perf/out/host_ab) gets one log per variant and round.
set -u -o pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
old=""
new=$repo/build
nccl_lib=/usr/lib/x86_64-linux-gnu
out=$here/out/host_ab
rounds=2
while [ $# -gt 0 ]; do
  case "$1" in
    --old) old=$2; shift 2 ;;
    --new) new=$2; shift 2 ;;
    --nccl-lib) nccl_lib=$2; shift 2 ;;
    -o) out=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "host_overhead_ab.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -n "$old" ] || { echo "host_overhead_ab.sh: --old DIR is required" >&2; exit 2; }
bin=$new/perf/host_overhead
[ -x "$bin" ] || { echo "host_overhead_ab.sh: no $bin" >&2; exit 2; }
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-b 8 -e 64K -f 8192 -n 20000 -w 2000)
forward=allreduce:nccl,allgather:nccl,reducescatter:nccl
mkdir -p "$out"

# variant <name> <round> <ranks> <env assignments...>: one run of the binary under env.
variant() {
  local name=$1 round=$2 ranks=$3
  shift 3
  echo "== $name (round $round)"
  env "$@" "$bin" -g "$ranks" "${args[@]}" >"$out/$name.r$round.log" 2>&1
  echo "rc=$?" >>"$out/$name.r$round.log"
  grep -v '^#' "$out/$name.r$round.log" | grep -v '^rc=' | sed "s/^/$name  /"
}

for ((r = 1; r <= rounds; r++)); do
  variant ws1_old "$r" 1 LD_LIBRARY_PATH="$old/src"
  variant ws1_new "$r" 1 LD_LIBRARY_PATH="$new/src"
  variant ws2_old "$r" 2 LD_LIBRARY_PATH="$old/src" SNAPCCL_SHARED_GPU=1
  variant ws2_new "$r" 2 LD_LIBRARY_PATH="$new/src" SNAPCCL_SHARED_GPU=1
  variant nccl "$r" 1 LD_LIBRARY_PATH="$nccl_lib"
  variant preload_old "$r" 1 LD_LIBRARY_PATH="$nccl_lib" LD_PRELOAD="$old/src/libsnapccl.so"
  variant preload_new "$r" 1 LD_LIBRARY_PATH="$nccl_lib" LD_PRELOAD="$new/src/libsnapccl.so"
  variant forward_old "$r" 1 LD_LIBRARY_PATH="$nccl_lib" LD_PRELOAD="$old/src/libsnapccl.so" SNAPCCL_ALGO=$forward
  variant forward_new "$r" 1 LD_LIBRARY_PATH="$nccl_lib" LD_PRELOAD="$new/src/libsnapccl.so" SNAPCCL_ALGO=$forward
done
