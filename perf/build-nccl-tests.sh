#!/usr/bin/env bash
# build-nccl-tests.sh: builds NVIDIA's nccl-tests against snapccl (our include/nccl.h
# and our libnccl.so.2), out of tree, and optionally runs one of its binaries on our
# library.
#
#   perf/build-nccl-tests.sh <nccl-tests checkout> <snapccl build dir> [MPI=1] [options]
#     --build-dir DIR   where objects and binaries go (default /tmp/nccl-tests-snapccl)
#     --cuda DIR        CUDA toolkit (default $CUDA_HOME or /usr/local/cuda)
#     --mpi-home DIR    MPI prefix for MPI=1 (default: from mpicc, else
#                       /usr/lib/x86_64-linux-gnu/openmpi)
#     --gencode "..."   nvcc -gencode flags (default sm_90 only)
#     -j N              parallel make jobs (default: nproc)
#     --run "BIN ARGS"  afterwards run BIN (e.g. "all_reduce_perf -b 8 -e 128M -f 2 -g 1")
#                       from the build dir with LD_LIBRARY_PATH=<snapccl build dir>/src
#
# How it points nccl-tests at snapccl: its Makefile (src/Makefile, src/common.mk) takes
# NCCL_HOME (-I$NCCL_HOME/include, -L$NCCL_HOME/lib -lnccl), CUDA_HOME / CUDA_LIB (-L for
# cudart, placed *before* NCCL_HOME's -L), MPI / MPI_HOME and NVCC_GENCODE. CUDA's lib64
# also holds NVIDIA's libnccl.so, which -lnccl would then find first; so both are pointed
# at one staging directory holding our libnccl.so(.2) beside links to CUDA's cudart, and
# NCCL_HOME/include is our include/ (nccl.h at API 2.27: nccl-tests' 2.28 device-API
# code compiles out). Link errors (functions snapccl does not define yet) are listed at
# the end; nothing is worked around.
set -u -o pipefail

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build-nccl-tests.sh: $*" >&2; exit 2; }

[ $# -ge 2 ] || { usage >&2; exit 2; }
case "$1" in -h|--help) usage; exit 0 ;; esac
src=$1
snapbuild=$2
shift 2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
build=/tmp/nccl-tests-snapccl
cuda=${CUDA_HOME:-/usr/local/cuda}
mpi=0
mpi_home=""
gencode="-gencode=arch=compute_90,code=sm_90"
jobs=$(nproc 2>/dev/null || echo 4)
run=""
while [ $# -gt 0 ]; do
  case "$1" in
    MPI=1) mpi=1; shift ;;
    MPI=0) mpi=0; shift ;;
    --build-dir) build=$2; shift 2 ;;
    --cuda) cuda=$2; shift 2 ;;
    --mpi-home) mpi_home=$2; shift 2 ;;
    --gencode) gencode=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1'" ;;
  esac
done

[ -f "$src/src/Makefile" ] && [ -f "$src/src/common.mk" ] ||
  die "$src is not an nccl-tests checkout (no src/Makefile); a bare mirror needs 'git clone' first"
src=$(cd "$src" && pwd)
snapbuild=$(cd "$snapbuild" 2>/dev/null && pwd) || die "no build directory $2"
lib=$snapbuild/src
[ -e "$lib/libnccl.so.2" ] || die "no $lib/libnccl.so.2: build snapccl first (ninja -C $snapbuild)"
[ -x "$cuda/bin/nvcc" ] || die "no nvcc in $cuda/bin (use --cuda)"
case "$build" in "$repo"|"$repo"/*) die "--build-dir must be outside the snapccl tree" ;; esac
case "$build" in "$src"|"$src"/*) echo "note: building inside the nccl-tests checkout" >&2 ;; esac
if [ "$mpi" = 1 ] && [ -z "$mpi_home" ]; then
  if command -v mpicc >/dev/null 2>&1 && inc=$(mpicc --showme:incdirs 2>/dev/null); then
    mpi_home=$(dirname "${inc%% *}")
  else
    mpi_home=/usr/lib/x86_64-linux-gnu/openmpi
  fi
fi
[ "$mpi" = 0 ] || [ -f "$mpi_home/include/mpi.h" ] || die "no $mpi_home/include/mpi.h (use --mpi-home)"

# Staging prefix: include -> our headers, lib -> our libnccl + CUDA's cudart.
stage=$build/snapccl-home
mkdir -p "$stage/lib" || die "cannot create $stage"
ln -sfn "$repo/include" "$stage/include"
rm -f "$stage"/lib/*
for f in "$lib"/libnccl.so*; do ln -s "$f" "$stage/lib/"; done
for f in "$cuda"/lib64/libcudart*; do ln -s "$f" "$stage/lib/"; done
[ -e "$stage/lib/libnccl.so" ] || ln -s "$lib/libnccl.so.2" "$stage/lib/libnccl.so"

log=$build/build.log
mkopts=(-C "$src" -j "$jobs" BUILDDIR="$build/bin" CUDA_HOME="$cuda" CUDA_LIB="$stage/lib"
        NCCL_HOME="$stage" NVCC_GENCODE="$gencode" MPI="$mpi")
[ "$mpi" = 1 ] && mkopts+=(MPI_HOME="$mpi_home" NAME_SUFFIX=_mpi)
echo "make ${mkopts[*]}" | tee "$log"
PATH="$cuda/bin:$PATH" make "${mkopts[@]}" VERBOSE=1 >>"$log" 2>&1
rc=$?

undefined=$(grep -o "undefined reference to \`[A-Za-z0-9_]*'" "$log" | sed "s/.*\`//; s/'//" | sort -u)
if [ -n "$undefined" ]; then
  echo "link errors: snapccl's libnccl.so.2 does not define:"
  echo "$undefined" | sed 's/^/  /'
fi
if [ "$rc" != 0 ]; then
  echo "build failed (exit $rc); full log: $log" >&2
  # Undefined references are summarised above; show other errors as they came.
  grep -E "error|Error" "$log" | grep -v -e "^make" -e "undefined reference" | head -20 >&2
  exit 1
fi
echo "built: $(ls "$build/bin" | grep '_perf' | tr '\n' ' ')"

if [ -n "$run" ]; then
  read -r -a cmd <<<"$run"
  bin=$build/bin/${cmd[0]}
  [ -x "$bin" ] || die "no $bin"
  echo "running: LD_LIBRARY_PATH=$lib:$cuda/lib64 $bin ${cmd[*]:1}"
  # Ours first; CUDA's lib64 after it supplies the shared cudart nccl-tests links.
  LD_LIBRARY_PATH="$lib:$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" "${cmd[@]:1}"
  exit $?
fi
