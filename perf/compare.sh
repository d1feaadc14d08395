#!/usr/bin/env bash
# compare.sh: the same perf binaries against snapccl and against NVIDIA's libnccl, run
# alternately (snapccl, NCCL, snapccl, NCCL, ... for each collective and mode) so that
# drift of the machine hits both alike. The library is chosen with LD_LIBRARY_PATH: our
# build/src holds a libnccl.so.2, as does NVIDIA's directory.
#
# Writes under the output directory:
#   raw/<coll>__<mode>__<library>__r<rep>.log   every perf run, as printed
#   raw/host_overhead__<library>__r<rep>.log    host_overhead runs
#   raw/runs.tsv                                 order, command, exit status, seconds
#   results.csv        library,collective,mode,place,rep,size,count,type,redop,time_us,algbw,busbw,wrong
#   ratios.csv / ratios.txt    NCCL time / snapccl time per size (> 1: snapccl faster)
#   host_overhead.csv          per-call host time of both libraries
#   compare.png        bandwidth and latency against size, both libraries (log axes)
# See perf/README.md.
set -u -o pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

out="$here/out"
nccl_lib=""
snap_lib="$repo/build/src"
bindir="$repo/build/perf"
gpus=1
np=0
mpirun_cmd="mpirun --allow-run-as-root"
colls="all_reduce all_gather reduce_scatter"
modes="eager graph"
minb=8
maxb=1G
factor=2
reps=2
extra=""
host_overhead=1
report_only=0
dry=0
run_timeout=3600

usage() {
  cat <<USAGE
usage: $0 [options]
  -o, --out DIR        output directory (default perf/out)
  --nccl-lib DIR       directory of NVIDIA's libnccl.so.2 (default: ldconfig, then
                       /usr/lib/x86_64-linux-gnu, \$CUDA_HOME/lib64, /usr/local/cuda/lib64)
  --snapccl-lib DIR    directory of our libnccl.so.2 (default build/src)
  --bin DIR            perf binaries (default build/perf)
  -g N                 GPUs (ranks) driven by one process (default 1: world size 1)
  --np N               run N processes under mpirun (the *_perf_mpi binaries)
  --mpirun "CMD"       launcher for --np (default "mpirun --allow-run-as-root")
  --colls "LIST"       default "all_reduce all_gather reduce_scatter"
  --modes "LIST"       eager and/or graph (-G 1) (default "eager graph")
  -b SIZE -e SIZE -f N sizes (default -b 8 -e 1G -f 2)
  --reps N             alternations per collective and mode (default 2)
  --extra "ARGS"       more flags for every perf run (e.g. "-n 50 -w 5")
  --timeout S          kill a run after S seconds (default 3600)
  --no-host-overhead   skip the host_overhead runs
  --report-only        run nothing; rebuild the CSV, tables and plot from DIR/raw
  --dry-run            print the commands, run nothing
USAGE
}

die() { echo "compare.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    -o|--out) out=$2; shift 2 ;;
    --nccl-lib) nccl_lib=$2; shift 2 ;;
    --snapccl-lib) snap_lib=$2; shift 2 ;;
    --bin) bindir=$2; shift 2 ;;
    -g) gpus=$2; shift 2 ;;
    --np) np=$2; shift 2 ;;
    --mpirun) mpirun_cmd=$2; shift 2 ;;
    --colls) colls=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    -b) minb=$2; shift 2 ;;
    -e) maxb=$2; shift 2 ;;
    -f) factor=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --extra) extra=$2; shift 2 ;;
    --timeout) run_timeout=$2; shift 2 ;;
    --no-host-overhead) host_overhead=0; shift ;;
    --report-only) report_only=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

report() {
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for the report (logs are in $out/raw)"
  python3 "$here/compare_report.py" --raw "$out/raw" --out "$out"
}

if [ "$report_only" = 1 ]; then
  [ -d "$out/raw" ] || die "no $out/raw to report on"
  report
  exit $?
fi

# NVIDIA's libnccl: the option, else the first libnccl.so.2 ldconfig knows that is not
# ours, else the usual directories.
ours=$(readlink -f "$snap_lib/libnccl.so.2" 2>/dev/null || true)
[ -n "$ours" ] && [ -e "$ours" ] || die "no libnccl.so.2 in $snap_lib (build snapccl first, or --snapccl-lib)"
find_nccl() {
  local cand
  if command -v ldconfig >/dev/null 2>&1; then
    for cand in $(ldconfig -p 2>/dev/null | awk '/libnccl\.so\.2 /{print $NF}'); do
      [ "$(readlink -f "$cand")" != "$ours" ] && { dirname "$cand"; return; }
    done
  fi
  for cand in /usr/lib/x86_64-linux-gnu "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/lib64; do
    if [ -e "$cand/libnccl.so.2" ] && [ "$(readlink -f "$cand/libnccl.so.2")" != "$ours" ]; then
      echo "$cand"; return
    fi
  done
}
[ -n "$nccl_lib" ] || nccl_lib=$(find_nccl)
[ -n "$nccl_lib" ] && [ -e "$nccl_lib/libnccl.so.2" ] || die "NVIDIA's libnccl.so.2 not found: use --nccl-lib DIR"
[ "$(readlink -f "$nccl_lib/libnccl.so.2")" != "$ours" ] || die "--nccl-lib points at snapccl's own library"
nccl_lib=$(cd "$nccl_lib" && pwd -P)
snap_lib=$(cd "$snap_lib" && pwd -P)

