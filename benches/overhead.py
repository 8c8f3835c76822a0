#!/usr/bin/env python3
"""Overhead of ddprofiler against `perf record --call-graph dwarf`, on a busy machine.

Run as root: `python3 benches/overhead.py [--duration 10] [--frequencies 99,999]
[--stack-bytes 16384] [--workload c|go] [--json out.json]`. It compiles a C workload with a real call chain
(tests/workloads/chain.c, -O2 -fomit-frame-pointer), keeps one copy busy on every CPU, and
for each frequency runs, one after the other on the same load:

- ddprofiler as a separate process (`python -m ddprofiler record`, or a tiny runner on
  `ddprofiler.Profiler` when the CLI does not work), polled every 0.1 s through /proc/PID/stat (CPU),
  /proc/PID/status (VmHWM) and the fdinfo of its BPF program (run_time_ns, run_cnt, with
  kernel.bpf_stats_enabled=1 for the run, restored afterwards);
- `perf record --call-graph dwarf -F HZ -a -- sleep DURATION`, then `perf report --stdio`.

It prints one table per frequency (ours, perf, ratio) and writes the same figures as JSON
with --json. It never asserts on timings: the machines are noisy. Every process it starts
is killed on the way out, Ctrl-C included. README.md next to this file says what each
figure means.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
POLL_S = 0.1
CHILDREN: list = []  # every process we start; killed in main()'s finally
TARGET_US, TARGET_RSS_MIB = 20.0, 64.0
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")

# Used when `python -m ddprofiler record` does not work: same summary lines on stderr.
RUNNER = r"""
import json, os, sys, time
import ddprofiler
freq, duration, stack = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
with ddprofiler.Profiler(frequency=freq, stack_bytes=stack) as p:
    time.sleep(duration); p.stop()
    profile = p.snapshot()  # its stats are final: taken after the last drain
own = sum(s.count for s in profile.samples if s.pid == os.getpid())
print(f"samples: {profile.stats.samples}\nlost: {profile.stats.lost}\nself: {own}", file=sys.stderr)
print("stats: " + json.dumps(dict(profile.stats)), file=sys.stderr)
"""


def spawn(cmd, **kw) -> subprocess.Popen:
    p = subprocess.Popen(cmd, **kw)
    CHILDREN.append(p)
    return p


def kill(p: subprocess.Popen) -> None:
    """SIGKILL p, and its process group when it leads one (perf report's addr2line helpers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()


def read(path: str):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def stat_fields(pid) -> list:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]; [] when gone."""
    text = read(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split() if text else []


def reap_group(pgid: int) -> None:
    """Kill what is left of process group pgid and reap those that were reparented to us."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if stat_fields(pid)[2:3] == [str(pgid)]:
            with contextlib.suppress(ChildProcessError):  # not ours
                os.waitpid(int(pid), 0)


def proc_cpu(pid: int):
    """utime + stime of the whole process (all threads), in seconds; None when gone."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else None


def vm_hwm_kib(pid: int):
    status = read(f"/proc/{pid}/status") or ""
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)


def bpf_prog_counters(pid: int):
    """(prog ids, run_time_ns, run_cnt) summed over the process's BPF program fds, or None."""
    ids, ns, cnt = [], 0, 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-prog":
                continue
        except OSError:
            continue
        text = read(f"/proc/{pid}/fdinfo/{fd}") or ""
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if not info:
            continue
        ids.append(int(info.get("prog_id", -1)))
        ns += int(info.get("run_time_ns", 0))
        cnt += int(info.get("run_cnt", 0))
    return (sorted(set(ids)), ns, cnt) if ids else None


def other_profilers() -> set:
    """Profilers not started by us (other sessions' `perf record`, ddprofiler...)."""
    found, mine = set(), {c.pid for c in CHILDREN}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = (read(f"/proc/{pid}/cmdline") or "").split("\0") if int(pid) not in mine else [""]
        line = " ".join(argv).strip()
        if "--help" not in argv and ((os.path.basename(argv[0]) == "perf" and "record" in argv)
                                     or "ddprofiler record" in line or "py-spy" in line):
            found.add(f"{pid}: {line[:100]}")
    return found


