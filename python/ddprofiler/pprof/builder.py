"""Build a pprof ``Profile`` from a ``ddprofiler._native`` snapshot (see ``_native.pyi``).

Follows the Datadog CPU-profile contract (``datadog-contracts.md``, pprof section):

- sample types ``[cpu-samples/count, cpu-time/nanoseconds]``, period type
  ``cpu-time/nanoseconds``, ``period = 1e9 // frequency``, values ``[n, n * period]``,
  default sample type ``cpu-time``, ``time_nanos = start_ns``,
  ``duration_nanos = end_ns - start_ns``;
- string table interned, ``""`` at index 0;
- snapshot mapping ``i`` is Mapping id ``i + 1`` (kernel ones named ``[kernel.kallsyms]``),
  location ``i`` is Location id ``i + 1``, mapping ``-1`` (marker frames) is mapping_id 0;
- Functions interned by (name, system name, file), ``start_line`` 0;
- sample labels ``process_id``, ``thread id``, ``thread name``, ``process name``,
  ``cpu.logical_number``, all strings (ids in decimal), and ``container_id``,
  ``container_name``, ``pod_name`` when the sample dict carries them; empty string labels
  are left out;
- a stack of more than 600 locations keeps its 599 leaf-most ones and ends with a
  ``[truncated]`` frame that has no mapping.

``write_pprof`` writes the gzip-compressed profile atomically: a temporary file in the
target's directory, then ``os.replace``, so no reader ever sees a partial file.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from typing import Any, Dict, List, Mapping, Tuple, Union

from . import profile_pb2

MAX_LOCATIONS_PER_SAMPLE = 600
TRUNCATED_FRAME = "[truncated]"
KERNEL_MAPPING_NAME = "[kernel.kallsyms]"

LABEL_PID = "process_id"
LABEL_TID = "thread id"
LABEL_THREAD_NAME = "thread name"
LABEL_PROCESS_NAME = "process name"
LABEL_CPU = "cpu.logical_number"
# Added by the runner where known; a sample dict may carry any of them.
OPTIONAL_LABELS = ("container_id", "container_name", "pod_name")

_U64_MAX = (1 << 64) - 1
_NS_PER_S = 1_000_000_000

PathLike = Union[str, "os.PathLike[str]"]


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


def build_profile(snapshot: Mapping[str, Any]) -> profile_pb2.Profile:
    """Return the pprof Profile of one snapshot (a ``_native.Snapshot`` dict)."""
    frequency = int(snapshot["frequency"])
    if frequency <= 0:
        raise ValueError(f"snapshot frequency must be positive, got {frequency}")
    period = _NS_PER_S // frequency
    strings = _Strings()
    profile = profile_pb2.Profile()

    profile.sample_type.add(type=strings("cpu-samples"), unit=strings("count"))
    profile.sample_type.add(type=strings("cpu-time"), unit=strings("nanoseconds"))
    profile.period_type.type = strings("cpu-time")
    profile.period_type.unit = strings("nanoseconds")
    profile.period = period
    profile.default_sample_type = strings("cpu-time")
    profile.time_nanos = int(snapshot["start_ns"])
    profile.duration_nanos = max(0, int(snapshot["end_ns"]) - int(snapshot["start_ns"]))

    _add_mappings(profile, snapshot["mappings"], snapshot["locations"], strings)
    functions: Dict[Tuple[str, str, str], int] = {}
    for index, location in enumerate(snapshot["locations"]):
        _add_location(profile, index + 1, location, functions, strings)

    marker_id = 0  # the [truncated] location, added on first use
    stack_ids: Dict[int, List[int]] = {}
    for sample in snapshot["samples"]:
        count = int(sample["count"])
        if count <= 0:
            continue
        stack_index = sample["stack"]
        ids = stack_ids.get(stack_index)
        if ids is None:
            ids = [i + 1 for i in snapshot["stacks"][stack_index]]
            if len(ids) > MAX_LOCATIONS_PER_SAMPLE:
                if not marker_id:
                    marker_id = len(profile.location) + 1
                    marker = {"mapping": -1, "address": 0, "lines": [_marker_line(TRUNCATED_FRAME)]}
                    _add_location(profile, marker_id, marker, functions, strings)
                ids = ids[: MAX_LOCATIONS_PER_SAMPLE - 1] + [marker_id]
            stack_ids[stack_index] = ids
        profile.sample.add(
            location_id=ids,
            value=[count, count * period],
            label=_labels(sample, strings),
        )

    profile.string_table.extend(strings.table)
    return profile


def write_pprof(snapshot: Mapping[str, Any], path: PathLike) -> profile_pb2.Profile:
    """Build the profile of ``snapshot``, write it gzip-compressed to ``path`` atomically."""
    profile = build_profile(snapshot)
    data = gzip.compress(profile.SerializeToString(), compresslevel=6, mtime=0)
    write_atomic(path, data)
    return profile


def write_atomic(path: PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same directory, fsync, rename.

    The temp file is created with mode 0666 minus the umask, like a plain ``open``, and is
    removed if anything (including KeyboardInterrupt) stops the write.
    """
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _add_mappings(profile, mappings, locations, strings: _Strings) -> None:
    # What the symbolizer resolved, per mapping: functions, files, lines, inlines.
    resolved = [[False, False, False, False] for _ in mappings]
    for location in locations:
        lines = location["lines"]
        if location["mapping"] < 0 or not lines:
            continue
        flags = resolved[location["mapping"]]
        flags[0] = True
        flags[1] = flags[1] or any(line["file"] for line in lines)
        flags[2] = flags[2] or any(line["line"] > 0 for line in lines)
        flags[3] = flags[3] or len(lines) > 1
    for index, (mapping, flags) in enumerate(zip(mappings, resolved)):
        filename = KERNEL_MAPPING_NAME if mapping["is_kernel"] else mapping["path"]
        profile.mapping.add(
            id=index + 1,
            memory_start=mapping["start"],
            memory_limit=min(mapping["limit"], _U64_MAX),  # a kernel range may end at 2**64
            file_offset=mapping["offset"],
            filename=strings(filename),
            build_id=strings(mapping["build_id"]),
            has_functions=flags[0],
            has_filenames=flags[1],
            has_line_numbers=flags[2],
            has_inline_frames=flags[3],
        )


