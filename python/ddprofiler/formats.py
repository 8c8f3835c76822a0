"""Output formats of a profile: pprof, flame graph SVG, speedscope JSON, collapsed stacks.

Input: a ``Profile`` and a format, named or taken from the output's suffix
(``format_of``). Output: the bytes of the file (``render``), written atomically to a path
or to standard output for ``-`` (``write``).

- ``pprof`` (``.pprof``, ``.pb.gz``, ``.pb``): the gzip-compressed pprof of
  ``ddprofiler.pprof`` (Datadog's CPU-profile conventions; every value: an off-CPU
  profile's ``off-cpu-time`` too), for ``go tool pprof``.
- ``svg`` (``.svg``): an interactive flame graph drawn by inferno (search, click to zoom,
  a tooltip per frame with its samples and share). Colours by kind: Python frames blue,
  native code red (C++ and Rust paths yellow), kernel orange, JIT green, inlined functions
  aqua, markers (``[truncated]``...) grey.
- ``speedscope`` (``.speedscope.json``, ``.json``): speedscope's file format
  (https://www.speedscope.app/file-format-schema.json), one sampled profile per process,
  hottest first, weights in nanoseconds of CPU.
- ``collapsed`` (``.txt``, ``.folded``, ``.collapsed``): ``root;...;leaf COUNT`` lines,
  the stackcollapse format that flamegraph.pl, inferno and speedscope read.

Every format but pprof draws one value (``Value``): ``cpu`` (the default: samples, weighed
in nanoseconds of CPU by speedscope) or, for a profile recorded in off-CPU mode,
``off-cpu`` (nanoseconds switched out). In every format but pprof a stack starts with its
process's name (as stackcollapse-perf
writes it), then goes from the outermost frame to the leaf; a frame with inlined functions
gives one frame per function, outermost first. Non-goals: reading these formats back.
"""
from __future__ import annotations

import gzip
import json
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Optional, Union

import ddprofiler

if TYPE_CHECKING:
    from ddprofiler.profile import Frame, Profile, Value

__all__ = ["FORMATS", "collapsed", "format_of", "render", "speedscope", "svg", "write"]

FORMATS: dict[str, tuple[str, ...]] = {
    "pprof": (".pprof", ".pb.gz", ".pb"),
    "svg": (".svg",),
    "speedscope": (".speedscope.json", ".json"),
    "collapsed": (".txt", ".folded", ".collapsed"),
}
"""Format name -> the suffixes that name it."""

STDOUT = "-"
_PYTHON_COLOUR, _MARKER_COLOUR, _PROCESS_COLOUR = "#6a9be0", "#b0b0b0", "#d8d8d8"
_ANNOTATION = {"kernel": "_[k]", "jit": "_[j]"}
PathLike = Union[str, "os.PathLike[str]"]


def format_of(output: PathLike, name: Optional[str] = None) -> str:
    """The format ``name`` (checked), else the one ``output``'s suffix names. Raises
    ValueError naming the formats and their suffixes when neither says one."""
    if name is not None:
        if name not in FORMATS:
            raise ValueError(f"unknown format {name!r}; formats: {describe()}")
        return name
    path = os.fspath(output)
    if path == STDOUT:
        raise ValueError(f"writing to standard output needs a format; formats: {describe()}")
    lower = path.lower()
    for fmt, suffixes in FORMATS.items():
        if lower.endswith(suffixes):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r} from its suffix; use one of "
                     f"{describe()}, or give the format")


def describe() -> str:
    """``pprof (.pprof, .pb.gz, .pb), svg (.svg), ...``: for messages and help."""
    return ", ".join(f"{fmt} ({', '.join(suffixes)})" for fmt, suffixes in FORMATS.items())


def render(profile: Profile, fmt: str, title: Optional[str] = None, value: Value = "cpu") -> bytes:
    """The file of ``profile`` in format ``fmt`` (see ``FORMATS``), of ``value``. Raises
    ValueError for an unknown format, or a value the profile does not have."""
    value = profile.check_value(value)
    if fmt == "pprof":
        from ddprofiler.pprof.builder import encode_profile

        return gzip.compress(encode_profile(profile).pprof, compresslevel=6, mtime=0)
    if fmt == "svg":
        return svg(profile, title, value).encode()
    if fmt == "speedscope":
        return json.dumps(speedscope(profile, title, value), separators=(",", ":")).encode()
    if fmt == "collapsed":
        return "".join(f"{line}\n" for line in collapsed(profile, value)).encode()
    raise ValueError(f"unknown format {fmt!r}; formats: {describe()}")


def write(profile: Profile, output: PathLike, fmt: Optional[str] = None,
          title: Optional[str] = None, value: Value = "cpu") -> str:
    """Write ``profile`` to ``output`` (``-``: standard output) in ``fmt`` (None: from the
    suffix), of ``value``; a file is replaced atomically. Returns the format. Raises
    ValueError (format, value), OSError (writing)."""
    from ddprofiler.pprof.builder import write_atomic

    fmt = format_of(output, fmt)
    data = render(profile, fmt, title, value)
    if os.fspath(output) == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(output, data)
    return fmt


# ----------------------------------------------------------------- the formats


