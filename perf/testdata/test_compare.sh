#!/usr/bin/env bash
# Tests compare.sh and compare_report.py on the fabricated logs in compare_raw/ (see
# README.md here). No GPU needed. Exit 77 (meson's "skipped") without python3.
set -u -o pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
compare=${PERF_COMPARE:-$here/../compare.sh}
command -v python3 >/dev/null 2>&1 || { echo "python3 missing: skipped"; exit 77; }

tmp=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$tmp"' EXIT; echo "tmp $tmp"
fails=0
check() { # check <description> <command...>
  local what=$1
  shift
  if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fails=$((fails + 1)); fi
}

# 1. The report on the fixture logs.
mkdir -p "$tmp/a"
cp -r "$here/compare_raw" "$tmp/a/raw"
"$compare" --report-only -o "$tmp/a" >"$tmp/a.out" 2>&1
check "report succeeds" test $? -eq 0
check "results.csv: header + 12 logs x 8 sizes x 2 places" \
  test "$(wc -l <"$tmp/a/results.csv")" -eq 193
check "results.csv columns" \
  grep -qx 'library,collective,mode,place,rep,size,count,type,redop,time_us,algbw,busbw,wrong' "$tmp/a/results.csv"
# all_reduce eager 8 B out-of-place: NCCL 12.08 us / snapccl 10.08 us.
check "ratio all_reduce eager 8 B" \
  awk -F, '$1=="all_reduce" && $2=="eager" && $3=="oop" && $4==8 {exit !($9 > 1.1983 && $9 < 1.1985)}' "$tmp/a/ratios.csv"
# all_gather graph 1 KiB in-place: (5 + 10.24 - 0.5 + 2.5) / (5 + 10.24 - 0.5)
check "ratio all_gather graph 1 KiB in-place" \
  awk -F, '$1=="all_gather" && $2=="graph" && $3=="ip" && $4==1024 {exit !($9 > 1.1695 && $9 < 1.1697)}' "$tmp/a/ratios.csv"
check "algorithm column follows the snapccl lines" \
  awk -F, '$1=="all_reduce" && $2=="eager" && $3=="oop" && $4==128 && $10=="copy" {f=1} $1=="all_reduce" && $2=="eager" && $3=="oop" && $4==512 && $10=="copy-wide" {g=1} END {exit !(f && g)}' "$tmp/a/ratios.csv"
check "ratio table printed" grep -q '^# all_reduce (eager, float, sum): ratio = NCCL time / snapccl time' "$tmp/a.out"
check "host_overhead.csv: header + 2 logs x 12 rows" test "$(wc -l <"$tmp/a/host_overhead.csv")" -eq 25
check "host overhead ratio 2.0" grep -Eq '^ +allreduce +8 +1\.500 +3\.000 +2\.000' "$tmp/a/ratios.txt"
check "INFO chatter ignored" test "$(grep -c '^nccl,all_gather,eager,' "$tmp/a/results.csv")" -eq 16
if python3 -c 'import matplotlib' 2>/dev/null || command -v gnuplot >/dev/null 2>&1; then
  check "plot written" test -s "$tmp/a/compare.png"
else
  check "plot skipped politely" grep -q 'plot: skipped' "$tmp/a.out"
fi

# 2. Wrong elements make the report fail loudly.
mkdir -p "$tmp/b"
cp -r "$here/compare_raw" "$tmp/b/raw"
sed -i '0,/^          16 /s/^\(          16 .*\)       0$/\1       5/' "$tmp/b/raw/reduce_scatter__eager__snapccl__r1.log"
sed -i 's/^# Out of bounds values : 0 OK/# Out of bounds values : 1 FAILED/' "$tmp/b/raw/reduce_scatter__eager__snapccl__r1.log"
"$compare" --report-only -o "$tmp/b" >"$tmp/b.out" 2>&1
check "wrong elements: nonzero exit" test $? -ne 0
check "wrong elements: warning" grep -q '^WARNING: 1 result(s) with wrong elements' "$tmp/b.out"
check "wrong elements: named log" grep -q 'reduce_scatter__eager__snapccl__r1.log: 1 check(s) with wrong elements' "$tmp/b.out"

# 3. A whole run over stub binaries: alternation, flags, library selection.
mkdir -p "$tmp/bin" "$tmp/snap" "$tmp/nv"
: >"$tmp/snap/libnccl.so.2"
: >"$tmp/snap/IS_SNAPCCL"
: >"$tmp/nv/libnccl.so.2"
for c in all_reduce all_gather reduce_scatter; do
  cat >"$tmp/bin/${c}_perf" <<STUB
