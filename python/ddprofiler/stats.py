"""The profiler's counters as a typed, read-only mapping: ``Stats``.

Input: counter values by name (``_native.Profiler.stats()`` or ``Snapshot.stats``, in the
order of the core's registry) and the registry's specs, ``(name, kind, help)`` per counter
(``_native.counter_specs()``, loaded on first need; pass ``specs`` to build one without
the extension, as tests do). Output: ``Stats``, a ``Mapping[str, int]`` in registry order,
whose kinds say what each counter means, so that no reader guesses from a name:

- ``count``: a cumulative count of something normal (``samples``, ``processes_seen``);
- ``gauge``: a level now, not cumulative (``processes``, ``files_cached``);
- ``success``: walks or lookups that worked (``unwind_complete``);
- ``unwind_failure``: samples whose stack walk ended early, by reason;
- ``lost``: samples lost before they reached user space;
- ``error``: anything else that cost a sample some of its truth.

A counter that the specs do not list is a ``count``. Non-goals: rates, formatting (see
``ddprofiler.status``).
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal, Optional, Tuple, Union, get_args

__all__ = ["COUNTER_KINDS", "CounterKind", "CounterSpec", "Stats", "counter_specs"]

CounterKind = Literal["count", "gauge", "success", "unwind_failure", "lost", "error"]
COUNTER_KINDS: Tuple[CounterKind, ...] = get_args(CounterKind)
# (name, kind, one line of help), as _native.counter_specs() gives them.
CounterSpec = Tuple[str, CounterKind, str]

_DEFAULT_KIND: CounterKind = "count"


@functools.lru_cache(maxsize=1)
def counter_specs() -> Tuple[CounterSpec, ...]:
    """The registry of the built extension, in its order. Raises NativeExtensionError."""
    from ddprofiler.errors import NativeExtensionError
    from ddprofiler.profiler import load_native

    load_native()
    from ddprofiler import _native

    try:
        specs = _native.counter_specs()
    except AttributeError as e:  # an extension built from an older tree
        raise NativeExtensionError(
            f"ddprofiler._native has no counter_specs() ({e}): it is older than this "
            "package; rebuild it with `pip install .` (or `make`)") from e
    return tuple((name, _check_kind(kind), help_) for name, kind, help_ in specs)


def _check_kind(kind: str) -> CounterKind:
    if kind not in COUNTER_KINDS:
        raise ValueError(f"unknown counter kind {kind!r} (known: {', '.join(COUNTER_KINDS)})")
    return kind


class Stats(Mapping[str, int]):
    """Counter values by name, in registry order, with each counter's kind.

    ``values``: a mapping (or pairs) of name -> value. ``specs``: ``(name, kind, help)``
    of the registry; None loads ``_native.counter_specs()`` the first time a kind is needed
    (reading values never needs the extension). Immutable; equal to any mapping with the
    same items.
    """

    __slots__ = ("_values", "_specs", "_kinds")

    def __init__(
        self,
        values: Union[Mapping[str, int], Iterable[Tuple[str, int]]] = (),
        specs: Optional[Sequence[CounterSpec]] = None,
    ) -> None:
        items = values.items() if isinstance(values, Mapping) else values
        self._values: dict[str, int] = {str(name): int(value) for name, value in items}
        self._specs: Optional[Tuple[CounterSpec, ...]] = None
        self._kinds: Optional[dict[str, CounterKind]] = None
        if specs is not None:
            self._set_specs(specs)

    @classmethod
    def zeros(cls, specs: Optional[Sequence[CounterSpec]] = None) -> Stats:
        """Every counter of the registry at 0 (a profiler that has not started)."""
        specs = tuple(specs) if specs is not None else counter_specs()
        return cls({name: 0 for name, _, _ in specs}, specs)

    def _set_specs(self, specs: Sequence[CounterSpec]) -> None:
        self._specs = tuple((name, _check_kind(kind), help_) for name, kind, help_ in specs)
        self._kinds = {name: kind for name, kind, _ in self._specs}

    def _kind_table(self) -> dict[str, CounterKind]:
        if self._kinds is None:
            self._set_specs(counter_specs())
        assert self._kinds is not None
        return self._kinds

    # ----------------------------------------------------------------- Mapping

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Stats({self._values!r})"

    # ----------------------------------------------------------------- kinds

    def kind(self, name: str) -> CounterKind:
        """The kind of counter ``name`` (``count`` when the registry does not list it)."""
        return self._kind_table().get(name, _DEFAULT_KIND)

    def help(self, name: str) -> str:
        """The registry's one line of help on ``name`` ("" when it does not list it)."""
        self._kind_table()
        assert self._specs is not None
        return next((h for n, _, h in self._specs if n == name), "")

    @property
    def samples(self) -> int:
        """Samples received and counted since the start."""
        return self._values.get("samples", 0)

    @property
    def lost(self) -> int:
        """Samples lost before they reached user space (every ``lost`` counter)."""
        return sum(self.of_kind("lost").values())

    def of_kind(self, kind: CounterKind) -> dict[str, int]:
        """The nonzero counters of ``kind``, by name, in registry order."""
        _check_kind(kind)
        kinds = self._kind_table()
        return {name: value for name, value in self._values.items()
                if value and kinds.get(name, _DEFAULT_KIND) == kind}

    def unwind_failures(self) -> dict[str, int]:
        """Nonzero ``unwind_failure`` counters: why stack walks ended early."""
        return self.of_kind("unwind_failure")

    def errors(self) -> dict[str, int]:
        """Nonzero ``error`` counters (``lost`` and unwinding failures not included)."""
        return self.of_kind("error")

    def delta(self, previous: Optional[Mapping[str, int]]) -> dict[str, int]:
        """What happened since ``previous`` (an earlier Stats of the same profiler, or None
        for "since the start"): the difference of each cumulative counter, and the current
        level of each gauge (a level has no meaningful difference). Every counter, zeros
        included, in registry order."""
        if previous is None:
            return dict(self._values)
        kinds = self._kind_table()
        return {name: value if kinds.get(name, _DEFAULT_KIND) == "gauge"
                else value - previous.get(name, 0)
                for name, value in self._values.items()}
