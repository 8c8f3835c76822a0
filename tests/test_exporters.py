"""The exporters without root or the extension: the upload request, byte for byte; the file
exporter; the uploader against local servers (HTTP on 127.0.0.1, a Unix socket, HTTPS with
a self-signed certificate playing the agentless intake) through 5xx, 4xx, hangs, an absent
agent, queue overflow and the close deadline; and the API key never showing.
"""
from __future__ import annotations

import email.parser
import email.policy
import gzip
import json
import logging
import os
import re
import shutil
import time
from typing import Optional

import pytest
import zstandard
from agent_fixtures import (
    END_NS,
    START_NS,
    FakeAgent,
    decode_upload,
    free_port,
    make_pprof,
    parse_multipart,
    self_signed_cert,
    wait_until,
)
from ddprofiler.exporters import (
    AgentExporter,
    FileExporter,
    ProfilePayload,
    build_request,
    datadog,
    files,
    uploader,
)
from ddprofiler.exporters.payload import build_body, rfc3339_ns
from ddprofiler.pprof import profile_pb2, stacks
from helpers import skip_or_fail

KEY = "0123456789abcdef0123456789abcdef"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
TAGS = ("service:web", "env:prod", "version:1.2", "host:node-1", "runtime:ebpf")
FAST = dict(backoff_base=0.01, backoff_max=0.05, connect_timeout=1, request_timeout=2)


def payload(seq: int = 0, pprof: Optional[bytes] = None, **kw) -> ProfilePayload:
    args = dict(pprof=make_pprof() if pprof is None else pprof, start_ns=START_NS, end_ns=END_NS,
                tags=TAGS + (f"profile_seq:{seq}",), service="web")
    args.update(kw)
    return ProfilePayload(**args)


def seqs(agent: FakeAgent) -> list:
    return [decode_upload(r).event["tags_profiler"].rsplit(":", 1)[1] for r in agent.requests]


@pytest.fixture
def exporters():
    made = []

    def make(**kw):
        kw.setdefault("profiler_version", "9.9.9")
        exp = AgentExporter(**{**FAST, **kw})
        made.append(exp)
        return exp

    yield make
    for exp in made:
        exp.close(0)


# ---------------------------------------------------------------- the request


def test_event_and_attachment():
    pprof = make_pprof()
    headers, body = build_request(payload(pprof=pprof), profiler_version="1.0.0")
    parts = parse_multipart(headers["Content-Type"], body)
    assert [(p.name, p.filename) for p in parts] == [("event", "event.json"),
                                                     ("cpu.pprof", "cpu.pprof")]
    assert parts[0].headers["content-type"] == "application/json"
    event = json.loads(parts[0].content)
    assert event == {
        "attachments": ["cpu.pprof"],
        "tags_profiler": ",".join(TAGS + ("profile_seq:0",)),
        "start": "2025-11-25T20:00:00.123456789Z",
        "end": "2025-11-25T20:01:00.123456789Z",
        "family": "ebpf",
        "version": "4",
    }
    assert all(isinstance(event[k], str) for k in event if k != "attachments")
    assert RFC3339.match(event["start"]) and RFC3339.match(event["end"])
    blob = parts[1].content
    assert blob[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompress(blob) == pprof
    # an independent parser agrees on the layout and the bytes
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body)
    got = [(p.get_param("name", header="content-disposition"), p.get_filename(),
            p.get_payload(decode=True)) for p in msg.iter_parts()]
    assert got == [("event", "event.json", parts[0].content), ("cpu.pprof", "cpu.pprof", blob)]


def test_rfc3339_is_exact_to_the_nanosecond():
    assert rfc3339_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert rfc3339_ns(1) == "1970-01-01T00:00:00.000000001Z"
    assert rfc3339_ns(4_102_444_799_999_999_999) == "2099-12-31T23:59:59.999999999Z"


def test_headers_agent_and_agentless():
    headers, _ = build_request(payload(), profiler_version="1.0.0")
    assert re.fullmatch(r"multipart/form-data; boundary=[0-9a-f]{32}", headers.pop("Content-Type"))
    assert headers == {"DD-EVP-ORIGIN": "ddprofiler", "DD-EVP-ORIGIN-VERSION": "1.0.0",
                       "User-Agent": "ddprofiler/1.0.0"}
    headers, _ = build_request(payload(), api_key=KEY, profiler_version="1.0.0")
    assert headers["DD-API-KEY"] == KEY


