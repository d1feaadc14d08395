#!/usr/bin/env bash
# perf/tune.py over stand-in perf binaries (tune/stub_perf.py, made-up times): which runs it
# makes, what it leaves out (opt-in and named-only algorithms, sizes a forced algorithm could
# not run, sizes whose check failed), and the file it writes, byte for byte against
# tune/expected.txt (which test_tuning.c has the library parse, so the tool's output is
# known to be a file the library takes). TUNE_PY names the tool.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tune=${TUNE_PY:-$here/../tune.py}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() {
  local what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what"; fails=$((fails + 1)); fi
}
mkdir -p "$tmp/bin" "$tmp/nv" "$tmp/home"
for c in all_reduce all_gather reduce_scatter; do ln -s "$here/tune/stub_perf.py" "$tmp/bin/${c}_perf"; done
export TUNE_STUB_HOME="$tmp/home"

python3 "$tune" -n 2 --bin "$tmp/bin" --nccl-lib "$tmp/nv" --colls "all_reduce all_gather" \
  --dtypes float --modes "eager graph" -b 8 -e 256K -o "$tmp/out.txt" >"$tmp/run.out" 2>&1
check "the tool succeeds" test $? -eq 0
check "the file is the expected one" diff -u "$here/tune/expected.txt" "$tmp/out.txt"
check "opt-in and named-only algorithms are not timed" \
  bash -c "! grep -qE 'SNAPCCL_ALGO=allreduce:(lowprec|oneshot_twin)' '$tmp/run.out'"
check "each algorithm of each collective and mode runs once, NCCL too" \
  test "$(grep -c '^tune: .*_perf -g 2 -b 8 -e 256K' "$tmp/run.out")" -eq 16
check "graph runs pass -G 1" grep -q 'SNAPCCL_ALGO=allgather:twoshot .*all_gather_perf -g 2 -b 8 -e 256K -f 2 -d float -G 1' "$tmp/run.out"

# Without -o: the library's default path, from its INFO line.
python3 "$tune" -n 2 --bin "$tmp/bin" --no-nccl --colls all_reduce --dtypes float --modes eager \
  -b 8 -e 64 >"$tmp/run2.out" 2>&1
check "default path written" test -s "$tmp/home/tuning-00.txt"
check "no nccl times with --no-nccl" bash -c "! grep -q 'nccl=' '$tmp/home/tuning-00.txt'"
# Again, now that the library says it uses that file: the tool replaces it.
: >"$tmp/home/tuning-00.txt"
python3 "$tune" -n 2 --bin "$tmp/bin" --no-nccl --colls all_reduce --dtypes float --modes eager \
  -b 8 -e 64 >"$tmp/run3.out" 2>&1
check "the file in use is replaced" test "$(grep -c '^row ' "$tmp/home/tuning-00.txt")" -eq 4

# --dry-run runs nothing.
python3 "$tune" -n 4 --launch threads --bin "$tmp/bin" --no-nccl --algos oneshot --colls reduce_scatter \
  --dtypes bfloat16 --modes eager --dry-run >"$tmp/dry.out" 2>&1
check "dry run prints the thread launch" grep -q 'reduce_scatter_perf -t 4 -g 1 -b 8 -e 1G -f 2 -d bfloat16' "$tmp/dry.out"
check "dry run wrote nothing" test ! -e "$tmp/home/tuning-00.txt.tmp"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
