"""The period export of the continuous profiler, without BPF: tagging, the split by
service, tags, per-pid labels, the remote_symbols tag, the period's telemetry line, the
offer of binaries for symbol upload and their upload in the background, on hand-made
``ddprofiler.Profile``s."""
from __future__ import annotations

import copy
import logging

import pytest
from agent_fixtures import make_profile

from ddprofiler import Frame, Line, Mapping, ProcessInfo, Sample, Stats
from ddprofiler import config
from ddprofiler.pprof import encode_profile, profile_pb2, stacks
from ddprofiler.runner import Runner, symbol_mappings

CID = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
SPECS = [("samples", "count", ""), ("lost", "lost", ""), ("processes", "gauge", ""),
         ("unwind_complete", "success", ""), ("unwind_stuck", "unwind_failure", ""),
         ("elf_errors", "error", "")]


class Collect:
    def __init__(self):
        self.payloads = []

    def submit(self, payload):
        self.payloads.append(payload)

    def stats(self):
        return {}


def profile_two_services():
    p = make_profile()
    p.samples.append(Sample(7, 7, 0, 0, 3, "kworker/0:1", "kworker/0:1"))
    p.processes[4242] = ProcessInfo(4242, "app", "/usr/bin/app",
                                    {"DD_SERVICE": "checkout", "DD_VERSION": "1.2",
                                     "POD_NAME": "checkout-7d9f"},
                                    f"0::/system.slice/docker-{CID}.scope\n")
    return p


def run(profile, **settings):
    s, _ = config.resolve(settings, {"DD_ENV": "prod", "DD_TAGS": "team:core"})
    out = Collect()
    Runner(s, profiler=None, exporter=out).export(copy.deepcopy(profile))
    return {p.service: p for p in out.payloads}


def labels_of(pb, sample):
    return {pb.string_table[lb.key]: pb.string_table[lb.str] for lb in sample.label}


def test_split_tags_and_labels():
    by_service = run(profile_two_services())
    assert set(by_service) == {"checkout", "system"}
    app = by_service["checkout"]
    tags = list(app.tags)
    assert tags[:4] == ["service:checkout", "service_inferred:no", "env:prod", "version:1.2"]
    assert "runtime:ebpf" in tags and "profile_seq:1" in tags and tags[-1] == "team:core"
    assert "remote_symbols:yes" not in tags
    assert app.container_id == CID
    assert (app.start_ns, app.end_ns) == (make_profile().start_ns, make_profile().end_ns)
    p = profile_pb2.Profile.FromString(app.pprof)
    [st] = stacks(p)
    assert (st.pid, st.count, st.frames) == (4242, 7, ["leaf", "main"])
    labels = labels_of(p, p.sample[0])
    assert (labels["container_id"], labels["pod_name"]) == (CID, "checkout-7d9f")
    assert "container_name" not in labels  # unknown: left out, not empty
    kernel = profile_pb2.Profile.FromString(by_service["system"].pprof)
    assert [(s.pid, s.count) for s in stacks(kernel)] == [(7, 3)]
    assert not {"container_id", "pod_name"} & set(labels_of(kernel, kernel.sample[0]))
    assert by_service["system"].container_id is None


def test_export_leaves_the_profile_alone():
    p = profile_two_services()
    before = copy.deepcopy(p)
    s, _ = config.resolve({}, {})
    Runner(s, profiler=None, exporter=Collect()).export(p)
    assert p == before


def backend_profile():
    """What the core hands over with --symbolize backend: native frames in files with an
    id have no lines; kernel frames keep theirs."""
    p = profile_two_services()
    kernel = Mapping(0xFFFFFFFF81000000, 1 << 64, 0, "[kernel.kallsyms]", "", True)
    p.mappings.append(kernel)
    p.frames = [f._replace(lines=()) for f in p.frames]
    p.frames.append(Frame(0xFFFFFFFF81000100, kernel, "kernel", (Line("do_syscall_64", "", "", 0),)))
    p.stacks.append((2, 0, 1))
    p.samples[0] = p.samples[0]._replace(stack=1)
    return p


