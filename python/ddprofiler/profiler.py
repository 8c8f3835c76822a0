"""Sampling from Python: ``Profiler`` (start, snapshot, stop) and ``record`` (one go).

Input: which processes (``pids``, default all), the sampling rate (Hz per CPU), the user
stack bytes copied per sample, and where frames get their names (``symbolize``: ``host``
here, ``backend`` leaves native frames to Datadog's backend, ``both``), and whether the
Python frames of CPython processes are read (``python``, default on). Output:
``Profile`` objects, one per ``snapshot()``, and ``Stats`` (the counters) at any time.

``Profiler`` wraps the Rust sampler ``ddprofiler._native.Profiler``; the extension is
imported when a profiler starts, never when ``ddprofiler`` is imported (so that the CLI's
``--help`` and flag errors work without it), and a missing one is a
``NativeExtensionError`` saying how to build it. Every method may be called from any
thread. Non-goals: tagging, splitting and exporting (``ddprofiler.runner``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from importlib import import_module
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Literal, Optional

from ddprofiler.errors import NativeExtensionError, ProfilerError
from ddprofiler.profile import Profile
from ddprofiler.stats import Stats

if TYPE_CHECKING:
    from ddprofiler import _native  # noqa: F401 - also imported at run time, when starting

__all__ = ["Profiler", "SymbolizeMode", "load_native", "record"]

log = logging.getLogger(__name__)

SymbolizeMode = Literal["host", "backend", "both"]

_PROGRESS_INTERVAL_S = 0.5  # how often record() reports progress
_POLL_S = 0.1  # how quickly record() notices should_stop()


def load_native() -> ModuleType:
    """Import and return ``ddprofiler._native``; raise NativeExtensionError if it is missing."""
    try:
        return import_module("ddprofiler._native")
    except ImportError as e:
        raise NativeExtensionError(
            f"the native extension ddprofiler._native cannot be imported ({e}); build and "
            "install it from the source tree with `pip install .` (or `make`)"
        ) from e


def _check_arguments(pids: Optional[tuple[int, ...]], frequency: int, stack_bytes: int, symbolize: str) -> None:
    """The same checks as the CLI's flags, with the same words (ValueError)."""
    def integer(name: str, v: object) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an integer, not {v!r}")
        return v

    if not 1 <= integer("frequency", frequency) <= 10_000:
        raise ValueError(f"frequency {frequency} is outside 1..10000 (samples per second per CPU)")
    if not 1024 <= integer("stack_bytes", stack_bytes) <= 65536 or stack_bytes % 8:
        raise ValueError(f"stack_bytes {stack_bytes} must be a multiple of 8 from 1024 to 65536")
    if symbolize not in ("host", "backend", "both"):
        raise ValueError(f"symbolize {symbolize!r} is not one of 'host', 'backend', 'both'")
    for pid in pids or ():
        if integer("a pid", pid) <= 0:
            raise ValueError(f"pid {pid} is not a process id (a positive integer)")
        if not os.path.exists(f"/proc/{pid}"):
            raise ValueError(f"no process with pid {pid}")


OFF_CPU_RATE_TARGETED = 1.0
"""Off-CPU mode's default rate with a pid filter: every switch-out of the targets (a few
processes switch out a few thousand times a second at most; the per-CPU cap bounds the rest)."""
OFF_CPU_RATE_SYSTEM = 0.1
"""... system-wide: a tenth (a busy host switches tens of thousands of times a second; each
recorded switch-out costs a stack copy, about 12 us measured here)."""
OFF_CPU_CAP = 250
"""Off-CPU stacks recorded a second on each CPU, at most: about 0.3% of a CPU in the kernel
at 12 us each, and the drain thread unwinds each one as a CPU sample; what the cap drops
is counted (``offcpu_capped``)."""


def off_cpu_rate_for(pids: Optional[Iterable[int]], rate: Optional[float]) -> float:
    """``rate``, else the default for a profiler of ``pids`` (targeted) or of all processes.
    Raises ValueError for a rate outside (0, 1]."""
    if rate is None:
        return OFF_CPU_RATE_TARGETED if pids else OFF_CPU_RATE_SYSTEM
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ValueError(f"off_cpu_rate {rate!r} is not a fraction in (0, 1]")
    return float(rate)


