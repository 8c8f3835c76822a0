"""ddprofiler: a continuous eBPF CPU profiler for Linux hosts and containers.

Public API (import from ``ddprofiler`` only):

- ``Profiler(pids=None, frequency=99, stack_bytes=16384, *, symbolize="host")``: a context
  manager; ``snapshot()`` returns a ``Profile``, ``stats()`` the counters as ``Stats``;
- ``record(duration, *, pids=..., ...) -> Profile``: sample for a while, in one call;
- ``Profile`` and its records ``Mapping``, ``Frame``, ``Line``, ``Sample``,
  ``ProcessInfo``; ``TopEntry`` (``Profile.top``); ``Stats``;
- ``errors`` and its classes: ``ProfilerError``, ``NativeExtensionError``,
  ``PrivilegeError``, ``BpfUnavailableError``, ``InvalidBinaryError``, ``DebugFileError``;
- ``read_pprof``, ``stacks``, ``Stack``: read pprof files back (``ddprofiler.pprof``,
  imported on first use: protobuf is loaded only then);
- ``__version__``.

Importing this package never imports the Rust extension (``ddprofiler._native``, loaded
when a profiler starts) nor protobuf, so ``python -m ddprofiler --help`` and flag errors
work without them.
"""
from __future__ import annotations

from ddprofiler import _startup

_startup.guard()  # first: a Ctrl-C while `ddprofiler` loads is no traceback

from importlib import import_module  # noqa: E402
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ddprofiler import errors
from ddprofiler.errors import (BpfUnavailableError, DebugFileError, InvalidBinaryError,
                               NativeExtensionError, PrivilegeError, ProfilerError)
from ddprofiler.profile import Frame, Line, Mapping, ProcessInfo, Profile, Sample, TopEntry
from ddprofiler.profiler import Profiler, record
from ddprofiler.profiler import load_native as load_native  # for ddprofiler.symbols; not public
from ddprofiler.stats import Stats

if TYPE_CHECKING:
    from ddprofiler.pprof import Stack, read_pprof, stacks

try:
    __version__ = version("ddprofiler")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "BpfUnavailableError",
    "DebugFileError",
    "Frame",
    "InvalidBinaryError",
    "Line",
    "Mapping",
    "NativeExtensionError",
    "PrivilegeError",
    "ProcessInfo",
    "Profile",
    "Profiler",
    "ProfilerError",
    "Sample",
    "Stack",
    "Stats",
    "TopEntry",
    "__version__",
    "errors",
    "read_pprof",
    "record",
    "stacks",
]

_PPROF_EXPORTS = ("Stack", "read_pprof", "stacks")


def __getattr__(name: str) -> Any:
    if name in _PPROF_EXPORTS:
        return getattr(import_module("ddprofiler.pprof"), name)
    raise AttributeError(f"module 'ddprofiler' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names, the lazy ones included; not the helpers imported above.
    return sorted(__all__)
