#!/usr/bin/env python3
"""A stand-in perf binary for test_tune.sh: prints the perf binaries' table with times
made up per algorithm (nothing here was measured), and at SNAPCCL_DEBUG=INFO the
library's init lines that perf/tune.py reads. Linked as all_reduce_perf etc."""
import os
import sys

coll = os.path.basename(sys.argv[0]).replace("_perf", "")
args = sys.argv[1:]
val = lambda flag, d: args[args.index(flag) + 1] if flag in args else d
size = lambda s: int(s[:-1]) << {"K": 10, "M": 20, "G": 30}[s[-1]] if s[-1] in "KMG" else int(s)
lo, hi = size(val("-b", "8")), size(val("-e", "8"))
graph = "-G" in args
key = {"all_reduce": "allreduce", "all_gather": "allgather", "reduce_scatter": "reducescatter"}[coll]
nvidia = os.environ.get("LD_LIBRARY_PATH", "").split(":")[0].endswith("/nv")
forced = os.environ.get("SNAPCCL_ALGO", "")
name = forced.split(":", 1)[1] if forced.startswith(key + ":") else None

if os.environ.get("SNAPCCL_DEBUG") == "INFO" and not nvidia:
    home = os.environ.get("TUNE_STUB_HOME", "/nonexistent")
    topo = "topology gpu=STUB link=shared gpus=1 world=2 per_gpu=2 procs=1"
    if os.path.exists(f"{home}/tuning-00.txt"):
        print(f"host:1:1 [0] SNAPCCL INFO comm rank 0: tuning file {home}/tuning-00.txt (3 rows, hash 00) "
              f"decides where it covers a call; {topo}")
    else:
        print(f"host:1:1 [0] SNAPCCL INFO comm rank 0: no tuning file used (looked for {home}/tuning-00.txt); "
              f"the cost model decides; {topo}")
    print(f"host:1:1 [0] SNAPCCL INFO comm 0x1 selection: {key:<13} algorithms: lamport oneshot twoshot "
          "lowprec(opt-in) oneshot_twin(named-only)")
# Made-up times: Lamport fastest small but refuses above 64 KiB, one-shot next, two-shot
# for large sizes, NVIDIA's NCCL in between; graphs 2 us faster. One-shot's check fails
# at 512 B (its time there must not count).
model = {"lamport": (3, 1e-3), "oneshot": (4, 5e-4), "twoshot": (20, 1e-5), None: (12, 2e-5)}
base, per_byte = model[None] if nvidia else model.get(name, (50, 1e-3))
print("# snapccl perf (stub)")
print("# library: stub")
s = lo
while s <= hi:
    if name == "lamport" and s > 65536:
        print("# snapccl algorithm: unavailable (ncclInvalidUsage: too large) from %d B" % s)
        break
    if name and not nvidia and s == lo:
        print(f"# snapccl algorithm: {name} from {s} B")
    t = base + per_byte * s - (2 if graph else 0)
    wrong = 1 if name == "oneshot" and s == 512 else 0
    count = s // 4 // (2 if key != "allreduce" else 1)
    print(f"{s:12d}  {count:12d}     float     sum      -1  {t:7.2f}    0.00    0.00  {wrong:6d}  "
          f"{t:7.2f}    0.00    0.00  {wrong:6d}")
    s *= 2
print("# Out of bounds values : 0 OK")
