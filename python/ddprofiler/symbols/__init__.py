"""Native symbol upload: inspect ELF binaries, build debug-only files, upload them.

- ``inspect(path, root="/") -> BinaryInfo`` (``symbols.inspect``);
- ``make_debug_file(info, out_path)`` (``symbols.debugfile``);
- ``SymbolUploader(api_key, app_key=None, site=...).upload_paths(paths) -> Summary``
  (``symbols.upload``). Contract: /work/shared/datadog-contracts.md, "Symbol upload".
"""
from .debugfile import DebugFileError, make_debug_file
from .inspect import SOURCES, BinaryInfo, InvalidBinary, inspect
from .upload import Summary, SymbolUploader, UploadError

__all__ = [
           "SOURCES",
           "BinaryInfo",
           "DebugFileError",
           "InvalidBinary",
           "Summary",
           "SymbolUploader",
           "UploadError",
           "inspect",
           "make_debug_file",
]