@pytest.mark.parametrize("container_id, inode, expected", [
    ("3f2a9c", None, {"Datadog-Container-ID": "3f2a9c", "Datadog-Entity-ID": "ci-3f2a9c"}),
    ("3f2a9c", 4026, {"Datadog-Container-ID": "3f2a9c", "Datadog-Entity-ID": "ci-3f2a9c"}),
    (None, 4026, {"Datadog-Entity-ID": "in-4026"}),
    (None, None, {}),
])
def test_entity_headers(container_id, inode, expected):
    headers, _ = build_request(payload(container_id=container_id, cgroup_inode=inode),
                               profiler_version="1")
    got = {k: v for k, v in headers.items() if k.startswith("Datadog-")}
    assert got == expected


def test_payload_repr_leaves_out_the_profile():
    assert "pprof" not in repr(payload(pprof=b"\x00secret-bytes"))


# ---------------------------------------------------------------- files


def test_file_exporter_writes_gzip_pprof_atomically(tmp_path, monkeypatch):
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((src, dst))
        assert os.path.dirname(src) == os.path.dirname(dst) and os.path.exists(src)
        real_replace(src, dst)

    monkeypatch.setattr("ddprofiler.pprof.builder.os.replace", spy)
    exp = FileExporter(tmp_path / "out")
    pprofs = [make_pprof(n) for n in (1, 2, 3)]
    services = ["web", "../odd service/ü", ".hidden"]
    for pprof, service in zip(pprofs, services):
        exp.submit(payload(pprof=pprof, service=service))
    exp.close(10)
    assert exp.stats()["uploads_ok"] == 3 and exp.stats()["queue_len"] == 0
    names = sorted(n for n in os.listdir(tmp_path / "out") if n.endswith(".pprof"))
    assert names == sorted(["web-20251125T200000Z-0.pprof",
                            "_odd_service__-20251125T200000Z-1.pprof",
                            "hidden-20251125T200000Z-2.pprof"]), names
    replaced = [(src, dst) for src, dst in replaced if dst.endswith(".pprof")]
    assert [os.path.basename(dst) for _, dst in replaced] == [
        "web-20251125T200000Z-0.pprof", "_odd_service__-20251125T200000Z-1.pprof",
        "hidden-20251125T200000Z-2.pprof"]
    for (_, dst), pprof in zip(replaced, pprofs):
        data = open(dst, "rb").read()
        assert data[:2] == b"\x1f\x8b" and gzip.decompress(data) == pprof
        profile = profile_pb2.Profile.FromString(gzip.decompress(data))
        assert sum(s.count for s in stacks(profile)) == pprofs.index(pprof) + 1


def test_file_exporter_writes_the_tags_beside_each_profile(tmp_path):
    exp = FileExporter(tmp_path)
    exp.submit(payload(3, tags=["service:web", "env:prod", "version:1.2", "host:h1", "team:core"],
                       container_id="c" * 64))
    exp.close(10)
    [meta] = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert (meta["service"], meta["env"], meta["version"], meta["host"]) == ("web", "prod", "1.2", "h1")
    assert "team:core" in meta["tags"] and meta["container_id"] == "c" * 64
    assert meta["start"] == "2025-11-25T20:00:00.123456789Z"
    [pprof] = tmp_path.glob("*.pprof")
    assert pprof.with_suffix(".json").exists()


def test_output_dir_retention_removes_the_oldest(tmp_path):
    # Profiles of an earlier run count too: the oldest of them go first.
    old = [tmp_path / f"old-20200101T00000{i}Z-{i}.pprof" for i in range(3)]
    for i, f in enumerate(old):
        f.write_bytes(b"x" * 100)
        f.with_suffix(".json").write_text("{}")
        os.utime(f, ns=(i * 10**9, i * 10**9))
    (tmp_path / "notes.txt").write_text("not ours: never removed")
    exp = FileExporter(tmp_path, max_files=4, max_bytes=1 << 30)
    for seq in range(3):
        exp.submit(payload(seq, service="web"))
    exp.close(10)
    left = sorted(p.name for p in tmp_path.glob("*.pprof"))
    assert left == ["old-20200101T000002Z-2.pprof", "web-20251125T200000Z-0.pprof",
                    "web-20251125T200000Z-1.pprof", "web-20251125T200000Z-2.pprof"], left
    assert not (tmp_path / "old-20200101T000000Z-0.json").exists()
    assert (tmp_path / "notes.txt").exists() and exp.stats()["files_removed"] == 2
    # A bound in bytes: only the newest fits.
    exp = FileExporter(tmp_path, max_files=100, max_bytes=1)
    exp.submit(payload(9, service="api"))
    exp.close(10)
    assert [p.name for p in tmp_path.glob("*.pprof")] == ["api-20251125T200000Z-0.pprof"]
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_file_exporter_counts_write_failures(tmp_path, caplog):
    out = tmp_path / "out"
    exp = FileExporter(out)
    out.rmdir()
    out.write_text("not a directory any more")
    exp.submit(payload())
    exp.close(5)
    assert exp.stats()["uploads_failed"] == 1
    assert "cannot write" in caplog.text


