"""The memory budget of the continuous profiler (issue 13): `--memory-budget` sizes the
caches and the upload queue, and a period that ends over 7/8 of it drops every cache that
can be rebuilt, says so once at WARN, counts it, and loses nothing: the stacks of the periods
after the shed are as complete and as named as before it.

The real profiler (BPF, root) on the chain workload writes pprof files every 2 s.
`DDPROF_SHED_ABOVE_MB=1` puts the shed threshold under any resident size, so that the shed
happens at the first period's end whatever the interpreter weighs on this machine.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddprofiler import config
from helpers import Workload, find_seq, load

pytestmark = pytest.mark.bpf

CHAIN = ["leaf", "middle", "outer", "main"]
SERVICE = "budget-e2e"


def test_a_shed_is_said_once_counted_and_loses_no_frame(tmp_path, workloads):
    out, status = tmp_path / "out", tmp_path / "status.json"
    env = {**os.environ, "DDPROF_SHED_ABOVE_MB": "1"}
    env.pop("DD_SERVICE", None)
    with Workload([workloads["chain"], "40"], env={**os.environ, "DD_SERVICE": SERVICE}):
        prof = subprocess.Popen(
            [sys.executable, "-m", "ddprofiler", "--output-dir", str(out), "--upload-period", "2",
             "--sampling-rate", "99", "--memory-budget", "96", "--status-file", str(status)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(9)
        prof.send_signal(signal.SIGTERM)
        _, err = prof.communicate(timeout=60)
    assert prof.returncode == 0, err
    assert "memory budget 96 MiB (queue 24 MiB)" in err, err
    said = [ln for ln in err.splitlines() if "over 7/8 of the memory budget (96 MiB)" in ln]
    assert len(said) == 1 and "| WARN |" in said[0], err
    periods = [ln for ln in err.splitlines() if "| period: " in ln]
    assert len(periods) >= 3, err
    # Shed at the first period's end, then not again within the minute.
    assert [("caches shed 1 time(s)" in ln) for ln in periods] == [True] + [False] * (len(periods) - 1), periods
    assert all(" MiB of 96 MiB" in ln for ln in periods), periods
    memory = json.loads(status.read_text())["last_period"]["memory"]
    assert memory["sheds_total"] == 1 and memory["budget_bytes"] == 96 << 20, memory
    assert memory["resident_bytes"] > 16 << 20, memory
    # Every period's profile of the workload, the first symbolized right after the shed and
    # the later ones with caches rebuilt, holds the whole chain, named.
    files = sorted(p for p in out.iterdir() if p.suffix == ".pprof" and SERVICE in p.name)
    assert len(files) >= 3, sorted(p.name for p in out.iterdir())
    for f in files:
        _, got = load(f)
        whole = sum(s.count for s in got if find_seq(s.frames, CHAIN) >= 0)
        assert whole >= 0.9 * sum(s.count for s in got) > 0, f"{f.name}: {whole} of the samples hold {CHAIN}"


@pytest.mark.parametrize("flag, budget, queue", [
    ("96", 96 << 20, 24 << 20), ("1GiB", 1 << 30, 256 << 20), ("200MiB", 200 << 20, 50 << 20),
])
def test_the_budget_sizes_the_queue(flag, budget, queue):
    s, sources = config.resolve({"memory_budget": flag}, {})
    assert (s.memory_budget, s.max_queue_bytes) == (budget, queue)
    assert sources["max_queue_bytes"] == "default (a quarter of memory_budget)"
    s, _ = config.resolve({}, {"DD_HOST_PROFILING_MEMORY_BUDGET": flag, "DD_HOST_PROFILING_MAX_QUEUE_BYTES": "8MiB"})
    assert (s.memory_budget, s.max_queue_bytes) == (budget, 8 << 20)


@pytest.mark.parametrize("flags, message", [
    ({"memory_budget": "32"}, "--memory-budget: 32 MiB is outside 64 MiB..64 GiB"),
    ({"memory_budget": "lots"}, "--memory-budget: 'lots' is not a size"),
    ({"max_queue_bytes": "100MiB"}, "--max-queue-bytes: 100 MiB is over half of the memory budget (128 MiB)"),
])
def test_a_bad_budget_is_one_clear_error(flags, message):
    with pytest.raises(config.ConfigError) as e:
        config.resolve(flags, {})
    assert str(e.value).startswith(message), str(e.value)


def test_the_python_defaults_are_the_cores():
    import inspect

    from ddprofiler import _native, profiler

    native = inspect.signature(_native.Profiler).parameters["memory_budget"].default
    wrapper = inspect.signature(profiler.Profiler).parameters["memory_budget"].default
    assert native == wrapper == config.DEFAULT_MEMORY_BUDGET == config.Settings().memory_budget == 128 << 20
    with pytest.raises(ValueError, match="below the minimum of 64 MiB"):
        _native.Profiler(memory_budget=config.MIN_MEMORY_BUDGET - 1)


BUSY_PY = "import sys\nprint('ready', flush=True)\nwhile True:\n    sorted(str(i * 7) for i in range(20000))\n"


def _shared_rss_kib(pid: int, path: str) -> int:
    """The profiler's resident KiB of its shared read-only maps of `path` (ours and blazesym's)."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            inside = len(head) >= 6 and head[1] == "r--s" and line.endswith(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_debug_info_read_in_place_does_not_stay_resident(tmp_path):
    """A library with uncompressed DWARF (pyenv's libpython, 22 MiB) is parsed once and the parse
    kept, but the pages its symbolization read through blazesym's own map of the file are
    released after each period (`elf::maps`): 8.7 MiB of it stayed resident before."""
    with Workload([sys.executable, "-c", BUSY_PY]) as w:
        maps = Path(f"/proc/{w.pid}/maps").read_text().split()
        lib = next((m for m in maps if "/libpython" in m and ".so" in m), None)
        if lib is None:
            pytest.skip(f"{sys.executable} has no shared libpython")
        sections = subprocess.run(["readelf", "-SW", lib], capture_output=True, text=True).stdout.splitlines()
        info = next((ln.split(".debug_info", 1)[1] for ln in sections if " .debug_info " in ln), None)
        if info is None or " C " in info:  # the flags column: C for compressed
            pytest.skip(f"{lib} carries no uncompressed DWARF")
        out = tmp_path / "out"
        prof = subprocess.Popen(
            [sys.executable, "-m", "ddprofiler", "--output-dir", str(out), "--upload-period", "2",
             "--sampling-rate", "99"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(7)  # three periods: the parse is made, then kept
            seen = []
            for _ in range(30):
                seen.append(_shared_rss_kib(prof.pid, lib))
                time.sleep(0.1)
        finally:
            prof.send_signal(signal.SIGTERM)
            _, err = prof.communicate(timeout=60)
    assert prof.returncode == 0, err
    # Named from the DWARF (a file and line), so the parse was made and read the file.
    named = [f for p in out.iterdir() if p.suffix == ".pprof" for f in _libpython_lines(p)]
    assert any(line > 0 and name.endswith(".c") for name, line in named), named[:10]
    # Between periods it holds at most what the unwinder read of the CFI this second.
    assert min(seen) < 1024, f"KiB resident of {lib}'s shared maps, every 0.1 s: {seen}"


def _libpython_lines(path: Path):
    profile, _ = load(path)
    strings, funcs = profile.string_table, {f.id: f for f in profile.function}
    names = {m.id for m in profile.mapping if "libpython" in strings[m.filename]}
    for loc in profile.location:
        if loc.mapping_id in names:
            for ln in loc.line:
                yield strings[funcs[ln.function_id].filename], ln.line
