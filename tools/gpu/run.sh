#!/usr/bin/env bash
# Runs one phase of the GPU checks on a lent GPU host, from the repository root, with
# what tools/gpu/bundle.sh put in gpu-carry/. Every step is time-bounded and logged;
# the logs end up in $OUT/<phase>.tgz and a summary table is printed last.
#
#   tools/gpu/run.sh PHASE     PHASE: suite | interpose | nccltests | dropin | registration | hostpath | tuning |
#                                  latency | perf | compare | datapath | features | lifetime,
#                                  or on several GPUs: mg_suite | mg_features | mg_nt_g | mg_nt_np |
#                                  mg_interpose | mg_compare
#
# One phase per invocation, so a caller can bound each with `timeout`: the logs are
# packed into $OUT/PHASE.tgz on every exit, a timeout's included.
#
# Never enables NVLink multicast: NCCL_NVLS_ENABLE=0 etc. stay exported for every
# program, SNAPCCL_NVLS is never set.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
unset SNAPCCL_NVLS
OUT=${OUT:-$repo/gpu-out}
[ -d gpu-carry ] || tar -xJf gpu-carry.tar.xz || { echo "no gpu-carry.tar.xz: run tools/gpu/bundle.sh"; exit 2; }
[ -d build ] || ln -s gpu-carry/build build
export LD_LIBRARY_PATH="$repo/build/gpu-deps${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
SNAPLIB=$repo/build/src
NT_OURS=$repo/gpu-carry/nccl-tests/ours
NT_NV=$repo/gpu-carry/nccl-tests/nvidia
MPIRUN="mpirun --allow-run-as-root --oversubscribe -x NCCL_NVLS_ENABLE -x TORCH_SYMM_MEM_DISABLE_MULTICAST -x NVSHMEM_DISABLE_NVLS"
# NVIDIA's libnccl on this host (the toolkit's, else the first one found).
REAL_NCCL=$(ls /usr/local/cuda/lib64/libnccl.so.2 2>/dev/null ||
  find / -xdev -name 'libnccl.so.2' ! -path "$repo/*" 2>/dev/null | head -n 1)
REAL_DIR=$(dirname "${REAL_NCCL:-/nonexistent/x}")
CUDA_LIB=/usr/local/cuda/lib64
SUMMARY=()

# step NAME LIMIT_S [ENV=VAL...] -- COMMAND...: logs to $LOG/NAME.log; PASS needs exit 0
# and, for nccl-tests-style output, "Out of bounds values : 0 OK" and no wrong values.
step() {
  local name=$1 limit=$2
  shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local log=$LOG/$name.log t0 rc verdict
  # RUN_ONLY=REGEX: run only the steps whose names match (to finish a phase cut short).
  if [ -n "${RUN_ONLY:-}" ] && ! [[ $name =~ $RUN_ONLY ]]; then return 0; fi
  t0=$(date +%s.%N)
  { echo "\$ ${envs[*]} $*"; env "${envs[@]}" timeout -k 10 "$limit" "$@"; } >"$log" 2>&1
  rc=$?
  verdict=PASS
  [ $rc = 0 ] || verdict="FAIL($rc)"
  if grep -q "Out of bounds values" "$log"; then
    grep -q "Out of bounds values : 0 OK" "$log" || verdict="WRONG"
    # #wrong columns (out-of-place, in-place); N/A where a test has no in-place variant.
    awk '/^ +[0-9]+ +[0-9]+ / { if (($9 != 0 && $9 != "N/A") || ($13 != 0 && $13 != "N/A")) bad = 1 }
         END { exit bad }' "$log" || verdict="WRONG"
  fi
  SUMMARY+=("$(printf '%-60s %-9s %6.1fs' "$name" "$verdict" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")")
  echo "${SUMMARY[-1]}"
}