def monitor(p: subprocess.Popen, in_window, foreign: set, timeout=float("inf")):
    """Poll p until it exits (killed after timeout s). Returns (polls, rusage, wall_s, timed_out)."""
    t0, polls, next_scan = time.monotonic(), [], 0.0
    while True:
        now = time.monotonic() - t0
        if now > timeout:
            kill(p)
        wpid, status, ru = os.wait4(p.pid, os.WNOHANG if now <= timeout else 0)
        if wpid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return polls, ru, time.monotonic() - t0, now > timeout
        poll = {"t": now, "cpu": proc_cpu(p.pid), "hwm": vm_hwm_kib(p.pid), "bpf": bpf_prog_counters(p.pid)}
        if poll["cpu"] is not None:
            poll["in"] = in_window(p, poll, polls)
            polls.append(poll)
        if now >= next_scan:
            foreign |= other_profilers()
            next_scan = now + 1.0
        time.sleep(POLL_S)


def window(polls, ru):
    """CPU before, during and after the sampling window, from the polls and the final rusage."""
    inside = [q for q in polls if q["in"]]
    total = ru.ru_utime + ru.ru_stime
    if not inside:
        return {"cpu_total_s": total, "peak_rss_mib": ru.ru_maxrss / 1024}
    first, last = inside[0], inside[-1]
    return {
        "window_s": last["t"] - first["t"],
        "cpu_startup_s": first["cpu"],
        "cpu_window_s": last["cpu"] - first["cpu"],
        "cpu_after_s": max(0.0, total - last["cpu"]),
        "cpu_total_s": total,
        "peak_rss_window_mib": (last["hwm"] or 0) / 1024,
        "peak_rss_mib": ru.ru_maxrss / 1024,
        "bpf_runs_window": last["bpf"][2] - first["bpf"][2] if first.get("bpf") and last.get("bpf") else None,
    }


def run_ours(freq, args, tmp, use_cli, workers, foreign) -> dict:
    """ddprofiler as a separate process; its CPU, RSS, BPF counters and summary."""
    out, err = tmp / f"ours-{freq}.pprof", tmp / f"ours-{freq}.err"
    if use_cli:
        cmd = [sys.executable, "-m", "ddprofiler", "record", "--duration", str(args.duration),
               "--frequency", str(freq), "--stack-bytes", str(args.stack_bytes), "-o", str(out)]
    else:
        cmd = [sys.executable, "-c", RUNNER, str(freq), str(args.duration), str(args.stack_bytes)]

    def in_window(p, poll, polls):  # the program is attached and still counting
        if poll["bpf"] is None:
            return False
        before = next((q["bpf"] for q in reversed(polls) if q["bpf"]), None)
        return before is None or poll["bpf"][2] == 0 or poll["bpf"][2] > before[2]

    with open(err, "w") as ferr:
        p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=ferr, cwd=tmp)
        polls, ru, wall, _ = monitor(p, in_window, foreign)
    text = err.read_text()
    res = {"returncode": p.returncode, "wall_s": wall, **window(polls, ru), "summary": text.strip()}
    for key in ("samples", "lost", "self"):
        m = re.search(rf"^\s*{key}: (\d+)", text, re.MULTILINE)
        res[key] = int(m.group(1)) if m else None
    if res["self"] is not None and res["samples"]:  # the runner counts its own samples
        res["self_pct"] = 100.0 * res["self"] / res["samples"]
    if m := re.search(r"^stats: (.*)$", text, re.MULTILINE):
        res["stats"] = json.loads(m.group(1))
    with_bpf = [q["bpf"] for q in polls if q["bpf"]]
    if with_bpf:
        res["bpf_prog_ids"], res["bpf_run_time_ns"], res["bpf_run_cnt"] = with_bpf[-1]
    if use_cli and out.exists():
        res["output_mib"] = out.stat().st_size / 2**20
        res.update(profile_shares(out, p.pid, workers))
    return res


def profile_shares(path, own_pid, workers) -> dict:
    """How much of our own profile is the profiler itself, and how much is the workload."""
    try:
        from ddprofiler import read_pprof, stacks
        rows = stacks(read_pprof(path))
    except Exception as e:  # noqa: BLE001 -- a figure, not a test: report it and go on
        return {"profile_read_error": str(e)}
    total, by_name = sum(s.count for s in rows) or 1, collections.Counter()
    for s in rows:
        by_name[s.process_name or "?"] += s.count
    return {
        "top_processes_pct": {name: round(100.0 * n / total, 1) for name, n in by_name.most_common(6)},
        "self_pct": 100.0 * sum(s.count for s in rows if s.pid == own_pid) / total,
        "workload_pct": 100.0 * sum(s.count for s in rows if s.pid in workers) / total,
    }


