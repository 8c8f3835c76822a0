#!/usr/bin/env python3
"""What reading Python frames costs, against py-spy, on one busy CPython process.

Run as root: `python3 benches/python.py [--python PATH] [--duration 8] [--soak 600]
[--json out.json]`. It needs py-spy (`pip install py-spy`). Three parts, one after the
other, on the same machine in the same run:

1. In-kernel time per sample, and user-space CPU per sample, for a Python process 50
   frames deep (a recursion to depth 50, then a hot loop), recorded at 999 Hz with
   `--python` and with `--no-python`, alternating, twice each: the difference is what the
   Python walk adds. In-kernel time is the BPF program's run_time_ns / run_cnt
   (kernel.bpf_stats_enabled=1 for the run); user space is the profiler's CPU in the
   sampling window / samples.
2. The whole profiler's CPU at 99 Hz on that process (`record --pid`, start-up and
   symbolization included, plus its in-kernel time), against `py-spy record --rate 99`
   (its default, blocking mode) on the same process, one after the other: the ratio.
3. The caches on a process with many code objects (20000 generated functions called in
   turn) under the continuous profiler's API for `--soak` seconds (10 minutes by
   default): cached code objects, their bytes, and the profiler's RSS over time.

It prints its figures and never fails on them (the machines are noisy).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as oh  # noqa: E402 - its /proc readers and process bookkeeping

DEEP = textwrap.dedent("""
    import sys, time
    def hot(n):
        t = 0
        for i in range(n):
            t += i * i
        return t
    def down(depth):
        if depth <= 1:
            return hot(20000)
        return down(depth - 1)
    print("ready", flush=True)
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        down(50)
""")

MANY = textwrap.dedent("""
    import sys, time
    funcs = []
    for i in range(20000):
        ns = {}
        exec(f"def f{i}(n):\\n    t = 0\\n    for j in range(n):\\n        t += j\\n    return t\\n", ns)
        funcs.append(ns[f"f{i}"])
    print("ready", flush=True)
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        for f in funcs:
            f(50)
""")

# The soak's profiler: the public API in a process of its own; a line of figures every 30 s.
SOAK = textwrap.dedent("""
    import json, sys, time
    import ddprofiler
    pid, seconds = int(sys.argv[1]), float(sys.argv[2])
    with ddprofiler.Profiler(pids=[pid], frequency=99) as p:
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(30)
            prof = p.snapshot()
            rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
            s = prof.stats
            print(json.dumps({"t": round(time.monotonic() - t0), "rss_kib": rss,
                              "code_objects": s["python_code_objects"], "code_bytes": s["python_code_bytes"],
                              "python_samples": s["python_samples"], "samples": s.samples}), flush=True)
