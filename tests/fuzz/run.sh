#!/usr/bin/env bash
# Builds the libFuzzer targets of this directory with clang (AddressSanitizer and
# UndefinedBehaviorSanitizer on, and on only here: the library's own build is gcc) and
# runs each for a bounded time on its seed corpus.
#   tests/fuzz/run.sh [SECONDS_PER_TARGET [OUTDIR]]      (defaults: 30, build-fuzz)
# The seeds in corpus/<target>/ stay as they are: new inputs go to OUTDIR/corpus/<target>;
# a crash is saved in OUTDIR as crash-* and fails the run (replay it: OUTDIR/<target> FILE).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-30}
out=${2:-build-fuzz}
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
mkdir -p "$out"

cc=clang
command -v "$cc" >/dev/null || { echo "fuzz: clang not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
flags=(-std=c11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Werror
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Isrc -Iinclude -I"$cuda_inc")
common=(src/env.c src/log.c src/error.c src/socket.c)
declare -A sources=(
  [fuzz_bootstrap_wire]="src/bootstrap_wire.c"
  [fuzz_settings]="src/config.c"
  [fuzz_tuning]="src/tuning.c src/identity.c"
)

status=0
for t in fuzz_bootstrap_wire fuzz_settings fuzz_tuning; do
  # shellcheck disable=SC2086
  "$cc" "${flags[@]}" -o "$out/$t" "tests/fuzz/$t.c" ${sources[$t]} "${common[@]}" -lpthread
  mkdir -p "$out/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  # The settings target logs every refused value at WARN; keep the log quiet.
  if ! SNAPCCL_DEBUG=NONE "$out/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
       -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus/$t" "tests/fuzz/corpus/$t" \
       > "$out/$t.log" 2>&1; then
    echo "fuzz: $t FAILED (tail of $out/$t.log):" >&2
    tail -40 "$out/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$out/$t.log" | sed "s/^/fuzz: $t /"
  fi
done
exit $status
