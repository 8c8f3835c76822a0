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
pprof payloads. Non-goals: gRPC, the JSON encoding, gzip.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional

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


class OtlpExporter:
    """To an OpenTelemetry Collector (or any OTLP/HTTP profiles receiver)."""

    def __init__(self, url: str, *, headers: Optional[Mapping[str, str]] = None,
                 max_queue_bytes: int = 64 << 20, connect_timeout: float = 5,
                 request_timeout: float = 30, max_retries: int = 5, backoff_base: float = 1.0,
                 backoff_max: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the OTLP endpoint must be an http:// or https:// URL, not {url!r}")
        self._sender = HttpSender(url, connect_timeout=connect_timeout, request_timeout=request_timeout,
                                  receiver="the OTLP collector")
        self._headers = {"Content-Type": CONTENT_TYPE, **(headers or {})}
        self._uploader = Uploader(self._sender, target=f"OTLP {url}", max_queue_bytes=max_queue_bytes,
                                  max_retries=max_retries, backoff_base=backoff_base,
                                  backoff_max=backoff_max, name="ddprofiler-upload-otlp")

    def __repr__(self) -> str:
        return f"OtlpExporter(url={self.url!r})"  # headers may hold credentials: not shown

    @property
    def url(self) -> str:
        return self._sender.url

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
        return self._uploader.stats()

    def health(self) -> Dict[str, Any]:
        """The destination's state (``uploader.Uploader.health``)."""
        return self._uploader.health()
