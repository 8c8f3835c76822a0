"""The pprof builder and reader on a hand-made snapshot (no root, no extension needed).

The snapshot follows ``python/ddprofiler/_native.pyi``: a kernel mapping, an inlined
location with two lines, an unsymbolized location, a marker frame and a 700-deep stack.
When ``go`` is on PATH, ``go tool pprof`` must read the written file too.
"""
from __future__ import annotations

import copy
import gzip
import os
import shutil
import subprocess
import tempfile

import pytest
from ddprofiler.pprof import build_profile, profile_pb2, read_pprof, stacks, write_pprof
from ddprofiler.pprof.reader import parse_pprof

START_NS = 1_700_000_000_123_456_789
PERIOD = 1_000_000_000 // 99  # 10101010

APP, LIBC, KERNEL, UNUSED = range(4)
MAIN, INLINED, LIBC_PC, KERNEL_PC, RECURSE, UNKNOWN = range(6)


def line(function, file="", number=0, system_name=""):
    return {"function": function, "system_name": system_name, "file": file, "line": number}


def make_snapshot():
    return {
        "start_ns": START_NS,
        "end_ns": START_NS + 10_000_000_000,
        "frequency": 99,
        "mappings": [
            {"start": 0x400000, "limit": 0x500000, "offset": 0, "path": "/usr/bin/app",
             "build_id": "0123456789abcdef0123456789abcdef01234567", "is_kernel": False},
            {"start": 0x7F0000000000, "limit": 0x7F0000200000, "offset": 0x28000,
             "path": "/usr/lib/x86_64-linux-gnu/libc.so.6", "build_id": "", "is_kernel": False},
            {"start": 0xFFFFFFFF81000000, "limit": 1 << 64, "offset": 0, "path": "vmlinux",
             "build_id": "feedface", "is_kernel": True},
            {"start": 0x10000, "limit": 0x20000, "offset": 0, "path": "[vdso]",
             "build_id": "", "is_kernel": False},
        ],
        "locations": [
            {"mapping": APP, "address": 0x401000, "lines": [line("main", "/src/app.c", 10)]},
            {"mapping": APP, "address": 0x401234, "lines": [
                line("inner_helper()", "/src/app.cc", 42, system_name="_Z12inner_helperv"),
                line("outer", "/src/app.cc", 20),
            ]},
            {"mapping": LIBC, "address": 0x7F0000012345, "lines": []},
            {"mapping": KERNEL, "address": 0xFFFFFFFF81234567, "lines": [line("do_syscall_64")]},
            {"mapping": APP, "address": 0x402000, "lines": [line("recurse", "/src/app.c", 30)]},
            {"mapping": -1, "address": 0, "lines": [line("[unknown]")]},
        ],
        "stacks": [
            [KERNEL_PC, LIBC_PC, INLINED, MAIN],
            [RECURSE] * 699 + [MAIN],
            [UNKNOWN, MAIN],
        ],
        "samples": [
            {"pid": 100, "tid": 101, "cpu": 0, "stack": 0, "count": 3,
             "thread_name": "worker", "process_name": "app"},
            {"pid": 100, "tid": 100, "cpu": 1, "stack": 1, "count": 2,
             "thread_name": "app", "process_name": "app"},
            {"pid": 200, "tid": 200, "cpu": 1, "stack": 2, "count": 1,
             "thread_name": "", "process_name": ""},
            {"pid": 300, "tid": 300, "cpu": 0, "stack": 0, "count": 0,
             "thread_name": "idle", "process_name": "idle"},
        ],
        "stats": {"samples": 6, "lost": 0},
    }


@pytest.fixture(scope="module")
def profile():
    return build_profile(make_snapshot())


def s(profile, index):
    return profile.string_table[index]


def labels(profile, sample):
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
    assert profile.period == PERIOD == 10101010
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
        (4, 0x10000, 0x20000, 0, "[vdso]", "", False),
    ]
    app = profile.mapping[0]
    assert (app.has_filenames, app.has_line_numbers, app.has_inline_frames) == (True, True, True)


def test_locations_and_functions(profile):
    locations = {loc.id: loc for loc in profile.location}
    assert [loc.id for loc in profile.location] == [1, 2, 3, 4, 5, 6, 7]  # 7 = [truncated]
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
    assert labels(profile, first) == {
        "process_id": "100", "thread id": "101", "thread name": "worker",
        "process name": "app", "cpu.logical_number": "0"}
    assert labels(profile, marker) == {"process_id": "200", "thread id": "200", "cpu.logical_number": "1"}


def test_deep_stack_is_cut_to_600_with_truncated_marker(profile):
    deep = profile.sample[1]
    assert len(deep.location_id) == 600
    assert list(deep.location_id[:599]) == [RECURSE + 1] * 599
    marker = {loc.id: loc for loc in profile.location}[deep.location_id[599]]
    assert marker.mapping_id == 0
    assert function_names(profile, marker) == ["[truncated]"]


def test_stack_of_exactly_600_is_kept_whole():
    snapshot = make_snapshot()
    snapshot["stacks"][1] = [RECURSE] * 599 + [MAIN]
    profile = build_profile(snapshot)
    assert list(profile.sample[1].location_id) == [RECURSE + 1] * 599 + [MAIN + 1]
    assert "[truncated]" not in profile.string_table


def test_build_does_not_modify_the_snapshot():
    snapshot = make_snapshot()
    before = copy.deepcopy(snapshot)
    build_profile(snapshot)
    assert snapshot == before


def test_write_is_gzip_atomic_and_round_trips(tmp_path):
    path = tmp_path / "out.pprof"
    path.write_bytes(b"old contents")
    write_pprof(make_snapshot(), path)
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
    assert got[0].frames == ["do_syscall_64", "libc.so.6+0x7f0000012345", "inner_helper()", "outer", "main"]
    assert got[1].frames == ["recurse"] * 599 + ["[truncated]"]
    assert got[2].frames == ["[unknown]", "main"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "out.pprof"

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_pprof(make_snapshot(), path)
    assert os.listdir(tmp_path) == []


def test_reader_refuses_zstd():
    with pytest.raises(ValueError, match="zstd"):
        parse_pprof(b"\x28\xb5\x2f\xfd" + b"\0" * 16)


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


@pytest.mark.skipif(shutil.which("go") is None, reason="go is not on PATH: no go tool pprof to cross-check")
def test_go_tool_pprof_reads_it(tmp_path):
    path = tmp_path / "cpu.pprof"
    write_pprof(make_snapshot(), path)
    result = subprocess.run(
        ["go", "tool", "pprof", "-symbolize=none", "-raw", str(path)],
        capture_output=True, text=True, env=_go_env(tmp_path), timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("main", "inner_helper()", "outer", "do_syscall_64", "recurse", "[truncated]", "[unknown]"):
        assert name in out, f"{name!r} missing from go tool pprof -raw output:\n{out[:3000]}"
    assert "cpu-samples/count cpu-time/nanoseconds" in out
    assert "Period: 10101010" in out
