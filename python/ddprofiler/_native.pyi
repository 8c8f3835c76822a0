"""Typed stub of the private Rust extension. Users import from ``ddprofiler``, not from here.

The snapshot is the only data that crosses into Python: interned tables of an aggregate,
never single samples.
"""
from typing import Optional, Sequence, TypedDict

__version__: str

class BpfUnavailableError(RuntimeError):
    """The kernel lacks something the sampler needs (BTF, ring buffer, a helper...)."""

class Mapping(TypedDict):
    start: int          # first address of the mapping in the process
    limit: int          # one past its last address
    offset: int         # file offset mapped at `start`
    path: str           # the file as the process names it, or "[kernel.kallsyms]", "[vdso]", "[anon]"
    build_id: str       # GNU build id as hex, "" when unknown
    is_kernel: bool

class Line(TypedDict):
    function: str       # demangled name
    system_name: str    # mangled (linkage) name, "" when the same as function
    file: str           # source file, "" when unknown
    line: int           # 0 when unknown

class Location(TypedDict):
    mapping: int        # index into Snapshot.mappings, -1 for marker frames
    address: int        # address in the process (kernel address for kernel frames)
    lines: list[Line]   # innermost inlined first; empty when unsymbolized

class Sample(TypedDict):
    pid: int
    tid: int
    cpu: int
    stack: int          # index into Snapshot.stacks
    count: int
    thread_name: str
    process_name: str

class ProcessInfo(TypedDict):
    pid: int
    name: str           # the process's comm
    exe: str            # /proc/PID/exe target, "" when unreadable
    env: dict[str, str] # only DD_SERVICE, DD_ENV, DD_VERSION, OTEL_SERVICE_NAME, POD_NAME, KUBERNETES_POD_NAME
    cgroup: str         # /proc/PID/cgroup as read when first sampled

class Snapshot(TypedDict):
    start_ns: int       # wall clock (Unix epoch ns) of the aggregate's start
    end_ns: int
    frequency: int
    mappings: list[Mapping]
    locations: list[Location]
    stacks: list[list[int]]   # location indices, leaf first
    samples: list[Sample]
    processes: list[ProcessInfo]  # one per sampled pid whose /proc could be read; kernel threads have none
    stats: dict[str, int]     # cumulative counters since start (not reset by snapshot)

def symbolize_file(path: str, addresses: Sequence[int]) -> list[list[Line]]:
    """Lines of each address of an ELF file, innermost inlined function first; addresses
    as the file states them (what addr2line takes). Raises OSError for an unreadable file."""

class DebugFileStats(TypedDict):
    input_bytes: int          # size of src
    output_bytes: int         # size of the debug file written
    sections_compressed: int  # .debug_* sections zlib-compressed here
    symtab_entries: int       # entries of .symtab (0 when src has none)
    gopclntab_bytes: int      # bytes of Go's .gopclntab kept (0 when none)

def make_debug_file(src: str, out: str, gopclntab_from: Optional[str] = None) -> DebugFileStats:
    """Write the debug-only ELF of ELF64 little-endian ``src`` to ``out``: symbols, notes,
    debug sections (zlib-compressed) and Go's ``.gopclntab`` (taken from ``gopclntab_from``
    when ``src`` is a debug file without its bytes), no code; checked after writing.
    Raises ValueError for a file that is not a readable/supported ELF, OSError for I/O,
    RuntimeError when the result does not verify; ``out`` is removed on any error."""

class Profiler:
    """An eBPF sampler on every online CPU with its drain thread.

    Raises PermissionError (message says which privilege) or BpfUnavailableError on start.
    """
    def __init__(
        self,
        frequency: int = 99,
        pids: Optional[Sequence[int]] = None,
        stack_bytes: int = 16384,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def stats(self) -> dict[str, int]:
        """Cumulative counters: samples, lost, processes, how unwinds ended (unwind_complete
        is a success; every other unwind_* a failure reason), *_errors, *_failed."""
    def snapshot(self, reset: bool = True) -> Snapshot:
        """Symbolize and hand over the aggregate so far; with reset, start a new one."""
