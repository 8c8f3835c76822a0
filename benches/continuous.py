#!/usr/bin/env python3
"""Soak of the continuous profiler (`python -m ddprofiler`) under process churn.

Run as root: `python3 benches/continuous.py [--duration 300] [--rate 200] [--json out.json]`.
It keeps one busy chain workload per CPU (tests/workloads/chain.c, as overhead.py does) and a
C spawner starting RATE short-lived processes a second (/bin/true, ~2 ms of C work,
`sh -c :`, in turn), then:

1. soak: `python -m ddprofiler --agent-url http://127.0.0.1:PORT --upload-period 10
   --sampling-rate 20` for DURATION s against a sink served by this script on 127.0.0.1
   (200 to POST /profiling/v1/input, counts requests and bytes), then SIGTERM. Its
   /proc/PID/stat and /proc/PID/status are polled every 0.25 s (CPU, VmRSS once a second,
   VmHWM) and its stderr is parsed (period lines, final upload counts, warnings);
2. export: `ddprofiler.Profiler` in this process for two periods with the same
   load; on the second snapshot it times the runner's tagging + grouping, the core's
   encoding of every profile (one call) and zstd level 1 per profile, and `Runner.export`
   end to end.

It prints one table (and --json). It never asserts on timings; findings are printed as
notes. Every loop is bounded and every process it starts is killed on the way out, Ctrl-C
and SIGTERM included. README.md next to this file explains the figures.
"""
from __future__ import annotations

import argparse
import collections
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
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import (CHILDREN, NCPU, ROOT, kill, other_profilers, proc_cpu, read,  # noqa: E402
                      spawn, start_workloads, vm_hwm_kib)

TARGET_RSS_MIB, POLL_S, HZ, PERIOD_S = 80.0, 0.25, 20, 10
AGENT_PATH = "/profiling/v1/input"

SHORT_C = r"""
#include "workload.h"
volatile unsigned long sink;
static double cpu_now(void) {
	struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}
FRAME unsigned long work(unsigned long x, double ms) {  /* ms of CPU time, not wall time */
	for (double end = cpu_now() + ms / 1e3; cpu_now() < end;) DDW_BURN(x, 20000);
	return x;
}
int main(int argc, char **argv) { sink = work(1, argc > 1 ? atof(argv[1]) : 2.0); return 0; }
"""

# argv: rate, seconds, short program. One line a second on stdout: "monotonic spawned failed".
SPAWNER_C = r"""
#include <spawn.h>
#include <sys/wait.h>
#include "workload.h"
extern char **environ;
int main(int argc, char **argv) {
	double rate = atof(argv[1]), step = 1.0 / rate, t0 = ddw_now(), next = t0, report = t0;
	char *cmds[3][4] = {{"/bin/true", 0}, {argv[3], 0}, {"/bin/sh", "-c", ":", 0}};
	long n = 0, failed = 0; int st; pid_t pid;
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (double t = t0; t < t0 + atof(argv[2]); t = ddw_now()) {
		if (t >= next) {
			failed += posix_spawn(&pid, cmds[n % 3][0], NULL, NULL, cmds[n % 3], environ) != 0;
			n++, next += step;
			if (next < t - 1.0) next = t;  /* after a stall, no burst of catch-ups */
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0)
			if (!WIFEXITED(st) || WEXITSTATUS(st)) failed++;
		if (t - report >= 1.0) { printf("%.3f %ld %ld\n", t, n, failed); report = t; }
		double wait = next - ddw_now();
		struct timespec ts = {0, (long)((wait < 0.001 ? wait : 0.001) * 1e9)};
		if (wait > 0) nanosleep(&ts, NULL);
	}
	while ((pid = wait(&st)) > 0) if (!WIFEXITED(st) || WEXITSTATUS(st)) failed++;
	printf("%.3f %ld %ld\n", ddw_now(), n, failed);
	return 0;
}
"""

# The runner's period line and the exit summary (docs/operations.md): samples, profiles, lost,
# stacks cut short, errors, uploads sent / failed / dropped in the period, queue bytes.
PERIOD_RE = re.compile(
    r"period: (\d+) samples in (\d+) profiles over [\d.]+ s; samples lost (\d+); stacks cut short (.*?); "
    r"errors (.*?); uploads (\d+) sent, (\d+) failed, (\d+) dropped, \d+ retries, \d+ waiting in the "
    r"queue \((\d+) B\)")
