"""The pprof builder and reader on a hand-made ``ddprofiler.Profile`` (no root, no
extension needed).

The profile has a kernel mapping, an inlined frame with two lines, an unsymbolized frame,
a marker frame, a 600-deep stack cut by the core (ending in its ``[truncated]`` marker)
and a mapping no frame uses. When ``go`` is on PATH, ``go tool pprof`` must read the
written file too.
"""
from __future__ import annotations

import copy
import gzip
import os
import subprocess
import tempfile

import pytest
from ddprofiler import Frame, Line, Mapping, Profile, Sample, Stats
from ddprofiler.pprof import build_profile, profile_pb2, read_pprof, stacks, write_pprof
from ddprofiler.pprof.reader import parse_pprof

START_NS = 1_700_000_000_123_456_789
PERIOD = 1_000_000_000 // 99  # 10101010

APP, LIBC, KERNEL, UNUSED = range(4)
MAIN, INLINED, LIBC_PC, KERNEL_PC, RECURSE, UNKNOWN, TRUNCATED = range(7)


def line(function, file="", number=0, system_name=""):
    return Line(function, system_name, file, number)


def make_profile():
    mappings = [
        Mapping(0x400000, 0x500000, 0, "/usr/bin/app",
                "0123456789abcdef0123456789abcdef01234567", False),
        Mapping(0x7F0000000000, 0x7F0000200000, 0x28000, "/usr/lib/x86_64-linux-gnu/libc.so.6",
                "", False),
        Mapping(0xFFFFFFFF81000000, 1 << 64, 0, "vmlinux", "feedface", True),
        Mapping(0x10000, 0x20000, 0, "[vdso]", "", False),
    ]
    app, libc, kernel, _ = mappings
    frames = [
        Frame(0x401000, app, "native", (line("main", "/src/app.c", 10),)),
        Frame(0x401234, app, "native", (
            line("inner_helper()", "/src/app.cc", 42, system_name="_Z12inner_helperv"),
            line("outer", "/src/app.cc", 20),
        )),
        Frame(0x7F0000012345, libc, "native", ()),
        Frame(0xFFFFFFFF81234567, kernel, "kernel", (line("do_syscall_64"),)),
        Frame(0x402000, app, "native", (line("recurse", "/src/app.c", 30),)),
        Frame(0, None, "marker", (line("[unknown]"),)),
        Frame(0, None, "marker", (line("[truncated]"),)),
    ]
    return Profile(
        start_ns=START_NS,
        end_ns=START_NS + 10_000_000_000,
        frequency=99,
        mappings=mappings,
        frames=frames,
        stacks=[
            (KERNEL_PC, LIBC_PC, INLINED, MAIN),
            (RECURSE,) * 599 + (TRUNCATED,),  # as the core caps a deep stack
            (UNKNOWN, MAIN),
        ],
        samples=[
            Sample(100, 101, 0, 0, 3, "worker", "app"),
            Sample(100, 100, 1, 1, 2, "app", "app"),
            Sample(200, 200, 1, 2, 1, "", ""),
            Sample(300, 300, 0, 0, 0, "idle", "idle"),
        ],
        stats=Stats({"samples": 6, "lost": 0}, specs=[("samples", "count", ""), ("lost", "lost", "")]),
    )


@pytest.fixture(scope="module")
def profile():
    return build_profile(make_profile())


def s(profile, index):
    return profile.string_table[index]


def labels_of_sample(profile, sample):
    return {s(profile, lb.key): (s(profile, lb.str) if lb.str else lb.num) for lb in sample.label}


def function_names(profile, location):
    by_id = {f.id: f for f in profile.function}
    return [s(profile, by_id[ln.function_id].name) for ln in location.line]


def test_string_table_is_interned_with_empty_first(profile):
    table = list(profile.string_table)
    assert table[0] == ""
    assert len(table) == len(set(table))
    for expected in ("cpu-samples", "count", "cpu-time", "nanoseconds", "main", "/src/app.c",
                     "process_id", "thread id", "thread name", "process name",
                     "cpu.logical_number", "[kernel.kallsyms]", "[truncated]"):
        assert expected in table
    assert "vmlinux" not in table  # the kernel mapping is always [kernel.kallsyms]


def test_types_period_and_times(profile):
    assert [(s(profile, t.type), s(profile, t.unit)) for t in profile.sample_type] == [
        ("cpu-samples", "count"), ("cpu-time", "nanoseconds")]
    assert (s(profile, profile.period_type.type), s(profile, profile.period_type.unit)) == (
        "cpu-time", "nanoseconds")
    assert profile.period == 10101010  # 1e9 // 99
    assert s(profile, profile.default_sample_type) == "cpu-time"
    assert profile.time_nanos == START_NS
    assert profile.duration_nanos == 10_000_000_000


