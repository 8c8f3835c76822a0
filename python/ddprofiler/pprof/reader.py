"""Read pprof files back into plain stacks, for tests and tools.

``read_pprof(path)`` parses a pprof file, gzip-compressed or raw (zstd is refused with a
clear error). ``stacks(profile)`` returns one ``Stack`` per sample: its labels
(``process_id``, ``thread id``, ``thread name``, ``process name``, ``cpu.logical_number``;
-1 or "" when absent), its count (the ``cpu-samples`` value) and its frames as function
names, leaf first; a location with inlined functions gives several frames, innermost
first. A frame without a function name is rendered ``<file basename>+0x<offset in the
file>`` (``<mapping name>+0x<address>`` for memory that is no file's, ``[unknown]`` when
the location has no mapping).
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Union

from ..profile import unnamed_frame
from .builder import LABEL_CPU, LABEL_PID, LABEL_PROCESS_NAME, LABEL_THREAD_NAME, LABEL_TID

if TYPE_CHECKING:
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
    elif data[:4] == _ZSTD_MAGIC:
        raise ValueError("zstd-compressed pprof is not supported here; decompress it first (zstd -d)")
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