#!/usr/bin/env bash
lib=\${LD_LIBRARY_PATH%%:*}
mode=eager
for a in "\$@"; do [ "\$a" = "-G" ] && mode=graph; done
tag=nccl
[ -e "\$lib/IS_SNAPCCL" ] && tag=snapccl
echo "# args: \$*"
sed "s|^# library: .*|# library: \$lib/libnccl.so.2 (stub)|" "$here/compare_raw/${c}__\${mode}__\${tag}__r1.log"
STUB
  chmod +x "$tmp/bin/${c}_perf"
done
cat >"$tmp/bin/host_overhead" <<STUB
#!/usr/bin/env bash
lib=\${LD_LIBRARY_PATH%%:*}
tag=nccl
[ -e "\$lib/IS_SNAPCCL" ] && tag=snapccl
sed "s|^# library: .*|# library: \$lib/libnccl.so.2 (stub)|" "$here/compare_raw/host_overhead__\${tag}__r1.log"
STUB
chmod +x "$tmp/bin/host_overhead"
"$compare" --bin "$tmp/bin" --snapccl-lib "$tmp/snap" --nccl-lib "$tmp/nv" -o "$tmp/c" \
  --colls "all_reduce reduce_scatter" --reps 2 -b 8 -e 1K --extra "-n 7" >"$tmp/c.out" 2>&1
check "stub run succeeds" test $? -eq 0
check "runs alternate snapccl/nccl" \
  test "$(awk -F'\t' 'NR>1 {printf "%s ", $2}' "$tmp/c/raw/runs.tsv")" = \
  "snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl snapccl nccl "
check "order: collective, mode, then repetition" \
  test "$(awk -F'\t' 'NR>1 {printf "%s/%s/%s ", $3, $4, $5}' "$tmp/c/raw/runs.tsv" | cut -d' ' -f1-6)" = \
  "all_reduce/eager/1 all_reduce/eager/1 all_reduce/eager/2 all_reduce/eager/2 all_reduce/graph/1 all_reduce/graph/1"
check "graph mode passes -G 1, sizes and extras" \
  grep -q '^# args: -b 8 -e 1K -f 2 -g 1 -G 1 -n 7$' "$tmp/c/raw/all_reduce__graph__nccl__r2.log"
check "eager mode has no -G" grep -q '^# args: -b 8 -e 1K -f 2 -g 1 -n 7$' "$tmp/c/raw/reduce_scatter__eager__snapccl__r1.log"
check "snapccl runs load snapccl's directory" \
  grep -q "^# library: $(cd "$tmp/snap" && pwd -P)/libnccl.so.2" "$tmp/c/raw/all_reduce__eager__snapccl__r2.log"
check "nccl runs load NVIDIA's directory" \
  grep -q "^# library: $(cd "$tmp/nv" && pwd -P)/libnccl.so.2" "$tmp/c/raw/all_reduce__eager__nccl__r1.log"
check "no library warnings" bash -c "! grep -q 'does not show a library' '$tmp/c.out'"
check "host_overhead alternated too" test "$(ls "$tmp/c/raw" | grep -c '^host_overhead__')" -eq 4
check "stub results parsed: 16 logs x 8 sizes x 2 places" test "$(wc -l <"$tmp/c/results.csv")" -eq 257

# 4. --dry-run prints the commands and runs nothing.
"$compare" --bin "$tmp/bin" --snapccl-lib "$tmp/snap" --nccl-lib "$tmp/nv" -o "$tmp/d" \
  --colls all_gather --modes graph --reps 1 --no-host-overhead --dry-run >"$tmp/d.out" 2>&1
check "dry run lists two commands" test "$(grep -c 'all_gather_perf' "$tmp/d.out")" -eq 2
check "dry run ran nothing" test ! -e "$tmp/d/raw/runs.tsv"
ln -s all_reduce_perf "$tmp/bin/all_reduce_perf_mpi"
"$compare" --bin "$tmp/bin" --snapccl-lib "$tmp/snap" --nccl-lib "$tmp/nv" -o "$tmp/e" \
  --colls all_reduce --modes eager --reps 1 --np 4 --no-host-overhead --dry-run >"$tmp/e.out" 2>&1
check "mpirun launch line" \
  grep -q "mpirun --allow-run-as-root -np 4 -x LD_LIBRARY_PATH=$(cd "$tmp/snap" && pwd -P)[^ ]* $tmp/bin/all_reduce_perf_mpi -b 8 -e 1G -f 2 >" "$tmp/e.out"

echo "$fails failure(s)"
[ "$fails" = 0 ]
