"""The typed data model of one profiling period: ``Profile`` and its records.

Input: a ``_native.Snapshot`` (interned tables of plain tuples, see ``_native.pyi``), or
records built by hand. Output: a ``Profile`` whose tables hold immutable typed records:

- ``Mapping``: a range of a process's address space mapped from a file (pprof's words:
  ``start``, ``limit``, ``offset``; ``build_id`` is the id the backend knows the file by);
- ``Frame``: one address of a stack, with its mapping and the source ``Line``s found
  there, innermost inlined function first;
- ``Sample``: a (pid, tid, cpu, thread, process) and an index into ``Profile.stacks`` with
  the number of times it was seen on CPU, and (off-CPU mode) the nanoseconds its thread
  spent switched out in that stack;
- ``ProcessInfo``: what /proc said about a sampled process.

``Profile`` answers the questions asked of a profile (``stack``, ``total``, ``top``; of
either value, ``Value``: ``cpu`` samples or ``off-cpu`` nanoseconds),
cuts it in parts (``subset``, ``split``) and writes it (``write``: pprof, flame graph SVG,
speedscope or collapsed stacks, through ``ddprofiler.formats``). Non-goals: encoding
(``ddprofiler.pprof``, ``ddprofiler.formats``), tagging.
Neither the extension nor protobuf is imported by this module.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Optional, TypeVar, Union

from ddprofiler.stats import CounterSpec, Stats

if TYPE_CHECKING:
    from ddprofiler import _native

__all__ = ["Frame", "FrameKind", "Line", "Mapping", "ProcessInfo", "Profile", "Sample", "TopEntry", "Value",
           "VALUES"]

FrameKind = Literal["native", "kernel", "jit", "python", "marker"]
Value = Literal["cpu", "off-cpu"]
"""What a profile's samples are weighed by: ``cpu`` (samples seen on CPU, ``Sample.count``)
or ``off-cpu`` (nanoseconds switched out, ``Sample.off_cpu_ns``; off-CPU mode only)."""
VALUES: tuple[Value, ...] = ("cpu", "off-cpu")
K = TypeVar("K", bound=Hashable)
PathLike = Union[str, "os.PathLike[str]"]

_NS_PER_S = 1_000_000_000


class Line(NamedTuple):
    """A source position at a frame's address."""

    function: str
    """Demangled function name."""
    system_name: str
    """Linkage (mangled) name; "" when the same as ``function``."""
    file: str
    """Source file; "" when unknown."""
    line: int
    """Line number; 0 when unknown."""


class Mapping(NamedTuple):
    """A range of a process's address space and the file mapped there."""

    start: int
    """First address of the range in the process."""
    limit: int
    """One past its last address."""
    offset: int
    """File offset mapped at ``start``."""
    path: str
    """The file as the process names it, or ``[vdso]``, ``[anon]``, ``[kernel.kallsyms]``."""
    build_id: str
    """The id the backend knows the file by (GNU build id, else Go build id, else the
    contract's file hash); "" when unknown."""
    is_kernel: bool
    binary: Optional[_native.Binary] = None
    """The file as the profiler holds it open (for symbol upload); None when not a file,
    or for a hand-made record."""


class Frame(NamedTuple):
    """One address of a stack."""

    address: int
    """Address in the process (kernel address for kernel frames); 0 for markers."""
    mapping: Optional[Mapping]
    """None for marker frames and addresses outside every known mapping."""
    kind: FrameKind
    """``native`` (user code in a file), ``kernel``, ``jit`` (named from a perf map),
    ``python`` (a CPython frame: its mapping is ``[python X.Y.Z]``, its line the function's
    qualified name, file and the line being executed) or ``marker`` (``[truncated]``,
    ``[unknown]``...: named by its only line)."""
    lines: tuple[Line, ...]
    """Source lines, innermost inlined function first; empty when unsymbolized or left
    for the backend to symbolize."""

    @property
    def name(self) -> str:
        """The innermost function, else ``<file basename>+0x<offset in the file>`` (the
        address in the process for memory that is no file's: JIT, the kernel), else
        ``[unknown]`` (as ``ddprofiler.pprof.stacks`` names frames)."""
        if self.lines:
            first = self.lines[0]
            if first.function or first.system_name:
                return first.function or first.system_name
        return self._fallback_name()

    @property
    def functions(self) -> tuple[str, ...]:
        """Every function at this address, innermost inlined first (``(name,)`` when
        unsymbolized)."""
        if not self.lines:
            return (self._fallback_name(),)
        fallback = ""
        names = []
        for line in self.lines:
            name = line.function or line.system_name
            if not name:
                fallback = fallback or self._fallback_name()
                name = fallback
            names.append(name)
        return tuple(names)

    def _fallback_name(self) -> str:
        if self.mapping is None:
            return "[unknown]"
        m = self.mapping
        return unnamed_frame(m.path, m.start, m.offset, self.address)