# ---------------------------------------------------------------- the uploader over HTTP


def test_agent_upload_arrives_with_headers(exporters):
    with FakeAgent() as agent:
        exp = exporters(agent_url=agent.url + "/", api_key=KEY)
        exp.submit(payload(container_id="c0ffee"))
        exp.close(10)
        (req,) = agent.requests
    assert req.path == "/profiling/v1/input"
    assert "dd-api-key" not in req.headers  # the Agent adds its own
    assert req.headers["datadog-container-id"] == "c0ffee"
    assert req.headers["datadog-entity-id"] == "ci-c0ffee"
    assert req.headers["dd-evp-origin"] == "ddprofiler"
    assert req.headers["dd-evp-origin-version"] == "9.9.9"
    assert decode_upload(req).pprof == make_pprof()
    stats = exp.stats()
    assert (stats["uploads_ok"], stats["uploads_failed"], stats["queue_len"],
            stats["queue_bytes"]) == (1, 0, 0, 0)


def test_500_is_retried_and_arrives_once(exporters):
    with FakeAgent([500]) as agent:
        exp = exporters(agent_url=agent.url)
        exp.submit(payload())
        exp.close(10)
    assert len(agent.requests) == 2
    assert agent.requests[0].body == agent.requests[1].body  # the same upload, retried
    stats = exp.stats()
    assert (stats["uploads_ok"], stats["uploads_retried"], stats["uploads_failed"]) == (1, 1, 0)


