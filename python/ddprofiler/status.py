"""What `record` tells the user while it runs and when it ends.

``StatusLine`` redraws one line in place (``\\r``) with the elapsed time, samples,
processes seen (``processes_seen``, else ``processes``) and lost samples, each time
``update`` is called (the caller paces it, about twice a second); it writes nothing at all
when its stream is not a TTY. ``finish`` erases it. ``summary_lines`` gives the end-of-run
report, printed whether or not on a TTY: samples, lost, Python frames (when CPython
processes were sampled: how many samples got Python frames, and why the others did not),
unwinding failures by reason and the other nonzero error counters. Which counter is an
error comes from its kind in the core's registry (``Stats.of_kind``), never from its name.
Non-goals: logging.
"""
from __future__ import annotations

import sys
from typing import IO, List, Optional

from ddprofiler.stats import Stats

_UNWIND_PREFIX = "unwind_"  # dropped from the reasons shown, which all start with it
# Samples of CPython processes without Python frames, by reason, as the summary words them.
_PYTHON_WITHOUT = (
    ("python_unsupported", "unsupported interpreter"),
    ("python_no_frame", "no Python code running"),
    ("python_no_thread", "not a Python thread"),
    ("python_read_failed", "interpreter memory unreadable"),
)


class StatusLine:
    """A live, self-overwriting status line on a terminal; silent elsewhere."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream: IO[str] = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._width = 0

    def update(self, elapsed: float, stats: Stats) -> None:
        if not self.enabled:
            return
        line = format_status(elapsed, stats)
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
        self.stream.flush()
        self._width = max(self._width, len(line))  # columns now covered on screen

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def format_status(elapsed: float, stats: Stats) -> str:
    processes = stats.get("processes_seen", stats.get("processes", 0))
    return (f"recording {elapsed:6.1f}s | samples {stats.samples} | "
            f"processes {processes} | lost {stats.lost}")


def summary_lines(stats: Stats) -> List[str]:
    """The final report: one line each for samples, lost, unwinding failures, other errors
    (the last two only when nonzero; largest first, then by name)."""
    samples, lost = stats.samples, stats.lost
    lines = [f"samples: {samples}"]
    seen = samples + lost
    lines.append(f"lost: {lost}" + (f" ({100.0 * lost / seen:.1f}%)" if lost and seen else ""))

    python = python_line(stats)
    if python:
        lines.append(python)

    unwind = _largest_first(stats.unwind_failures())
    if unwind:
        reasons = ", ".join(f"{_reason(name)} {value}" for name, value in unwind)
        lines.append(f"unwinding failures: {sum(value for _, value in unwind)} ({reasons})")

    errors = _largest_first(stats.errors())
    if errors:
        # symbolize_failures counts distinct addresses (locations), not samples.
        units = {"symbolize_failures": " locations"}
        lines.append("other errors: " + ", ".join(f"{name} {value}{units.get(name, '')}" for name, value in errors))
    return lines


def python_line(stats: Stats) -> str:
    """``python: N samples with Python frames; M without (reason n, ...)``, or "" when no
    CPython process was sampled."""
    with_frames = stats.get("python_samples", 0)
    without = [(why, stats.get(name, 0)) for name, why in _PYTHON_WITHOUT if stats.get(name, 0)]
    if not with_frames and not without:
        return ""
    line = f"python: {with_frames} samples with Python frames"
    if without:
        reasons = ", ".join(f"{why} {n}" for why, n in sorted(without, key=lambda w: -w[1]))
        line += f"; {sum(n for _, n in without)} without ({reasons})"
    return line


def _reason(name: str) -> str:
    return name[len(_UNWIND_PREFIX):] if name.startswith(_UNWIND_PREFIX) else name


def _largest_first(counters: dict[str, int]) -> List[tuple[str, int]]:
    return sorted(counters.items(), key=lambda item: (-item[1], item[0]))