def run_perf(freq, args, tmp, foreign) -> dict:
    """perf record on the whole machine, then perf report on what it wrote."""
    data, err = tmp / f"perf-{freq}.data", tmp / f"perf-{freq}.err"
    graph = f"dwarf,{args.perf_dwarf_bytes}" if args.perf_dwarf_bytes else "dwarf"
    if args.workload == "go" and not args.perf_dwarf_bytes:
        graph = "fp"  # Go keeps frame pointers: what a Go user would ask perf for
    cmd = ["perf", "record", "--call-graph", graph, "-F", str(freq), "-a", "-o", str(data),
           "--", "sleep", str(args.duration)]

    def in_window(p, poll, polls):  # perf's `sleep` child is still alive
        return bool((read(f"/proc/{p.pid}/task/{p.pid}/children") or "").split())

    with open(err, "w") as ferr:
        p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=ferr)
        polls, ru, wall, _ = monitor(p, in_window, foreign)
    text = err.read_text()
    res = {"returncode": p.returncode, "wall_s": wall, **window(polls, ru), "summary": text.strip()}
    m = re.search(r"\((\d+) samples\)", text)
    res["samples"] = int(m.group(1)) if m else None
    m = re.search(r"lost (\d+) chunks", text)
    res["lost_chunks"] = int(m.group(1)) if m else 0
    if data.exists():
        res["output_mib"] = data.stat().st_size / 2**20
        # perf report runs addr2line helpers: give it its own group, and (we are a subreaper)
        # reap whatever it leaves so that RUSAGE_CHILDREN counts their CPU too.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(tmp / f"perf-report-{freq}.err", "w") as ferr:
            r = spawn(["perf", "report", "--stdio", "-i", str(data)], stdout=subprocess.DEVNULL,
                      stderr=ferr, start_new_session=True)
            _, rru, res["report_wall_s"], res["report_timed_out"] = monitor(
                r, lambda *_: False, foreign, args.report_timeout)
        reap_group(r.pid)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        res["report_returncode"] = r.returncode
        res["report_cpu_s"] = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        res["report_peak_rss_mib"] = rru.ru_maxrss / 1024
        data.unlink()  # hundreds of MiB at 999 Hz
    return res


def derive(freq, duration, ours, perf) -> dict:
    expected = freq * NCPU * duration
    d = {"expected_samples": expected}
    if ours.get("bpf_run_cnt"):
        d["ours_bpf_us_per_sample"] = ours["bpf_run_time_ns"] / ours["bpf_run_cnt"] / 1e3
    for name, r in (("ours", ours), ("perf", perf)):
        # samples taken inside the window: BPF runs counted there, else the pro rata share
        n = r.get("bpf_runs_window") or (r.get("samples") or 0) * r.get("window_s", 0) / duration
        if n and "cpu_window_s" in r:
            d[f"{name}_user_us_per_sample"] = r["cpu_window_s"] / n * 1e6
    if ours.get("samples") and "cpu_startup_s" in ours:
        d["ours_all_in_user_us_per_sample"] = (ours["cpu_total_s"] - ours["cpu_startup_s"]) / ours["samples"] * 1e6
    if "ours_bpf_us_per_sample" in d and "ours_user_us_per_sample" in d:
        d["ours_total_us_per_sample"] = d["ours_bpf_us_per_sample"] + d["ours_user_us_per_sample"]
    for name, r in (("ours", ours), ("perf", perf)):
        if r.get("window_s"):
            d[f"{name}_cpu_pct_recording"] = 100.0 * r["cpu_window_s"] / r["window_s"]
    return d