STOPPED_RE = re.compile(r"stopped: \d+ profiles produced: (\d+) sent, (\d+) failed .*?, (\d+) dropped")


def breakdown(text: str) -> dict:
    """`12 (truncated 10, stuck 2)` or `0` -> {"truncated": 10, "stuck": 2}."""
    inner = re.search(r"\((.*)\)", text)
    parts = [x.strip().rpartition(" ") for x in (inner.group(1) if inner else "").split(",") if x.strip()]
    return {k: int(v) for k, _, v in parts if v.isdigit()}


class Sink(http.server.BaseHTTPRequestHandler):
    """The Agent's profiling endpoint, as far as counting goes."""
    protocol_version = "HTTP/1.1"
    counts = {"requests": 0, "bytes": 0, "other": 0, "other_bytes": 0, "times": []}
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ok = self.path == AGENT_PATH
        with self.lock:
            self.counts["requests" if ok else "other"] += 1
            self.counts["bytes" if ok else "other_bytes"] += len(body)
            self.counts["times"].append(time.monotonic()) if ok else None
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST
    log_message = lambda self, *args: None  # noqa: E731


def foreign_profilers() -> set:
    """overhead.py's scan, plus continuous ddprofilers (`-m ddprofiler` without `record`)."""
    found, mine = other_profilers(), {c.pid for c in CHILDREN}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        argv = (read(f"/proc/{pid}/cmdline") or "").split("\0")
        if int(pid) not in mine and "--help" not in argv and any(
                os.path.basename(a) == "ddprofiler" for a in argv[:3]):
            found.add(f"{pid}: {' '.join(argv).strip()[:100]}")
    return found


def status_kib(pid, key):
    text = read(f"/proc/{pid}/status") or ""
    return next((int(ln.split()[1]) for ln in text.splitlines() if ln.startswith(key + ":")), None)


def compile_c(tmp: Path, name: str, source: str) -> Path:
    src, exe = tmp / f"{name}.c", tmp / name
    src.write_text(source)
    subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-I", str(ROOT / "tests" / "workloads"),
                    "-o", str(exe), str(src)], check=True)
    return exe


def spawn_rate(path: Path, t0: float, t1: float):
    """(spawns/s, failures) between t0 and t1, from the spawner's progress lines."""
    rows = [tuple(map(float, ln.split())) for ln in (read(str(path)) or "").splitlines() if len(ln.split()) == 3]
    inside = [r for r in rows if t0 <= r[0] <= t1]  # first and last count within the window
    if len(inside) < 2:
        return None, None
    a, b = inside[0], inside[-1]
    return (b[1] - a[1]) / (b[0] - a[0]), int(b[2] - a[2])


def slope_mib_per_min(points):
    if len(points) < 2:
        return None
    mt, my = statistics.fmean(t for t, _ in points), statistics.fmean(y for _, y in points)
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var * 60 if var else None


