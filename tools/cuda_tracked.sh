#!/usr/bin/env bash
# Writes the file through which meson compiles one CUDA source, and its depfile.
#
# Meson 1.0 (Debian 12's) gives nvcc no dependency-file flags, so ninja could not know
# which headers a .cu includes: after a header edit the objects compiled before it stayed
# stale (seen: a block cap in kernels/kargs.h moved the flag layout under kernels that
# kept the old one). So the build compiles OUT, one line including SRC, and this script
# also writes DEPFILE: every file SRC includes (nvcc -M), which ninja reads, so that it
# writes OUT again, and so recompiles its object, whenever one of them changes.
#   cuda_tracked.sh SRC OUT DEPFILE NVCC [PREPROCESSOR ARGS...]
set -euo pipefail
src=$1 out=$2 dep=$3 nvcc=$4
shift 4
abs=$(realpath "$src")
"$nvcc" -M -MT "$out" -MF "$dep.tmp" "$@" "$abs"
printf '/* Written by tools/cuda_tracked.sh (see there why): compiles %s. */\n#include "%s"\n' \
  "$src" "$abs" >"$out.tmp"
mv "$dep.tmp" "$dep"
mv "$out.tmp" "$out"