def print_table(freq, ours, perf, d, stack_bytes, workload="c"):
    rows = [
        ("samples received", ours.get("samples"), perf.get("samples"), "d"),
        (f"samples expected ({freq} Hz x {NCPU} CPU x s)", d["expected_samples"], d["expected_samples"], ".0f"),
        ("lost samples (perf: lost chunks)", ours.get("lost"), perf.get("lost_chunks"), "d"),
        ("BPF program runs (run_cnt, <= 0.1 s before stop)", ours.get("bpf_run_cnt"), None, "d"),
        ("in-kernel BPF time / sample (us)", d.get("ours_bpf_us_per_sample"), None, ".2f"),
        ("user-space CPU / sample, window (us)", d.get("ours_user_us_per_sample"),
         d.get("perf_user_us_per_sample"), ".2f"),
        ("user-space CPU / sample, all but start-up (us)", d.get("ours_all_in_user_us_per_sample"), None, ".2f"),
        (f"total cost / sample (us; target <= {TARGET_US:.0f})", d.get("ours_total_us_per_sample"), None, ".2f"),
        ("CPU while recording (% of one CPU)", d.get("ours_cpu_pct_recording"), d.get("perf_cpu_pct_recording"), ".2f"),
        ("CPU while recording (s)", ours.get("cpu_window_s"), perf.get("cpu_window_s"), ".2f"),
        ("CPU start-up, before sampling (s)", ours.get("cpu_startup_s"), perf.get("cpu_startup_s"), ".2f"),
        ("CPU after sampling: stop, symbolize, write (s)", ours.get("cpu_after_s"), perf.get("cpu_after_s"), ".2f"),
        ("CPU whole process (s)", ours.get("cpu_total_s"), perf.get("cpu_total_s"), ".2f"),
        ("wall whole process (s)", ours.get("wall_s"), perf.get("wall_s"), ".2f"),
        (f"peak RSS (MiB; target <= {TARGET_RSS_MIB:.0f})", ours.get("peak_rss_mib"), perf.get("peak_rss_mib"), ".1f"),
        ("peak RSS while sampling (MiB; VmHWM)", ours.get("peak_rss_window_mib"),
         perf.get("peak_rss_window_mib"), ".1f"),
        ("output size (MiB)", ours.get("output_mib"), perf.get("output_mib"), ".2f"),
        ("post-processing wall (s; perf report)" + (" TIMED OUT" if perf.get("report_timed_out") else ""),
         0.0, perf.get("report_wall_s"), ".2f"),
        ("post-processing CPU (s; perf report)", 0.0, perf.get("report_cpu_s"), ".2f"),
        ("record CPU + post-processing CPU (s)", ours.get("cpu_total_s"),
         (perf.get("cpu_total_s") or 0) + (perf.get("report_cpu_s") or 0), ".2f"),
        ("profiler's own samples in its profile (%)", ours.get("self_pct"), None, ".2f"),
        ("workload samples in the profile (%)", ours.get("workload_pct"), None, ".2f"),
    ]
    print(f"\n== {freq} Hz, {NCPU} busy CPUs ({workload} workload), ddprofiler {stack_bytes} B stacks ==")
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}}  {'ddprofiler':>11} {'perf':>11} {'ours/perf':>10}")
    fmt = lambda v, spec: "-" if v is None else f"{v:{spec}}"
    ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"
    for label, a, b, spec in rows:
        print(f"{label:{w}}  {fmt(a, spec):>11} {fmt(b, spec):>11} {ratio(a, b):>10}")
    if ours.get("top_processes_pct"):
        print("processes in ddprofiler's profile (%): "
              + ", ".join(f"{k} {v}" for k, v in ours["top_processes_pct"].items()))


