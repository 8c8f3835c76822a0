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

Beside each ``X.pprof``, ``X.json`` holds what an upload would have carried: ``service``,
``env``, ``version``, ``host``, ``tags`` (the whole ``tags_profiler`` list), ``start`` and
``end`` (RFC 3339), ``container_id``. Retention: the directory keeps at most ``max_files``
profiles and ``max_bytes`` bytes (pprof + json); beyond either, the oldest profiles (by
the order written; at start, by modification time, of the files named as above) are
removed with their json, never the one just written. Removals are counted
(``files_removed``) and logged once at info when retention first removes something.
"""
from __future__ import annotations

import datetime
import gzip
import itertools
import logging
import json
import os
import re
from collections import deque
from typing import Any, Deque, Dict, Tuple, Union

from ..pprof.builder import write_atomic
from .payload import ProfilePayload, rfc3339_ns
from .uploader import Job, Outcome, Result, Uploader

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_SERVICE_CHARS = 100
_OURS = re.compile(r"^[A-Za-z0-9._-]+-\d{8}T\d{6}Z-\d+\.pprof$")


def safe_service(service: str) -> str:
    """``service`` as a file name component."""
    name = _UNSAFE.sub("_", service)[:_MAX_SERVICE_CHARS].lstrip(".")
    return name or "unknown"


def file_name(service: str, start_ns: int, seq: int) -> str:
    """``<service>-<yyyymmddThhmmssZ>-<seq>.pprof``."""
    start = datetime.datetime.fromtimestamp(start_ns // 1_000_000_000, datetime.timezone.utc)
    return f"{safe_service(service)}-{start:%Y%m%dT%H%M%SZ}-{seq}.pprof"


def sidecar(payload: ProfilePayload) -> Dict[str, Any]:
    """The ``.json`` written beside a profile: the tags and times of its upload."""
    first: Dict[str, str] = {}
    for tag in payload.tags:
        key, _, value = tag.partition(":")
        first.setdefault(key, value)
    return {"service": payload.service, "env": first.get("env"), "version": first.get("version"),
            "host": first.get("host"), "tags": list(payload.tags),
            "start": rfc3339_ns(payload.start_ns), "end": rfc3339_ns(payload.end_ns),
            "container_id": payload.container_id}


class _Retention:
    """The profiles in the directory, oldest first, and the bounds they are held to."""

    def __init__(self, directory: str, max_files: int, max_bytes: int) -> None:
        self.max_files, self.max_bytes = max_files, max_bytes
        self.removed = 0
        self._files: Deque[Tuple[str, int]] = deque()  # (pprof path, bytes with its json)
        self._bytes = 0
        found = []
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if _OURS.match(entry.name) and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        found.append((st.st_mtime_ns, entry.name, entry.path, st.st_size))
        except OSError as e:
            log.warning("cannot list %s for retention (%s)", directory, e.strerror or e)
        for _, _, path, size in sorted(found):
            self.add(path, size + _size(_json_path(path)))

    def add(self, path: str, size: int) -> None:
        """Records a profile just written, then removes the oldest beyond the bounds."""
        self._files.append((path, size))
        self._bytes += size
        while len(self._files) > 1 and (len(self._files) > self.max_files or self._bytes > self.max_bytes):
            old, old_size = self._files.popleft()
            self._bytes -= old_size
            for victim in (old, _json_path(old)):
                try:
                    os.unlink(victim)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    log.debug("cannot remove %s (%s)", victim, e.strerror or e)
            if not self.removed:
                log.info("output directory at its bound (%d files, %d bytes): removing the oldest "
                         "profiles", self.max_files, self.max_bytes)
            self.removed += 1
            log.debug("removed %s", old)


def _json_path(pprof_path: str) -> str:
    return pprof_path[: -len(".pprof")] + ".json"


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class _FileSender:
    """Writes (path, gzip bytes, json) atomically and applies the retention; a ``Sender``
    for ``uploader.Uploader`` (one thread: the retention needs no lock of its own)."""

    def __init__(self, retention: _Retention) -> None:
        self.retention = retention

    def send(self, data: Tuple[str, bytes, bytes], timeout: float) -> Result:
        path, blob, meta = data
        try:
            write_atomic(_json_path(path), meta)
            write_atomic(path, blob)
        except OSError as e:
            return Result(Outcome.FAIL, f"OSError {e.errno}", f"cannot write {path}: {e}")
        log.debug("wrote %s (%d bytes)", path, len(blob))
        self.retention.add(path, len(blob) + len(meta))
        return Result(Outcome.OK)


class FileExporter:
    """Exporter to a directory of ``.pprof`` files (gzip)."""

    def __init__(self, output_dir: Union[str, "os.PathLike[str]"], *,
                 max_queue_bytes: int = 64 << 20, compresslevel: int = 6,
                 max_files: int = 1000, max_bytes: int = 1 << 30) -> None:
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        os.makedirs(self.output_dir, exist_ok=True)
        self._level = compresslevel
        self._seq = itertools.count()
        self._retention = _Retention(self.output_dir, max_files, max_bytes)
        self._uploader = Uploader(_FileSender(self._retention), target=f"directory {self.output_dir}",
                                  max_queue_bytes=max_queue_bytes, max_retries=0,
                                  backoff_base=0, backoff_max=0, name="ddprofiler-write-files")

    def __repr__(self) -> str:
        return f"FileExporter(output_dir={self.output_dir!r})"

    def submit(self, payload: ProfilePayload) -> None:
        try:
            blob = gzip.compress(payload.pprof, compresslevel=self._level, mtime=0)
            name = file_name(payload.service, payload.start_ns, next(self._seq))
            meta = json.dumps(sidecar(payload), indent=1).encode()
        except Exception:  # noqa: BLE001 - a bad payload must not stop the profiler
            log.exception("cannot encode the profile of %r", payload.service)
            self._uploader.count_failed()
            return
        path = os.path.join(self.output_dir, name)
        self._uploader.put(Job((path, blob, meta), len(blob) + len(meta), payload.service))

    def close(self, timeout: float) -> None:
        self._uploader.close(timeout)

    def stats(self) -> Dict[str, int]:
        return {**self._uploader.stats(), "files_removed": self._retention.removed}

    def health(self) -> Dict[str, Any]:
        """The destination's state (``uploader.Uploader.health``)."""
        return self._uploader.health()
