"""What the case tests share (tests/test_cases.py, tests/test_real_binaries.py): how a stack
may end and the helpers that judge it, the tools and the builds of tests/cases/, and
`record_pid`. See tests/test_cases.py for the rules."""
from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest

from helpers import (TRUNCATED, UNSYMBOLIZED, for_pid, format_stacks, kernel_function_names,
                     record, total, weighted_fraction)


CASES = Path(__file__).parent / "cases"
FREQ = "999"
DURATION = "4"
RUN = "60"          # seconds a case may run; it is killed once its profile is written
MIN_FRAC = 0.95

ELIDED = "[elided frames]"
# The known entry points: a stack whose root-most frame is one of them is complete.
# (Go's are runtime.goexit.abi0 etc. in `go tool nm`; .gopclntab names them without .abi0.)
ENTRY_POINTS = {
    "_start", "__libc_start_main", "__libc_start_call_main", "__libc_start_main_impl",
    "start_thread", "clone", "clone3", "__clone", "__clone3", "_dl_start", "_dl_start_user",
    # musl
    "start", "libc_start_main_stage2", "_start_c",
    # Go; runtime.mcall roots the scheduler's stack (the goroutine that called it is parked,
    # not a caller: Go's own profiler ends such stacks there too)
    "runtime.goexit", "runtime.mstart", "runtime.rt0_go", "runtime.mcall",
}
# What may sit below main in a glibc program (2.34+), root-most last.
GLIBC_START = {"__libc_start_call_main", "__libc_start_main_impl", "__libc_start_main", "_start"}


# ---------------------------------------------------------------- names and stack shapes


def norm(name: str) -> str:
    """A frame name without Go's ABI suffix, glibc's internal prefix or a symbol version."""
    name = name.split("@")[0] if not name.startswith("[") else name
    if name.endswith(".abi0"):
        name = name[:-len(".abi0")]
    if name.startswith("__GI_"):
        name = name[len("__GI_"):]
    return name


def is_entry(frame: str) -> bool:
    return norm(frame) in ENTRY_POINTS


def is_marker(frame: str) -> bool:
    """A marker frame that may end a stack: it says the stack is not whole, and why."""
    return frame == TRUNCATED or frame.startswith("[unwind failed: ") or frame == "[process exited]"


def user_frames(s, kernel: set) -> list:
    """The frames below the kernel's (leaf first), names normalized."""
    i = 0
    while i < len(s.frames) and s.frames[i] in kernel:
        i += 1
    return [norm(f) for f in s.frames[i:]]


def reaches_entry(frames: Sequence[str]) -> bool:
    """The root-most frame is a known entry point. A stripped executable's _start has no
    name (`<file>+0x<address>`); directly under glibc's __libc_start_main, which only _start
    calls, it counts as the entry point it is."""
    if frames and is_entry(frames[-1]):
        return True
    return (len(frames) >= 2 and UNSYMBOLIZED.match(frames[-1]) is not None
            and norm(frames[-2]) in ("__libc_start_main", "__libc_start_main_impl"))


def ending(s, kernel: set) -> str:
    """'entry', 'marker', 'kernel' (a kernel-only stack) or 'unmarked'."""
    if s.frames and all(f in kernel for f in s.frames):
        return "kernel"
    if not s.frames:
        return "unmarked"
    if reaches_entry(s.frames):
        return "entry"
    if is_marker(s.frames[-1]):
        return "marker"
    return "unmarked"


def start_tail(tail: Sequence[str], allowed: Sequence[str]) -> bool:
    """tail (the frames below main, root-most last) is a nonempty ordered subsequence of
    allowed (the start code of the C library) that ends at an entry point."""
    if not tail or not is_entry(tail[-1]):
        return False
    it = iter(allowed)
    return all(any(f == a for a in it) for f in tail)


def glibc_rooted(tail: Sequence[str]) -> bool:
    return (0 < len(tail) <= 4 and is_entry(tail[-1]) and all(f in GLIBC_START for f in tail))


