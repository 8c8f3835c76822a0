"""OTLP profiles export checked against a real OpenTelemetry Collector receiver.

tests/otelcol is a small Go program built from the collector's own modules (pinned in its
go.mod/go.sum, all at one release): the real OTLP receiver (``otlpreceiver``, HTTP, its
``/v1development/profiles`` route) feeding a profiles consumer that writes one JSON line per
request saying what the collector understood, read with pdata's ``pprofile`` API (resources,
sample and period types, totals, function names through the dictionary, heaviest stacks,
totals per ``process.pid``, indices that do not resolve). The tests assert on those lines,
not on our own decoding (tests/test_otlp.py does that with the .proto files).

The program is built once per (go.mod, go.sum, main.go, Go version) into a cache directory
(``$DDPROF_OTELCOL_CACHE``, else ``<tmp>/ddprofiler-otelcol``); the first build downloads
the modules from the Go module proxy (about a minute on a cold module cache). No Go >= 1.26,
or no proxy: skipped, or failed when DDPROF_REQUIRE_BPF=1.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from agent_fixtures import FakeAgent, free_port
from helpers import skip_or_fail
from test_otlp import export, otlp  # noqa: F401 - `otlp` is a fixture used here
from test_runner import profile_two_services

SRC = Path(__file__).parent / "otelcol"
MIN_GO = (1, 26)  # tests/otelcol/go.mod's go line
# What a build that could not reach the Go module proxy prints.
OFFLINE = re.compile(r"dial tcp|no such host|i/o timeout|connection refused|network is unreachable|"
                     r"TLS handshake timeout|proxyconnect|GOPROXY=off")


def _go_version(go: str) -> tuple[int, int]:
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, timeout=60).stdout
    m = re.match(r"go(\d+)\.(\d+)", out.strip())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@pytest.fixture(scope="session")
def otelcol_binary(go_binary) -> Path:
    """tests/otelcol built (or taken from the cache)."""
    version = _go_version(go_binary)
    if version < MIN_GO:
        skip_or_fail(f"tests/otelcol needs Go >= {MIN_GO[0]}.{MIN_GO[1]} ({go_binary} is "
                     f"{version[0]}.{version[1]}): install a current Go in /usr/local/go")
    key = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        key.update((SRC / name).read_bytes())
    key.update(repr(version).encode())
    cache = Path(os.environ.get("DDPROF_OTELCOL_CACHE") or Path(tempfile.gettempdir()) / "ddprofiler-otelcol")
    binary = cache / key.hexdigest()[:16] / "otelcol-profiles"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"otelcol-profiles.{os.getpid()}.tmp")
    # -mod=readonly: exactly the committed go.mod/go.sum (a missing sum is an error, not a fetch).
    env = {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}
    started = time.monotonic()
    res = subprocess.run([go_binary, "build", "-trimpath", "-o", str(partial), "."], cwd=SRC, env=env,
                         capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        if OFFLINE.search(res.stderr):
            skip_or_fail(f"cannot build tests/otelcol: the Go module proxy is not reachable:\n{res.stderr[-2000:]}")
        pytest.fail(f"go build of tests/otelcol failed:\n{res.stderr[-4000:]}", pytrace=False)
    os.replace(partial, binary)
    print(f"built {binary} in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return binary


class Collector:
    """The receiver on a free loopback port; ``summaries()`` are its JSON lines so far."""

    def __init__(self, binary: Path, out: Path, timeout: float = 30):
        self.out, self.log = out, ""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([str(binary), "-endpoint", f"127.0.0.1:{self.port}", "-out", str(out)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline, line = time.monotonic() + timeout, b""
        while b"\n" not in line:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.close()
                raise AssertionError(f"the collector did not start in {timeout}s: {self.log}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                self.close()
                raise AssertionError(f"the collector exited before it was ready: {self.log}")
            line += chunk
        sel.close()
        assert json.loads(line.split(b"\n")[0])["event"] == "ready", line

    def summaries(self) -> list[dict]:
        text = self.out.read_text() if self.out.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_summaries(self, n: int, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.summaries()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        got = self.summaries()
        assert len(got) >= n, f"the collector consumed {len(got)} requests, not {n}"
        return got

    def close(self) -> str:
        """Stops it; its log (stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.log = err.decode(errors="replace")
        return self.log


@pytest.fixture
def collector(otelcol_binary, tmp_path):
    c = Collector(otelcol_binary, tmp_path / "summaries.jsonl")
    yield c
    c.close()


def profiles_of(summary: dict) -> list[tuple[str, dict, dict]]:
    """(service.name, resource attributes, its one profile) of each resource (a service may
    come twice: processes in different cgroups), checking the shape."""
    out = []
    for rp in summary["resource_profiles"]:
        assert rp["scope"] == "ddprofiler"
        (profile,) = rp["profiles"]
        out.append((rp["resource"]["service.name"], rp["resource"], profile))
    return out


def test_the_collector_reads_two_services(collector, otlp):  # noqa: F811
    exporter = export(copy.deepcopy(profile_two_services()), collector, node="host-1")
    stats = exporter.stats()
    assert (stats["uploads_ok"], stats.get("uploads_failed", 0), stats["otlp_profiles_rejected"]) == (1, 0, 0)
    (summary,) = collector.wait_summaries(1, timeout=10)
    assert summary["errors"] == [], summary["errors"]
    assert summary["profile_count"] == 2
    profiles = {service: (res, profile) for service, res, profile in profiles_of(summary)}
    assert len(profiles) == 2 and set(profiles) == {"checkout", "system"}
    res, profile = profiles["checkout"]
    assert res["host.name"] == "host-1" and res["deployment.environment.name"] == "prod"
    assert res["service.version"] == "1.2" and res["team"] == "core" and "container.id" in res
    assert profile["sample_type"] == "samples/count"
    assert (profile["period_type"], profile["period"]) == ("cpu/nanoseconds", 1_000_000_000 // 20)
    assert profile["samples"] == 1 and profile["total"] == 7
    assert profile["functions"] == ["leaf", "main"]
    assert profile["top_stacks"] == [{"frames": ["leaf", "main"], "value": 7}]
    assert profile["pid_totals"] == {"4242": 7}
    assert len(profile["profile_id"]) == 32 and int(profile["profile_id"], 16) != 0
    assert profile["sample_attribute_keys"] == ["process.executable.name", "process.pid", "thread.id",
                                                "thread.name"]

    # The same request posted by hand: the answer is an ExportProfilesServiceResponse whose
    # partial success (the collector always sends the field) rejected nothing and says nothing.
    with FakeAgent() as receiver:
        export(copy.deepcopy(profile_two_services()), receiver, node="host-1")
        (request,) = receiver.wait_requests(1)
    post = urllib.request.Request(collector.url + "/v1development/profiles", data=request.body,
                                  headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(post, timeout=10) as answer:
        assert answer.status == 200
        body = answer.read()
    response_class = importlib.import_module(otlp.__module__).ExportProfilesServiceResponse
    response = response_class.FromString(body)
    partial = response.partial_success
    assert (partial.rejected_profiles, partial.error_message) == (0, ""), response
    assert collector.wait_summaries(2, timeout=10)[1]["resource_profiles"] == summary["resource_profiles"]


@pytest.mark.bpf
def test_run_exports_to_the_collector(collector, workloads, tmp_path):
    """`ddprofiler run --exporter otlp` against the collector, with the chain workload."""
    from helpers import Workload

    # The workload's own DD_ENV/DD_SERVICE/DD_VERSION would win over the profiler's settings.
    quiet = {k: v for k, v in os.environ.items() if k not in ("DD_ENV", "DD_SERVICE", "DD_VERSION")}
    started_ns = time.time_ns()
    with Workload([workloads["chain"], 60], env=quiet) as w:
        proc = subprocess.Popen([sys.executable, "-m", "ddprofiler", "run", "--exporter", "otlp",
                                 "--otlp-endpoint", collector.url, "--upload-period", "2", "-r", "99",
                                 "--status-file", "off", "--node", "otelcol-test-node",
                                 "--environment", "otelcol-test"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            collector.wait_summaries(2, timeout=60)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    stopped_ns = time.time_ns()
    log = collector.close()
    assert proc.returncode == 0, err
    assert "upload to OTLP" not in err, err  # the uploader's warnings: failing, queue full, not sent
    assert "partial success" not in err, err  # the exporter's warning of rejected profiles
    m = re.search(r"stopped: (\d+) OTLP requests produced: (\d+) sent, (\d+) failed", err)
    assert m, err
    produced, sent, failed = map(int, m.groups())
    summaries = collector.summaries()
    # Every request was answered 200 (sent); each that had samples reached the consumer (the
    # receiver passes on no request without samples: the last, short period may have none).
    assert failed == 0 and sent == produced and sent - 1 <= len(summaries) <= sent, (m.group(0), len(summaries), log)
    assert len(summaries) >= 2

    chain = 0
    for summary in summaries:
        assert summary["errors"] == [], summary["errors"]
        for service, res, profile in profiles_of(summary):
            assert res["host.name"] == "otelcol-test-node" and res["host.arch"], res
            assert profile["sample_type"] == "samples/count" and profile["period_type"] == "cpu/nanoseconds"
            assert profile["period"] == 1_000_000_000 // 99
            assert profile["total"] > 0 and profile["samples"] > 0
            # Wall-clock times of the period (a boot-relative clock would read as 1970).
            assert started_ns - 5e9 < profile["time_unix_nano"] < stopped_ns, (profile["time_unix_nano"], started_ns)
            assert 0 < profile["duration_nano"] < 10e9 and int(profile["profile_id"], 16) != 0
            assert {"process.pid", "thread.id"} <= set(profile["sample_attribute_keys"])
            if str(w.pid) in profile["pid_totals"]:
                assert service == "chain" and res["deployment.environment.name"] == "otelcol-test", res
                assert {"leaf", "middle", "outer", "main"} <= set(profile["functions"])
                assert "native" in profile["frame_types"], profile["frame_types"]
                assert "process.executable.build_id.gnu" in profile["mapping_attribute_keys"]
                heaviest = profile["top_stacks"][0]["frames"]
                assert heaviest[:4] == ["leaf", "middle", "outer", "main"], profile["top_stacks"][:3]
                chain += profile["pid_totals"][str(w.pid)]
    assert chain > 0