def test_mappings(profile):
    got = [(m.id, m.memory_start, m.memory_limit, m.file_offset, s(profile, m.filename),
            s(profile, m.build_id), m.has_functions) for m in profile.mapping]
    assert got == [
        (1, 0x400000, 0x500000, 0, "/usr/bin/app", "0123456789abcdef0123456789abcdef01234567", True),
        (2, 0x7F0000000000, 0x7F0000200000, 0x28000, "/usr/lib/x86_64-linux-gnu/libc.so.6", "", False),
        (3, 0xFFFFFFFF81000000, (1 << 64) - 1, 0, "[kernel.kallsyms]", "feedface", True),
    ]  # [vdso]: no sample uses it
    app = profile.mapping[0]
    assert (app.has_filenames, app.has_line_numbers, app.has_inline_frames) == (True, True, True)


def test_locations_and_functions(profile):
    locations = {loc.id: loc for loc in profile.location}
    assert [loc.id for loc in profile.location] == [1, 2, 3, 4, 5, 6, 7]  # frame i is id i + 1
    inlined = locations[INLINED + 1]
    assert (inlined.mapping_id, inlined.address) == (1, 0x401234)
    assert function_names(profile, inlined) == ["inner_helper()", "outer"]
    assert [ln.line for ln in inlined.line] == [42, 20]
    unsymbolized = locations[LIBC_PC + 1]
    assert (unsymbolized.mapping_id, unsymbolized.address, len(unsymbolized.line)) == (2, 0x7F0000012345, 0)
    kernel = locations[KERNEL_PC + 1]
    assert (kernel.mapping_id, function_names(profile, kernel)) == (3, ["do_syscall_64"])
    marker = locations[UNKNOWN + 1]
    assert (marker.mapping_id, function_names(profile, marker)) == (0, ["[unknown]"])

    functions = {s(profile, f.name): f for f in profile.function}
    assert sorted(functions) == sorted(
        ["main", "inner_helper()", "outer", "do_syscall_64", "recurse", "[unknown]", "[truncated]"])
    assert len(profile.function) == 7  # MAIN's function is shared by three stacks, interned once
    assert [f.id for f in profile.function] == list(range(1, 8))
    helper = functions["inner_helper()"]
    assert (s(profile, helper.system_name), s(profile, helper.filename), helper.start_line) == (
        "_Z12inner_helperv", "/src/app.cc", 0)
    assert s(profile, functions["main"].system_name) == "main"  # "" means same as the name


def test_samples_values_and_labels(profile):
    assert len(profile.sample) == 3  # the count-0 sample is left out
    first, deep, marker = profile.sample
    assert list(first.location_id) == [KERNEL_PC + 1, LIBC_PC + 1, INLINED + 1, MAIN + 1]
    assert list(first.value) == [3, 3 * PERIOD]
    assert list(deep.value) == [2, 2 * PERIOD]
    assert labels_of_sample(profile, first) == {
        "process_id": "100", "thread id": "101", "thread name": "worker",
        "process name": "app", "cpu.logical_number": "0"}
    assert labels_of_sample(profile, marker) == {
        "process_id": "200", "thread id": "200", "cpu.logical_number": "1"}


def test_stack_cut_by_the_core_is_written_as_given(profile):
    deep = profile.sample[1]
    assert list(deep.location_id) == [RECURSE + 1] * 599 + [TRUNCATED + 1]
    marker = {loc.id: loc for loc in profile.location}[TRUNCATED + 1]
    assert (marker.mapping_id, marker.address) == (0, 0)
    assert function_names(profile, marker) == ["[truncated]"]


def test_builder_does_not_cut_stacks():
    """The core caps stacks (one cap, one place): a longer one is written whole."""
    p = make_profile()
    p.stacks[1] = (RECURSE,) * 700 + (MAIN,)
    pb = build_profile(p)
    assert list(pb.sample[1].location_id) == [RECURSE + 1] * 700 + [MAIN + 1]
    assert len(pb.location) == len(p.frames) - 1  # no marker added; the unused one left out
    assert "[truncated]" not in pb.string_table


def test_extra_labels_per_pid():
    labels = {100: {"container_id": "c0ffee", "container_name": "", "pod_name": "web-1"},
              999: {"container_id": "not-sampled"}}
    pb = build_profile(make_profile(), labels)
    got = [(labels_of["process_id"], labels_of.get("container_id"), labels_of.get("pod_name"),
            "container_name" in labels_of)
           for labels_of in (labels_of_sample(pb, sample) for sample in pb.sample)]
    assert got == [("100", "c0ffee", "web-1", False), ("100", "c0ffee", "web-1", False),
                   ("200", None, None, False)]
    # The extra labels sit between the names and the CPU, as Datadog's host profiler writes them.
    assert [s(pb, lb.key) for lb in pb.sample[0].label] == [
        "process_id", "thread id", "thread name", "process name", "container_id", "pod_name",
        "cpu.logical_number"]


