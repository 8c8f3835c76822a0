"""Typed stub of the private Rust extension ``ddprofiler._native`` (``rust/ddprof-py``).

Users import from ``ddprofiler`` (``ddprofiler.Profiler``, ``ddprofiler.Profile``,
``ddprofiler.symbols``), never from here. Checked against the built extension by
``stubtest`` (``make lint``).

A snapshot keeps its interned tables in Rust: the continuous profiler encodes its pprof
profiles there (``Snapshot.encode_pprofs``), and the tables cross as plain tuples only when
asked for (``ddprofiler.profile.Profile`` asks on first use), built on each access. Every error is raised as a class of ``ddprofiler.errors`` (or
``ValueError`` for a bad argument, ``OSError`` for I/O), converted in one place in the
binding. Every call that can block releases the GIL.
"""
from typing import Literal, Optional, Sequence, final

from ddprofiler.profile import FrameKind as _FrameKind
from ddprofiler.profiler import SymbolizeMode as _SymbolizeMode
from ddprofiler.stats import CounterKind as _CounterKind

__all__ = [
    "__version__",
    "SYMBOL_SOURCES",
    "Profiler",
    "Snapshot",
    "Binary",
    "BinaryInfo",
    "DebugFileStats",
    "counter_specs",
    "flamegraph_svg",
    "inspect",
    "symbolize_file",
]

__version__: str
SYMBOL_SOURCES: tuple[str, ...]
"""Symbol sources as the backend ranks them, worst first: none, dynamic_symbol_table,
symbol_table, gopclntab, debug_info."""

# (function, system_name, file, line): system_name is "" when the same as function; file
# "" and line 0 when unknown.
_RawLine = tuple[str, str, str, int]
# (start, limit, offset, path, file_id, is_kernel, binary): addresses in the process; the
# file offset mapped at start; the path as the process names it ("[vdso]", "[anon]",
# "[kernel.kallsyms]"); the id the backend knows the file by (GNU build id, else Go build id,
# else the contract's file hash; "" when unknown); the open file, for symbol upload.
_RawMapping = tuple[int, int, int, str, str, bool, Optional["Binary"]]
# (mapping index or -1, address in the process, kind, lines innermost inlined first; empty
# when unsymbolized or left for the backend)
_RawFrame = tuple[int, int, _FrameKind, list[_RawLine]]
# (pid, tid, cpu, stack index, count, thread_name, process_name, off_cpu_ns): off_cpu_ns is
# the time switched out in off-CPU mode (0 for a CPU sample, and without it)
_RawSample = tuple[int, int, int, int, int, str, str, int]
# (pprof, samples, backend_frames): the serialized *uncompressed* pprof Profile, the sum of
# its sample counts, whether some native frame is left for the backend to name (no lines, a
# file with an id).
_Encoded = tuple[bytes, int, bool]
# (pid, name, exe, env, cgroup): env keeps only DD_SERVICE, DD_ENV, DD_VERSION,
# OTEL_SERVICE_NAME, POD_NAME, KUBERNETES_POD_NAME; cgroup is /proc/PID/cgroup's text.
_RawProcess = tuple[int, str, str, dict[str, str], str]

def counter_specs() -> list[tuple[str, _CounterKind, str]]:
    """Every counter of the registry (rust/ddprof-core/src/counters.rs), in its order:
    (name, kind, one line of help)."""

