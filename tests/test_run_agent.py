"""The continuous profiler (`python -m ddprofiler`) end to end against Datadog's agent
emulator: periods, the split by service, tags, labels, headers, the partial period at
SIGTERM, an agent that is down when the profiler starts (and what the log says of it),
and the log at -v and at the trace level.

A chain workload runs with DD_SERVICE set; the profiler uploads every 2 s to
ddapm-test-agent on loopback; the test decodes what the agent recorded.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time

import pytest

from agent_fixtures import AGENT_BIN, AgentEmulator, decode_upload, free_port, recorded
from ddprofiler.pprof import profile_pb2, stacks
from helpers import Workload, find_seq, skip_or_fail

pytestmark = pytest.mark.bpf

CHAIN = ["leaf", "middle", "outer", "main"]
SERVICE = "checkout-e2e"


def start_profiler(agent_url: str, period: str = "2", *extra: str, **env) -> subprocess.Popen:
    full = {**os.environ, "DD_ENV": "e2e", "DD_TAGS": "team:core,Bad Tag!,9lives:x", **env}
    full.pop("DD_SERVICE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "ddprofiler", "--agent-url", agent_url, "--upload-period", period,
         "--sampling-rate", "99", "--shutdown-timeout", "10", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full)


def stop(proc: subprocess.Popen, timeout: float = 30) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the profiler did not exit within {timeout}s of SIGTERM:\n{err}")
    assert proc.returncode == 0, err
    return err


def service_uploads(agent: AgentEmulator, token, service: str = SERVICE) -> list:
    ups = [decode_upload(r) for r in recorded(agent, token)]
    return [u for u in ups if f"service:{service}" in u.event["tags_profiler"].split(",")]


def tags_of(up) -> dict:
    out = {}
    for t in up.event["tags_profiler"].split(","):
        k, _, v = t.partition(":")
        out.setdefault(k, v)
    return out


@pytest.fixture
def agent(test_agent):
    test_agent.get("/test/session/start?test_session_token=run")
    return test_agent


def test_periods_tags_and_stacks(agent, workloads):
    with Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": SERVICE}) as w:
        prof = start_profiler(agent.url)
        time.sleep(7)
        err = stop(prof)
    ups = service_uploads(agent, "run")
    assert len(ups) >= 3, f"{len(ups)} uploads for {SERVICE}:\n{err}"
    seqs = [int(tags_of(u)["profile_seq"]) for u in ups]
    assert seqs == list(range(1, len(ups) + 1)), seqs  # in order, none lost
    for u in ups:
        t = tags_of(u)
        assert t["service_inferred"] == "no" and t["env"] == "e2e" and t["runtime"] == "ebpf"
        assert t["profiler_name"] == "ddprofiler" and t["cpu_arch"] == "amd64" and t["host"]
        assert t["team"] == "core" and "bad" not in t and "9lives" not in t  # invalid ones dropped
        assert u.event["family"] == "ebpf" and u.event["version"] == "4"
        assert u.event["attachments"] == ["cpu.pprof"] and u.compressed[:4] == b"\x28\xb5\x2f\xfd"
        h = u.request.headers
        assert h["dd-evp-origin"] == "ddprofiler" and "dd-api-key" not in h
        assert h.get("datadog-entity-id", "").startswith(("ci-", "in-")) or "datadog-entity-id" not in h
    # Every sample of these profiles is the workload's, with its chain and its pid.
    whole = 0
    for u in ups:
        p = profile_pb2.Profile.FromString(u.pprof)
        for s in stacks(p):
            assert s.pid == w.pid, f"pid {s.pid} ({s.process_name}) in {SERVICE}'s profile"
            whole += s.count if find_seq(s.frames, CHAIN) >= 0 else 0
    total = sum(s.count for u in ups for s in stacks(profile_pb2.Profile.FromString(u.pprof)))
    assert total > 300 and whole >= 0.95 * total, (whole, total)
    assert "period:" in err  # the telemetry line


def test_sigterm_mid_period_sends_the_partial_profile(agent, workloads):
    with Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": SERVICE}) as w:
        prof = start_profiler(agent.url, "60")
        time.sleep(4)
        t0 = time.monotonic()
        stop(prof)
        assert time.monotonic() - t0 < 15
    ups = service_uploads(agent, "run")
    assert len(ups) == 1, len(ups)
    p = profile_pb2.Profile.FromString(ups[0].pprof)
    assert 2e9 < p.duration_nanos < 20e9
    assert sum(s.count for s in stacks(p) if s.pid == w.pid) > 100


def test_agent_down_at_start_then_up(tmp_path, workloads):
    if not AGENT_BIN.exists():
        skip_or_fail(f"{AGENT_BIN} is missing: run scripts/install-test-agent.sh")
    port = free_port()
    with Workload([workloads["chain"], "60"], env={**os.environ, "DD_SERVICE": SERVICE}):
        prof = start_profiler(f"http://127.0.0.1:{port}")
        time.sleep(5)  # two periods or more queue up while nothing listens
        agent = AgentEmulator(tmp_path, port=port)
        try:
            # Retries back off up to 30 s; all queued profiles arrive within that.
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and len(service_uploads(agent, None)) < 5:
                time.sleep(1)
            err = stop(prof)
            ups = service_uploads(agent, None)
        finally:
            agent.close()
    seqs = [int(tags_of(u)["profile_seq"]) for u in ups]
    # What was queued while the agent was down arrives first, in order, none lost.
    assert len(seqs) >= 5 and seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs))), (seqs, err)
    assert seqs[0] == 1, f"profiles queued while the agent was down were lost: {seqs}\n{err}"
    # The operator was told: once when it failed (with why), once when it recovered.
    warns = [ln for ln in err.splitlines() if "| WARN |" in ln and "uploader" in ln]
    assert len(warns) == 2, err
    assert "failing: connection refused" in warns[0] and "recovered after" in warns[1], warns
    assert re.search(r"stopped: (\d+) profiles produced: \1 sent, 0 failed", err), err


def test_container_headers_and_labels(agent, workloads):
    from cgroups import container_cgroup

    cid = secrets.token_hex(32)
    with Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": SERVICE}) as w:
        with container_cgroup(w.pid, cid):
            prof = start_profiler(agent.url)
            time.sleep(4)
            stop(prof)
    ups = service_uploads(agent, "run")
    assert ups, "no upload for the containerized workload"
    n_samples = 0
    for u in ups:
        h = u.request.headers
        assert h["datadog-container-id"] == cid and h["datadog-entity-id"] == f"ci-{cid}"
        p = profile_pb2.Profile.FromString(u.pprof)
        strings = p.string_table
        for s in p.sample:
            labels = {strings[lb.key]: strings[lb.str] for lb in s.label}
            assert labels["container_id"] == cid and labels["process_id"] == str(w.pid)
        n_samples += len(p.sample)
    # The labels above were checked on samples, not on empty profiles.
    assert n_samples > 0, f"{len(ups)} uploads for {SERVICE} hold no sample"


def test_output_dir_writes_one_pprof_per_service_per_period(tmp_path, workloads):
    from ddprofiler.pprof import read_pprof

    out = tmp_path / "profiles"
    env = {**os.environ, "DD_SERVICE": SERVICE}
    with Workload([workloads["chain"], "40"], env=env) as w, \
            Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": "other-e2e"}) as w2:
        prof = subprocess.Popen(
            [sys.executable, "-m", "ddprofiler", "--output-dir", str(out), "--upload-period", "2",
             "--sampling-rate", "99"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(7)
        err = stop(prof)
    files = sorted(out.glob("*.pprof"))
    # Files are written, not uploads sent, in the operator's lines too; and the counts add up.
    periods = [ln for ln in err.splitlines() if "| period: " in ln]
    assert periods and all("; files " in ln and " written, 0 failed" in ln and "uploads" not in ln for ln in periods), err
    assert re.search(rf"stopped: {len(files)} profiles produced: {len(files)} written, 0 failed .* 0 not written at exit", err), err
    mine = [f for f in files if f.name.startswith(SERVICE + "-")]
    other = [f for f in files if f.name.startswith("other-e2e-")]
    assert len(mine) >= 3 and len(other) >= 3, [f.name for f in files]
    # one file per service per period: as many of each, with disjoint time ranges
    assert abs(len(mine) - len(other)) <= 1
    starts = []
    for f in mine:
        p = read_pprof(str(f))
        st = stacks(p)
        assert st and {s.pid for s in st} == {w.pid}, f.name
        assert sum(s.count for s in st if find_seq(s.frames, CHAIN) >= 0) >= 0.95 * sum(s.count for s in st)
        starts.append((p.time_nanos, p.time_nanos + p.duration_nanos))
    starts.sort()
    assert all(a[1] <= b[0] for a, b in zip(starts, starts[1:])), "periods overlap"
    for f in other:
        assert {s.pid for s in stacks(read_pprof(str(f)))} == {w2.pid}


def test_shutdown_deadline_and_second_signal(workloads):
    from agent_fixtures import FakeAgent

    # An Agent that takes every request and never answers: the drain cannot finish.
    with FakeAgent(default="hang") as hung, \
            Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": SERVICE}):
        prof = start_profiler(hung.url, "2", "--shutdown-timeout", "3")
        hung.wait_requests(1, timeout=20)
        t0 = time.monotonic()
        stop(prof, timeout=20)  # exit 0 once the 3 s deadline passes, with what it could not send
        assert 2.5 < time.monotonic() - t0 < 12

        prof = start_profiler(hung.url, "2", "--shutdown-timeout", "60")
        hung.wait_requests(2, timeout=20)
        prof.send_signal(signal.SIGTERM)
        time.sleep(1)
        t0 = time.monotonic()
        prof.send_signal(signal.SIGTERM)
        _, err = prof.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert prof.returncode == 128 + signal.SIGTERM, err
        assert "second signal" in err


def test_verbose_log_is_one_line_each_and_keeps_the_bpf_loader_for_trace(tmp_path):
    line = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \| DDPROF \| (TRACE|DEBUG|INFO|WARN|ERROR) \| \(")

    def run(*args, **env):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ddprofiler", "--output-dir", str(tmp_path), "--upload-period", "1",
             "--status-file", "off", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env})
        time.sleep(3)
        return stop(proc)

    err = run("-v")
    assert "| DEBUG |" in err and "period:" in err, err
    assert all(line.match(ln) for ln in err.splitlines()), err
    assert "aya" not in err, "the BPF loader's lines belong to the trace level"
    err = run(DD_LOG_LEVEL="trace")
    assert "(aya_obj.relocation:" in err, err[:2000]  # at trace, they are there
