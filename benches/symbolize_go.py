#!/usr/bin/env python3
"""Symbolization of a large Go binary: ddprofiler's .gopclntab reader against the Go
toolchain's own `go tool addr2line`, on the same addresses in the same run.

Run: `python3 benches/symbolize_go.py [--binary PATH] [--addresses N] [--json out.json]`.
Default binary: the Go toolchain's `compile` (the largest Go program on the machine, ~25
MiB, symbol table but no DWARF). Ours reads a copy stripped with `strip` (no symbol table
left, as a `-ldflags=-s -w` build), so the names can only come from .gopclntab; the peer
reads the original. Addresses are the midpoints of N functions (from `go tool nm -size`).
Each side runs in a child process of its own, once with 1 address (the cold parse) and once
with the N addresses --repeat times (M lookups); lookups/s = (M - 1) / (t_M - t_1). Also counts the addresses where both name
the same function and file:line (the peer prints the physical function with the innermost
file:line; ours gives the whole inline chain, compared at the same two ends). Prints a table; never asserts on timings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from symbolize import ours  # noqa: E402  (same child process and measurements)


def go_tool() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.path.exists(go):
        sys.exit("symbolize_go: no Go toolchain (go on PATH or /usr/local/go/bin/go)")
    return go


def functions(go: str, path: str, n: int) -> list[int]:
    out = subprocess.run([go, "tool", "nm", "-size", "-sort", "address", path], capture_output=True,
                         text=True, check=True).stdout
    fns = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] in "Tt" and int(f[1]) > 8:
            fns.append(int(f[0], 16) + int(f[1]) // 2)
    step = max(1, len(fns) // n)
    return fns[::step][:n]


def peer(go: str, path: str, addrs: list[int]) -> dict:
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", go, "tool", "addr2line", path],
                       input="".join(f"{a:#x}\n" for a in addrs), capture_output=True, text=True, check=True)
    dt = time.perf_counter() - t
    lines = p.stdout.splitlines()
    pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2)]
    return {"seconds": dt, "hwm_kib": int(p.stderr.strip().splitlines()[-1]), "frames": pairs}


CHILD_FRAMES = """
import json, sys
from ddprofiler import _native
path, addrs = sys.argv[1], json.loads(sys.stdin.read())
res = _native.symbolize_file(path, addrs)
# go tool addr2line prints the physical (outermost) function with the innermost file:line.
print(json.dumps([[r[-1]["function"], r[0]["file"] + ":" + str(r[0]["line"])] if r else ["?", "?:0"]
                  for r in res]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", default=None)
    ap.add_argument("--addresses", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=20, help="times each address is looked up")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    go = go_tool()
    goroot = subprocess.run([go, "env", "GOROOT"], capture_output=True, text=True, check=True).stdout.strip()
    gotooldir = subprocess.run([go, "env", "GOTOOLDIR"], capture_output=True, text=True, check=True).stdout.strip()
    path = os.path.realpath(a.binary or os.path.join(gotooldir, "compile"))
    addrs = functions(go, path, a.addresses)
    # `go tool` takes ~0.1 s to start: enough lookups that the difference measures lookups.
    many = addrs * a.repeat
    with tempfile.TemporaryDirectory() as tmp:
        stripped = os.path.join(tmp, os.path.basename(path) + ".stripped")
        subprocess.run(["strip", "-o", stripped, path], check=True)
        r = {"binary": path, "goroot": goroot, "size_mib": os.path.getsize(path) / 2**20,
             "addresses": len(addrs)}
        r["ours_1"], r["ours_n"] = ours(stripped, addrs[:1]), ours(stripped, many)
        # Peak memory on the N distinct addresses: M results as Python objects would swamp it.
        r["ours_hwm_kib"] = ours(stripped, addrs)["hwm_kib"]
        mine = json.loads(subprocess.run([sys.executable, "-c", CHILD_FRAMES, stripped], input=json.dumps(addrs),
                                         capture_output=True, text=True, check=True).stdout)
    p1, pn, pd = peer(go, path, addrs[:1]), peer(go, path, many), peer(go, path, addrs)
    agree = sum(1 for m, (fn, fl) in zip(mine, pn["frames"]) if m[0] == fn and m[1] == fl)
    same_line = sum(1 for m, (_, fl) in zip(mine, pn["frames"]) if m[1] == fl)
    n = len(addrs)
    pn["frames"] = pd["frames"]
    ours_rate = (len(many) - 1) / max(1e-9, r["ours_n"]["seconds"] - r["ours_1"]["seconds"])
    peer_rate = (len(many) - 1) / max(1e-9, pn["seconds"] - p1["seconds"])
    r.update(peer_1_s=p1["seconds"], peer_n_s=pn["seconds"], peer_hwm_kib=pn["hwm_kib"], agree=agree,
             same_line=same_line)
    rows = [
        ("first symbolization, 1 address (s)", r["ours_1"]["seconds"], p1["seconds"]),
        (f"{len(many)} lookups, parse included (s)", r["ours_n"]["seconds"], pn["seconds"]),
        ("lookups/s once parsed", ours_rate, peer_rate),
        (f"peak RSS, {n} addresses (MiB)", r["ours_hwm_kib"] / 1024, pd["hwm_kib"] / 1024),
    ]
    print(f"== {path} ({r['size_mib']:.0f} MiB), {n} functions; ours on a stripped copy ==")
    print(f"{'':44}{'ddprofiler':>12}{'go addr2line':>14}{'ratio':>9}")
    for name, x, y in rows:
        print(f"{name:44}{x:12.3f}{y:14.3f}{(f'{x / y:.2f}x' if y else '-'):>9}")
    print(f"same innermost file:line as the peer: {same_line}/{n}; same function too: {agree}/{n}")
    print("(where only the function differs, the peer names an autogenerated wrapper, which Go's"
          " runtime.CallersFrames drops from inline chains, and so do we)")
    print("(ours' peak RSS includes the Python interpreter, ~10 MiB, and its lookups/s building the"
          " Python results;\n the peer's times include starting `go tool`)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    main()
