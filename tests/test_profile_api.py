"""The typed public API of ``ddprofiler``, in pure Python (no root, no extension) except
where marked.

- ``Profile``: built from a fake ``_native.Snapshot`` (the tuple tables of
  ``_native.pyi``), frame names, ``stack``, ``total``, ``top`` by self and total (inlined
  lines, recursion counted once per sample), ``subset``/``split`` renumbering, ``write``
  and reading the file back;
- ``Stats``: kinds, ``delta`` with gauges, the summary lines;
- ``errors``: the hierarchy (each class is also the built-in a caller would catch);
- ``Profiler``/``record`` against a fake extension: lifecycle, errors, progress;
- ``import ddprofiler`` imports neither the extension nor protobuf;
- with the real extension (fixture ``native``) and on real BPF (marker ``bpf``): the
  registry as ``Profiler.stats`` gives it before start, a profile of a workload through
  the public API (several threads at once: ``test_api_threads.py``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import ddprofiler
from ddprofiler import (BpfUnavailableError, DebugFileError, Frame, InvalidBinaryError, Line,
                        Mapping, NativeExtensionError, PrivilegeError, ProcessInfo, Profile,
                        Profiler, ProfilerError, Sample, Stats, TopEntry, errors)
from ddprofiler.pprof import read_pprof, stacks
from ddprofiler.stats import COUNTER_KINDS
from ddprofiler.status import summary_lines

ROOT = Path(__file__).resolve().parents[1]
START_NS = 1_700_000_000_000_000_000

SPECS = [
    ("bpf_samples", "count", "perf events that reached the BPF program"),
    ("lost", "lost", "samples dropped because the ring buffer was full"),
    ("samples", "count", "samples received and counted"),
    ("unwind_complete", "success", "walks that reached the root"),
    ("unwind_truncated", "unwind_failure", "walks cut by the snapshot size"),
    ("unwind_stuck", "unwind_failure", "walks that stopped making progress"),
    ("fp_chain_failed", "count", "a count, whatever its name says"),
    ("processes", "gauge", "processes known now"),
    ("maps_errors", "error", "maps that could not be read"),
    ("symbolize_failures", "error", "locations not named"),
]

# The raw tables, as _native.Snapshot hands them over (see _native.pyi).
APP, LIBC, KERNEL, UNUSED = range(4)
BINARY = object()  # stands for a _native.Binary
RAW_MAPPINGS = [
    (0x400000, 0x500000, 0, "/usr/bin/app", "ab" * 20, False, BINARY),
    (0x7F0000000000, 0x7F0000200000, 0x28000, "/usr/lib/libc.so.6", "cd" * 20, False, None),
    (0xFFFFFFFF81000000, 1 << 64, 0, "[kernel.kallsyms]", "", True, None),
    (0x10000, 0x20000, 0, "[vdso]", "", False, None),
]
# Frame indices.
MAIN, INLINED, LIBC_PC, KERNEL_PC, RECURSE, TRUNC, HELPER = range(7)
RAW_FRAMES = [
    (APP, 0x401000, "native", [("main", "", "/src/app.c", 10)]),
    (APP, 0x401234, "native", [("inner", "_Z5innerv", "/src/app.cc", 42),
                               ("outer", "", "/src/app.cc", 20)]),
    (LIBC, 0x7F0000012345, "native", []),
    (KERNEL, 0xFFFFFFFF81234567, "kernel", [("do_syscall_64", "", "", 0)]),
    (APP, 0x402000, "native", [("recurse", "", "/src/app.c", 30)]),
    (-1, 0, "marker", [("[truncated]", "", "", 0)]),
    (APP, 0x403000, "native", [("helper", "", "/src/app.c", 50)]),
]
RAW_STACKS = [
    (KERNEL_PC, LIBC_PC, INLINED, MAIN),  # 0
    (RECURSE, RECURSE, RECURSE, MAIN),    # 1: recursion
    (INLINED, MAIN),                      # 2
    (RECURSE,) * 3 + (TRUNC,),            # 3: cut by the core
    (HELPER, MAIN),                       # 4: used by no sample
]
RAW_SAMPLES = [
    (100, 101, 0, 0, 3, "worker", "app", 0),
    (100, 100, 1, 1, 2, "app", "app", 0),
    (200, 200, 1, 2, 4, "other", "other", 0),
    (100, 101, 1, 0, 1, "worker", "app", 0),
    (200, 201, 0, 3, 1, "deep", "other", 0),
]
RAW_PROCESSES = [
    (100, "app", "/usr/bin/app", {"DD_SERVICE": "web"}, "0::/system.slice/app.service\n"),
    (200, "other", "/usr/bin/other", {}, "0::/\n"),
]
RAW_STATS = {"bpf_samples": 12, "lost": 2, "samples": 11, "unwind_complete": 7,
             "unwind_truncated": 1, "unwind_stuck": 3, "fp_chain_failed": 5, "processes": 2,
             "maps_errors": 0, "symbolize_failures": 4}


class FakeSnapshot(types.SimpleNamespace):
    """A ``_native.Snapshot`` made of the raw tables (a real one needs BPF: the BPF tests
    take those); it encodes through the extension's one encoder, as a real one does."""

    @property
    def total(self):
        return sum(x[4] for x in self.samples)

    @property
    def off_cpu_total(self):
        return sum(x[7] for x in self.samples)

    def sampled_pids(self):
        return list(dict.fromkeys(x[0] for x in self.samples if x[4] > 0))

    def sampled_mappings(self):
        used = {self.frames[f][0] for x in self.samples if x[4] > 0 for f in self.stacks[x[3]]}
        return sorted(used - {-1})

    def encode_pprofs(self, group_of, groups, labels=None):
        from ddprofiler import _native
        mappings = [(m[0], min(m[1], (1 << 64) - 1), *m[2:6]) for m in self.mappings]
        return _native.Snapshot.from_tables(self.start_ns, self.end_ns, self.frequency, mappings, self.frames,
                                            [list(st) for st in self.stacks], self.samples,
                                            ).encode_pprofs(group_of, groups, labels)


