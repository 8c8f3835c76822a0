"""`record -- CMD` and `record --pid P --subprocesses`: whole process trees, from their
first instruction, with the command's exit code passed on.

The programs are shell scripts that fork and exec the chain workload (main -> outer ->
middle -> leaf) after a delay, so the workers start while the profile is being taken,
and exit with a code of their own. The profile is read back (collapsed stacks) and
checked: every worker's pid, the chain in nearly all of their samples, the exit code, and
that recording stopped when the targets exited rather than at a fixed duration.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from test_formats import parse_collapsed

pytestmark = pytest.mark.bpf

CHAIN = "main;outer;middle;leaf"


def record(tmp_path, *args, timeout=90):
    out = tmp_path / "p.folded"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "-r", "199", "-o", str(out), *args],
                          capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - started
    stacks = parse_collapsed(out.read_text()) if out.exists() else {}
    return done, stacks, took


def chain_share(stacks, process="chain"):
    ours = {k: n for k, n in stacks.items() if k[0] == process}
    total = sum(ours.values())
    full = sum(n for k, n in ours.items() if CHAIN in ";".join(k))
    return total, (full / total if total else 0.0)


def test_command_and_its_workers_with_its_exit_code(workloads, tmp_path):
    chain = workloads["chain"]
    script = f"sleep 0.3; {chain} 1 & {chain} 1 & wait; exit 3"
    done, stacks, took = record(tmp_path, "--", "/bin/sh", "-c", script)
    assert done.returncode == 3, done.stderr
    total, share = chain_share(stacks)
    assert total > 100 and share > 0.9, (total, share, list(stacks)[:10])
    assert took < 30, f"recording ran {took:.0f} s: it should stop when the command exits"
    assert "wrote" in done.stderr and "collapsed" in done.stderr


def test_workers_pids_are_all_in_the_profile(workloads, tmp_path):
    chain = workloads["chain"]
    out = tmp_path / "p.speedscope.json"
    script = f"sleep 0.3; {chain} 1 & {chain} 1 & wait"
    done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "-r", "199", "-o", str(out),
                           "--", "/bin/sh", "-c", script], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    import json
    names = [p["name"] for p in json.loads(out.read_text())["profiles"]]
    workers = [n for n in names if n.startswith("chain (")]
    assert len(workers) == 2, names  # two processes, each its own profile


def test_a_command_killed_by_a_signal_exits_as_a_shell_says(tmp_path):
    done, _, _ = record(tmp_path, "--", "/bin/sh", "-c", "kill -TERM $$")
    assert done.returncode == 128 + 15, done.stderr


def test_a_command_that_cannot_start_exits_as_env_does(tmp_path):
    done, stacks, _ = record(tmp_path, "--", "no-such-command-ddprof")
    assert done.returncode == 127
    assert done.stderr.strip().endswith("ddprofiler: error: no-such-command-ddprof: command not found "
                                        f"(PATH={os.environ['PATH']})"), done.stderr
    assert not stacks and not list(tmp_path.iterdir())
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\n")
    done, _, _ = record(tmp_path, "--", str(script))
    assert done.returncode == 126 and f"{script}: not executable" in done.stderr


def test_pid_and_command_together_is_a_usage_error(tmp_path):
    done, _, _ = record(tmp_path, "-p", "1", "--", "true")
    assert done.returncode == 2 and "not both" in done.stderr


def test_subprocesses_follows_a_wrapper_and_stops_when_it_exits(workloads, tmp_path):
    chain = workloads["chain"]
    # The wrapper starts its worker later than the profiler takes to start (~1 s).
    wrapper = subprocess.Popen(["/bin/sh", "-c", f"sleep 3; {chain} 1.5; true"])
    try:
        done, stacks, took = record(tmp_path, "-p", str(wrapper.pid), "--subprocesses", "-d", "60")
    finally:
        wrapper.kill()
        wrapper.wait()
    assert done.returncode == 0, done.stderr
    total, share = chain_share(stacks)
    assert total > 100 and share > 0.9, (total, share, list(stacks)[:10])
    assert took < 30, f"recording ran {took:.0f} s of its 60: it should stop when the wrapper exits"


def test_subprocesses_follows_the_processes_already_under_the_pid(workloads, tmp_path):
    # A gunicorn master's workers exist before anyone attaches: the child running now, and
    # the grandchild that a child running now starts later, are both followed.
    chain = workloads["chain"]
    wrapper = subprocess.Popen(["/bin/sh", "-c", f"{chain} 4 & (sleep 2; {chain} 1.5); wait; true"])
    out = tmp_path / "p.speedscope.json"
    try:
        time.sleep(0.5)
        done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "-r", "199", "-o", str(out),
                               "-p", str(wrapper.pid), "--subprocesses", "-d", "60"],
                              capture_output=True, text=True, timeout=90)
    finally:
        wrapper.kill()
        wrapper.wait()
    assert done.returncode == 0, done.stderr
    import json
    names = [p["name"] for p in json.loads(out.read_text())["profiles"]]
    assert len([n for n in names if n.startswith("chain (")]) == 2, names


def test_a_command_outliving_the_duration_is_waited_for_and_stopped_with_us(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ddprofiler", "record", "-d", "1", "-o", str(tmp_path / "p.txt"),
                             "--", "/bin/sleep", "31.7"], stderr=subprocess.PIPE, text=True)
    try:
        err = ""
        while "waiting for" not in err:
            line = proc.stderr.readline()
            assert line, f"ended without waiting: {err}"
            err += line
        assert "waiting for /bin/sleep (pid " in err and "passed on to it" in err, err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    left = subprocess.run(["pgrep", "-f", "sleep 31.7"], capture_output=True, text=True).stdout.split()
    subprocess.run(["pkill", "-f", "sleep 31.7"], check=False)  # a failure leaves none behind
    assert not left, f"the command was left running: {left}"


def test_a_wrapper_without_subprocesses_gets_a_hint(workloads, tmp_path):
    wrapper = subprocess.Popen(["/bin/sh", "-c", f"sleep 2; {workloads['chain']} 1; true"])
    try:
        time.sleep(0.3)  # the shell's own start is CPU time of its pid: wait until it waits
        done, stacks, _ = record(tmp_path, "-p", str(wrapper.pid), "-d", "60")
    finally:
        wrapper.kill()
        wrapper.wait()
    assert done.returncode == 0, done.stderr
    assert sum(stacks.values()) == 0
    assert f"no samples of pid {wrapper.pid}" in done.stderr and "--subprocesses" in done.stderr


def test_idle_is_dropped_unless_asked_for(tmp_path):
    """The idle task (pid 0) is CPU time nobody spent: out by default, in with --idle, as
    the kernel's idle loop. The test machine is idle most of the time on at least one CPU."""
    done, stacks, _ = record(tmp_path, "--idle", "-d", "2")
    assert done.returncode == 0, done.stderr
    idle = {k: n for k, n in stacks.items() if any(f in ("do_idle", "cpu_startup_entry") for f in k)}
    assert sum(idle.values()) > 10, sorted(stacks.items(), key=lambda kv: -kv[1])[:5]
    assert all(k[0].startswith(("swapper", "pid 0")) for k in idle), list(idle)[:3]
    done, stacks, _ = record(tmp_path, "-d", "1")
    assert done.returncode == 0, done.stderr
    assert not [k for k in stacks if any(f == "do_idle" for f in k)]
