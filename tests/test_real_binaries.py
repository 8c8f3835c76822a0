"""Issue 10, "Stacks that never lie", on real binaries nobody here wrote: side by side with
`perf record --call-graph dwarf` on the same process at the same time (`openssl speed`,
Debian's python3, node), and one test over all workloads that no stack ends unmarked
anywhere but a known entry point (the rules of tests/test_cases.py's docstring).
"""
from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import (Workload, kernel_function_names, record, total, weighted_fraction)
from cases_support import (DEPTH, DURATION, PY_MODES, RUN, ending, need, py_installed, reaches_entry,
                           record_pid, running, show)
from cases_support import built  # noqa: F401 - a fixture, found by pytest in this module

pytestmark = pytest.mark.bpf


# ---------------------------------------------------------------- real binaries, side by side with perf


PERF_ROOTS = {"_start", "__libc_start_call_main", "__libc_start_main", "__libc_start_main_impl"}


def perf_stacks(data: Path) -> list:
    """`perf script` of a `perf record --call-graph dwarf` file: function names, leaf first."""
    perf = need("perf", "linux-perf")
    out = subprocess.run([perf, "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym,dso"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    stacks, cur = [], None
    for line in out.stdout.splitlines():
        if not line.strip():
            if cur is not None:
                stacks.append(cur)
            cur = None
        elif not line[0].isspace():
            cur = []
        elif cur is not None:
            parts = line.split()
            cur.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1]) if len(parts) > 1 else "[unknown]")
    if cur is not None:
        stacks.append(cur)
    return stacks


