"""`python -m ddprofiler record` failing cleanly.

- Without privileges (root with every capability dropped by setpriv): exit 1, one line
  on stderr `ddprofiler: error: ...` that names root or CAP_BPF, no traceback, no file.
- A pid that does not exist: a usage error (exit 2), no output file.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import record, skip_or_fail

# As root with an empty bounding set and no inheritable capabilities, the exec'd Python has
# no capabilities at all (CapEff 0). Running as nobody does not work where this Python
# lives under /root (mode 700, e.g. pyenv): nobody cannot import the package there.
DROP_CAPS = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


def unprivileged_prefix() -> list[str]:
    """Command prefix that runs the CLI without any capability."""
    if os.geteuid() != 0:
        return []  # already unprivileged
    if shutil.which("setpriv") is None:
        skip_or_fail("setpriv (util-linux) is needed to drop privileges")
    caps = subprocess.run([*DROP_CAPS, "grep", "^CapEff", "/proc/self/status"],
                          capture_output=True, text=True)
    assert caps.stdout.split() == ["CapEff:", "0000000000000000"], caps.stdout + caps.stderr
    return DROP_CAPS


def test_unprivileged(native, tmp_path):
    prefix = unprivileged_prefix()
    out = tmp_path / "p.pprof"
    res = record(out, "--duration", "2", timeout=60, prefix=prefix)
    stderr = res.proc.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert res.proc.returncode == 1, f"exit {res.proc.returncode}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("ddprofiler: error:"), lines[0]
    assert "CAP_BPF" in lines[0] or "root" in lines[0], lines[0]
    assert not out.exists(), "an output file was written"


def unused_pid() -> int:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free pid")


@pytest.mark.bpf
def test_unknown_pid(tmp_path):
    pid = unused_pid()
    out = tmp_path / "p.pprof"
    res = record(out, "--pid", pid, "--duration", "2", timeout=60)
    stderr = res.proc.stderr
    assert res.proc.returncode == 2, f"exit {res.proc.returncode}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert str(pid) in stderr, f"the error does not name pid {pid}:\n{stderr}"
    assert not out.exists(), "an output file was written"
