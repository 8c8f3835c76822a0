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
smaps_rollup (anonymous memory against file pages) and the status file's totals. It prints
the peak, the RSS at each quarter, the slope over the second half (MiB a minute: flat is near
0) and those. It never asserts. Every process it starts is killed on
the way out, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import contextlib
import json
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
    args = ap.parse_args(argv)
    for tool in ("gcc", "cargo", "go"):
        if shutil.which(tool) is None:
            raise SystemExit(f"soak_build: {tool} is needed")
    tmp = Path(tempfile.mkdtemp(prefix="ddprof-soak-"))
    prepare(tmp, args.binaries)
    status = tmp / "status.json"
    stop = threading.Event()
    counts = {"runs": 0, "cargo": 0, "go": 0}
    load = threading.Thread(target=build_host_load, args=(tmp, args.binaries, stop, counts), daemon=True)
    prof = subprocess.Popen([args.python, "-m", "ddprofiler", "--output-dir", str(tmp / "out"),
                             "--upload-period", "10", "--status-file", str(status)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "profiler.log", "w"))
    rss: list[tuple[float, float]] = []
    started = time.monotonic()
    try:
        load.start()
        while (elapsed := time.monotonic() - started) < args.duration and prof.poll() is None:
            kib = rss_kib(prof.pid)
            if kib is not None:
                rss.append((elapsed, kib / 1024))
            time.sleep(1.0)
        peak = (rss_kib(prof.pid, "VmHWM:") or 0) / 1024
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
                      "last_period": doc.get("last_period")}
    finally:
        stop.set()
        prof.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            prof.wait(30)
        if prof.poll() is None:
            prof.kill()
    second_half = [p for p in rss if p[0] >= args.duration / 2]
    res = {
        "duration_s": round(rss[-1][0] if rss else 0, 1), "peak_rss_mib": round(peak, 1),
        "rss_at_quarters_mib": [round(min(rss, key=lambda p: abs(p[0] - args.duration * q / 4))[1], 1)
                                for q in (1, 2, 3, 4)] if rss else [],
        "slope_second_half_mib_per_min": round(s, 2) if (s := slope(second_half)) is not None else None,
        "load": counts, "smaps_rollup_at_end": rollup, "status": totals,
    }
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "rss_series": rss}))
    print(f"(profiler log: {tmp / 'profiler.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
