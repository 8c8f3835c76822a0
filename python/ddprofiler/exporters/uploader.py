"""A background uploader: one thread, a FIFO bounded by bytes, retries with backoff.

Contract:

- ``put(job)`` never blocks on I/O and never raises. Jobs are delivered one at a time, in
  the order they were put: a job being retried holds back the ones behind it, so after an
  outage the receiver sees them in order.
- Memory is bounded: the bytes of the queued jobs plus the one in flight never exceed
  ``max_queue_bytes``. When a new job does not fit, the OLDEST jobs are dropped (the one in
  flight too, unless it is on the wire right now); a job larger than what can be freed is
  dropped itself. Drops are counted (``uploads_dropped``) and logged once when an overflow
  episode starts and once, with the count, when it ends — never once per job.
- ``sender.send(data, timeout)`` returns a ``Result``: ``OK``, ``RETRY`` (5xx, a
  request that timed out), ``UNREACHABLE`` (refused, reset, unreachable) or ``FAIL`` (4xx and other final answers; not retried). A job is
  retried at most ``max_retries`` times after 5xx answers, and for as long as it stays in
  the queue when the receiver cannot be reached (``UNREACHABLE``): an Agent down for
  several periods gets every profile that fits the queue, in order, once it is back.
  Between attempts it sleeps a full-jitter exponential backoff
  ``uniform(0, min(backoff_max, backoff_base * 2**n))`` between attempts. An exception
  from the sender counts as ``RETRY``. Failures are logged at warning, at most once per
  distinct key (e.g. ``HTTP 403``) per ``log_interval`` seconds.
- The destination has a state, ``ok`` or ``failing`` (with the reason of the last failed
  attempt and since when): the first failed attempt, each change of reason and the
  recovery are logged at warning, once each, whatever the number of jobs; ``health()``
  gives the state, the last success (wall clock) and the failed attempts, for the
  status file and the period line.
- ``close(timeout)`` stops accepting (later jobs are dropped), delivers what is queued until
  the deadline (backoff sleeps and requests are cut short by it; ``sender.abort()``, when
  it exists, ends a request still running), then gives up: jobs never sent are counted as
  ``uploads_abandoned`` and logged once. A destination known to be unreachable is tried
  once more at once (a backoff sleep is cut short by ``close``); if that fails too, the
  queue is given up without waiting for the deadline.
- After ``close``, ``uploads_submitted == uploads_ok + uploads_failed + uploads_dropped +
  uploads_abandoned``: every job is counted exactly once.
"""
from __future__ import annotations

import collections
import enum
import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Deque, Dict, NamedTuple, Optional

from ddprofiler.config import format_bytes

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    OK = "ok"
    RETRY = "retry"              # the receiver answered with a transient error (5xx)
    UNREACHABLE = "unreachable"  # no answer: connection refused or reset, timeout
    FAIL = "fail"


class Result(NamedTuple):
    outcome: Outcome
    key: str = ""       # groups failures for rate-limited logging, e.g. "HTTP 403"
    message: str = ""   # one line for the log; must hold no secret


@dataclass(eq=False)
class Job:
    data: Any           # what the sender needs, e.g. (headers, body)
    size: int           # bytes held in memory while queued
    label: str = ""     # for logs, e.g. the service
    dropped: bool = False


def _dropped(job: Job) -> bool:
    """``job.dropped``, read again: another thread (``close``) may have set it since the
    last look (a plain re-read is "unreachable" to mypy's narrowing)."""
    return job.dropped


