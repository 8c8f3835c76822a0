"""What the operator of `ddprofiler run` is told (issue 13): failures of the destination
(a closed port, a missing Unix socket, an Agent answering 503 then 200) said at warning
on the first failed attempt and on recovery, the period line, an exit summary whose
counts add up and an exit that does not wait for an Agent known to be down; one stop
request per `timeout -s INT`; Ctrl-C at start; Datadog's settings (DD_TRACE_AGENT_PORT
alone, DD_TAGS that conflict with DD_ENV); the log layout; `ddprofiler status`.

The continuous profiler runs as a real process (`ddprofiler run`) with the fake
``_native`` of test_cli_flags (no root, no BPF: the sampler is not what these tests are
about) against real HTTP servers on loopback (``FakeAgent``) or nothing at all.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

from agent_fixtures import FakeAgent, decode_upload, free_port
from test_cli_flags import cli_env, fake_cmd

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \| DDPROF \| (TRACE|DEBUG|INFO|WARN|ERROR|CRITICAL) "
                  r"\| \([\w.]+:\d+( in \w+)?\) \| \S.*$")


class Run:
    """`ddprofiler run` (fake sampler) whose stderr is collected line by line."""

    def __init__(self, *args: str, status: Optional[Path] = None, **env: str) -> None:
        full = dict(cli_env(), **env)
        status_args = ("--status-file", str(status)) if status else ("--status-file", "off")
        self.proc = subprocess.Popen(fake_cmd("run", "--upload-period", "1", *status_args, *args),
                                     env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, needle: str, timeout: float = 20.0, count: int = 1) -> List[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [ln for ln in self.lines if needle in ln]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"no {count} line(s) with {needle!r} in:\n" + self.text)
                self._cond.wait(min(left, 0.2))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> float:
        """Signal, wait for the exit; returns the seconds it took."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("did not exit:\n" + self.text) from None
        self._reader.join(5)
        return time.monotonic() - t0

    @property
    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def summary(text: str) -> dict:
    m = re.search(r"stopped: (\d+) profiles produced: (\d+) sent, (\d+) failed .*?, (\d+) dropped "
                  r".*?, (\d+) not sent at exit", text)
    assert m, text
    produced, sent, failed, dropped, unsent = map(int, m.groups())
    assert produced == sent + failed + dropped + unsent, m.group(0)  # the counts add up
    return dict(produced=produced, sent=sent, failed=failed, dropped=dropped, unsent=unsent)


def warnings(text: str) -> List[str]:
    return [ln for ln in text.splitlines() if "| WARN |" in ln]


def test_closed_port_is_said_at_once_and_the_exit_does_not_wait():
    port = free_port()
    with Run("--agent-url", f"http://127.0.0.1:{port}", "--shutdown-timeout", "30") as run:
        [first] = run.wait_for("failing: connection refused")
        assert "| WARN |" in first and f"127.0.0.1:{port}" in first
        periods = run.wait_for("period:", count=2)
        # The first line may come before the first attempt; the second knows.
        assert "destination FAILING since" in periods[-1] and "connection refused" in periods[-1], periods
        assert re.search(r"\d+ retries, [1-9]\d* waiting in the queue \(\d+(\.\d)? [KMG]?i?B\)", periods[-1]), periods[-1]
        took = run.stop()
    assert run.proc.returncode == 0, run.text
    assert took < 10, f"waited {took:.1f} s for an Agent known to be down"
    s = summary(run.text)
    assert s["sent"] == 0 and s["unsent"] >= 2 and s["produced"] >= 2
    assert "not sent at exit: it is unreachable (connection refused" in run.text
    # Said once, not once per profile or per retry.
    assert sum("failing: connection refused" in w for w in warnings(run.text) if "uploader" in w) == 1, run.text
    assert sum("not sent at exit" in w for w in warnings(run.text) if "uploader" in w) == 1, run.text


