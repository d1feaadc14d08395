#!/usr/bin/env python3
"""tune.py: measure every algorithm of snapccl, and NVIDIA's NCCL, on this host and write
the tuning file that snapccl reads at init (SNAPCCL_TUNING_FILE, or the default path
under ~/.cache/snapccl; format in src/tuning.h).

For each collective, dtype and launch mode it runs the perf binaries (build/perf) once
per algorithm, forced with SNAPCCL_ALGO=<collective>:<name>, over powers of two of
bytes, and once against NVIDIA's libnccl.so.2 (LD_LIBRARY_PATH, as compare.sh does)
when there is one and it accepts the layout (it refuses ranks sharing a GPU). Every
measured size becomes a row covering its octave of call bytes, with the out-of-place
time of each algorithm that ran it and checked it correct; the least time wins.

  perf/tune.py -n 2                       world size 2, one process driving both ranks
  perf/tune.py -n 4 --launch threads      a thread per rank
  perf/tune.py -n 2 --launch procs        a process per rank (mpirun, *_perf_mpi)
  SNAPCCL_SHARED_GPU=1 perf/tune.py -n 2  two ranks on one GPU (the one-GPU test bed)
Narrow it with -b/-e, --colls, --dtypes, --modes, --algos; --dry-run prints the runs.
Python 3 standard library only.
"""

import argparse
import os
import re
import shlex
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from compare_report import algorithm_at, parse_perf_log  # noqa: E402

COLLS = {"all_reduce": "allreduce", "all_gather": "allgather", "reduce_scatter": "reducescatter"}
DSIZE = {"int8": 1, "uint8": 1, "f8e4m3": 1, "f8e5m2": 1, "half": 2, "bfloat16": 2, "int32": 4,
         "uint32": 4, "float": 4, "int64": 8, "uint64": 8, "double": 8}


def log(msg):
    print("tune: " + msg, file=sys.stderr, flush=True)


def run(cmd, env, dry, timeout):
    text = " ".join(shlex.quote(c) for c in cmd)
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k not in os.environ
                     or os.environ[k] != v)
    if dry:
        print(f"{shown} {text}")
        return ""
    log(f"{shown} {text}")
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=timeout)
        return p.stdout
    except subprocess.TimeoutExpired as e:
        log(f"timed out after {timeout} s")
        return e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")


def nvidia_nccl_dir(ours):
    """The directory of NVIDIA's libnccl.so.2 (not ours), or None."""
    cands = []
    try:
        out = subprocess.run(["ldconfig", "-p"], stdout=subprocess.PIPE, text=True).stdout
        cands += [os.path.dirname(l.split("=>")[-1].strip()) for l in out.splitlines()
                  if "libnccl.so.2 " in l]
    except OSError:
        pass
    cands += ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
              os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "lib64")]
    for d in cands:
        if os.path.exists(os.path.join(d, "libnccl.so.2")) and \
                os.path.realpath(d) != os.path.realpath(ours):
            return d
    return None


class Runner:
    def __init__(self, a):
        self.a = a
        self.bindir = os.path.abspath(a.bin)

    def cmd(self, coll, dtype, mode, lo, hi):
        a = self.a
        mpi = a.launch == "procs"
        binary = os.path.join(self.bindir, f"{coll}_perf" + ("_mpi" if mpi else ""))
        shape = {"gpus": ["-g", str(a.ranks)], "threads": ["-t", str(a.ranks), "-g", "1"],
                 "procs": ["-g", "1"]}[a.launch]
        c = [binary] + shape + ["-b", str(lo), "-e", str(hi), "-f", "2", "-d", dtype] + \
            (["-G", "1"] if mode == "graph" else []) + shlex.split(a.extra)
        return (shlex.split(a.mpirun) + ["-np", str(a.ranks)] if mpi else []) + c

    def env(self, algo=None, nccl_dir=None):
        e = dict(os.environ)
        e.pop("SNAPCCL_ALGO", None)
        if algo:
            e["SNAPCCL_ALGO"] = algo
        if nccl_dir:
            e["LD_LIBRARY_PATH"] = nccl_dir + (":" + e["LD_LIBRARY_PATH"] if e.get("LD_LIBRARY_PATH") else "")
        return e


def discover(r, coll):
    """This host's topology key and default file path, and the algorithms of coll that
    run by cost, from the library's INFO lines at init (src/algos/select_table.c)."""
    env = r.env()
    env.update({"SNAPCCL_DEBUG": "INFO", "SNAPCCL_DEBUG_SUBSYS": "ALGO"})
    env.pop("SNAPCCL_TUNING_FILE", None)
    out = run(r.cmd(coll, "float", "eager", 8, 8), env, False, r.a.timeout)
    key = path = None
    m = re.search(r"tuning file (\S+) \(\d+ rows.*topology (.+)$", out, re.M) or \
        re.search(r"no tuning file used \(looked for ([^)]*)\); the cost model decides; topology (.+)$", out, re.M)
    if m:
        path, key = m.group(1), m.group(2).strip()
        path = path if path.startswith("/") else None  # the library knew no default path
    m = re.search(r"selection: %s\s+algorithms:(.*)$" % COLLS[coll], out, re.M)
    # Opt-in (lossy, wins whenever enabled anyway) and named-only (test twins) entries
    # never run by cost: not timed.
    names = [n for n in m.group(1).split() if "(" not in n] if m else []
    return key, path, names, out


