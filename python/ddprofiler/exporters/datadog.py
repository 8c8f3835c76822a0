"""Upload profiles to the Datadog Agent, or straight to the intake (agentless).

Contract (``datadog-contracts.md``, "Profile upload"):

- through the Agent: ``POST {agent_url}/profiling/v1/input``; ``agent_url`` is
  ``http://host:port``, ``https://...`` or ``unix:///path/to/apm.socket``; no API key sent;
- agentless (``agentless_site`` or ``intake_url`` given):
  ``POST https://intake.profile.{site}/api/v2/profile`` (or ``intake_url``, e.g. a test
  server) with ``DD-API-KEY``; an API key is then required (``ValueError`` otherwise);
- the request is ``payload.build_request``'s; transport is stdlib ``http.client``, one
  connection per upload (``Connection: close``), HTTPS verified against the system CAs or
  ``ca_file``; ``connect_timeout`` bounds the connection (and TLS handshake),
  ``request_timeout`` the whole exchange (a watchdog shuts the socket down at the deadline);
- 2xx is success; 5xx, connection errors and timeouts are retried (``uploader.Uploader``);
  4xx and other answers are not (logged with the status and the first line of the body);
- the API key never appears in logs, exceptions, ``repr`` or stats: at most its last 4
  characters are shown (``mask_key``).
"""
from __future__ import annotations

import http.client
import logging
import re
import socket
import ssl
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import urlsplit

from .payload import ProfilePayload, base_headers, build_body, entity_headers
from .uploader import Job, Outcome, Result, Uploader

log = logging.getLogger(__name__)

AGENT_PATH = "/profiling/v1/input"
INTAKE_URL = "https://intake.profile.{site}/api/v2/profile"
_MAX_BODY_READ = 4096
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")  # visible ASCII: safe in a header, never echoed


def mask_key(key: Optional[str]) -> str:
    """``***abcd`` (last 4 characters) for a key of 16+ characters, else ``***``."""
    if not key:
        return "<none>"
    return "***" + key[-4:] if len(key) >= 16 else "***"


