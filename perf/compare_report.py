#!/usr/bin/env python3
"""compare.sh's report: parse the raw perf logs, write the CSVs, print the ratio tables
and draw the plot. Python 3 standard library only; the plot uses matplotlib when it is
importable, else gnuplot when it is on the PATH, else is skipped.

Log names (written by compare.sh):
  <collective>__<mode>__<library>__r<rep>.log   a perf binary's output
  host_overhead__<library>__r<rep>.log          host_overhead's output
"""

import argparse
import csv
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

LIBS = ("snapccl", "nccl")
PERF_LOG = re.compile(r"^(?P<coll>[a-z_]+)__(?P<mode>[a-z]+)__(?P<lib>[a-z]+)__r(?P<rep>\d+)\.log$")
HOST_LOG = re.compile(r"^host_overhead__(?P<lib>[a-z]+)__r(?P<rep>\d+)\.log$")
RESULT_FIELDS = ["library", "collective", "mode", "place", "rep", "size", "count", "type",
                 "redop", "time_us", "algbw", "busbw", "wrong"]
HOST_FIELDS = ["library", "rep", "collective", "size", "count", "type", "redop", "calls",
               "median_us", "p99_us", "mean_us", "min_us", "max_us"]


def number(text):
    """A table cell as float; 'N/A' (no check) as None."""
    if text == "N/A":
        return None
    return float(text)


def parse_perf_log(text):
    """Rows and summary of one nccl-tests-style log.

    A row: size count type redop root, then time algbw busbw #wrong for out-of-place
    and again for in-place (13 fields). Returns a dict with 'rows' (list of dicts with
    'size', 'count', 'type', 'redop', 'oop' and 'ip' = (time, algbw, busbw, wrong)),
    'algorithms' ({size: name} from '# snapccl algorithm:' lines), 'library',
    'errors' (the footer's out-of-bounds count or None) and 'avg_busbw'."""
    result = {"rows": [], "algorithms": {}, "library": None, "errors": None, "avg_busbw": None}
    for line in text.splitlines():
        if line.startswith("#"):
            m = re.match(r"^# snapccl algorithm: (.+) from (\d+) B\s*$", line)
            if m:
                result["algorithms"][int(m.group(2))] = m.group(1)
            m = re.match(r"^# library: (.*)$", line)
            if m:
                result["library"] = m.group(1).strip()
            m = re.match(r"^# Out of bounds values\s*:\s*(\d+)", line)
            if m:
                result["errors"] = int(m.group(1))
            m = re.match(r"^# Avg bus bandwidth\s*:\s*([0-9.eE+-]+|nan|inf)", line)
            if m:
                result["avg_busbw"] = float(m.group(1))
            continue
        fields = line.split()
        if len(fields) != 13:
            continue  # error messages and other chatter
        try:
            size, count = int(fields[0]), int(fields[1])
            oop = tuple(number(x) for x in fields[5:9])
            ip = tuple(number(x) for x in fields[9:13])
        except ValueError:
            continue
        result["rows"].append({"size": size, "count": count, "type": fields[2],
                               "redop": fields[3], "oop": oop, "ip": ip})
    return result


def algorithm_at(algorithms, size):
    """The algorithm in force at size: the last change at or below it."""
    name = ""
    for start in sorted(algorithms):
        if start <= size:
            name = algorithms[start]
    return name


def parse_host_log(text):
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 11:
            continue
        try:
            rows.append({"collective": f[0], "size": int(f[1]), "count": int(f[2]), "type": f[3],
                         "redop": f[4], "calls": int(f[5]), "median_us": float(f[6]),
                         "p99_us": float(f[7]), "mean_us": float(f[8]), "min_us": float(f[9]),
                         "max_us": float(f[10])})
        except ValueError:
            continue
    return rows


