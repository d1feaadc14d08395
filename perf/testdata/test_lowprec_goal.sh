#!/usr/bin/env bash
# perf/lowprec_goal.py on fabricated logs (perf/testdata/lowprec_goal/, nothing measured):
# busbw ratios to NCCL from 32 MB are fp8 335.54/220 = 1.525 and 353.21/230 = 1.536 (meets
# 1.5), int8 319.57/230 = 1.389 (misses), int4 >= 1.9; 16 MiB is below the threshold.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
goal=${LOWPREC_GOAL:-$here/../lowprec_goal.py}
d=$here/lowprec_goal
out=$(python3 "$goal" "$d/lowprec.log" --nccl "$d/nccl.log")
echo "$out"
fail() { echo "FAIL: $*"; exit 1; }
grep -q "^fp8: from 32000000 bytes the smallest ratio is 1.53 (at 33554432 bytes): meets the 1.5x goal" <<<"$out" ||
  fail "fp8 verdict"
grep -q "^int8: from 32000000 bytes the smallest ratio is 1.39 (at 67108864 bytes): misses the 1.5x goal" <<<"$out" ||
  fail "int8 verdict"
grep -q "^int4: .*meets the 1.5x goal" <<<"$out" || fail "int4 verdict"
grep -qE "^ +16777216 +200\.0 +209\.7 +1\.05 +279\.6 +1\.40" <<<"$out" || fail "16 MiB row"
# A higher bar turns fp8 into a miss; a log with nothing in common is an error (status 2).
out=$(python3 "$goal" "$d/lowprec.log" --nccl "$d/nccl.log" --goal 1.6)
grep -q "^fp8: .*misses the 1.6x goal" <<<"$out" || fail "--goal"
if python3 "$goal" "$d/nccl.log" --nccl "$d/nccl.log" >/dev/null; then fail "no rows should give status 2"; fi
echo "lowprec_goal: all checks passed"
