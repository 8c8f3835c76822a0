"""Read pprof files back into plain stacks, for tests and tools.

``read_pprof(path)`` parses a pprof file, gzip- or zstd-compressed or raw.
``stacks(profile)`` returns one ``Stack`` per sample: its labels (``process_id``, ``thread id``, ``thread name``, ``process name``, ``cpu.logical_number``;
-1 or "" when absent), its count (the ``cpu-samples`` value) and its frames as function
names, leaf first; a location with inlined functions gives several frames, innermost
first. A frame without a function name is rendered ``<file basename>+0x<offset in the
file>`` (``<mapping name>+0x<address>`` for memory that is no file's, ``[unknown]`` when
the location has no mapping). ``to_profile(profile)`` makes a ``ddprofiler.Profile`` of
it, for the reports and the output formats.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from ..profile import unnamed_frame
from .builder import (KERNEL_MAPPING_NAME, LABEL_CPU, LABEL_PID, LABEL_PROCESS_NAME,
                      LABEL_THREAD_NAME, LABEL_TID, OFF_CPU_TIME)

if TYPE_CHECKING:
    from ddprofiler.profile import FrameKind, Line, Mapping, Profile

    from . import profile_pb2

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass
class Stack:
    pid: int
    tid: int
    thread_name: str
    process_name: str
    cpu: int
    count: int
    frames: List[str] = field(default_factory=list)


def read_pprof(path: Union[str, "os.PathLike[str]"]) -> profile_pb2.Profile:
    """Parse the pprof file at ``path`` (gzip-compressed or not)."""
    with open(path, "rb") as f:
        return parse_pprof(f.read())


def parse_pprof(data: bytes) -> profile_pb2.Profile:
    """Parse pprof bytes, gzip-compressed or not."""
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    elif data[:4] == _ZSTD_MAGIC:  # as Datadog's agent and libdatadog upload them
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    from . import profile_pb2  # protobuf: imported by readers only

    profile = profile_pb2.Profile()
    profile.ParseFromString(data)
    return profile


def stacks(profile: profile_pb2.Profile) -> List[Stack]:
    """One Stack per sample of ``profile``, in sample order."""
    strings = profile.string_table
    count_index = _count_index(profile)
    frames_of = _location_frames(profile)
    result: List[Stack] = []
    for sample in profile.sample:
        labels: Dict[str, Union[int, str]] = {}
        for label in sample.label:
            labels[strings[label.key]] = strings[label.str] if label.str else label.num
        frames: List[str] = []
        for location_id in sample.location_id:
            frames.extend(frames_of.get(location_id, [f"[missing location {location_id}]"]))
        result.append(
            Stack(
                pid=int(labels.get(LABEL_PID, -1)),
                tid=int(labels.get(LABEL_TID, -1)),
                thread_name=str(labels.get(LABEL_THREAD_NAME, "")),
                process_name=str(labels.get(LABEL_PROCESS_NAME, "")),
                cpu=int(labels.get(LABEL_CPU, -1)),
                count=sample.value[count_index] if count_index < len(sample.value) else 0,
                frames=frames,
            )
        )
    return result


def _count_index(profile: profile_pb2.Profile) -> int:
    """Index of the sample count: ``cpu-samples``, else the first ``count`` unit, else 0."""
    strings = profile.string_table
    types = [(strings[t.type], strings[t.unit]) for t in profile.sample_type]
    for index, (kind, _) in enumerate(types):
        if kind == "cpu-samples":
            return index
    for index, (_, unit) in enumerate(types):
        if unit == "count":
            return index
    return 0


def _location_frames(profile: profile_pb2.Profile) -> Dict[int, List[str]]:
    strings = profile.string_table
    functions = {f.id: strings[f.name] or strings[f.system_name] for f in profile.function}
    mappings = {m.id: m for m in profile.mapping}
    frames_of: Dict[int, List[str]] = {}
    for location in profile.location:
        m = mappings.get(location.mapping_id)
        fallback = ("[unknown]" if m is None else
                    unnamed_frame(strings[m.filename], m.memory_start, m.file_offset, location.address))
        names = [functions.get(line.function_id) or fallback for line in location.line]
        frames_of[location.id] = names or [fallback]
    return frames_of


def to_profile(pb: profile_pb2.Profile) -> Profile:
    """``pb`` as a ``ddprofiler.Profile`` (any pprof CPU profile, ours or another tool's):
    samples counted by ``cpu-samples`` (else the first ``count`` unit, else the first
    value), labels ``process_id``/``thread id``/``thread name``/``process name``/
    ``cpu.logical_number`` where present, off-CPU nanoseconds from ``off-cpu-time`` (the
    profile is then an off-CPU one), frequency from the period (1e9 / period, 99 when
    there is none), frame kinds from the mapping: ``[kernel.kallsyms]`` kernel,
    ``[python ...]`` python, ``[anon]``/``[perf-map]`` JIT, no mapping and a ``[...]`` name
    a marker, else native."""
    from ddprofiler.profile import Frame, Line, Mapping, Profile, Sample

    strings = pb.string_table
    functions = {f.id: f for f in pb.function}
    mappings = {m.id: Mapping(m.memory_start, m.memory_limit, m.file_offset, strings[m.filename],
                              strings[m.build_id], strings[m.filename] == KERNEL_MAPPING_NAME)
                for m in pb.mapping}
    frame_index: Dict[int, int] = {}
    frames: List[Frame] = []
    for location in pb.location:
        mapping = mappings.get(location.mapping_id)
        lines = []
        for ln in location.line:
            f = functions.get(ln.function_id)
            if f is not None:
                lines.append(Line(strings[f.name], "" if f.system_name == f.name else strings[f.system_name],
                                  strings[f.filename], ln.line))
        frame_index[location.id] = len(frames)
        frames.append(Frame(location.address, mapping, _kind(mapping, lines), tuple(lines)))
    count_index = _count_index(pb)
    off_cpu_index = next((i for i, t in enumerate(pb.sample_type) if strings[t.type] == OFF_CPU_TIME), None)
    stack_index: Dict[tuple[int, ...], int] = {}
    samples = []
    for sample in pb.sample:
        count = sample.value[count_index] if count_index < len(sample.value) else 0
        stack = tuple(frame_index[i] for i in sample.location_id if i in frame_index)
        s = stack_index.setdefault(stack, len(stack_index))
        labels = {strings[lb.key]: (strings[lb.str] if lb.str else str(lb.num)) for lb in sample.label}

        def number(key: str) -> int:
            try:
                return int(labels.get(key, "0"))
            except ValueError:
                return 0
        off_cpu_ns = sample.value[off_cpu_index] if off_cpu_index is not None and off_cpu_index < len(sample.value) else 0
        samples.append(Sample(number(LABEL_PID), number(LABEL_TID), number(LABEL_CPU), s, count,
                              labels.get(LABEL_THREAD_NAME, ""), labels.get(LABEL_PROCESS_NAME, ""), off_cpu_ns))
    frequency = 1_000_000_000 // pb.period if pb.period > 0 else 99
    return Profile(pb.time_nanos, pb.time_nanos + pb.duration_nanos, max(1, frequency),
                   list(mappings.values()), frames, list(stack_index), samples,
                   off_cpu=off_cpu_index is not None)


def _kind(mapping: Optional[Mapping], lines: List[Line]) -> FrameKind:
    if mapping is None:
        name = lines[0].function if lines else ""
        return "marker" if name.startswith("[") else "native"
    if mapping.is_kernel:
        return "kernel"
    if mapping.path.startswith("[python"):
        return "python"
    if mapping.path in ("[anon]", "[perf-map]") or mapping.path.startswith("[anon:"):
        return "jit"
    return "native"
