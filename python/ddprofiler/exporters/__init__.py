"""Exporters: where profiles go once built.

- ``ProfilePayload``: a serialized (uncompressed) pprof with its time range, tags and
  container; ``Exporter``: the protocol every exporter follows (``submit`` never blocks
  on I/O nor raises, ``close(timeout)`` drains until the deadline, ``stats()``);
- ``AgentExporter`` (``datadog``): to the Datadog Agent or the agentless intake;
- ``FileExporter`` (``files``): gzip pprof files in a directory;
- ``OtlpExporter`` (``otlp``): OTLP/HTTP profiles requests (one per period) to a collector;
- ``build_request`` (``payload``): the Datadog upload request, pure, for tests and tools.

Delivery, queueing, retries and backoff live in ``uploader.Uploader``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from ddprofiler.config import format_bytes

from .datadog import AgentExporter, mask_key
from .files import FileExporter
from .otlp import OtlpExporter, parse_headers
from .payload import Exporter, ProfilePayload, build_request, rfc3339_ns

if TYPE_CHECKING:
    from ddprofiler.config import Settings


def from_settings(settings: "Settings") -> Union[AgentExporter, FileExporter, OtlpExporter]:
    """The exporter the settings ask for: files, the agentless intake, or the Agent."""
    import ddprofiler

    if settings.output_dir:
        return FileExporter(settings.output_dir, max_queue_bytes=settings.max_queue_bytes,
                            max_files=settings.output_max_files, max_bytes=settings.output_max_bytes)
    if settings.exporter == "otlp":
        return OtlpExporter(settings.otlp_endpoint, headers=parse_headers(settings.otlp_headers),
                            max_queue_bytes=settings.max_queue_bytes)
    if settings.agentless:
        return AgentExporter(api_key=settings.api_key, agentless_site=settings.site,
                             profiler_version=ddprofiler.__version__,
                             max_queue_bytes=settings.max_queue_bytes)
    return AgentExporter(agent_url=settings.agent_url, profiler_version=ddprofiler.__version__,
                         max_queue_bytes=settings.max_queue_bytes)


def describe(settings: "Settings") -> str:
    """Where profiles go, for the start-up log line (no secret in it)."""
    if settings.output_dir:
        return (f"writing profiles to {settings.output_dir} every {settings.upload_period:g}s "
                f"(keeping at most {settings.output_max_files} profiles, {format_bytes(settings.output_max_bytes)})")
    if settings.exporter == "otlp":
        return f"sending OTLP profiles to {settings.otlp_endpoint} every {settings.upload_period:g}s"
    if settings.agentless:
        return f"uploading to the {settings.site} intake every {settings.upload_period:g}s"
    return f"uploading to the Agent at {settings.agent_url} every {settings.upload_period:g}s"

__all__ = [
    "AgentExporter",
    "describe",
    "from_settings",
    "Exporter",
    "FileExporter",
    "OtlpExporter",
    "ProfilePayload",
    "build_request",
    "mask_key",
    "rfc3339_ns",
]
