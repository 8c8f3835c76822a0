"""What an ELF binary offers for symbolication, read with the stdlib only.

Contract (docs: /work/shared/datadog-contracts.md, "Symbol upload"):

- ``inspect(path, root="/") -> BinaryInfo``: arch (``x86_64``/``aarch64`` from e_machine,
  other machines get ``em_<n>``), ``gnu_build_id`` (hex), ``go_build_id`` (the string of
  ``.note.go.buildid``), ``file_hash`` (SHA-256 over the first 4096 bytes, the last 4096
  bytes and the file size as 8 bytes big-endian; the first 16 bytes as 32 hex chars),
  ``symbol_source`` (the best of the file and of its separate debug file), sizes.
- Ranking: ``none`` < ``dynamic_symbol_table`` < ``symbol_table`` < ``gopclntab`` <
  ``debug_info``.
- Separate debug files are looked up inside ``root`` (``/proc/PID/root`` for a container):
  ``usr/lib/debug/.build-id/xx/yyyy.debug`` (its build id must match), then
  ``.gnu_debuglink`` next to the binary, in ``.debug/`` and under ``usr/lib/debug/<dir>``
  (its zlib.crc32 must equal the CRC in the section).
- Defensive: every offset and count is bounded by the file size; a truncated or hostile
  file raises ``InvalidBinary`` (a ValueError), never hangs nor allocates without bound.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import zlib

SOURCES = ("none", "dynamic_symbol_table", "symbol_table", "gopclntab", "debug_info")
RANK = {name: i for i, name in enumerate(SOURCES)}
ARCHES = {62: "x86_64", 183: "aarch64"}
SHT_NOBITS, SHT_NOTE, PT_NOTE = 8, 7, 4
MAX_META_READ = 16 << 20  # notes, string tables, debuglink: never read more than this
HASH_CHUNK = 4096


class InvalidBinary(ValueError):
    """The file is not an ELF file we can read (bad magic, truncated, out-of-bounds)."""


@dataclasses.dataclass
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    entsize: int
    addralign: int


@dataclasses.dataclass
class BinaryInfo:
    path: str
    arch: str
    gnu_build_id: str | None
    go_build_id: str | None
    file_hash: str
    symbol_source: str           # best of own_symbol_source and the debug file's
    own_symbol_source: str
    file_size: int
    debug_sections_size: int
    symtab_entries: int
    debug_file: str | None = None
    debug_file_via: str | None = None  # "build-id" | "debuglink"
    debug_file_symbol_source: str | None = None
    debug_file_symtab_entries: int = 0

    @property
    def build_ids(self) -> list:
        """Ids the backend may know this binary by: file hash, GNU and Go build ids."""
        return [i for i in (self.file_hash, self.gnu_build_id, self.go_build_id) if i]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ElfFile:
    """Section headers and notes of one ELF file; reads only what it needs."""

    def __init__(self, path: str):
        self.path = path
        try:
            self.size = os.path.getsize(path)
            self._f = open(path, "rb")  # noqa: SIM115 - closed by close()/__exit__
        except OSError as e:
            raise InvalidBinary(f"{path}: cannot open: {e.strerror}") from None
        try:
            self._parse_header()
            self.sections = self._parse_sections()
        except BaseException:
            self._f.close()
            raise

    def close(self):
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise InvalidBinary(f"{self.path}: range {offset}+{size} beyond file size {self.size}")
        if size > MAX_META_READ:
            raise InvalidBinary(f"{self.path}: metadata block of {size} bytes is too large")
        self._f.seek(offset)
        data = self._f.read(size)
        if len(data) != size:
            raise InvalidBinary(f"{self.path}: short read (file changed?)")
        return data

    def _parse_header(self):
        ident = self.read(0, 16) if self.size >= 16 else b""
        if ident[:4] != b"\x7fELF":
            raise InvalidBinary(f"{self.path}: not an ELF file")
        if ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise InvalidBinary(f"{self.path}: bad ELF class or data encoding")
        self.is64 = ident[4] == 2
        self.endian = "<" if ident[5] == 1 else ">"
        if self.is64:
            fmt, hsize = "HHIQQQIHHHHHH", 64
        else:
            fmt, hsize = "HHIIIIIHHHHHH", 52
        if self.size < hsize:
            raise InvalidBinary(f"{self.path}: truncated ELF header")
        (_, self.machine, _, _, self.phoff, self.shoff, _, _, self.phentsize, self.phnum,
         self.shentsize, self.shnum, self.shstrndx) = struct.unpack(
            self.endian + fmt, self.read(16, hsize - 16))

    def _table(self, off: int, entsize: int, num: int, minsize: int):
        if num == 0 or off == 0:
            return
        if entsize < minsize or off + entsize * num > self.size:
            raise InvalidBinary(f"{self.path}: header table out of bounds or malformed")
        data = self.read(off, entsize * num)
        for i in range(num):
            yield data[i * entsize:(i + 1) * entsize]

    def _parse_sections(self) -> list:
        if self.is64:
            fmt, minsize = "IIQQQQIIQQ", 64
        else:
            fmt, minsize = "IIIIIIIIII", 40
        num, strndx = self.shnum, self.shstrndx
        if self.shoff and num == 0:  # extended numbering: the count is in section 0
            first = next(iter(self._table(self.shoff, self.shentsize, 1, minsize)))
            num = struct.unpack(self.endian + fmt, first[:minsize])[5]
        if strndx == 0xFFFF and self.shoff:
            first = next(iter(self._table(self.shoff, self.shentsize, 1, minsize)))
            strndx = struct.unpack(self.endian + fmt, first[:minsize])[7]
        raw = []
        for ent in self._table(self.shoff, self.shentsize, num, minsize):
            name, typ, flags, addr, off, size, _, _, align, entsize = struct.unpack(
                self.endian + fmt, ent[:minsize])
            raw.append((name, typ, flags, addr, off, size, entsize, align))
        if not raw:
            return []
        if strndx >= len(raw):
            raise InvalidBinary(f"{self.path}: section name table index out of range")
        _, _, _, _, stroff, strsize, _, _ = raw[strndx]
        strtab = self.read(stroff, strsize)
        out = []
        for name, typ, flags, addr, off, size, entsize, align in raw:
            if name >= len(strtab):
                raise InvalidBinary(f"{self.path}: section name offset out of range")
            end = strtab.find(b"\0", name)
            sname = strtab[name:end if end >= 0 else len(strtab)].decode("utf-8", "replace")
            if typ != SHT_NOBITS and off + size > self.size:
                raise InvalidBinary(f"{self.path}: section {sname} beyond end of file")
            out.append(Section(sname, typ, flags, addr, off, size, entsize, align))
        return out

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def has_data(self, name: str) -> bool:
        s = self.section(name)
        return s is not None and s.type != SHT_NOBITS and s.size > 0

    def notes(self, data: bytes, align: int):
        """Yield (name, type, desc) of the notes in a note section or segment."""
        align = 8 if align == 8 else 4
        pos = 0
        while pos + 12 <= len(data):
            namesz, descsz, ntype = struct.unpack(self.endian + "III", data[pos:pos + 12])
            pos += 12
            name = data[pos:pos + namesz]
            pos = (pos + namesz + align - 1) // align * align
            desc = data[pos:pos + descsz]
            if len(name) != namesz or len(desc) != descsz:
                raise InvalidBinary(f"{self.path}: truncated note")
            name = name.rstrip(b"\0")
            pos = (pos + descsz + align - 1) // align * align
            yield name, ntype, desc

    def note_blocks(self):
        secs = [s for s in self.sections if s.type == SHT_NOTE]
        if secs:
            for s in secs:
                yield self.read(s.offset, s.size), s.addralign
            return
        fmt, minsize = ("IIQQQQQQ", 56) if self.is64 else ("IIIIIIII", 32)
        for ent in self._table(self.phoff, self.phentsize, self.phnum, minsize):
            fields = struct.unpack(self.endian + fmt, ent[:minsize])
            if fields[0] == PT_NOTE:
                off, size = (fields[2], fields[5]) if self.is64 else (fields[1], fields[4])
                yield self.read(off, size), fields[7]

    def build_ids(self):
        gnu = go = None
        for data, align in self.note_blocks():
            for name, ntype, desc in self.notes(data, align):
                if name == b"GNU" and ntype == 3 and gnu is None:
                    gnu = desc.hex()
                elif name == b"Go" and ntype == 4 and go is None:
                    go = desc.rstrip(b"\0").decode("utf-8", "replace")
        return gnu, go

    def gopclntab(self) -> Section | None:
        for name in (".gopclntab", ".data.rel.ro.gopclntab"):
            if self.has_data(name):
                return self.section(name)
        return None

    def symbol_source(self) -> str:
        if self.has_data(".debug_info") or self.has_data(".zdebug_info"):
            return "debug_info"
        if self.gopclntab() is not None:
            return "gopclntab"
        if self.has_data(".symtab"):
            return "symbol_table"
        if self.has_data(".dynsym"):
            return "dynamic_symbol_table"
        return "none"

    def symtab_entries(self) -> int:
        s = self.section(".symtab")
        if s is None or s.type == SHT_NOBITS or not s.entsize:
            return 0
        return s.size // s.entsize

    def debug_sections_size(self) -> int:
        return sum(s.size for s in self.sections if s.type != SHT_NOBITS
                   and (s.name.startswith(".debug_") or s.name.startswith(".zdebug_")))

    def debuglink(self):
        s = self.section(".gnu_debuglink")
        if s is None or s.type == SHT_NOBITS:
            return None
        data = self.read(s.offset, s.size)
        end = data.find(b"\0")
        if end <= 0:
            return None
        crc_at = (end + 4) // 4 * 4
        if crc_at + 4 > len(data):
            raise InvalidBinary(f"{self.path}: truncated .gnu_debuglink")
        (crc,) = struct.unpack(self.endian + "I", data[crc_at:crc_at + 4])
        return os.fsdecode(data[:end]), crc


def file_hash(path: str) -> str:
    """SHA-256(first 4096 bytes + last 4096 bytes + size as u64 big-endian)[:16], hex."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HASH_CHUNK)
        f.seek(max(0, size - HASH_CHUNK))
        tail = f.read(HASH_CHUNK)
    h = hashlib.sha256(head + tail + size.to_bytes(8, "big"))
    return h.hexdigest()[:32]


