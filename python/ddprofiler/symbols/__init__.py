"""Native symbol upload: inspect ELF binaries, build debug-only files, upload them.

- ``inspect(path, root="/") -> BinaryInfo``: what a binary offers for symbolication (ids,
  arch, the best symbol source of it and of its separate debug file, looked for inside
  ``root``), read by the Rust core (``ddprofiler._native.inspect``: the one ELF reader);
  ``BinaryInfo.write_debug_file(out)`` writes the debug-only ELF uploaded as
  ``elf_symbol_file``, from the files the inspection opened;
- ``SymbolUploader(api_key, app_key=None, site=...).upload_paths(paths) -> Summary``
  (``symbols.upload``): ask the backend, upload where ours are better;
- ``BackgroundSymbolUpload`` (``symbols.background``): the same while profiling, from the
  files the profiler holds open.

Contract: /work/shared/datadog-contracts.md, "Symbol upload".
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ddprofiler.errors import DebugFileError, InvalidBinaryError
from ddprofiler.profiler import load_native

from .upload import RANK, SOURCES, Summary, SymbolUploader, UploadError

if TYPE_CHECKING:
    from ddprofiler._native import BinaryInfo

#: The historical name of ``InvalidBinaryError`` here.
InvalidBinary = InvalidBinaryError

__all__ = [
    "RANK",
    "SOURCES",
    "BinaryInfo",
    "DebugFileError",
    "InvalidBinary",
    "InvalidBinaryError",
    "Summary",
    "SymbolUploader",
    "UploadError",
    "inspect",
]


def inspect(path: str, root: str = "/") -> "BinaryInfo":
    """Describe the ELF file at ``path``; separate debug files are looked for inside
    ``root`` (``/proc/PID/root`` for a container). Raises ``InvalidBinaryError`` for a file
    that is not an ELF file we can read (also when it cannot be read at all), and
    ``NativeExtensionError`` when the extension is missing."""
    native = load_native()
    try:
        info: BinaryInfo = native.inspect(path, root)
        return info
    except OSError as e:
        raise InvalidBinaryError(f"{path}: cannot read: {e.strerror or e}") from e


def __getattr__(name: str) -> object:
    if name == "BinaryInfo":  # the class, for isinstance checks; needs the extension
        return load_native().BinaryInfo
    raise AttributeError(f"module 'ddprofiler.symbols' has no attribute {name!r}")