phase_suite() {
  step demo_4ranks 60 SNAPCCL_SHARED_GPU=1 SNAPCCL_DEMO_RANKS=4 -- build/snapccl_demo
  step demo_1rank 30 -- build/snapccl_demo
  # The core suite (~4 min with the sanitizer); the features' tests run in phase features.
  step gpu_suite 420 GPU_SUITE_BIN=build/tests/gpu GPU_SUITE_CORE_ONLY=1 -- \
    tests/gpu/run_gpu_suite.sh "$LOG/suite"
}

phase_nccltests() {
  local L=$SNAPLIB:$CUDA_LIB d o g coll np pair
  # World size 1, the whole size range: every dtype x {sum, max}, eager and graph
  # (AllGather has no op: one run per dtype and mode).
  for coll in all_reduce reduce_scatter all_gather; do
    for d in float half bfloat16 int32; do
      for o in sum max; do
        [ $coll = all_gather ] && [ $o = max ] && continue
        for g in 0 1; do
          step "nt_ours_${coll}_${d}_${o}_G$g" 60 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH -- \
            "$NT_OURS/${coll}_perf" -b 8 -e 1G -f 2 -g 1 -c 1 -d $d -o $o -G $g
        done
      done
    done
  done
  # Processes sharing the GPU (time-sliced: short runs), eager and graph.
  for np in 2 4; do
    for pair in float:sum half:max bfloat16:sum int32:max; do
      for coll in all_reduce all_gather reduce_scatter; do
        for g in 0 1; do
          step "nt_ours_mpi${np}_${coll}_${pair/:/_}_G$g" 90 -- $MPIRUN -np $np \
            -x LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH -x NCCL_TESTS_DEVICE=0 -x SNAPCCL_SHARED_GPU=1 \
            "$NT_OURS/${coll}_perf" -b 8 -e 64M -f 4 -n 5 -w 1 -c 1 -d ${pair%:*} -o ${pair#*:} -G $g
        done
      done
    done
  done
}

# World size 1 latency, small sizes, many iterations: our perf binaries against both
# libraries and nccl-tests (built against each) with the same flags, twice, alternating;
# plus an nsys timeline of the ReduceScatter loop where the host has nsys.
phase_latency() {
  local F="-b 8 -e 4M -f 4 -g 1 -c 1 -n 200 -w 20" rep coll
  for rep in 1 2; do
    for coll in all_reduce reduce_scatter all_gather; do
      step "lat_perf_${coll}_snapccl_r$rep" 60 LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH -- \
        build/perf/${coll}_perf $F
      step "lat_perf_${coll}_nccl_r$rep" 60 LD_LIBRARY_PATH=$REAL_DIR:$LD_LIBRARY_PATH -- \
        build/perf/${coll}_perf $F
      step "lat_nt_${coll}_snapccl_r$rep" 60 LD_LIBRARY_PATH=$SNAPLIB:$CUDA_LIB:$LD_LIBRARY_PATH -- \
        "$NT_OURS/${coll}_perf" $F
      step "lat_nt_${coll}_nccl_r$rep" 60 LD_LIBRARY_PATH=$REAL_DIR:$CUDA_LIB:$LD_LIBRARY_PATH -- \
        "$NT_NV/${coll}_perf" $F
    done
  done
  if command -v nsys >/dev/null 2>&1; then
    for lib in snapccl nccl; do
      local D=$SNAPLIB
      [ $lib = nccl ] && D=$REAL_DIR
      step "nsys_rs_$lib" 120 LD_LIBRARY_PATH=$D:$LD_LIBRARY_PATH -- nsys profile -t cuda,osrt \
        -o "$LOG/rs_$lib" --force-overwrite true build/perf/reduce_scatter_perf -b 64K -e 64K -g 1 -n 50
      step "nsys_rs_${lib}_stats" 120 -- nsys stats -r cuda_api_sum,cuda_gpu_trace "$LOG/rs_$lib.nsys-rep"
    done
  else
    echo "no nsys on this host" >"$LOG/nsys.txt"
  fi
}

phase_perf() {
  local P=build/perf
  for coll in all_reduce all_gather reduce_scatter; do
    for g in 1 2 4; do
      step "perf_${coll}_g$g" 60 LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1 -- \
        $P/${coll}_perf -b 8 -e 16M -f 8 -g $g -c 1
    done
    for np in 2 4; do
      step "perf_${coll}_mpi$np" 60 -- $MPIRUN -np $np -x LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH \
        -x SNAPCCL_SHARED_GPU=1 $P/${coll}_perf_mpi -b 8 -e 4M -f 16 -n 5 -w 1 -c 1
    done
  done
}

phase_compare() {
  # 100 timed iterations and three alternating repetitions: at world size 1 the small
  # sizes are host-bound and nccl-tests' default 20 iterations left +-5 us of noise.
  step compare_ws1 400 -- perf/compare.sh -o "$LOG/compare" --nccl-lib "$REAL_DIR" --reps 3 \
    --extra "-n 100 -w 10" --bin build/perf --snapccl-lib "$SNAPLIB"
}

phase_interpose() {
  local PRE=$SNAPLIB/libsnapccl.so L=$REAL_DIR:$CUDA_LIB
  for coll in all_reduce all_gather reduce_scatter; do
    step "pre_${coll}_g1" 120 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH LD_PRELOAD=$PRE SNAPCCL_DEBUG=INFO \
      SNAPCCL_DEBUG_SUBSYS=INTERPOSE,ALGO -- "$NT_NV/${coll}_perf" -b 8 -e 128M -f 4 -g 1 -c 1
  done
  for coll in broadcast reduce sendrecv alltoall; do
    step "pre_${coll}_g1" 120 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH LD_PRELOAD=$PRE SNAPCCL_DEBUG=INFO \
      SNAPCCL_DEBUG_SUBSYS=INTERPOSE -- "$NT_NV/${coll}_perf" -b 8 -e 64M -f 8 -g 1 -c 1
  done
  for coll in all_reduce all_gather reduce_scatter; do
    step "pre_mpi2_${coll}" 120 -- $MPIRUN -np 2 -x LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH \
      -x LD_PRELOAD=$PRE -x NCCL_TESTS_DEVICE=0 -x SNAPCCL_SHARED_GPU=1 -x SNAPCCL_DEBUG=INFO \
      -x SNAPCCL_DEBUG_SUBSYS=INTERPOSE "$NT_NV/${coll}_perf" -b 8 -e 64M -f 4 -n 5 -w 1 -c 1
    step "fallback_${coll}_g1" 120 LD_LIBRARY_PATH=$SNAPLIB:$L:$LD_LIBRARY_PATH SNAPCCL_NCCL_LIB=$REAL_NCCL \
      SNAPCCL_DEBUG=INFO SNAPCCL_DEBUG_SUBSYS=INTERPOSE -- "$NT_NV/${coll}_perf" -b 8 -e 64M -f 4 -g 1 -c 1
    step "fallback_mpi2_${coll}" 120 -- $MPIRUN -np 2 -x LD_LIBRARY_PATH=$SNAPLIB:$L:$LD_LIBRARY_PATH \
      -x SNAPCCL_NCCL_LIB=$REAL_NCCL -x NCCL_TESTS_DEVICE=0 -x SNAPCCL_SHARED_GPU=1 -x SNAPCCL_DEBUG=INFO \
      -x SNAPCCL_DEBUG_SUBSYS=INTERPOSE "$NT_NV/${coll}_perf" -b 8 -e 64M -f 4 -n 5 -w 1 -c 1
  done
  step "fallback_sendrecv_g1" 120 LD_LIBRARY_PATH=$SNAPLIB:$L:$LD_LIBRARY_PATH SNAPCCL_NCCL_LIB=$REAL_NCCL \
    -- "$NT_NV/sendrecv_perf" -b 8 -e 64M -f 8 -g 1 -c 1
  local TR="python3 -m torch.distributed.run --standalone"
  step torch_1rank_plain 90 PYTHONUNBUFFERED=1 -- $TR --nproc-per-node 1 tests/torch/collectives.py
  step torch_1rank_preload 90 PYTHONUNBUFFERED=1 LD_PRELOAD=$PRE SNAPCCL_DEBUG=INFO \
    SNAPCCL_DEBUG_SUBSYS=INTERPOSE -- $TR --nproc-per-node 1 tests/torch/collectives.py
  step torch_2rank_shared_preload 120 PYTHONUNBUFFERED=1 LD_PRELOAD=$PRE SNAPCCL_SHARED_GPU=1 \
    SNAPCCL_DEBUG=INFO SNAPCCL_DEBUG_SUBSYS=INTERPOSE SNAPCCL_TIMEOUT_MS=60000 -- \
    $TR --nproc-per-node 2 tests/torch/collectives.py --shared-gpu --no-broadcast
}

# Drop-in checks: the acceptance matrix against this host's NVIDIA library, the 2.30 client
# over it in fallback mode, and nccl-tests (built against us) with -c 1 at world size 1,
# two ranks sharing the GPU in one process (-g 2) and in two processes.
phase_dropin() {
  local L=$SNAPLIB:$CUDA_LIB coll g
  step acceptance_matrix 300 -- tests/gpu/run_acceptance_matrix.sh "$REAL_NCCL" build
  step client_2_30_host 60 LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_NCCL_LIB=$REAL_NCCL -- \
    build/tests/unit_client_2_30 host
  for coll in all_reduce reduce_scatter all_gather; do
    for g in 0 1; do
      step "nt_ws1_${coll}_G$g" 90 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH -- \
        "$NT_OURS/${coll}_perf" -b 8 -e 256M -f 4 -g 1 -c 1 -G $g
      step "nt_g2_${coll}_G$g" 90 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1 -- \
        "$NT_OURS/${coll}_perf" -b 8 -e 256M -f 4 -g 2 -c 1 -G $g
    done
    step "nt_mpi2_${coll}" 120 -- $MPIRUN -np 2 -x LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH \
      -x NCCL_TESTS_DEVICE=0 -x SNAPCCL_SHARED_GPU=1 "$NT_OURS/${coll}_perf" -b 8 -e 16M -f 8 \
      -n 5 -w 1 -c 1
  done
}

# Registered buffers (two ranks sharing the GPU): the registration tests in one process and
# across processes, and the two-shot at 256 MiB staged (-R 0) against registered (-R 1:
# ncclCommRegister, -R 2: symmetric windows), forced and as the selector picks.
phase_registration() {
  local P=build/perf E="LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1" R a
  step gpu_registration 300 SNAPCCL_SHARED_GPU=1 -- build/tests/gpu/gpu_test_registration --jobs 1 --verbose
  step mp_registered 300 SNAPCCL_SHARED_GPU=1 -- build/tests/gpu/gpu_test_multiproc --jobs 1 --verbose \
    --filter 'multiproc/registered_*'
  for a in twoshot auto; do
    for R in 0 1 2; do
      local A=""
      [ $a = auto ] || A="allreduce:$a"
      step "reg_${a}_R$R" 60 $E SNAPCCL_ALGO=$A SNAPCCL_DEBUG=INFO SNAPCCL_DEBUG_SUBSYS=TRANSPORT -- \
        $P/all_reduce_perf -g 2 -b 256M -e 256M -n 20 -w 5 -c 1 -R $R
    done
  done
}

# The eager call's host time: host_overhead of this build against the library in
# gpu-carry/old (bundle.sh OLD_LIB), world size 1 and 2, and under LD_PRELOAD over NVIDIA's
# library (calls taken, calls forwarded); perf/host_overhead_ab.sh alternates them.
phase_hostpath() {
  [ -d gpu-carry/old ] || { echo "no gpu-carry/old: bundle with OLD_LIB=<older build>/src"; return; }
  mkdir -p /tmp/hostpath-old/src && cp -a gpu-carry/old/. /tmp/hostpath-old/src/
  step host_ab 400 -- perf/host_overhead_ab.sh --old /tmp/hostpath-old --new "$repo/build" \
    --nccl-lib "$REAL_DIR" --rounds 2 -o "$LOG/host_ab"
}

# The tuning tool (two ranks sharing the GPU): it writes a file, and the perf binary's
# "# snapccl algorithm" lines without and with it; then world size 1 with NVIDIA's
# library under LD_PRELOAD and a file whose rows up to 64 KiB name "nccl", which those
# calls must be forwarded for (the destroy-time INTERPOSE counters).
phase_tuning() {
  local P=build/perf T=$LOG/files
  mkdir -p "$T"
  step tune_shared 200 SNAPCCL_SHARED_GPU=1 -- python3 perf/tune.py -n 2 --colls all_reduce \
    --dtypes float --modes eager -b 8 -e 8M -o "$T/shared.txt"
  step perf_no_file 60 LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1 -- \
    $P/all_reduce_perf -g 2 -b 8 -e 8M -f 4 -c 1
  step perf_with_file 60 LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1 \
    SNAPCCL_TUNING_FILE="$T/shared.txt" -- $P/all_reduce_perf -g 2 -b 8 -e 8M -f 4 -c 1
  step tune_ws1 200 -- python3 perf/tune.py -n 1 --colls all_reduce --dtypes float --modes eager \
    -b 8 -e 16M --nccl-lib "$REAL_DIR" -o "$T/ws1.txt"
  awk '$1 == "row" && $6 <= 65536 { $7 = "nccl"; h = 0
         for (i = 8; i <= NF; i++) if ($i ~ /^nccl=/) { $i = "nccl=0.5"; h = 1 }
         if (!h) $(NF + 1) = "nccl=0.5" } { print }' "$T/ws1.txt" >"$T/ws1_nccl_small.txt" 2>/dev/null
  step preload_nccl_rows 60 LD_LIBRARY_PATH=$REAL_DIR:$LD_LIBRARY_PATH LD_PRELOAD=$SNAPLIB/libsnapccl.so \
    SNAPCCL_TUNING_FILE="$T/ws1_nccl_small.txt" SNAPCCL_DEBUG=INFO SNAPCCL_DEBUG_SUBSYS=INTERPOSE,ALGO -- \
    $P/all_reduce_perf -b 8 -e 16M -f 4 -g 1 -c 1
}