def test_missing_unix_socket_is_named(tmp_path):
    sock = tmp_path / "apm.socket"
    with Run("--agent-url", f"unix://{sock}", "--shutdown-timeout", "30") as run:
        [first] = run.wait_for("failing:")
        assert f"no socket at {sock}" in first and "| WARN |" in first
        run.wait_for("period:")
        took = run.stop()
    assert run.proc.returncode == 0 and took < 10, run.text
    assert summary(run.text)["sent"] == 0


def test_503_then_200_says_failing_then_recovered():
    calls = []

    def answer(req):
        calls.append(req)
        if len(calls) <= 3:
            return 503, b"Agent overloaded: try later\nsecond line not shown\n"
        return 200, b"{}"

    with FakeAgent(default=answer) as agent:
        with Run("--agent-url", agent.url) as run:
            [failing] = run.wait_for("failing: HTTP 503")
            assert "Agent overloaded: try later" in failing and "second line" not in failing
            [recovered] = run.wait_for("recovered after", timeout=30)
            assert "| WARN |" in recovered and "HTTP 503" in recovered
            run.wait_for("destination ok", timeout=10)
            run.stop()
    assert run.proc.returncode == 0, run.text
    s = summary(run.text)
    assert s["sent"] == len(agent.requests) - 3 and s["sent"] >= 1, (s, len(agent.requests))
    assert re.search(r"; ([3-9]|\d\d+) retries$", run.text.splitlines()[-1]) or "retries" in run.text
    assert len([w for w in warnings(run.text) if "503" in w]) == 2, warnings(run.text)  # failing, recovered


@pytest.mark.skipif(shutil.which("timeout") is None, reason="coreutils timeout is missing")
def test_timeout_s_int_is_one_stop_request_and_keeps_the_partial_period(tmp_path):
    out = tmp_path / "out"
    # `timeout` signals the child, then its whole process group: two SIGINTs at once.
    cmd = ["timeout", "-s", "INT", "3"] + fake_cmd("run", "--output-dir", str(out), "--upload-period",
                                                   "60", "--status-file", "off")
    r = subprocess.run(cmd, env=dict(cli_env()), capture_output=True, text=True, timeout=60)
    assert "second signal" not in r.stderr, r.stderr
    assert r.returncode == 124, r.stderr  # timeout's own code: it had to stop the profiler
    assert "stop requested by SIGINT" in r.stderr
    pprofs = list(out.glob("*.pprof"))
    assert len(pprofs) == 1, r.stderr  # the partial period
    assert json.loads(pprofs[0].with_suffix(".json").read_text())["service"] == "fakesvc"


