"""Health of the continuous profiler, without reading its logs: the status file.

``StatusFile(path, ...)`` is written by ``ddprofiler run`` at start, after every period and
at exit: one JSON object (``FORMAT`` 1), replaced atomically (temporary file, rename), so a
reader never sees half of it. Fields: ``pid``, ``version``, ``state`` (``running`` or
``stopped``), ``started_at``/``updated_at`` (Unix seconds), ``upload_period_s``,
``profiles_go_to`` (no secret), ``periods``, ``samples_total``, ``last_period`` (the
runner's figures: ``period_s``, ``samples``, ``profiles``, ``samples_lost``,
``stacks_cut_short`` and ``errors`` by reason), ``uploads`` (the exporter's cumulative
counters, with ``queue_len`` and ``queue_bytes``) and ``destination`` (``state`` ``ok`` or
``failing``, ``reason``, ``failing_since``, ``last_ok``). A write that fails is logged once
at warning (then at debug) and never stops the profiler.

``read(path)`` and ``verdict(doc, now)`` are what ``ddprofiler status`` shows: healthy
when the profiler runs (its pid is alive), wrote within ``STALE_PERIODS`` periods and its
destination is not failing; otherwise the reasons. ``format_status`` renders it for a
person. ``capabilities()`` names the effective capabilities of this process (the
start-up line says what it runs with).
Non-goals: an HTTP endpoint (a file is readable by an exec probe and needs no port).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ddprofiler.config import format_bytes

log = logging.getLogger(__name__)

FORMAT = 1
STALE_PERIODS = 2.5   # a period may run late by its jitter and a slow export
STALE_GRACE_S = 30.0

# Linux capability numbers (include/uapi/linux/capability.h), to name the CapEff bits.
_CAP_NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
# The ones that matter to a profiler, in the order the start-up line names them.
_RELEVANT = ("SYS_ADMIN", "BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE", "DAC_READ_SEARCH")


def capabilities(status_text: Optional[str] = None) -> Tuple[int, List[str]]:
    """(CapEff mask, names of the relevant capabilities it holds) of this process, or of
    the given ``/proc/PID/status`` text; ``(-1, [])`` when unreadable.
    Hand-written: reading one hex field needs no library."""
    try:
        if status_text is None:
            with open("/proc/self/status") as f:
                status_text = f.read()
        line = next(ln for ln in status_text.splitlines() if ln.startswith("CapEff:"))
        mask = int(line.split(":", 1)[1].strip(), 16)
    except (OSError, StopIteration, ValueError):
        return -1, []
    held = {name for bit, name in enumerate(_CAP_NAMES) if mask >> bit & 1}
    return mask, [f"CAP_{n}" for n in _RELEVANT if n in held]


def describe_capabilities(status_text: Optional[str] = None) -> str:
    """``CAP_BPF,CAP_PERFMON (CapEff 0x000000c000000000)`` or ``all (root, CapEff 0x...)``."""
    mask, names = capabilities(status_text)
    if mask < 0:
        return "unknown (no /proc/self/status)"
    every = (1 << len(_CAP_NAMES)) - 1
    shown = "all" if mask & every == every else (",".join(names) or "none relevant")
    return f"{shown} (CapEff 0x{mask:016x})"


class StatusFile:
    """Writes the status file (see the module docstring); ``path`` None writes nothing."""

    def __init__(self, path: Optional[str], *, version: str, upload_period: float,
                 profiles_go_to: str, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._warned = False
        self._doc: Dict[str, Any] = {
            "format": FORMAT, "pid": os.getpid(), "version": version, "state": "running",
            "started_at": clock(), "updated_at": clock(), "upload_period_s": upload_period,
            "profiles_go_to": profiles_go_to, "periods": 0, "samples_total": 0,
            "last_period": None, "uploads": {}, "destination": {},
        }

    @property
    def doc(self) -> Dict[str, Any]:
        return dict(self._doc)

    def start(self) -> None:
        self._write()

    def period(self, figures: Mapping[str, Any]) -> None:
        """The runner's ``on_period``: one period's figures."""
        doc = self._doc
        doc["periods"] += 1
        doc["samples_total"] += int(figures.get("samples", 0))
        doc["last_period"] = {k: v for k, v in figures.items() if k not in ("uploads", "destination")}
        doc["last_period"]["ended_at"] = self._clock()
        doc["uploads"] = dict(figures.get("uploads", {}))
        doc["destination"] = dict(figures.get("destination", {}))
        self._write()

    def stopped(self, uploads: Mapping[str, int], destination: Mapping[str, Any]) -> None:
        self._doc.update(state="stopped", uploads=dict(uploads), destination=dict(destination))
        self._write()

    def _write(self) -> None:
        if not self.path:
            return
        self._doc["updated_at"] = self._clock()
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".status-", dir=directory)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(self._doc, f, indent=1, sort_keys=True)
                os.chmod(tmp, 0o644)  # readable by `ddprofiler status` run as anyone
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as e:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot write the status file %s (%s); `ddprofiler status` will not "
                    "see this profiler (--status-file sets another path)", self.path, e.strerror or e)


def read(path: str) -> Dict[str, Any]:
    """The status file at ``path``. Raises OSError (missing, unreadable) or ValueError
    (not a status file)."""
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ddprofiler status file (format {FORMAT})")
    return doc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's: it exists
    return True


def verdict(doc: Mapping[str, Any], now: Optional[float] = None) -> List[str]:
    """What is wrong, in words; empty when healthy."""
    now = time.time() if now is None else now
    problems = []
    if doc.get("state") == "stopped":
        problems.append("the profiler has stopped")
    elif not _alive(int(doc.get("pid", 0))):
        problems.append(f"the profiler (pid {doc.get('pid')}) is not running any more")
    else:
        limit = STALE_PERIODS * float(doc.get("upload_period_s", 60)) + STALE_GRACE_S
        age = now - float(doc.get("updated_at", 0))
        if age > limit:
            problems.append(f"no period for {age:.0f} s (expected every {doc.get('upload_period_s')} s)")
    dest = doc.get("destination") or {}
    if dest.get("state") == "failing":
        problems.append(f"uploads failing since {_when(dest.get('failing_since'), now)}: {dest.get('reason')}")
    return problems


def _when(t: Any, now: float) -> str:
    if not t:
        return "never"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(t)))
    return f"{stamp} ({_ago(now - float(t))} ago)"


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


def format_status(doc: Mapping[str, Any], now: Optional[float] = None) -> List[str]:
    """The lines ``ddprofiler status`` prints."""
    now = time.time() if now is None else now
    up = doc.get("uploads") or {}
    dest = doc.get("destination") or {}
    last = doc.get("last_period") or {}
    produced = up.get("uploads_submitted", 0)
    lines = [
        f"ddprofiler {doc.get('version')} (pid {doc.get('pid')}): {doc.get('state')}, "
        f"started {_when(doc.get('started_at'), now)}",
        f"  profiles go to:   {doc.get('profiles_go_to')}",
        f"  status written:   {_when(doc.get('updated_at'), now)}",
    ]
    if last:
        lines.append(f"  last period:      ended {_when(last.get('ended_at'), now)}: "
                     f"{last.get('samples', 0)} samples in {last.get('profiles', 0)} profiles over "
                     f"{last.get('period_s', 0)} s, {last.get('samples_lost', 0)} samples lost")
    else:
        lines.append("  last period:      none yet")
    lines += [
        f"  periods:          {doc.get('periods', 0)} ({doc.get('samples_total', 0)} samples in all)",
        f"  last upload ok:   {_when(dest.get('last_ok'), now)}",
        "  destination:      " + (f"FAILING since {_when(dest.get('failing_since'), now)}: {dest.get('reason')}"
                                  if dest.get("state") == "failing"
                                  else "ok" if dest.get("last_ok") else "not contacted yet (as of the last period)"),
        f"  queue:            {up.get('queue_len', 0)} profiles, {format_bytes(up.get('queue_bytes', 0))}",
        f"  profiles:         {produced} produced: {up.get('uploads_ok', 0)} sent, "
        f"{up.get('uploads_failed', 0)} failed, {up.get('uploads_dropped', 0)} dropped, "
        f"{up.get('uploads_abandoned', 0)} not sent at exit; {up.get('uploads_retried', 0)} retries",
    ]
    memory = last.get("memory") or {}
    if memory.get("resident_bytes"):
        lines.append(f"  memory:           {format_bytes(memory['resident_bytes'])} of a "
                     f"{format_bytes(memory.get('budget_bytes', 0))} budget; caches shed "
                     f"{memory.get('sheds_total', 0)} times, {memory.get('parses_evicted_total', 0)} "
                     "symbol parses evicted")
    problems = verdict(doc, now)
    lines.append("health: " + ("OK" if not problems else "NOT OK: " + "; ".join(problems)))
    return lines
