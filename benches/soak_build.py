#!/usr/bin/env python3
"""Memory of the continuous profiler on a machine that builds software (issue 13's soak).

Run as root: `python3 benches/soak_build.py [--duration 1200] [--binaries 200] [--json F]`.
It runs `python -m ddprofiler --output-dir DIR --upload-period 10` (20 Hz, the default
rate) for --duration seconds while a loop keeps the machine busy the way a build host is:

- --binaries distinct C programs (each its own function names, so its own build id and
  DWARF), compiled here with `gcc -g -O1`, each run for ~20 ms in turn;
- a Rust crate built again and again (`cargo build --release`, its source touched each
  time: rustc, its LLVM and the linker, large binaries with large symbol tables);
- a Go module built with `go build -a` (the compiler and the linker on the whole standard
  library).

Every second it reads the profiler's VmRSS (and VmHWM at the end), and at the end its
smaps_rollup (anonymous memory against file pages) and the status file's totals (resident
size, caches shed, parses evicted). It prints the peak, the RSS at each quarter, the slope
over the second half (MiB a minute: flat is near 0) and those. It never asserts. Every
process it starts is killed on the way out, Ctrl-C included.

`--agent-outage START` uploads to a receiver of its own on loopback (an HTTP server that
answers 200 to `POST /profiling/v1/input` and counts what it got) instead of writing files,
and closes that receiver's port for `--outage-periods` periods (5) from START seconds on:
the profiler's queue holds what it cannot send, and what the receiver got in the end is
compared with the profiler's exit summary (produced = sent + failed + dropped + not sent).
"""
from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import re
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

C_SRC = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
volatile double sink_%(n)d;
__attribute__((noinline)) static double leaf_%(n)d(double x) { for (int i = 0; i < 1000; i++) x = x * 1.0000001 + %(n)d; return x; }
__attribute__((noinline)) double middle_%(n)d(double x) { return leaf_%(n)d(x) + 1; }
int main(void) {
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { sink_%(n)d = middle_%(n)d(sink_%(n)d); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6 < 20);
    return 0;
}
"""
RUST_MAIN = 'fn main() { let v: Vec<u64> = (0..1000).map(|x| x * x).collect(); println!("{}", v.iter().sum::<u64>()); }\n'
GO_MAIN = 'package main\n\nimport (\n\t"encoding/json"\n\t"fmt"\n\t"net/http"\n)\n\nfunc main() {\n\tb, _ := json.Marshal(map[string]int{"a": 1})\n\tfmt.Println(string(b), http.StatusOK)\n}\n'


def rss_kib(pid: int, field: str = "VmRSS:") -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return None


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope in MiB a minute of (seconds, MiB) points."""
    if len(points) < 3:
        return None
    mt = statistics.fmean(t for t, _ in points)
    mm = statistics.fmean(m for _, m in points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (m - mm) for t, m in points) / den if den else None


