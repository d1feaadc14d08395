#!/usr/bin/env bash
# Do the multicast kernels of the built library really hold the multimem instructions,
# for every dtype the NVLS path claims, and do their unicast twins hold none?
#
#   tests/gpu/check_multimem_sass.sh build/src/libsnapccl.so
#
# How: cuobjdump -sass disassembles the library. What each PTX form lowers to in SASS is
# learnt, not assumed: one-instruction probe kernels (multimem.ld_reduce per dtype,
# multimem.st, multimem.red), each beside a baseline with the plain instruction, are
# compiled with nvcc for the library's architecture; the SASS opcodes a probe has and its
# baseline lacks are that form's signature. Then, per dtype, the signature of its
# reducing load must appear in mm_reduce_kernel<dtype, multicast> and not in
# mm_reduce_kernel<dtype, twin>; the multicast store and flag signatures must appear in
# every multicast kernel (all-gather included) and in no twin. A form whose SASS cannot
# be told from its plain counterpart (the address alone would make it multicast) is
# reported, not failed. Without nvcc only the documented reducing-load opcode (LDGMC,
# override with MULTIMEM_LD_REDUCE_SASS) is looked for.
#
# Environment: CUOBJDUMP, NVCC (used when executable; else PATH, else /usr/local/cuda/bin).
# Exit 0 when every check passed, 1 when one failed, 77 (skip) without cuobjdump.
set -u

lib=${1:-}
if [ -z "$lib" ] || [ ! -f "$lib" ]; then
  echo "usage: $0 path/to/libsnapccl.so" >&2
  exit 2
fi
find_tool() { # find_tool NAME OVERRIDE: the override if it runs, else PATH, else the toolkit
  if [ -n "$2" ] && [ -x "$2" ]; then echo "$2"; return; fi
  command -v "$1" 2>/dev/null || echo "/usr/local/cuda/bin/$1"
}
CUOBJDUMP=$(find_tool cuobjdump "${CUOBJDUMP:-}")
NVCC=$(find_tool nvcc "${NVCC:-}")
if ! [ -x "$CUOBJDUMP" ]; then
  echo "cuobjdump not found ($CUOBJDUMP): nothing to disassemble with; skipping"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# opcodes FILE FUNCTION_REGEX: the distinct opcodes (mnemonic.modifiers) of every function
# whose (mangled) name matches, one per line.
opcodes() {
  awk -v pat="$2" '
    /Function :/ { name = $NF; inside = (name ~ pat); next }
    inside && /\/\*[0-9a-f][0-9a-f][0-9a-f][0-9a-f]/ {
      line = $0
      sub(/^[ \t]*\/\*[0-9a-f]+\*\/[ \t]*/, "", line)
      sub(/^@!?U?P[0-9T]+[ \t]+/, "", line)
      split(line, tok, /[ \t;]+/)
      if (tok[1] != "") print tok[1]
    }' "$1" | sort -u
}

"$CUOBJDUMP" -sass "$lib" >"$work/lib.sass" 2>"$work/lib.err" || {
  echo "cuobjdump -sass $lib failed:"; cat "$work/lib.err"; exit 1; }
arch=$(grep -o 'code for sm_[0-9a-z]*' "$work/lib.sass" | head -1 | sed 's/code for sm_//')
if [ -z "$arch" ]; then
  echo "no SASS in $lib"
  exit 1
fi
echo "library: $lib (SASS for sm_$arch)"

# The kernels (multimem.cu): mm_reduce_kernel<dtype, MC>, mm_allgather_kernel<MC>; dtypes
# as ncclDataType_t: 7 float32, 6 float16, 9 bfloat16.
declare -A dtname=([7]=float32 [6]=float16 [9]=bfloat16)
declare -A ldform=([7]="add.v4.f32" [6]="add.acc::f32.v4.f16x2" [9]="add.acc::f32.v4.bf16x2")
for mc in 0 1; do
  opcodes "$work/lib.sass" "mm_allgather_kernelILb${mc}E" >"$work/ag$mc"
  for dt in 7 6 9; do opcodes "$work/lib.sass" "mm_reduce_kernelILi${dt}ELb${mc}E" >"$work/k$dt.$mc"; done
done
for f in "$work"/ag0 "$work"/ag1 "$work"/k*; do
  if ! [ -s "$f" ]; then
    echo "FAIL: a multimem kernel is missing from the library ($(basename "$f"))"
    exit 1
  fi
done

# Signatures from probes, when nvcc is here.
have_probes=0
if [ -x "$NVCC" ]; then
  cat >"$work/probe.cu" <<'EOF'
#include <stdint.h>
#define LDR(NAME, INSN)                                                                      \
  extern "C" __global__ void NAME(const char* p, uint4* o) {                                 \
    uint4 r;                                                                                 \
    asm volatile(INSN " {%0, %1, %2, %3}, [%4];"                                             \
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p + 16 * threadIdx.x) : "memory"); \
    o[threadIdx.x] = r;                                                                      \
  }
LDR(probe_ld_7, "multimem.ld_reduce.relaxed.sys.global.add.v4.f32")
LDR(probe_ld_6, "multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.f16x2")
LDR(probe_ld_9, "multimem.ld_reduce.relaxed.sys.global.add.acc::f32.v4.bf16x2")
LDR(base_ld, "ld.relaxed.sys.global.v4.u32")
#define ST(NAME, INSN)                                                                       \
  extern "C" __global__ void NAME(char* p, const uint4* i) {                                 \
    uint4 v = i[threadIdx.x];                                                                \
    asm volatile(INSN " [%0], {%1, %2, %3, %4};" ::"l"(p + 16 * threadIdx.x), "r"(v.x), "r"(v.y), \
                 "r"(v.z), "r"(v.w) : "memory");                                             \
  }