def fake_snapshot(**changes):
    fields = dict(start_ns=START_NS, end_ns=START_NS + 2_500_000_000, frequency=99,
                  mappings=RAW_MAPPINGS, frames=RAW_FRAMES, stacks=RAW_STACKS,
                  samples=RAW_SAMPLES, processes=RAW_PROCESSES, stats=RAW_STATS, off_cpu=False)
    fields.update(changes)
    return FakeSnapshot(**fields)


@pytest.fixture
def profile():
    return Profile.from_native(fake_snapshot(), specs=SPECS)


# ----------------------------------------------------------------- Profile.from_native


def test_from_native_builds_typed_records(profile):
    assert (profile.start_ns, profile.end_ns, profile.frequency) == (
        START_NS, START_NS + 2_500_000_000, 99)
    assert profile.mappings[APP] == Mapping(0x400000, 0x500000, 0, "/usr/bin/app", "ab" * 20,
                                            False, BINARY)
    assert profile.mappings[APP].binary is BINARY
    assert profile.mappings[KERNEL].is_kernel and profile.mappings[LIBC].binary is None

    inlined = profile.frames[INLINED]
    assert inlined == Frame(0x401234, profile.mappings[APP], "native", (
        Line("inner", "_Z5innerv", "/src/app.cc", 42), Line("outer", "", "/src/app.cc", 20)))
    assert inlined.mapping is profile.mappings[APP]  # the same record, not a copy
    assert profile.frames[TRUNC] == Frame(0, None, "marker", (Line("[truncated]", "", "", 0),))
    assert profile.frames[LIBC_PC].lines == ()
    assert [f.kind for f in profile.frames] == ["native", "native", "native", "kernel", "native",
                                                "marker", "native"]

    assert profile.stacks == RAW_STACKS and all(type(s) is tuple for s in profile.stacks)
    assert profile.samples[0] == Sample(pid=100, tid=101, cpu=0, stack=0, count=3,
                                        thread_name="worker", process_name="app")
    assert profile.processes == {
        100: ProcessInfo(100, "app", "/usr/bin/app", {"DD_SERVICE": "web"},
                         "0::/system.slice/app.service\n"),
        200: ProcessInfo(200, "other", "/usr/bin/other", {}, "0::/\n"),
    }
    assert profile.processes[100].env is not RAW_PROCESSES[0][3]  # a copy: the snapshot's stays
    assert isinstance(profile.stats, Stats) and dict(profile.stats) == RAW_STATS
    assert list(profile.stats) == list(RAW_STATS)  # registry order kept


