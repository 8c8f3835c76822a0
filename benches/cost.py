#!/usr/bin/env python3
"""What the continuous profiler costs, side by side with Datadog's dd-otel-host-profiler.

Run as root: `python3 benches/cost.py [--rates 20,99,999] [--duration 60] [--rounds 1]
[--spawn-rate 50] [--peer PATH] [--ours-python PY] [--also perf,py-spy] [--json out.json]`. It starts the usual
mix once and keeps it running: one busy tests/workloads/chain.c, one busy gowork (stripped,
allocating), one busy pure-Python program run by Debian's /usr/bin/python3 (json, sorted with
key=, str.format, re) and continuous.py's spawner of --spawn-rate short-lived processes a
second. Then, for each rate and round, one after the other, never both at once, --duration s each:

- ours: `PY -m ddprofiler --agent-url URL --upload-period 10 --sampling-rate HZ` (PY:
  --ours-python, default this interpreter, so that an older build in another venv can be run);
- the peer: `DD_HOST_PROFILING_UPLOAD_SYMBOLS=false dd-otel-host-profiler --agent-url URL
  --sampling-rate HZ --upload-period 10s` (--peer, else $DDPROF_PEER, else
  /work/peer/bin/dd-otel-host-profiler; when absent its columns are "-").

In the same rounds, where found (--also, default both), the tools a user compares with:
- `perf record -a --call-graph dwarf -F HZ -o FILE` (system-wide, unwinding without frame
  pointers as we do; symbolization is left to `perf report`, which is not run, so perf's figures
  are a lower bound of what a symbolized profile costs it, and its in-kernel stack copies are
  not measured);
- `py-spy record --pid PY --rate HZ --nonblocking --format raw -o FILE`, on the Python workload
  only (one process: it applies there, not to the host).
Their samples come from their own summaries (perf: "(N samples)", py-spy: "Samples: N"), so
their user-space CPU / sample is whole-window CPU / samples, start-up included.

URL is a dummy Agent served here (200 and `{}` to anything). Each profiler is stopped with
SIGINT (SIGKILL after 15 s). From /proc: process CPU (utime+stime, all threads); start to first
sample (spawn until a perf-event BPF program of its has run_cnt > 0, polled every 20 ms up to
30 s) and the CPU used until then; BPF run_time_ns / run_cnt from fdinfo (with
kernel.bpf_stats_enabled=1, restored afterwards); peak RSS (VmHWM), steady RSS (median of 1 s
VmRSS over the last half), RssAnon and RssFile at the end. The sample count of both is the
run_cnt of their perf-event (prog_type 7) BPF programs, as their logs count differently (the
peer drops its last partial period): user-space CPU / sample = process CPU after the first
sample / perf-event runs after it. BPF time is charged to the interrupted tasks, not to the
profiler's process, so it is added apart. One table per rate (median over rounds; ours, peer,
ours/peer), every round with --json. It never asserts on timings. Every process it starts is
killed on the way out, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402
from continuous import (PERIOD_RE, SHORT_C, SPAWNER_C, compile_c, foreign_profilers,  # noqa: E402
                        spawn_rate, status_kib)
from overhead import CHILDREN, NCPU, ROOT, kill, proc_cpu, read, spawn, start_workloads, vm_hwm_kib  # noqa: E402

PERIOD_S, FIRST_TIMEOUT_S, STOP_TIMEOUT_S = 10, 30.0, 15.0
PERF_EVENT = 7  # BPF_PROG_TYPE_PERF_EVENT
DEFAULT_PEER = "/work/peer/bin/dd-otel-host-profiler"
PEER_HINT = "github.com/DataDog/dd-otel-host-profiler, go build (see /work/peer/RUN.md)"

PY_LOAD = r"""
import json, re, sys, time
end, pat = time.monotonic() + float(sys.argv[1]), re.compile(r"item-(\d+)")
def make(n): return [{"id": i, "name": f"item-{i}", "tags": [str(i % 7)] * 3, "v": i * 0.37} for i in range(n)]
def roundtrip(rows): return json.loads(json.dumps(rows))
def order(rows): return sorted(rows, key=lambda r: (r["tags"][0], -r["v"], r["name"]))
def render(rows): return "\n".join("{id:>6} {name:<12} {v:10.2f}".format(**r) for r in rows)
def scan(text): return sum(int(m.group(1)) for m in pat.finditer(text))
print("ready", flush=True)
while time.monotonic() < end:
    scan(render(order(roundtrip(make(2000)))))