class Receiver:
    """The Agent's profiling endpoint on loopback: 200 to each upload, counted; `down()`
    closes the port (connection refused), `up()` opens it again on the same port."""

    def __init__(self) -> None:
        self.received = 0
        self.bytes = 0
        self.port = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self.up()

    def up(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.startswith("/profiling/v1/input"):
                    receiver.received += 1
                    receiver.bytes += len(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def build_host_load(tmp: Path, binaries: int, stop: threading.Event, counts: dict) -> None:
    """The loop: the C binaries, then a Rust build, then a Go build, until stopped."""
    rust, go = tmp / "rustcrate", tmp / "gomod"
    env = {**os.environ, "CARGO_TARGET_DIR": str(tmp / "rust-target"), "GOCACHE": str(tmp / "gocache")}
    while not stop.is_set():
        for i in range(binaries):
            if stop.is_set():
                return
            subprocess.run([str(tmp / "bin" / f"p{i}")], check=False)
            counts["runs"] += 1
        (rust / "src" / "main.rs").touch()
        subprocess.run(["cargo", "build", "--release", "-q"], cwd=rust, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts["cargo"] += 1
        if stop.is_set():
            return
        subprocess.run(["go", "build", "-a", "-o", str(tmp / "gobin"), "."], cwd=go, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counts["go"] += 1


def prepare(tmp: Path, binaries: int) -> None:
    (tmp / "bin").mkdir()
    srcs = []
    for i in range(binaries):
        src = tmp / f"p{i}.c"
        src.write_text(C_SRC % {"n": i})
        srcs.append((src, tmp / "bin" / f"p{i}"))
    for src, out in srcs:
        subprocess.run(["gcc", "-g", "-O1", "-o", str(out), str(src)], check=True)
    rust = tmp / "rustcrate"
    (rust / "src").mkdir(parents=True)
    (rust / "Cargo.toml").write_text('[package]\nname = "soak"\nversion = "0.1.0"\nedition = "2021"\n')
    (rust / "src" / "main.rs").write_text(RUST_MAIN)
    go = tmp / "gomod"
    go.mkdir()
    (go / "go.mod").write_text("module soak\n\ngo 1.21\n")
    (go / "main.go").write_text(GO_MAIN)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=1200.0, help="seconds (default 1200)")
    ap.add_argument("--binaries", type=int, default=200, help="distinct C programs (default 200)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for -m ddprofiler")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--memory-budget", help="the profiler's --memory-budget (default: its own)")
    ap.add_argument("--max-queue-bytes", help="the profiler's --max-queue-bytes (default: its own)")
    ap.add_argument("--agent-outage", type=float, metavar="START",
                    help="upload to a receiver here and close it for --outage-periods periods from START s")
    ap.add_argument("--outage-periods", type=int, default=5)
    args = ap.parse_args(argv)
    period = 10
    for tool in ("gcc", "cargo", "go"):
        if shutil.which(tool) is None:
            raise SystemExit(f"soak_build: {tool} is needed")
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-soak-"))
    prepare(tmp, args.binaries)
    status = tmp / "status.json"
    stop = threading.Event()
    counts = {"runs": 0, "cargo": 0, "go": 0}
    load = threading.Thread(target=build_host_load, args=(tmp, args.binaries, stop, counts), daemon=True)
    receiver = Receiver() if args.agent_outage is not None else None
    dest = (["--agent-url", f"http://127.0.0.1:{receiver.port}"] if receiver
            else ["--output-dir", str(tmp / "out")])
    extra = [*(["--memory-budget", args.memory_budget] if args.memory_budget else []),
             *(["--max-queue-bytes", args.max_queue_bytes] if args.max_queue_bytes else [])]
    log_path = tmp / "profiler.log"
    prof = subprocess.Popen([args.python, "-m", "ddprofiler", *dest, "--upload-period", str(period),
                             "--status-file", str(status), *extra],
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "w"))
    outage = ((args.agent_outage, args.agent_outage + args.outage_periods * period)
              if receiver else None)
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        load.start()
        while (elapsed := time.monotonic() - started) < args.duration and prof.poll() is None:
            kib = rss_kib(prof.pid)
            if kib is not None:
                rss.append((elapsed, kib / 1024))
            if outage and receiver:
                if outage[0] <= elapsed < outage[1] and receiver._server is not None:
                    receiver.down()
                elif elapsed >= outage[1] and receiver._server is None:
                    receiver.up()
            time.sleep(1.0)
        peak = (rss_kib(prof.pid, "VmHWM:") or 0) / 1024
        cpu_s = None
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{prof.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rollup = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{prof.pid}/smaps_rollup").read_text().splitlines()[1:]:
                key, _, value = line.partition(":")
                if key in ("Rss", "Anonymous", "Pss_File", "Pss_Anon"):
                    rollup[key + "_mib"] = round(int(value.split()[0]) / 1024, 1)
        totals = {}
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(status.read_text())
            totals = {"periods": doc.get("periods"), "samples_total": doc.get("samples_total"),
                      "memory": (doc.get("last_period") or {}).get("memory"),
                      "last_period": doc.get("last_period")}
    finally:
        stop.set()
        prof.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            prof.wait(30)
        if prof.poll() is None:
            prof.kill()
        if receiver:
            receiver.down()
    second_half = [p for p in rss if p[0] >= args.duration / 2]
    res = {
        "duration_s": round(rss[-1][0] if rss else 0, 1), "peak_rss_mib": round(peak, 1),
        "profiler_cpu_pct_of_one_core": round(100 * cpu_s / rss[-1][0], 2) if cpu_s and rss else None,
        "rss_at_quarters_mib": [round(min(rss, key=lambda p: abs(p[0] - args.duration * q / 4))[1], 1)
                                for q in (1, 2, 3, 4)] if rss else [],
        "slope_second_half_mib_per_min": round(s, 2) if (s := slope(second_half)) is not None else None,
        "load": counts, "smaps_rollup_at_end": rollup, "status": totals,
    }
    text = log_path.read_text(errors="replace")
    res["warnings"] = [ln.split(" | ", 4)[-1][:200] for ln in text.splitlines() if "| WARN |" in ln]
    summary = next((ln.split(" | ", 4)[-1] for ln in text.splitlines() if "profiles produced" in ln), "")
    res["exit_summary"] = summary
    if receiver:
        m = re.search(r"(\d+) profiles produced: (\d+) sent, (\d+) failed.*?, (\d+) dropped.*?, (\d+) not sent", summary)
        res["outage"] = {"from_s": outage[0] if outage else None, "to_s": outage[1] if outage else None,
                         "received": receiver.received, "received_bytes": receiver.bytes,
                         **({k: int(v) for k, v in zip(("produced", "sent", "failed", "dropped", "not_sent"),
                                                       m.groups())} if m else {})}
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "rss_series": rss}))
    print(f"(profiler log: {tmp / 'profiler.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