def test_records_are_immutable(profile):
    with pytest.raises(AttributeError):
        profile.frames[MAIN].address = 1
    with pytest.raises(AttributeError):
        profile.samples[0].count = 9
    with pytest.raises(TypeError):
        profile.stats["samples"] = 0


def test_frame_names(profile):
    f = profile.frames
    assert f[MAIN].name == "main"
    assert f[INLINED].name == "inner"  # the innermost inlined function
    assert f[INLINED].functions == ("inner", "outer")
    assert f[LIBC_PC].name == "libc.so.6+0x3a345"  # unsymbolized: file and address
    assert f[LIBC_PC].functions == ("libc.so.6+0x3a345",)
    assert f[TRUNC].name == "[truncated]"
    assert Frame(0x1234, None, "native", ()).name == "[unknown]"
    mangled_only = Frame(0x10, profile.mappings[APP], "native", (Line("", "_Z1fv", "", 0),))
    assert mangled_only.name == "_Z1fv"


def test_stack_total_and_duration(profile):
    assert [fr.name for fr in profile.stack(profile.samples[0])] == [
        "do_syscall_64", "libc.so.6+0x3a345", "inner", "main"]
    assert profile.stack(profile.samples[4])[-1].kind == "marker"
    assert profile.total == 3 + 2 + 4 + 1 + 1
    assert profile.duration_s == 2.5
    assert Profile(START_NS, START_NS - 5, 99).duration_s == 0.0
    empty = Profile(START_NS, START_NS, 99)
    assert (empty.total, empty.top(), empty.stats.samples) == (0, [], 0)


# ----------------------------------------------------------------- top


def test_top_by_self_counts_the_innermost_function(profile):
    # Leaf functions: do_syscall_64 (3 + 1), recurse (2 + 1), inner (4; inlined in outer);
    # the tie of inner and do_syscall_64 goes to the larger total.
    assert profile.top(by="self") == [
        TopEntry("inner", 4, 8, 4 / 11, 8 / 11),
        TopEntry("do_syscall_64", 4, 4, 4 / 11, 4 / 11),
        TopEntry("recurse", 3, 3, 3 / 11, 3 / 11),
    ]
    assert profile.top(2) == profile.top(by="self")[:2]
    assert profile.top(0) == []


def test_top_by_total_counts_each_function_once_per_sample(profile):
    top = {e.function: e for e in profile.top(None, by="total")}
    # main is in every stack but the cut one; recurse appears three times in stack 1 and
    # is counted once for each of its 2 samples (+1 in the cut stack).
    assert (top["main"].total_count, top["main"].self_count) == (10, 0)
    assert top["recurse"].total_count == 3
    assert (top["inner"].total_count, top["outer"].total_count, top["outer"].self_count) == (8, 8, 0)
    assert top["libc.so.6+0x3a345"].total_count == 4
    assert top["[truncated]"].total_count == 1
    assert "helper" not in top  # its stack has no sample
    assert [e.function for e in profile.top(4, by="total")] == ["main", "inner", "outer", "do_syscall_64"]
    assert top["main"].total_fraction == pytest.approx(10 / 11)
    with pytest.raises(ValueError, match="by"):
        profile.top(by="cumulative")


def test_top_ignores_samples_of_count_zero(profile):
    profile.samples.append(Sample(300, 300, 0, 4, 0, "idle", "idle"))
    assert "helper" not in {e.function for e in profile.top(None, by="total")}


# ----------------------------------------------------------------- subset and split