def chain_then_glibc(chain: Sequence[str], kernel: set) -> Callable:
    """Predicate: the user frames are exactly chain (leaf first) then glibc's start code."""
    n = len(chain)
    return lambda s: (user_frames(s, kernel)[:n] == list(chain)
                      and glibc_rooted(user_frames(s, kernel)[n:]))


def compress(frames: Sequence[str], head: int = 24, tail: int = 10) -> list:
    """frames with runs of one frame as `name x N`, and the middle of a long stack left out,
    so that an assertion message shows both ends of a deep stack."""
    out: list = []
    for f in frames:
        if out and out[-1][0] == f:
            out[-1][1] += 1
        else:
            out.append([f, 1])
    shown = [f if n == 1 else f"{f} x{n}" for f, n in out]
    if len(shown) > head + tail:
        shown = shown[:head] + [f"... {len(shown) - head - tail} more ..."] + shown[-tail:]
    return shown


def show(stacks: Sequence, n: int = 8) -> str:
    """format_stacks of stacks, with repeated frames compressed and both ends shown."""
    short = [dataclasses.replace(s, frames=compress(s.frames)) for s in stacks]
    return format_stacks(short, n=n, width=1000)


def assert_right(stacks: Sequence, relevant: Callable, right: Callable, what: str,
                 answer: str, min_samples: int = 200, min_frac: float = MIN_FRAC) -> None:
    """At least min_frac of the relevant samples (weighted) satisfy right()."""
    rel = [s for s in stacks if relevant(s)]
    n = total(rel)
    print(f"{what}: {n} relevant samples of {total(stacks)}\n{show(rel)}")
    assert n >= min_samples, (
        f"{what}: only {n} relevant samples (want >= {min_samples}); all samples:\n{show(stacks)}")
    frac = weighted_fraction(rel, right)
    wrong = [s for s in rel if not right(s)]
    assert frac >= min_frac, (
        f"{what}: {frac:.1%} of {n} relevant samples have the right stack (want >= {min_frac:.0%})\n"
        f"right answer (leaf first): {answer}\nthe wrong ones:\n{show(wrong)}")


def annotate_mappings(res) -> None:
    """Give each reader Stack of res a `maps` list: the mapping file name of each frame."""
    prof = res.profile
    st = prof.string_table
    maps = {m.id: st[m.filename] for m in prof.mapping}
    per_loc = {loc.id: [maps.get(loc.mapping_id, "")] * max(1, len(loc.line)) for loc in prof.location}
    for sample, s in zip(prof.sample, res.stacks):
        s.maps = [m for lid in sample.location_id for m in per_loc.get(lid, [""])]


# ---------------------------------------------------------------- tools and builds


GO_CANDIDATES = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def need(tool: str, package: str) -> str:
    """The tool's path; a failure (not a skip) when missing: .ci/run installs it."""
    path = shutil.which(tool) or (next((p for p in GO_CANDIDATES if os.access(p, os.X_OK)), None)
                                  if tool == "go" else None)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/run and `make deps` install it: "
                    f"apt-get install {package})", pytrace=False)
    return path


def go_env() -> dict:
    """The machine's Go, no download (the cases have no dependencies), the user's build cache."""
    return dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOPROXY="off", CGO_ENABLED="1")


def sh(cmd: Sequence[str], cwd: Path, env: Optional[dict] = None) -> None:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{res.stdout}\n{res.stderr}",
                    pytrace=False)


DF_FLAGS = ["-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
            "-fomit-frame-pointer", "-fno-optimize-sibling-calls"]