suffix=""
launcher=()
if [ "$np" -gt 0 ] 2>/dev/null; then
  suffix="_mpi"
  read -r -a launcher <<<"$mpirun_cmd"
  launcher+=(-np "$np")
fi
for c in $colls; do
  [ -x "$bindir/${c}_perf$suffix" ] || die "missing $bindir/${c}_perf$suffix"
done
for m in $modes; do
  case "$m" in eager|graph) ;; *) die "unknown mode '$m' (eager, graph)" ;; esac
done

mkdir -p "$out/raw" || die "cannot create $out/raw"
runs="$out/raw/runs.tsv"
[ "$dry" = 1 ] || printf 'order\tlibrary\tcollective\tmode\trep\texit\tseconds\tlog\tcommand\n' >"$runs"
order=0
failed=0
have_timeout=0
command -v timeout >/dev/null 2>&1 && have_timeout=1

# run <library> <libdir> <log> <collective> <mode> <rep> <command...>
run() {
  local lib=$1 dir=$2 log=$3 coll=$4 mode=$5 rep=$6
  shift 6
  local ldp="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local cmd=()
  if [ ${#launcher[@]} -gt 0 ]; then
    cmd=("${launcher[@]}" -x "LD_LIBRARY_PATH=$ldp" "$@")
  else
    cmd=(env "LD_LIBRARY_PATH=$ldp" "$@")
  fi
  [ "$have_timeout" = 1 ] && cmd=(timeout "$run_timeout" "${cmd[@]}")
  order=$((order + 1))
  if [ "$dry" = 1 ]; then
    echo "${cmd[*]} > $log"
    return
  fi
  echo "[$order] $lib $coll $mode rep $rep" >&2
  local t0 rc t1
  t0=$(date +%s)
  "${cmd[@]}" >"$log" 2>&1
  rc=$?
  t1=$(date +%s)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$order" "$lib" "$coll" "$mode" "$rep" "$rc" \
    "$((t1 - t0))" "$(basename "$log")" "${cmd[*]}" >>"$runs"
  if [ "$rc" != 0 ]; then
    failed=$((failed + 1))
    echo "  exit status $rc (see $log)" >&2
  fi
  # The binaries print the libnccl they loaded (symlinks resolved): make sure
  # LD_LIBRARY_PATH took effect.
  local want
  want=$(readlink -f "$dir/libnccl.so.2")
  if ! grep -q "^# library: $(dirname "$want")/" "$log" 2>/dev/null; then
    echo "  warning: $log does not show a library from $dir ($want)" >&2
  fi
}

gflag=()
[ "$np" -gt 0 ] 2>/dev/null || gflag=(-g "$gpus")
for c in $colls; do
  for m in $modes; do
    mflag=()
    [ "$m" = graph ] && mflag=(-G 1)
    for r in $(seq 1 "$reps"); do
      for lib in snapccl nccl; do
        dir=$snap_lib
        [ "$lib" = nccl ] && dir=$nccl_lib
        # shellcheck disable=SC2086  # $extra is a list of flags
        run "$lib" "$dir" "$out/raw/${c}__${m}__${lib}__r${r}.log" "$c" "$m" "$r" \
          "$bindir/${c}_perf$suffix" -b "$minb" -e "$maxb" -f "$factor" "${gflag[@]}" "${mflag[@]}" $extra
      done
    done
  done
done

# Host overhead is a one-process, one-GPU measurement.
if [ "$host_overhead" = 1 ] && [ -x "$bindir/host_overhead" ]; then
  saved=("${launcher[@]}")
  launcher=()
  for r in $(seq 1 "$reps"); do
    for lib in snapccl nccl; do
      dir=$snap_lib
      [ "$lib" = nccl ] && dir=$nccl_lib
      run "$lib" "$dir" "$out/raw/host_overhead__${lib}__r${r}.log" host_overhead eager "$r" \
        "$bindir/host_overhead"
    done
  done
  launcher=("${saved[@]}")
fi

[ "$dry" = 1 ] && exit 0
report
rc=$?
[ "$failed" -gt 0 ] && echo "compare.sh: $failed run(s) failed; see $runs" >&2
[ "$rc" = 0 ] && [ "$failed" = 0 ]