def names(p, sample):
    return [name for f in p.stack(sample) for name in f.functions]


def test_subset_keeps_only_what_its_samples_use(profile):
    other = [s for s in profile.samples if s.pid == 200]
    sub = profile.subset(other)
    # Stacks 2 and 3 (renumbered 0 and 1), their frames in the profile's order, and the one
    # mapping they touch.
    assert sub.stacks == [(1, 0), (2, 2, 2, 3)]
    assert [f.name for f in sub.frames] == ["main", "inner", "recurse", "[truncated]"]
    assert sub.mappings == [profile.mappings[APP]]
    assert all(f.mapping is None or f.mapping is sub.mappings[0] for f in sub.frames)
    assert sub.samples == [other[0]._replace(stack=0), other[1]._replace(stack=1)]
    assert list(sub.processes) == [200]
    assert [names(sub, s) for s in sub.samples] == [names(profile, s) for s in other]
    assert (sub.start_ns, sub.end_ns, sub.frequency, sub.stats) == (
        profile.start_ns, profile.end_ns, profile.frequency, profile.stats)
    assert sub.total == 5


def test_subset_of_every_sample_drops_only_unused_entries(profile):
    whole = profile.subset(profile.samples)
    assert whole.stacks == profile.stacks[:4]  # stack 4 has no sample
    assert whole.frames == profile.frames[:HELPER]
    assert whole.mappings == profile.mappings[:UNUSED]
    assert whole.samples == profile.samples


def test_split_by_pid(profile):
    parts = profile.split(lambda s: s.pid)
    assert list(parts) == [100, 200]  # order of first appearance
    assert [p.total for p in parts.values()] == [6, 5]
    app = parts[100]
    assert [names(app, s) for s in app.samples] == [names(profile, s) for s in profile.samples
                                                    if s.pid == 100]
    assert {m.path for m in app.mappings} == {"/usr/bin/app", "/usr/lib/libc.so.6",
                                              "[kernel.kallsyms]"}
    assert list(app.processes) == [100]


# ----------------------------------------------------------------- write


def test_write_and_read_back(profile, tmp_path):
    path = tmp_path / "p.pprof"
    assert profile.write(path) == "pprof"
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert os.listdir(tmp_path) == ["p.pprof"]
    pb = read_pprof(path)
    assert pb.period == 1_000_000_000 // 99 and pb.time_nanos == START_NS
    assert pb.duration_nanos == 2_500_000_000
    got = [(st.pid, st.tid, st.cpu, st.thread_name, st.count, st.frames) for st in stacks(pb)]
    assert got == [(s.pid, s.tid, s.cpu, s.thread_name, s.count, names(profile, s))
                   for s in profile.samples]
    build_ids = {pb.string_table[m.filename]: pb.string_table[m.build_id] for m in pb.mapping}
    assert build_ids["/usr/bin/app"] == "ab" * 20


# ----------------------------------------------------------------- Stats


def test_stats_kinds():
    st = Stats(RAW_STATS, SPECS)
    assert (st.samples, st.lost) == (11, 2)
    assert st.kind("processes") == "gauge" and st.kind("not_in_registry") == "count"
    assert st.help("lost") == "samples dropped because the ring buffer was full"
    assert st.unwind_failures() == {"unwind_truncated": 1, "unwind_stuck": 3}
    assert st.errors() == {"symbolize_failures": 4}  # zeros left out; fp_chain_failed is a count
    assert st.of_kind("success") == {"unwind_complete": 7}
    assert st.of_kind("lost") == {"lost": 2}
    with pytest.raises(ValueError, match="kind"):
        st.of_kind("failure")
    assert st == RAW_STATS and len(st) == len(RAW_STATS) and st["samples"] == 11
    assert set(COUNTER_KINDS) == {"count", "gauge", "success", "unwind_failure", "lost", "error"}