class _Secret:
    """Holds the API key; its ``repr``/``str`` show only ``mask_key``'s form."""

    __slots__ = ("_value",)

    def __init__(self, value: Optional[str]) -> None:
        self._value = value or None

    def reveal(self) -> Optional[str]:
        return self._value

    def __repr__(self) -> str:
        return mask_key(self._value)

    __str__ = __repr__


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix stream socket (``Host: localhost``)."""

    def __init__(self, path: str, timeout: Optional[float] = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _shutdown(conn: Optional[http.client.HTTPConnection]) -> None:
    """Make every blocking operation on ``conn``'s socket fail now."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class HttpSender:
    """POSTs (headers, body) to one URL; a ``Sender`` for ``uploader.Uploader``."""

    def __init__(self, url: str, *, api_key: Optional[str] = None, connect_timeout: float = 5,
                 request_timeout: float = 30, ca_file: Optional[str] = None,
                 receiver: str = "the Agent",
                 on_ok: Optional[Callable[[bytes], None]] = None) -> None:
        parts = urlsplit(url)
        self.receiver = receiver  # named in failure hints: "is the Agent running ..."
        self._on_ok = on_ok  # given the body (its first _MAX_BODY_READ bytes) of each 2xx answer
        self.scheme = parts.scheme
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"no socket path in {url!r}")
            self._unix_path, self.path = parts.path, AGENT_PATH
        elif parts.scheme in ("http", "https"):
            if not parts.hostname:
                raise ValueError(f"no host in {url!r}")
            self._host, self._port = parts.hostname, parts.port
            self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        else:
            raise ValueError(f"unsupported URL scheme in {url!r} (http, https or unix)")
        self.url = url
        self._api_key = _Secret(api_key)
        self._connect_timeout, self._request_timeout = connect_timeout, request_timeout
        self._tls = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        self._lock = threading.Lock()
        self._conn: Optional[http.client.HTTPConnection] = None

    def __repr__(self) -> str:
        return f"HttpSender(url={self.url!r}, api_key={self._api_key!r})"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.scheme == "unix":
            return UnixHTTPConnection(self._unix_path, timeout=timeout)
        if self.scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _scrub(self, text: str) -> str:
        key = self._api_key.reveal()
        return text.replace(key, mask_key(key)) if key else text

    def _reason(self, e: BaseException) -> Tuple[str, str]:
        """(key, one line) of a failure to reach the receiver, in an operator's words."""
        where = self._unix_path if self.scheme == "unix" else f"{self._host}:{self._port or ''}".rstrip(":")
        if isinstance(e, socket.gaierror):
            return "dns", f"DNS lookup of {self._host!r} failed ({e.strerror or e})"
        if isinstance(e, ConnectionRefusedError):
            return "refused", f"connection refused by {where} (is {self.receiver} running and listening there?)"
        if isinstance(e, FileNotFoundError) and self.scheme == "unix":
            return "no-socket", f"no socket at {where} (is {self.receiver} running with this socket?)"
        if isinstance(e, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
            return "reset", f"connection to {where} closed by the receiver ({type(e).__name__})"
        detail = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return type(e).__name__, f"cannot reach {where}: {type(e).__name__}: {detail}"

    def abort(self) -> None:
        """Shut down the connection of the request in progress, if any."""
        with self._lock:
            conn = self._conn
        _shutdown(conn)

    def send(self, data: Tuple[Dict[str, str], bytes], timeout: float) -> Result:
        headers, body = data
        total = min(self._request_timeout, timeout)
        deadline = time.monotonic() + total
        conn = self._connection(max(0.001, min(self._connect_timeout, total)))
        with self._lock:
            self._conn = conn
        watchdog = threading.Timer(total, _shutdown, args=(conn,))
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.connect()
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            headers = {**headers, "Connection": "close"}
            key = self._api_key.reveal()
            if key:
                headers["DD-API-KEY"] = key
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            status, reason = response.status, response.reason
            text = response.read(_MAX_BODY_READ)
        except ssl.SSLCertVerificationError as e:  # a configuration problem: retrying cannot help
            return Result(Outcome.FAIL, type(e).__name__, self._scrub(f"{type(e).__name__}: {e}"))
        except (OSError, http.client.HTTPException) as e:
            late = time.monotonic() >= deadline
            if late or isinstance(e, TimeoutError):
                # It took the connection and never answered: bounded retries, as 5xx.
                return Result(Outcome.RETRY, "timeout", f"no answer: timed out after {total:.3g} s")
            # Nobody there (refused, reset, unreachable): kept and retried while it fits the queue.
            key, message = self._reason(e)
            return Result(Outcome.UNREACHABLE, key, self._scrub(message))
        except ValueError as e:  # an invalid header value: retrying cannot help
            return Result(Outcome.FAIL, "ValueError", self._scrub(f"invalid request: {e}"))
        finally:
            watchdog.cancel()
            with self._lock:
                self._conn = None
            conn.close()
        if 200 <= status < 300:
            if self._on_ok is not None:
                self._on_ok(text)
            return Result(Outcome.OK, f"HTTP {status}")
        lines = text.decode("utf-8", "replace").strip().splitlines()
        first = lines[0][:200] if lines else ""
        message = self._scrub(f"HTTP {status} {reason}: {first}".rstrip(": "))
        outcome = Outcome.RETRY if status >= 500 else Outcome.FAIL
        return Result(outcome, f"HTTP {status}", message)


class AgentExporter:
    """Exporter to the Datadog Agent (default) or the agentless intake."""

    def __init__(self, *, agent_url: str = "http://localhost:8126", api_key: Optional[str] = None,
                 agentless_site: Optional[str] = None, profiler_version: str,
                 max_queue_bytes: int = 64 << 20, connect_timeout: float = 5,
                 request_timeout: float = 30, max_retries: int = 5, backoff_base: float = 1.0,
                 backoff_max: float = 30.0, ca_file: Optional[str] = None,
                 intake_url: Optional[str] = None) -> None:
        self.agentless = bool(agentless_site or intake_url)
        if self.agentless:
            if not api_key:
                raise ValueError("agentless upload needs an API key (DD_API_KEY)")
            if not _KEY_CHARS.match(api_key):
                raise ValueError("the API key has characters that cannot go in an HTTP header")
            url = intake_url or INTAKE_URL.format(site=agentless_site)
            target = f"intake {url}"
        else:
            api_key = None  # the Agent adds its own key: ours never leaves the process
            unix = agent_url.startswith("unix:")  # the sender posts to AGENT_PATH on the socket
            url = agent_url if unix else agent_url.rstrip("/") + AGENT_PATH
            target = f"agent {agent_url}"
        self._sender = HttpSender(url, api_key=api_key, connect_timeout=connect_timeout,
                                  request_timeout=request_timeout, ca_file=ca_file)
        self._headers = base_headers(profiler_version)
        self._uploader = Uploader(self._sender, target=target, max_queue_bytes=max_queue_bytes,
                                  max_retries=max_retries, backoff_base=backoff_base,
                                  backoff_max=backoff_max, name="ddprofiler-upload-datadog")

    def __repr__(self) -> str:
        return f"AgentExporter(agentless={self.agentless}, sender={self._sender!r})"

    @property
    def url(self) -> str:
        return self._sender.url

    def submit(self, payload: ProfilePayload) -> None:
        try:
            content_type, body = build_body(payload)
            headers = {"Content-Type": content_type, **self._headers, **entity_headers(payload)}
        except Exception:  # noqa: BLE001 - a bad payload must not stop the profiler
            log.exception("cannot build the upload of the profile of %r", payload.service)
            self._uploader.count_failed()
            return
        self._uploader.put(Job((headers, body), len(body), payload.service))

    def close(self, timeout: float) -> None:
        self._uploader.close(timeout)

    def stats(self) -> Dict[str, int]:
        return self._uploader.stats()

    def health(self) -> Dict[str, Any]:
        """The destination's state (``uploader.Uploader.health``)."""
        return self._uploader.health()