@pytest.mark.parametrize("mode, profile, remote", [
    ("host", profile_two_services, False),
    ("host", backend_profile, True),  # frames left unsymbolized all the same: say so
    ("backend", backend_profile, True),
    ("both", profile_two_services, True),
])
def test_remote_symbols_tag(mode, profile, remote):
    app = run(profile(), symbolize=mode)["checkout"]
    assert ("remote_symbols:yes" in app.tags) == remote
    p = profile_pb2.Profile.FromString(app.pprof)
    # The runner writes frames as the core named them: it never drops lines itself.
    names = {p.string_table[f.name] for f in p.function}
    if profile is backend_profile:
        assert names == {"do_syscall_64"}
        m = {mp.id: mp for mp in p.mapping}
        left = [loc for loc in p.location if not loc.line]
        assert len(left) == 2, left  # leaf and main
        for loc in left:  # left for the backend: a mapping with a build id, an address
            assert loc.address and p.string_table[m[loc.mapping_id].build_id]
    else:
        assert names == {"leaf", "main"}


def has_backend_frames(p):
    return encode_profile(p).backend_frames


def test_has_backend_frames():
    assert not has_backend_frames(make_profile())
    assert has_backend_frames(backend_profile())
    p = make_profile()
    p.mappings[0] = p.mappings[0]._replace(build_id="")  # the backend cannot know the file
    p.frames = [f._replace(lines=(), mapping=p.mappings[0]) for f in p.frames]
    assert not has_backend_frames(p)


def test_not_split_uses_the_host_service():
    by_service = run(profile_two_services(), split_by_service=False, host_service="fleet")
    assert list(by_service) == ["fleet"]
    fleet = profile_pb2.Profile.FromString(by_service["fleet"].pprof)
    assert sorted((s.pid, s.count) for s in stacks(fleet)) == [(7, 3), (4242, 7)]


def test_profile_seq_counts_per_service():
    s, _ = config.resolve({}, {})
    out = Collect()
    runner = Runner(s, profiler=None, exporter=out)
    runner.export(profile_two_services())
    runner.export(profile_two_services())
    seqs = [(p.service, next(t for t in p.tags if t.startswith("profile_seq:"))) for p in out.payloads]
    assert sorted(seqs) == [("checkout", "profile_seq:1"), ("checkout", "profile_seq:2"),
                            ("system", "profile_seq:1"), ("system", "profile_seq:2")]


def test_telemetry_uses_counter_kinds_and_deltas(caplog):
    s, _ = config.resolve({}, {})
    runner = Runner(s, profiler=None, exporter=Collect())
    first = profile_two_services()
    first.stats = Stats({"samples": 10, "lost": 1, "processes": 5, "unwind_complete": 8,
                         "unwind_stuck": 2, "elf_errors": 1}, SPECS)
    second = profile_two_services()
    second.stats = Stats({"samples": 30, "lost": 4, "processes": 3, "unwind_complete": 20,
                          "unwind_stuck": 2, "elf_errors": 6}, SPECS)
    with caplog.at_level(logging.INFO, logger="ddprofiler.runner"):
        runner.export(first)
        runner.export(second)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("period:")]
    assert lines[0].startswith("period: 10 samples in 2 profiles over ")
    assert "; samples lost 1; stacks cut short 2 (stuck 2); errors 1 (elf_errors 1); " in lines[0]
    # The second period: differences of counts; stuck did not move; the gauge is no error.
    assert "; samples lost 3; stacks cut short 0; errors 5 (elf_errors 5); " in lines[1]
    assert lines[1].endswith("0 waiting in the queue (0 B); memory not measured; destination ok")


class Offers:
    def __init__(self):
        self.got = []

    def offer(self, mappings):
        self.got.append(list(mappings))