def unnamed_frame(path: str, start: int, file_offset: int, address: int) -> str:
    """How an unsymbolized frame is shown: by its offset in the file, as `perf` and
    `addr2line` take it (the same in every process, whatever the load address), or by
    its address when the mapping is no file."""
    if path.startswith("/"):
        return f"{os.path.basename(path)}+0x{address - start + file_offset:x}"
    return f"{path or '[unknown]'}+0x{address:x}"


class Sample(NamedTuple):
    """Where and how often one stack was seen."""

    pid: int
    tid: int
    cpu: int
    stack: int
    """Index into ``Profile.stacks``."""
    # Shadows tuple.count(), which a Sample has no use for: the field is pprof's word.
    count: int  # type: ignore[assignment]
    """Times seen in the period (each one ``1 / frequency`` s of CPU time)."""
    thread_name: str
    process_name: str
    off_cpu_ns: int = 0
    """Off-CPU mode: nanoseconds the thread spent switched out (blocked or preempted) in
    this stack, scaled up by the inverse of the off-CPU rate; 0 for what was seen on CPU."""

    def value(self, value: Value) -> int:
        """``count`` for ``cpu``, ``off_cpu_ns`` for ``off-cpu``."""
        return self.count if value == "cpu" else self.off_cpu_ns


class ProcessInfo(NamedTuple):
    """What /proc said about a sampled process when it was first seen."""

    pid: int
    name: str
    """The process's comm."""
    exe: str
    """The /proc/PID/exe target; "" when unreadable."""
    env: dict[str, str]
    """Only DD_SERVICE, DD_ENV, DD_VERSION, OTEL_SERVICE_NAME, POD_NAME and
    KUBERNETES_POD_NAME."""
    cgroup: str
    """The text of /proc/PID/cgroup."""


class TopEntry(NamedTuple):
    """One function of ``Profile.top``."""

    function: str
    self_count: int
    """Samples whose innermost function this is."""
    total_count: int
    """Samples with this function anywhere in their stack (once per sample, recursion or
    not)."""
    self_fraction: float
    """``self_count / Profile.total`` (0.0 for an empty profile)."""
    total_fraction: float


def _no_stats() -> Stats:
    return Stats({}, specs=())


_TABLES = ("mappings", "frames", "stacks", "samples")


def _tables_of(snapshot: _native.Snapshot) -> dict[str, list]:  # type: ignore[type-arg]
    """The four tables of ``snapshot`` as typed records."""
    mappings = [Mapping._make(m) for m in snapshot.mappings]
    lines: dict[tuple[str, str, str, int], Line] = {}  # one record per distinct line

    def line(raw: tuple[str, str, str, int]) -> Line:
        got = lines.get(raw)
        if got is None:
            got = lines[raw] = Line._make(raw)
        return got

    frames = [Frame(address, mappings[m] if m >= 0 else None, kind, tuple(line(raw) for raw in raw_lines))
              for m, address, kind, raw_lines in snapshot.frames]
    return {"mappings": mappings, "frames": frames, "stacks": [tuple(s) for s in snapshot.stacks],
            "samples": [Sample._make(s) for s in snapshot.samples]}


