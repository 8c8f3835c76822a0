"""Helpers of the exporter tests: a scriptable fake Agent, multipart parsing, payloads.

- ``FakeAgent``: an HTTP server in a thread, on 127.0.0.1 (TCP, optionally TLS) or on a
  Unix socket, that records every request (``requests``) and answers from a script: an
  int status, ``"hang"`` (accept, read, never answer until stopped), ``"hold"`` (answer 200
  once ``release()`` is called) or a callable ``request -> (status, body)``; ``default``
  answers once the script is used up.
- ``parse_multipart(content_type, body)``: the parts of a ``multipart/form-data`` body,
  parsed by hand and strictly (CRLF, boundary lines), as ``Part`` objects.
- ``make_profile()``: a small hand-made ``ddprofiler.Profile`` (one stack ``leaf <- main``
  in process ``app``, 7 samples); ``make_pprof()``: its serialized pprof, built by
  ``ddprofiler.pprof``.
- ``self_signed_cert(dir)``: (cert, key) for ``localhost``/``127.0.0.1`` via ``openssl``.
- ``AgentEmulator``: Datadog's ``ddapm-test-agent`` (own venv, ``.venv-testagent/``) on
  loopback; ``recorded(agent, token)``: the profile uploads it received in a session.
"""
from __future__ import annotations

import base64
import http.server
import json
import os
import re
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
AGENT_BIN = ROOT / ".venv-testagent" / "bin" / "ddapm-test-agent"

START_NS = 1_764_100_800_123_456_789  # 2025-11-25T20:00:00.123456789Z
END_NS = START_NS + 60_000_000_000


@dataclass
class Request:
    method: str
    path: str
    headers: Dict[str, str]  # names lower-cased
    body: bytes


@dataclass
class Part:
    headers: Dict[str, str]  # names lower-cased
    content: bytes
    name: str = ""
    filename: Optional[str] = None