def side_by_side(tmp_path: Path, pid: int, duration: str = DURATION):
    """ddprofiler and `perf record --call-graph dwarf` on pid at the same time."""
    perf = need("perf", "linux-perf")
    data = tmp_path / "perf.data"
    pr = subprocess.Popen([perf, "record", "-q", "--call-graph", "dwarf", "-F", "499", "-p", str(pid),
                           "-o", str(data), "--", "sleep", str(float(duration) + 0.5)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res, kernel, mine = record_pid(tmp_path, pid, duration=duration)
    finally:
        _, err = pr.communicate(timeout=120)
    assert pr.returncode == 0 and data.exists(), f"perf record failed: {err[-3000:]}"
    return res, kernel, mine, perf_stacks(data)


def compare_with_perf(what: str, kernel: set, mine: list, theirs: list) -> str:
    n = total(mine)
    ours_frac = weighted_fraction(mine, lambda s: reaches_entry(s.frames))
    perf_frac = sum(1 for st in theirs if any(f in PERF_ROOTS for f in st)) / max(1, len(theirs))
    ends = Counter()
    for s in mine:
        ends[ending(s, kernel)] += s.count
    summary = (f"{what}: ddprofiler {ours_frac:.1%} of {n} samples reach an entry point "
               f"(endings {dict(ends)}); perf --call-graph dwarf {perf_frac:.1%} of {len(theirs)} "
               f"reach {sorted(PERF_ROOTS)}")
    print(summary)
    assert n >= 300 and len(theirs) >= 100, f"too few samples\n{summary}\n{show(mine)}"
    not_complete = [s for s in mine if not reaches_entry(s.frames)]
    assert ours_frac >= perf_frac - 0.02, (
        f"{summary}: ddprofiler must be at least perf's fraction minus 2 points\n"
        f"our stacks that do not reach an entry point:\n{show(not_complete)}")
    return summary


@pytest.mark.parametrize("algo", ["sha512", "rsa2048"])
def test_openssl_speed_vs_perf(tmp_path, algo):
    """OpenSSL's perlasm (CFA in rax, CFA expressions): at least as complete as perf."""
    openssl = need("openssl", "openssl")
    with running([openssl, "speed", "-seconds", "6", algo], tmp_path) as p:
        res, kernel, mine, theirs = side_by_side(tmp_path, p.pid)
    compare_with_perf(f"openssl speed {algo}", kernel, mine, theirs)


def assert_entry_or_marked(what: str, kernel: set, mine: list) -> None:
    done = weighted_fraction(mine, lambda s: ending(s, kernel) != "unmarked")
    unmarked = [s for s in mine if ending(s, kernel) == "unmarked"]
    assert done >= 0.95 and not unmarked, (
        f"{what}: {done:.1%} of samples end at an entry point or a marker (want >= 95%), "
        f"{total(unmarked)} end unmarked elsewhere (want none):\n{show(unmarked)}")


def test_debian_python3_vs_perf(debian_python, tmp_path):
    script = "print('ready', flush=True)\nwhile True:\n    sum(i * i for i in range(1000))\n"
    with Workload([debian_python, "-c", script]) as w:
        res, kernel, mine, theirs = side_by_side(tmp_path, w.pid)
    assert_entry_or_marked("Debian's python3", kernel, mine)
    compare_with_perf("Debian's python3", kernel, mine, theirs)


def test_node_vs_perf(tmp_path):
    node = need("node", "nodejs")
    script = ("console.log('ready');"
              "function leaf(n){let x=0;for(let i=0;i<n;i++){x+=Math.sqrt(i)*i%7;}return x;}"
              "function mid(n){return leaf(n)+1;}"
              "let s=0;for(;;){s+=mid(1e6);}")
    with Workload([node, "-e", script]) as w:
        res, kernel, mine, theirs = side_by_side(tmp_path, w.pid)
    assert_entry_or_marked("node", kernel, mine)
    compare_with_perf("node", kernel, mine, theirs)


# ---------------------------------------------------------------- kind 9: no stack ends unmarked


def test_no_stack_ends_unmarked(built, workloads, tmp_path):
    """Every case and every workload of tests/workloads at once, recorded system-wide: the
    root-most frame of every one of their samples is an entry point or a marker frame, or the
    stack is kernel-only."""
    procs: list = []
    names: set = set()

    def start(argv, cwd, name):
        procs.append(subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        names.add(name)

    try:
        d = built("openssl-cfa-expr")
        start(["./cfa", RUN], d, "cfa")
        d = built("signal-frames")
        start(["./sig", "normal", RUN], d, "sig")
        start(["./sig", "alt", RUN], d, "sig")
        start(["./vf", RUN], built("vfork-register-ra"), "vf")
        start(["./stage1", "3", RUN], built("exec-same-pid"), "stage1")
        names.add("stage2")
        start(["./rec", RUN, str(DEPTH)], built("deep-recursion"), "rec")
        start(["./m", RUN], built("musl-static"), "m")
        d = built("debug-frame-only")
        start(["./df-inline", RUN], d, "df-inline")
        start(["./df-split", RUN], d, "df-split")
        d = built("cgo-stack-switch")
        start(["./cgocb", RUN, "c"], d, "cgocb")
        start(["./cgocb", RUN], d, "cgocb")
        d = built("go-pprof-stripped")
        start(["./gopprof", tmp_path / "go.pprof", RUN], d, "gopprof")
        d = built("python-perf-trampoline")
        for version, xopt in PY_MODES:
            for py in py_installed(version)[-1:]:
                start([py, "-X", xopt, "app.py", RUN], d, f"python{version}")
        for name, argv in (("chain", [RUN]), ("shlib", [RUN]), ("threads", [RUN]),
                           ("recurse", [RUN, "200"]), ("syscalls", [RUN])):
            start([workloads[name], *argv], workloads[name].parent, name)
        time.sleep(1.0)
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"workloads exited early: {dead}"
        res = record(tmp_path / "all.pprof", "--duration", "6", "--frequency", "499").check()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    kernel = kernel_function_names(res.profile)
    pids = {p.pid for p in procs}
    mine = lambda s: s.pid in pids or s.process_name in names  # noqa: E731
    ours = [s for s in res.stacks if mine(s)]
    others = [s for s in res.stacks if not mine(s) and s.pid > 0]
    unmarked = [s for s in ours if ending(s, kernel) == "unmarked"]
    by_process = Counter()
    for s in unmarked:
        by_process[s.process_name] += s.count
    other_unmarked = [s for s in others if ending(s, kernel) == "unmarked"]
    print(f"other processes: {total(other_unmarked)} of {total(others)} samples end unmarked\n"
          f"{show(other_unmarked, n=10)}")
    seen = Counter()
    for s in ours:
        seen[s.process_name] += s.count
    assert total(ours) >= 2000, f"few samples of the workloads: {dict(seen)}"
    assert not unmarked, (
        f"{total(unmarked)} of {total(ours)} samples of the workloads end unmarked outside an "
        f"entry point (by process: {dict(by_process)}; samples per process: {dict(seen)}):\n"
        f"{show(unmarked, n=25)}")