def soak(args, tmp: Path, port: int, spawn_log: Path, foreign: set) -> dict:
    """The continuous profiler for args.duration s under load; its CPU, RSS and log."""
    err = tmp / "profiler.err"
    cmd = [sys.executable, "-m", "ddprofiler", "--agent-url", f"http://127.0.0.1:{port}",
           "--upload-period", str(PERIOD_S), "--sampling-rate", str(HZ)]
    ferr = open(err, "w")
    t0 = time.monotonic()
    p = spawn(cmd, stdout=subprocess.DEVNULL, stderr=ferr, cwd=tmp)
    rss, periods, seen, cpu, next_rss = [], [], 0, 0.0, 0.0
    while (now := time.monotonic() - t0) < args.duration and p.poll() is None:
        cpu = proc_cpu(p.pid) or cpu
        if now >= next_rss:
            rss.append((now, (status_kib(p.pid, "VmRSS") or 0) / 1024))
            next_rss += 1.0
        lines = PERIOD_RE.findall(read(str(err)) or "")
        for m in lines[seen:]:  # new period lines: the CPU used up to now includes that export
            periods.append({"t": round(now, 2), "cpu_s": cpu, "samples": int(m[0]), "profiles": int(m[1])})
        if len(lines) > seen:
            foreign |= foreign_profilers()
        seen = len(lines)
        time.sleep(POLL_S)
    soak_wall, hwm = time.monotonic() - t0, (vm_hwm_kib(p.pid) or 0) / 1024
    res = {"wall_s": soak_wall, "cpu_s": cpu, "vmhwm_mib": hwm, "exited_early": p.poll() is not None}
    res["spawn_rate"], res["spawn_failed"] = spawn_rate(spawn_log, t0, t0 + soak_wall)
    # stop: SIGTERM, wait for the final export and pending uploads (--shutdown-timeout 10 s)
    with_term = time.monotonic()
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    ru = None
    for _ in range(int(30 / POLL_S)):
        wpid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if wpid:
            p.returncode = os.waitstatus_to_exitcode(status)
            break
        time.sleep(POLL_S)
    else:
        kill(p)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        res["killed"] = True
    ferr.close()
    text = err.read_text(errors="replace")
    res.update(returncode=p.returncode, stop_s=time.monotonic() - with_term,
               cpu_total_s=ru.ru_utime + ru.ru_stime, maxrss_mib=ru.ru_maxrss / 1024)
    res["cpu_pct"] = 100 * cpu / soak_wall
    if periods:
        res["cpu_first_period_s"] = periods[0]["cpu_s"]
    if len(periods) >= 2:
        a, b = periods[0], periods[-1]
        res["cpu_pct_steady"] = 100 * (b["cpu_s"] - a["cpu_s"]) / (b["t"] - a["t"])
        res["cpu_pct_periods"] = [round(100 * (y["cpu_s"] - x["cpu_s"]) / (y["t"] - x["t"]), 2)
                                  for x, y in zip(periods, periods[1:])]
    for q in (50, 75, 100):
        t = soak_wall * q / 100
        res[f"rss_at_{q}_mib"] = min(rss, key=lambda r: abs(r[0] - t))[1] if rss else None
    res["rss_at_max_mib"] = max((r[1] for r in rss), default=None)
    res["rss_slope_last_half_mib_min"] = slope_mib_per_min([r for r in rss if r[0] >= soak_wall / 2])
    res["rss_series"] = [(round(t, 1), round(m, 2)) for t, m in rss]
    all_lines = PERIOD_RE.findall(text)  # includes the final partial period after SIGTERM
    res["periods"] = len(all_lines)
    res["samples"], res["profiles"], res["lost"] = (sum(int(m[i]) for m in all_lines) for i in range(3))
    for field, idx in (("unwind_failures", 3), ("errors", 4)):  # "n (name n, name n)" or "0"
        res[field] = dict(sum((collections.Counter(breakdown(m[idx])) for m in all_lines), collections.Counter()))
    if all_lines:
        res["max_queue_b"] = max(int(m[8]) for m in all_lines)
    if m := STOPPED_RE.search(text):
        res["uploads_ok"], res["uploads_failed"], res["uploads_dropped"] = map(int, m.groups())
    res["warnings"] = [ln for ln in text.splitlines()
                       if re.search(r"\| (WARN|ERROR|CRITICAL) \||WARNING|Traceback|error:", ln)]
    res["period_lines"] = periods
    return res


