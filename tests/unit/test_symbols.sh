#!/usr/bin/env bash
# Exports and sonames of the shared libraries.
#
# usage: test_symbols.sh LIBSNAPCCL LIBNCCL
#   LIBSNAPCCL  the built libsnapccl (any name; its soname must be libsnapccl.so.0)
#   LIBNCCL     the built libnccl    (any name; its soname must be libnccl.so.2)
#
# Fails when a library exports a symbol outside nccl*, pnccl*, snapccl* (plus the
# linker's own _init/_fini/_edata/_end/__bss_start), when a function of NVIDIA's NCCL
# 2.27 API or its pnccl* alias is missing or is not a function, when an alias is not
# the same code as its function, or when a soname is wrong.
set -u

if [ $# -ne 2 ]; then
  echo "usage: $0 LIBSNAPCCL LIBNCCL" >&2
  exit 2
fi
for tool in nm readelf; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found" >&2; exit 1; }
done

# NVIDIA's NCCL 2.27 API (src/nccl.h.in of v2.27.7-1): 37 functions.
API_2_27="
ncclMemAlloc ncclMemFree ncclGetVersion ncclGetUniqueId
ncclCommInitRankConfig ncclCommInitRank ncclCommInitAll ncclCommFinalize
ncclCommDestroy ncclCommAbort ncclCommSplit ncclCommShrink ncclCommInitRankScalable
ncclGetErrorString ncclGetLastError ncclResetDebugInit ncclCommGetAsyncError
ncclCommCount ncclCommCuDevice ncclCommUserRank
ncclCommRegister ncclCommDeregister ncclCommWindowRegister ncclCommWindowDeregister
ncclRedOpCreatePreMulSum ncclRedOpDestroy
ncclReduce ncclBcast ncclBroadcast ncclAllReduce ncclReduceScatter ncclAllGather
ncclSend ncclRecv
ncclGroupStart ncclGroupEnd ncclGroupSimulateEnd
"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

n_api=$(echo $API_2_27 | wc -w)
[ "$n_api" -eq 37 ] || fail "the script's API list has $n_api names, not 37"

check_lib() {
  local lib=$1 want_soname=$2
  echo "== $lib (soname $want_soname)"
  if [ ! -f "$lib" ]; then
    fail "$lib does not exist"
    return
  fi

  # soname, and the link under that name next to the file resolving to it
  local soname
  soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
  [ "$soname" = "$want_soname" ] || fail "$lib: soname is '$soname', expected '$want_soname'"
  local dir
  dir=$(dirname "$lib")
  if [ -e "$dir/$want_soname" ]; then
    [ "$(readlink -f "$dir/$want_soname")" = "$(readlink -f "$lib")" ] ||
      fail "$dir/$want_soname does not lead to $lib"
  else
    fail "$dir/$want_soname (the name the loader looks for) is missing"
  fi

  # every defined dynamic symbol: "ADDRESS TYPE NAME[@VERSION]"
  local syms
  if ! syms=$(nm -D --defined-only "$lib" | awk 'NF == 3 { sub(/@.*/, "", $3); print $1, $2, $3 }'); then
    fail "$lib: nm failed"
    return
  fi
  [ -n "$syms" ] || { fail "$lib: exports nothing"; return; }

  local bad
  bad=$(echo "$syms" | awk '{ print $3 }' |
        grep -Ev '^(nccl|pnccl|snapccl)' |
        grep -Ev '^(_init|_fini|_edata|_end|__bss_start)$' || true)
  if [ -n "$bad" ]; then
    fail "$lib exports symbols outside nccl*/pnccl*/snapccl*:"
    echo "$bad" | sed 's/^/    /' >&2
  fi

  local fn addr type paddr ptype
  for fn in $API_2_27; do
    for name in "$fn" "p$fn"; do
      type=$(echo "$syms" | awk -v n="$name" '$3 == n { print $2; exit }')
      if [ -z "$type" ]; then
        fail "$lib: $name (NCCL 2.27 API) is not exported"
      elif [ "$type" != T ] && [ "$type" != W ] && [ "$type" != i ]; then
        fail "$lib: $name is exported as '$type', not as a function"
      fi
    done
    addr=$(echo "$syms" | awk -v n="$fn" '$3 == n { print $1; exit }')
    paddr=$(echo "$syms" | awk -v n="p$fn" '$3 == n { print $1; exit }')
    if [ -n "$addr" ] && [ -n "$paddr" ] && [ "$addr" != "$paddr" ]; then
      fail "$lib: p$fn ($paddr) is not an alias of $fn ($addr)"
    fi
  done
  echo "   $(echo "$syms" | wc -l) symbols exported"
}

check_lib "$1" libsnapccl.so.0
check_lib "$2" libnccl.so.2

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed" >&2
  exit 1
fi
echo "all symbol checks passed"
