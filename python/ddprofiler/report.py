"""Reports of a recorded profile: the hottest functions, and what changed between two.

Input: pprof files (ours or any CPU profile: gzip, zstd or raw; ``load``). Output: text
tables (``top_table``, ``diff_table``) and a differential flame graph (``diff_svg``: the
new profile's frames, red where their share grew, blue where it shrank; inferno's
differential, both profiles normalised to the same total).

Counting, as ``Profile.top`` does: a function's *self* samples are those whose innermost
frame it is, its *total* samples those with it anywhere in the stack, counted once per
sample. With ``lines``, a function at each source line counts on its own
(``leaf (app.c:12)``). Shares are of all the profile's samples. With ``value`` ``off-cpu``
(a profile recorded in off-CPU mode), the same of the nanoseconds switched out instead of
the CPU samples. Non-goals: recording, other sample types.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Literal, TypeVar, Union

from ddprofiler.profile import Frame

if TYPE_CHECKING:
    from ddprofiler.profile import Profile, Value

__all__ = ["diff_svg", "diff_table", "load", "tally", "tally_by", "top_table"]

By = Literal["self", "total"]
PathLike = Union[str, "os.PathLike[str]"]


def load(path: PathLike) -> Profile:
    """The profile in the pprof file at ``path``. Raises OSError, or ValueError when it is
    not a pprof profile."""
    from google.protobuf.message import DecodeError

    from ddprofiler.pprof.reader import read_pprof, to_profile

    try:
        return to_profile(read_pprof(path))
    except (DecodeError, EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{os.fspath(path)} is not a pprof profile ({e})") from e
    except Exception as e:  # zstandard and gzip raise their own errors on garbage
        if type(e).__module__.startswith(("zstandard", "gzip", "zlib")):
            raise ValueError(f"{os.fspath(path)} is not a pprof profile ({e})") from e
        raise


K = TypeVar("K", bound=Hashable)


def tally(profile: Profile, lines: bool = False, value: Value = "cpu") -> tuple[dict[str, int], dict[str, int], int]:
    """(self, total, samples): counts by function (with ``lines``, by function and line);
    of ``value`` (``off-cpu``: nanoseconds)."""
    return tally_by(profile, lambda frame: _names(frame, lines), value)


def tally_by(profile: Profile, keys: Callable[[Frame], list[K]],
             value: Value = "cpu") -> tuple[dict[K, int], dict[K, int], int]:
    """(self, total, samples) by ``keys(frame)`` (innermost first: the first key of a
    stack's leaf frame is the sample's self key); each key counts once per sample in total.
    Raises ValueError for a value the profile does not have."""
    value = profile.check_value(value)
    self_counts: dict[K, int] = {}
    total_counts: dict[K, int] = {}
    grand = 0
    keys_of: dict[int, list[K]] = {}  # per frame index
    for sample in profile.samples:
        weight = sample.value(value)
        if weight <= 0:
            continue
        grand += weight
        stack = profile.stacks[sample.stack]
        if not stack:
            continue
        seen: set[K] = set()
        for position, i in enumerate(stack):
            frame_keys = keys_of.get(i)
            if frame_keys is None:
                frame_keys = keys_of[i] = keys(profile.frames[i])
            if position == 0 and frame_keys:
                self_counts[frame_keys[0]] = self_counts.get(frame_keys[0], 0) + weight
            seen.update(frame_keys)
        for key in seen:
            total_counts[key] = total_counts.get(key, 0) + weight
    return self_counts, total_counts, grand


def top_table(profile: Profile, n: int = 20, by: By = "self", lines: bool = False,
              value: Value = "cpu") -> list[str]:
    """The ``n`` hottest functions as text rows (a header first); of ``value`` (``off-cpu``:
    the columns are milliseconds switched out)."""
    self_counts, total_counts, grand = tally(profile, lines, value)
    counts = self_counts if by == "self" else total_counts
    other = total_counts if by == "self" else self_counts
    ranked = sorted(counts, key=lambda k: (-counts[k], -other.get(k, 0), k))[:max(0, n)]
    def show(count: int) -> str:
        return f"{count / 1e6:.1f}" if value == "off-cpu" else str(count)

    what = f"{len(total_counts)} function lines" if lines else f"{len(total_counts)} functions"
    if value == "off-cpu":
        header = f"{what}, {grand / 1e9:.2f} s off-CPU (switched out)"
        unit = "ms"
    else:
        seconds = grand / profile.frequency if profile.frequency else 0.0
        header = f"{what}, {grand} samples ({seconds:.2f} s of CPU at {profile.frequency} Hz)"
        unit = ""
    rows = [f"{header}; top {len(ranked)} by {by}:",
            f"{'self%':>7} {'self' + unit:>8} {'total%':>7} {'total' + unit:>8}  function{' (line)' if lines else ''}"]
    for name in ranked:
        s, t = self_counts.get(name, 0), total_counts.get(name, 0)
        rows.append(f"{_pct(s, grand):>7} {show(s):>8} {_pct(t, grand):>7} {show(t):>8}  {name}")
    return rows


def diff_table(new: Profile, base: Profile, n: int = 20, by: By = "self",
               lines: bool = False, value: Value = "cpu") -> list[str]:
    """The functions whose share of the samples (of ``value``) changed most from ``base``
    to ``new``, growth first, as text rows (a header first)."""
    new_self, new_total, new_grand = tally(new, lines, value)
    base_self, base_total, base_grand = tally(base, lines, value)
    a, b = (new_self, base_self) if by == "self" else (new_total, base_total)

    def share(counts: dict[str, int], name: str, grand: int) -> float:
        return counts.get(name, 0) / grand if grand else 0.0

    delta = {name: share(a, name, new_grand) - share(b, name, base_grand) for name in set(a) | set(b)}
    ranked = sorted(delta, key=lambda k: (-delta[k], k))
    grew = [k for k in ranked if delta[k] > 0][:max(0, n)]
    shrank = [k for k in reversed(ranked) if delta[k] < 0][:max(0, n)]
    rows = [f"{by} share, base {base_grand} samples -> new {new_grand} samples:",
            f"{'base%':>7} {'new%':>7} {'change':>8}  function"]
    for name in grew + shrank:
        rows.append(f"{100 * share(b, name, base_grand):>6.2f}% {100 * share(a, name, new_grand):>6.2f}% "
                    f"{100 * delta[name]:>+7.2f}%  {name}")
    if not grew and not shrank:
        rows.append("(no function's share changed)")
    return rows


def diff_svg(new: Profile, base: Profile, title: str = "", value: Value = "cpu") -> str:
    """A differential flame graph of ``value``: ``new``'s frames coloured by how their
    share changed from ``base`` (red grew, blue shrank)."""
    from ddprofiler import formats
    from ddprofiler.profiler import load_native

    what = "CPU" if value == "cpu" else "Off-CPU"
    drawn: str = load_native().flamegraph_svg(
        formats.collapsed(new, value), title or f"{what}: what changed (red grew, blue shrank)",
        f"base {base.total} samples, new {new.total} samples", "samples" if value == "cpu" else "ns", None,
        formats.collapsed(base, value))
    return drawn


def _names(frame: Frame, lines: bool) -> list[str]:
    if not lines:
        return list(frame.functions)
    names = list(frame.functions)
    for i, line in enumerate(frame.lines):
        if line.line > 0:
            where = f"{os.path.basename(line.file)}:{line.line}" if line.file else f"line {line.line}"
            names[i] = f"{names[i]} ({where})"
    return names


def _pct(count: int, grand: int) -> str:
    return f"{100 * count / grand:.2f}%" if grand else "-"