def collapsed(profile: Profile, value: Value = "cpu") -> list[str]:
    """``process;outer;...;leaf COUNT`` per distinct stack, sorted; ``;`` in a name becomes
    ``:`` (it separates frames). COUNT is samples (``cpu``) or nanoseconds (``off-cpu``)."""
    return [f"{';'.join(names)} {count}" for names, count in sorted(_folded(profile, False, value).items())]


def svg(profile: Profile, title: Optional[str] = None, value: Value = "cpu") -> str:
    """The flame graph SVG of ``profile``'s ``value`` (see the module's doc for its
    colours)."""
    folded = _folded(profile, True, value)
    colours: dict[str, str] = {}
    for frame in profile.frames:
        if frame.kind in ("python", "marker"):
            for name in frame.functions:
                colours[_clean(name)] = _PYTHON_COLOUR if frame.kind == "python" else _MARKER_COLOUR
    for info in profile.processes.values():
        colours.setdefault(_clean(info.name), _PROCESS_COLOUR)
    lines = [f"{';'.join(names)} {count}" for names, count in folded.items()]
    drawn: str = _native().flamegraph_svg(lines, title or _title(profile, value), _subtitle(profile, value),
                                          "samples" if value == "cpu" else "ns", colours)
    return drawn


def speedscope(profile: Profile, title: Optional[str] = None, value: Value = "cpu") -> dict[str, object]:
    """speedscope's file (as a JSON-ready dict): one sampled profile per process, weights
    in nanoseconds (of CPU, or switched out)."""
    period = 1_000_000_000 // max(1, int(profile.frequency)) if value == "cpu" else 1
    frames: list[dict[str, object]] = []
    index: dict[tuple[str, str, int], int] = {}
    by_pid: dict[int, tuple[list[list[int]], list[int]]] = {}
    names: dict[int, str] = {}
    for sample in profile.samples:
        weight = sample.value(value)
        if weight <= 0:
            continue
        stack: list[int] = []
        for name, file, line in _root_to_leaf(profile.stack(sample)):
            key = (name, file, line)
            i = index.get(key)
            if i is None:
                i = index[key] = len(frames)
                entry: dict[str, object] = {"name": name}
                if file:
                    entry["file"] = file
                if line:
                    entry["line"] = line
                frames.append(entry)
            stack.append(i)
        stacks, weights = by_pid.setdefault(sample.pid, ([], []))
        stacks.append(stack)
        weights.append(weight * period)
        names.setdefault(sample.pid, sample.process_name)
    profiles = []
    for pid, (stacks, weights) in sorted(by_pid.items(), key=lambda kv: -sum(kv[1][1])):
        profiles.append({"type": "sampled", "name": f"{names[pid] or 'pid'} ({pid})",
                         "unit": "nanoseconds", "startValue": 0, "endValue": sum(weights),
                         "samples": stacks, "weights": weights})
    return {"$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": frames}, "profiles": profiles,
            "name": title or _title(profile, value), "activeProfileIndex": 0,
            "exporter": f"ddprofiler {ddprofiler.__version__}"}


# ----------------------------------------------------------------- helpers


def _folded(profile: Profile, annotate: bool, value: Value) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {}
    for sample in profile.samples:
        weight = sample.value(value)
        if weight <= 0:
            continue
        frames = profile.stack(sample)
        names = [_clean(sample.process_name or f"pid {sample.pid}")]
        names += (_annotated(frames) if annotate else
                  (_clean(name) for name, _, _ in _root_to_leaf(frames)))
        key = tuple(names)
        out[key] = out.get(key, 0) + weight
    return out


def _root_to_leaf(frames: list[Frame]) -> Iterator[tuple[str, str, int]]:
    """(name, file, line) from the root to the leaf, inlined functions outermost first."""
    for frame in reversed(frames):
        names = frame.functions
        lines = frame.lines or ()
        for depth in range(len(names) - 1, -1, -1):
            line = lines[depth] if depth < len(lines) else None
            yield names[depth], (line.file if line else ""), (line.line if line else 0)


def _annotated(frames: list[Frame]) -> Iterator[str]:
    for frame in reversed(frames):
        names = frame.functions
        suffix = _ANNOTATION.get(frame.kind, "")
        for depth in range(len(names) - 1, -1, -1):
            inlined = depth < len(names) - 1 and frame.kind == "native"  # inlined into the next
            yield _clean(names[depth]) + ("_[i]" if inlined else suffix)


def _clean(name: str) -> str:
    return name.replace(";", ":").replace("\n", " ") or "[unknown]"


def _title(profile: Profile, value: Value = "cpu") -> str:
    if value == "off-cpu":
        return f"Off-CPU: {profile.off_cpu_total_ns / 1e9:.2f} s switched out"
    return f"CPU: {profile.total} samples at {profile.frequency} Hz"


def _subtitle(profile: Profile, value: Value = "cpu") -> str:
    processes = len({s.pid for s in profile.samples if s.value(value) > 0})
    return f"{profile.duration_s:.1f} s, {processes} processes; ddprofiler {ddprofiler.__version__}"


def _native() -> ModuleType:
    from ddprofiler.profiler import load_native

    return load_native()