# The staged data path on ranks sharing the GPU (two in one process): the kernel benchmark
# (GB/s per block next to a copy kernel, HBM bound, fixed cost per algorithm); the perf
# binaries at 256 MiB with 8 blocks and the default cap, against the library in
# gpu-carry/old (bundle.sh OLD_LIB_DIR) when it travelled, in the same call; and the
# all-reduce from 8 B to 8 MiB with each algorithm forced and with the selector's choice,
# eager and in a CUDA graph.
phase_datapath() {
  local P=build/perf E="LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1" coll b a g lib
  step staged_kernels 300 $E -- $P/staged_kernels
  for lib in new old; do
    local D=$SNAPLIB
    [ $lib = old ] && { [ -d gpu-carry/old ] || continue; D=$repo/gpu-carry/old; }
    for coll in all_reduce reduce_scatter all_gather; do
      for b in 8 0; do
        step "bw_${lib}_${coll}_B$b" 60 LD_LIBRARY_PATH=$D:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1 \
          SNAPCCL_MAX_BLOCKS=$b -- $P/${coll}_perf -g 2 -b 256M -e 256M -n 20 -w 5 -c 1
      done
    done
  done
  for g in 1 0; do
    for a in auto lamport oneshot twoshot; do
      local A="" e=8M
      [ $a = auto ] || A="allreduce:$a"
      case $a in lamport | oneshot) e=2M ;; esac # their buffer's capacity at two ranks
      step "sel_allreduce_${a}_G$g" 90 $E SNAPCCL_ALGO=$A -- $P/all_reduce_perf -g 2 -b 8 -e $e -f 2 \
        -n 50 -w 5 -c 1 -G $g
    done
  done
}