@dataclass
class Profile:
    """One period of samples with the tables they index.

    ``mappings``, ``frames`` and ``stacks`` are interned: a ``Sample.stack`` indexes
    ``stacks``, whose entries are tuples of indices into ``frames``, leaf first (at most
    600 long; a stack cut by the core ends with a ``[truncated]`` marker frame). A
    ``Frame.mapping`` is one of ``mappings``. ``processes`` is keyed by pid (kernel threads
    have none). ``stats`` are the profiler's cumulative counters when the period closed.
    Times are Unix epoch nanoseconds; ``frequency`` is samples per second per CPU.
    ``off_cpu``: recorded in off-CPU mode, the samples carry ``off_cpu_ns`` (and the pprof
    the ``off-cpu-time`` sample type).
    """

    start_ns: int
    end_ns: int
    frequency: int
    mappings: list[Mapping] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    stacks: list[tuple[int, ...]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    processes: dict[int, ProcessInfo] = field(default_factory=dict)
    stats: Stats = field(default_factory=_no_stats)
    off_cpu: bool = False

    native: Optional[_native.Snapshot] = field(default=None, repr=False, compare=False)
    """The core's snapshot this profile was made from (None when made by hand). The tables
    (``mappings``, ``frames``, ``stacks``, ``samples``) of such a profile are read from it
    on first use; until then it costs no Python object per frame or sample, and
    ``ddprofiler.pprof`` encodes it in the core. Replacing a table (assigning it) makes the
    profile one of hand-made tables: the snapshot is no longer used for it."""

    @classmethod
    def from_native(cls, snapshot: _native.Snapshot,
                    specs: Optional[Sequence[CounterSpec]] = None) -> Profile:
        """The Profile of a ``_native.Snapshot``; ``specs`` as for ``Stats`` (None: the
        extension's registry, loaded when a counter's kind is first asked for). The tables
        are read from the snapshot on first use."""
        profile = cls.__new__(cls)
        profile.start_ns = snapshot.start_ns
        profile.end_ns = snapshot.end_ns
        profile.frequency = snapshot.frequency
        profile.processes = {p[0]: ProcessInfo(p[0], p[1], p[2], dict(p[3]), p[4])
                             for p in snapshot.processes}
        profile.stats = Stats(snapshot.stats, specs)
        profile.off_cpu = snapshot.off_cpu
        profile.native = snapshot
        return profile

    def __getattr__(self, name: str) -> object:
        # Only for attributes not set: the tables of a profile from a snapshot, until read.
        if name in _TABLES:
            native = self.__dict__.get("native")
            if native is not None:
                self.__dict__.update(_tables_of(native))
                return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: object) -> None:
        if name in _TABLES and self.__dict__.get("native") is not None:
            for table, rows in _tables_of(self.__dict__["native"]).items():
                self.__dict__.setdefault(table, rows)
            self.__dict__["native"] = None  # hand-made from now on
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, object]:
        # copy and pickle: the tables as records, not the extension's object.
        for name in _TABLES:
            getattr(self, name)
        return {**self.__dict__, "native": None}

    # ----------------------------------------------------------------- questions

    def stack(self, sample: Sample) -> list[Frame]:
        """The frames of ``sample``, leaf first."""
        return [self.frames[i] for i in self.stacks[sample.stack]]

    @property
    def total(self) -> int:
        """Number of samples (the sum of the counts)."""
        if self.native is not None:
            return self.native.total
        return sum(s.count for s in self.samples)

    @property
    def off_cpu_total_ns(self) -> int:
        """Off-CPU nanoseconds of all samples (0 without off-CPU mode)."""
        if self.native is not None:
            return self.native.off_cpu_total
        return sum(s.off_cpu_ns for s in self.samples)

    def check_value(self, value: str) -> Value:
        """``value`` if this profile has it. Raises ValueError for an unknown value, or
        ``off-cpu`` of a profile recorded without off-CPU mode."""
        for v in VALUES:
            if value == v:
                if v == "off-cpu" and not self.off_cpu:
                    raise ValueError("the profile has no off-CPU time (record it with --off-cpu)")
                return v
        raise ValueError(f"unknown value {value!r}; values: {', '.join(VALUES)}")

    @property
    def duration_s(self) -> float:
        """Length of the period in seconds."""
        return max(0, self.end_ns - self.start_ns) / _NS_PER_S

    def top(self, n: Optional[int] = 10, by: Literal["self", "total"] = "self",
            value: Value = "cpu") -> list[TopEntry]:
        """The ``n`` functions (all when None) with the most ``value`` (the counts are
        nanoseconds for ``off-cpu``), ``by`` self (the
        sample's innermost function; the innermost inlined one where a frame has several)
        or total (anywhere in the stack, counted once per sample); ties by the other count,
        then by name. By self, functions never innermost are left out. Unsymbolized frames
        count as ``<file>+0x<address>``."""
        if by not in ("self", "total"):
            raise ValueError(f"by must be 'self' or 'total', not {by!r}")
        value = self.check_value(value)
        per_stack: dict[int, int] = {}
        for s in self.samples:
            weight = s.value(value)
            if weight > 0:
                per_stack[s.stack] = per_stack.get(s.stack, 0) + weight
        self_counts: dict[str, int] = {}
        total_counts: dict[str, int] = {}
        for stack_index, count in per_stack.items():
            stack = self.stacks[stack_index]
            if not stack:
                continue
            leaf = self.frames[stack[0]].functions[0]
            self_counts[leaf] = self_counts.get(leaf, 0) + count
            seen = {name for i in stack for name in self.frames[i].functions}
            for name in seen:
                total_counts[name] = total_counts.get(name, 0) + count
        grand = sum(per_stack.values())

        def entry(name: str) -> TopEntry:
            s, t = self_counts.get(name, 0), total_counts[name]
            return TopEntry(name, s, t, s / grand if grand else 0.0, t / grand if grand else 0.0)

        names = self_counts if by == "self" else total_counts
        entries = [entry(name) for name in names]
        if by == "self":
            entries.sort(key=lambda e: (-e.self_count, -e.total_count, e.function))
        else:
            entries.sort(key=lambda e: (-e.total_count, -e.self_count, e.function))
        return entries if n is None else entries[:max(0, n)]

    # ----------------------------------------------------------------- parts

    def subset(self, samples: Iterable[Sample]) -> Profile:
        """A Profile of ``samples`` (samples of this profile) alone: only the stacks,
        frames, mappings and processes they use, in this profile's order, renumbered;
        same times, frequency and stats."""
        samples = list(samples)
        stack_ids = sorted({s.stack for s in samples})
        frame_ids = sorted({i for s in stack_ids for i in self.stacks[s]})
        frames = [self.frames[i] for i in frame_ids]
        used = {id(f.mapping) for f in frames if f.mapping is not None}
        mappings = [m for m in self.mappings if id(m) in used]
        new_stack = {old: new for new, old in enumerate(stack_ids)}
        new_frame = {old: new for new, old in enumerate(frame_ids)}
        pids = {s.pid for s in samples}
        return Profile(
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            frequency=self.frequency,
            mappings=mappings,
            frames=frames,
            stacks=[tuple(new_frame[i] for i in self.stacks[s]) for s in stack_ids],
            samples=[s._replace(stack=new_stack[s.stack]) for s in samples],
            processes={pid: info for pid, info in self.processes.items() if pid in pids},
            stats=self.stats,
            off_cpu=self.off_cpu,
        )

    def split(self, key: Callable[[Sample], K]) -> dict[K, Profile]:
        """One ``subset`` per value of ``key(sample)``, in order of first appearance."""
        groups: dict[K, list[Sample]] = {}
        for s in self.samples:
            groups.setdefault(key(s), []).append(s)
        return {k: self.subset(group) for k, group in groups.items()}

    # ----------------------------------------------------------------- output

    def write(self, path: PathLike, format: Optional[str] = None, value: Value = "cpu") -> str:
        """Write the profile to ``path`` (``-``: standard output) in ``format``: pprof
        (gzip-compressed, every value), svg (flame graph), speedscope or collapsed (of
        ``value``); None takes it from the suffix (``ddprofiler.formats``). A file is
        replaced atomically (a reader sees the old file or the new one, never a part).
        Returns the format. Raises ValueError for a format that is unknown or cannot be
        told, or a value the profile does not have; OSError."""
        from ddprofiler import formats

        return formats.write(self, path, format, value=value)
