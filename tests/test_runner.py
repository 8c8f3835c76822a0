"""The period export of the continuous profiler, without BPF: tagging, the split by
service, tags, labels and the symbolization mode, on hand-made snapshots."""
from __future__ import annotations

import copy

import pytest
from agent_fixtures import make_snapshot

from ddprofiler import config
from ddprofiler.pprof import profile_pb2, stacks
from ddprofiler.runner import Runner

CID = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


class Collect:
    def __init__(self):
        self.payloads = []

    def submit(self, payload):
        self.payloads.append(payload)

    def stats(self):
        return {}


def snapshot_two_services():
    snap = make_snapshot()
    snap["samples"].append({"pid": 7, "tid": 7, "cpu": 0, "stack": 0, "count": 3,
                            "thread_name": "kworker/0:1", "process_name": "kworker/0:1"})
    snap["processes"] = [{"pid": 4242, "name": "app", "exe": "/usr/bin/app",
                          "env": {"DD_SERVICE": "checkout", "DD_VERSION": "1.2"},
                          "cgroup": f"0::/system.slice/docker-{CID}.scope\n"}]
    return snap


def run(snap, **settings):
    s, _ = config.resolve(settings, {"DD_ENV": "prod", "DD_TAGS": "team:core"})
    out = Collect()
    Runner(s, profiler=None, exporter=out).export(copy.deepcopy(snap))
    return {p.service: p for p in out.payloads}


def test_split_tags_and_labels():
    by_service = run(snapshot_two_services())
    assert set(by_service) == {"checkout", "system"}
    app = by_service["checkout"]
    tags = list(app.tags)
    assert tags[:4] == ["service:checkout", "service_inferred:no", "env:prod", "version:1.2"]
    assert "runtime:ebpf" in tags and "profile_seq:1" in tags and tags[-1] == "team:core"
    assert "remote_symbols:yes" not in tags
    assert app.container_id == CID
    p = profile_pb2.Profile.FromString(app.pprof)
    [st] = stacks(p)
    assert (st.pid, st.frames) == (4242, ["leaf", "main"])
    labels = {p.string_table[lb.key]: p.string_table[lb.str] for lb in p.sample[0].label}
    assert labels["container_id"] == CID
    kernel = profile_pb2.Profile.FromString(by_service["system"].pprof)
    assert [s.pid for s in stacks(kernel)] == [7]
    assert by_service["system"].container_id is None


@pytest.mark.parametrize("mode, lines_kept, remote", [("host", True, False), ("backend", False, True),
                                                      ("both", True, True)])
def test_symbolize_modes(mode, lines_kept, remote):
    app = run(snapshot_two_services(), symbolize=mode)["checkout"]
    assert ("remote_symbols:yes" in app.tags) == remote
    p = profile_pb2.Profile.FromString(app.pprof)
    assert all(bool(loc.line) == lines_kept for loc in p.location)
    # Left for the backend, a frame still has what it takes: mapping with build id, address.
    m = {mp.id: mp for mp in p.mapping}
    for loc in p.location:
        assert loc.address and p.string_table[m[loc.mapping_id].build_id]


def test_not_split_uses_the_host_service():
    by_service = run(snapshot_two_services(), split_by_service=False, host_service="fleet")
    assert list(by_service) == ["fleet"]
    assert sum(s.count for s in stacks(profile_pb2.Profile.FromString(by_service["fleet"].pprof))) == 10


class Offers:
    def __init__(self):
        self.got = []

    def offer(self, binaries):
        self.got.append(list(binaries))


def test_binaries_of_each_period_are_offered_for_symbol_upload():
    s, _ = config.resolve({}, {})
    sink = Offers()
    Runner(s, profiler=None, exporter=Collect(), symbols=sink).export(snapshot_two_services())
    assert sink.got == [[(4242, "/usr/bin/app", "0123456789abcdef0123456789abcdef01234567")]]


def test_background_upload_inspects_each_file_once(tmp_path):
    import os
    import sys
    import time

    from ddprofiler.symbols.background import BackgroundSymbolUpload
    from ddprofiler.symbols.upload import Summary

    class Uploader:
        def __init__(self):
            self.infos = []

        def upload_infos(self, infos):
            self.infos += infos
            return Summary(uploaded=[(i.path, "ok") for i in infos])

    up = Uploader()
    bg = BackgroundSymbolUpload(up)
    exe = os.path.realpath(sys.executable)
    me = os.getpid()
    bg.offer([(me, exe, "id-1"), (me, "/nonexistent/lib.so", "id-2")])
    bg.offer([(me, exe, "id-1")])  # seen before: not again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and bg.stats["symbols_uploaded"] + bg.stats["symbols_skipped"] < 2:
        time.sleep(0.05)
    bg.close(5)
    assert [i.path for i in up.infos] == [f"/proc/{me}/root{exe}"]
    assert bg.stats["symbols_seen"] == 2 and bg.stats["symbols_uploaded"] == 1
    assert bg.stats["symbols_skipped"] == 1  # the missing file
