"""ddprofiler: a continuous eBPF CPU profiler for Linux hosts and containers.

Public API:

- ``__version__``;
- ``record(duration, pids=..., frequency=..., stack_bytes=...)``: sample for a while and
  return the aggregated snapshot (a ``_native.Snapshot`` dict);
- ``build_profile``, ``write_pprof``, ``read_pprof``, ``stacks``, ``Stack``: pprof
  encoding and decoding (``ddprofiler.pprof``, imported on first use);
- ``load_native()``: the Rust extension, or ``NativeExtensionError`` saying how to build it.

Importing this package never imports the extension, so ``python -m ddprofiler --help`` and
flag errors work without it.
"""
from __future__ import annotations

import time
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable, Mapping, Optional, Sequence

try:
    __version__ = version("ddprofiler")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "NativeExtensionError",
    "Stack",
    "__version__",
    "build_profile",
    "load_native",
    "read_pprof",
    "record",
    "stacks",
    "write_pprof",
]

_PPROF_EXPORTS = ("Stack", "build_profile", "read_pprof", "stacks", "write_pprof")
_STATUS_INTERVAL_S = 0.5  # how often record() reports progress
_POLL_S = 0.1  # how quickly record() notices should_stop()


class NativeExtensionError(ImportError):
    """The Rust extension ``ddprofiler._native`` cannot be imported."""


def load_native():
    """Import and return ``ddprofiler._native``; raise NativeExtensionError if it is missing."""
    try:
        return import_module("ddprofiler._native")
    except ImportError as e:
        raise NativeExtensionError(
            f"the native extension ddprofiler._native cannot be imported ({e}); build and "
            "install it from the source tree with `pip install .` (or `make`)"
        ) from e


def record(
    duration: float,
    *,
    pids: Optional[Sequence[int]] = None,
    frequency: int = 99,
    stack_bytes: int = 16384,
    should_stop: Optional[Callable[[], bool]] = None,
    on_progress: Optional[Callable[[float, Mapping[str, int]], None]] = None,
) -> dict:
    """Sample all processes (or ``pids``) for ``duration`` seconds and return the snapshot.

    Stops early when ``should_stop()`` turns true (checked every 0.1 s).
    ``on_progress(elapsed_s, stats)`` is called about twice a second with the running
    counters. The snapshot's ``stats`` are its own merged with the profiler's final running
    counters (those win). Raises NativeExtensionError, PermissionError, or
    ``_native.BpfUnavailableError`` before sampling starts.
    """
    native = load_native()
    profiler = native.Profiler(
        frequency=frequency, pids=list(pids) if pids else None, stack_bytes=stack_bytes
    )
    profiler.start()
    started = time.monotonic()
    next_progress = started
    try:
        while True:
            now = time.monotonic()
            if now - started >= duration or (should_stop is not None and should_stop()):
                break
            if on_progress is not None and now >= next_progress:
                on_progress(now - started, profiler.stats())
                next_progress = now + _STATUS_INTERVAL_S
            time.sleep(min(_POLL_S, max(0.0, started + duration - now)))
    finally:
        profiler.stop()
    snapshot = profiler.snapshot()
    snapshot["stats"] = {**snapshot.get("stats", {}), **profiler.stats()}
    return snapshot


def __getattr__(name: str) -> Any:
    if name in _PPROF_EXPORTS:
        return getattr(import_module("ddprofiler.pprof"), name)
    raise AttributeError(f"module 'ddprofiler' has no attribute {name!r}")
