"""Fixtures of the end-to-end tests.

- marker `bpf`: the test needs root and the compiled extension `ddprofiler._native`; it is
  skipped otherwise, or failed when DDPROF_REQUIRE_BPF=1 (CI), so a missing capability
  never passes silently.
- `workloads`: the C programs of tests/workloads compiled once per session into a tmp dir
  (gcc -O2 -fomit-frame-pointer -fno-inline-functions-called-once), name -> path.
- `debian_python`, `go_binary`: peers the tests need, skip-or-fail when absent.
"""
from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import skip_or_fail  # noqa: E402

WORKLOAD_SRC = Path(__file__).parent / "workloads"
CFLAGS = ["-O2", "-fomit-frame-pointer", "-fno-inline-functions-called-once",
          "-Wall", "-I", str(WORKLOAD_SRC)]


def pytest_configure(config):
    config.addinivalue_line("markers", "bpf: needs root and a BPF-capable kernel")


def native_import_error() -> str | None:
    """Why `ddprofiler._native` cannot be imported, or None."""
    try:
        importlib.import_module("ddprofiler._native")
    except Exception as e:  # noqa: BLE001 - any failure means the same thing here
        return f"cannot import ddprofiler._native with {sys.executable}: {e!r}"
    return None


def bpf_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (eBPF sampling)"
    return native_import_error()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if item.get_closest_marker("bpf") is not None:
        reason = bpf_unavailable_reason()
        if reason:
            skip_or_fail(reason)


@pytest.fixture
def native():
    """The extension must import (for tests that need no root, like the error tests)."""
    reason = native_import_error()
    if reason:
        skip_or_fail(reason)


def _gcc(out: Path, *args: str) -> None:
    cmd = ["gcc", *CFLAGS, *args]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=out)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{res.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def workloads(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("gcc") is None:
        skip_or_fail("gcc is needed to build the workloads")
    out = tmp_path_factory.mktemp("workloads")
    src = lambda name: str(WORKLOAD_SRC / name)  # noqa: E731
    _gcc(out, "-o", "chain", src("chain.c"))
    _gcc(out, "-fPIC", "-shared", "-o", "libddwork.so", src("ddwork.c"))
    _gcc(out, "-o", "shlib", src("shlib.c"), "-L", str(out), "-lddwork",
         "-Wl,-rpath,$ORIGIN")
    _gcc(out, "-pthread", "-o", "threads", src("threads.c"))
    _gcc(out, "-o", "recurse", src("recurse.c"))
    _gcc(out, "-o", "syscalls", src("syscalls.c"))
    _gcc(out, "-o", "offcpu", src("offcpu.c"))
    names = ["chain", "libddwork.so", "shlib", "threads", "recurse", "syscalls", "offcpu"]
    return {name: out / name for name in names}


@pytest.fixture(scope="session")
def debian_python() -> Path:
    """Debian's /usr/bin/python3 (package python3), not the pyenv one."""
    path = Path("/usr/bin/python3")
    if not path.exists():
        skip_or_fail("Debian's python3 is not installed (apt-get install python3)")
    real = path.resolve()
    owner = subprocess.run(["dpkg", "-S", str(real)], capture_output=True, text=True)
    if owner.returncode != 0:
        skip_or_fail(f"{real} does not come from a Debian package: {owner.stderr.strip()}")
    return path


@pytest.fixture(scope="session")
def go_binary() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not os.access(go, os.X_OK):
        skip_or_fail("the Go toolchain (go tool pprof) is not installed")
    return go


@pytest.fixture
def test_agent(tmp_path):
    """Datadog's agent emulator on loopback (tests/agent_fixtures.AgentEmulator)."""
    from agent_fixtures import AGENT_BIN, AgentEmulator

    if not AGENT_BIN.exists():
        skip_or_fail(f"{AGENT_BIN} is missing: run scripts/install-test-agent.sh")
    agent = AgentEmulator(tmp_path)
    yield agent
    agent.close()