def load(raw):
    """All rows from raw/: (results, host rows, per-log notes)."""
    results, host, notes = [], [], []
    algorithms = {}
    for name in sorted(os.listdir(raw)):
        path = os.path.join(raw, name)
        m = PERF_LOG.match(name)
        h = HOST_LOG.match(name)
        if not m and not h:
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        if h:
            rows = parse_host_log(text)
            if not rows:
                notes.append(f"{name}: no host_overhead rows (failed run?)")
            for r in rows:
                host.append(dict(r, library=h.group("lib"), rep=int(h.group("rep"))))
            continue
        log = parse_perf_log(text)
        coll, mode, lib, rep = m.group("coll"), m.group("mode"), m.group("lib"), int(m.group("rep"))
        if not log["rows"]:
            notes.append(f"{name}: no result rows (failed run?)")
        elif log["errors"] is None:
            notes.append(f"{name}: no footer (run cut short?)")
        elif log["errors"]:
            notes.append(f"{name}: {log['errors']} check(s) with wrong elements")
        if lib == "snapccl" and log["algorithms"]:
            algorithms[(coll, mode)] = log["algorithms"]
        for r in log["rows"]:
            for place in ("oop", "ip"):
                t, alg, bus, wrong = r[place]
                results.append({"library": lib, "collective": coll, "mode": mode, "place": place,
                                "rep": rep, "size": r["size"], "count": r["count"],
                                "type": r["type"], "redop": r["redop"], "time_us": t,
                                "algbw": alg, "busbw": bus, "wrong": wrong})
    return results, host, notes, algorithms


def write_csv(path, fields, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("N/A" if r.get(k) is None else r.get(k)) for k in fields})


def median_by(rows, key_fields, value):
    """{key: median of value} over rows (the repetitions)."""
    groups = {}
    for r in rows:
        if r.get(value) is None:
            continue
        groups.setdefault(tuple(r[k] for k in key_fields), []).append(r[value])
    return {k: statistics.median(v) for k, v in groups.items()}


