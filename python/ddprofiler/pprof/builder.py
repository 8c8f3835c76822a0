"""pprof encoding of a ``ddprofiler.Profile``, by the core's one encoder.

The encoder is ``rust/ddprof-core/src/pprof`` (its module doc is the contract, from
``datadog-contracts.md``, pprof section): sample types ``[cpu-samples/count,
cpu-time/nanoseconds]``, ``period = 1e9 // frequency``, an interned string table with
``""`` first, mapping and location ids from 1 in table order, functions interned by
(name, system name, file), string labels ``process_id``, ``thread id``, ``thread name``,
``process name``, the extra labels given per pid (the runner's ``container_id``,
``container_name``, ``pod_name``), ``cpu.logical_number``; empty labels and samples with a
count of 0 left out; stacks written as the core capped them (600 locations, ``[truncated]``).

A profile made from a snapshot (``Profile.native``) is encoded from the core's tables with
no Python object per frame or sample; a hand-made one (or a ``subset``) crosses as plain
tuples. ``encode_profiles`` makes one profile per group of pids in one call.
``build_profile`` returns the decoded message (it imports protobuf; nothing else here
does). ``write_pprof`` writes the gzip-compressed profile atomically (``write_atomic``: a
temporary file in the target's directory, then ``os.replace``), so no reader ever sees a
partial file.
"""
from __future__ import annotations

import contextlib
import gzip
import os
import secrets
from collections.abc import Mapping as AbcMapping
from typing import TYPE_CHECKING, Dict, List, NamedTuple, Optional, Tuple, Union

if TYPE_CHECKING:
    from ddprofiler import _native
    from ddprofiler.profile import Profile

    from . import profile_pb2

KERNEL_MAPPING_NAME = "[kernel.kallsyms]"

LABEL_PID = "process_id"
LABEL_TID = "thread id"
LABEL_THREAD_NAME = "thread name"
LABEL_PROCESS_NAME = "process name"
LABEL_CPU = "cpu.logical_number"
OFF_CPU_TIME = "off-cpu-time"
"""The sample type of off-CPU nanoseconds (off-CPU mode), after cpu-samples and cpu-time."""

_U64_MAX = (1 << 64) - 1

PathLike = Union[str, "os.PathLike[str]"]
# Extra string labels per pid: {pid: {"container_id": "...", ...}}.
Labels = AbcMapping[int, AbcMapping[str, str]]


class Encoded(NamedTuple):
    """One encoded profile."""

    pprof: bytes
    """The serialized, uncompressed pprof ``Profile`` message."""
    samples: int
    """Sum of its sample counts."""
    backend_frames: bool
    """Some native frame has no lines, in a file the backend can know by its build id."""


def encode_profiles(profile: Profile, group_of: AbcMapping[int, int], groups: int,
                    labels: Optional[Labels] = None) -> List[Encoded]:
    """One pprof per group: ``group_of`` gives every sampled pid its group in
    ``range(groups)``; ``labels`` adds string labels to the samples of each pid it names.
    Raises ValueError for a frequency that is not positive, or a sampled pid without a
    group."""
    extra = {pid: list(items.items()) for pid, items in (labels or {}).items()}
    out = _snapshot(profile).encode_pprofs(dict(group_of), groups, extra)
    return [Encoded(*e) for e in out]


def encode_otlp(profile: Profile, group_of: AbcMapping[int, int],
                resources: List[List[Tuple[str, str]]], version: str) -> Tuple[bytes, List[int]]:
    """One OTLP profiles export request (``v1development``) of ``profile``: group ``g``
    (of ``group_of``, as for ``encode_profiles``) under a resource of ``resources[g]``'s
    attributes; the request's bytes and each group's sample total. Raises ValueError as
    ``encode_profiles``."""
    body, totals = _snapshot(profile).encode_otlp(dict(group_of), resources, version)
    return body, list(totals)


def encode_profile(profile: Profile, labels: Optional[Labels] = None) -> Encoded:
    """The pprof of all of ``profile``'s samples (see ``encode_profiles``)."""
    pids = {s.pid: 0 for s in profile.samples} if profile.native is None else \
        dict.fromkeys(profile.native.sampled_pids(), 0)
    return encode_profiles(profile, pids, 1, labels)[0]


def build_profile(profile: Profile, labels: Optional[Labels] = None) -> profile_pb2.Profile:
    """The pprof message of ``profile`` (decoded: for readers and tests). Raises
    ValueError for a frequency that is not positive."""
    from . import profile_pb2  # protobuf only when a message is wanted

    pb = profile_pb2.Profile()
    pb.ParseFromString(encode_profile(profile, labels).pprof)
    return pb


def write_pprof(profile: Profile, path: PathLike, labels: Optional[Labels] = None) -> Encoded:
    """Encode ``profile``, write it gzip-compressed to ``path`` atomically; return what was
    encoded. Raises OSError, or ValueError as ``encode_profiles``."""
    encoded = encode_profile(profile, labels)
    write_atomic(path, gzip.compress(encoded.pprof, compresslevel=6, mtime=0))
    return encoded


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


def _snapshot(profile: Profile) -> _native.Snapshot:
    """The core's snapshot of ``profile``: its own, or one of its (hand-made) tables."""
    if profile.native is not None:
        return profile.native
    from ddprofiler.profiler import load_native

    snapshot: _native.Snapshot = load_native().Snapshot.from_tables(*_tables(profile))
    return snapshot


def _tables(profile: Profile) -> Tuple[object, ...]:
    """A hand-made profile's tables as ``Snapshot.from_tables`` takes them: every mapping
    (``profile.mappings`` first, in order, then any other a frame holds), frames with
    mapping indices (-1 for none), stacks, samples."""
    index: Dict[int, int] = {}
    mappings: List[Tuple[int, int, int, str, str, bool]] = []
    for m in [*profile.mappings, *(f.mapping for f in profile.frames if f.mapping is not None)]:
        if id(m) not in index:
            index[id(m)] = len(mappings)
            mappings.append((m.start, min(m.limit, _U64_MAX), m.offset, m.path, m.build_id, m.is_kernel))
    frames = [(index[id(f.mapping)] if f.mapping is not None else -1, f.address, f.kind,
               [tuple(line) for line in f.lines]) for f in profile.frames]
    samples = [tuple(s) for s in profile.samples]
    return (int(profile.start_ns), int(profile.end_ns), int(profile.frequency), mappings, frames,
            [list(st) for st in profile.stacks], samples, bool(profile.off_cpu))
