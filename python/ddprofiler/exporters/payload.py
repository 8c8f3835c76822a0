"""What an exporter receives, and the Datadog profile-upload request built from it.

Contract (``datadog-contracts.md``, "Profile upload"):

- ``ProfilePayload``: one serialized, *uncompressed* pprof Profile with its time range
  (Unix epoch ns), its ``k:v`` tags (already validated, in order) and the container it
  belongs to, if any.
- ``Exporter``: ``submit(payload)`` never blocks on I/O and never raises; ``close(timeout)``
  stops accepting, drains until ``timeout`` seconds, then gives up and counts what was not
  sent; ``stats()`` returns counters (``uploads_ok``, ``uploads_failed``, ...).
- ``build_request(payload, api_key=..., profiler_version=...)`` -> ``(headers, body)``,
  pure: a ``multipart/form-data`` body with part ``event`` (filename ``event.json``,
  ``application/json``: exactly ``attachments``, ``tags_profiler``, ``start``, ``end``,
  ``family``, ``version``, as the eBPF host profiler sends them) and part ``cpu.pprof``
  (name = filename, the pprof compressed with zstd level 1 like libdatadog); headers
  ``Content-Type``, ``DD-EVP-ORIGIN``, ``DD-EVP-ORIGIN-VERSION``, ``User-Agent``, the entity
  headers (``Datadog-Container-ID`` + ``Datadog-Entity-ID: ci-<id>``, or only
  ``Datadog-Entity-ID: in-<cgroup inode>``) and ``DD-API-KEY`` only when a key is given
  (agentless).
"""
from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import dataclass, field
from typing import Dict, Optional, Protocol, Sequence, Tuple

import zstandard

ORIGIN = "ddprofiler"
ATTACHMENT = "cpu.pprof"
EVENT_VERSION = "4"
ZSTD_LEVEL = 1
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_NS_PER_S = 1_000_000_000
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class ProfilePayload:
    """One profile to export. ``pprof`` is left out of ``repr`` (it can be megabytes)."""

    pprof: bytes = field(repr=False)
    start_ns: int
    end_ns: int
    tags: Sequence[str]
    service: str
    container_id: Optional[str] = None
    cgroup_inode: Optional[int] = None
    family: str = "ebpf"


class Exporter(Protocol):
    """Where profiles go. Implementations never raise from these methods."""

    def submit(self, payload: ProfilePayload) -> None:
        """Queue ``payload``; never blocks on I/O."""

    def close(self, timeout: float) -> None:
        """Stop accepting, deliver what is queued until ``timeout`` s, count the rest."""

    def stats(self) -> Dict[str, int]:
        """Counters: uploads_ok, uploads_failed, uploads_dropped, ..., queue_bytes, queue_len."""


def rfc3339_ns(epoch_ns: int) -> str:
    """``2026-11-25T20:00:00.000000000Z``: UTC, 9 fraction digits (exact, no float)."""
    seconds, nanos = divmod(int(epoch_ns), _NS_PER_S)
    when = _EPOCH + datetime.timedelta(seconds=seconds)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"


def event_json(payload: ProfilePayload) -> Dict[str, object]:
    """The ``event.json`` object of ``payload``."""
    return {
        "attachments": [ATTACHMENT],
        "tags_profiler": ",".join(payload.tags),
        "start": rfc3339_ns(payload.start_ns),
        "end": rfc3339_ns(payload.end_ns),
        "family": payload.family,
        "version": EVENT_VERSION,
    }


def compress_pprof(pprof: bytes) -> bytes:
    """The pprof as one zstd frame (level 1, content size recorded)."""
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(pprof)


def entity_headers(payload: ProfilePayload) -> Dict[str, str]:
    """Origin-detection headers of the container ``payload`` belongs to, if known."""
    if payload.container_id:
        return {
            "Datadog-Container-ID": payload.container_id,
            "Datadog-Entity-ID": f"ci-{payload.container_id}",
        }
    if payload.cgroup_inode is not None:
        return {"Datadog-Entity-ID": f"in-{int(payload.cgroup_inode)}"}
    return {}


def _multipart(parts: Sequence[Tuple[Dict[str, str], bytes]]) -> Tuple[str, bytes]:
    """(boundary, body) of ``parts`` (each: part headers, content), CRLF line ends."""
    while True:
        boundary = secrets.token_hex(16)
        marker = boundary.encode()
        if not any(marker in content for _, content in parts):
            break
    chunks = []
    for headers, content in parts:
        chunks.append(b"--" + marker + b"\r\n")
        for name, value in headers.items():
            chunks.append(f"{name}: {value}\r\n".encode())
        chunks.extend((b"\r\n", content, b"\r\n"))
    chunks.append(b"--" + marker + b"--\r\n")
    return boundary, b"".join(chunks)


def build_body(payload: ProfilePayload, compressed: Optional[bytes] = None) -> Tuple[str, bytes]:
    """(Content-Type, multipart body) of ``payload``; ``compressed`` skips the zstd step."""
    if compressed is None:
        compressed = compress_pprof(payload.pprof)
    event = json.dumps(event_json(payload), separators=(",", ":")).encode()
    boundary, body = _multipart([
        ({"Content-Disposition": 'form-data; name="event"; filename="event.json"',
          "Content-Type": "application/json"}, event),
        ({"Content-Disposition": f'form-data; name="{ATTACHMENT}"; filename="{ATTACHMENT}"',
          "Content-Type": "application/octet-stream"}, compressed),
    ])
    return f"multipart/form-data; boundary={boundary}", body


def base_headers(profiler_version: str) -> Dict[str, str]:
    """Headers every upload carries, whatever the payload."""
    return {
        "DD-EVP-ORIGIN": ORIGIN,
        "DD-EVP-ORIGIN-VERSION": profiler_version,
        "User-Agent": f"{ORIGIN}/{profiler_version}",
    }


def build_request(
    payload: ProfilePayload, *, api_key: Optional[str] = None, profiler_version: str
) -> Tuple[Dict[str, str], bytes]:
    """Headers and multipart body of the upload of ``payload`` (pure)."""
    content_type, body = build_body(payload)
    headers = {"Content-Type": content_type, **base_headers(profiler_version),
               **entity_headers(payload)}
    if api_key:
        headers["DD-API-KEY"] = api_key
    return headers, body
