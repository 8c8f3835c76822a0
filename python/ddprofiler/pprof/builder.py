"""Build a pprof ``Profile`` message from a ``ddprofiler.Profile``.

Follows the Datadog CPU-profile contract (``datadog-contracts.md``, pprof section):

- sample types ``[cpu-samples/count, cpu-time/nanoseconds]``, period type
  ``cpu-time/nanoseconds``, ``period = 1e9 // frequency``, values ``[n, n * period]``,
  default sample type ``cpu-time``, ``time_nanos = start_ns``,
  ``duration_nanos = end_ns - start_ns``;
- string table interned, ``""`` at index 0;
- ``Profile.mappings[i]`` is Mapping id ``i + 1`` (kernel ones named
  ``[kernel.kallsyms]``), ``Profile.frames[i]`` is Location id ``i + 1``, a frame without a
  mapping (markers) has mapping_id 0;
- Functions interned by (name, system name, file), ``start_line`` 0; a frame without lines
  (left for the backend, or not resolved) is an address and a mapping only;
- sample labels ``process_id``, ``thread id``, ``thread name``, ``process name``,
  ``cpu.logical_number``, all strings (ids in decimal), plus the extra string labels given
  per pid (the runner's ``container_id``, ``container_name``, ``pod_name``); empty string
  labels are left out; samples with a count of 0 too;
- stacks are written as given: the core caps each at 600 locations (the backend's limit)
  and marks a cut one with a ``[truncated]`` frame, so there is one cap, in one place.

``write_pprof`` writes the gzip-compressed profile atomically (``write_atomic``: a
temporary file in the target's directory, then ``os.replace``), so no reader ever sees a
partial file.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from collections.abc import Mapping as AbcMapping
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, Union

from . import profile_pb2

if TYPE_CHECKING:
    from ddprofiler.profile import Frame, Mapping, Profile, Sample

KERNEL_MAPPING_NAME = "[kernel.kallsyms]"

LABEL_PID = "process_id"
LABEL_TID = "thread id"
LABEL_THREAD_NAME = "thread name"
LABEL_PROCESS_NAME = "process name"
LABEL_CPU = "cpu.logical_number"

_U64_MAX = (1 << 64) - 1
_NS_PER_S = 1_000_000_000

PathLike = Union[str, "os.PathLike[str]"]
# Extra string labels per pid: {pid: {"container_id": "...", ...}}.
Labels = AbcMapping[int, AbcMapping[str, str]]


class _Strings:
    """The profile's string table: interned, ``""`` first."""

    def __init__(self) -> None:
        self.table: List[str] = []
        self._index: Dict[str, int] = {}
        self("")

    def __call__(self, text: str) -> int:
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.table)
            self.table.append(text)
        return index


def build_profile(profile: Profile, labels: Optional[Labels] = None) -> profile_pb2.Profile:
    """The pprof message of ``profile``; ``labels`` adds string labels to the samples of
    each pid it names. Raises ValueError for a frequency that is not positive."""
    frequency = int(profile.frequency)
    if frequency <= 0:
        raise ValueError(f"profile frequency must be positive, got {frequency}")
    period = _NS_PER_S // frequency
    strings = _Strings()
    pb = profile_pb2.Profile()

    pb.sample_type.add(type=strings("cpu-samples"), unit=strings("count"))
    pb.sample_type.add(type=strings("cpu-time"), unit=strings("nanoseconds"))
    pb.period_type.type = strings("cpu-time")
    pb.period_type.unit = strings("nanoseconds")
    pb.period = period
    pb.default_sample_type = strings("cpu-time")
    pb.time_nanos = int(profile.start_ns)
    pb.duration_nanos = max(0, int(profile.end_ns) - int(profile.start_ns))

    mapping_ids = _add_mappings(pb, profile.mappings, profile.frames, strings)
    functions: Dict[Tuple[str, str, str], int] = {}
    for index, frame in enumerate(profile.frames):
        _add_location(pb, index + 1, frame, mapping_ids, functions, strings)

    extra = labels or {}
    stack_ids: Dict[int, List[int]] = {}
    for sample in profile.samples:
        count = int(sample.count)
        if count <= 0:
            continue
        ids = stack_ids.get(sample.stack)
        if ids is None:
            ids = stack_ids[sample.stack] = [i + 1 for i in profile.stacks[sample.stack]]
        pb.sample.add(location_id=ids, value=[count, count * period],
                      label=_labels(sample, extra.get(sample.pid), strings))

    pb.string_table.extend(strings.table)
    return pb


