"""`ddprofiler top` in a real terminal (tmux): the screen, its keys, and batch mode.

tmux runs `top --pid` of the chain workload (main -> outer -> middle -> leaf) in a
150x40 pane; capture-pane reads what a user sees: the header, the column titles, leaf
first by self and its callers by total, then `t` re-sorts and `q` quits with exit code 0.
Without a terminal, top prints one table per interval.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import Workload, skip_or_fail

pytestmark = pytest.mark.bpf
CHAIN = {"main", "outer", "middle", "leaf"}


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", "ddprof-test", *args], capture_output=True, text=True,
                          timeout=30).stdout


def screen_until(pattern: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tmux("capture-pane", "-p", "-t", "top")
        if re.search(pattern, text, re.M):
            return text
        time.sleep(0.3)
    pytest.fail(f"the screen never showed {pattern!r}:\n{text}")


def rows(text: str) -> list[tuple[float, float, str]]:
    out = []
    for m in re.finditer(r"^\s*([\d.]+)%\s+([\d.]+)%\s+[\d.]+\s+[\d.]+\s+(\S+)\s+(.+?)\s*$", text, re.M):
        out.append((float(m.group(1)), float(m.group(2)), m.group(4)))
    return out


def test_top_screen_sorts_and_quits(workloads, tmp_path):
    if shutil.which("tmux") is None:
        skip_or_fail("tmux is not installed (apt-get install tmux; CI installs it)")
    with Workload([workloads["chain"], 60]) as w:
        done = tmp_path / "exit"
        cmd = (f"{sys.executable} -m ddprofiler top -p {w.pid} --interval 0.5; "
               f"echo $? > {done}")
        tmux("new-session", "-d", "-s", "top", "-x", "150", "-y", "40", cmd)
        try:
            text = screen_until(r"^ddprofiler top: \d+ samples.*by self ")
            text = screen_until(r"chain +leaf$")
            assert "%Self  %Total   Self(s)  Total(s)  Where              Function" in text
            by_self = rows(text)
            assert by_self[0][2] == "leaf" and by_self[0][0] > 80, text
            tmux("send-keys", "-t", "top", "t")
            text = screen_until(r"by total ")
            by_total = rows(text)
            # main and its callees, under the C runtime's entry (_start...) with the same total
            assert CHAIN <= {r[2] for r in by_total if r[1] > 80}, text
            assert [r[1] for r in by_total] == sorted((r[1] for r in by_total), reverse=True), text
            tmux("send-keys", "-t", "top", "q")
            deadline = time.monotonic() + 20
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert done.exists() and done.read_text().strip() == "0", "q did not quit with 0"
        finally:
            tmux("kill-server")


def test_top_without_a_terminal_prints_tables(workloads):
    with Workload([workloads["chain"], 60]) as w:
        proc = subprocess.Popen([sys.executable, "-m", "ddprofiler", "top", "-p", str(w.pid), "--interval", "0.5",
                                 "-n", "10", "--sort", "total"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    tables = [t for t in out.split("\n\n") if t.startswith("ddprofiler top:")]
    assert len(tables) >= 3, out
    last = rows(tables[-2])
    assert CHAIN <= {r[2] for r in last if r[1] > 80}, tables[-2]