def test_frame_with_a_mapping_outside_the_table_gets_one():
    p = make_profile()
    jit = Mapping(0x9000, 0xA000, 0, "[anon]", "", False)
    p.frames[UNKNOWN] = Frame(0x9010, jit, "jit", (line("jitted"),))
    pb = build_profile(p)
    assert [s(pb, m.filename) for m in pb.mapping][-2:] == ["[anon]", "[kernel.kallsyms]"]  # the kernel last
    assert {loc.id: loc for loc in pb.location}[UNKNOWN + 1].mapping_id == 3  # after app and libc


def test_write_is_gzip_atomic_and_round_trips(tmp_path):
    path = tmp_path / "out.pprof"
    path.write_bytes(b"old contents")
    write_pprof(make_profile(), path)
    data = path.read_bytes()
    assert data[:2] == b"\x1f\x8b"
    assert os.listdir(tmp_path) == ["out.pprof"]  # no temp file left behind
    assert parse_pprof(gzip.decompress(data)) == read_pprof(path)  # raw and gzip both read

    got = stacks(read_pprof(path))
    assert [(st.pid, st.tid, st.thread_name, st.process_name, st.cpu, st.count) for st in got] == [
        (100, 101, "worker", "app", 0, 3),
        (100, 100, "app", "app", 1, 2),
        (200, 200, "", "", 1, 1),
    ]
    assert got[0].frames == ["do_syscall_64", "libc.so.6+0x3a345", "inner_helper()", "outer", "main"]
    assert got[1].frames == ["recurse"] * 599 + ["[truncated]"]
    # The reader names frames as Frame.name does.
    p = make_profile()
    assert got[0].frames == [name for f in p.stack(p.samples[0]) for name in f.functions]
    assert got[2].frames == [f.name for f in p.stack(p.samples[2])]
    assert got[2].frames == ["[unknown]", "main"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.pprof"

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_pprof(make_profile(), path)
    assert os.listdir(tmp_path) == []


def test_reader_reads_zstd_as_datadog_uploads_it():
    import zstandard
    raw = build_profile(make_profile()).SerializeToString()
    assert parse_pprof(zstandard.ZstdCompressor(level=1).compress(raw)) == parse_pprof(raw)


def test_to_profile_gives_back_what_was_written():
    from ddprofiler.pprof.reader import to_profile
    p = make_profile()
    back = to_profile(build_profile(p))
    assert back.total == p.total and back.frequency == 99 and back.start_ns == START_NS
    want = [(s.pid, s.tid, s.cpu, s.count, s.thread_name, s.process_name, [f.name for f in p.stack(s)])
            for s in p.samples if s.count > 0]
    got = [(s.pid, s.tid, s.cpu, s.count, s.thread_name, s.process_name, [f.name for f in back.stack(s)])
           for s in back.samples]
    assert got == want
    kinds = {f.name: f.kind for f in back.frames}
    assert (kinds["do_syscall_64"], kinds["main"], kinds["[truncated]"]) == ("kernel", "native", "marker")
    inner = next(f for f in back.frames if f.name == "inner_helper()")
    assert [(ln.function, ln.system_name, ln.line) for ln in inner.lines] == [
        ("inner_helper()", "_Z12inner_helperv", 42), ("outer", "", 20)]


def test_generated_code_matches_the_proto():
    fields = {f.name: f.number for f in profile_pb2.Profile.DESCRIPTOR.fields}
    assert fields["string_table"] == 6 and fields["default_sample_type"] == 14
    assert profile_pb2.Profile.DESCRIPTOR.full_name == "perftools.profiles.Profile"


def _go_env(tmp_path):
    env = dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="", GOPROXY="off")
    env.setdefault("HOME", str(tmp_path))
    # `go tool pprof` is built on first use; keep the build cache between runs.
    cache = env.get("GOCACHE") or os.path.join(tempfile.gettempdir(), "ddprofiler-test-gocache")
    env["GOCACHE"] = cache
    env["PPROF_TMPDIR"] = str(tmp_path)
    return env


def test_go_tool_pprof_reads_it(tmp_path, go_binary):
    path = tmp_path / "cpu.pprof"
    write_pprof(make_profile(), path)
    result = subprocess.run(
        [go_binary, "tool", "pprof", "-symbolize=none", "-raw", str(path)],
        capture_output=True, text=True, env=_go_env(tmp_path), timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("main", "inner_helper()", "outer", "do_syscall_64", "recurse", "[truncated]", "[unknown]"):
        assert name in out, f"{name!r} missing from go tool pprof -raw output:\n{out[:3000]}"
    assert "cpu-samples/count cpu-time/nanoseconds" in out
    assert "Period: 10101010" in out
