"""A local HTTP server playing Datadog's symbol query and upload endpoints
(/api/v2/profiles/symbols/query and /api/v2/srcmap), with what it was sent, for tests.

A request the server cannot take (another path, a malformed query) is answered 400 and
recorded in ``errors``; the fixture fails the test at teardown when there are any (an
assertion in the server's thread would only reach the log, never the test)."""
from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import threading
import time

import pytest
from ddprofiler.symbols.upload import INTAKE_PATH, QUERY_PATH


class Backend:
    def __init__(self):
        self.have, self.queries, self.uploads = {}, [], []
        self.errors = []  # what the server could not take: the fixture fails the test on them
        self.statuses = []  # statuses to answer the next uploads with, before 202
        self.in_flight = self.max_in_flight = self.attempts = self.active = 0
        self.gather = 0  # an upload waits (up to 0.5 s) for this many to be active at once
        self.lock = threading.Lock()


def make_handler(be: Backend):
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _reply(self, code, body=b"{}"):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _refuse(self, why, n):
            self.rfile.read(n)
            with be.lock:
                be.errors.append(f"POST {self.path}: {why}")
            self._reply(400)

        def do_POST(self):
            n = int(self.headers["Content-Length"])
            if self.path == QUERY_PATH:
                raw = self.rfile.read(n)
                if len(raw) < n:
                    # The client went away mid-request (a profiler stopping aborts what it
                    # has in flight): nothing was asked, nothing to answer.
                    return None
                try:
                    body = json.loads(raw)
                    ids = body["data"]["attributes"]["buildIds"]
                except (ValueError, KeyError, TypeError) as e:
                    with be.lock:
                        be.errors.append(f"POST {self.path}: malformed query: {e!r}")
                    return self._reply(400)
                be.queries.append((dict(self.headers), body))
                data = [{"type": "symbols-query-response", "id": str(i),
                         "attributes": {"buildId": b, "symbolSource": be.have[b],
                                        "buildIdType": "gnu_build_id"}}
                        for i, b in enumerate(ids) if b in be.have]
                return self._reply(200, json.dumps({"data": data}).encode())
            if self.path != INTAKE_PATH:
                return self._refuse(f"not {QUERY_PATH} or {INTAKE_PATH}", n)
            with be.lock:
                be.attempts += 1
                be.in_flight += n
                be.active += 1
                be.max_in_flight = max(be.max_in_flight, be.in_flight)
            deadline = time.monotonic() + 0.5
            while be.active < be.gather and time.monotonic() < deadline:
                time.sleep(0.005)
            chunks = []
            try:
                while n:
                    chunk = self.rfile.read(min(n, 4096))
                    chunks.append(chunk)
                    n -= len(chunk)
                    time.sleep(0.001)
            finally:
                with be.lock:
                    be.in_flight -= int(self.headers["Content-Length"])
                    be.active -= 1
            with be.lock:
                status = be.statuses.pop(0) if be.statuses else 202
            if status == 202:
                be.uploads.append((dict(self.headers), b"".join(chunks)))
            self._reply(status)
    return H


@pytest.fixture
def backend():
    be = Backend()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(be))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    be.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield be
    srv.shutdown()
    srv.server_close()
    assert not be.errors, f"the symbol backend refused requests: {be.errors}"


def parts(headers, body) -> dict:
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body)
    return {p.get_param("name", header="content-disposition"):
            (p.get_filename(), p.get_payload(decode=True)) for p in msg.iter_parts()}