@final
class Snapshot:
    """One closed period of the aggregate, symbolized (or left for the backend)."""
    @property
    def start_ns(self) -> int:
        """Wall clock (Unix epoch, ns) at which the period started."""
    @property
    def end_ns(self) -> int: ...
    @property
    def frequency(self) -> int:
        """Sampling rate, Hz per CPU."""
    @property
    def total(self) -> int:
        """Sum of the sample counts."""
    @property
    def off_cpu(self) -> bool:
        """Off-CPU mode was on: the samples carry off-CPU time, the pprof its sample type."""
    @property
    def off_cpu_total(self) -> int:
        """Sum of the samples' off-CPU nanoseconds."""
    @property
    def mappings(self) -> list[_RawMapping]:
        """The tables (mappings, frames, stacks, samples) are built on each access."""
    @property
    def frames(self) -> list[_RawFrame]: ...
    @property
    def stacks(self) -> list[tuple[int, ...]]:
        """Frame indices, leaf first; at most the depth cap, a cut one ends with [truncated]."""
    @property
    def samples(self) -> list[_RawSample]: ...
    @property
    def processes(self) -> list[_RawProcess]:
        """One per sampled pid whose /proc could be read; kernel threads have none."""
    @property
    def stats(self) -> dict[str, int]:
        """Cumulative counters since start, when the period closed (registry order)."""
    def sampled_pids(self) -> list[int]:
        """The pids of the samples with a count, each once, in order of first appearance."""
    def sampled_mappings(self) -> list[int]:
        """Indices into ``mappings`` of those the stacks of samples with a count touch."""
    def encode_pprofs(self, group_of: dict[int, int], groups: int,
                      labels: Optional[dict[int, list[tuple[str, str]]]] = None) -> list[_Encoded]:
        """One pprof per group: ``group_of`` gives every sampled pid its group in
        ``range(groups)``; ``labels`` adds (key, value) string labels to the samples of each
        pid it names, in order. The contract is the encoder's
        (``rust/ddprof-core/src/pprof/mod.rs``). Releases the GIL. Raises ValueError for a
        sampled pid without a group or a frequency of 0."""
    @staticmethod
    def from_tables(start_ns: int, end_ns: int, frequency: int,
                    mappings: list[tuple[int, int, int, str, str, bool]], frames: list[_RawFrame],
                    stacks: list[list[int]], samples: list[_RawSample], off_cpu: bool = False) -> Snapshot:
        """A snapshot of hand-made tables (shaped as a snapshot's, the mappings without
        their binary): a ``Profile`` built in Python is encoded by the same encoders;
        ``off_cpu``: its profiles carry the off-CPU sample type.
        Raises ValueError for an index out of range or an unknown frame kind."""
    def encode_otlp(self, group_of: dict[int, int], resources: list[list[tuple[str, str]]],
                    version: str) -> tuple[bytes, list[int]]:
        """One OTLP ``ExportProfilesServiceRequest`` (profiles ``v1development``) of the
        period: group ``g`` is a profile under a resource of ``resources[g]``'s
        attributes; the sample total of each. The contract is the encoder's
        (``rust/ddprof-core/src/otlp/mod.rs``). Releases the GIL. Raises ValueError as
        ``encode_pprofs``."""

def flamegraph_svg(
    lines: list[str],
    title: str,
    subtitle: Optional[str] = None,
    count_name: str = "samples",
    colors: Optional[dict[str, str]] = None,
    base: Optional[list[str]] = None,
) -> str:
    """The flame graph SVG (inferno's: search, zoom, tooltips) of collapsed stacks
    (``root;...;leaf COUNT``); names annotated ``_[k]`` (kernel), ``_[j]`` (JIT), ``_[i]``
    (inlined) are coloured so (the annotation is not drawn), ``colors`` gives ``#rrggbb``
    by name for others. With ``base`` (collapsed stacks too), a differential graph of
    ``lines`` against it: red grew, blue shrank. Raises ValueError for a bad colour,
    ProfilerError when inferno refuses the input."""

@final
class Profiler:
    """The BPF sampler on every online CPU, with its drain and symbolizer threads.

    Thread-safe: every method may be called from any thread at any time; no lock is held
    while the GIL is released. ``start`` raises ``ddprofiler.errors.PrivilegeError``
    (the message says which privilege and how to get it), ``BpfUnavailableError``, or
    ``ValueError`` for a bad argument; ``ProfilerError`` when called twice.
    """
    def __new__(
        cls,
        frequency: int = 99,
        pids: Optional[Sequence[int]] = None,
        stack_bytes: int = 16384,
        symbolize: _SymbolizeMode = "host",
        python: bool = True,
        follow_children: bool = False,
        idle: bool = False,
        memory_budget: int = 134217728,
        off_cpu_rate: Optional[float] = None,
        off_cpu_cap: int = 250,
    ) -> Profiler:
        """``memory_budget``: bytes of resident memory to keep under (at least 64 MiB; see
        docs/operations.md): it sizes the symbol caches, and a period that ends over 7/8 of
        it drops every cache that can be rebuilt (counted in ``memory_sheds``).
        ``off_cpu_rate``: off-CPU mode on, recording this fraction (0, 1] of the
        switch-outs of the targeted threads, at most ``off_cpu_cap`` stacks a second on each
        CPU (None: off)."""
    def start(self) -> None: ...
    def stop(self) -> None:
        """Stop sampling and detach the BPF program after a last drain; snapshots of what
        was collected stay available until close(). No-op before start or after close."""
    def close(self) -> None:
        """Stop, then end the profiler's threads and wait for them. Idempotent."""
    def stats(self) -> dict[str, int]:
        """The counters now (lock-free); zeros before start."""
    def snapshot(self, reset: bool = True) -> Snapshot:
        """Symbolize and hand over the aggregate so far; with reset, start a new period at
        the same instant. Raises ProfilerError before start or after close."""