# The long-life programs of suite gpu-lifetime (docs/ARCHITECTURE.md, "Lifetime"), about 10
# minutes at full length; LIFETIME_CYCLES and LIFETIME_SOAK_S shorten them to fit one call.
phase_lifetime() {
  local T=build/tests/gpu n=${LIFETIME_CYCLES:-1000} s=${LIFETIME_SOAK_S:-170}
  step lifetime_cycles_inproc 600 -- $T/gpu_lifetime_cycles $n inproc
  step lifetime_cycles_procs 600 -- $T/gpu_lifetime_cycles $n procs
  step lifetime_splits 300 -- $T/gpu_lifetime_splits 64
  step lifetime_soak $((s + 60)) -- $T/gpu_lifetime_soak 300 6 $s
}

# The features whose GPU checks are pending (low precision, fused op, multicast twins):
# their GPU tests, the low-precision bitwise check against the CPU simulation and its
# speed, the fused benchmark and the PyTorch test of the binding.
phase_features() {
  local P=build/perf E="LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH SNAPCCL_SHARED_GPU=1"
  for t in lowprec nvls_twin fused; do
    step "gpu_$t" 420 SNAPCCL_SHARED_GPU=1 -- build/tests/gpu/gpu_test_$t --jobs 1 --verbose
  done
  step nvls_sass 120 -- bash tests/gpu/check_multimem_sass.sh build/src/libsnapccl.so
  step lowprec_verify 300 $E -- $P/lowprec_accuracy --verify
  step lowprec_perf 300 $E -- $P/lowprec_accuracy --perf -b 1M -e 256M -f 4
  for g in 256 32 96 1024; do step "lowprec_kernels_G$g" 120 -- $P/lowprec_kernels -G $g; done
  step lowprec_kernels_B64 120 -- $P/lowprec_kernels -B 64
  step lowprec_kernels_B64_wide 120 -- $P/lowprec_kernels -B 64 -w
  # The low-precision kernels under memcheck: misaligned buffers, odd groups (idle lanes,
  # teams of 3, 15 and 31 lanes) and partial groups, and the isolated kernels.
  local san="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer) --error-exitcode 1 --tool memcheck"
  step lowprec_memcheck 400 SNAPCCL_SHARED_GPU=1 SNAPCCL_TIMEOUT_MS=60000 -- $san \
    build/tests/gpu/gpu_test_lowprec --jobs 1 --verbose --filter 'lowprec/offsets_and_odd_groups'
  step lowprec_kernels_memcheck 200 -- $san $P/lowprec_kernels -e 4M -i 1 -G 96
  step fused_bench_g2 300 $E -- $P/fused_rmsnorm_bench -g 2
  step fused_preload 120 -- tests/gpu/run_fused_preload.sh build/tests/gpu/gpu_fused_preload \
    "$SNAPLIB/libsnapccl.so" "$REAL_DIR"
  step torch_fused 180 PYTHONUNBUFFERED=1 SNAPCCL_SHARED_GPU=1 PYTHONPATH=$repo/python \
    SNAPCCL_LIBRARY=$SNAPLIB/libsnapccl.so -- python3 -m torch.distributed.run --standalone \
    --nproc-per-node 2 tests/torch/fused.py --shared-gpu
}

