"""Build the debug-only ELF that is uploaded as ``elf_symbol_file``.

Contract:

- ``make_debug_file(info, out_path, timeout=60, max_memory=1<<30) -> str`` runs
  ``objcopy --only-keep-debug --remove-section=.gdb_index --compress-debug-sections=zlib
  SRC OUT`` (binutils) where SRC is the separate debug file of ``info`` when it ranks
  better than the binary itself, else the binary. objcopy runs with a wall-clock
  ``timeout`` (seconds; it is killed past it) and an address-space limit ``max_memory``
  (RLIMIT_AS, bytes) set in the child only.
- Go: ``--only-keep-debug`` turns the allocated ``.gopclntab`` into NOBITS, so when the
  binary (or SRC) has one, its bytes are copied (streamed) to a temp file and added back
  at the same address, read-only (like the reference profiler; ``.gofunc`` is not).
- The result is verified: its ``.symtab`` holds as many entries as SRC's, its gopclntab (if
  added) as many bytes as the original, and it carries no code bytes (``.text``, when
  present, is SHT_NOBITS). Any failure raises ``DebugFileError`` and leaves no
  ``out_path`` behind.
"""
from __future__ import annotations

import logging
import os
import resource
import shutil
import subprocess
import tempfile

from .inspect import RANK, SHT_NOBITS, BinaryInfo, ElfFile, InvalidBinary

log = logging.getLogger(__name__)


class DebugFileError(RuntimeError):
    """objcopy is missing, failed, timed out, or produced a file that does not verify."""


def source_path(info: BinaryInfo) -> tuple:
    """(path, expected .symtab entries) of the file to extract symbols from."""
    if info.debug_file and info.debug_file_symbol_source and \
            RANK[info.debug_file_symbol_source] > RANK[info.own_symbol_source]:
        return info.debug_file, info.debug_file_symtab_entries
    return info.path, info.symtab_entries


def _limit(max_memory: int):
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    return preexec


def make_debug_file(info: BinaryInfo, out_path: str, timeout: float = 60,
                    max_memory: int = 1 << 30) -> str:
    objcopy = shutil.which("objcopy")
    if objcopy is None:
        raise DebugFileError("objcopy (binutils) is not installed")
    src, want_syms = source_path(info)
    with tempfile.TemporaryDirectory(prefix="ddprof-pclntab-") as tmp:
        pcln, extra = _gopclntab_args(info.path, src, tmp)
        cmd = [objcopy, "--only-keep-debug", "--remove-section=.gdb_index",
               "--compress-debug-sections=zlib", *extra, src, out_path]
        _run(cmd, src, out_path, want_syms, pcln, timeout, max_memory)
    return out_path


def _gopclntab_args(binary: str, src: str, tmp: str):
    """(section, objcopy args) re-adding the gopclntab of binary or src; (None, [])."""
    for path in (binary, src):
        try:
            with ElfFile(path) as elf:
                sec = elf.gopclntab()
        except InvalidBinary:
            continue
        if sec is None:
            continue
        dump = os.path.join(tmp, "gopclntab")
        with open(path, "rb") as fin, open(dump, "wb") as fout:
            fin.seek(sec.offset)
            left = sec.size
            while left:
                chunk = fin.read(min(left, 1 << 20))
                if not chunk:
                    raise DebugFileError(f"{path}: {sec.name} is truncated")
                fout.write(chunk)
                left -= len(chunk)
        n = sec.name
        return sec, [f"--remove-section={n}", "--add-section", f"{n}={dump}",
                     "--set-section-flags", f"{n}=readonly",
                     f"--change-section-address={n}={sec.addr}"]
    return None, []


def _run(cmd, src, out_path, want_syms, pcln, timeout, max_memory):
    log.debug("extracting symbols: %s", " ".join(cmd))
    try:
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False,
                                  timeout=timeout, preexec_fn=_limit(max_memory))
        except subprocess.TimeoutExpired:
            raise DebugFileError(f"objcopy timed out after {timeout}s on {src}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            raise DebugFileError(f"objcopy failed on {src} (exit {proc.returncode}): {err}")
        _verify(out_path, want_syms, pcln)
    except BaseException:
        try:
            os.unlink(out_path)
        except OSError:
            pass
        raise


def _verify(out_path: str, want_syms: int, pcln):
    try:
        with ElfFile(out_path) as elf:
            got = elf.symtab_entries()
            text = elf.section(".text")
            got_pcln = elf.section(pcln.name) if pcln else None
    except InvalidBinary as e:
        raise DebugFileError(f"objcopy output is not a valid ELF: {e}") from None
    if got != want_syms:
        raise DebugFileError(f"{out_path}: .symtab has {got} entries, expected {want_syms}")
    if text is not None and text.type != SHT_NOBITS:
        raise DebugFileError(f"{out_path}: .text still holds code bytes")
    if pcln and (got_pcln is None or got_pcln.type == SHT_NOBITS
                 or got_pcln.size != pcln.size):
        raise DebugFileError(f"{out_path}: {pcln.name} was not kept")