def times(text, dsize, forced):
    """{call bytes: out-of-place us} of the rows that ran, checked correct and, when an
    algorithm was forced, ran that one (the library's "# snapccl algorithm:" lines)."""
    parsed = parse_perf_log(text)
    got = {}
    for row in parsed["rows"]:
        t, _, _, wrong = row["oop"]
        if t is None or t <= 0 or wrong not in (None, 0):
            continue
        if forced and algorithm_at(parsed["algorithms"], row["size"]) != forced:
            continue
        got[row["count"] * dsize] = t
    return got


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--ranks", type=int, required=True, help="world size")
    p.add_argument("--launch", choices=["gpus", "threads", "procs"], default="gpus",
                   help="one process driving every rank (default), a thread per rank, or a process per rank")
    p.add_argument("-b", default="8", help="smallest size in bytes, as the perf binaries count it (default 8)")
    p.add_argument("-e", default="1G", help="largest size (default 1G)")
    p.add_argument("--colls", default="all_reduce all_gather reduce_scatter")
    p.add_argument("--dtypes", default="float bfloat16", help="perf binaries' -d names (default: float bfloat16)")
    p.add_argument("--modes", default="eager graph")
    p.add_argument("--algos", default="", help="only these algorithms (default: every one the library names)")
    p.add_argument("--no-nccl", action="store_true", help="do not time NVIDIA's NCCL")
    p.add_argument("--nccl-lib", default="", help="directory of NVIDIA's libnccl.so.2 (default: found like compare.sh)")
    p.add_argument("--bin", default=os.path.join(here, "..", "build", "perf"))
    p.add_argument("--extra", default="-n 20 -w 5", help="more flags for every perf run")
    p.add_argument("--mpirun", default="mpirun --allow-run-as-root")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("-o", "--out", default="", help="file to write (default: the library's default path)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    r = Runner(a)
    colls = a.colls.split()
    for c in colls:
        if c not in COLLS:
            p.error(f"unknown collective {c}")
    for d in a.dtypes.split():
        if d not in DSIZE:
            p.error(f"unknown dtype {d}")
    ours = os.path.join(here, "..", "build", "src")
    nccl_dir = None if a.no_nccl else (a.nccl_lib or nvidia_nccl_dir(ours))

    key, path, names = None, None, {}
    for c in colls:
        if a.dry_run:
            names[c] = a.algos.split() or ["<every algorithm>"]
            continue
        k, pth, n, out = discover(r, c)
        if not k:
            sys.exit("tune: the library printed no topology line; is build/perf linked to a snapccl "
                     "with tuning support? Its output:\n" + out[-2000:])
        key, path = k, pth
        names[c] = [x for x in n if not a.algos or x in a.algos.split()]
        log(f"{c}: algorithms {', '.join(names[c])}; topology {key}")
    out_path = a.out or path
    if not a.dry_run and not out_path:
        sys.exit("tune: no default path (no HOME or XDG_CACHE_HOME): give -o FILE")

    rows = []  # (coll, dsize, mode, {call bytes: {name: us}})
    for c in colls:
        for d in a.dtypes.split():
            for mode in a.modes.split():
                table = {}
                for name in names[c]:
                    text = run(r.cmd(c, d, mode, a.b, a.e), r.env(algo=f"{COLLS[c]}:{name}"), a.dry_run, a.timeout)
                    for b, t in times(text, DSIZE[d], name).items():
                        table.setdefault(b, {})[name] = t
                if nccl_dir:
                    text = run(r.cmd(c, d, mode, a.b, a.e), r.env(nccl_dir=nccl_dir), a.dry_run, a.timeout)
                    got = times(text, DSIZE[d], None)
                    if not got and not a.dry_run:
                        log(f"NVIDIA's NCCL ran no {c} ({d}, {mode}) here (refused the layout?)")
                    for b, t in got.items():
                        table.setdefault(b, {})["nccl"] = t
                rows.append((COLLS[c], DSIZE[d], mode, table))
    if a.dry_run:
        return 0

    lines = ["snapccl-tuning 1",
             f"# perf/tune.py -n {a.ranks} --launch {a.launch} -b {a.b} -e {a.e}; out-of-place "
             "microseconds per algorithm; each row covers its measured size's octave of call bytes",
             f"topology {key}"]
    seen = set()
    for coll, dsize, mode, table in rows:
        if (coll, dsize, mode) in seen:
            continue  # two dtypes of one size: the first given is kept
        seen.add((coll, dsize, mode))
        sizes = sorted(b for b in table if table[b])
        for i, b in enumerate(sizes):
            lo = 0 if i == 0 else b
            hi = (sizes[i + 1] if i + 1 < len(sizes) else 2 * b) - 1
            t = table[b]
            win = min(t, key=lambda n: t[n])
            cells = " ".join(f"{n}={t[n]:.3f}" for n in sorted(t))
            lines.append(f"row {coll} {dsize} {mode} {lo} {hi} {win} {cells}")
    lines.append("end")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, out_path)  # readers see the old file or the whole new one
    log(f"wrote {out_path} ({len(lines) - 4} rows); topology {key}")
    print(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