def write_pprof(profile: Profile, path: PathLike,
                labels: Optional[Labels] = None) -> profile_pb2.Profile:
    """Build the pprof of ``profile``, write it gzip-compressed to ``path`` atomically;
    return the message. Raises OSError."""
    pb = build_profile(profile, labels)
    data = gzip.compress(pb.SerializeToString(), compresslevel=6, mtime=0)
    write_atomic(path, data)
    return pb


def write_atomic(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename.

    The temp file is created with mode 0666 minus the umask, like a plain ``open``, and is
    removed if anything (including KeyboardInterrupt) stops the write.
    """
    target = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(target))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _Resolved:
    """What the symbolizer resolved in one mapping (pprof's has_* flags)."""

    __slots__ = ("functions", "filenames", "line_numbers", "inline_frames")

    def __init__(self) -> None:
        self.functions = self.filenames = self.line_numbers = self.inline_frames = False


def _add_mappings(pb: profile_pb2.Profile, mappings: List[Mapping], frames: List[Frame],
                  strings: _Strings) -> Dict[int, int]:
    """Adds every mapping (those of ``mappings`` first, in order, then any other that a
    frame holds); returns pprof mapping id by ``id()`` of the record."""
    ids: Dict[int, int] = {}
    ordered: List[Mapping] = []
    for mapping in [*mappings, *(f.mapping for f in frames if f.mapping is not None)]:
        if id(mapping) not in ids:
            ids[id(mapping)] = len(ordered) + 1
            ordered.append(mapping)
    resolved = [_Resolved() for _ in ordered]
    for frame in frames:
        if frame.mapping is None or not frame.lines:
            continue
        flags = resolved[ids[id(frame.mapping)] - 1]
        flags.functions = True
        flags.filenames = flags.filenames or any(line.file for line in frame.lines)
        flags.line_numbers = flags.line_numbers or any(line.line > 0 for line in frame.lines)
        flags.inline_frames = flags.inline_frames or len(frame.lines) > 1
    for index, (mapping, flags) in enumerate(zip(ordered, resolved)):
        pb.mapping.add(
            id=index + 1,
            memory_start=mapping.start,
            memory_limit=min(mapping.limit, _U64_MAX),  # a kernel range may end at 2**64
            file_offset=mapping.offset,
            filename=strings(KERNEL_MAPPING_NAME if mapping.is_kernel else mapping.path),
            build_id=strings(mapping.build_id),
            has_functions=flags.functions,
            has_filenames=flags.filenames,
            has_line_numbers=flags.line_numbers,
            has_inline_frames=flags.inline_frames,
        )
    return ids


def _add_location(pb: profile_pb2.Profile, location_id: int, frame: Frame,
                  mapping_ids: Dict[int, int], functions: Dict[Tuple[str, str, str], int],
                  strings: _Strings) -> None:
    location = pb.location.add(
        id=location_id,
        mapping_id=mapping_ids[id(frame.mapping)] if frame.mapping is not None else 0,
        address=frame.address,
    )
    for line in frame.lines:
        # "" in a Line means "same as the name"; pprof wants it spelled out.
        key = (line.function, line.system_name or line.function, line.file)
        function_id = functions.get(key)
        if function_id is None:
            function_id = functions[key] = len(functions) + 1
            pb.function.add(id=function_id, name=strings(key[0]), system_name=strings(key[1]),
                            filename=strings(key[2]), start_line=0)
        location.line.add(function_id=function_id, line=line.line)


def _labels(sample: Sample, extra: Optional[AbcMapping[str, str]],
            strings: _Strings) -> List[profile_pb2.Label]:
    # Ids are decimal strings, as Datadog's host profiler writes them: pprof readers drop a
    # numeric label whose value is 0 (CPU 0), and the backend keys on the string form.
    label = profile_pb2.Label
    labels = [
        label(key=strings(LABEL_PID), str=strings(str(sample.pid))),
        label(key=strings(LABEL_TID), str=strings(str(sample.tid))),
    ]
    texts = [(LABEL_THREAD_NAME, sample.thread_name), (LABEL_PROCESS_NAME, sample.process_name)]
    if extra:
        texts += extra.items()
    for key, text in texts:
        if text:
            labels.append(label(key=strings(key), str=strings(text)))
    labels.append(label(key=strings(LABEL_CPU), str=strings(str(sample.cpu))))
    return labels