def time_profiles(runner, profile, zc) -> dict:
    """The runner's tagging + grouping, then the core's encoding of every profile (one call)
    and zstd-1 of each, timed."""
    from ddprofiler.pprof import encode_profiles, parse_pprof
    from ddprofiler.runner import labels_of
    res, per = {}, []

    t0 = time.perf_counter()
    tags = runner.tags_of(profile)
    labels = {pid: extra for pid, t in tags.items() if (extra := labels_of(t))}
    key_of = {pid: runner._key(t) for pid, t in tags.items()}
    index = {k: i for i, k in enumerate(dict.fromkeys(key_of.values()))}
    res["tag_split_s"] = time.perf_counter() - t0
    c1, t1 = time.thread_time(), time.perf_counter()
    encoded = encode_profiles(profile, {pid: index[k] for pid, k in key_of.items()}, len(index), labels)
    res["encode_s"], res["encode_cpu_s"] = time.perf_counter() - t1, time.thread_time() - c1
    for e in encoded:
        c3, t3 = time.thread_time(), time.perf_counter()
        packed = zc.compress(e.pprof)
        t4, c4 = time.perf_counter(), time.thread_time()
        per.append({"cpu_s": c4 - c3, "zstd_s": t4 - t3, "raw_b": len(e.pprof), "zstd_b": len(packed),
                    "samples": e.samples, "locations": len(parse_pprof(e.pprof).location)})
    res["profiles"], res["per_profile"] = len(per), per
    for f in ("cpu_s", "zstd_s", "raw_b", "zstd_b", "locations"):
        res[f"sum_{f}"] = sum(x[f] for x in per)
    res["sum_total_s"] = res["encode_s"] + res["sum_zstd_s"]
    res["sum_cpu_s"] += res["encode_cpu_s"]
    res["max_profile_zstd_s"] = max((x["zstd_s"] for x in per), default=0.0)
    return res


def export_phase(spawn_log: Path) -> dict:
    """Two periods of ddprofiler.Profiler in this process; the export path timed on the second."""
    import zstandard

    import ddprofiler
    from ddprofiler import config
    from ddprofiler.exporters.payload import compress_pprof
    from ddprofiler.runner import Runner

    res, snaps = {}, []
    t0 = time.monotonic()
    with ddprofiler.Profiler(frequency=HZ, stack_bytes=16384) as prof:
        for _ in range(2):
            time.sleep(PERIOD_S)
            ts = time.perf_counter()
            snaps.append(prof.snapshot(True))
            res.setdefault("snapshot_s", []).append(time.perf_counter() - ts)
    res["spawn_rate"], _ = spawn_rate(spawn_log, t0, time.monotonic())
    snap, stats = snaps[-1], snaps[-1].stats
    for k in ("processes_seen", "processes_exited", "processes", "lost", "process_gone"):
        res[k] = stats.get(k)
    res.update(samples=snap.total, sample_rows=len(snap.samples),
               stacks=len(snap.stacks), locations=len(snap.frames),
               mappings=len(snap.mappings), snapshot_processes=len(snap.processes))

    runner = Runner(config.Settings(), None, None)  # its tag cache and grouping key only
    cold = time_profiles(runner, snaps[0], zstandard.ZstdCompressor(level=1))  # warms caches up
    res.update(time_profiles(runner, snap, zstandard.ZstdCompressor(level=1)))
    res["cold_sum_total_s"] = cold["sum_total_s"]
    sizes = []  # what the Agent exporter does in submit(), minus the network
    runner.exporter = types.SimpleNamespace(submit=lambda pl: sizes.append(len(compress_pprof(pl.pprof))),
                                            stats=dict)
    ts = time.perf_counter()
    runner.export(snap)  # the same (warm) runner: tag cache filled as in a long run
    res["runner_export_s"], res["runner_export_zstd_b"] = time.perf_counter() - ts, sum(sizes)
    return res