def test_stats_delta_keeps_gauges_as_levels():
    before = Stats(RAW_STATS, SPECS)
    after = Stats({**RAW_STATS, "samples": 30, "lost": 5, "processes": 1, "maps_errors": 2}, SPECS)
    delta = after.delta(before)
    assert list(delta) == list(RAW_STATS)
    assert delta["samples"] == 19 and delta["lost"] == 3 and delta["maps_errors"] == 2
    assert delta["processes"] == 1  # a gauge: its level now, not -1
    assert delta["unwind_stuck"] == 0
    assert after.delta(None) == dict(after)


def test_stats_zeros_and_bad_specs():
    assert Stats.zeros(SPECS) == {name: 0 for name, _, _ in SPECS}
    with pytest.raises(ValueError, match="kind"):
        Stats({}, [("x", "failure", "")])


def test_summary_lines_from_kinds():
    st = Stats({**RAW_STATS, "maps_errors": 4}, SPECS)
    assert summary_lines(st) == [
        "samples: 11",
        "lost: 2 (15.4%)",
        "unwinding failures: 4 (stuck 3, truncated 1)",
        "other errors: maps_errors 4, symbolize_failures 4 locations",
    ]


# ----------------------------------------------------------------- errors


def test_error_hierarchy():
    assert errors.ProfilerError is ProfilerError and ddprofiler.PrivilegeError is errors.PrivilegeError
    builtins = {
        NativeExtensionError: ImportError,
        PrivilegeError: PermissionError,
        BpfUnavailableError: RuntimeError,
        InvalidBinaryError: ValueError,
        DebugFileError: RuntimeError,
    }
    for cls, builtin in builtins.items():
        assert issubclass(cls, ProfilerError) and issubclass(cls, builtin), cls
        assert cls.__module__ == "ddprofiler.errors" and cls.__doc__
    assert issubclass(PrivilegeError, OSError)  # PermissionError is one
    assert not issubclass(BpfUnavailableError, PermissionError)
    try:
        raise PrivilegeError("missing CAP_BPF")
    except PermissionError as e:  # code written against the built-in still catches it
        assert str(e) == "missing CAP_BPF"