ST(probe_st, "multimem.st.relaxed.sys.global.v4.f32")
ST(base_st, "st.relaxed.sys.global.v4.u32")
#define RED(NAME, INSN)                                                                      \
  extern "C" __global__ void NAME(unsigned long long* p, const unsigned long long* v) {      \
    asm volatile(INSN " [%0], %1;" ::"l"(p + threadIdx.x), "l"(v[threadIdx.x]) : "memory");  \
  }
RED(probe_red, "multimem.red.release.sys.global.max.u64")
RED(base_red, "red.release.sys.global.max.u64")
EOF
  if "$NVCC" -arch="sm_$arch" -cubin -o "$work/probe.cubin" "$work/probe.cu" 2>"$work/nvcc.err" &&
     "$CUOBJDUMP" -sass "$work/probe.cubin" >"$work/probe.sass" 2>>"$work/nvcc.err"; then
    have_probes=1
    for p in ld_7 ld_6 ld_9 st red; do opcodes "$work/probe.sass" "^probe_${p}\$" >"$work/p_$p"; done
    for b in ld st red; do opcodes "$work/probe.sass" "^base_${b}\$" >"$work/b_$b"; done
    for dt in 7 6 9; do comm -23 "$work/p_ld_$dt" "$work/b_ld" >"$work/sig_ld_$dt"; done
    comm -23 "$work/p_st" "$work/b_st" >"$work/sig_st"
    comm -23 "$work/p_red" "$work/b_red" >"$work/sig_red"
  else
    echo "note: nvcc could not build the probes ($NVCC); falling back to the documented opcode"
    cat "$work/nvcc.err"
  fi
else
  echo "note: nvcc not found ($NVCC); falling back to the documented opcode"
fi
if [ $have_probes = 0 ]; then
  for dt in 7 6 9; do echo "${MULTIMEM_LD_REDUCE_SASS:-LDGMC}" >"$work/sig_ld_$dt"; done
  : >"$work/sig_st"
  : >"$work/sig_red"
fi

failed=0
# contains KERNEL_OPCODES SIGNATURE: every signature opcode (exact, or as a prefix when the
# signature comes from the fallback) appears.
contains() {
  local sig
  while read -r sig; do
    [ -z "$sig" ] && continue
    if [ $have_probes = 1 ]; then grep -qxF -- "$sig" "$1" || return 1
    else grep -q -- "^$sig" "$1" || return 1; fi
  done <"$2"
  return 0
}
touches() { # touches KERNEL_OPCODES SIGNATURE: any signature opcode appears
  local sig
  while read -r sig; do
    [ -z "$sig" ] && continue
    if [ $have_probes = 1 ]; then grep -qxF -- "$sig" "$1" && return 0
    else grep -q -- "^$sig" "$1" && return 0; fi
  done <"$2"
  return 1
}
check() { # check WHAT KERNEL_OPCODES SIGNATURE present|absent
  local what=$1 ops=$2 sig=$3 want=$4 list
  list=$(tr '\n' ' ' <"$sig")
  if ! [ -s "$sig" ]; then
    if [ $have_probes = 1 ]; then
      echo "note: $what: this form's SASS is indistinguishable from the plain instruction; not checked"
    else
      echo "note: $what: not checked (its SASS is learnt from nvcc probes)"
    fi
    return
  fi
  if [ "$want" = present ]; then
    if contains "$ops" "$sig"; then echo "ok   $what: $list"
    else echo "FAIL $what: $list missing"; failed=1; fi
  else
    if touches "$ops" "$sig"; then echo "FAIL $what: $list present in a unicast twin"; failed=1
    else echo "ok   $what: none"; fi
  fi
}

for dt in 7 6 9; do
  check "multimem.ld_reduce.${ldform[$dt]} in the ${dtname[$dt]} multicast kernel" "$work/k$dt.1" "$work/sig_ld_$dt" present
  check "reducing loads in the ${dtname[$dt]} twin" "$work/k$dt.0" "$work/sig_ld_$dt" absent
  check "multimem.st in the ${dtname[$dt]} multicast kernel" "$work/k$dt.1" "$work/sig_st" present
  check "multimem.red (flags) in the ${dtname[$dt]} multicast kernel" "$work/k$dt.1" "$work/sig_red" present
  check "multicast stores in the ${dtname[$dt]} twin" "$work/k$dt.0" "$work/sig_st" absent
  check "multicast flag updates in the ${dtname[$dt]} twin" "$work/k$dt.0" "$work/sig_red" absent
done
check "multimem.st in the all-gather multicast kernel" "$work/ag1" "$work/sig_st" present
check "multimem.red (flags) in the all-gather multicast kernel" "$work/ag1" "$work/sig_red" present
check "multicast stores in the all-gather twin" "$work/ag0" "$work/sig_st" absent
# Whatever the signatures: a multicast kernel that compiled to exactly its twin's opcodes
# lost its multimem instructions.
for k in ag k7 k6 k9; do
  if cmp -s "$work/$k.0" "$work/$k.1"; then
    echo "FAIL $k: the multicast kernel has the same opcodes as its twin"
    failed=1
  fi
done
if [ $failed = 0 ]; then echo "PASS"; else echo "FAIL"; fi
exit $failed