# Hosts with several GPUs (issues "Runs on two / four / eight H200s"): the same checks
# across real devices, one rank per GPU, in both launch models, and the comparison. One
# phase per device call (each stays under the 10-minute limit of a call), in this order:
#   mg_suite  mg_features  mg_nt_g  mg_nt_np  mg_interpose  mg_compare
# Never the multicast path itself: SNAPCCL_NVLS stays unset, NCCL_NVLS_ENABLE=0.
ngpus() { nvidia-smi -L | grep -c '^GPU'; }

phase_mg_suite() {
  nvidia-smi topo -m >"$LOG/topo.txt" 2>&1
  step gpu_suite 560 GPU_SUITE_BIN=build/tests/gpu GPU_SUITE_CORE_ONLY=1 -- \
    tests/gpu/run_gpu_suite.sh "$LOG/suite"
}

phase_mg_features() {
  local n P=build/perf E="LD_LIBRARY_PATH=$SNAPLIB:$LD_LIBRARY_PATH"
  n=$(ngpus)
  for t in lowprec nvls_twin fused; do
    step "gpu_$t" 240 -- build/tests/gpu/gpu_test_$t --jobs 1 --verbose
  done
  step "lowprec_perf_g$n" 60 $E -- $P/lowprec_accuracy --perf -b 1M -e 1G -f 2 -g "$n"
  # The low-precision goal, 1.5x NCCL for bf16 >= 32 MB on the same GPUs: low precision
  # with the default staging and with 256 MiB (fewer rounds: up to ~12% faster at 256 MiB
  # on one H100, perf/RESULTS.md section 4), and NCCL's own all-reduce (nccl-tests, -c 0:
  # timing only).
  # One rank per GPU: the low-precision kernel runs its wide blocks here.
  step "lowprec_perf_bf16_g$n" 90 $E -- $P/lowprec_accuracy --perf -d bfloat16 -b 1M -e 1G -f 2 -g "$n"
  step "lowprec_perf_bf16_buf256M_g$n" 90 $E SNAPCCL_BUFFSIZE=268435456 -- \
    $P/lowprec_accuracy --perf -d bfloat16 -b 1M -e 1G -f 2 -g "$n"
  step "nccl_allreduce_bf16_g$n" 90 LD_LIBRARY_PATH=$REAL_DIR:$LD_LIBRARY_PATH -- \
    "$NT_NV/all_reduce_perf" -b 1M -e 1G -f 2 -g "$n" -d bfloat16 -c 0 -n 20 -w 5
  # (only with NCCL's log of this call: a RUN_ONLY that skipped it leaves nothing to compare)
  [ -f "$LOG/nccl_allreduce_bf16_g$n.log" ] &&
    step "lowprec_goal_bf16_g$n" 30 -- python3 perf/lowprec_goal.py "$LOG/lowprec_perf_bf16_g$n.log" \
      "$LOG/lowprec_perf_bf16_buf256M_g$n.log" --nccl "$LOG/nccl_allreduce_bf16_g$n.log"
  step lowprec_kernels_B64 60 -- $P/lowprec_kernels -B 64
  step lowprec_kernels_B64_wide 60 -- $P/lowprec_kernels -B 64 -w
  step "fused_bench_g$n" 60 $E -- $P/fused_rmsnorm_bench -g "$n"
}

