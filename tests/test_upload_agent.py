"""Upload through ``AgentExporter`` to Datadog's agent emulator ``ddapm-test-agent``.

The emulator lives in its own virtual environment, ``.venv-testagent/`` at the repo root
(``scripts/install-test-agent.sh``): its protobuf pins clash with ours. It records what it
receives and checks nothing, so this test checks everything it recorded: method, path,
headers, the multipart layout, event.json, the zstd attachment and the pprof inside.
Requests are fetched from ``GET /test/session/requests?test_session_token=...`` after
``GET /test/session/start?test_session_token=...`` (requests sent without a token after
the session start belong to it). Without the venv the test is skipped, or failed when
DDPROF_REQUIRE_BPF=1.
"""
from __future__ import annotations

import re
import secrets
from typing import Optional

import pytest
from agent_fixtures import (
    END_NS,
    START_NS,
    Request,
    decode_upload,
    make_pprof,
    recorded,
)
from ddprofiler.exporters import AgentExporter, ProfilePayload
from ddprofiler.pprof import profile_pb2, stacks

TAGS = ("service:checkout", "env:test", "version:2.0", "host:node-7", "runtime:ebpf",
        "profiler_name:ddprofiler", "profile_seq:0")
CONTAINER = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


def upload(agent_url: str, payload: ProfilePayload) -> dict:
    exp = AgentExporter(agent_url=agent_url, profiler_version="1.2.3", backoff_base=0.05,
                        backoff_max=0.2, connect_timeout=2, request_timeout=10)
    exp.submit(payload)
    exp.close(20)
    return exp.stats()


def check_upload(req: Request, pprof: bytes, container: Optional[str], inode: Optional[int]):
    assert req.method == "POST"
    h = req.headers
    assert h["dd-evp-origin"] == "ddprofiler"
    assert h["dd-evp-origin-version"] == "1.2.3"
    assert h["user-agent"] == "ddprofiler/1.2.3"
    assert "dd-api-key" not in h
    assert re.fullmatch(r"multipart/form-data; boundary=[0-9a-f]{32}", h["content-type"])
    assert int(h["content-length"]) == len(req.body)
    if container:
        assert h["datadog-container-id"] == container
        assert h["datadog-entity-id"] == f"ci-{container}"
    else:
        assert "datadog-container-id" not in h
        assert h["datadog-entity-id"] == f"in-{inode}"

    up = decode_upload(req)  # asserts the multipart layout
    assert [(p.name, p.filename) for p in up.parts] == [("event", "event.json"),
                                                        ("cpu.pprof", "cpu.pprof")]
    assert up.parts[0].headers["content-type"] == "application/json"
    assert up.event == {"attachments": ["cpu.pprof"], "tags_profiler": ",".join(TAGS),
                        "start": "2025-11-25T20:00:00.123456789Z",
                        "end": "2025-11-25T20:01:00.123456789Z",
                        "family": "ebpf", "version": "4"}
    assert up.compressed[:4] == b"\x28\xb5\x2f\xfd"
    assert up.pprof == pprof
    profile = profile_pb2.Profile.FromString(up.pprof)
    assert profile.time_nanos == START_NS and profile.duration_nanos == END_NS - START_NS
    (stack,) = stacks(profile)
    assert (stack.pid, stack.tid, stack.thread_name, stack.process_name, stack.count) == (
        4242, 4243, "worker", "app", 7)
    assert stack.frames == ["leaf", "main"]


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_upload_to_ddapm_test_agent(test_agent, transport):
    token = secrets.token_hex(8)
    test_agent.get(f"/test/session/start?test_session_token={token}")
    pprof = make_pprof()
    container, inode = (CONTAINER, None) if transport == "tcp" else (None, 4026532461)
    payload = ProfilePayload(pprof=pprof, start_ns=START_NS, end_ns=END_NS, tags=TAGS,
                             service="checkout", container_id=container, cgroup_inode=inode)
    url = test_agent.url if transport == "tcp" else f"unix://{test_agent.socket}"
    stats = upload(url, payload)
    assert (stats["uploads_ok"], stats["uploads_failed"], stats["uploads_retried"]) == (1, 0, 0), (
        stats, test_agent.output())
    (req,) = recorded(test_agent, token)
    check_upload(req, pprof, container, inode)