"""


class Sink(http.server.BaseHTTPRequestHandler):
    """A dummy Agent: 200 and `{}` to anything; counts requests and bytes."""
    protocol_version = "HTTP/1.1"
    counts = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    def do_POST(self):
        n = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with self.lock:
            self.counts["requests"], self.counts["bytes"] = self.counts["requests"] + 1, self.counts["bytes"] + n
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_PUT = do_POST
    log_message = lambda self, *args: None  # noqa: E731

    def handle(self):  # a profiler stopped mid-request: not worth a traceback
        with contextlib.suppress(ConnectionError):
            super().handle()


def bpf_progs(pid):
    """perf-event and all BPF programs of pid, each prog id once: runs and ns; None if none."""
    progs, c = {}, {"perf_runs": 0, "perf_ns": 0, "all_runs": 0, "all_ns": 0}
    fds = []
    with contextlib.suppress(OSError):  # gone
        fds = os.listdir(f"/proc/{pid}/fd")
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-prog":
                text = read(f"/proc/{pid}/fdinfo/{fd}") or ""
                info = dict(ln.split(":", 1) for ln in text.splitlines() if ":" in ln)
                progs[int(info.get("prog_id", -1))] = info
    for info in progs.values():
        ns, cnt = int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))
        c["all_runs"], c["all_ns"] = c["all_runs"] + cnt, c["all_ns"] + ns
        if int(info.get("prog_type", -1)) == PERF_EVENT:
            c["perf_runs"], c["perf_ns"] = c["perf_runs"] + cnt, c["perf_ns"] + ns
    return {**c, "progs": len(progs)} if progs else None


def foreign() -> set:
    """Other profilers: continuous.py's scan, plus peers we did not start."""
    found, mine = foreign_profilers(), {c.pid for c in CHILDREN}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = (read(f"/proc/{pid}/cmdline") or "").split("\0")
        if int(pid) not in mine and os.path.basename(argv[0]) == "dd-otel-host-profiler":
            found.add(f"{pid}: {' '.join(argv).strip()[:100]}")
    return found


def start_load(tmp: Path, args, seconds: float) -> Path:
    """The usual mix, one copy of each; the spawner's progress file."""
    with mock.patch.object(overhead, "NCPU", 1):  # start_workloads starts NCPU copies
        start_workloads(tmp, "c"), start_workloads(tmp, "go")
    (tmp / "pyload.py").write_text(PY_LOAD)
    py = spawn(["/usr/bin/python3", str(tmp / "pyload.py"), str(seconds)], stdout=subprocess.PIPE, text=True)
    if py.stdout.readline().strip() != "ready":
        raise SystemExit("cost: the Python workload did not start")
    short, spawner = compile_c(tmp, "shortlived", SHORT_C), compile_c(tmp, "spawner", SPAWNER_C)
    with open(tmp / "spawner.out", "w") as out:
        spawn([str(spawner), str(args.spawn_rate), str(seconds), str(short)], stdout=out, start_new_session=True)
    args.py_pid = py.pid
    return tmp / "spawner.out"