@final
class DebugFileStats:
    @property
    def source(self) -> str:
        """The file the symbols were taken from (the binary or its debug file)."""
    @property
    def input_bytes(self) -> int: ...
    @property
    def output_bytes(self) -> int: ...
    @property
    def sections_compressed(self) -> int:
        """.debug_* sections zlib-compressed here."""
    @property
    def symtab_entries(self) -> int: ...
    @property
    def gopclntab_bytes(self) -> int: ...

@final
class BinaryInfo:
    """What an ELF binary offers for symbolication (datadog-contracts.md, "Symbol upload").

    Holds the binary (and its separate debug file, when found) open, so that
    ``write_debug_file`` works after the path is gone (a deleted binary, an exited process).
    """
    @property
    def path(self) -> str: ...
    @property
    def arch(self) -> str:
        """x86_64, aarch64, or em_<e_machine>."""
    @property
    def gnu_build_id(self) -> Optional[str]: ...
    @property
    def go_build_id(self) -> Optional[str]: ...
    @property
    def file_hash(self) -> str:
        """SHA-256 over the first and last 4096 bytes and the size (8 bytes big-endian),
        first 16 bytes as 32 hex characters."""
    @property
    def symbol_source(self) -> str:
        """The best of own_symbol_source and debug_file_symbol_source: none <
        dynamic_symbol_table < symbol_table < gopclntab < debug_info."""
    @property
    def own_symbol_source(self) -> str: ...
    @property
    def file_size(self) -> int: ...
    @property
    def debug_sections_size(self) -> int:
        """Bytes of .debug_*/.zdebug_* sections, the debug file's included."""
    @property
    def symtab_entries(self) -> int: ...
    @property
    def debug_file(self) -> Optional[str]: ...
    @property
    def debug_file_via(self) -> Optional[Literal["build-id", "debuglink"]]: ...
    @property
    def debug_file_symbol_source(self) -> Optional[str]: ...
    @property
    def debug_file_symtab_entries(self) -> int: ...
    @property
    def build_ids(self) -> list[str]:
        """Ids the backend may know this binary by: file hash, GNU and Go build ids."""
    def to_dict(self) -> dict[str, object]: ...
    def write_debug_file(self, out: str) -> DebugFileStats:
        """Write the debug-only ELF uploaded as ``elf_symbol_file`` to ``out``: from the debug
        file when it ranks better than the binary, Go's .gopclntab from the binary. Verified
        after writing; raises DebugFileError (out removed) or OSError."""

@final
class Binary:
    """An ELF file the profiler holds open (see Snapshot.mappings)."""
    @property
    def path(self) -> str:
        """The path as the process mapped it."""
    @property
    def file_id(self) -> str: ...
    def inspect(self) -> BinaryInfo:
        """Inspect the open file; its debug file is looked for inside the root of the
        process that mapped it, then on the host. Raises InvalidBinaryError."""

def inspect(path: str, root: str = "/") -> BinaryInfo:
    """Inspect the ELF file at ``path``; separate debug files are looked for inside
    ``root`` (e.g. /proc/PID/root). Raises InvalidBinaryError or OSError."""

def symbolize_file(path: str, addresses: Sequence[int]) -> list[list[_RawLine]]:
    """Lines of each address of an ELF file (SVMAs, as addr2line takes them), innermost
    inlined function first; empty where nothing resolves. Raises OSError."""
