"""Least privilege, for real (issue 11): the profiler runs as `nobody` holding exactly
CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_SYSLOG as ambient
capabilities (setpriv; nothing else in its bounding set) and profiles root's processes with
full stacks, kernel frames named; then each capability is dropped in turn and the run says
at start which one is missing and what it costs, and the counters and markers show the cost.

The profiler must be importable by `nobody`: this Python may live under /root (mode 700,
e.g. pyenv) and the package in a checkout nobody can read, so the package, its
dependencies and the workloads are copied into a world-readable temporary directory, and
the interpreter is this one when `nobody` can run it, else Debian's python3 of the same
version (the dependencies' C extensions are built for it).
"""
from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ddprofiler import privileges

from helpers import Workload, find_seq, for_pid, format_stacks, kernel_function_names, load, \
    skip_or_fail, total

pytestmark = pytest.mark.bpf

# setpriv names of privileges.LEAST_CAPABILITIES, the set the docs and deploy/ grant.
LEAST = tuple(c.removeprefix("CAP_").lower() for c in privileges.LEAST_CAPABILITIES)
CHAIN = ["leaf", "middle", "outer", "main"]
NO_ACCESS = "[unwind failed: no access to the file]"
# The packages `python -m ddprofiler record` imports, by import name.
IMPORTS = ("ddprofiler", "click", "google.protobuf", "zstandard")


def _as_nobody(caps: tuple[str, ...]) -> list[str]:
    """setpriv prefix: uid/gid nobody, no groups, exactly `caps` (inheritable, ambient and
    bounding sets), so that nothing else can be gained back."""
    mine = ",".join(f"+{c}" for c in caps)
    sets = f"-all,{mine}" if caps else "-all"
    return ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
            f"--inh-caps={sets}", f"--ambient-caps={sets}", f"--bounding-set={sets}"]


def _stage(root: Path) -> Path:
    """Copies the packages of IMPORTS under root/site; returns it."""
    site = root / "site"
    for name in IMPORTS:
        module = importlib.import_module(name)
        top = name.split(".")[0]
        src = Path(module.__file__).parent  # type: ignore[arg-type]
        for _ in name.split(".")[1:]:
            src = src.parent
        shutil.copytree(src, site / top, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return site


def _interpreter(site: Path) -> str:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(site)}
    probe = "import ddprofiler._native, click, zstandard, google.protobuf"
    candidates = [os.path.realpath(sys.executable)]
    if sys.version_info[:2] == tuple(_version("/usr/bin/python3") or ()):
        candidates.append("/usr/bin/python3")
    errors = []
    for python in candidates:
        res = subprocess.run([*_as_nobody(()), python, "-c", probe], env=env,
                             capture_output=True, text=True)
        if res.returncode == 0:
            return python
        errors.append(f"{python}: {res.stderr.strip()[-300:]}")
    skip_or_fail("no interpreter that `nobody` can run imports the package: " + "; ".join(errors))
    raise AssertionError("unreachable")


def _version(python: str) -> list[int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [int(x) for x in out.split()]


class Staged:
    def __init__(self, root: Path, workloads: dict[str, Path]):
        self.root = root
        self.site = _stage(root)
        self.python = _interpreter(self.site)
        self.out = root / "out"
        self.out.mkdir()
        self.out.chmod(0o777)
        # Root's workloads; `chain` readable by root only, so that unwinding it needs
        # CAP_DAC_READ_SEARCH as well as CAP_SYS_PTRACE.
        self.chain = root / "private" / "chain"
        self.chain.parent.mkdir()
        shutil.copy(workloads["chain"], self.chain)
        self.chain.chmod(0o700)
        self.syscalls = root / "syscalls"
        shutil.copy(workloads["syscalls"], self.syscalls)

    def record(self, caps: tuple[str, ...], pids: list[int], name: str) -> tuple[subprocess.CompletedProcess, Path]:
        out = self.out / f"{name}.pprof"
        argv = [*_as_nobody(caps), self.python, "-m", "ddprofiler", "record",
                *[a for pid in pids for a in ("--pid", str(pid))],
                "--duration", "3", "-o", str(out)]
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(self.site), "HOME": str(self.out)}
        res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=90)
        return res, out


@pytest.fixture(scope="module")
def staged(workloads):
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed to run the profiler as another user")
    root = Path(tempfile.mkdtemp(prefix="ddprof-caps-"))
    root.chmod(0o755)
    try:
        yield Staged(root, workloads)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def targets(staged):
    """Root's processes: the unreadable chain and the syscall loop (kernel frames)."""
    with Workload([staged.chain, "120"]) as chain, Workload([staged.syscalls, "120"]) as sysc:
        yield chain, sysc


