"""Symbol upload while profiling: the binaries seen in each period, once each, off the
profiling path.

Input: (pid, path as the process names it, file id) of the native mappings of a period,
from the runner. Output: nothing to the caller; a background thread inspects each new file
through /proc/PID/root (containers, deleted files are skipped when gone) and hands it to a
:class:`SymbolUploader`, which asks the backend first and uploads only where ours is
better. Bounded: at most `max_pending` files wait (the rest are dropped and seen again in a
later period), and `max_known` file ids are remembered. Never raises into the caller.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterable, Optional, Set, Tuple

from .inspect import InvalidBinary, inspect

log = logging.getLogger(__name__)


class BackgroundSymbolUpload:
    def __init__(self, uploader: Any, *, max_pending: int = 256, max_known: int = 65536) -> None:
        self._uploader = uploader
        self._queue: "queue.Queue[Optional[Tuple[int, str, str]]]" = queue.Queue(max_pending)
        self._known: Set[str] = set()
        self._max_known = max_known
        self.stats = {"symbols_seen": 0, "symbols_uploaded": 0, "symbols_skipped": 0,
                      "symbols_failed": 0, "symbols_dropped": 0}
        self._thread = threading.Thread(target=self._run, name="ddprofiler-symbols", daemon=True)
        self._thread.start()

    def offer(self, binaries: Iterable[Tuple[int, str, str]]) -> None:
        """(pid, path, file id) triples; each file id is taken once."""
        for pid, path, file_id in binaries:
            if file_id in self._known:
                continue
            if len(self._known) >= self._max_known:
                self._known.clear()
            try:
                self._queue.put_nowait((pid, path, file_id))
            except queue.Full:
                self.stats["symbols_dropped"] += 1
                continue
            self._known.add(file_id)
            self.stats["symbols_seen"] += 1

    def close(self, timeout: float = 0) -> None:
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pid, path, file_id = item
            root = f"/proc/{pid}/root"
            try:
                info = inspect(root + path, root=root)
                summary = self._uploader.upload_infos([info])
            except (InvalidBinary, OSError) as e:
                log.debug("symbols of %s (pid %d): %s", path, pid, e)
                self.stats["symbols_skipped"] += 1
                continue
            except Exception:  # noqa: BLE001 - the thread must survive anything
                log.exception("symbol upload of %s failed", path)
                self.stats["symbols_failed"] += 1
                continue
            for skipped_path, reason in summary.skipped:
                log.debug("symbols of %s skipped: %s", skipped_path, reason)
            self.stats["symbols_uploaded"] += len(summary.uploaded)
            self.stats["symbols_skipped"] += len(summary.skipped)
            self.stats["symbols_failed"] += len(summary.failed)
            for failed_path, reason in summary.failed:
                log.warning("symbol upload of %s failed: %s", failed_path, reason)
