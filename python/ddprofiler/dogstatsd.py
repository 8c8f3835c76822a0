"""The period's figures as DogStatsD metrics to the Agent, as Datadog's own components
report themselves (off unless ``--dogstatsd-url`` / ``DD_DOGSTATSD_URL`` is set).

``Metrics(url, tags)``: ``url`` is ``udp://host:port`` or ``unix:///path/dsd.socket``
(the Agent's ``dogstatsd_socket``, a datagram socket). ``period(figures)`` (the runner's
``on_period`` figures) sends one datagram of these metrics, tagged with ``tags``
(``env``, ``host``, ``profiler_version``):

- counts of the period: ``ddprofiler.samples``, ``ddprofiler.samples_lost``,
  ``ddprofiler.stacks_cut_short``, ``ddprofiler.errors``, ``ddprofiler.profiles``,
  ``ddprofiler.uploads.sent``, ``.failed``, ``.dropped``, ``.retries``;
- gauges: ``ddprofiler.queue.profiles``, ``ddprofiler.queue.bytes``,
  ``ddprofiler.destination.failing`` (1 while uploads fail, else 0).

Sending never blocks nor raises: the socket is non-blocking, a failure is logged once at
warning (then at debug) and counted (``send_errors``). Hand-written rather than the
``datadog`` package's client: the wire format is one text line per metric
(``name:value|type|#tag,tag``) and a dependency would be larger than this module.
"""
from __future__ import annotations

import logging
import socket
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 8192  # the Agent's default dogstatsd_buffer_size
_UPLOAD_COUNTS = (("uploads_ok", "sent"), ("uploads_failed", "failed"),
                  ("uploads_dropped", "dropped"), ("uploads_retried", "retries"))


def parse_url(url: str) -> Tuple[int, Any]:
    """(socket family, address) of a DogStatsD URL. Raises ValueError."""
    parts = urlsplit(url.strip())
    if parts.scheme == "udp":
        try:
            port = parts.port or 8125
        except ValueError:
            raise ValueError(f"'{url}' has an invalid port") from None
        if not parts.hostname:
            raise ValueError(f"'{url}' names no host (udp://host:8125)")
        return socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET, (parts.hostname, port)
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise ValueError(f"'{url}' names no absolute socket path (unix:///var/run/datadog/dsd.socket)")
        return socket.AF_UNIX, parts.path
    raise ValueError(f"'{url}' is not a udp://host:port or unix:///path DogStatsD URL")


class Metrics:
    """See the module docstring."""

    def __init__(self, url: str, tags: Sequence[str]) -> None:
        self.url = url
        self._family, self._address = parse_url(url)
        self._tags = "|#" + ",".join(tags) if tags else ""
        self._sock: Optional[socket.socket] = None
        self._last: Dict[str, int] = {}
        self._warned = False
        self.send_errors = 0

    def period(self, figures: Mapping[str, Any]) -> None:
        uploads = figures.get("uploads") or {}
        dest = figures.get("destination") or {}
        lines = [
            self._line("samples", figures.get("samples", 0), "c"),
            self._line("samples_lost", figures.get("samples_lost", 0), "c"),
            self._line("stacks_cut_short", sum((figures.get("stacks_cut_short") or {}).values()), "c"),
            self._line("errors", sum((figures.get("errors") or {}).values()), "c"),
            self._line("profiles", figures.get("profiles", 0), "c"),
        ]
        for key, name in _UPLOAD_COUNTS:
            now = int(uploads.get(key, 0))
            lines.append(self._line(f"uploads.{name}", now - self._last.get(key, 0), "c"))
            self._last[key] = now
        lines += [
            self._line("queue.profiles", uploads.get("queue_len", 0), "g"),
            self._line("queue.bytes", uploads.get("queue_bytes", 0), "g"),
            self._line("destination.failing", int(dest.get("state") == "failing"), "g"),
        ]
        memory = figures.get("memory") or {}
        if memory.get("resident_bytes"):
            lines.append(self._line("memory.resident_bytes", memory["resident_bytes"], "g"))
            lines.append(self._line("memory.budget_bytes", memory.get("budget_bytes", 0), "g"))
        self._send(lines)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _line(self, name: str, value: Any, kind: str) -> str:
        return f"ddprofiler.{name}:{int(value)}|{kind}{self._tags}"

    def _send(self, lines: List[str]) -> None:
        datagrams, current = [], ""
        for line in lines:  # several metrics per datagram, newline-separated, under the size
            if current and len(current) + 1 + len(line) > _MAX_DATAGRAM:
                datagrams.append(current)
                current = ""
            current = f"{current}\n{line}" if current else line
        if current:
            datagrams.append(current)
        try:
            if self._sock is None:
                self._sock = socket.socket(self._family, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            for datagram in datagrams:
                self._sock.sendto(datagram.encode(), self._address)
        except OSError as e:
            self.send_errors += 1
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot send metrics to DogStatsD at %s (%s); %d sends failed so far",
                    self.url, e.strerror or e, self.send_errors)