def table(s, e, sink, args):
    mean = lambda v, n: v / n if n else None
    periods = s.get("cpu_pct_periods") or []
    rows = [
        ("soak wall (s) / profiler periods logged", f"{s['wall_s']:.0f} / {s['periods']}"),
        (f"short-lived spawns/s, soak (target {args.rate:g}) / failed", f"{_f(s['spawn_rate'], '.1f')} / {_f(s['spawn_failed'], 'd')}"),
        ("profiler CPU, whole soak (% of one core)", _f(s["cpu_pct"], ".2f")),
        ("profiler CPU, first to last period line (%)", _f(s.get("cpu_pct_steady"), ".2f")),
        ("profiler CPU per period min / median / max (%)",
         " / ".join(f"{x:.2f}" for x in (min(periods), statistics.median(periods), max(periods))) if periods else "-"),
        ("profiler CPU up to the first period line (s)", _f(s.get("cpu_first_period_s"), ".2f")),
        ("profiler CPU whole process incl. stop (s; rusage)", _f(s["cpu_total_s"], ".2f")),
        (f"peak RSS, VmHWM at end of soak (MiB; target <= {TARGET_RSS_MIB:.0f})", _f(s["vmhwm_mib"], ".1f")),
        ("peak RSS incl. stop (MiB; ru_maxrss)", _f(s["maxrss_mib"], ".1f")),
        ("RSS at 50% / 75% / 100% of the soak / max of 1 s samples (MiB)",
         " / ".join(_f(s.get(f"rss_at_{q}_mib"), ".1f") for q in (50, 75, 100, "max"))),
        ("RSS slope over the last half (MiB/min; target ~0)", _f(s["rss_slope_last_half_mib_min"], "+.3f")),
        ("samples in period lines / lost", f"{s['samples']} / {s['lost']}"),
        (f"samples expected ({HZ} Hz x {NCPU} CPU x soak)", f"{HZ * NCPU * s['wall_s']:.0f}"),
        ("unwind failures (sum of period lines)", _fmt(s["unwind_failures"])),
        ("errors (sum of period lines)", _fmt(s["errors"])),
        ("profiles made (sum of period lines)", s["profiles"]),
        ("uploads ok / failed / dropped (profiler, at exit)",
         f"{s.get('uploads_ok', '-')} / {s.get('uploads_failed', '-')} / {s.get('uploads_dropped', '-')}"),
        ("sink: requests / MiB / mean KiB / other requests", f"{sink['requests']} / {sink['bytes'] / 2**20:.2f}"
         f" / {_f(mean(sink['bytes'], sink['requests'] * 1024), '.1f')} / {sink['other']}"),
        ("upload queue, max at a period line (B)", s.get("max_queue_b", "-")),
        ("stop after SIGTERM (s) / exit code", f"{s['stop_s']:.1f} / {s['returncode']}"),
        ("-- export phase: 2nd of two 10 s periods, in-process --", ""),
        ("spawns/s during the phase", _f(e["spawn_rate"], ".1f")),
        ("processes seen / exited / still known (over 2 periods)",
         f"{e['processes_seen']} / {e['processes_exited']} / {e['processes']}"),
        ("snapshot() cold / warm (ms; symbolization)", " / ".join(f"{x * 1e3:.1f}" for x in e["snapshot_s"])),
        ("samples / sample rows / stacks / locations / mappings",
         f"{e['samples']} / {e['sample_rows']} / {e['stacks']} / {e['locations']} / {e['mappings']}"),
        ("profiles / locations over all profiles", f"{e['profiles']} / {e['sum_locations']}"),
        ("tagging + grouping (ms)", f"{e['tag_split_s'] * 1e3:.2f}"),
        ("encode (core, all profiles) / zstd-1 (ms)", f"{e['encode_s'] * 1e3:.2f} / {e['sum_zstd_s'] * 1e3:.2f}"),
        ("encode+zstd per period: wall / CPU / wall 1st period (ms)",
         f"{e['sum_total_s'] * 1e3:.2f} / {e['sum_cpu_s'] * 1e3:.2f} / {e['cold_sum_total_s'] * 1e3:.2f}"),
        ("  zstd per profile: mean / max wall (ms)",
         f"{_f(mean(e['sum_zstd_s'] * 1e3, e['profiles']), '.2f')} / {e['max_profile_zstd_s'] * 1e3:.2f}"),
        ("pprof raw / zstd per period (KiB)", f"{e['sum_raw_b'] / 1024:.1f} / {e['sum_zstd_b'] / 1024:.1f}"),
        ("Runner.export end to end, zstd included (ms)", f"{e['runner_export_s'] * 1e3:.2f}"),
    ]
    w = max(len(r[0]) for r in rows)
    print(f"\n== continuous profiler, {HZ} Hz, {PERIOD_S} s periods, {NCPU} busy CPUs, "
          f"{args.rate:g} short-lived processes/s ==")
    for label, value in rows:
        print(f"{label:{w}}  {value}")


_f = lambda v, spec: "-" if v is None else f"{v:{spec}}"  # noqa: E731
_fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "0"  # noqa: E731