Answer = Union[int, str, Callable[[Request], Tuple[int, bytes]]]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        request = Request("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        agent = self.server.agent
        answer = agent._record(request)
        if answer == "hang":
            agent._stopped.wait()
            return
        if answer == "hold":
            agent._released.wait()
            answer = 200
        status, text = answer(request) if callable(answer) else (answer, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)
        self.close_connection = True

    def address_string(self) -> str:
        return "test-client"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence the server
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    agent: "FakeAgent"


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    agent: "FakeAgent"


class FakeAgent:
    """See the module docstring. Use as a context manager or call ``stop()``."""

    def __init__(self, script: Sequence[Answer] = (), *, default: Answer = 200, port: int = 0,
                 unix_path: Optional[str] = None,
                 tls: Optional[Tuple[str, str]] = None) -> None:
        self.script: List[Answer] = list(script)
        self.default = default
        self.requests: List[Request] = []
        self._cond = threading.Condition()
        self._stopped = threading.Event()
        self._released = threading.Event()
        if unix_path:
            self._server = _UnixServer(unix_path, _Handler)
            self.url = f"unix://{unix_path}"
        else:
            self._server = _Server(("127.0.0.1", port), _Handler)
            if tls:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(*tls)
                self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            scheme = "https" if tls else "http"
            self.port = self._server.server_address[1]
            self.url = f"{scheme}://127.0.0.1:{self.port}"
        self._server.agent = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _record(self, request: Request) -> Answer:
        with self._cond:
            self.requests.append(request)
            self._cond.notify_all()
            return self.script.pop(0) if self.script else self.default

    def wait_requests(self, n: int, timeout: float = 10.0) -> List[Request]:
        """Wait until ``n`` requests have arrived; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= n, timeout):
                raise AssertionError(f"{len(self.requests)} requests arrived, expected {n}")
            return list(self.requests)

    def release(self) -> None:
        self._released.set()

    def stop(self) -> None:
        self._stopped.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.01)


# ---------------------------------------------------------------- multipart

_DISPOSITION = re.compile(r'^form-data; name="([^"]*)"(?:; filename="([^"]*)")?$')


def parse_multipart(content_type: str, body: bytes) -> List[Part]:
    """Parts of a multipart/form-data body; asserts the layout is exactly RFC 7578's."""
    m = re.fullmatch(r"multipart/form-data; boundary=([0-9A-Za-z'()+_,./:=?-]{1,70})",
                     content_type)
    assert m, f"bad Content-Type {content_type!r}"
    marker = b"--" + m.group(1).encode()
    assert body.startswith(marker + b"\r\n"), body[:100]
    closing = b"\r\n" + marker + b"--\r\n"
    assert body.endswith(closing), body[-100:]
    chunks = body[len(marker) + 2:-len(closing)].split(b"\r\n" + marker + b"\r\n")
    parts = []
    for chunk in chunks:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        assert sep, "part without a blank line after its headers"
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        d = _DISPOSITION.match(headers.get("content-disposition", ""))
        assert d, f"bad Content-Disposition {headers.get('content-disposition')!r}"
        parts.append(Part(headers, content, d.group(1), d.group(2)))
    return parts


# ---------------------------------------------------------------- payloads


def make_profile(count: int = 7):
    """A one-stack ``ddprofiler.Profile``: ``leaf <- main`` in ``/usr/bin/app`` (pid 4242),
    ``count`` samples at 20 Hz over [START_NS, END_NS]."""
    from ddprofiler import Frame, Line, Mapping, Profile, Sample, Stats

    app = Mapping(0x400000, 0x500000, 0, "/usr/bin/app",
                  "0123456789abcdef0123456789abcdef01234567", False)
    return Profile(
        start_ns=START_NS, end_ns=END_NS, frequency=20,
        mappings=[app],
        frames=[Frame(0x401000, app, "native", (Line("leaf", "", "/src/app.c", 7),)),
                Frame(0x402000, app, "native", (Line("main", "", "/src/app.c", 3),))],
        stacks=[(0, 1)],
        samples=[Sample(4242, 4243, 1, 0, count, "worker", "app")],
        stats=Stats({"samples": count, "lost": 0},
                    specs=[("samples", "count", ""), ("lost", "lost", "")]),
    )


def make_pprof(count: int = 7) -> bytes:
    from ddprofiler.pprof import build_profile

    return build_profile(make_profile(count)).SerializeToString()


def self_signed_cert(directory: str) -> Tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


@dataclass
class Upload:
    """A received upload, decoded: its event.json and its decompressed pprof."""

    request: Request
    parts: List[Part] = field(default_factory=list)
    event: dict = field(default_factory=dict)
    compressed: bytes = b""
    pprof: bytes = b""


def decode_upload(request: Request) -> Upload:
    import json

    import zstandard

    parts = parse_multipart(request.headers["content-type"], request.body)
    by_name = {p.name: p for p in parts}
    up = Upload(request, parts)
    up.event = json.loads(by_name["event"].content)
    up.compressed = by_name["cpu.pprof"].content
    up.pprof = zstandard.ZstdDecompressor().decompress(up.compressed)
    return up


# ---------------------------------------------------------------- ddapm-test-agent


class AgentEmulator:
    def __init__(self, workdir: Path, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.socket = str(workdir / "apm.socket")
        self.log = open(workdir / "test-agent.log", "w+")
        ports = {self.port}
        while len(ports) < 3:
            ports.add(free_port())
        otlp_http, otlp_grpc = sorted(ports - {self.port})
        self.proc = subprocess.Popen(
            [str(AGENT_BIN), "--host", "127.0.0.1", "--port", str(self.port),
             "--otlp-http-port", str(otlp_http), "--otlp-grpc-port", str(otlp_grpc),
             "--trace-uds-socket", self.socket, "--log-level", "DEBUG"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_until(self._ready, timeout=30, what="ddapm-test-agent to answer /info")
        except AssertionError as e:
            output = self.output()
            self.close()
            raise AssertionError(f"ddapm-test-agent did not start ({e}):\n{output}") from None

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            code = self.proc.returncode
            raise AssertionError(f"ddapm-test-agent exited {code}:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/info", timeout=1) as r:
                return r.status == 200 and Path(self.socket).exists()
        except OSError:
            return False

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            assert r.status == 200, (path, r.status)
            return r.read()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-5000:]

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def recorded(agent: AgentEmulator, token: Optional[str]) -> list:
    """The profile uploads of the session (every one since the agent started when `token` is
    None and no session was started), as Request objects."""
    query = f"?test_session_token={token}" if token else ""
    got = json.loads(agent.get(f"/test/session/requests{query}"))
    out = []
    for r in got:
        url = urlsplit(r["url"])
        out.append(Request(r["method"], url.path, {k.lower(): v for k, v in r["headers"].items()},
                           base64.b64decode(r["body"])))
    return [r for r in out if r.path == "/profiling/v1/input"]