def test_two_signals_of_one_stop_request_count_once(tmp_path):
    # What `timeout -s INT` does when the race goes the other way: the second signal (to
    # the group) arrives after the first was handled. Still one request.
    # An Agent that never answers keeps the profiler in its shutdown drain meanwhile.
    with FakeAgent(default="hang") as agent:
        with Run("--agent-url", agent.url, "--upload-period", "60", "--shutdown-timeout", "2") as run:
            run.wait_for("starting")
            time.sleep(1)
            run.proc.send_signal(signal.SIGINT)
            time.sleep(0.1)  # well within the window; sooner, the kernel merges the two
            run.stop(signal.SIGINT)
    assert run.proc.returncode == 0 and "second signal" not in run.text, run.text
    assert "1 not sent at exit" in run.text and len(agent.requests) == 1, run.text


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.6])
def test_ctrl_c_at_start_is_no_traceback(tmp_path, delay):
    env = dict(cli_env())
    # As from a terminal: SIGINT at its default disposition. A shell without job control
    # starts background commands (CI's, `nohup ... &`) with SIGINT ignored, and a process
    # that starts so ignores it until it sets its own handler, by POSIX and CPython's rules.
    default_int = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.executable, [sys.executable, '-m', 'ddprofiler', *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", default_int, "run", "--output-dir", str(tmp_path),
                             "--status-file", "off"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # Interrupted while loading (130); stopped once running (0); no privileges here (1).
    assert proc.returncode in (0, 1, 130), (proc.returncode, err)


def test_trace_agent_port_alone_is_localhost():
    with FakeAgent() as agent:
        env = {k: v for k, v in cli_env()}
        env.pop("DD_TRACE_AGENT_URL", None)
        env.pop("DD_AGENT_HOST", None)
        with Run(DD_TRACE_AGENT_PORT=str(agent.port)) as run:
            agent.wait_requests(1, timeout=20)
            run.stop()
    assert run.proc.returncode == 0, run.text
    assert f"the Agent at http://localhost:{agent.port}" in run.text
    r = subprocess.run(fake_cmd("run"), env=dict(cli_env(), DD_TRACE_AGENT_PORT="80a"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "DD_TRACE_AGENT_PORT" in r.stderr and "'80a' is not a port number" in r.stderr


def test_conflicting_dd_tags_are_sent_once_with_the_dedicated_value():
    with FakeAgent() as agent:
        with Run("--agent-url", agent.url, DD_ENV="prod", DD_HOSTNAME="web-1",
                 DD_TAGS="env:staging,team:core,host:tagged,version:2.0") as run:
            agent.wait_requests(1, timeout=20)
            run.stop()
    tags = decode_upload(agent.requests[0]).event["tags_profiler"].split(",")
    keys = [t.split(":", 1)[0] for t in tags]
    for key in ("env", "host", "service", "version"):
        assert keys.count(key) == 1, tags
    assert "env:prod" in tags and "host:web-1" in tags and "version:2.0" in tags
    assert "team:core" in tags
    assert "tags not sent" in run.text and "env:staging" in run.text  # said at start


def test_log_lines_follow_the_agent_layout_and_the_level():
    with FakeAgent() as agent:
        with Run("--agent-url", agent.url, DD_ENV="e2e", DD_TAGS="team:core") as run:
            run.wait_for("period:")
            run.stop()
    lines = run.text.splitlines()
    assert lines and all(LINE.match(ln) for ln in lines), "\n".join(ln for ln in lines if not LINE.match(ln))
    start = lines[0]
    for needle in (f"the Agent at {agent.url}", "env e2e", "tags team:core", "host ", "Hz per CPU",
                   "capabilities ", "CapEff 0x"):
        assert needle in start, (needle, start)
    with FakeAgent() as agent:
        with Run("--agent-url", agent.url, DD_LOG_LEVEL="warn") as run:
            agent.wait_requests(1, timeout=20)
            run.stop()
    assert run.proc.returncode == 0 and run.text == "", run.text  # nothing at info, nothing wrong
    with Run("--agent-url", f"http://127.0.0.1:{free_port()}", DD_LOG_LEVEL="error") as run:
        time.sleep(2)
        run.stop()
    assert not warnings(run.text), run.text


def test_status_command(tmp_path):
    status = tmp_path / "status.json"

    def status_cmd(*args):
        return subprocess.run([sys.executable, "-m", "ddprofiler", "status", "--status-file", str(status), *args],
                              env=dict(cli_env()), capture_output=True, text=True, timeout=60)

    r = status_cmd()
    assert r.returncode == 1 and r.stderr.startswith("ddprofiler: error: no status file at"), r.stderr
    with FakeAgent() as agent:
        with Run("--agent-url", agent.url, status=status) as run:
            run.wait_for("period:", count=2)
            agent.wait_requests(1, timeout=20)
            r = status_cmd()
            doc = json.loads(status_cmd("--json").stdout)
            run.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "health: OK", r.stdout
    assert f"the Agent at {agent.url}" in r.stdout and "last upload ok:" in r.stdout
    assert doc["pid"] == run.proc.pid and doc["state"] == "running" and doc["periods"] >= 2
    assert doc["last_period"]["samples"] == 5 and doc["uploads"]["uploads_ok"] >= 1
    assert {"queue_bytes", "queue_len", "uploads_dropped"} <= set(doc["uploads"])
    r = status_cmd()  # stopped now
    assert r.returncode == 1 and "NOT OK: the profiler has stopped" in r.stdout, r.stdout

    port = free_port()
    with Run("--agent-url", f"http://127.0.0.1:{port}", status=status) as run:
        run.wait_for("period:", count=2)  # the file is written at the end of each period
        r = status_cmd()
        run.stop()
    assert r.returncode == 1 and "FAILING since" in r.stdout, r.stdout
    assert "uploads failing since" in r.stdout.splitlines()[-1] and "connection refused" in r.stdout


def test_operations_doc_explains_every_counter():
    # Every counter of the core's registry is in docs/operations.md, so none shows up in a
    # log or a summary without an explanation of what it counts and what is normal.
    from ddprofiler.stats import counter_specs

    try:
        specs = counter_specs()
    except Exception as e:  # noqa: BLE001 - no extension built: the registry is unknown
        pytest.skip(f"the extension is not built: {e}")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    missing = [name for name, _, _ in specs if f"`{name}`" not in doc]
    assert not missing, f"counters not explained in docs/operations.md: {missing}"


def test_status_verdict_and_capabilities():
    from ddprofiler import health

    now = 1_000_000.0
    doc = {"format": 1, "pid": os.getpid(), "state": "running", "upload_period_s": 60,
           "updated_at": now - 10, "destination": {"state": "ok"}}
    assert health.verdict(doc, now) == []
    assert "no period for 200 s" in health.verdict({**doc, "updated_at": now - 200}, now)[0]
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert "is not running any more" in health.verdict({**doc, "pid": dead.pid}, now)[0]
    failing = {**doc, "destination": {"state": "failing", "reason": "HTTP 503", "failing_since": now - 5}}
    assert health.verdict(failing, now) == ["uploads failing since 1970-01-12 13:46:35 UTC (5s ago): HTTP 503"]
    mask, names = health.capabilities("Name:\tx\nCapEff:\t000000c000200000\n")
    assert mask == 0xC000200000 and names == ["CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"]
    assert health.describe_capabilities("CapEff:\t000001ffffffffff\n").startswith("all (CapEff 0x")
    assert health.describe_capabilities("CapEff:\t0000000000000000\n") == "none relevant (CapEff 0x0000000000000000)"


def test_dogstatsd_metrics_per_period():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(20)
        url = f"udp://127.0.0.1:{sock.getsockname()[1]}"
        with FakeAgent(default=lambda req: (503, b"busy")) as agent:
            with Run("--agent-url", agent.url, "--shutdown-timeout", "1", DD_DOGSTATSD_URL=url,
                     DD_ENV="e2e") as run:
                metrics: dict = {}
                while "ddprofiler.destination.failing" not in metrics or \
                        metrics["ddprofiler.destination.failing"][0] != "1":
                    for line in sock.recv(8192).decode().splitlines():
                        name, _, rest = line.partition(":")
                        value, kind, tags = rest.split("|", 2)
                        metrics[name] = (value, kind, tags)
                run.stop()
    assert metrics["ddprofiler.samples"][:2] == ("5", "c")
    assert metrics["ddprofiler.queue.bytes"][1] == "g" and int(metrics["ddprofiler.queue.bytes"][0]) > 0
    assert {"ddprofiler.uploads.sent", "ddprofiler.uploads.retries", "ddprofiler.samples_lost",
            "ddprofiler.queue.profiles", "ddprofiler.errors"} <= set(metrics)
    tags = metrics["ddprofiler.samples"][2]
    assert tags.startswith("#") and "env:e2e" in tags and "service:ddprofiler" in tags, tags
    r = subprocess.run(fake_cmd("run"), env=dict(cli_env(), DD_DOGSTATSD_URL="tcp://x:1"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "DD_DOGSTATSD_URL" in r.stderr, r.stderr