class Profiler:
    """A CPU profiler of every online CPU: BPF sampling, unwinding, symbolization.

    ``pids``: sample only these processes (None or empty: all; each must exist);
    ``follow_children``: and the processes running under them at the start, and those they
    start (and theirs), from their first instruction, whatever they exec. ``idle``: keep the samples of the idle task (pid 0,
    the kernel's ``swapper/N``), dropped by default. ``frequency``: samples per second on each CPU, 1 to 10000. ``stack_bytes``: bytes of
    user stack copied per sample (a multiple of 8, 1024 to 65536). ``symbolize``: see the
    module docstring. ``memory_budget``: bytes of resident memory to keep under (at least
    64 MiB, default 128 MiB): it sizes the symbol caches, and a period that ends over 7/8 of
    it drops every cache that can be rebuilt (``memory_sheds``; see docs/operations.md).
    ``off_cpu``: also the time threads spend switched out (blocked or
    preempted), by the stack they switched out in: each profile's ``Sample.off_cpu_ns``,
    from the sched_switch tracepoint; ``off_cpu_rate`` is the fraction of switch-outs
    recorded (default 1.0 with ``pids``, 0.1 without; the time is scaled up by its inverse),
    ``off_cpu_cap`` the most stacks recorded a second on each CPU. A bad argument raises
    ``ValueError`` here, before anything starts.

    Use as a context manager (``with Profiler() as p:`` starts, leaving the block closes),
    or call ``start()`` and ``close()``. A profiler starts once: after ``close()``, make a
    new one. ``start`` raises ``NativeExtensionError``,
    ``PrivilegeError`` (the message says which privilege and how to get it),
    ``BpfUnavailableError``, ``ValueError`` for a bad argument, and ``ProfilerError`` when
    the profiler was started before.
    """

    def __init__(
        self,
        pids: Optional[Iterable[int]] = None,
        frequency: int = 99,
        stack_bytes: int = 16384,
        *,
        symbolize: SymbolizeMode = "host",
        python: bool = True,
        follow_children: bool = False,
        idle: bool = False,
        memory_budget: int = 128 << 20,
        off_cpu: bool = False,
        off_cpu_rate: Optional[float] = None,
        off_cpu_cap: int = OFF_CPU_CAP,
    ) -> None:
        self.pids: Optional[tuple[int, ...]] = tuple(pids) if pids else None
        _check_arguments(self.pids, frequency, stack_bytes, symbolize)
        self.off_cpu_rate: Optional[float] = off_cpu_rate_for(self.pids, off_cpu_rate) if off_cpu else None
        if isinstance(off_cpu_cap, bool) or not isinstance(off_cpu_cap, int) or not 1 <= off_cpu_cap <= 1_000_000:
            raise ValueError(f"off_cpu_cap {off_cpu_cap!r} is outside 1..1000000 (stacks a second per CPU)")
        self.off_cpu_cap = off_cpu_cap
        if follow_children and not self.pids:
            raise ValueError("follow_children needs pids to follow")
        self.python = python
        self.follow_children = follow_children
        if memory_budget < 64 << 20:
            raise ValueError(f"memory_budget {memory_budget} is below 64 MiB")
        self.idle = idle
        self.memory_budget = memory_budget
        self.frequency = frequency
        self.stack_bytes = stack_bytes
        self.symbolize: SymbolizeMode = symbolize
        self._native: Optional[_native.Profiler] = None
        self._closed = False
        # Held only around the start/close transitions, never by stats() or snapshot():
        # a waiter releases the GIL, so no call can freeze the interpreter.
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self._native else "new"
        return (f"Profiler(pids={list(self.pids) if self.pids else None}, frequency={self.frequency}, "
                f"stack_bytes={self.stack_bytes}, symbolize={self.symbolize!r}, python={self.python}, "
                f"follow_children={self.follow_children}"
                + (f", off_cpu_rate={self.off_cpu_rate}" if self.off_cpu_rate is not None else "")
                + f") [{state}]")

    def start(self) -> Profiler:
        """Load and attach the sampler; samples are counted from now on. Returns self."""
        with self._lifecycle:
            if self._closed or self._native is not None:
                raise ProfilerError("this profiler was started before: make a new one")
            load_native()  # a missing extension: NativeExtensionError, saying how to build it
            from ddprofiler import _native

            pids = list(self.pids) if self.pids else None
            if pids and self.follow_children:
                # The fork tracepoint follows what the targets start from now on; what they
                # started before (a gunicorn master's workers) is added here.
                from ddprofiler.launch import descendants

                pids += sorted(descendants(pids))
            profiler = _native.Profiler(
                frequency=self.frequency, pids=pids,
                stack_bytes=self.stack_bytes, symbolize=self.symbolize, python=self.python,
                follow_children=self.follow_children, idle=self.idle,
                memory_budget=self.memory_budget,
                off_cpu_rate=self.off_cpu_rate, off_cpu_cap=self.off_cpu_cap)
            try:
                profiler.start()
            except BaseException:
                profiler.close()  # end whatever threads a half-done start left
                raise
            self._native = profiler
        return self

    def stop(self) -> None:
        """Stop sampling after a last drain; ``snapshot`` still hands over what was
        collected, until ``close``. No-op before start and after close."""
        native = self._native
        if native is not None:
            native.stop()

    def close(self) -> None:
        """Stop, then end the profiler's threads. Idempotent."""
        with self._lifecycle:
            self._closed = True
            native = self._native
        if native is not None:
            native.close()

    def stats(self) -> Stats:
        """The counters now: cumulative since start, gauges at their current level; every
        counter at 0 before start."""
        native = self._native
        if native is None:
            return Stats.zeros()
        return Stats(native.stats())

    def snapshot(self, reset: bool = True) -> Profile:
        """The samples since the start or the last reset, symbolized (as ``symbolize``
        says); with ``reset``, a new period starts at the same instant (no sample is lost
        or counted twice). Can take seconds (symbolization). Raises ProfilerError before
        start and after close."""
        native = self._native
        if native is None:
            raise ProfilerError("snapshot() of a profiler that was not started")
        return Profile.from_native(native.snapshot(reset))

    def __enter__(self) -> Profiler:
        """Starts the profiler, unless ``start()`` was called already (``with
        Profiler().start() as p:`` works too)."""
        if self._native is not None and not self._closed:
            return self
        return self.start()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def record(
    duration: float,
    *,
    pids: Optional[Iterable[int]] = None,
    frequency: int = 99,
    stack_bytes: int = 16384,
    symbolize: SymbolizeMode = "host",
    python: bool = True,
    follow_children: bool = False,
    idle: bool = False,
    off_cpu: bool = False,
    off_cpu_rate: Optional[float] = None,
    off_cpu_cap: int = OFF_CPU_CAP,
    should_stop: Optional[Callable[[], bool]] = None,
    on_progress: Optional[Callable[[float, Stats], None]] = None,
    on_start: Optional[Callable[[], None]] = None,
) -> Profile:
    """Sample all processes (or ``pids``, and with ``follow_children`` the processes they
    start; ``idle``: and the idle task; ``off_cpu*``: as ``Profiler``) for ``duration`` seconds
    (``math.inf``: until stopped); return the Profile.

    Stops early when ``should_stop()`` turns true (checked every 0.1 s), and when every one
    of ``pids`` has exited.
    ``on_progress(elapsed_s, stats)`` is called about twice a second with the running
    counters; ``on_start()`` once, as soon as sampling has started (to let a held process
    go, for one). The profile's ``stats`` are the final counters (taken after sampling
    stopped). Raises what ``Profiler.start`` raises, before sampling starts.
    """
    targets = tuple(pids) if pids else ()
    with Profiler(targets, frequency, stack_bytes, symbolize=symbolize, python=python,
                  follow_children=follow_children, idle=idle, off_cpu=off_cpu, off_cpu_rate=off_cpu_rate,
                  off_cpu_cap=off_cpu_cap) as profiler:
        if on_start is not None:
            on_start()
        started = time.monotonic()
        next_progress = started
        while True:
            now = time.monotonic()
            if now - started >= duration or (should_stop is not None and should_stop()):
                break
            if targets and not any(_alive(pid) for pid in targets):
                log.info("every target process has exited: stopping")
                break
            if on_progress is not None and now >= next_progress:
                on_progress(now - started, profiler.stats())
                next_progress = now + _PROGRESS_INTERVAL_S
            time.sleep(min(_POLL_S, max(0.0, started + duration - now)))
        profiler.stop()
        return profiler.snapshot()