def build_case(case: str, out: Path) -> None:
    """The README.txt's build line of the case, run in out (a copy of its sources)."""
    gcc = lambda: need("gcc", "gcc")  # noqa: E731
    if case == "openssl-cfa-expr":
        sh([gcc(), "-O2", "-g", "-fno-omit-frame-pointer", "-o", "cfa", "main.c", "spin.S"], out)
    elif case == "signal-frames":
        sh([gcc(), "-O2", "-g", "-fno-optimize-sibling-calls", "-fno-inline", "-o", "sig", "sig.c"], out)
    elif case == "vfork-register-ra":
        sh([gcc(), "-O2", "-g", "-fno-optimize-sibling-calls", "-o", "vf", "vf.c"], out)
    elif case == "exec-same-pid":
        for stage in ("1", "2"):
            sh([gcc(), "-O2", "-g", "-no-pie", "-fno-pie", f"-DSTAGE={stage}", "-o", f"stage{stage}",
                "stage.c"], out)
    elif case == "deep-recursion":
        sh([gcc(), "-O2", "-g", "-o", "rec", "rec.c"], out)
    elif case == "musl-static":
        sh([need("musl-gcc", "musl-tools"), "-static", "-O2", "-g", "-fno-optimize-sibling-calls",
            "-o", "m", "m.c"], out)
    elif case == "debug-frame-only":
        sh([gcc(), *DF_FLAGS, "-o", "df-inline", "df.c"], out)
        sh([gcc(), *DF_FLAGS, "-o", "df-split", "df.c"], out)
        objcopy, strip = need("objcopy", "binutils"), need("strip", "binutils")
        sh([objcopy, "--only-keep-debug", "df-split", "df-split.debug"], out)
        sh([strip, "--strip-all", "df-split"], out)
        sh([objcopy, "--add-gnu-debuglink=df-split.debug", "df-split"], out)
    elif case == "cgo-stack-switch":
        need("gcc", "gcc")
        sh([need("go", "golang-go"), "build", "-o", "cgocb", "."], out, env=go_env())
    elif case == "go-pprof-stripped":
        sh([need("go", "golang-go"), "build", "-ldflags=-s -w", "-o", "gopprof", "."], out,
           env=go_env())
    elif case == "python-perf-trampoline":
        pass  # app.py runs as it is
    else:
        raise AssertionError(f"no build line for case {case}")


class Builds:
    """The cases, each built once per session (on first use) in a tmp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, Path] = {}

    def __call__(self, case: str) -> Path:
        if case not in self.done:
            out = self.root / case
            shutil.copytree(CASES / case, out)
            build_case(case, out)
            self.done[case] = out
        return self.done[case]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Builds:
    return Builds(tmp_path_factory.mktemp("cases"))


@contextmanager
def running(argv: Sequence, cwd: Path, settle: float = 0.3, **kw) -> Iterator[subprocess.Popen]:
    """A case process (the cases print nothing): started, checked alive, killed at the end."""
    proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"{argv} exited {proc.returncode} at once: {err}", pytrace=False)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def record_pid(tmp_path: Path, pid: int, *extra, name: str = "out.pprof", duration: str = DURATION):
    res = record(tmp_path / name, "--pid", pid, "--duration", duration, "--frequency", FREQ,
                 *extra).check()
    return res, kernel_function_names(res.profile), for_pid(res.stacks, pid)


# ---------------------------------------------------------------- case parameters both files use

DEPTH = 1000  # the deep-recursion case's depth (its main.c)

PY_INTERPRETERS = {f"3.{m}": f"~/.pyenv/versions/3.{m}.*/bin/python3.{m}" for m in (12, 13, 14)}
PY_REQUIRED = {"3.12", "3.13"}   # as tests/test_python.py: the machine's pyenv builds


def py_installed(label: str) -> list:
    return sorted(glob.glob(os.path.expanduser(PY_INTERPRETERS[label])))


PY_TESTED = [v for v in PY_INTERPRETERS if v in PY_REQUIRED or py_installed(v)]
PY_MODES = [(v, x) for v in PY_TESTED for x in ("perf", "perf_jit")
            if x == "perf" or int(v.split(".")[1]) >= 13]