def run_window(cmd, env, args, log: Path, spawn_log: Path, seen: set) -> dict:
    """One profiler for args.duration s under the load; stopped with SIGINT; its figures."""
    before = dict(Sink.counts)
    with open(log, "w") as f:
        t0 = time.monotonic()
        p = spawn(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    first, rss, next_rss, next_scan = None, [], 0.0, 0.0
    while (now := time.monotonic() - t0) < args.duration and p.poll() is None:
        searching = first is None and now < FIRST_TIMEOUT_S
        if searching and (b := bpf_progs(p.pid)) and b["perf_runs"] > 0:
            first = {"t": now, "cpu_s": proc_cpu(p.pid), **b}
        if now >= next_rss:
            rss.append((now, (status_kib(p.pid, "VmRSS") or 0) / 1024))
            next_rss += 1.0
        if now >= next_scan:
            seen |= foreign()
            next_scan = now + 5.0
        time.sleep(0.02 if searching else 0.25)
    wall, end, cpu = time.monotonic() - t0, bpf_progs(p.pid), proc_cpu(p.pid)
    r = {"cmd": " ".join(cmd), "wall_s": wall, "exited_early": p.poll() is not None, "cpu_s": cpu,
         "first": first, "bpf": end, "peak_rss_mib": (vm_hwm_kib(p.pid) or 0) / 1024 or None,
         "rss_anon_mib": (status_kib(p.pid, "RssAnon") or 0) / 1024 or None,
         "rss_file_mib": (status_kib(p.pid, "RssFile") or 0) / 1024 or None,
         "rss_series": [(round(t, 1), round(m, 2)) for t, m in rss]}
    r["spawn_rate"], _ = spawn_rate(spawn_log, t0, t0 + wall)
    half = [m for t, m in rss if t >= wall / 2 and m]
    r["steady_rss_mib"] = statistics.median(half) if half else None
    t_stop = time.monotonic()
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    try:
        p.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(p)
        p.wait()
        r["killed"] = True
    r["stop_s"], r["returncode"] = time.monotonic() - t_stop, p.returncode
    r["sink_requests"] = Sink.counts["requests"] - before["requests"]
    r["sink_kib"] = (Sink.counts["bytes"] - before["bytes"]) / 1024
    text = log.read_text(errors="replace")
    periods = PERIOD_RE.findall(text)
    if periods:  # ours: period lines, the last one after SIGINT included
        r["log_samples"], r["lost"] = sum(int(m[0]) for m in periods), sum(int(m[2]) for m in periods)
    elif counts := re.findall(r"total_samples=(\d+)", text):  # the peer
        r["log_samples"] = sum(map(int, counts))
    elif counts := re.findall(r"\((\d+) samples\)|Samples: (\d+)", text):  # perf, py-spy
        r["log_samples"] = r["tool_samples"] = sum(int(a or b) for a, b in counts)
    r["log_tail"] = text.strip().splitlines()[-5:]
    derive(r, args.rate)
    return r


def derive(r, rate):
    f, b, wall = r["first"], r["bpf"], r["wall_s"]
    if r["cpu_s"] is not None:
        r["cpu_pct"] = 100 * r["cpu_s"] / wall
    if b:
        r["samples"] = b["perf_runs"]
        r["bpf_cpu_pct"] = 100 * b["all_ns"] / 1e9 / wall
        if b["perf_runs"]:
            r["bpf_us_per_sample"] = b["perf_ns"] / b["perf_runs"] / 1e3
    if f and b and r["cpu_s"] is not None:
        r["start_s"], r["start_cpu_s"] = f["t"], f["cpu_s"]
        r["expected"] = rate * NCPU * (wall - f["t"])
        r["cpu_pct_steady"] = 100 * (r["cpu_s"] - f["cpu_s"]) / (wall - f["t"])
        if b["perf_runs"] > f["perf_runs"]:
            r["user_us_per_sample"] = (r["cpu_s"] - f["cpu_s"]) / (b["perf_runs"] - f["perf_runs"]) * 1e6
        if "bpf_us_per_sample" in r and "user_us_per_sample" in r:
            r["total_us_per_sample"] = r["user_us_per_sample"] + r["bpf_us_per_sample"]
        r["total_cpu_pct"] = r["cpu_pct_steady"] + r.get("bpf_cpu_pct", 0)
    elif not b and r.get("tool_samples") and r["cpu_s"] is not None:  # perf, py-spy: no BPF of theirs
        r["samples"] = r["tool_samples"]
        r["cpu_pct_steady"] = r["total_cpu_pct"] = r["cpu_pct"]
        r["user_us_per_sample"] = r["cpu_s"] / r["tool_samples"] * 1e6


ROWS = [
    ("samples: perf-event BPF runs", "samples", "d"),
    ("samples expected (Hz x CPUs x s after first sample)", "expected", ".0f"),
    ("samples in its log (ours: period lines; peer: total_samples=)", "log_samples", "d"),
    ("start to first sample (s)", "start_s", ".2f"),
    ("CPU until the first sample (s)", "start_cpu_s", ".2f"),
    ("process CPU, whole window (% of one core)", "cpu_pct", ".2f"),
    ("process CPU after the first sample (% of one core)", "cpu_pct_steady", ".2f"),
    ("BPF CPU, all its programs (% of one core)", "bpf_cpu_pct", ".2f"),
    ("process + BPF CPU (% of one core)", "total_cpu_pct", ".2f"),
    ("user-space CPU / sample (us)", "user_us_per_sample", ".1f"),
    ("in-kernel BPF time / sample (us; perf-event programs)", "bpf_us_per_sample", ".2f"),
    ("total cost / sample (us)", "total_us_per_sample", ".1f"),
    ("peak RSS (MiB; VmHWM at the end)", "peak_rss_mib", ".1f"),
    ("steady RSS (MiB; median VmRSS, last half)", "steady_rss_mib", ".1f"),
    ("RssAnon at the end (MiB)", "rss_anon_mib", ".1f"),
    ("RssFile at the end (MiB)", "rss_file_mib", ".1f"),
    ("stop after SIGINT (s)", "stop_s", ".2f"),
    ("uploads to the dummy Agent: requests", "sink_requests", "d"),
    ("uploads to the dummy Agent: KiB", "sink_kib", ".1f"),
    ("short-lived spawns/s during the window", "spawn_rate", ".1f"),
]


def median(rounds, key):
    vals = [r[key] for r in rounds if r and r.get(key) is not None]
    if not vals:
        return None
    m = statistics.median(vals)
    return round(m) if all(isinstance(v, int) for v in vals) else m


def print_table(rate, rounds, args):
    """Ours, then each other tool that ran, with ours / it for each."""
    n = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\n== {rate} Hz, {args.duration:g} s windows{n}: chain.c + gowork + python3 + "
          f"{args.spawn_rate:g} spawns/s on {NCPU} CPUs ==")
    names = [k for k in rounds[0] if k != "ours" and any(r.get(k) for r in rounds)]
    w = max(len(r[0]) for r in ROWS)
    head = "".join(f" {k:>11} {'ours/' + k:>12}" for k in names)
    print(f"{'':{w}}  {'ddprofiler':>11}{head}")
    fmt = lambda v, spec: "-" if v is None else f"{v:{spec}}"  # noqa: E731
    for label, key, spec in ROWS:
        a = median([r["ours"] for r in rounds], key)
        cells = ""
        for k in names:
            b = median([r.get(k) for r in rounds], key)
            ratio = f"{a / b:.2f}x" if a is not None and b else "-"
            cells += f" {fmt(b, spec):>11} {ratio:>12}"
        print(f"{label:{w}}  {fmt(a, spec):>11}{cells}")
    if "py-spy" in names:
        print("(py-spy samples the Python workload only; perf's symbolization, `perf report`, is not counted)")