def _counters(stderr: str) -> dict[str, int]:
    """The record summary's counters (on stderr): 'unwinding failures: N (reason N, ...)'
    and 'other errors: name N, ...'."""
    found = {}
    for line in stderr.splitlines():
        if not line.lstrip().startswith(("unwinding failures:", "other errors:")):
            continue
        for part in re.findall(r"([a-z_]+) (\d+)", line.split(":", 1)[-1]):
            found[part[0]] = int(part[1])
    return found


def _chain_fraction(stacks) -> float:
    n = total(stacks)
    return sum(s.count for s in stacks if find_seq(s.frames, CHAIN) >= 0) / n if n else 0.0


def test_least_set_as_nobody_profiles_root_processes_fully(staged, targets):
    chain, sysc = targets
    res, out = staged.record(LEAST, [chain.pid, sysc.pid], "least")
    assert res.returncode == 0, res.stderr
    # Nothing missing: no warning at start, none while profiling.
    assert "missing CAP_" not in res.stderr and "WARNING" not in res.stderr, res.stderr
    profile, stacks = load(out)
    mine = for_pid(stacks, chain.pid)
    assert total(mine) >= 50, format_stacks(stacks)
    assert _chain_fraction(mine) >= 0.9, format_stacks(mine)
    assert not any(NO_ACCESS in s.frames for s in stacks)
    # CAP_SYSLOG: the syscall loop's kernel frames are named (read() of /dev/zero).
    kernel = kernel_function_names(profile)
    assert any("read" in name for name in kernel), sorted(kernel)[:20]
    assert "no_access" not in _counters(res.stderr) and "files_denied" not in _counters(res.stderr)


@pytest.mark.parametrize("dropped", ["sys_ptrace", "dac_read_search"])
def test_without_file_access_stacks_stop_marked_and_counted(staged, targets, dropped):
    chain, _ = targets
    res, out = staged.record(tuple(c for c in LEAST if c != dropped), [chain.pid], f"no-{dropped}")
    assert res.returncode == 0, res.stderr
    cap = f"CAP_{dropped.upper()}"
    # At start: which capability, and what it costs.
    start = [line for line in res.stderr.splitlines() if f"missing {cap}: " in line]
    assert start and "unwind_no_access" in start[0], res.stderr
    assert "to profile fully, grant the missing capabilities" in res.stderr
    assert "setcap" not in res.stderr
    # While profiling: the file refused, logged once with the fix.
    assert res.stderr.count("(permission denied): the code of other users' processes") == 1, res.stderr
    _, stacks = load(out)
    mine = for_pid(stacks, chain.pid)
    marked = sum(s.count for s in mine if NO_ACCESS in s.frames)
    assert total(mine) >= 50 and marked >= 0.9 * total(mine), format_stacks(mine)
    counters = _counters(res.stderr)
    assert counters.get("no_access", 0) >= marked and counters.get("files_denied", 0) >= 1, res.stderr


def test_without_syslog_kernel_frames_are_not_named(staged, targets):
    _, sysc = targets
    res, out = staged.record(tuple(c for c in LEAST if c != "syslog"), [sysc.pid], "no-syslog")
    assert res.returncode == 0, res.stderr
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    kptr = int(Path("/proc/sys/kernel/kptr_restrict").read_text())
    if kptr == 0 and paranoid <= 1:
        pytest.skip("kallsyms shows addresses to every user here (kptr_restrict=0, perf_event_paranoid<=1)")
    assert re.search(r"missing CAP_SYSLOG: .*kernel frames stay unsymbolized", res.stderr), res.stderr
    profile, stacks = load(out)
    assert total(for_pid(stacks, sysc.pid)) >= 50, format_stacks(stacks)
    assert not any("read" in name for name in kernel_function_names(profile))


@pytest.mark.parametrize("dropped", ["bpf", "perfmon"])
def test_without_bpf_or_perfmon_it_does_not_start(staged, targets, dropped):
    chain, _ = targets
    res, _ = staged.record(tuple(c for c in LEAST if c != dropped), [chain.pid], f"no-{dropped}")
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"missing CAP_{dropped.upper()} " in lines[0], res.stderr
    assert "setcap" not in lines[0] and "AmbientCapabilities=" in lines[0]


def test_staged_chain_is_unreadable_to_nobody(staged):
    # The premise of the CAP_DAC_READ_SEARCH case: root's binary, mode 700.
    mode = staged.chain.stat().st_mode
    assert stat.S_IMODE(mode) == 0o700 and staged.chain.stat().st_uid == 0
