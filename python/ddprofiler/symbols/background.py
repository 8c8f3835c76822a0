"""Symbol upload while profiling: the binaries seen in each period, once each, off the
profiling path.

Input: the file-backed native ``Mapping`` records of a period (``ddprofiler.profile``),
from the runner; each carries the ``Binary`` the profiler holds open. Output: nothing to
the caller; a background thread inspects each new file through that open descriptor (so a
deleted binary, or one of a process that has exited, still uploads) and hands it to a
:class:`SymbolUploader`, which asks the backend first and uploads only where ours is
better. Bounded: at most ``max_pending`` files wait (the rest are dropped and seen again in
a later period), and ``max_known`` file ids are remembered. Never raises into the caller.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Iterable, Optional, Protocol

from ddprofiler.errors import InvalidBinaryError

if TYPE_CHECKING:
    from ddprofiler._native import Binary, BinaryInfo

    from .upload import Summary

log = logging.getLogger(__name__)


class _Uploader(Protocol):
    def upload_infos(self, infos: Iterable["BinaryInfo"]) -> "Summary": ...


class _HasBinary(Protocol):
    """What is offered: a ``ddprofiler.Mapping`` (or anything with these fields)."""

    @property
    def path(self) -> str: ...
    @property
    def build_id(self) -> str: ...
    @property
    def binary(self) -> Optional["Binary"]: ...


class BackgroundSymbolUpload:
    def __init__(self, uploader: _Uploader, *, max_pending: int = 256, max_known: int = 65536) -> None:
        self._uploader = uploader
        self._queue: "queue.Queue[Optional[Binary]]" = queue.Queue(max_pending)
        self._known: set[str] = set()
        self._max_known = max_known
        self.stats = {"symbols_seen": 0, "symbols_uploaded": 0, "symbols_skipped": 0,
                      "symbols_failed": 0, "symbols_dropped": 0}
        self._thread = threading.Thread(target=self._run, name="ddprofiler-symbols", daemon=True)
        self._thread.start()

    def offer(self, mappings: Iterable[_HasBinary]) -> None:
        """Mappings of a period; each file id is taken once, files not held open are not."""
        for m in mappings:
            binary = m.binary
            if binary is None or not m.build_id or m.build_id in self._known:
                continue
            if len(self._known) >= self._max_known:
                self._known.clear()
            try:
                self._queue.put_nowait(binary)
            except queue.Full:
                self.stats["symbols_dropped"] += 1
                continue
            self._known.add(m.build_id)
            self.stats["symbols_seen"] += 1

    def close(self, timeout: float = 0) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            binary = self._queue.get()
            if binary is None:
                return
            try:
                info = binary.inspect()
                summary = self._uploader.upload_infos([info])
            except (InvalidBinaryError, OSError) as e:
                log.debug("symbols of %s: %s", binary.path, e)
                self.stats["symbols_skipped"] += 1
                continue
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("symbol upload of %s failed", binary.path)
                self.stats["symbols_failed"] += 1
                continue
            for skipped_path, reason in summary.skipped:
                log.debug("symbols of %s skipped: %s", skipped_path, reason)
            self.stats["symbols_uploaded"] += len(summary.uploaded)
            self.stats["symbols_skipped"] += len(summary.skipped)
            self.stats["symbols_failed"] += len(summary.failed)
            for failed_path, reason in summary.failed:
                log.warning("symbol upload of %s failed: %s", failed_path, reason)