def findings(results, peer, seen, stats_reset, spawn_target) -> list:
    notes = [] if peer else [f"no peer binary (--peer, $DDPROF_PEER, {DEFAULT_PEER}): build it from {PEER_HINT}"]
    for rate, rounds in results.items():
        for i, rnd in enumerate(rounds):
            for name, r in rnd.items():
                if r is None:
                    continue
                tag = f"{rate} Hz round {i + 1} {name}:"
                got, want = r.get("samples") or 0, r.get("expected") or 0
                bpf = name in ("ours", "peer")
                checks = [
                    (r["exited_early"], f"{tag} exited before the end of the window: {r['log_tail']}"),
                    (r.get("killed"), f"{tag} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGINT; killed"),
                    (r["returncode"] not in (0, 130, -2), f"{tag} exit code {r['returncode']}"),
                    (not bpf and not r.get("tool_samples"), f"{tag} no sample count in its output: {r['log_tail']}"),
                    (bpf and r.get("first") is None, f"{tag} no perf-event BPF run within {FIRST_TIMEOUT_S:.0f} s"),
                    (bpf and want and abs(got - want) > 0.1 * want, f"{tag} {got} perf-event runs, {want:.0f} expected"),
                    (r.get("lost"), f"{tag} {r.get('lost')} samples lost"),
                    ((r.get("spawn_rate") or 0) < 0.9 * spawn_target,
                     f"{tag} spawn rate {r.get('spawn_rate') or 0:.1f}/s"),
                ]
                notes += [text for bad, text in checks if bad]
    if stats_reset:
        notes.append(f"kernel.bpf_stats_enabled was turned off by someone else {stats_reset} time(s); set again")
    if seen:
        notes.append("other profilers ran during the benchmark; figures are contaminated:")
        notes.extend("  " + f for f in sorted(seen))
    return notes


def tools(also: str) -> dict:
    """The other tools asked for with --also that are installed: name -> binary."""
    want = {t.strip() for t in also.split(",") if t.strip()}
    found = {t: shutil.which(t) for t in ("perf", "py-spy") if t in want}
    return {t: path for t, path in found.items() if path}


