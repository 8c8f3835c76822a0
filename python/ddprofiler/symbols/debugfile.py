"""Build the debug-only ELF that is uploaded as ``elf_symbol_file``.

Contract:

- ``make_debug_file(info, out_path) -> str`` writes to
  ``out_path`` what ``objcopy --only-keep-debug --remove-section=.gdb_index
  --compress-debug-sections=zlib SRC`` would, in-process (Rust, ``_native.make_debug_file``;
  no binutils needed): SRC is the separate debug file of ``info`` when it ranks better than
  the binary itself, else the binary. Symbols, notes (build ids) and debug sections keep
  their bytes (``.debug_*`` zlib-compressed), code and data do not; section indices and
  program headers are kept. Only ELF64 little-endian files are supported.
- Go: the allocated ``.gopclntab`` keeps its bytes, read-only at the same address (like the
  reference profiler; ``.gofunc`` does not). When SRC is a debug file whose ``.gopclntab`` has
  no bytes, they are taken from the binary (``info.path``).
- Bounded: the native writer streams section by section (a few MiB whatever the file size),
  in time linear in the size of the debug sections.
- The result is verified (natively: same ``.symtab`` entry count, ``.text`` NOBITS, the Go
  table byte for byte, each compressed section inflates to its size; here: the ``.symtab``
  count against what ``inspect`` found). Any failure raises ``DebugFileError`` and leaves
  no ``out_path`` behind.
"""
from __future__ import annotations

import logging
import os

from .. import NativeExtensionError, load_native
from .inspect import RANK, BinaryInfo

log = logging.getLogger(__name__)


class DebugFileError(RuntimeError):
    """The source is not an ELF file we can write a debug file of, I/O failed, the result
    does not verify, or the native extension is missing."""


def source_path(info: BinaryInfo) -> tuple:
    """(path, expected .symtab entries) of the file to extract symbols from."""
    if info.debug_file and info.debug_file_symbol_source and \
            RANK[info.debug_file_symbol_source] > RANK[info.own_symbol_source]:
        return info.debug_file, info.debug_file_symtab_entries
    return info.path, info.symtab_entries


def make_debug_file(info: BinaryInfo, out_path: str) -> str:
    src, want_syms = source_path(info)
    pcln_from = info.path if src != info.path else None
    try:
        try:
            stats = load_native().make_debug_file(src, out_path, pcln_from)
        except (NativeExtensionError, ValueError, OSError, RuntimeError) as e:
            raise DebugFileError(str(e)) from None  # the message names the file
        log.debug("debug file of %s: %s", src, stats)
        if stats["symtab_entries"] != want_syms:
            raise DebugFileError(f"{out_path}: .symtab has {stats['symtab_entries']} entries, "
                                 f"expected {want_syms}")
    except BaseException:
        try:
            os.unlink(out_path)
        except OSError:
            pass
        raise
    return out_path