def _add_location(profile, location_id: int, location, functions, strings: _Strings) -> None:
    mapping = location["mapping"]
    pb = profile.location.add(
        id=location_id,
        mapping_id=mapping + 1 if mapping >= 0 else 0,
        address=location["address"],
    )
    for line in location["lines"]:
        name = line["function"]
        # "" in the snapshot means "same as the name"; pprof wants it spelled out.
        key = (name, line["system_name"] or name, line["file"])
        function_id = functions.get(key)
        if function_id is None:
            function_id = functions[key] = len(functions) + 1
            profile.function.add(
                id=function_id,
                name=strings(key[0]),
                system_name=strings(key[1]),
                filename=strings(key[2]),
                start_line=0,
            )
        pb.line.add(function_id=function_id, line=line["line"])


def _marker_line(name: str) -> Dict[str, Any]:
    return {"function": name, "system_name": "", "file": "", "line": 0}


def _labels(sample, strings: _Strings) -> List[profile_pb2.Label]:
    # Ids are decimal strings, as Datadog's host profiler writes them: pprof readers drop a
    # numeric label whose value is 0 (CPU 0), and the backend keys on the string form.
    Label = profile_pb2.Label
    labels = [
        Label(key=strings(LABEL_PID), str=strings(str(sample["pid"]))),
        Label(key=strings(LABEL_TID), str=strings(str(sample["tid"]))),
    ]
    names = ((LABEL_THREAD_NAME, sample["thread_name"]), (LABEL_PROCESS_NAME, sample["process_name"]),
             *((key, sample.get(key) or "") for key in OPTIONAL_LABELS))
    for key, text in names:
        if text:
            labels.append(Label(key=strings(key), str=strings(text)))
    labels.append(Label(key=strings(LABEL_CPU), str=strings(str(sample["cpu"]))))
    return labels
