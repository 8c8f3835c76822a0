"""Helpers of the end-to-end tests: skip-or-fail, workload processes, running
`python -m ddprofiler record` as a subprocess, and predicates over the stacks it wrote.

Stacks come from `ddprofiler.pprof.reader` (`read_pprof`, `stacks`): frames are function
names, leaf first; unsymbolized frames are `<module basename>+0x<hex>`; marker frames are
bracketed (`[truncated]`, `[unknown]`); kernel frames are functions of the mapping
`[kernel.kallsyms]`.
"""
from __future__ import annotations

import dataclasses
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pytest

KERNEL_MAPPING = "[kernel.kallsyms]"
TRUNCATED = "[truncated]"
UNSYMBOLIZED = re.compile(r"^.+\+0x[0-9a-fA-F]+$")
REQUIRE_ENV = "DDPROF_REQUIRE_BPF"


def require_mode() -> bool:
    """True when a would-be skip must fail (CI sets DDPROF_REQUIRE_BPF=1)."""
    return os.environ.get(REQUIRE_ENV) == "1"


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when DDPROF_REQUIRE_BPF=1."""
    if require_mode():
        pytest.fail(f"{reason} (and {REQUIRE_ENV}=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- workload processes


class Workload:
    """A running workload that has printed "ready"; killed on close()."""

    def __init__(self, argv: Sequence[str], ready_timeout: float = 10.0, **popen_kw):
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_kw
        )
        self.pid = self.proc.pid
        self._wait_ready(ready_timeout)

    def _wait_ready(self, timeout: float) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        buf = b""
        while b"ready" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.close()
                raise AssertionError(f"{self.argv} did not print 'ready' in {timeout}s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")
                self.close()
                raise AssertionError(f"{self.argv} exited before 'ready': {err}")
            buf += chunk
        sel.close()

    def thread_ids(self) -> dict[str, list[int]]:
        """Thread name -> tids, from /proc/PID/task/*/comm."""
        out: dict[str, list[int]] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                name = (task / "comm").read_text().strip()
            except OSError:
                continue
            out.setdefault(name, []).append(int(task.name))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()

    def __enter__(self) -> "Workload":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- the profiler


@dataclasses.dataclass
class RecordResult:
    proc: subprocess.CompletedProcess
    path: Path
    profile: object = None         # profile_pb2.Profile when the file was written
    stacks: Optional[list] = None  # reader Stacks when the file was written

    def check(self) -> "RecordResult":
        """Assert a clean exit with a profile; return self."""
        assert self.proc.returncode == 0, (
            f"record exited {self.proc.returncode}\nstderr:\n{self.proc.stderr}"
        )
        assert self.stacks is not None, f"no profile at {self.path}\n{self.proc.stderr}"
        return self


def record_argv(args: Sequence[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "ddprofiler", "record", *map(str, args), "-o", str(out)]


def _duration(args: Sequence[str]) -> float:
    args = [str(a) for a in args]
    if "--duration" in args:
        return float(args[args.index("--duration") + 1])
    return 10.0


def load(path: Path):
    """(profile, stacks) of a pprof file, via the package's reader."""
    from ddprofiler.pprof.reader import read_pprof, stacks

    profile = read_pprof(str(path))
    return profile, stacks(profile)


def finish(proc: subprocess.CompletedProcess, out: Path) -> RecordResult:
    result = RecordResult(proc=proc, path=out)
    if proc.returncode == 0 and out.exists():
        result.profile, result.stacks = load(out)
    return result


def record(out: Path, *args, timeout: Optional[float] = None, prefix: Sequence[str] = ()) -> RecordResult:
    """Run `python -m ddprofiler record ARGS -o OUT` to completion (prefix: e.g. setpriv)."""
    if timeout is None:
        timeout = _duration(args) + 60
    argv = [*prefix, *record_argv(args, out)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv} did not finish in {timeout}s; stderr so far:\n{e.stderr}")
    return finish(proc, out)


def start_record(out: Path, *args) -> subprocess.Popen:
    """Start `record` in the background (stdout/stderr piped, text)."""
    return subprocess.Popen(
        record_argv(args, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_record(proc: subprocess.Popen, out: Path, timeout: float) -> RecordResult:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"record did not exit within {timeout}s; stderr:\n{stderr}")
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return finish(done, out)


# ---------------------------------------------------------------- stack predicates


def for_pid(stacks: Iterable, pid: int) -> list:
    return [s for s in stacks if s.pid == pid]


def total(stacks: Iterable) -> int:
    return sum(s.count for s in stacks)


def find_seq(frames: Sequence[str], seq: Sequence[str]) -> int:
    """Index where seq occurs contiguously in frames, or -1."""
    n = len(seq)
    for i in range(len(frames) - n + 1):
        if list(frames[i:i + n]) == list(seq):
            return i
    return -1


def weighted_fraction(stacks: Sequence, pred) -> float:
    """Share of the samples (weighted by count) whose stack satisfies pred."""
    n = total(stacks)
    return sum(s.count for s in stacks if pred(s)) / n if n else 0.0


def is_symbolized(frame: str) -> bool:
    return not UNSYMBOLIZED.match(frame) and not (frame.startswith("[") and frame.endswith("]"))


def kernel_function_names(profile) -> set[str]:
    """Names of functions that only locations of the kernel mapping carry."""
    strings = profile.string_table
    kernel_maps = {m.id for m in profile.mapping if strings[m.filename] == KERNEL_MAPPING}
    funcs = {f.id: strings[f.name] for f in profile.function}
    kernel, user = set(), set()
    for loc in profile.location:
        names = {funcs[line.function_id] for line in loc.line if line.function_id in funcs}
        (kernel if loc.mapping_id in kernel_maps else user).update(names)
    return kernel - user


def format_stacks(stacks: Sequence, n: int = 10, width: int = 30) -> str:
    """The n heaviest distinct stacks, for assertion messages."""
    agg: Counter = Counter()
    for s in stacks:
        agg[(s.pid, s.tid, s.thread_name, tuple(s.frames))] += s.count
    tot = sum(agg.values())
    lines = [f"{tot} samples, {len(agg)} distinct stacks; top {n} (leaf first):"]
    for (pid, tid, tname, frames), c in agg.most_common(n):
        shown = list(frames[:width]) + ([f"... {len(frames) - width} more"] if len(frames) > width else [])
        lines.append(f"  {c:6d} ({100 * c / max(tot, 1):5.1f}%) pid={pid} tid={tid} [{tname}] "
                     + " <- ".join(shown))
    return "\n".join(lines)