def findings(s, e, sink, args, foreign) -> list:
    growth = (s["rss_at_100_mib"] or 0) - (s["rss_at_50_mib"] or 0)
    checks = [
        (s["returncode"] != 0, f"profiler exited {s['returncode']}"),
        (s["exited_early"], "profiler exited before the end of the soak"),
        (s.get("killed"), "profiler did not stop within 30 s of SIGTERM; killed"),
        (s["vmhwm_mib"] > TARGET_RSS_MIB, f"peak RSS {s['vmhwm_mib']:.1f} MiB > {TARGET_RSS_MIB:.0f}"),
        ((s["rss_slope_last_half_mib_min"] or 0) > 0.1 or growth > 1.0,
         f"RSS grows in the last half: {growth:+.1f} MiB, {s['rss_slope_last_half_mib_min'] or 0:+.3f} MiB/min"),
        (s["lost"], f"{s['lost']} samples lost"),
        (s.get("uploads_failed") or s.get("uploads_dropped"),
         f"uploads failed {s.get('uploads_failed')} dropped {s.get('uploads_dropped')}"),
        (s.get("uploads_ok") != sink["requests"],
         f"profiler says {s.get('uploads_ok')} uploads ok, sink got {sink['requests']}"),
        (s["errors"], f"errors in period lines: {_fmt(s['errors'])}"),
        ((s["spawn_rate"] or 0) < 0.95 * args.rate, f"spawn rate {_f(s['spawn_rate'], '.1f')}/s < 95% of {args.rate:g}"),
        (s["spawn_failed"], f"{s['spawn_failed']} short-lived processes failed to spawn or exited non-zero"),
        (abs(s["samples"] - HZ * NCPU * s["wall_s"]) > 0.05 * HZ * NCPU * s["wall_s"],
         f"{s['samples']} samples, {HZ * NCPU * s['wall_s']:.0f} expected"),
    ]
    notes = [text for bad, text in checks if bad]
    notes += [f"profiler stderr: {ln[:200]}" for ln in s["warnings"][:10]]
    if len(s["warnings"]) > 10:
        notes.append(f"... {len(s['warnings']) - 10} more warning/error lines in its stderr")
    if foreign:
        notes.append("other profilers ran during the benchmark; figures are contaminated:")
        notes.extend("  " + f for f in sorted(foreign))
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=300.0, help="soak seconds (default 300)")
    ap.add_argument("--rate", type=float, default=200.0, help="short-lived processes/s (default 200)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("continuous: run as root (BPF)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM cleans up like Ctrl-C
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-continuous-"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        foreign = foreign_profilers()
        start_workloads(tmp)
        short = compile_c(tmp, "shortlived", SHORT_C)
        spawner = compile_c(tmp, "spawner", SPAWNER_C)
        spawn_log = tmp / "spawner.out"
        with open(spawn_log, "w") as out:  # bounded: soak + stop + export phase + margin
            spawn([str(spawner), str(args.rate), str(args.duration + 120), str(short)],
                  stdout=out, start_new_session=True)
        time.sleep(1.0)
        print(f"continuous: soak {args.duration:.0f} s, sink on 127.0.0.1:{server.server_port} ...",
              file=sys.stderr)
        s = soak(args, tmp, server.server_port, spawn_log, foreign)
        print("continuous: export phase (2 x 10 s) ...", file=sys.stderr)
        e = export_phase(spawn_log)
        foreign |= foreign_profilers()
    except KeyboardInterrupt:
        print("\ncontinuous: interrupted", file=sys.stderr)
        return 130
    finally:
        server.shutdown()
        for p in reversed(CHILDREN):
            if p.returncode is None and p.poll() is None:
                kill(p)
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    sink = dict(Sink.counts)
    times = sink.pop("times")
    sink["mean_interval_s"] = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    table(s, e, sink, args)
    notes = findings(s, e, sink, args, foreign)
    for n in notes:
        print("note: " + n)
    if args.json:
        meta = {"cpus": NCPU, "duration_s": args.duration, "rate": args.rate, "hz": HZ,
                "period_s": PERIOD_S, "kernel": os.uname().release, "notes": notes}
        Path(args.json).write_text(json.dumps({"meta": meta, "soak": s, "export": e, "sink": sink}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
