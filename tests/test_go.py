"""Go programs: a workload built here with the Go toolchain, stripped (`-ldflags=-s -w`: no
symbol table, no DWARF), profiled for real. Its frames are named from `.gopclntab`, with
the functions the compiler inlined, files and lines, and the stack reaches runtime.goexit.
"""
from __future__ import annotations

from collections import Counter
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddprofiler.pprof import read_pprof
from helpers import Workload, skip_or_fail

SRC = Path(__file__).parent / "workloads" / "gowork"
MAIN_GO = SRC / "main.go"


def go_tool() -> str | None:
    return shutil.which("go") or next((p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")
                                        if os.path.exists(p)), None)


@pytest.fixture(scope="module")
def gowork(tmp_path_factory) -> dict:
    go = go_tool()
    if go is None:
        skip_or_fail("the Go toolchain is needed to build the Go workload (apt-get install golang-go)")
    out = tmp_path_factory.mktemp("gowork")
    env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    bins = {}
    for name, flags in (("full", []), ("stripped", ["-ldflags=-s -w"])):
        subprocess.run([go, "build", *flags, "-o", str(out / name), "."], cwd=SRC, env=env,
                       check=True, capture_output=True)
        bins[name] = str(out / name)
    return bins


def line_of(pattern: str) -> int:
    for n, text in enumerate(MAIN_GO.read_text().splitlines(), 1):
        if pattern in text:
            return n
    raise AssertionError(f"{pattern!r} not in {MAIN_GO}")


def body_lines(func: str) -> range:
    start = line_of(f"func {func}(")
    lines = MAIN_GO.read_text().splitlines()
    end = next(n for n in range(start, len(lines) + 1) if lines[n - 1] == "}")
    return range(start, end + 1)


def frames_with_lines(profile) -> list:
    """Per sample: its count and its frames as (function, file, line), leaf first; a location
    without lines (an unsymbolized frame) is ("", "", 0), so that it cannot go unseen."""
    st = profile.string_table
    funcs = {f.id: (st[f.name], st[f.filename]) for f in profile.function}
    locs = {loc.id: [(*funcs[ln.function_id], ln.line) for ln in loc.line] or [("", "", 0)]
            for loc in profile.location}
    return [(s.value[0], [fr for lid in s.location_id for fr in locs[lid]]) for s in profile.sample]


def record(pid: int, out: Path, seconds: float = 3) -> list:
    res = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "--pid", str(pid), "--duration",
                          str(seconds), "--frequency", "199", "-o", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return frames_with_lines(read_pprof(str(out)))


CHAIN = ["main.mix", "main.scramble", "main.(*Worker).Spin", "main.run", "main.main",
         "runtime.main", "runtime.goexit"]


@pytest.mark.bpf
@pytest.mark.parametrize("variant", ["stripped", "full"])
def test_go_frames_inlined_files_and_lines(gowork, variant, tmp_path):
    binary = gowork[variant]
    if variant == "stripped":
        sections = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout
        assert ".gopclntab" in sections and ".symtab" not in sections and ".debug_info" not in sections
    with Workload([binary, "30"]) as w:
        samples = record(w.pid, tmp_path / "go.pprof")
    total = sum(c for c, _ in samples)
    assert total >= 200, total
    in_chain = [(c, fr) for c, fr in samples if [f[0] for f in fr] == CHAIN]
    # The hot loop is mix and scramble, inlined into Spin: most samples are there, and each of
    # them has the whole chain down to runtime.goexit, with the file and line of every frame.
    assert sum(c for c, _ in in_chain) >= 0.5 * total, samples[:5]
    mix = body_lines("mix")
    want = {"main.scramble": line_of("return mix(x+"), "main.(*Worker).Spin": line_of("w.acc += scramble"),
            "main.run": line_of("w.Spin(time.Now()"), "main.main": line_of("run(seconds))")}
    for _, fr in in_chain:
        assert fr[0][2] in mix, fr
        for name, file, line in fr[:5]:
            assert file == str(MAIN_GO), fr
            if name in want:
                assert line == want[name], fr
        assert re.search(r"/runtime/proc\.go$", fr[5][1]), fr
    # Every sample of the process is named: no hex frame anywhere.
    unnamed = [fr for _, fr in samples if any(not f[0] or "+0x" in f[0] for f in fr)]
    assert not unnamed, unnamed[:3]


ROOTS = {"runtime.goexit", "runtime.mstart", "runtime.mcall", "runtime.rt0_go", "runtime.morestack"}


@pytest.mark.bpf
def test_go_stacks_cross_from_the_system_stack_to_the_goroutine(gowork, tmp_path):
    """The garbage collector works on the thread's system stack (runtime.systemstack), whose
    frame pointers lead back into the goroutine's stack, elsewhere in memory: the stack
    snapshot cannot follow, the frame-pointer chain the sampler takes for Go programs does.
    Stacks go on below runtime.systemstack down to a root, instead of `[truncated]`."""
    with Workload([gowork["stripped"], "30", "alloc"]) as w:
        samples = record(w.pid, tmp_path / "gc.pprof", seconds=4)
    total = sum(c for c, _ in samples)
    names = [(c, [f[0] for f in fr]) for c, fr in samples]
    through = [(c, n) for c, n in names if "runtime.systemstack" in n]
    n_through = sum(c for c, _ in through)
    assert n_through >= 0.05 * total, f"too little GC work to test: {n_through}/{total}"
    cut = sum(c for c, n in through if n[-1] not in ROOTS)
    # The first samples of the pid come before the sampler is told it is a Go program.
    assert cut <= 0.1 * n_through, [n for _, n in through if n[-1] not in ROOTS][:5]
    # Allocation assists: the goroutine that allocated is below the system stack's frames.
    assists = [n for _, n in through
               if "main.churn" in n and n.index("runtime.systemstack") < n.index("main.churn")]
    assert assists, [n for _, n in through][:5]
    for n in assists:
        assert n[n.index("main.churn"):] == ["main.churn", "main.allocate", "main.main", "runtime.main",
                                             "runtime.goexit"], n
    rooted = sum(c for c, n in names if n[-1] in ROOTS)
    assert rooted >= 0.9 * total, Counter(n[-1] for _, n in names).most_common(5)
