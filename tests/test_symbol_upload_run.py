"""--upload-symbols end to end: the continuous profiler profiles a workload, and the
binaries it sees go to a local server playing Datadog's symbol query and intake, once.

The chain workload has a symbol table and a GNU build id; profiles go to --output-dir so no
agent is needed; the state file lives in a per-test XDG_STATE_HOME.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from ddprofiler.symbols import inspect
from helpers import Workload
from symbol_backend import backend, parts  # noqa: F401 (backend is a fixture)
from test_symbol_upload import API_KEY, APP_KEY

pytestmark = pytest.mark.bpf


class Profiler:
    """The profiler as a child process, its stderr in a file that can be read while it runs."""

    def __init__(self, backend, out, state, log, *extra):
        env = {**os.environ, "DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY, "XDG_STATE_HOME": str(state)}
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ddprofiler", "--output-dir", str(out), "--upload-period", "2",
                 "--sampling-rate", "99", "--upload-symbols", "--symbols-api-url", backend.url,
                 "--symbols-intake-url", backend.url, "-v", *extra],
                stdout=subprocess.DEVNULL, stderr=err, env=env)

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the profiler did not exit within 30 s of SIGTERM:\n{self.stderr()}")
        assert self.proc.returncode == 0, self.stderr()
        return self.stderr()


def state_has(state, build_id: str) -> bool:
    path = state / "ddprofiler" / "symbols-uploaded.json"
    return path.exists() and build_id in path.read_text()


def nm(path) -> list:
    syms = [ln.split() for ln in subprocess.run(["nm", path], capture_output=True, text=True,
                                                check=True).stdout.splitlines()]
    return sorted((f[0] if len(f) == 3 else "", f[-1]) for f in syms)


def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def queried_ids(backend) -> set:
    return {b for _, q in backend.queries for b in q["data"]["attributes"]["buildIds"]}


def uploaded_events(backend) -> list:
    return [json.loads(parts(h, body)["event"][1]) for h, body in backend.uploads]


def test_run_uploads_symbols_of_profiled_binaries_once(workloads, backend, tmp_path):
    chain = str(workloads["chain"])
    info = inspect(chain)
    assert info.gnu_build_id and info.symbol_source in ("debug_info", "symbol_table")
    state = tmp_path / "state"

    # 1: the workload's binary is queried and uploaded, with its symbols and no code.
    with Workload([chain, "60"]):
        prof = Profiler(backend, tmp_path / "p1", state, tmp_path / "p1.log")
        # Uploaded, and recorded in the state file (written after the intake answers).
        got = wait_for(lambda: state_has(state, info.gnu_build_id), 30)
        err = prof.stop()
    assert got, f"no upload of {chain}: queries {backend.queries}\n{err}"
    assert info.gnu_build_id in queried_ids(backend)
    (h, body), = [(h, b) for h, b in backend.uploads
                  if json.loads(parts(h, b)["event"][1])["gnu_build_id"] == info.gnu_build_id]
    assert h["DD-API-KEY"] == API_KEY
    p = parts(h, body)
    event = json.loads(p["event"][1])
    assert event["filename"] == "chain" and event["symbol_source"] == info.symbol_source
    assert event["arch"] == info.arch and event["file_hash"] == info.file_hash
    elf = tmp_path / "uploaded.debug"
    elf.write_bytes(p["elf_symbol_file"][1])
    assert nm(str(elf)) == nm(chain) and any(n == "leaf" for _, n in nm(chain))
    text = subprocess.run(["readelf", "-SW", str(elf)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"\.text\s+NOBITS", text), text
    assert API_KEY not in err and APP_KEY not in err
    # The profile names the same build id as the upload.
    from ddprofiler.pprof import read_pprof
    profs = [read_pprof(str(f)) for f in sorted((tmp_path / "p1").glob("*.pprof"))]
    ids = {p.string_table[m.build_id] for p in profs for m in p.mapping
           if p.string_table[m.filename].endswith("/chain")}
    assert ids == {info.gnu_build_id}, ids

    # 2: a restart with the same state file does not upload the workload's binary again.
    n_uploads, n_queries = len(backend.uploads), len(backend.queries)
    skipped = re.compile(r"symbols of \S*/chain skipped: already uploaded \(state file\)")
    with Workload([chain, "60"]):
        prof = Profiler(backend, tmp_path / "p2", state, tmp_path / "p2.log")
        got = wait_for(lambda: skipped.search(prof.stderr()), 30)
        err = prof.stop()
    assert got, f"the workload's binary was not seen again:\n{err}"
    # (other binaries of the host may be new: phase 1 stopped as soon as the workload's went)
    assert info.gnu_build_id not in {e["gnu_build_id"] for e in uploaded_events(backend)[n_uploads:]}
    later = {b for _, q in backend.queries[n_queries:] for b in q["data"]["attributes"]["buildIds"]}
    assert info.gnu_build_id not in later, "the state file should spare even the query"

    # 3: dry run with a fresh state: queried, logged, nothing uploaded.
    n_queries, n_uploads = len(backend.queries), len(backend.uploads)
    would = re.compile(rf"dry run: would upload \S*/chain \({info.symbol_source}")
    with Workload([chain, "60"]):
        prof = Profiler(backend, tmp_path / "p3", tmp_path / "state3", tmp_path / "p3.log", "--symbols-dry-run")
        got = wait_for(lambda: would.search(prof.stderr()), 30)
        err = prof.stop()
    assert got, err
    assert any(info.gnu_build_id in q["data"]["attributes"]["buildIds"] for _, q in backend.queries[n_queries:])
    assert len(backend.uploads) == n_uploads


def test_run_uploads_a_deleted_binary_from_the_open_file(workloads, backend, tmp_path):
    """The binary of a live process is deleted before the profiler ever sees it: the upload
    is made from the file the profiler holds open (through /proc/PID/map_files), not from a
    path, which no longer exists."""
    exe = tmp_path / "chain_gone"
    exe.write_bytes(workloads["chain"].read_bytes())
    exe.chmod(0o755)
    info = inspect(str(exe))
    want = nm(str(exe))
    state = tmp_path / "state"
    with Workload([str(exe), "60"]):
        exe.unlink()
        prof = Profiler(backend, tmp_path / "p", state, tmp_path / "p.log")
        got = wait_for(lambda: state_has(state, info.gnu_build_id), 30)
        err = prof.stop()
    assert got, f"the deleted binary was not uploaded:\n{err}"
    (h, body), = [(h, b) for h, b in backend.uploads
                  if json.loads(parts(h, b)["event"][1])["gnu_build_id"] == info.gnu_build_id]
    p = parts(h, body)
    assert json.loads(p["event"][1])["filename"] == "chain_gone"
    elf = tmp_path / "uploaded.debug"
    elf.write_bytes(p["elf_symbol_file"][1])
    assert nm(str(elf)) == want