def file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            crc = zlib.crc32(chunk, crc)
    return crc & 0xFFFFFFFF


def _in_root(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _find_debug_file(elf: ElfFile, gnu: str | None, root: str):
    """(path, via) of a separate debug file for ``elf``, or (None, None)."""
    if gnu and len(gnu) > 2:
        cand = _in_root(root, f"usr/lib/debug/.build-id/{gnu[:2]}/{gnu[2:]}.debug")
        if os.path.isfile(cand):
            try:
                with ElfFile(cand) as dbg:
                    if dbg.build_ids()[0] == gnu:
                        return cand, "build-id"
            except InvalidBinary:
                pass
    link = elf.debuglink()
    if link:
        name, crc = link
        if "/" in name:
            return None, None
        bindir = os.path.dirname(os.path.abspath(elf.path))
        rootabs = os.path.abspath(root)
        inner = bindir[len(rootabs):] if rootabs != "/" and bindir.startswith(rootabs) else bindir
        for d in (bindir, os.path.join(bindir, ".debug"),
                  _in_root(root, os.path.join("usr/lib/debug", inner.lstrip("/")))):
            cand = os.path.join(d, name)
            if os.path.isfile(cand) and os.path.realpath(cand) != os.path.realpath(elf.path) \
                    and file_crc32(cand) == crc:
                return cand, "debuglink"
    return None, None


def inspect(path: str, root: str = "/") -> BinaryInfo:
    """Describe ``path``; separate debug files are searched inside ``root``."""
    with ElfFile(path) as elf:
        gnu, go = elf.build_ids()
        own = elf.symbol_source()
        info = BinaryInfo(
            path=path, arch=ARCHES.get(elf.machine, f"em_{elf.machine}"),
            gnu_build_id=gnu, go_build_id=go, file_hash=file_hash(path),
            symbol_source=own, own_symbol_source=own, file_size=elf.size,
            debug_sections_size=elf.debug_sections_size(),
            symtab_entries=elf.symtab_entries())
        dbg_path, via = _find_debug_file(elf, gnu, root)
    if dbg_path:
        try:
            with ElfFile(dbg_path) as dbg:
                info.debug_file, info.debug_file_via = dbg_path, via
                info.debug_file_symbol_source = dbg.symbol_source()
                info.debug_file_symtab_entries = dbg.symtab_entries()
                info.debug_sections_size += dbg.debug_sections_size()
        except InvalidBinary:
            info.debug_file = None
        if info.debug_file_symbol_source and \
                RANK[info.debug_file_symbol_source] > RANK[own]:
            info.symbol_source = info.debug_file_symbol_source
    return info
