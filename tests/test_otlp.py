"""OTLP profiles export, decoded with opentelemetry-proto's own definitions.

The .proto files (tests/data/opentelemetry-proto, v1development) are compiled here with
grpcio-tools' protoc; what the exporter posts to a real HTTP receiver is decoded as an
``ExportProfilesServiceRequest`` and checked: the path and content type, one resource per
service with its attributes, the dictionary's zero values, the stacks by function name,
the sample attributes. Once from hand-made tables (two services), once from a real
profile of the chain workload (the core's own snapshot).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest

from agent_fixtures import FakeAgent
from ddprofiler import config
from ddprofiler.exporters.otlp import OtlpExporter, parse_headers, partial_success, profiles_url
from ddprofiler.runner import Runner
from test_runner import profile_two_services

PROTO = Path(__file__).parent / "data" / "opentelemetry-proto"


@pytest.fixture(scope="module")
def otlp(tmp_path_factory):
    """The official ExportProfilesServiceRequest class."""
    from grpc_tools import protoc  # the test extra (grpcio-tools)

    out = tmp_path_factory.mktemp("otlp_pb2")
    files = [str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto")]
    include = str(Path(protoc.__file__).parent / "_proto")
    assert protoc.main(["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))
    try:
        module = importlib.import_module("opentelemetry.proto.collector.profiles.v1development.profiles_service_pb2")
    finally:
        sys.path.remove(str(out))
    return module.ExportProfilesServiceRequest


def attr_value(v):
    return getattr(v, v.WhichOneof("value"))


def decode(otlp, body):
    req = otlp()
    req.ParseFromString(body)
    d = req.dictionary
    s = d.string_table

    def names(stack_index):
        out = []
        for i in d.stack_table[stack_index].location_indices:
            loc = d.location_table[i]
            out += [s[d.function_table[ln.function_index].name_strindex] for ln in loc.lines]
        return out

    def attrs(indices):
        return {s[d.attribute_table[i].key_strindex]: attr_value(d.attribute_table[i].value) for i in indices}

    return req, names, attrs


def export(profile, receiver, **settings):
    s, _ = config.resolve(settings, {"DD_ENV": "prod", "DD_TAGS": "team:core"})
    exporter = OtlpExporter(profiles_url(receiver.url), headers={"Authorization": "Bearer t0ken"})
    Runner(s, profiler=None, exporter=exporter).export(profile)
    exporter.close(10)
    return exporter


def test_hand_made_two_services(otlp):
    with FakeAgent() as receiver:
        exporter = export(copy.deepcopy(profile_two_services()), receiver, node="host-1")
        (request,) = receiver.wait_requests(1)
    assert exporter.stats()["uploads_ok"] == 1
    assert request.path == "/v1development/profiles"
    assert request.headers["content-type"] == "application/x-protobuf"
    assert request.headers["authorization"] == "Bearer t0ken"
    req, names, attrs = decode(otlp, request.body)
    d = req.dictionary
    assert d.string_table[0] == "" and not d.mapping_table[0].ListFields() and not d.stack_table[0].ListFields()
    resources = {}
    for rp in req.resource_profiles:
        res = {kv.key: attr_value(kv.value) for kv in rp.resource.attributes}
        resources[res["service.name"]] = (res, rp.scope_profiles[0])
    assert set(resources) == {"checkout", "system"}
    res, scope = resources["checkout"]
    assert res["deployment.environment.name"] == "prod" and res["service.version"] == "1.2"
    assert res["host.name"] == "host-1" and res["team"] == "core" and "container.id" in res
    assert scope.scope.name == "ddprofiler"
    (profile,) = scope.profiles
    s = d.string_table
    assert (s[profile.sample_type.type_strindex], s[profile.sample_type.unit_strindex]) == ("samples", "count")
    assert (s[profile.period_type.type_strindex], s[profile.period_type.unit_strindex], profile.period) == (
        "cpu", "nanoseconds", 1_000_000_000 // 20)
    assert len(profile.profile_id) == 16 and any(profile.profile_id)
    (sample,) = profile.samples
    assert names(sample.stack_index) == ["leaf", "main"] and list(sample.values) == [7]
    assert attrs(sample.attribute_indices) == {"process.pid": 4242, "thread.id": 4243, "thread.name": "worker",
                                               "process.executable.name": "app"}


def test_groups_otlp_cannot_tell_apart_are_one_resource(otlp, monkeypatch):
    # The same service in two cgroups without a container id: two pprof groups (Datadog
    # tells them apart by the cgroup's inode), but OTLP has no attribute for the cgroup, so
    # one resource with the samples of both.
    profile = copy.deepcopy(profile_two_services())
    profile.processes[7] = copy.deepcopy(profile.processes[4242])
    original = Runner.tags_of

    def tags_of(self, p):
        return {pid: dataclasses.replace(t, container_id=None, cgroup_inode=1000 + pid)
                for pid, t in original(self, p).items()}

    monkeypatch.setattr(Runner, "tags_of", tags_of)
    with FakeAgent() as receiver:
        export(profile, receiver, node="host-1")
        (request,) = receiver.wait_requests(1)
    req, names, attrs = decode(otlp, request.body)
    services = [{kv.key: attr_value(kv.value) for kv in rp.resource.attributes}["service.name"]
                for rp in req.resource_profiles]
    assert services == ["checkout"], services
    (profile_out,) = req.resource_profiles[0].scope_profiles[0].profiles
    pids = sorted(attrs(s.attribute_indices)["process.pid"] for s in profile_out.samples)
    assert pids == [7, 4242] and sum(v for s in profile_out.samples for v in s.values) == 10


def test_endpoint_rules_follow_opentelemetry():
    def url(**env):
        return config.resolve({}, env)[0].otlp_endpoint

    assert url() == "http://localhost:4318/v1development/profiles"
    assert url(OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318/base") == "http://c:4318/base/v1development/profiles"
    # A signal-specific endpoint is used as it is.
    assert url(OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT="http://c:9/custom/profiles") == "http://c:9/custom/profiles"
    s, _ = config.resolve({"otlp_endpoint": "http://c:4318/v1development/profiles"}, {})
    assert s.otlp_endpoint == "http://c:4318/v1development/profiles"


def test_a_collector_down_is_named_as_such():
    exporter = OtlpExporter(profiles_url("http://127.0.0.1:9"), max_retries=0)
    exporter.submit_request(b"x")
    exporter.close(2)
    health = exporter.health()
    assert "is the OTLP collector running" in health.get("reason", ""), health
    assert "Agent" not in health.get("reason", "")


def test_a_partial_success_is_logged_and_counted_not_retried(otlp, caplog):
    response_class = importlib.import_module(otlp.__module__).ExportProfilesServiceResponse
    rejected = response_class()
    rejected.partial_success.rejected_profiles = 3
    rejected.partial_success.error_message = "sample_type unknown"
    body = rejected.SerializeToString()
    assert partial_success(body) == (3, "sample_type unknown")
    # What a collector answers on every success: an empty partial_success.
    empty = response_class()
    empty.partial_success.SetInParent()
    assert partial_success(empty.SerializeToString()) is None and partial_success(b"") is None
    assert partial_success(b"\x0a\x05\x08") is None  # truncated: not a response, ignored

    with FakeAgent(default=lambda request: (200, body)) as receiver:
        exporter = OtlpExporter(profiles_url(receiver.url))
        exporter.submit_request(b"x")
        exporter.close(10)
        assert len(receiver.requests) == 1
    stats = exporter.stats()
    assert (stats["uploads_ok"], stats.get("uploads_retried", 0), stats["otlp_profiles_rejected"]) == (1, 0, 3)
    assert "partial success: 3 profiles rejected: sample_type unknown" in caplog.text


def test_headers_parse_and_bad_ones_never_show_their_value():
    assert parse_headers("a=1, b = two ,") == {"a": "1", "b": "two"}
    with pytest.raises(ValueError) as e:
        parse_headers("api-key=s3cret,oops")
    assert "#2" in str(e.value) and "s3cret" not in str(e.value)
    assert "t0ken" not in repr(OtlpExporter("http://127.0.0.1:1", headers={"x": "t0ken"}))


@pytest.mark.bpf
def test_real_profile_of_the_chain(otlp, workloads):
    import ddprofiler
    from helpers import Workload

    with Workload([workloads["chain"], 30]) as w:
        profile = ddprofiler.record(2, pids=[w.pid], frequency=199)
    assert profile.native is not None  # the core's tables, encoded in the core
    with FakeAgent() as receiver:
        export(profile, receiver)
        (request,) = receiver.wait_requests(1)
    req, names, attrs = decode(otlp, request.body)
    samples = [s for rp in req.resource_profiles for sp in rp.scope_profiles for p in sp.profiles for s in p.samples]
    total = sum(s.values[0] for s in samples)
    chain = sum(s.values[0] for s in samples if names(s.stack_index)[:4] == ["leaf", "middle", "outer", "main"])
    assert total > 100 and chain / total > 0.9, (total, chain)
    assert all(attrs(s.attribute_indices)["process.pid"] == w.pid for s in samples)
    d = req.dictionary
    kinds = {attr_value(d.attribute_table[i].value) for loc in d.location_table[1:] for i in loc.attribute_indices}
    assert "native" in kinds
    mapping_attrs = {d.string_table[d.attribute_table[i].key_strindex] for m in d.mapping_table[1:]
                     for i in m.attribute_indices}
    assert "process.executable.build_id.gnu" in mapping_attrs


@pytest.mark.bpf
def test_run_exports_otlp_to_a_collector(otlp, workloads, tmp_path):
    """`ddprofiler run --exporter otlp`: the continuous profiler's requests, decoded."""
    import os
    import signal
    import subprocess
    import time

    from helpers import Workload

    with FakeAgent() as receiver, Workload([workloads["chain"], 60]) as w:
        env = {**os.environ, "DD_SERVICE": "ignored-by-the-profiler"}
        proc = subprocess.Popen([sys.executable, "-m", "ddprofiler", "run", "--exporter", "otlp",
                                 "--otlp-endpoint", receiver.url, "--otlp-headers", "x-token=s3cret",
                                 "--upload-period", "2", "-r", "99", "--status-file", "off"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            receiver.wait_requests(1, timeout=60)
            time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "s3cret" not in err
    assert f"sending OTLP profiles to {receiver.url}/v1development/profiles" in err
    req, names, attrs = decode(otlp, receiver.requests[0].body)
    assert receiver.requests[0].headers["x-token"] == "s3cret"
    services = set()
    chain = 0
    for rp in req.resource_profiles:
        res = {kv.key: attr_value(kv.value) for kv in rp.resource.attributes}
        services.add(res["service.name"])
        for p in rp.scope_profiles[0].profiles:
            for s in p.samples:
                if attrs(s.attribute_indices).get("process.pid") == w.pid:
                    assert names(s.stack_index)[-1] in ("_start", "main", "__libc_start_call_main")
                    chain += s.values[0]
    assert "chain" in services and chain > 0