class RateLimitedLog:
    """Log a message at most once per key per ``interval`` seconds."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self._logger, self._interval = logger, interval
        self._last: Dict[str, float] = {}

    def __call__(self, key: str, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return
        if len(self._last) > 256:
            self._last.clear()
        self._last[key] = now
        self._logger.log(level, msg, *args)

    def touch(self, key: str) -> None:
        """As if ``key`` had just been logged (another message said it)."""
        self._last[key] = time.monotonic()


class Uploader:
    """See the module docstring. ``target`` names the destination in logs (no secrets)."""

    def __init__(self, sender: Any, *, target: str, max_queue_bytes: int, max_retries: int,
                 backoff_base: float, backoff_max: float, log_interval: float = 60.0,
                 name: str = "ddprofiler-upload") -> None:
        self._sender, self._target = sender, target
        self._max_bytes, self._max_retries = int(max_queue_bytes), int(max_retries)
        self._backoff_base, self._backoff_max = float(backoff_base), float(backoff_max)
        self._log = RateLimitedLog(log, log_interval)
        self._cond = threading.Condition()
        self._queue: Deque[Job] = collections.deque()
        self._bytes = 0
        self._inflight: Optional[Job] = None
        self._on_wire = False
        self._closing = False
        self._deadline = math.inf
        self._episode = 0  # jobs dropped in the current overflow episode
        self._failing: Optional[Result] = None  # the last failed attempt, while failing
        self._failing_since = 0.0  # wall clock
        self._last_ok = 0.0        # wall clock of the last delivered job
        self._give_up = False      # closing and the destination is unreachable
        self._unsent = 0           # abandoned jobs not yet logged
        self._stats = dict.fromkeys(
            ("uploads_submitted", "uploads_ok", "uploads_failed", "uploads_dropped",
             "uploads_retried", "uploads_abandoned", "bytes_sent", "attempts_failed"), 0)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side

    def put(self, job: Job) -> None:
        with self._cond:
            self._stats["uploads_submitted"] += 1
            if self._closing:
                self._stats["uploads_dropped"] += 1
                self._log("closed", logging.WARNING,
                          "upload to %s: exporter closed, profile of %r dropped",
                          self._target, job.label)
                return
            pinned = self._inflight.size if self._inflight and self._on_wire else 0
            if job.size + pinned > self._max_bytes:
                self._stats["uploads_dropped"] += 1
                self._log("too-big", logging.WARNING,
                          "upload to %s: profile of %r (%d bytes) exceeds the %d-byte queue, "
                          "dropped", self._target, job.label, job.size, self._max_bytes)
                return
            dropped = 0
            while self._bytes + job.size > self._max_bytes:
                inflight = self._inflight
                if inflight is not None and not self._on_wire and not inflight.dropped:
                    victim = inflight  # the oldest: waiting to be retried
                    victim.dropped = True
                else:
                    victim = self._queue.popleft()
                self._bytes -= victim.size
                dropped += 1
            self._queue.append(job)
            self._bytes += job.size
            if dropped:
                self._overflow(dropped)
            else:
                self._end_overflow()
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        with self._cond:
            if not self._closing:
                self._closing = True
                self._deadline = time.monotonic() + max(0.0, float(timeout))
            deadline = self._deadline
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            abort = getattr(self._sender, "abort", None)
            if abort is not None:
                abort()
            self._thread.join(0.2)
        with self._cond:
            job = self._inflight
            if self._thread.is_alive() and job is not None and not job.dropped:
                # Still on the wire after the abort: counted here, once, so that the
                # counts add up when close returns; the worker skips it when it wakes.
                job.dropped = True
                self._bytes -= job.size
                self._abandon(job)
            self._abandon_queue()
            self._end_overflow()

    def stats(self) -> Dict[str, int]:
        with self._cond:
            inflight = int(self._inflight is not None and not self._inflight.dropped)
            return {**self._stats, "queue_bytes": self._bytes,
                    "queue_len": len(self._queue) + inflight}

    def health(self) -> Dict[str, Any]:
        """``state`` (``ok``/``failing``), ``reason`` (of the last failed attempt, while
        failing), ``failing_since`` and ``last_ok`` (Unix seconds, 0 when never), the
        ``target``, and ``stats()``."""
        with self._cond:
            failing = self._failing
            return {"target": self._target, "state": "failing" if failing else "ok",
                    "reason": failing.message if failing else "",
                    "failing_since": self._failing_since if failing else 0.0,
                    "last_ok": self._last_ok}

    def count_failed(self) -> None:
        """Count a job that could not even be built (the caller logs why)."""
        with self._cond:
            self._stats["uploads_submitted"] += 1
            self._stats["uploads_failed"] += 1

    # ------------------------------------------------------------------ under the lock

    def _overflow(self, dropped: int) -> None:
        self._stats["uploads_dropped"] += dropped
        if not self._episode:
            log.warning("upload queue to %s is full (%d bytes): dropping the oldest profiles",
                        self._target, self._max_bytes)
        self._episode += dropped

    def _end_overflow(self) -> None:
        if self._episode:
            log.warning("upload queue to %s: overflow over, %d profiles dropped",
                        self._target, self._episode)
            self._episode = 0

    def _abandon_queue(self) -> None:
        """Under the lock: gives up the queue; says once how many were not sent."""
        n = len(self._queue)
        if n:
            self._stats["uploads_abandoned"] += n
            self._bytes -= sum(job.size for job in self._queue)
            self._queue.clear()
        n += self._unsent
        self._unsent = 0
        if n:
            log.warning("upload to %s: %d profiles not sent %s", self._target, n, self._why_unsent())

    def _why_unsent(self) -> str:
        if self._give_up and self._failing is not None:
            return f"at exit: it is unreachable ({self._failing.message})"
        return "before the close deadline"

    def _attempt_failed(self, result: Result) -> bool:
        """Under the lock: a state change to failing (or a new reason) is logged once;
        True when it was."""
        self._stats["attempts_failed"] += 1
        previous = self._failing
        self._failing = result
        if result.outcome is Outcome.FAIL:
            then = "rejected, not retried: this profile is lost until the cause is fixed"
        else:
            then = (f"profiles wait in the queue ({len(self._queue) + 1} now, {format_bytes(self._bytes)}) "
                    "and are retried")
        if previous is None:
            self._failing_since = time.time()
            log.warning("upload to %s failing: %s; %s", self._target, result.message, then)
        elif previous.key != result.key:
            log.warning("upload to %s still failing, now: %s; %s", self._target, result.message, then)
        else:
            return False
        self._log.touch(result.key)
        return True

    def _attempt_ok(self) -> None:
        """Under the lock: the recovery from failing is logged once."""
        self._last_ok = time.time()
        if self._failing is not None:
            log.warning("upload to %s recovered after %.0f s of failures (last: %s); "
                        "%d profiles still queued", self._target,
                        max(0.0, self._last_ok - self._failing_since), self._failing.message,
                        len(self._queue))
            self._failing = None

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or time.monotonic() >= self._deadline or self._give_up:
                    self._abandon_queue()
                    return
                job = self._inflight = self._queue.popleft()
            try:
                self._deliver(job)
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("upload to %s: unexpected error", self._target)
                with self._cond:
                    self._stats["uploads_failed"] += 1
            with self._cond:
                self._inflight = None
                self._on_wire = False
                if not job.dropped:
                    self._bytes -= job.size
                if not self._queue:
                    self._end_overflow()
                self._cond.notify_all()

    def _deliver(self, job: Job) -> None:
        attempt = 0
        while True:
            with self._cond:
                if job.dropped:
                    return
                left = self._deadline - time.monotonic()
                if left <= 0 or self._give_up:
                    self._abandon(job)
                    return
                self._on_wire = True
                # Only an attempt begun after close can say "down at exit": one begun
                # before may have failed just before the receiver came up.
                closing = self._closing
            try:
                result = self._sender.send(job.data, left)
            except Exception as e:  # noqa: BLE001 - counted and retried like a network error
                result = Result(Outcome.UNREACHABLE, type(e).__name__, f"{type(e).__name__}: {e}")
            with self._cond:
                self._on_wire = False
                if _dropped(job):  # close gave it up while on the wire, and counted it
                    return
                if result.outcome is Outcome.OK:
                    self._stats["uploads_ok"] += 1
                    self._stats["bytes_sent"] += job.size
                    self._attempt_ok()
                    return
                said = self._attempt_failed(result)
                transient = result.outcome in (Outcome.RETRY, Outcome.UNREACHABLE)
                if closing and result.outcome is Outcome.UNREACHABLE:
                    # Known down at exit: waiting for the deadline would only delay the exit.
                    self._give_up = True
                if transient and (time.monotonic() >= self._deadline or self._give_up):
                    self._abandon(job)
                    return
                give_up = result.outcome is Outcome.FAIL or (
                    result.outcome is Outcome.RETRY and attempt >= self._max_retries)
                self._stats["uploads_failed" if give_up else "uploads_retried"] += 1
            if result.outcome is Outcome.FAIL:
                if said:
                    return
                self._log(result.key, logging.WARNING, "upload to %s rejected (not retried): %s",
                          self._target, result.message)
                return
            if give_up:
                self._log("gave-up " + result.key, logging.WARNING,
                          "upload to %s failed after %d attempts: %s", self._target,
                          attempt + 1, result.message)
                return
            attempt += 1
            delay = random.uniform(0, min(self._backoff_max,
                                          self._backoff_base * 2 ** (attempt - 1)))
            log.debug("upload to %s: %s; retry %d in %.3f s", self._target, result.message,
                      attempt, delay)
            self._sleep(job, delay)

    def _abandon(self, job: Job) -> None:
        """Under the lock: ``job`` will not be sent (closing: deadline passed, or down);
        ``_abandon_queue`` says it with the rest."""
        self._stats["uploads_abandoned"] += 1
        self._unsent += 1

    def _sleep(self, job: Job, delay: float) -> None:
        """Back off for ``delay`` s, less if the job is dropped or the deadline comes."""
        end = time.monotonic() + delay
        with self._cond:
            while not job.dropped and not (self._closing and self._failing is not None
                                           and self._failing.outcome is Outcome.UNREACHABLE):
                left = min(end, self._deadline) - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)