def printed_by(code: str) -> str:
    """What a fresh interpreter running ``code`` (with this tree's package) prints."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_loads_neither_the_extension_nor_protobuf():
    code = ("import sys, ddprofiler; ddprofiler.Profile; ddprofiler.Profiler(); "
            "print(sorted(m for m in sys.modules if m in ('ddprofiler._native', 'google.protobuf')"
            " or m.startswith('ddprofiler.pprof')))")
    assert printed_by(code) == "[]"


def test_the_continuous_profiler_never_imports_protobuf():
    """It encodes in the core (saving protobuf's few MiB of RSS for good)."""
    code = ("import sys, ddprofiler.cli, ddprofiler.runner, ddprofiler.exporters.datadog, "
            "ddprofiler.exporters.files, ddprofiler.pprof; "
            "print([m for m in sys.modules if m.startswith('google')])")
    assert printed_by(code) == "[]"


def test_tables_of_a_snapshot_are_read_once_on_first_use():
    snap = fake_snapshot()
    profile = Profile.from_native(snap, specs=SPECS)
    assert set(vars(profile)) >= {"start_ns", "processes", "stats", "native"}
    assert not {"mappings", "frames", "stacks", "samples"} & set(vars(profile)), "nothing read yet"
    assert profile.total == 11  # from the snapshot, still nothing read
    frames = profile.frames
    assert profile.frames is frames and len(profile.samples) == len(RAW_SAMPLES)
    assert profile.native is snap


def test_assigning_a_table_makes_a_profile_hand_made():
    profile = Profile.from_native(fake_snapshot(), specs=SPECS)
    profile.samples = profile.samples[:1]
    assert profile.native is None and len(profile.frames) == len(RAW_FRAMES)
    assert profile.total == RAW_SAMPLES[0][4]
    got = ddprofiler.pprof.stacks(ddprofiler.pprof.build_profile(profile))
    assert [(x.pid, x.count) for x in got] == [(RAW_SAMPLES[0][0], RAW_SAMPLES[0][4])]


def test_copy_of_a_profile_from_a_snapshot_holds_records():
    import copy
    profile = Profile.from_native(fake_snapshot(), specs=SPECS)
    twin = copy.deepcopy(profile)
    assert twin.native is None and twin.total == profile.total
    assert [(f.name, f.address) for f in twin.frames] == [(f.name, f.address) for f in profile.frames]


def test_public_names():
    for name in ("Profiler", "Profile", "Stats", "Frame", "Line", "Mapping", "Sample",
                 "ProcessInfo", "TopEntry", "record", "errors", "read_pprof", "stacks", "Stack",
                 "__version__", "ProfilerError", "NativeExtensionError", "PrivilegeError",
                 "BpfUnavailableError", "InvalidBinaryError", "DebugFileError"):
        assert name in ddprofiler.__all__ and getattr(ddprofiler, name) is not None
    assert (ROOT / "python" / "ddprofiler" / "py.typed").exists()


# ----------------------------------------------------------------- Profiler, fake extension


class FakeNative:
    """A ``_native`` module with the API of ``_native.pyi``, recording what is asked."""

    def __init__(self, fail=None):
        self.profilers = []
        self.fail = fail
        outer = self

        class FakeProfiler:
            def __init__(self, frequency=99, pids=None, stack_bytes=16384, symbolize="host", python=True,
                         follow_children=False, idle=False, memory_budget=128 << 20, off_cpu_rate=None,
                         off_cpu_cap=250):
                self.args = dict(frequency=frequency, pids=pids, stack_bytes=stack_bytes,
                                 symbolize=symbolize)
                self.calls = []
                self.samples = 0
                outer.profilers.append(self)

            def start(self):
                self.calls.append("start")
                if outer.fail:
                    raise outer.fail

            def stop(self):
                self.calls.append("stop")

            def close(self):
                self.calls.append("close")

            def stats(self):
                self.samples += 1
                return {**RAW_STATS, "samples": self.samples}

            def snapshot(self, reset=True):
                self.calls.append(("snapshot", reset))
                return fake_snapshot(stats={**RAW_STATS, "samples": 99})

        self.module = types.ModuleType("ddprofiler._native")
        self.module.Profiler = FakeProfiler
        self.module.counter_specs = lambda: list(SPECS)


@pytest.fixture
def fake_native(monkeypatch):
    from ddprofiler import stats

    fake = FakeNative()
    monkeypatch.setitem(sys.modules, "ddprofiler._native", fake.module)
    monkeypatch.setattr(ddprofiler, "_native", fake.module, raising=False)
    stats.counter_specs.cache_clear()
    yield fake
    stats.counter_specs.cache_clear()


def test_profiler_lifecycle(fake_native):
    p = Profiler([42, 43], frequency=49, stack_bytes=8192, symbolize="backend")
    with pytest.raises(ProfilerError, match="not started"):
        p.snapshot()
    assert p.stats() == {name: 0 for name, _, _ in SPECS}  # before start: the registry, zeros
    assert fake_native.profilers == []  # nothing native until start
    with p as entered:
        assert entered is p
        [native] = fake_native.profilers
        assert native.args == dict(frequency=49, pids=[42, 43], stack_bytes=8192, symbolize="backend")
        snap = p.snapshot(reset=False)
        assert isinstance(snap, Profile) and snap.stats.samples == 99
        assert snap.stats.unwind_failures() == {"unwind_truncated": 1, "unwind_stuck": 3}
        assert p.stats().samples == 1
        with pytest.raises(ProfilerError, match="started before"):
            p.start()
    assert native.calls == ["start", ("snapshot", False), "close"]
    p.close()  # idempotent
    with pytest.raises(ProfilerError):
        p.start()


def test_failed_start_closes_the_native_profiler(fake_native):
    fake_native.fail = PrivilegeError("missing CAP_PERFMON: run as root")
    with pytest.raises(PermissionError, match="CAP_PERFMON"):
        with Profiler():
            pytest.fail("the block must not run")
    assert fake_native.profilers[0].calls == ["start", "close"]
    assert fake_native.profilers[0].args["pids"] is None


def test_record_returns_the_final_profile(fake_native):
    progress = []
    stops = iter([False, False, True])
    profile = ddprofiler.record(30, pids=[7], frequency=10, should_stop=lambda: next(stops),
                                on_progress=lambda t, st: progress.append((t, st)))
    assert isinstance(profile, Profile) and profile.stats.samples == 99
    [native] = fake_native.profilers
    assert native.calls == ["start", "stop", ("snapshot", True), "close"]
    assert progress and all(isinstance(st, Stats) and st.samples >= 1 for _, st in progress)


def test_missing_extension_says_how_to_build_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ddprofiler._native", None)
    with pytest.raises(NativeExtensionError, match="pip install") as info:
        Profiler().start()
    assert isinstance(info.value, ImportError)


# ----------------------------------------------------------------- the real extension


def test_registry_of_the_extension(native):
    from ddprofiler import _native

    specs = _native.counter_specs()
    kinds = {name: kind for name, kind, _ in specs}
    assert len(kinds) == len(specs)  # names are unique
    assert set(kinds.values()) <= set(COUNTER_KINDS)
    assert (kinds["samples"], kinds["lost"], kinds["unwind_complete"]) == ("count", "lost", "success")
    assert all(help_ for _, _, help_ in specs)
    assert Profiler().stats() == {name: 0 for name, _, _ in specs}


@pytest.mark.bpf
def test_profile_of_a_workload(workloads, tmp_path):
    from helpers import Workload

    with Workload([workloads["chain"], 30]) as w:
        with Profiler(pids=[w.pid], frequency=999) as p:
            time.sleep(2)
            profile = p.snapshot()
    assert profile.total > 500 and set(profile.processes) == {w.pid}
    assert {s.pid for s in profile.samples} == {w.pid}
    by_total = {e.function: e for e in profile.top(None, by="total")}
    for name in ("leaf", "middle", "outer", "main"):  # the whole chain, in nearly every sample
        assert by_total[name].total_fraction > 0.95, profile.top(10, by="total")
    leaf = profile.top(1)[0]
    assert leaf.function == "leaf" and leaf.self_fraction > 0.95, profile.top(5)
    assert profile.stats.samples >= profile.total and profile.stats.kind("lost") == "lost"
    app = next(m for m in profile.mappings if m.path == str(workloads["chain"]))
    assert app.build_id and app.binary is not None and app.binary.path == app.path
    profile.write(tmp_path / "chain.pprof")
    assert sum(st.count for st in stacks(read_pprof(tmp_path / "chain.pprof"))) == profile.total


@pytest.mark.parametrize("kwargs, words", [
    (dict(stack_bytes=8), "stack_bytes 8 must be a multiple of 8 from 1024 to 65536"),
    (dict(stack_bytes=1028), "stack_bytes 1028"),
    (dict(stack_bytes=65544), "stack_bytes 65544"),
    (dict(frequency=0), "frequency 0 is outside 1..10000"),
    (dict(frequency=-1), "frequency -1 is outside 1..10000"),
    (dict(frequency=2.5), "frequency must be an integer"),
    (dict(pids=[-5]), "pid -5 is not a process id"),
    (dict(pids=[2 ** 31 - 1]), f"no process with pid {2 ** 31 - 1}"),
    (dict(symbolize="remote"), "symbolize 'remote' is not one of"),
])
def test_bad_arguments_are_value_errors_before_anything_starts(kwargs, words):
    # The same checks and words as the CLI's flags; no extension is needed to get them.
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("(", r"\(")):
        ddprofiler.Profiler(**kwargs)


def test_repr_and_dir_show_what_users_set_and_use():
    p = ddprofiler.Profiler(pids=[os.getpid()], frequency=49, python=False)
    assert repr(p) == (f"Profiler(pids=[{os.getpid()}], frequency=49, stack_bytes=16384, "
                       "symbolize='host', python=False, follow_children=False) [new]")
    names = dir(ddprofiler)
    assert {"Profiler", "record", "Profile", "read_pprof", "stacks", "Stack"} <= set(names)
    assert not {"import_module", "load_native", "Any", "TYPE_CHECKING"} & set(names)
