"""``ddprofiler top``: the hottest functions, live, as ``perf top`` and ``py-spy top`` show them.

Input: a started ``Profiler``; every ``interval`` seconds one ``snapshot(reset=True)``.
Output: a screen (curses, when standard output is a terminal) or, when it is not, one text
table per interval (like ``top -b``). Each row is a function and where it is (the
library's or program's name, ``[kernel]``, the Python file): its share of the last interval's samples
by self (innermost frame) and total (anywhere in the stack, once per sample), and its
CPU seconds since the start. Keys: ``q`` quits, ``s`` / ``t`` sort by self / total, ``p``
pauses the screen (sampling goes on). Non-goals: anything but CPU samples; history.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Literal, Optional

if TYPE_CHECKING:
    from ddprofiler.profile import Frame, Profile
    from ddprofiler.profiler import Profiler

__all__ = ["Top", "run"]

Key = tuple[str, str]  # (function, where)
Sort = Literal["self", "total"]


@dataclass
class Top:
    """The figures ``top`` shows, updated one snapshot at a time."""

    frequency: int
    sort: Sort = "self"
    keys: bool = True
    """Show the keys in the header (the screen; not the tables of batch mode)."""
    interval_samples: int = 0
    interval_s: float = 0.0
    lost: int = 0
    total_samples: int = 0
    self_now: dict[Key, int] = field(default_factory=dict)
    total_now: dict[Key, int] = field(default_factory=dict)
    self_all: dict[Key, int] = field(default_factory=dict)
    total_all: dict[Key, int] = field(default_factory=dict)

    def add(self, profile: Profile, seconds: float) -> None:
        """Take one interval's snapshot in."""
        from ddprofiler.report import tally_by

        self.self_now, self.total_now, self.interval_samples = tally_by(profile, _keys)
        self.interval_s = seconds
        for now, cumulative in ((self.self_now, self.self_all), (self.total_now, self.total_all)):
            for key, n in now.items():
                cumulative[key] = cumulative.get(key, 0) + n
        self.total_samples += self.interval_samples
        self.lost = int(profile.stats.get("lost", 0))

    def rows(self, n: int) -> list[str]:
        """A header, the column titles and the ``n`` hottest rows of the last interval."""
        first, second = (self.self_now, self.total_now) if self.sort == "self" else (self.total_now, self.self_now)
        ranked = sorted(self.total_now, key=lambda k: (-first.get(k, 0), -second.get(k, 0), k))[:max(0, n)]
        grand = self.interval_samples
        rate = grand / self.interval_s if self.interval_s > 0 else 0.0
        keys = "  [q]uit [s]elf [t]otal [p]ause" if self.keys else ""
        out = [f"ddprofiler top: {grand} samples in {self.interval_s:.1f} s ({rate:.0f}/s, "
               f"{self.frequency} Hz a CPU), lost {self.lost}, by {self.sort} {keys}",
               f"{'%Self':>7} {'%Total':>7} {'Self(s)':>9} {'Total(s)':>9}  {'Where':<18} Function"]
        for key in ranked:
            s, t = self.self_now.get(key, 0), self.total_now.get(key, 0)
            out.append(f"{_pct(s, grand):>7} {_pct(t, grand):>7} "
                       f"{self.self_all.get(key, 0) / self.frequency:>9.2f} "
                       f"{self.total_all.get(key, 0) / self.frequency:>9.2f}  {_cut(key[1], 18):<18} {key[0]}")
        if not ranked:
            out.append("(no samples yet)")
        return out


def run(profiler: Profiler, interval: float, sort: Sort, n: Optional[int],
        stop_requested: Callable[[], bool], stream: IO[str] = sys.stdout) -> None:
    """Until ``q`` (screen) or ``stop_requested()``: a snapshot per ``interval``, shown."""
    top = Top(profiler.frequency, sort, keys=stream.isatty())
    if stream.isatty():
        import curses

        curses.wrapper(lambda screen: _screen(screen, profiler, top, interval, n, stop_requested))
        return
    last = time.monotonic()
    while not stop_requested():
        _sleep(interval, stop_requested)
        now = time.monotonic()
        top.add(profiler.snapshot(True), now - last)
        last = now
        stream.write("\n".join(top.rows(n or 20)) + "\n\n")
        stream.flush()


def _screen(screen: Any, profiler: Profiler, top: Top, interval: float, n: Optional[int],
            stop_requested: Callable[[], bool]) -> None:
    import curses

    curses.curs_set(0)
    screen.timeout(100)  # getch() waits at most 0.1 s: keys, signals and the clock are seen
    paused = False
    last = time.monotonic()
    rows = ["ddprofiler top: waiting for the first samples..."]
    while not stop_requested():
        now = time.monotonic()
        if now - last >= interval:
            top.add(profiler.snapshot(True), now - last)
            last = now
            if not paused:
                height, _ = screen.getmaxyx()
                rows = top.rows(n or max(1, height - 3))
        _draw(screen, rows, paused)
        key = screen.getch()
        if key in (ord("q"), ord("Q")):
            return
        if key in (ord("s"), ord("t")):
            top.sort = "self" if key == ord("s") else "total"
            height, _ = screen.getmaxyx()
            rows = top.rows(n or max(1, height - 3))
        elif key == ord("p"):
            paused = not paused
        elif key == curses.KEY_RESIZE:
            screen.clear()


def _draw(screen: Any, rows: list[str], paused: bool) -> None:
    import curses

    height, width = screen.getmaxyx()
    screen.erase()
    for y, text in enumerate(rows[:height - 1]):
        attr = curses.A_REVERSE if y == 1 else curses.A_BOLD if y == 0 else curses.A_NORMAL
        screen.addnstr(y, 0, text, max(0, width - 1), attr)
    if paused:
        screen.addnstr(height - 1, 0, "paused (p resumes)", max(0, width - 1), curses.A_BOLD)
    screen.refresh()


def _sleep(seconds: float, stop_requested: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop_requested() and (left := end - time.monotonic()) > 0:
        time.sleep(min(0.1, left))


def _keys(frame: Frame) -> list[Key]:
    where = _where(frame)
    return [(name, where) for name in frame.functions]


def _where(frame: Frame) -> str:
    if frame.kind == "kernel":
        return "[kernel]"
    if frame.kind == "python" and frame.lines and frame.lines[0].file:
        return os.path.basename(frame.lines[0].file)
    if frame.mapping is not None:
        return os.path.basename(frame.mapping.path) or frame.mapping.path
    return frame.kind


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "~"


def _pct(count: int, grand: int) -> str:
    return f"{100 * count / grand:.1f}%" if grand else "-"
