"""OTLP profiles exporter: each period as one OTLP/HTTP export request (protobuf).

Contract: ``OtlpExporter(url)`` posts to ``url`` (``profiles_url(base)`` is a collector's
base URL + ``/v1development/profiles``, as OTEL_EXPORTER_OTLP_ENDPOINT is read; a
signal-specific endpoint is used as it is), ``Content-Type:
application/x-protobuf``, the body an ``ExportProfilesServiceRequest`` of
opentelemetry-proto's profiles signal (``v1development``) that the core encodes
(``rust/ddprof-core/src/otlp``): one profile per (service, env, version, container) under a
resource of its attributes, one dictionary for the request. ``submit_request`` never blocks
on I/O nor raises; queueing, retries and backoff are ``uploader.Uploader``'s (the same as
the Datadog exporter's); ``close(timeout)`` and ``stats()`` as every exporter. Extra headers
(``OTEL_EXPORTER_OTLP_HEADERS``-style ``k=v,k=v``) go with every request and never into a
log. The runner sees an ``OtlpExporter`` and hands whole requests here instead of per-group
pprof payloads. A 200 answer whose ``partial_success`` rejected profiles (OTLP's partial
success) is still a success, not retried, but logged as a warning with the receiver's
message and counted in ``stats()["otlp_profiles_rejected"]``. Non-goals: gRPC, the JSON
encoding, gzip.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from .datadog import HttpSender
from .payload import ProfilePayload
from .uploader import Job, Uploader

log = logging.getLogger(__name__)

PATH = "/v1development/profiles"
CONTENT_TYPE = "application/x-protobuf"


def profiles_url(endpoint: str) -> str:
    """Where requests go: ``endpoint`` + ``/v1development/profiles``, unless it has it."""
    return endpoint if endpoint.rstrip("/").endswith(PATH) else endpoint.rstrip("/") + PATH


def parse_headers(text: Optional[str]) -> Dict[str, str]:
    """``k=v,k2=v2`` (OTEL_EXPORTER_OTLP_HEADERS' form) as a dict. Raises ValueError naming
    the entry (never its value) that has no ``=``."""
    out: Dict[str, str] = {}
    for i, item in enumerate(filter(None, (p.strip() for p in (text or "").split(",")))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"OTLP header #{i + 1} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _fields(buf: bytes) -> Dict[int, Any]:
    """The last value of each field of one protobuf message (varints as ints, length-delimited
    fields as bytes); fixed-width fields skipped. Raises ValueError when malformed."""
    out: Dict[int, Any] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated field")
            out[number], pos = buf[pos:pos + length], pos + length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    return out


def partial_success(body: bytes) -> Optional[Tuple[int, str]]:
    """``(rejected_profiles, error_message)`` of an ``ExportProfilesServiceResponse``'s
    ``partial_success`` (field 1: ``rejected_profiles`` = 1, ``error_message`` = 2), or None
    when it rejected nothing and said nothing (a collector sends the empty message on every
    success), or when the body is not such a response."""
    try:
        inner = _fields(body).get(1)
        fields = _fields(inner) if isinstance(inner, bytes) else {}
    except ValueError:
        return None
    rejected, message = fields.get(1, 0), fields.get(2, b"")
    if not isinstance(rejected, int) or not isinstance(message, bytes) or not (rejected or message):
        return None
    if rejected >= 1 << 63:
        rejected -= 1 << 64  # int64
    return rejected, message.decode("utf-8", "replace")


class OtlpExporter:
    """To an OpenTelemetry Collector (or any OTLP/HTTP profiles receiver)."""

    def __init__(self, url: str, *, headers: Optional[Mapping[str, str]] = None,
                 max_queue_bytes: int = 64 << 20, connect_timeout: float = 5,
                 request_timeout: float = 30, max_retries: int = 5, backoff_base: float = 1.0,
                 backoff_max: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the OTLP endpoint must be an http:// or https:// URL, not {url!r}")
        self._rejected = 0
        self._lock = threading.Lock()
        self._sender = HttpSender(url, connect_timeout=connect_timeout, request_timeout=request_timeout,
                                  receiver="the OTLP collector", on_ok=self._answered)
        self._headers = {"Content-Type": CONTENT_TYPE, **(headers or {})}
        self._uploader = Uploader(self._sender, target=f"OTLP {url}", max_queue_bytes=max_queue_bytes,
                                  max_retries=max_retries, backoff_base=backoff_base,
                                  backoff_max=backoff_max, name="ddprofiler-upload-otlp")

    def __repr__(self) -> str:
        return f"OtlpExporter(url={self.url!r})"  # headers may hold credentials: not shown

    @property
    def url(self) -> str:
        return self._sender.url

    def _answered(self, body: bytes) -> None:
        partial = partial_success(body)
        if partial is None:
            return
        rejected, message = partial
        with self._lock:
            self._rejected += max(rejected, 0)
        log.warning("OTLP receiver %s accepted the request with a partial success: %d profiles "
                    "rejected: %s", self.url, rejected, message[:200] or "(no message)")

    def submit_request(self, body: bytes, label: str = "period") -> None:
        """Queue one export request (serialized ``ExportProfilesServiceRequest``)."""
        self._uploader.put(Job((dict(self._headers), body), len(body), label))

    def submit(self, payload: ProfilePayload) -> None:
        """Per-group pprof payloads are not OTLP: the runner sends whole requests
        (``submit_request``). Counted as failed, never raised."""
        log.debug("OTLP exporter: a pprof payload of %r was not sent", payload.service)
        self._uploader.count_failed()

    def close(self, timeout: float) -> None:
        self._uploader.close(timeout)

    def stats(self) -> Dict[str, int]:
        with self._lock:
            rejected = self._rejected
        return {**self._uploader.stats(), "otlp_profiles_rejected": rejected}

    def health(self) -> Dict[str, Any]:
        """The destination's state (``uploader.Uploader.health``)."""
        return self._uploader.health()
