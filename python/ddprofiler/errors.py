"""The exceptions of ddprofiler's public API.

Every failure that the profiler itself reports is a ``ProfilerError``; each class also
derives from the built-in exception a caller would otherwise catch (``PermissionError``
for missing privileges, ``ImportError`` for a missing extension...), so that code written
against the built-ins keeps working. The Rust binding (``ddprofiler._native``) raises these
classes: it imports this module and instantiates them by name, so the five names it uses
(``ProfilerError``, ``PrivilegeError``, ``BpfUnavailableError``, ``InvalidBinaryError``,
``DebugFileError``) are a contract. Bad arguments are plain ``ValueError``/``TypeError``,
I/O failures plain ``OSError``. Non-goals: per-sample failures, which are counters
(``ddprofiler.Stats``), never exceptions.
"""
from __future__ import annotations

__all__ = [
    "BpfUnavailableError",
    "DebugFileError",
    "InvalidBinaryError",
    "NativeExtensionError",
    "PrivilegeError",
    "ProfilerError",
]


class ProfilerError(Exception):
    """Base class of ddprofiler's errors; raised as such for a misuse of a profiler's
    lifecycle (``start`` twice, ``snapshot`` before ``start`` or after ``close``) and for
    an internal failure of the sampler's threads."""


class NativeExtensionError(ProfilerError, ImportError):
    """The Rust extension ``ddprofiler._native`` cannot be imported (not built, built for
    another Python, or too old for this package). The message says how to build it.
    Raised when a profiler starts, never by ``import ddprofiler``."""


class PrivilegeError(ProfilerError, PermissionError):
    """The process lacks a privilege that sampling needs (``CAP_BPF``, ``CAP_PERFMON``,
    ``CAP_SYS_ADMIN`` on old kernels, a ``perf_event_paranoid`` level...). Raised by
    ``Profiler.start``; the message names what is missing and how to get it (run as
    root, ambient capabilities of a dedicated user, ``--cap-add`` in a container)."""


class BpfUnavailableError(ProfilerError, RuntimeError):
    """The kernel lacks something the sampler needs (BTF, the BPF ring buffer, a helper,
    the perf cpu-clock event), or refused to load or attach the BPF program. Raised by
    ``Profiler.start``; the message says which."""


class InvalidBinaryError(ProfilerError, ValueError):
    """A file given for symbol inspection is not an ELF binary this profiler can read
    (truncated, not ELF, an unsupported class or byte order). Raised by
    ``ddprofiler.symbols.inspect`` and ``Binary.inspect``."""


class DebugFileError(ProfilerError, RuntimeError):
    """The debug-only ELF written for symbol upload did not verify after writing (the
    output file is removed). Raised by ``BinaryInfo.write_debug_file``."""
