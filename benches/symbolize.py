#!/usr/bin/env python3
"""Symbolization of a large binary: ddprofiler's symbolizer against binutils' addr2line.

Run: `python3 benches/symbolize.py [--binary PATH] [--addresses N] [--json out.json]`.
Default binary: the largest shared object in the multiarch and LLVM library directories
(libLLVM here). Addresses are
the midpoints of N exported functions (from `nm -D -S`). Each symbolizer runs in a child
process of its own, so that its time and peak memory (VmHWM) are its own:
- ours: `_native.symbolize_file(path, addrs)` once with 1 address (the first, cold parse)
  and once with all N (parse + N lookups); lookups/s = (N - 1) / (t_N - t_1);
- addr2line: `addr2line -a -f -i -C -e PATH` with the same 1 and N addresses.
Prints a table with the ratios; never asserts on timings.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

CHILD_OURS = """
import json, sys, time
from ddprofiler import _native
path, addrs = sys.argv[1], json.loads(sys.stdin.read())
t = time.perf_counter(); res = _native.symbolize_file(path, addrs); dt = time.perf_counter() - t
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"seconds": dt, "hwm_kib": int(hwm), "named": sum(1 for r in res if r)}))
"""


def largest_so() -> str:
    pattern = ("/usr/lib/x86_64-linux-gnu/*.so*", "/usr/lib/aarch64-linux-gnu/*.so*", "/usr/lib/llvm-*/lib/*.so*")
    files = [f for g in pattern for f in glob.glob(g) if os.path.isfile(f) and not os.path.islink(f)]
    return max(files, key=os.path.getsize)


def functions(path: str, n: int) -> list[int]:
    out = subprocess.run(["nm", "-D", "-S", "--defined-only", path], capture_output=True, text=True).stdout
    rows = [line.split() for line in out.splitlines()]
    fns = [int(r[0], 16) + int(r[1], 16) // 2 for r in rows if len(r) == 4 and r[2] in "TtWw" and int(r[1], 16) > 4]
    step = max(1, len(fns) // n)
    return fns[::step][:n]


def ours(path: str, addrs: list[int]) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD_OURS, path], input=json.dumps(addrs),
                       capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def addr2line(path: str, addrs: list[int]) -> dict:
    t = time.perf_counter()
    p = subprocess.Popen(["addr2line", "-a", "-f", "-i", "-C", "-e", path, *map(hex, addrs)],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate()
    dt = time.perf_counter() - t
    lines = out.splitlines()
    # -a prints each address before its frames: the line after it is the outer... first name.
    named = sum(1 for i, line in enumerate(lines[:-1]) if line.startswith("0x") and lines[i + 1] != "??")
    return {"seconds": dt, "named": named}


def addr2line_hwm(path: str, addrs: list[int]) -> int:
    """Peak RSS (KiB) of addr2line on these addresses, from /usr/bin/time -v if present."""
    cmd = ["/usr/bin/time", "-f", "%M", "addr2line", "-f", "-i", "-C", "-e", path, *map(hex, addrs)]
    if not os.path.exists("/usr/bin/time"):
        return 0
    p = subprocess.run(cmd, capture_output=True, text=True)
    return int(p.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=None)
    ap.add_argument("--addresses", type=int, default=2000)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    path = os.path.realpath(a.binary or largest_so())
    addrs = functions(path, a.addresses)
    r = {"binary": path, "size_mib": os.path.getsize(path) / 2**20, "addresses": len(addrs)}
    r["ours_1"], r["ours_n"] = ours(path, addrs[:1]), ours(path, addrs)
    r["a2l_1"], r["a2l_n"] = addr2line(path, addrs[:1]), addr2line(path, addrs)
    r["a2l_hwm_kib"] = addr2line_hwm(path, addrs)
    n = len(addrs)
    ours_rate = (n - 1) / max(1e-9, r["ours_n"]["seconds"] - r["ours_1"]["seconds"])
    a2l_rate = (n - 1) / max(1e-9, r["a2l_n"]["seconds"] - r["a2l_1"]["seconds"])
    rows = [
        ("first symbolization, 1 address (s)", r["ours_1"]["seconds"], r["a2l_1"]["seconds"]),
        (f"{n} addresses, parse included (s)", r["ours_n"]["seconds"], r["a2l_n"]["seconds"]),
        ("lookups/s once parsed", ours_rate, a2l_rate),
        ("addresses named", r["ours_n"]["named"], r["a2l_n"]["named"]),
        ("peak RSS of the process (MiB)", r["ours_n"]["hwm_kib"] / 1024, r["a2l_hwm_kib"] / 1024),
    ]
    print(f"== {path} ({r['size_mib']:.0f} MiB), {n} exported functions ==")
    print(f"{'':44}{'ddprofiler':>12}{'addr2line':>12}{'ratio':>9}")
    for name, x, y in rows:
        ratio = f"{x / y:.2f}x" if y else "-"
        print(f"{name:44}{x:12.3f}{y:12.3f}{ratio:>9}")
    print("(ours' peak RSS includes the Python interpreter, ~10 MiB)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