def start_workloads(tmp: Path, kind: str = "c") -> set:
    """Build the workload and start one busy copy per CPU; their pids. c: the chain
    workload (-O2 -fomit-frame-pointer); go: tests/workloads/gowork, stripped, allocating
    (its garbage collector runs on system stacks, the frame-pointer chain's case)."""
    if kind == "go":
        exe = tmp / "gowork"
        go = shutil.which("go") or "/usr/local/go/bin/go"
        subprocess.run([go, "build", "-ldflags=-s -w", "-o", str(exe), "."], check=True,
                       cwd=ROOT / "tests" / "workloads" / "gowork",
                       env={**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"})
        argv = [str(exe), "100000", "alloc"]
    else:
        src, exe = ROOT / "tests" / "workloads" / "chain.c", tmp / "chain"
        subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-o", str(exe), str(src)], check=True)
        argv = [str(exe), "100000"]
    procs = [spawn(argv, stdout=subprocess.PIPE, text=True) for _ in range(NCPU)]
    if any(p.stdout.readline().strip() != "ready" for p in procs):
        raise SystemExit("overhead: the workload did not start")
    return {p.pid for p in procs}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per recording (default 10)")
    ap.add_argument("--frequencies", default="99,999", help="comma-separated Hz (default 99,999)")
    ap.add_argument("--stack-bytes", type=int, default=16384, help="ddprofiler stack copy (default 16384)")
    ap.add_argument("--perf-dwarf-bytes", type=int, default=0,
                    help="perf --call-graph dwarf,N stack size (default: perf's own, 8192)")
    ap.add_argument("--report-timeout", type=float, default=45.0,
                    help="give up on `perf report` after this many seconds (default 45)")
    ap.add_argument("--workload", choices=("c", "go"), default="c",
                    help="c: chain.c without frame pointers (default); go: an allocating Go program"
                         " (perf then uses --call-graph fp)")
    ap.add_argument("--runner", action="store_true", help="use the ddprofiler.Profiler runner even if the CLI works")
    ap.add_argument("--json", help="also write the figures to this file")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    freqs = [int(f) for f in args.frequencies.split(",") if f.strip()]
    if os.geteuid() != 0:
        raise SystemExit("overhead: run as root (BPF, perf -a, kernel.bpf_stats_enabled)")
    for tool in ("gcc", "perf"):
        if not shutil.which(tool):
            raise SystemExit(f"overhead: {tool} not found")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: see run_perf
    use_cli = not args.runner and subprocess.run([sys.executable, "-m", "ddprofiler", "record", "--help"],
                             check=False, capture_output=True).returncode == 0
    results, foreign, old_stats = {}, set(), None
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-overhead-"))
    try:
        old_stats = BPF_STATS.read_text().strip()
        BPF_STATS.write_text("1")
        worker_pids = start_workloads(tmp, args.workload)
        time.sleep(0.5)
        for freq in freqs:
            print(f"overhead: {freq} Hz: ddprofiler ({'CLI' if use_cli else 'runner'}) ...", file=sys.stderr)
            ours = run_ours(freq, args, tmp, use_cli, worker_pids, foreign)
            print(f"overhead: {freq} Hz: perf record + perf report ...", file=sys.stderr)
            perf = run_perf(freq, args, tmp, foreign)
            d = derive(freq, args.duration, ours, perf)
            results[str(freq)] = {"ddprofiler": ours, "perf": perf, "derived": d}
            print_table(freq, ours, perf, d, args.stack_bytes, args.workload)
    except KeyboardInterrupt:
        print("\noverhead: interrupted", file=sys.stderr)
        return 130
    finally:
        for p in reversed(CHILDREN):
            if p.returncode is None and p.poll() is None:
                kill(p)
                p.wait()
        if old_stats is not None:
            BPF_STATS.write_text(old_stats)
        shutil.rmtree(tmp, ignore_errors=True)
    notes = []
    for freq, r in results.items():
        o, got, want = r["ddprofiler"], r["ddprofiler"].get("samples") or 0, r["derived"]["expected_samples"]
        checks = [
            (o["returncode"], f"ddprofiler exited {o['returncode']}: {o['summary'][-300:]}"),
            (o.get("lost"), f"ddprofiler lost {o.get('lost')} samples"),
            (abs(got - want) > 0.05 * want, f"ddprofiler got {got} samples, {want:.0f} expected"),
            ((o.get("self_pct") or 0) > 5, f"ddprofiler is {o.get('self_pct', 0):.1f}% of its own profile"),
            ((o.get("peak_rss_mib") or 0) > TARGET_RSS_MIB, f"ddprofiler peak RSS {o.get('peak_rss_mib', 0):.0f} MiB"),
            ((o.get("workload_pct") or 100) < 90,
             f"workload only {o.get('workload_pct', 0):.0f}% of the profile (busy machine)"),
            (r["perf"].get("report_timed_out"), f"perf report killed after {args.report_timeout:.0f} s (lower bound)"),
            (not o.get("bpf_run_cnt"), "BPF run_cnt is 0 (bpf_stats_enabled turned off by someone else?)"),
        ]
        notes += [f"{freq} Hz: {text}" for bad, text in checks if bad]
    if foreign:
        notes.append("other profilers ran during the benchmark; figures are contaminated:")
        notes.extend("  " + f for f in sorted(foreign))
    print("\nprofiler: " + ("python -m ddprofiler record" if use_cli else "runner on ddprofiler.Profiler"))
    for n in notes:
        print("note: " + n)
    if args.json:
        meta = {"cpus": NCPU, "workload": args.workload, "duration_s": args.duration, "stack_bytes": args.stack_bytes,
                "perf_dwarf_bytes": args.perf_dwarf_bytes or 8192, "cli": use_cli,
                "kernel": os.uname().release, "notes": notes}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