def test_binaries_of_each_period_are_offered_for_symbol_upload():
    binary = object()  # stands for the _native.Binary the core holds open
    p = profile_two_services()
    app = p.mappings[0]._replace(binary=binary)
    same_file = Mapping(0x600000, 0x700000, 0x200000, "/usr/bin/app", app.build_id, False, binary)
    no_binary = Mapping(0x800000, 0x900000, 0, "/usr/lib/libx.so", "aa" * 20, False)
    vdso = Mapping(0x10000, 0x20000, 0, "[vdso]", "bb" * 20, False, object())
    no_id = Mapping(0xA00000, 0xB00000, 0, "/usr/lib/liby.so", "", False, object())
    p.mappings = [app, same_file, no_binary, vdso, no_id]
    p.frames = [Frame(0x401000, app, "native", ()), Frame(0x402000, app, "native", ())] + [
        Frame(m.start + 0x10, m, "native", ()) for m in p.mappings[1:]]
    p.stacks = [(0, 1), (2, 3, 4, 5)]
    p.samples.append(Sample(4242, 4242, 0, 1, 1, "app", "app"))
    assert symbol_mappings(p) == [app]  # one per build id; only open files with an id

    s, _ = config.resolve({}, {})
    sink = Offers()
    Runner(s, profiler=None, exporter=Collect(), symbols=sink).export(p)
    assert len(sink.got) == 1 and [m.build_id for m in sink.got[0]] == [app.build_id]
    assert sink.got[0][0].binary is binary


def test_run_exports_each_period_and_the_last_partial_one():
    class FakeProfiler:
        def __init__(self):
            self.calls = []

        def snapshot(self, reset=True):
            self.calls.append(("snapshot", reset))
            return profile_two_services()

        def stop(self):
            self.calls.append(("stop",))

    now = [0.0]
    stops = iter([False, False, False, True])
    s, _ = config.resolve({"upload_period": "10"}, {})
    out, prof = Collect(), FakeProfiler()

    def clock():
        now[0] += 6.0  # each look at the clock is 6 s later: a period every other turn
        return now[0]

    Runner(s, prof, out, clock=clock, rng=lambda: 0.5).run(lambda: next(stops))
    assert prof.calls[-2:] == [("stop",), ("snapshot", True)]
    assert prof.calls.count(("snapshot", True)) == len(out.payloads) // 2
    assert len(out.payloads) >= 4  # at least one full period and the partial one, 2 services each


def test_offered_binaries_are_inspected_and_uploaded_once():
    """Runner -> BackgroundSymbolUpload -> uploader, with stand-ins for the open files."""
    import time
    import types

    from ddprofiler.errors import InvalidBinaryError
    from ddprofiler.symbols.background import BackgroundSymbolUpload
    from ddprofiler.symbols.upload import Summary

    class FakeBinary:
        def __init__(self, path, valid=True):
            self.path, self.valid, self.inspected = path, valid, 0

        def inspect(self):  # a BinaryInfo stand-in: the uploader reads its path only
            self.inspected += 1
            if not self.valid:
                raise InvalidBinaryError(f"{self.path}: not an ELF file")
            return types.SimpleNamespace(path=self.path)

    class Uploader:
        def __init__(self):
            self.paths = []

        def upload_infos(self, infos):
            infos = list(infos)
            self.paths += [i.path for i in infos]
            return Summary(uploaded=[(i.path, "ok") for i in infos])

    app_bin, bad_bin = FakeBinary("/usr/bin/app"), FakeBinary("/usr/lib/libbad.so", valid=False)
    p = profile_two_services()
    app = p.mappings[0]._replace(binary=app_bin)
    bad = Mapping(0x800000, 0x900000, 0, "/usr/lib/libbad.so", "ee" * 20, False, bad_bin)
    p.mappings = [app, bad]
    p.frames = [Frame(0x401000, app, "native", ()), Frame(0x800010, bad, "native", ())]
    p.stacks = [(0, 1)]

    up = Uploader()
    bg = BackgroundSymbolUpload(up)
    s, _ = config.resolve({}, {})
    runner = Runner(s, profiler=None, exporter=Collect(), symbols=bg)
    runner.export(p)
    runner.export(p)  # the same files in the next period: not again
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and bg.stats["symbols_uploaded"] + bg.stats["symbols_skipped"] < 2:
        time.sleep(0.02)
    bg.close(5)
    assert up.paths == ["/usr/bin/app"]
    assert (app_bin.inspected, bad_bin.inspected) == (1, 1)
    assert bg.stats["symbols_seen"] == 2
    assert (bg.stats["symbols_uploaded"], bg.stats["symbols_skipped"]) == (1, 1)  # libbad: invalid