def ratio_rows(results, algorithms):
    """Per collective, mode, size and place: median times and NCCL/snapccl."""
    med = median_by(results, ("library", "collective", "mode", "place", "size", "type", "redop"),
                    "time_us")
    keys = sorted({k[1:] for k in med}, key=lambda k: (k[0], k[1], k[4], k[5], k[2], k[3]))
    rows = []
    for coll, mode, place, size, typ, redop in keys:
        ours = med.get(("snapccl", coll, mode, place, size, typ, redop))
        theirs = med.get(("nccl", coll, mode, place, size, typ, redop))
        ratio = theirs / ours if ours and theirs else None
        rows.append({"collective": coll, "mode": mode, "place": place, "size": size, "type": typ,
                     "redop": redop, "snapccl_us": ours, "nccl_us": theirs, "ratio": ratio,
                     "algorithm": algorithm_at(algorithms.get((coll, mode), {}), size)})
    return rows


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def geomean(values):
    values = [v for v in values if v and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def ratio_table(rows):
    """Text tables: one per (collective, mode, type, redop), out-of-place and in-place."""
    out = []
    groups = {}
    for r in rows:
        groups.setdefault((r["collective"], r["mode"], r["type"], r["redop"]), {}) \
            .setdefault(r["size"], {})[r["place"]] = r
    for (coll, mode, typ, redop), by_size in groups.items():
        out.append(f"# {coll} ({mode}, {typ}, {redop}): ratio = NCCL time / snapccl time, "
                   f"> 1 means snapccl is faster")
        out.append(f"# {'size(B)':>12} {'snapccl_us':>11} {'nccl_us':>11} {'ratio':>7} "
                   f"{'ip_snap_us':>11} {'ip_nccl_us':>11} {'ip_ratio':>8}  algorithm")
        oop_ratios, ip_ratios = [], []
        for size in sorted(by_size):
            o = by_size[size].get("oop", {})
            i = by_size[size].get("ip", {})
            oop_ratios.append(o.get("ratio"))
            ip_ratios.append(i.get("ratio"))
            out.append(f"  {size:>12} {fmt(o.get('snapccl_us'), '11.2f')} "
                       f"{fmt(o.get('nccl_us'), '11.2f')} {fmt(o.get('ratio'), '7.3f')} "
                       f"{fmt(i.get('snapccl_us'), '11.2f')} {fmt(i.get('nccl_us'), '11.2f')} "
                       f"{fmt(i.get('ratio'), '8.3f')}  {o.get('algorithm') or ''}")
        faster = sum(1 for x in oop_ratios if x and x > 1)
        known = sum(1 for x in oop_ratios if x)
        out.append(f"# geometric mean ratio: out-of-place {fmt(geomean(oop_ratios), '.3f')}, "
                   f"in-place {fmt(geomean(ip_ratios), '.3f')}; snapccl faster at {faster} "
                   f"of {known} sizes (out-of-place)")
        out.append("")
    return "\n".join(out)


def host_table(host):
    med = median_by(host, ("library", "collective", "size"), "median_us")
    p99 = median_by(host, ("library", "collective", "size"), "p99_us")
    keys = sorted({k[1:] for k in med})
    lines = ["# host_overhead: median host time per call (median over repetitions); "
             "ratio = NCCL / snapccl, > 1 means snapccl is cheaper",
             f"# {'collective':>13} {'size(B)':>9} {'snap_med':>9} {'nccl_med':>9} {'ratio':>7} "
             f"{'snap_p99':>9} {'nccl_p99':>9}"]
    for coll, size in keys:
        a, b = med.get(("snapccl", coll, size)), med.get(("nccl", coll, size))
        lines.append(f"  {coll:>13} {size:>9} {fmt(a, '9.3f')} {fmt(b, '9.3f')} "
                     f"{fmt(b / a if a and b else None, '7.3f')} "
                     f"{fmt(p99.get(('snapccl', coll, size)), '9.3f')} "
                     f"{fmt(p99.get(('nccl', coll, size)), '9.3f')}")
    return "\n".join(lines) + "\n"


def plot_series(results):
    """{collective: {(library, mode): [(size, time_us, bw)]}} of out-of-place medians,
    and whether bw is bus bandwidth (False: algbw, every busbw being 0 at world size 1).

    Bandwidth is recomputed from size and time (the logs round it to 2 decimals, which
    flattens small sizes to 0): algbw = size / time for all three collectives (the size
    column is the whole buffer), busbw = algbw times the collective's factor, read off the
    logged busbw/algbw of the larger sizes."""
    use_bus = any((r["busbw"] or 0) > 0 for r in results)
    oop = [r for r in results if r["place"] == "oop"]
    factors = {}
    for r in oop:
        if use_bus and r["algbw"] and r["algbw"] >= 1 and r["busbw"]:
            factors.setdefault(r["collective"], []).append(r["busbw"] / r["algbw"])
    t = median_by(oop, ("collective", "library", "mode", "size"), "time_us")
    series = {}
    for (coll, lib, mode, size), time_us in t.items():
        factor = statistics.median(factors[coll]) if use_bus and coll in factors else 1.0
        bw = size / (time_us * 1e3) * factor if time_us and time_us > 0 else None
        series.setdefault(coll, {}).setdefault((lib, mode), []).append((size, time_us, bw))
    for coll in series:
        for key in series[coll]:
            series[coll][key].sort()
    return series, use_bus


def plot_matplotlib(series, use_bus, png):
    import matplotlib  # noqa: PLC0415 (optional dependency)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    colls = sorted(series)
    fig, axes = plt.subplots(len(colls), 2, figsize=(13, 4.2 * len(colls)), squeeze=False)
    styles = {("snapccl", "eager"): ("tab:blue", "-"), ("snapccl", "graph"): ("tab:blue", "--"),
              ("nccl", "eager"): ("tab:orange", "-"), ("nccl", "graph"): ("tab:orange", "--")}
    for row, coll in enumerate(colls):
        for (lib, mode), pts in sorted(series[coll].items()):
            color, ls = styles.get((lib, mode), (None, ":"))
            bw = [(p[0], p[2]) for p in pts if p[0] > 0 and p[2] and p[2] > 0]
            tm = [(p[0], p[1]) for p in pts if p[0] > 0 and p[1] and p[1] > 0]
            label = f"{lib} {mode}"
            if bw:
                axes[row][0].plot([x for x, _ in bw], [y for _, y in bw], ls, color=color,
                                  marker=".", label=label)
            if tm:
                axes[row][1].plot([x for x, _ in tm], [y for _, y in tm], ls, color=color,
                                  marker=".", label=label)
        for col, ylabel in ((0, ("bus" if use_bus else "alg") + " bandwidth (GB/s)"),
                            (1, "time (us)")):
            ax = axes[row][col]
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("size (B)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{coll}: {ylabel.split(' (')[0]}")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
    if not use_bus:
        fig.suptitle("world size 1: bus bandwidth is 0 by definition; algbw shown "
                     "(call overhead and local copies, not links)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def plot_gnuplot(series, use_bus, png, workdir):
    os.makedirs(workdir, exist_ok=True)
    colls = sorted(series)
    script = [f"set terminal pngcairo size 1300,{max(420, 420 * len(colls))} noenhanced",
              f"set output '{png}'",
              f"set multiplot layout {len(colls)},2",
              "set logscale x 2", "set logscale y", "set format x '%.0b%B'", "set grid",
              "set key left top", "set xlabel 'size (B)'"]
    if not use_bus:
        script.insert(3, "set label 1 'world size 1: busbw is 0 by definition, algbw shown' "
                         "at screen 0.5,0.995 center")
    colors = {"snapccl": "#1f77b4", "nccl": "#ff7f0e"}
    for coll in colls:
        keys = sorted(series[coll])
        for key in keys:
            lib, mode = key
            with open(os.path.join(workdir, f"{coll}__{mode}__{lib}.dat"), "w") as f:
                for size, t, b in series[coll][key]:
                    if size > 0:
                        f.write(f"{size} {t if t and t > 0 else 'NaN'} "
                                f"{b if b and b > 0 else 'NaN'}\n")
        for col, ylabel in ((3, ("bus" if use_bus else "alg") + " bandwidth (GB/s)"),
                            (2, "time (us)")):
            script.append(f"set ylabel '{ylabel}'")
            script.append(f"set title '{coll}: {ylabel.split(' (')[0]}'")
            parts = []
            for lib, mode in keys:
                dat = os.path.join(workdir, f"{coll}__{mode}__{lib}.dat")
                dash = "dt 1" if mode == "eager" else "dt 2"
                parts.append(f"'{dat}' using 1:{col} with linespoints lc rgb '{colors.get(lib, 'black')}' "
                             f"{dash} pt 7 ps 0.5 title '{lib} {mode}'")
            script.append("plot " + ", \\\n  ".join(parts))
    script.append("unset multiplot")
    gp = os.path.join(workdir, "compare.gp")
    with open(gp, "w") as f:
        f.write("\n".join(script) + "\n")
    subprocess.run(["gnuplot", gp], check=True, capture_output=True, text=True)


def plot(results, out):
    """Draws out/compare.png; returns a sentence saying how (or why not)."""
    series, use_bus = plot_series(results)
    if not series:
        return "plot: no data"
    png = os.path.join(out, "compare.png")
    try:
        plot_matplotlib(series, use_bus, png)
        return f"plot: {png} (matplotlib)"
    except ImportError:
        pass
    if shutil.which("gnuplot"):
        try:
            plot_gnuplot(series, use_bus, png, os.path.join(out, "plot"))
            return f"plot: {png} (gnuplot)"
        except subprocess.CalledProcessError as e:
            return f"plot: gnuplot failed: {e.stderr.strip()}"
    return "plot: skipped (neither matplotlib nor gnuplot is available)"


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, help="directory of raw logs")
    ap.add_argument("--out", required=True, help="where the CSVs, tables and plot go")
    ap.add_argument("--no-plot", action="store_true")
    a = ap.parse_args(argv)
    results, host, notes, algorithms = load(a.raw)
    os.makedirs(a.out, exist_ok=True)
    write_csv(os.path.join(a.out, "results.csv"), RESULT_FIELDS, results)
    rows = ratio_rows(results, algorithms)
    write_csv(os.path.join(a.out, "ratios.csv"),
              ["collective", "mode", "place", "size", "type", "redop", "snapccl_us", "nccl_us",
               "ratio", "algorithm"], rows)
    text = ratio_table(rows)
    if host:
        write_csv(os.path.join(a.out, "host_overhead.csv"), HOST_FIELDS, host)
        text += "\n" + host_table(host)
    with open(os.path.join(a.out, "ratios.txt"), "w") as f:
        f.write(text)
    print(text)
    bad = [r for r in results if r["wrong"]]
    if bad:
        print(f"WARNING: {len(bad)} result(s) with wrong elements; see results.csv (column wrong)")
    for n in notes:
        print(f"note: {n}")
    if not a.no_plot:
        print(plot(results, a.out))
    print(f"results: {os.path.join(a.out, 'results.csv')} ({len(results)} rows)")
    return 1 if (bad or not results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