# nccl-tests built against us: every dtype x {sum, max} (AllGather: per dtype), eager and
# graph, over 8 B .. 1 GiB; $1 = g (one process, -g N) or np (mpirun -np N).
nccltests_multi() {
  local how=$1 n L=$SNAPLIB:$CUDA_LIB coll d o g
  n=$(ngpus)
  for coll in all_reduce all_gather reduce_scatter; do
    for d in float half bfloat16 int32; do
      for o in sum max; do
        [ $coll = all_gather ] && [ $o = max ] && continue
        for g in 0 1; do
          if [ "$how" = g ]; then
            step "nt_ours_g${n}_${coll}_${d}_${o}_G$g" 120 LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH -- \
              "$NT_OURS/${coll}_perf" -b 8 -e 1G -f 2 -g "$n" -c 1 -d $d -o $o -G $g
          else
            step "nt_ours_np${n}_${coll}_${d}_${o}_G$g" 120 -- $MPIRUN -np "$n" \
              -x LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH "$NT_OURS/${coll}_perf" -b 8 -e 1G -f 2 -g 1 \
              -c 1 -d $d -o $o -G $g
          fi
        done
      done
    done
  done
}
phase_mg_nt_g() { nccltests_multi g; }
phase_mg_nt_np() { nccltests_multi np; }

