"""What `record` tells the user while it runs and when it ends.

``StatusLine`` redraws one line in place (``\\r``) with the elapsed time, samples,
processes seen (``processes_seen``, else ``processes``) and lost samples, each time
``update`` is called (the caller paces it, about twice a second); it writes nothing at all
when its stream is not a TTY. ``finish`` erases it. ``summary_lines`` gives the end-of-run
report, printed whether or not on a TTY: samples, lost, unwinding failures by reason (stats
keys starting with ``unwind_``, except success counters such as ``unwind_complete``) and
any other nonzero error counter (keys naming an error, failure, drop, miss...).
"""
from __future__ import annotations

import sys
from typing import IO, List, Mapping, Optional

_HEADLINE_KEYS = ("samples", "lost", "processes")
_UNWIND_PREFIX = "unwind_"
_UNWIND_SUCCESS = ("complete", "completed", "ok", "success", "succeeded")
_ERROR_WORDS = ("error", "fail", "drop", "lost", "miss", "invalid", "trunc", "overflow", "unknown", "denied")


class StatusLine:
    """A live, self-overwriting status line on a terminal; silent elsewhere."""

    def __init__(self, stream: Optional[IO[str]] = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty())
        self._width = 0

    def update(self, elapsed: float, stats: Mapping[str, int]) -> None:
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


def format_status(elapsed: float, stats: Mapping[str, int]) -> str:
    return (
        f"recording {elapsed:6.1f}s | samples {stats.get('samples', 0)} | "
        f"processes {stats.get('processes_seen', stats.get('processes', 0))} | lost {stats.get('lost', 0)}"
    )


def summary_lines(stats: Mapping[str, int]) -> List[str]:
    """The final report: one line each for samples, lost, unwinding failures, other errors."""
    samples = stats.get("samples", 0)
    lost = stats.get("lost", 0)
    lines = [f"samples: {samples}"]
    seen = samples + lost
    lines.append(f"lost: {lost}" + (f" ({100.0 * lost / seen:.1f}%)" if lost and seen else ""))

    unwind = _nonzero(stats, _is_unwind_failure)
    if unwind:
        reasons = ", ".join(f"{key[len(_UNWIND_PREFIX):]} {value}" for key, value in unwind)
        lines.append(f"unwinding failures: {sum(value for _, value in unwind)} ({reasons})")

    errors = _nonzero(
        stats,
        lambda key: key not in _HEADLINE_KEYS
        and not key.startswith(_UNWIND_PREFIX)
        and any(word in key for word in _ERROR_WORDS),
    )
    if errors:
        lines.append("other errors: " + ", ".join(f"{key} {value}" for key, value in errors))
    return lines


def _is_unwind_failure(key: str) -> bool:
    return key.startswith(_UNWIND_PREFIX) and key[len(_UNWIND_PREFIX):] not in _UNWIND_SUCCESS


def _nonzero(stats: Mapping[str, int], keep) -> List[tuple]:
    """(key, value) of the nonzero counters kept, largest first then by name."""
    items = [(key, value) for key, value in stats.items() if value and keep(key)]
    return sorted(items, key=lambda item: (-item[1], item[0]))
