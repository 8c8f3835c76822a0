"""Ask the backend which symbols it lacks, then upload ours where they are better.

Contract (docs: /work/shared/datadog-contracts.md, "Symbol upload"):

- Query: ``POST https://api.{site}/api/v2/profiles/symbols/query``, headers ``DD-API-KEY``
  (+ ``DD-APPLICATION-KEY`` when given), ``Content-Type: application/json``; JSON:API body
  ``{"data": {"type": "symbols-query-request", "id": "symbols-query-request",
  "attributes": {"buildIds": [...], "arch": "x86_64"}}}``, one request per arch and per
  100 ids (a binary is asked for by file_hash, gnu_build_id and go_build_id). Answer:
  ``{"data": [{"type": "symbols-query-response", "id": ..., "attributes": {"buildId",
  "symbolSource", "buildIdType"}}]}``. Shape taken from DataDog/dd-otel-host-profiler
  (reporter/symbol_query.go, symbol_uploader.go); unknown sources count as ``none``.
- Upload only where our ``symbol_source`` ranks above the best the backend holds (and above
  what the local state file records): ``POST https://sourcemap-intake.{site}/api/v2/srcmap``,
  headers ``DD-API-KEY``, ``DD-EVP-ORIGIN: ddprofiler``, ``DD-EVP-ORIGIN-VERSION``;
  multipart parts ``elf_symbol_file`` (the debug-only ELF, streamed from disk with a
  precomputed Content-Length) and ``event`` (filename ``event.json``, the metadata).
- ``dynamic_symbol_table`` alone is never uploaded: the debug-only file (like objcopy
  --only-keep-debug's) has .dynsym as NOBITS, so the file would carry no symbol (the reference profiler's default too).
- Bounded: at most ``max_bytes_in_flight`` request-body bytes are being sent at once (a
  single larger file takes the whole budget alone); ``max_workers`` threads; retries with
  exponential backoff on 5xx and connection errors, none on 4xx.
- Dry run: the query IS sent (read-only, like ``datadog-ci --dry-run``: every check but the
  upload), debug files are built and verified, nothing is uploaded or recorded.
- State: ``state_path`` (JSON ``{"uploaded": {id: symbol_source}}``, written atomically) so
  a restart does not upload again; ``None`` disables it.
- The API and application keys never appear in logs, exceptions or ``repr``.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import json
import logging
import os
import tempfile
import threading
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional, TypeVar

from ddprofiler.errors import DebugFileError, InvalidBinaryError

if TYPE_CHECKING:
    from ddprofiler._native import BinaryInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Symbol sources as the backend ranks them, worst first (the core's SYMBOL_SOURCES; kept
#: here too so that ranking a backend answer needs no extension).
SOURCES = ("none", "dynamic_symbol_table", "symbol_table", "gopclntab", "debug_info")
RANK = {name: i for i, name in enumerate(SOURCES)}


def _rank(source: str) -> int:
    return RANK.get(source, 0)
QUERY_PATH, INTAKE_PATH, QUERY_BATCH, CHUNK = "/api/v2/profiles/symbols/query", \
    "/api/v2/srcmap", 100, 1 << 16
UPLOADABLE_ARCHES = ("x86_64", "aarch64")


def _endpoint(base: str, path: str) -> str:
    """base + path, unless base already ends with path (some tools document the intake
    variable as the full URL, others as its base)."""
    base = base.rstrip("/")
    return base if base.endswith(path) else base + path


def default_state_path() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "ddprofiler", "symbols-uploaded.json")


def _version() -> str:
    try:
        from .. import __version__
        return __version__
    except ImportError:  # pragma: no cover
        return "0.0.0+unknown"


class UploadError(RuntimeError):
    def __init__(self, msg: str, retryable: bool = False):
        super().__init__(msg)
        self.retryable = retryable


@dataclasses.dataclass
class Summary:
    uploaded: list[str] = dataclasses.field(default_factory=list)      # paths
    would_upload: list[str] = dataclasses.field(default_factory=list)  # paths (dry run)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (path, reason)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (path, error)

    @property
    def ok(self) -> bool:
        return not self.failed


class ByteBudget:
    """A semaphore counted in bytes; a request larger than the capacity waits for all."""

    def __init__(self, capacity: int):
        self.capacity, self.used = max(1, int(capacity)), 0
        self._cv = threading.Condition()

    def acquire(self, n: int) -> int:
        n = min(n, self.capacity)
        with self._cv:
            self._cv.wait_for(lambda: self.used + n <= self.capacity)
            self.used += n
        return n

    def release(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


class SymbolUploader:
    def __init__(self, api_key: str, app_key: Optional[str] = None, site: str = "datadoghq.com",
                 *, max_bytes_in_flight: int = 64 << 20, max_workers: int = 4,
                 dry_run: bool = False, state_path: Optional[str] = "default",
                 api_base_url: Optional[str] = None, intake_base_url: Optional[str] = None,
                 timeout: float = 60, retries: int = 3, backoff: float = 1.0,
                 origin_version: Optional[str] = None):
        if not api_key:
            raise ValueError("an API key is required")
        self._api_key, self._app_key, self.site = api_key, app_key, site
        self.query_url = _endpoint(api_base_url or f"https://api.{site}", QUERY_PATH)
        self.intake_url = _endpoint(intake_base_url or f"https://sourcemap-intake.{site}", INTAKE_PATH)
        self.budget = ByteBudget(max_bytes_in_flight)
        self.max_workers, self.dry_run, self.timeout = max(1, max_workers), dry_run, timeout
        self.retries, self.backoff = max(0, retries), backoff
        self.origin_version = origin_version or _version()
        self.state_path = default_state_path() if state_path == "default" else state_path
        self._state_lock = threading.Lock()
        self._state = self._load_state()

    def __repr__(self) -> str:
        return (f"SymbolUploader(site={self.site!r}, dry_run={self.dry_run}, "
                f"max_bytes_in_flight={self.budget.capacity})")

    def _redact(self, text: str) -> str:
        for secret in (self._api_key, self._app_key):
            if secret:
                text = text.replace(secret, "***")
        return text

    # ---- state -------------------------------------------------------------------------
    def _load_state(self) -> dict[str, str]:
        if not self.state_path:
            return {}
        try:
            with open(self.state_path) as f:
                data = json.load(f).get("uploaded", {})
            return {str(k): v for k, v in data.items() if v in RANK}
        except (OSError, ValueError, AttributeError):
            return {}

    def _record(self, info: BinaryInfo, source: str) -> None:
        with self._state_lock:
            for i in info.build_ids:
                if _rank(source) > _rank(self._state.get(i, "none")):
                    self._state[i] = source
            if not self.state_path:
                return
            os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
            tmp = f"{self.state_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"uploaded": self._state}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.state_path)

    def recorded_source(self, info: BinaryInfo) -> str:
        with self._state_lock:
            return max((self._state.get(i, "none") for i in info.build_ids), key=_rank,
                       default="none")

    # ---- HTTP --------------------------------------------------------------------------
    def _post(self, url: str, headers: dict[str, str], body: Any, length: int) -> bytes:
        u = urllib.parse.urlsplit(url)
        conn: http.client.HTTPConnection
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname or "", u.port, timeout=self.timeout)
        else:
            conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=self.timeout)
        try:
            conn.request("POST", u.path or "/", body=body,
                         headers={**headers, "Content-Length": str(length)})
            resp = conn.getresponse()
            data = resp.read(1 << 20)
        except (OSError, http.client.HTTPException) as e:
            raise UploadError(self._redact(f"POST {url}: {type(e).__name__}: {e}"), True) \
                from None
        finally:
            conn.close()
        if resp.status >= 300:
            snippet = self._redact(data[:300].decode("utf-8", "replace"))
            raise UploadError(f"POST {url}: HTTP {resp.status}: {snippet}", resp.status >= 500)
        return data

    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries):
            try:
                return fn()
            except UploadError as e:
                if not e.retryable:
                    raise
                delay = self.backoff * (2 ** attempt)
                log.warning("%s failed (%s), retrying in %.1fs", what, e, delay)
                time.sleep(delay)
        return fn()

    def _auth(self) -> dict[str, str]:
        h = {"DD-API-KEY": self._api_key}
        if self._app_key:
            h["DD-APPLICATION-KEY"] = self._app_key
        return h

    def query(self, build_ids: list[str], arch: str) -> dict[str, str]:
        """Best symbol source the backend holds, by build id (missing ids are absent)."""
        best: dict[str, str] = {}
        ids = list(dict.fromkeys(build_ids))
        for start in range(0, len(ids), QUERY_BATCH):
            body = json.dumps({"data": {
                "type": "symbols-query-request", "id": "symbols-query-request",
                "attributes": {"buildIds": ids[start:start + QUERY_BATCH], "arch": arch}}}
            ).encode()
            headers = {**self._auth(), "Content-Type": "application/json"}

            def ask(h: dict[str, str] = headers, b: bytes = body) -> bytes:
                return self._post(self.query_url, h, b, len(b))
            raw = self._with_retries("symbols query", ask)
            try:
                items = json.loads(raw or b"{}").get("data") or []
            except (ValueError, AttributeError):
                raise UploadError("symbols query: answer is not JSON:API") from None
            for item in items:
                attrs = (item or {}).get("attributes") or {}
                bid, src = attrs.get("buildId"), attrs.get("symbolSource")
                if bid and src in RANK and _rank(src) > _rank(best.get(bid, "none")):
                    best[bid] = src
        return best

    def _multipart(self, info: BinaryInfo, debug_path: str, source: str
                   ) -> tuple[str, Callable[[], Iterator[bytes]], int]:
        boundary = uuid.uuid4().hex
        event = json.dumps({
            "type": "elf_symbol_file", "arch": info.arch,
            "gnu_build_id": info.gnu_build_id or "", "go_build_id": info.go_build_id or "",
            "file_hash": info.file_hash, "symbol_source": source,
            "filename": os.path.basename(info.path), "origin": "ddprofiler",
            "origin_version": self.origin_version}).encode()
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"elf_symbol_file\"; "
                f"filename=\"elf_symbol_file\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode()
        mid = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"event\"; "
               f"filename=\"event.json\"\r\nContent-Type: application/json\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        size = os.path.getsize(debug_path)

        def body() -> Iterator[bytes]:
            yield head
            with open(debug_path, "rb") as f:
                yield from iter(lambda: f.read(CHUNK), b"")
            yield mid + event + tail
        return f"multipart/form-data; boundary={boundary}", body, \
            len(head) + size + len(mid) + len(event) + len(tail)

    def send(self, info: BinaryInfo, debug_path: str, source: str) -> None:
        ctype, body, length = self._multipart(info, debug_path, source)
        headers = {"DD-API-KEY": self._api_key, "DD-EVP-ORIGIN": "ddprofiler",
                   "DD-EVP-ORIGIN-VERSION": self.origin_version, "Content-Type": ctype}

        def attempt() -> bytes:
            held = self.budget.acquire(length)
            try:
                return self._post(self.intake_url, headers, body(), length)
            finally:
                self.budget.release(held)
        self._with_retries(f"symbol upload of {info.path}", attempt)

    # ---- orchestration -----------------------------------------------------------------
    @staticmethod
    def _local_source(info: BinaryInfo) -> str:
        src = info.symbol_source
        return "none" if src == "dynamic_symbol_table" else src

    def _process(self, info: BinaryInfo, source: str, summary: Summary,
                 lock: threading.Lock) -> None:
        with tempfile.TemporaryDirectory(prefix="ddprof-sym-") as tmp:
            out = os.path.join(tmp, os.path.basename(info.path) + ".debug")
            stats = info.write_debug_file(out)
            log.debug("debug file of %s from %s: %d bytes", info.path, stats.source,
                      stats.output_bytes)
            if self.dry_run:
                log.info("dry run: would upload %s (%s, %d bytes, build id %s)", info.path,
                         source, os.path.getsize(out), info.gnu_build_id or info.file_hash)
                with lock:
                    summary.would_upload.append(info.path)
                return
            self.send(info, out, source)
        self._record(info, source)
        log.info("uploaded symbols of %s (%s)", info.path, source)
        with lock:
            summary.uploaded.append(info.path)

    def upload_infos(self, infos: Iterable[BinaryInfo], summary: Optional[Summary] = None
                     ) -> Summary:
        summary, lock = summary or Summary(), threading.Lock()
        todo: list[tuple[BinaryInfo, str]] = []
        seen: set[str] = set()
        for info in infos:
            src = self._local_source(info)
            if seen.intersection(info.build_ids):
                summary.skipped.append((info.path, "same build as another path"))
            elif info.arch not in UPLOADABLE_ARCHES:
                summary.skipped.append((info.path, f"unsupported arch {info.arch}"))
            elif src == "none":
                summary.skipped.append((info.path, "no symbols to upload"))
            elif _rank(self.recorded_source(info)) >= _rank(src):
                summary.skipped.append((info.path, "already uploaded (state file)"))
            else:
                todo.append((info, src))
                seen.update(info.build_ids)
        remote: dict[str, Optional[dict[str, str]]] = {}
        for arch in sorted({i.arch for i, _ in todo}):
            ids = [b for i, _ in todo if i.arch == arch for b in i.build_ids]
            try:
                remote[arch] = self.query(ids, arch)
            except UploadError as e:
                for i, _ in todo:
                    if i.arch == arch:
                        summary.failed.append((i.path, f"symbols query: {self._redact(str(e))}"))
                remote[arch] = None
        work: list[tuple[BinaryInfo, str]] = []
        for info, src in todo:
            have = remote.get(info.arch)
            if have is None:
                continue
            best = max((have.get(b, "none") for b in info.build_ids), key=_rank)
            if _rank(best) >= _rank(src):
                summary.skipped.append((info.path, f"backend already has {best}"))
            else:
                work.append((info, src))
        with concurrent.futures.ThreadPoolExecutor(self.max_workers) as pool:
            futs = {pool.submit(self._process, i, s, summary, lock): i for i, s in work}
            for fut in concurrent.futures.as_completed(futs):
                try:
                    fut.result()
                except (UploadError, DebugFileError, InvalidBinaryError, OSError) as e:
                    msg = self._redact(str(e))
                    log.error("symbol upload of %s failed: %s", futs[fut].path, msg)
                    with lock:
                        summary.failed.append((futs[fut].path, msg))
        return summary

    def upload_paths(self, paths: list[str], root: str = "/") -> Summary:
        """Upload the symbols of files, and of the ELF files found in directories."""
        from . import inspect  # the extension is needed from here on

        summary, infos = Summary(), []
        for path in iter_elf_files(paths, summary):
            try:
                infos.append(inspect(path, root=root))
            except InvalidBinaryError as e:
                summary.failed.append((path, str(e)))
        return self.upload_infos(infos, summary)


def iter_elf_files(paths: list[str], summary: Summary) -> Iterator[str]:
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _, files in os.walk(p):
                for name in sorted(files):
                    full = os.path.join(dirpath, name)
                    if not os.path.islink(full) and _is_elf(full):
                        yield full
        elif os.path.isfile(p):
            yield p
        else:
            summary.failed.append((p, "no such file or directory"))


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False