phase_mg_interpose() {
  local n coll PRE=$SNAPLIB/libsnapccl.so R="$REAL_DIR:$CUDA_LIB"
  n=$(ngpus)
  for coll in all_reduce all_gather reduce_scatter; do
    step "pre_np${n}_${coll}" 120 -- $MPIRUN -np "$n" -x LD_LIBRARY_PATH=$R:$LD_LIBRARY_PATH \
      -x LD_PRELOAD=$PRE -x SNAPCCL_DEBUG=INFO -x SNAPCCL_DEBUG_SUBSYS=INTERPOSE \
      "$NT_NV/${coll}_perf" -b 8 -e 1G -f 2 -g 1 -c 1
    step "pre_g${n}_${coll}" 120 LD_LIBRARY_PATH=$R:$LD_LIBRARY_PATH LD_PRELOAD=$PRE SNAPCCL_DEBUG=INFO \
      SNAPCCL_DEBUG_SUBSYS=INTERPOSE -- "$NT_NV/${coll}_perf" -b 8 -e 1G -f 2 -g "$n" -c 1
  done
  for coll in broadcast reduce sendrecv alltoall; do
    step "pre_np${n}_${coll}" 120 -- $MPIRUN -np "$n" -x LD_LIBRARY_PATH=$R:$LD_LIBRARY_PATH \
      -x LD_PRELOAD=$PRE "$NT_NV/${coll}_perf" -b 8 -e 256M -f 4 -g 1 -c 1
  done
  local TR="python3 -m torch.distributed.run --standalone"
  step "torch_${n}rank_plain" 150 PYTHONUNBUFFERED=1 -- $TR --nproc-per-node "$n" tests/torch/collectives.py
  step "torch_${n}rank_preload" 150 PYTHONUNBUFFERED=1 LD_PRELOAD=$PRE SNAPCCL_DEBUG=INFO \
    SNAPCCL_DEBUG_SUBSYS=INTERPOSE -- $TR --nproc-per-node "$n" tests/torch/collectives.py
}

