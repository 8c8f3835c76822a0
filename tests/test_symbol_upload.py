"""Symbol upload: ELF inspection, debug-only files, and the uploader against a fake backend.

Test binaries are built with gcc (and go, when present); the fake backend is an
http.server on 127.0.0.1 playing both /api/v2/profiles/symbols/query and /api/v2/srcmap.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time

import pytest
from ddprofiler.symbols import InvalidBinary, SymbolUploader, inspect
from helpers import skip_or_fail
from symbol_backend import backend, parts  # noqa: F401 (backend is a fixture)

API_KEY = "0123456789abcdef0123456789abcdef"
APP_KEY = "fedcba9876543210fedcba9876543210fedcba98"
SRC = r"""
#include <stdio.h>
int work_%(v)d(int n) { int s = 0; for (int i = 0; i < n; i++) s += i * %(v)d; return s; }
static int helper_%(v)d(int x) { return x * 3 + %(v)d; }
int main(int argc, char **argv) { printf("%%d\n", work_%(v)d(argc) + helper_%(v)d(argc)); return 0; }
"""



@pytest.fixture(scope="module", autouse=True)
def _toolchain():
    if not shutil.which("gcc") or not shutil.which("objcopy"):
        skip_or_fail("needs gcc and binutils (objcopy)")


def sh(*cmd) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def build(tmp, name, variant=1) -> str:
    src, out = os.path.join(tmp, name + ".c"), os.path.join(tmp, name)
    with open(src, "w") as f:
        f.write(SRC % {"v": variant})
    sh("gcc", "-g", "-O0", "-Wl,--build-id=sha1", "-o", out, src)
    return out


def nm(path) -> list:
    """(address, name) of every symbol: the type letter of data symbols changes when
    their section becomes NOBITS in a debug-only file, so it is left out."""
    syms = [ln.split() for ln in sh("nm", path).splitlines()]
    syms = sorted((f[0] if len(f) == 3 else "", f[-1]) for f in syms)
    assert any(name.startswith("work_") for _, name in syms)
    return syms


def readelf_build_id(path) -> str:
    return re.search(r"Build ID: ([0-9a-f]+)", sh("readelf", "-n", path)).group(1)


def expected_hash(path) -> str:
    with open(path, "rb") as f:
        data = f.read()
    h = hashlib.sha256(data[:4096] + data[-4096:] + len(data).to_bytes(8, "big"))
    return h.hexdigest()[:32]


@pytest.fixture(scope="module")
def bins(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("bins"))
    prog = build(d, "prog")
    stripped = os.path.join(d, "prog_stripped")
    sh("strip", "-o", stripped, prog)
    return {"dir": d, "prog": prog, "stripped": stripped}


# ---- inspect -----------------------------------------------------------------------------
def test_inspect_full_binary(bins):
    info = inspect(bins["prog"])
    assert info.arch == {"x86_64": "x86_64", "aarch64": "aarch64"}[os.uname().machine]
    assert info.gnu_build_id == readelf_build_id(bins["prog"])
    assert info.go_build_id is None
    assert info.file_hash == expected_hash(bins["prog"])
    assert info.symbol_source == info.own_symbol_source == "debug_info"
    assert info.file_size == os.path.getsize(bins["prog"])
    assert info.debug_sections_size > 0 and info.symtab_entries > 0
    assert info.debug_file is None


def test_inspect_stripped(bins):
    info = inspect(bins["stripped"], root=bins["dir"])
    assert info.gnu_build_id == readelf_build_id(bins["prog"])
    assert info.symbol_source == "dynamic_symbol_table"
    assert info.debug_sections_size == 0 and info.symtab_entries == 0
    assert info.file_hash == expected_hash(bins["stripped"])


def root_with_debug_file(bins, root) -> tuple:
    """A root holding the stripped binary as usr/bin/app and its debug file under
    usr/lib/debug/.build-id; the paths of both."""
    bid = readelf_build_id(bins["prog"])
    dbg = root / "usr/lib/debug/.build-id" / bid[:2] / (bid[2:] + ".debug")
    dbg.parent.mkdir(parents=True)
    sh("objcopy", "--only-keep-debug", bins["prog"], str(dbg))
    app = root / "usr/bin/app"
    app.parent.mkdir(parents=True)
    shutil.copy(bins["stripped"], app)
    return str(app), dbg


def test_inspect_build_id_debug_file_in_root(bins, tmp_path):
    app, dbg = root_with_debug_file(bins, tmp_path)
    info = inspect(app, root=str(tmp_path))
    assert info.own_symbol_source == "dynamic_symbol_table"
    assert info.symbol_source == "debug_info"
    assert (info.debug_file, info.debug_file_via) == (str(dbg), "build-id")
    # Outside that root, nothing is found.
    assert inspect(str(app), root=str(tmp_path / "usr")).debug_file is None


def test_inspect_debuglink_crc(bins, tmp_path):
    dbg, app = tmp_path / "app.debug", tmp_path / "app"
    sh("objcopy", "--only-keep-debug", bins["prog"], str(dbg))
    sh("objcopy", "--strip-all", f"--add-gnu-debuglink={dbg}", bins["prog"], str(app))
    info = inspect(str(app), root=str(tmp_path / "empty"))
    assert (info.debug_file, info.debug_file_via) == (str(dbg), "debuglink")
    assert info.symbol_source == "debug_info"
    with open(dbg, "ab") as f:  # a debug file that no longer matches the CRC
        f.write(b"\0")
    info = inspect(str(app), root=str(tmp_path / "empty"))
    assert info.debug_file is None and info.symbol_source == "dynamic_symbol_table"


@pytest.fixture(scope="module")
def go_bins(tmp_path_factory, go_binary):
    go = go_binary
    d = tmp_path_factory.mktemp("go")
    (d / "main.go").write_text("package main\nfunc main() { println(1) }\n")
    (d / "go.mod").write_text("module x\ngo 1.20\n")
    env = {**os.environ, "GOCACHE": str(d / "cache"), "CGO_ENABLED": "0"}
    out = {}
    for name, flags in (("full", []), ("stripped", ["-ldflags=-s -w"])):
        subprocess.run([go, "build", *flags, "-o", name], cwd=d, env=env, check=True,
                       capture_output=True)
        out[name] = str(d / name)
        out[name + "_id"] = subprocess.run(
            [go, "tool", "buildid", name], cwd=d, env=env, check=True,
            capture_output=True, text=True).stdout.strip()
    return out


def test_inspect_go_build_id(go_bins):
    info = inspect(go_bins["full"])
    assert info.go_build_id == go_bins["full_id"]
    assert info.symbol_source == "debug_info"
    info = inspect(go_bins["stripped"])
    assert info.go_build_id == go_bins["stripped_id"]
    assert info.symbol_source == "gopclntab"


def test_debug_file_keeps_gopclntab(go_bins, tmp_path):
    out = str(tmp_path / "go.debug")
    stats = inspect(go_bins["stripped"]).write_debug_file(out)
    assert stats.gopclntab_bytes > 0 and stats.source == go_bins["stripped"]
    sh("objcopy", f"--dump-section=.gopclntab={tmp_path / 'a'}", go_bins["stripped"])
    sh("objcopy", f"--dump-section=.gopclntab={tmp_path / 'b'}", out)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert re.search(r"\]\s+\.text\s+NOBITS", sh("readelf", "-SW", out))
    assert os.path.getsize(out) < os.path.getsize(go_bins["stripped"])


@pytest.mark.parametrize("kind", ["truncated", "garbage", "hostile_counts", "empty", "text"])
def test_inspect_invalid(bins, tmp_path, kind):
    with open(bins["prog"], "rb") as f:
        data = f.read()
    p = tmp_path / kind
    if kind == "truncated":
        p.write_bytes(data[:200])
    elif kind == "garbage":
        p.write_bytes(b"\x7fELF" + os.urandom(4000))
    elif kind == "hostile_counts":  # shoff near the end, shnum 0xffff: must not be trusted
        b = bytearray(data[:64]) + b"\0" * 1000
        b[0x28:0x30] = (500).to_bytes(8, "little")
        b[0x3C:0x3E] = (0xFFFF).to_bytes(2, "little")
        p.write_bytes(bytes(b))
    elif kind == "empty":
        p.write_bytes(b"")
    else:
        p.write_text("#!/bin/sh\necho hi\n")
    t0 = time.monotonic()
    with pytest.raises(InvalidBinary):
        inspect(str(p))
    assert time.monotonic() - t0 < 2


# ---- write_debug_file --------------------------------------------------------------------
def test_debug_file_keeps_symbols_drops_code(bins, tmp_path):
    out = str(tmp_path / "prog.debug")
    info = inspect(bins["prog"])
    stats = info.write_debug_file(out)
    assert nm(out) == nm(bins["prog"])
    assert stats.symtab_entries == info.symtab_entries and stats.output_bytes == os.path.getsize(out)
    sections = sh("readelf", "-SW", out)
    assert re.search(r"\]\s+\.text\s+NOBITS", sections), sections
    assert ".debug_info" in sections


def test_debug_file_prefers_separate_debug_file(bins, tmp_path):
    dbg, app = tmp_path / "app.debug", tmp_path / "app"
    sh("objcopy", "--only-keep-debug", bins["prog"], str(dbg))
    sh("objcopy", "--strip-all", f"--add-gnu-debuglink={dbg}", bins["prog"], str(app))
    out = str(tmp_path / "out.debug")
    info = inspect(str(app), root=str(tmp_path / "none"))
    # Both paths gone: the inspection holds the files open.
    os.unlink(app)
    os.unlink(dbg)
    assert info.write_debug_file(out).source == str(dbg)
    assert nm(out) == nm(bins["prog"])


def test_debug_file_errors_leave_nothing(bins, tmp_path):
    info = inspect(bins["prog"])
    with pytest.raises(ValueError):  # the output would overwrite the input
        info.write_debug_file(bins["prog"])
    assert nm(bins["prog"])
    with pytest.raises(OSError):
        info.write_debug_file(str(tmp_path / "no" / "such" / "dir" / "x.debug"))


# ---- uploader against a fake backend -----------------------------------------------------
def uploader(be, tmp_path, **kw) -> SymbolUploader:
    kw.setdefault("state_path", str(tmp_path / "state.json"))
    return SymbolUploader(API_KEY, kw.pop("app_key", APP_KEY), site="example.invalid",
                          api_base_url=be.url, intake_base_url=be.url, backoff=0.01, **kw)


def test_upload_fields_and_headers(bins, backend, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    up = uploader(backend, tmp_path, origin_version="9.9.9")
    s = up.upload_paths([bins["prog"]])
    assert s.uploaded == [bins["prog"]] and not s.failed, s
    info = inspect(bins["prog"])
    (qh, qbody), = backend.queries
    assert qh["DD-API-KEY"] == API_KEY and qh["DD-APPLICATION-KEY"] == APP_KEY
    assert qbody["data"]["type"] == "symbols-query-request"
    assert qbody["data"]["attributes"] == {"buildIds": info.build_ids, "arch": info.arch}
    (h, body), = backend.uploads
    assert h["DD-API-KEY"] == API_KEY and "DD-APPLICATION-KEY" not in h
    assert h["DD-EVP-ORIGIN"] == "ddprofiler" and h["DD-EVP-ORIGIN-VERSION"] == "9.9.9"
    p = parts(h, body)
    assert set(p) == {"elf_symbol_file", "event"}
    assert p["event"][0] == "event.json"
    assert json.loads(p["event"][1]) == {
        "type": "elf_symbol_file", "arch": info.arch, "gnu_build_id": info.gnu_build_id,
        "go_build_id": "", "file_hash": info.file_hash, "symbol_source": "debug_info",
        "filename": "prog", "origin": "ddprofiler", "origin_version": "9.9.9"}
    elf = tmp_path / "uploaded.debug"
    elf.write_bytes(p["elf_symbol_file"][1])
    assert nm(str(elf)) == nm(bins["prog"])
    assert API_KEY not in caplog.text and APP_KEY not in caplog.text
    assert API_KEY not in repr(up)


@pytest.mark.parametrize("remote,uploads", [("debug_info", 0), ("symbol_table", 1)])
def test_upload_only_when_better_than_backend(bins, backend, tmp_path, remote, uploads):
    backend.have[inspect(bins["prog"]).gnu_build_id] = remote
    s = uploader(backend, tmp_path).upload_paths([bins["prog"]])
    assert len(backend.uploads) == uploads and not s.failed
    assert len(s.skipped) == 1 - uploads


def test_dry_run_uploads_nothing(bins, backend, tmp_path):
    s = uploader(backend, tmp_path, dry_run=True).upload_paths([bins["prog"]])
    assert s.would_upload == [bins["prog"]] and not s.uploaded
    assert backend.attempts == 0 and not os.path.exists(tmp_path / "state.json")


def test_state_file_prevents_second_upload(bins, backend, tmp_path):
    assert uploader(backend, tmp_path).upload_paths([bins["prog"]]).uploaded
    s = uploader(backend, tmp_path).upload_paths([bins["prog"]])  # a "restart"
    assert not s.uploaded and "state file" in s.skipped[0][1]
    assert len(backend.uploads) == 1


def test_byte_bound_holds_with_several_files(backend, tmp_path):
    d = tmp_path / "bins"
    d.mkdir()
    paths = [build(str(d), f"p{i}", variant=i + 2) for i in range(5)]
    size = inspect(paths[0]).write_debug_file(str(tmp_path / "x.debug")).output_bytes
    bound = int(size * 1.5) + 4096  # room for one upload at a time, never two
    backend.gather = 5  # the server holds each upload a while, waiting for company
    up = uploader(backend, tmp_path, max_bytes_in_flight=bound, max_workers=5)
    s = up.upload_paths([str(d)])  # directory scan: only the ELF files
    assert sorted(s.uploaded) == sorted(paths) and not s.failed
    assert 0 < backend.max_in_flight <= bound
    # Without the bound, the same uploads do overlap (the test can see a violation).
    backend.max_in_flight = 0
    up = uploader(backend, tmp_path, max_bytes_in_flight=1 << 30, max_workers=5,
                  state_path=None)
    up.upload_paths(paths)
    assert backend.max_in_flight > bound


def test_retry_on_5xx_not_on_4xx(bins, backend, tmp_path, caplog):
    backend.statuses = [503, 500]
    s = uploader(backend, tmp_path, state_path=None).upload_paths([bins["prog"]])
    assert s.uploaded and backend.attempts == 3
    backend.statuses, backend.attempts = [403], 0
    caplog.set_level(logging.DEBUG)
    s = uploader(backend, tmp_path, state_path=None).upload_paths([bins["prog"]])
    assert not s.uploaded and backend.attempts == 1 and "403" in s.failed[0][1]
    assert API_KEY not in caplog.text and API_KEY not in str(s)


def test_query_failure_uploads_nothing(bins, tmp_path):
    up = SymbolUploader(API_KEY, api_base_url="http://127.0.0.1:9", intake_base_url=
                        "http://127.0.0.1:9", retries=1, backoff=0.01, state_path=None)
    s = up.upload_paths([bins["prog"], str(tmp_path / "missing")])
    assert len(s.failed) == 2 and not s.uploaded
    assert all(API_KEY not in msg for _, msg in s.failed)


def test_upload_uses_debug_file_and_skips_dynamic_only(bins, backend, tmp_path):
    root = tmp_path / "root"
    app, _ = root_with_debug_file(bins, root)
    up = uploader(backend, tmp_path, state_path=None)
    s = up.upload_paths([bins["stripped"]], root=str(tmp_path / "elsewhere"))
    assert s.skipped == [(bins["stripped"], "no symbols to upload")] and not backend.queries
    s = up.upload_paths([str(app), str(app)], root=str(root))
    assert s.uploaded == [str(app)] and "same build" in s.skipped[0][1]
    p = parts(*backend.uploads[0])
    assert json.loads(p["event"][1])["symbol_source"] == "debug_info"
    assert json.loads(p["event"][1])["filename"] == "app"
    (tmp_path / "got.debug").write_bytes(p["elf_symbol_file"][1])
    assert ".debug_info" in sh("readelf", "-SW", str(tmp_path / "got.debug"))