""")


def workload(python: str, source: str, tmp: Path, seconds: float) -> subprocess.Popen:
    script = tmp / "work.py"
    script.write_text(source)
    p = oh.spawn([python, str(script), str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert p.stdout is not None
    p.stdout.readline()  # "ready"
    return p


def run_record(pid: int, hz: int, seconds: float, python_frames: bool, tmp: Path) -> dict:
    out = tmp / "p.pprof"
    cmd = [sys.executable, "-m", "ddprofiler", "record", "--pid", str(pid), "--frequency", str(hz),
           "--duration", str(seconds), "-o", str(out), "--python" if python_frames else "--no-python"]

    def in_window(p, poll, polls):
        before = next((q["bpf"] for q in reversed(polls) if q["bpf"]), None)
        return poll["bpf"] is not None and (before is None or poll["bpf"][2] > before[2])

    with open(tmp / "err", "w") as err:
        p = oh.spawn(cmd, stdout=subprocess.DEVNULL, stderr=err)
        polls, ru, wall, _ = oh.monitor(p, in_window, set())
    text = (tmp / "err").read_text()
    inside = [q for q in polls if q["in"]]
    res = {"returncode": p.returncode, "cpu_total_s": ru.ru_utime + ru.ru_stime, "wall_s": wall,
           "peak_rss_mib": ru.ru_maxrss / 1024}
    if len(inside) >= 2:
        a, b = inside[0], inside[-1]
        runs = b["bpf"][2] - a["bpf"][2]
        res.update(bpf_ns_per_sample=(b["bpf"][1] - a["bpf"][1]) / max(1, runs), window_runs=runs,
                   user_us_per_sample=1e6 * (b["cpu"] - a["cpu"]) / max(1, runs))
        last = inside[-1]["bpf"]
        res["bpf_total_s"] = last[1] / 1e9
    m = re.search(r"samples: (\d+)", text)
    res["samples"] = int(m.group(1)) if m else 0
    m = re.search(r"python: (\d+) samples with Python frames", text)
    res["python_samples"] = int(m.group(1)) if m else 0
    return res


def run_pyspy(spy: str, pid: int, hz: int, seconds: float, tmp: Path) -> dict:
    cmd = [spy, "record", "--pid", str(pid), "--rate", str(hz), "--duration", str(round(seconds)),
           "--format", "raw", "--output", str(tmp / "spy.txt")]
    with open(tmp / "spy.err", "w") as err:
        p = oh.spawn(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    samples = 0
    if (tmp / "spy.txt").exists():
        samples = sum(int(line.rsplit(" ", 1)[1]) for line in (tmp / "spy.txt").read_text().splitlines() if line)
    return {"cpu_total_s": ru.ru_utime + ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024, "samples": samples,
            "returncode": p.returncode, "stderr": (tmp / "spy.err").read_text()[-300:]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.12.1/bin/python3.12"),
                    help="the CPython to profile (default: pyenv's 3.12)")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of each recording in part 1")
    ap.add_argument("--versus", type=float, default=30.0, help="seconds of each profiler in part 2")
    ap.add_argument("--soak", type=float, default=600.0, help="seconds of part 3 (0: skip it)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("python bench: run as root")
    spy = shutil.which("py-spy")
    if not spy:
        raise SystemExit("python bench: py-spy not found (pip install py-spy)")
    if not os.path.exists(args.python):
        raise SystemExit(f"python bench: {args.python} not found (--python)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-pybench-"))
    old = oh.BPF_STATS.read_text().strip()
    results: dict = {"python": args.python}
    try:
        oh.BPF_STATS.write_text("1")
        work = workload(args.python, DEEP, tmp, 100 + 6 * args.duration + 2 * args.versus)
        # 1. The walk's cost at 999 Hz, on and off, alternating.
        rows = {"on": [], "off": []}
        for _ in range(2):
            for mode in ("on", "off"):
                print(f"python bench: 999 Hz, Python frames {mode} ...", file=sys.stderr)
                rows[mode].append(run_record(work.pid, 999, args.duration, mode == "on", tmp))
        results["walk"] = rows
        # 2. CPU at 99 Hz against py-spy.
        print("python bench: 99 Hz, ddprofiler then py-spy ...", file=sys.stderr)
        ours = run_record(work.pid, 99, args.versus, True, tmp)
        theirs = run_pyspy(spy, work.pid, 99, args.versus, tmp)
        results["vs_pyspy"] = {"ddprofiler": ours, "py-spy": theirs}
        oh.kill(work)
        work.wait()
        # 3. The caches over a long run.
        if args.soak > 0:
            print(f"python bench: caches over {args.soak:.0f} s ...", file=sys.stderr)
            many = workload(args.python, MANY, tmp, args.soak + 60)
            soak = subprocess.run([sys.executable, "-c", SOAK, str(many.pid), str(args.soak)],
                                  capture_output=True, text=True, check=False)
            results["soak"] = [json.loads(line) for line in soak.stdout.splitlines() if line.startswith("{")]
            oh.kill(many)
            many.wait()
    except KeyboardInterrupt:
        print("python bench: interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(oh.CHILDREN):
            if p.returncode is None and p.poll() is None:
                oh.kill(p)
                p.wait()
        oh.BPF_STATS.write_text(old)
        shutil.rmtree(tmp, ignore_errors=True)

    def mean(rs, key):
        vals = [r[key] for r in rs if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else float("nan")

    on, off = results["walk"]["on"], results["walk"]["off"]
    print(f"\n== Python frames, {os.path.basename(args.python)}, 50 Python frames deep, 999 Hz ==")
    print(f"{'':44}{'--python':>12}{'--no-python':>13}{'added':>10}")
    for key, unit, scale in (("bpf_ns_per_sample", "in-kernel BPF time / sample (us)", 1e-3),
                             ("user_us_per_sample", "user-space CPU / sample, window (us)", 1)):
        a, b = mean(on, key) * scale, mean(off, key) * scale
        print(f"{unit:44}{a:12.2f}{b:13.2f}{a - b:10.2f}")
    print(f"{'samples with Python frames (%)':44}{100 * mean(on, 'python_samples') / max(1, mean(on, 'samples')):12.1f}"
          f"{100 * mean(off, 'python_samples') / max(1, mean(off, 'samples')):13.1f}")
    print(f"{'peak RSS (MiB)':44}{mean(on, 'peak_rss_mib'):12.1f}{mean(off, 'peak_rss_mib'):13.1f}")
    o, t = results["vs_pyspy"]["ddprofiler"], results["vs_pyspy"]["py-spy"]
    ours_cpu = o["cpu_total_s"] + o.get("bpf_total_s", 0)
    print(f"\n== 99 Hz for {args.versus:g} s on the same process: ddprofiler vs py-spy record (blocking) ==")
    print(f"{'':44}{'ddprofiler':>12}{'py-spy':>10}{'ratio':>8}")
    print(f"{'CPU, whole process + in-kernel (s)':44}{ours_cpu:12.3f}{t['cpu_total_s']:10.3f}"
          f"{ours_cpu / max(1e-9, t['cpu_total_s']):8.2f}")
    print(f"{'CPU per sample (us)':44}{1e6 * ours_cpu / max(1, o['samples']):12.1f}"
          f"{1e6 * t['cpu_total_s'] / max(1, t['samples']):10.1f}")
    print(f"{'samples':44}{o['samples']:12d}{t['samples']:10d}")
    print(f"{'peak RSS (MiB)':44}{o['peak_rss_mib']:12.1f}{t['peak_rss_mib']:10.1f}")
    if results.get("soak"):
        print(f"\n== caches: {os.path.basename(args.python)} with 20000 code objects, 99 Hz, the public API ==")
        print(f"{'t (s)':>8}{'RSS (MiB)':>12}{'code objects':>14}{'cache (KiB)':>13}{'py samples':>12}")
        for r in results["soak"]:
            print(f"{r['t']:8d}{r['rss_kib'] / 1024:12.1f}{r['code_objects']:14d}{r['code_bytes'] / 1024:13.0f}"
                  f"{r['python_samples']:12d}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