def commands(args, rate, url, peer, tmp: Path) -> dict:
    ours = [args.ours_python, "-m", "ddprofiler", "--agent-url", url, "--upload-period", str(PERIOD_S),
            "--sampling-rate", str(rate)]
    cmds = {"ours": (ours, dict(os.environ))}
    if peer:
        cmds["peer"] = ([peer, "--agent-url", url, "--sampling-rate", str(rate), "--upload-period", f"{PERIOD_S}s"],
                        {**os.environ, "DD_HOST_PROFILING_UPLOAD_SYMBOLS": "false"})
    found = tools(args.also)
    if "perf" in found:
        cmds["perf"] = ([found["perf"], "record", "-a", "--call-graph", "dwarf", "-F", str(rate),
                         "-o", str(tmp / "perf.data")], dict(os.environ))
    if "py-spy" in found:
        cmds["py-spy"] = ([found["py-spy"], "record", "--pid", str(args.py_pid), "--rate", str(rate), "--nonblocking",
                           "--format", "raw", "-o", str(tmp / "py-spy.txt")], dict(os.environ))
    return cmds


def git_rev() -> str:
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    return (git("rev-parse", "--short", "HEAD") or "?") + ("+dirty" if git("status", "--porcelain", "-uno") else "")



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="20,99,999", help="comma-separated Hz (default 20,99,999)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per profiler window (default 60)")
    ap.add_argument("--rounds", type=int, default=1, help="ours-then-peer windows per rate (default 1)")
    ap.add_argument("--spawn-rate", type=float, default=50.0, help="short-lived processes/s (default 50)")
    default_peer = os.environ.get("DDPROF_PEER") or (DEFAULT_PEER if os.path.exists(DEFAULT_PEER) else None)
    ap.add_argument("--peer", default=default_peer, help="dd-otel-host-profiler binary (default: $DDPROF_PEER, "
                    f"else {DEFAULT_PEER} if it exists)")
    ap.add_argument("--ours-python", default=sys.executable, help="interpreter for -m ddprofiler (default: this one)")
    ap.add_argument("--also", default="perf,py-spy",
                    help="other tools run in the same rounds, where installed (default perf,py-spy; '' for none)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    rates = [int(x) for x in args.rates.split(",") if x.strip()]
    peer = args.peer if args.peer and os.access(args.peer, os.X_OK) else None
    if os.geteuid() != 0:
        raise SystemExit("cost: run as root (BPF, kernel.bpf_stats_enabled)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    version = subprocess.run([args.ours_python, "-m", "ddprofiler", "--version"], capture_output=True,
                             text=True, cwd="/").stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-cost-"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    results, seen, old_stats, stats_reset = {}, set(), None, 0
    try:
        old_stats = overhead.BPF_STATS.read_text().strip()
        overhead.BPF_STATS.write_text("1")
        seen |= foreign()
        windows = len(rates) * args.rounds * (2 + len(tools(args.also)))
        spawn_log = start_load(tmp, args, windows * (args.duration + 40) + 120)
        time.sleep(1.0)
        for rate in rates:
            args.rate, results[rate] = rate, []
            for i in range(args.rounds):
                rnd = {"ours": None, "peer": None}
                for name, (cmd, env) in commands(args, rate, url, peer, tmp).items():
                    if overhead.BPF_STATS.read_text().strip() != "1":
                        stats_reset += 1
                        overhead.BPF_STATS.write_text("1")
                    print(f"cost: {rate} Hz round {i + 1}: {name} for {args.duration:g} s ...", file=sys.stderr)
                    rnd[name] = run_window(cmd, env, args, tmp / f"{name}-{rate}-{i}.log", spawn_log, seen)
                    for out in ("perf.data", "py-spy.txt"):  # perf.data grows to ~1 GB at 999 Hz
                        (tmp / out).unlink(missing_ok=True)
                results[rate].append(rnd)
            print_table(rate, results[rate], args)
    except KeyboardInterrupt:
        print("\ncost: interrupted", file=sys.stderr)
        return 130
    finally:
        server.shutdown()
        for p in reversed(CHILDREN):
            if p.returncode is None and p.poll() is None:
                kill(p)
                p.wait()
        if old_stats is not None:
            overhead.BPF_STATS.write_text(old_stats)
        shutil.rmtree(tmp, ignore_errors=True)
    notes = findings(results, peer, seen, stats_reset, args.spawn_rate)
    rev = git_rev()
    print(f"\nddprofiler: {rev} ({version or '?'}; {args.ours_python}); peer: {peer or '-'}")
    print(f"machine: {NCPU} CPUs, kernel {os.uname().release}")
    for n in notes:
        print("note: " + n)
    if args.json:
        meta = {"commit": rev, "version": version, "ours_python": args.ours_python, "peer": peer, "cpus": NCPU,
                "kernel": os.uname().release, "duration_s": args.duration, "rounds": args.rounds,
                "spawn_rate": args.spawn_rate, "period_s": PERIOD_S, "also": tools(args.also), "notes": notes}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