def test_400_is_not_retried_and_logged_once_per_status(exporters, caplog):
    answer = (400, b"Bad payload: no event\nsecond line\n")
    with FakeAgent(default=lambda req: answer) as agent:
        exp = exporters(agent_url=agent.url)
        for seq in range(3):
            exp.submit(payload(seq))
        exp.close(10)
    assert len(agent.requests) == 3
    stats = exp.stats()
    assert (stats["uploads_failed"], stats["uploads_retried"], stats["uploads_ok"]) == (3, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "HTTP 400" in warnings[0] and "Bad payload: no event" in warnings[0]
    assert "second line" not in warnings[0]


def test_hanging_agent_times_out_and_is_retried(exporters):
    with FakeAgent(default="hang") as agent:
        exp = exporters(agent_url=agent.url, request_timeout=0.3, max_retries=2)
        started = time.monotonic()
        exp.submit(payload())
        wait_until(lambda: exp.stats()["uploads_failed"] == 1, timeout=5)
        elapsed = time.monotonic() - started
        assert len(agent.requests) == 3
    assert 0.9 <= elapsed < 3, elapsed
    assert exp.stats()["uploads_retried"] == 2


def test_agent_absent_then_started_gets_all_in_order(exporters, caplog):
    port = free_port()
    exp = exporters(agent_url=f"http://127.0.0.1:{port}", max_retries=1000)
    for seq in range(4):
        exp.submit(payload(seq))
    wait_until(lambda: exp.stats()["uploads_retried"] >= 3, what="retries")
    # An Agent that is down is said once, not once per retry, and not only at debug level.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "failing: connection refused" in warnings[0], warnings
    assert str(port) in warnings[0] and "retried" in warnings[0]
    with FakeAgent(port=port) as agent:
        exp.close(10)
        assert seqs(agent) == ["0", "1", "2", "3"]
    assert exp.stats()["uploads_ok"] == 4 and exp.stats()["uploads_failed"] == 0


def _body_size() -> int:
    return len(build_body(payload(0))[1])


def test_overflow_drops_the_oldest_but_not_the_one_on_the_wire(exporters, caplog):
    size = _body_size()
    with FakeAgent(["hold"]) as agent:
        exp = exporters(agent_url=agent.url, max_queue_bytes=3 * size + 10, request_timeout=30)
        exp.submit(payload(0))
        agent.wait_requests(1)  # payload 0 is on the wire, held
        for seq in range(1, 7):
            exp.submit(payload(seq))
        assert exp.stats()["uploads_dropped"] == 4
        assert exp.stats()["queue_bytes"] <= 3 * size + 10
        agent.release()
        exp.close(10)
        assert seqs(agent) == ["0", "5", "6"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # the episode's start, and its end with the count
    assert "4 profiles dropped" in warnings[1]


def test_overflow_drops_the_oldest_even_while_it_waits_to_be_retried(exporters, monkeypatch):
    monkeypatch.setattr(uploader.random, "uniform", lambda a, b: b)  # no jitter: long waits
    port = free_port()
    size = _body_size()
    exp = exporters(agent_url=f"http://127.0.0.1:{port}", max_queue_bytes=2 * size + 10,
                    backoff_base=0.5, backoff_max=0.5, max_retries=1000)
    exp.submit(payload(0))
    wait_until(lambda: exp.stats()["uploads_retried"] == 1)  # 0 waits 0.5 s to retry
    exp.submit(payload(1))
    exp.submit(payload(2))  # no room: 0, the oldest, goes
    stats = exp.stats()
    assert (stats["uploads_dropped"], stats["queue_len"]) == (1, 2)
    assert stats["queue_bytes"] == 2 * size
    with FakeAgent(port=port) as agent:
        exp.close(10)
        assert seqs(agent) == ["1", "2"]
    assert exp.stats()["uploads_ok"] == 2


def test_payload_larger_than_the_queue_is_dropped(exporters):
    with FakeAgent() as agent:
        exp = exporters(agent_url=agent.url, max_queue_bytes=100)
        exp.submit(payload())
        exp.close(5)
        assert agent.requests == []
    assert exp.stats()["uploads_dropped"] == 1


def test_close_deadline_is_honored(exporters):
    with FakeAgent(default="hang") as agent:
        exp = exporters(agent_url=agent.url, request_timeout=30)
        exp.submit(payload(0))
        exp.submit(payload(1))
        agent.wait_requests(1)
        started = time.monotonic()
        exp.close(0.5)
        elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5, elapsed
    stats = exp.stats()
    assert (stats["uploads_abandoned"], stats["uploads_ok"], stats["queue_len"]) == (2, 0, 0)
    exp.submit(payload(2))  # after close: dropped, never raised
    assert exp.stats()["uploads_dropped"] == 1
    assert_counts_add_up(exp.stats())


def assert_counts_add_up(stats):
    assert stats["uploads_submitted"] == (stats["uploads_ok"] + stats["uploads_failed"] + stats["uploads_dropped"]
                                          + stats["uploads_abandoned"]), stats


def test_close_gives_up_at_once_on_an_agent_known_down(exporters, caplog):
    port = free_port()
    exp = exporters(agent_url=f"http://127.0.0.1:{port}", max_retries=1000, backoff_base=30,
                    backoff_max=30)
    for seq in range(3):
        exp.submit(payload(seq))
    wait_until(lambda: exp.stats()["attempts_failed"] >= 1, what="a failed attempt")
    assert exp.health()["state"] == "failing" and "connection refused" in exp.health()["reason"]
    started = time.monotonic()
    exp.close(30)  # one more attempt at once (not after the 30 s backoff), then give up
    assert time.monotonic() - started < 5
    stats = exp.stats()
    assert (stats["uploads_abandoned"], stats["queue_len"], stats["queue_bytes"]) == (3, 0, 0)
    assert_counts_add_up(stats)
    unsent = [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()]
    assert len(unsent) == 1 and "3 profiles not sent at exit: it is unreachable" in unsent[0], unsent


def test_failing_then_recovered_is_said_once_each(exporters, caplog):
    answers = iter([503, 503])
    with FakeAgent(default=lambda req: (next(answers, 200), b"overloaded\nmore")) as agent:
        exp = exporters(agent_url=agent.url, max_retries=5)
        exp.submit(payload(0))
        wait_until(lambda: exp.stats()["uploads_ok"] == 1, what="the upload")
        exp.submit(payload(1))
        exp.close(10)
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 2, said
    assert "failing: HTTP 503" in said[0] and ": overloaded;" in said[0] and "more" not in said[0]
    assert "recovered after" in said[1]
    health = exp.health()
    assert health["state"] == "ok" and health["last_ok"] > 0 and exp.stats()["attempts_failed"] == 2


def test_bad_payload_is_counted_not_raised(exporters):
    exp = exporters(agent_url=f"http://127.0.0.1:{free_port()}")
    exp.submit(ProfilePayload(pprof=None, start_ns=0, end_ns=0, tags=(), service="x"))
    assert exp.stats()["uploads_failed"] == 1


def test_unix_socket_agent(exporters, tmp_path):
    path = str(tmp_path / "apm.socket")
    with FakeAgent(unix_path=path) as agent:
        exp = exporters(agent_url=f"unix://{path}")
        exp.submit(payload(cgroup_inode=4026531835))
        exp.close(10)
        (req,) = agent.requests
    assert req.path == "/profiling/v1/input" and req.headers["host"] == "localhost"
    assert req.headers["datadog-entity-id"] == "in-4026531835"
    assert "datadog-container-id" not in req.headers
    assert decode_upload(req).event["family"] == "ebpf"


# ---------------------------------------------------------------- agentless over HTTPS


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl CLI is needed to make a test certificate")
    return self_signed_cert(str(tmp_path_factory.mktemp("tls")))


def intake(req):
    if req.headers.get("dd-api-key") == KEY:
        return 202, b'{"status":"accepted"}'
    return 403, b'{"errors":["Forbidden"]}\n'


def assert_key_hidden(exp, caplog, key):
    assert key not in repr(exp) and key not in str(exp.stats())
    assert key not in caplog.text
    for record in caplog.records:
        assert key not in str(record.args) and key not in str(record.exc_info)


@pytest.mark.parametrize("key, status", [(KEY, 202), ("fedcba9876543210fedcba9876543210", 403)])
def test_agentless_https(exporters, cert, caplog, key, status):
    caplog.set_level(logging.DEBUG)
    with FakeAgent(default=intake, tls=cert) as server:
        exp = exporters(intake_url=server.url + "/api/v2/profile", agentless_site="datadoghq.eu",
                        api_key=key, ca_file=cert[0])
        exp.submit(payload())
        exp.close(10)
        (req,) = server.requests
    assert req.path == "/api/v2/profile" and req.headers["dd-api-key"] == key
    assert decode_upload(req).pprof == make_pprof()
    stats = exp.stats()
    assert (stats["uploads_ok"], stats["uploads_failed"]) == ((1, 0) if status == 202 else (0, 1))
    if status == 403:
        assert "HTTP 403" in caplog.text and '{"errors":["Forbidden"]}' in caplog.text
    assert "***" + key[-4:] in repr(exp)
    assert_key_hidden(exp, caplog, key)


def test_agentless_rejects_an_unknown_certificate(exporters, cert, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeAgent(default=intake, tls=cert) as server:
        exp = exporters(intake_url=server.url + "/api/v2/profile", api_key=KEY, max_retries=1)
        exp.submit(payload())
        exp.close(10)
        assert server.requests == []
    assert exp.stats()["uploads_failed"] == 1
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    assert_key_hidden(exp, caplog, KEY)


def test_agentless_urls_and_key_checks():
    exp = AgentExporter(agentless_site="us5.datadoghq.com", api_key=KEY, profiler_version="1")
    try:
        assert exp.url == "https://intake.profile.us5.datadoghq.com/api/v2/profile"
        assert KEY not in repr(exp)
        assert KEY not in repr(vars(exp)) and KEY not in repr(vars(exp._sender))
    finally:
        exp.close(0)
    with pytest.raises(ValueError, match="needs an API key"):
        AgentExporter(agentless_site="datadoghq.com", profiler_version="1")
    bad = KEY + "\r\nX-Injected: 1"
    with pytest.raises(ValueError) as err:
        AgentExporter(agentless_site="datadoghq.com", api_key=bad, profiler_version="1")
    assert KEY not in str(err.value)
    agent = AgentExporter(api_key=KEY, profiler_version="1")
    try:
        assert agent.url == "http://localhost:8126/profiling/v1/input"
        assert KEY not in repr(agent) and "<none>" in repr(agent)
    finally:
        agent.close(0)


def test_mask_key():
    assert datadog.mask_key(KEY) == "***cdef"
    assert datadog.mask_key("short") == "***"
    assert datadog.mask_key(None) == "<none>"
    assert files.safe_service("") == "unknown"