phase_mg_compare() {
  local n
  n=$(ngpus)
  nvidia-smi topo -m >"$LOG/topo.txt" 2>&1
  step "compare_g$n" 280 -- perf/compare.sh -o "$LOG/compare_g$n" --nccl-lib "$REAL_DIR" --reps 2 \
    --extra "-n 100 -w 10" --timeout 120 --bin build/perf --snapccl-lib "$SNAPLIB" -g "$n"
  step "compare_np$n" 280 -- perf/compare.sh -o "$LOG/compare_np$n" --nccl-lib "$REAL_DIR" --reps 2 \
    --extra "-n 100 -w 10" --timeout 120 --bin build/perf --snapccl-lib "$SNAPLIB" --np "$n" \
    --mpirun "$MPIRUN"
}

phase=${1:?usage: tools/gpu/run.sh suite|interpose|nccltests|dropin|registration|hostpath|tuning|latency|perf|compare|datapath|features|lifetime|mg_suite|mg_features|mg_nt_g|mg_nt_np|mg_interpose|mg_compare}
LOG=$OUT/$phase
mkdir -p "$LOG"
finish() {
  trap - EXIT TERM INT
  printf '%s\n' "${SUMMARY[@]}" >"$LOG/summary.txt"
  tar -czf "$OUT/$phase.tgz" -C "$OUT" "$phase" && rm -rf "$LOG"
  echo "==== $phase summary"
  printf '%s\n' "${SUMMARY[@]}"
  exit 0
}
trap finish EXIT TERM INT
nvidia-smi -L >"$LOG/host.txt" 2>&1
echo "real NCCL: ${REAL_NCCL:-none}" >>"$LOG/host.txt"
"phase_$phase"
