#!/usr/bin/env python3
"""The low-precision all-reduce against NVIDIA's NCCL, size by size, from the logs of one
multi-GPU run (tools/gpu/run.sh mg_features writes both):

  lowprec_goal.py LOWPREC_LOG [LOWPREC_LOG ...] --nccl NCCL_LOG [--from BYTES] [--goal X]

LOWPREC_LOG: `lowprec_accuracy --perf` output (rows: bytes, then time and busbw for full
precision, fp8, int8, int4; busbw counted on the unquantised bytes). Several logs (say the
default staging and 256 MiB) are each reported; NCCL_LOG: nccl-tests' all_reduce_perf
output on the same GPUs and dtype (the out-of-place busbw is compared).

Prints a table of busbw and ratio to NCCL for every size both logs have, then per log and
format the smallest ratio over the sizes from --from (default 32 MB, where the goal of 1.5x
NCCL starts) and whether it reaches --goal (default 1.5). Exit status 0 when it could
compare (whatever the verdict), 2 when a log has no rows or no size is shared. Python 3 standard library only.
"""

import argparse
import sys

FORMATS = ("full", "fp8", "int8", "int4")


def numbers(line):
    out = []
    for tok in line.split():
        try:
            out.append(float(tok))
        except ValueError:
            return None
    return out


def read_lowprec(path):
    """{bytes: {format: busbw}} from lowprec_accuracy --perf."""
    rows = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.lstrip().startswith("#"):
                continue
            v = numbers(line)
            if v is None or len(v) != 1 + 2 * len(FORMATS) or v[0] != int(v[0]):
                continue
            rows[int(v[0])] = {fmt: v[2 + 2 * i] for i, fmt in enumerate(FORMATS)}
    return rows


def read_nccl(path):
    """{bytes: out-of-place busbw} from nccl-tests (size count type redop root time algbw busbw ...)."""
    rows = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            tok = line.split()
            if len(tok) < 8 or line.lstrip().startswith("#") or not tok[0].isdigit():
                continue
            try:
                rows[int(tok[0])] = float(tok[7])
            except ValueError:
                continue
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("lowprec", nargs="+")
    ap.add_argument("--nccl", required=True)
    ap.add_argument("--from", dest="start", type=int, default=32 * 1000 * 1000)
    ap.add_argument("--goal", type=float, default=1.5)
    a = ap.parse_args()
    nccl = read_nccl(a.nccl)
    if not nccl:
        print(f"lowprec_goal: no rows in {a.nccl}")
        return 2
    status = 0
    for path in a.lowprec:
        lp = read_lowprec(path)
        sizes = sorted(set(lp) & set(nccl))
        print(f"# {path} against {a.nccl} (busbw GB/s; x: ratio to NCCL)")
        if not sizes:
            print("lowprec_goal: no size in both logs")
            status = 2
            continue
        print(f"{'bytes':>12} {'nccl':>8}" + "".join(f" {fmt:>8} {'x':>5}" for fmt in FORMATS))
        for s in sizes:
            cells = "".join(f" {lp[s][fmt]:8.1f} {lp[s][fmt] / nccl[s]:5.2f}" for fmt in FORMATS)
            print(f"{s:12d} {nccl[s]:8.1f}{cells}")
        big = [s for s in sizes if s >= a.start]
        if not big:
            print(f"lowprec_goal: no shared size from {a.start} bytes")
            status = 2
            continue
        for fmt in FORMATS[1:]:
            worst = min(big, key=lambda s: lp[s][fmt] / nccl[s])
            r = lp[worst][fmt] / nccl[worst]
            verdict = "meets" if r >= a.goal else "misses"
            print(f"{fmt}: from {a.start} bytes the smallest ratio is {r:.2f} (at {worst} bytes): "
                  f"{verdict} the {a.goal}x goal")
    return status


if __name__ == "__main__":
    sys.exit(main())
