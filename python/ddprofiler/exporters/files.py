"""Write each profile to a local file (``--output-dir``).

Contract: one gzip-compressed pprof per payload, named
``<service>-<UTC start yyyymmddThhmmssZ>-<seq>.pprof`` in ``output_dir`` (created if
missing), where ``service`` is sanitized for a file name (``[A-Za-z0-9._-]`` kept, other
characters become ``_``, at most 100 characters, never hidden or empty) and ``seq`` counts
this exporter's payloads from 0. Files are written atomically (temporary file in the same
directory, fsync, ``os.replace``): no reader ever sees a partial file. Writing happens on
a background thread (``uploader.Uploader``) so ``submit`` never blocks on I/O; the queue is
bounded by the compressed bytes; a failed write is logged and counted, not retried.
Statistics use the same names as the Agent exporter (``uploads_ok`` = files written).
"""
from __future__ import annotations

import datetime
import gzip
import itertools
import logging
import os
import re
from typing import Any, Dict, Tuple, Union

from ..pprof.builder import write_atomic
from .payload import ProfilePayload
from .uploader import Job, Outcome, Result, Uploader

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SERVICE_CHARS = 100


def safe_service(service: str) -> str:
    """``service`` as a file name component."""
    name = _UNSAFE.sub("_", service)[:_MAX_SERVICE_CHARS].lstrip(".")
    return name or "unknown"


def file_name(service: str, start_ns: int, seq: int) -> str:
    """``<service>-<yyyymmddThhmmssZ>-<seq>.pprof``."""
    start = datetime.datetime.fromtimestamp(start_ns // 1_000_000_000, datetime.timezone.utc)
    return f"{safe_service(service)}-{start:%Y%m%dT%H%M%SZ}-{seq}.pprof"


class _FileSender:
    """Writes (path, gzip bytes) atomically; a ``Sender`` for ``uploader.Uploader``."""

    def send(self, data: Tuple[str, bytes], timeout: float) -> Result:
        path, blob = data
        try:
            write_atomic(path, blob)
        except OSError as e:
            return Result(Outcome.FAIL, f"OSError {e.errno}", f"cannot write {path}: {e}")
        log.debug("wrote %s (%d bytes)", path, len(blob))
        return Result(Outcome.OK)


class FileExporter:
    """Exporter to a directory of ``.pprof`` files (gzip)."""

    def __init__(self, output_dir: Union[str, "os.PathLike[str]"], *,
                 max_queue_bytes: int = 64 << 20, compresslevel: int = 6) -> None:
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        os.makedirs(self.output_dir, exist_ok=True)
        self._level = compresslevel
        self._seq = itertools.count()
        self._uploader = Uploader(_FileSender(), target=f"directory {self.output_dir}",
                                  max_queue_bytes=max_queue_bytes, max_retries=0,
                                  backoff_base=0, backoff_max=0, name="ddprofiler-write-files")

    def __repr__(self) -> str:
        return f"FileExporter(output_dir={self.output_dir!r})"

    def submit(self, payload: ProfilePayload) -> None:
        try:
            blob = gzip.compress(payload.pprof, compresslevel=self._level, mtime=0)
            name = file_name(payload.service, payload.start_ns, next(self._seq))
        except Exception:  # noqa: BLE001 - a bad payload must not stop the profiler
            log.exception("cannot encode the profile of %r", payload.service)
            self._uploader.count_failed()
            return
        path = os.path.join(self.output_dir, name)
        self._uploader.put(Job((path, blob), len(blob), payload.service))

    def close(self, timeout: float) -> None:
        self._uploader.close(timeout)

    def stats(self) -> Dict[str, int]:
        return self._uploader.stats()

    def health(self) -> Dict[str, Any]:
        """The destination's state (``uploader.Uploader.health``)."""
        return self._uploader.health()
