//! The debug-only ELF uploaded to Datadog as `elf_symbol_file`: what
//! `objcopy --only-keep-debug --remove-section=.gdb_index --compress-debug-sections=zlib`
//! makes, plus Go's `.gopclntab`, written here so that uploading needs no binutils.
//!
//! Contract of [`write_debug_file`]`(src, gopclntab_from, out)`:
//! - Input: an ELF64 little-endian file (x86_64, aarch64, ...); ELF32 and big-endian are
//!   refused as unsupported. `gopclntab_from`: the binary `src` is the separate debug file
//!   of, whose `.gopclntab` bytes fill in the NOBITS one of `src` (same name, address, size).
//! - Output: the ELF header of `src` (type, machine, entry, flags, OS/ABI) and every section
//!   header of `src` at the same index, so `sh_link`, `sh_info` and `st_shndx` stay valid:
//!   - allocated sections become SHT_NOBITS (address and size kept, no bytes), except notes
//!     (build ids) and the Go symbol table (`.gopclntab`, `.data.rel.ro.gopclntab`), which keep
//!     their bytes; the latter as read-only PROGBITS (`SHF_ALLOC` only);
//!   - non-allocated sections keep their bytes (`.symtab`, `.strtab`, `.debug_*`, ...); a
//!     `.debug_*` section not compressed yet is zlib-compressed in the gABI format
//!     (`Elf64_Chdr` + zlib stream) when that makes it smaller;
//!   - `.gdb_index` becomes an all-zero SHT_NULL header (an inactive entry): dropped like
//!     objcopy drops it, without renumbering the sections after it.
//!   - program headers keep their count, types, addresses, sizes in memory, flags and
//!     alignment. PT_LOAD keeps its original `p_offset`, so the file-offset-to-address
//!     relation a load bias is computed from still holds (objcopy moves them inside its
//!     smaller file), and a `p_filesz` covering only what is still at the same offsets
//!     (the headers and notes at the start of the first one, as objcopy keeps them; 0 for
//!     the others). Other segments point at their bytes when all were kept (PT_PHDR,
//!     PT_NOTE), else get `p_filesz` 0 at an offset inside the file.
//! - The file is checked after writing (same `.symtab` entry count, `.text` NOBITS, the
//!   Go table byte for byte, every section compressed here inflates to its original size);
//!   on any error `out` is removed and an [`Error`] says which file and why:
//!   `InvalidBinary` for a file that is not a readable, supported ELF (`InvalidArgument` for
//!   `out` being `src`), `Io` for I/O, `DebugFile` for a result that does not verify.
//! - Memory stays bounded whatever the file size: headers are read through a memory map,
//!   section bytes stream through a 1 MiB buffer and the zlib encoder into `out`.
//!   Non-goals: relocatable objects' special sections (groups, relocations of removed
//!   sections), adding a `.gopclntab` that `src` has no header for.
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use flate2::write::ZlibEncoder;
use flate2::Compression;
use super::maps::FileMap;
use object::elf::{self, CompressionHeader64, FileHeader64, ProgramHeader64, SectionHeader64};
use object::endian::{LittleEndian, U16, U32, U64};
use object::pod::{bytes_of, bytes_of_slice};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable};
use object::SectionIndex;

use crate::{Error, Result};

// Headers are written with object's raw `elf` structs rather than `object::write::elf`:
// that writer wants every section's final size and bytes before it lays out the file,
// and ours are known only once each section has streamed through the compressor.
type Le = LittleEndian;
const LE: Le = LittleEndian;
type Shdr = SectionHeader64<Le>;
type Phdr = ProgramHeader64<Le>;

const COPY_CHUNK: usize = 1 << 20;
/// Notes come back at their original offset when it is at most this far past the
/// previous section's end (like objcopy, which keeps them where they were).
const MAX_GAP: u64 = 4096;
const GOPCLNTAB_NAMES: [&[u8]; 2] = [b".gopclntab", b".data.rel.ro.gopclntab"];
/// Program headers past this many lose their file bytes (real files have a few dozen).
const MAX_SEGMENTS: usize = 256;

/// What one run produced (also what the Python caller logs and checks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebugFileStats {
    /// The file the symbols were taken from.
    pub source: String,
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub sections_compressed: u64,
    pub symtab_entries: u64,
    pub gopclntab_bytes: u64,
}

/// A file to read, open, with the name errors and logs give it.
pub struct Source {
    pub name: PathBuf,
    pub file: File,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source> {
        let file = File::open(path).map_err(|e| io_err(path, "cannot open", e))?;
        Ok(Source { name: path.to_path_buf(), file })
    }
}

/// Writes the debug-only ELF of `src` to `out`; see the module doc for the contract.
pub fn write_debug_file(src: &Path, gopclntab_from: Option<&Path>, out: &Path) -> Result<DebugFileStats> {
    // The binary only matters when `src` lacks the Go table's bytes, which `fill_pcln`
    // finds out: a binary that cannot be read costs the table, not the whole file.
    let pcln = gopclntab_from.filter(|p| *p != src).and_then(|p| {
        Source::open(p).map_err(|e| log::warn!("no Go symbol table from it: {e}")).ok()
    });
    write_debug_file_from(Source::open(src)?, pcln, out)
}

/// [`write_debug_file`] from files already open (the paths may be gone: a deleted binary,
/// an exited process's file).
pub fn write_debug_file_from(src: Source, gopclntab_from: Option<Source>, out: &Path) -> Result<DebugFileStats> {
    let input = Input::new(src)?;
    let pcln_file = gopclntab_from.and_then(|s| Input::new(s).map_err(|e| log::warn!("no Go symbol table from it: {e}")).ok());
    // Truncating `out` would pull the bytes from under the map of `src`.
    if let Ok(o) = std::fs::metadata(out) {
        let ids = |f: &File| f.metadata().ok().map(|m| (m.dev(), m.ino()));
        let out_id = Some((o.dev(), o.ino()));
        if ids(&input.file) == out_id || pcln_file.as_ref().is_some_and(|p| ids(&p.file) == out_id) {
            return Err(Error::InvalidArgument(format!("{}: is the file to read", out.display())));
        }
    }
    let file = OpenOptions::new()
        .write(true)
        .read(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(|e| io_err(out, "cannot create", e))?;
    let res = write(&input, pcln_file.as_ref(), file, out).and_then(|w| verify(&input, pcln_file.as_ref(), &w, out));
    if res.is_err() {
        let _ = std::fs::remove_file(out);
    }
    let mut stats = res?;
    stats.source = input.path.to_string_lossy().into_owned();
    log::debug!("debug file of {}: {stats:?}", input.path.display());
    Ok(stats)
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidBinary(format!("{}: {what}", path.display()))
}

fn io_err(path: &Path, what: &str, source: io::Error) -> Error {
    Error::Io { context: format!("{what} {}", path.display()), source }
}

/// A source file: its map for the headers, its descriptor for streaming section bytes
/// (pread keeps the resident set small, where touching a multi-GB map would not).
struct Input {
    path: PathBuf,
    file: File,
    map: FileMap,
}

impl Input {
    fn new(src: Source) -> Result<Self> {
        // SAFETY: read-only private map; a file truncated under us may fault, as in `elf`.
        let map = unsafe { FileMap::map(&src.file) }.map_err(|e| io_err(&src.name, "cannot map", e))?;
        let me = Input { path: src.name, file: src.file, map };
        me.header()?;
        Ok(me)
    }

    fn header(&self) -> Result<&FileHeader64<Le>> {
        let d = &self.map[..];
        if d.len() < 16 || d[..4] != elf::ELFMAG {
            return Err(invalid(&self.path, "not an ELF file"));
        }
        // e_ident[EI_CLASS], e_ident[EI_DATA]
        if d[4] != elf::ELFCLASS64 || d[5] != elf::ELFDATA2LSB {
            return Err(invalid(&self.path, "unsupported ELF class or byte order (only ELF64 little-endian)"));
        }
        FileHeader64::<Le>::parse(d).map_err(|e| invalid(&self.path, e))
    }

    fn sections(&self) -> Result<SectionTable<'_, FileHeader64<Le>>> {
        self.header()?.sections(LE, &self.map[..]).map_err(|e| invalid(&self.path, e))
    }

    fn phdrs(&self) -> Result<&[Phdr]> {
        self.header()?.program_headers(LE, &self.map[..]).map_err(|e| invalid(&self.path, e))
    }

    /// Byte range of a section with bytes, checked against the file size.
    fn range(&self, s: &Shdr) -> Result<Option<(u64, u64)>> {
        let Some((off, size)) = s.file_range(LE) else { return Ok(None) };
        match off.checked_add(size) {
            Some(end) if end <= self.map.len() as u64 => Ok(Some((off, size))),
            _ => Err(invalid(&self.path, format!("section at {off:#x}+{size:#x} is past the end of the file"))),
        }
    }

    fn reader(&self, off: u64, size: u64) -> RangeReader<'_> {
        RangeReader { file: &self.file, path: &self.path, pos: off, end: off.saturating_add(size) }
    }
}

/// A byte range of a file read with pread; a short file is an error, not an end.
struct RangeReader<'a> {
    file: &'a File,
    path: &'a Path,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            let msg = format!("{}: file shrank while being read", self.path.display());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn copy(mut r: impl Read, w: &mut impl Write, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0;
    loop {
        let n = r.read(buf)?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// The output, written front to back; only fixed-size headers are patched afterwards.
struct Out {
    w: BufWriter<File>,
    pos: u64,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

impl Out {
    fn pad_to(&mut self, at: u64) -> io::Result<()> {
        let zeros = [0u8; 4096];
        while self.pos < at {
            let n = usize::try_from(at - self.pos).unwrap_or(zeros.len()).min(zeros.len());
            self.write_all(&zeros[..n])?;
        }
        Ok(())
    }
    fn align(&mut self, a: u64) -> io::Result<()> {
        self.pad_to(self.pos.next_multiple_of(a))
    }
    /// Writes `bytes` at `at` (before the end) and comes back to the end.
    fn patch(&mut self, at: u64, bytes: &[u8]) -> io::Result<()> {
        self.w.seek(SeekFrom::Start(at))?;
        self.w.write_all(bytes)?;
        self.w.seek(SeekFrom::Start(self.pos)).map(drop)
    }
    /// Moves the end back to `at`; what lies past it gets overwritten or cut off.
    fn rewind(&mut self, at: u64) -> io::Result<()> {
        self.pos = at;
        self.w.seek(SeekFrom::Start(at)).map(drop)
    }
}

/// File offset alignment of a section: its own up to 64 (what notes, symbol tables and
/// Go's table need), so that hostile values cannot blow the output up with padding.
fn file_align(a: u64) -> u64 {
    if a.is_power_of_two() { a.min(64) } else { 1 }
}

/// One output section with bytes, to check segments and the result against.
struct Placed {
    index: usize,
    /// Offset in `src` when the bytes are the same as there (not compressed, not Go's
    /// table taken from `gopclntab_from`).
    same_as: Option<u64>,
    new_off: u64,
    new_size: u64,
    /// Compressed here from this many bytes.
    inflated: Option<u64>,
}

struct Written {
    out: File,
    stats: DebugFileStats,
    /// (section index, whether `src` itself had the bytes, their range there).
    pcln: Option<(usize, bool, u64, u64)>,
    placed: Vec<Placed>,
}

fn pcln_in<'a>(input: &'a Input, name: &[u8]) -> Result<Option<&'a Shdr>> {
    let t = input.sections()?;
    Ok(t.iter().find(|s| t.section_name(LE, s) == Ok(name) && s.sh_type(LE) != elf::SHT_NOBITS && s.sh_size(LE) > 0))
}

fn write(input: &Input, pcln_file: Option<&Input>, file: File, out_path: &Path) -> Result<Written> {
    let ioe = |e| io_err(out_path, "cannot write", e);
    let hdr = input.header()?;
    let table = input.sections()?;
    let phdrs = input.phdrs()?;
    if table.is_empty() {
        return Err(invalid(&input.path, "no section headers"));
    }
    let mut out = Out { w: BufWriter::with_capacity(1 << 16, file), pos: 0 };
    let phoff = if phdrs.is_empty() { 0 } else { 64 };
    out.pad_to(64 + 56 * phdrs.len() as u64).map_err(ioe)?;
    let mut shdrs: Vec<Shdr> = table.iter().copied().collect();
    let mut stats = DebugFileStats { input_bytes: input.map.len() as u64, ..Default::default() };
    let mut placed = Vec::new();
    let mut pcln = None;
    let mut pcln_seen = false;
    let mut buf = vec![0u8; COPY_CHUNK];
    for (i, s) in table.iter().enumerate().skip(1) {
        let (ty, flags) = (s.sh_type(LE), s.sh_flags(LE));
        if ty == elf::SHT_NULL {
            continue; // inactive: its other fields mean nothing, not even an offset
        }
        let name = table.section_name(LE, s).map_err(|e| invalid(&input.path, e))?;
        let o = &mut shdrs[i];
        if name == b".gdb_index" {
            *o = zero_shdr();
            continue;
        }
        if name == b".symtab" && ty == elf::SHT_SYMTAB && s.sh_entsize(LE) > 0 {
            stats.symtab_entries = s.sh_size(LE) / s.sh_entsize(LE);
        }
        let alloc = flags & u64::from(elf::SHF_ALLOC) != 0;
        // Only the first such section: each lookup in `gopclntab_from` is a pass over its sections.
        let is_pcln = alloc && !pcln_seen && GOPCLNTAB_NAMES.contains(&name);
        pcln_seen |= is_pcln;
        // Bytes to keep: (input, offset, size).
        let mut from = match input.range(s)? {
            Some((off, size)) if !alloc || ty == elf::SHT_NOTE || is_pcln => Some((input, off, size)),
            _ => None,
        };
        if is_pcln && from.is_none() {
            from = fill_pcln(pcln_file, name, s)?;
        }
        let Some((src, off, size)) = from else {
            o.sh_type = U32::new(LE, elf::SHT_NOBITS);
            o.sh_offset = U64::new(LE, out.pos);
            continue;
        };
        let align = file_align(s.sh_addralign(LE));
        if is_pcln {
            o.sh_type = U32::new(LE, elf::SHT_PROGBITS);
            o.sh_flags = U64::new(LE, u64::from(elf::SHF_ALLOC));
            pcln = Some((i, std::ptr::eq(src, input), off, size));
            stats.gopclntab_bytes = size;
        }
        let compressed = flags & u64::from(elf::SHF_COMPRESSED) != 0;
        let compress = !alloc && !compressed && name.starts_with(b".debug_") && size > 0;
        if compress {
            out.align(align.max(8)).map_err(ioe)?;
            let at = out.pos;
            if let Some(csize) = write_zlib(&mut out, src, off, size, s.sh_addralign(LE), &mut buf)? {
                o.sh_offset = U64::new(LE, at);
                o.sh_size = U64::new(LE, csize);
                o.sh_addralign = U64::new(LE, 8);
                o.sh_flags = U64::new(LE, flags | u64::from(elf::SHF_COMPRESSED));
                placed.push(Placed { index: i, same_as: None, new_off: at, new_size: csize, inflated: Some(size) });
                stats.sections_compressed += 1;
                continue;
            }
            out.rewind(at).map_err(ioe)?;
        } else if alloc && off >= out.pos && off - out.pos <= MAX_GAP {
            out.pad_to(off).map_err(ioe)?;
        } else {
            out.align(align).map_err(ioe)?;
        }
        o.sh_offset = U64::new(LE, out.pos);
        let same_as = std::ptr::eq(src, input).then_some(off);
        placed.push(Placed { index: i, same_as, new_off: out.pos, new_size: size, inflated: None });
        copy(src.reader(off, size), &mut out, &mut buf).map_err(|e| io_err(&src.path, "cannot copy from", e))?;
    }
    out.align(8).map_err(ioe)?;
    let shoff = out.pos;
    out.write_all(bytes_of_slice(&shdrs)).map_err(ioe)?;
    let end = out.pos;
    let same_hdr_end = if hdr.e_phoff(LE) == phoff { phoff + 56 * phdrs.len() as u64 } else { 64 };
    let new_phdrs = map_segments(phdrs, &table, &placed, same_hdr_end, end);
    let mut h = *hdr;
    h.e_phoff = U64::new(LE, phoff);
    h.e_shoff = U64::new(LE, shoff);
    h.e_ehsize = U16::new(LE, 64);
    h.e_phentsize = U16::new(LE, if phdrs.is_empty() { 0 } else { 56 });
    h.e_shentsize = U16::new(LE, 64);
    out.patch(0, bytes_of(&h)).map_err(ioe)?;
    out.patch(64, bytes_of_slice(&new_phdrs)).map_err(ioe)?;
    out.flush().map_err(ioe)?;
    let file = out.w.into_inner().map_err(|e| ioe(e.into_error()))?;
    // A last section that did not shrink was rewritten shorter: cut what follows.
    file.set_len(end).map_err(ioe)?;
    stats.output_bytes = end;
    Ok(Written { out: file, stats, pcln, placed })
}

fn zero_shdr() -> Shdr {
    let z32 = U32::new(LE, 0);
    let z64 = U64::new(LE, 0);
    Shdr {
        sh_name: z32,
        sh_type: z32,
        sh_flags: z64,
        sh_addr: z64,
        sh_offset: z64,
        sh_size: z64,
        sh_link: z32,
        sh_info: z32,
        sh_addralign: z64,
        sh_entsize: z64,
    }
}

/// The Go table's bytes from the binary a debug file belongs to, if they match its header.
fn fill_pcln<'a>(from: Option<&'a Input>, name: &[u8], s: &Shdr) -> Result<Option<(&'a Input, u64, u64)>> {
    let Some(bin) = from else { return Ok(None) };
    let Some(b) = pcln_in(bin, name)? else { return Ok(None) };
    if b.sh_addr(LE) != s.sh_addr(LE) || b.sh_size(LE) != s.sh_size(LE) {
        let name = String::from_utf8_lossy(name);
        log::warn!("{}: {name} does not match the debug file's; left out", bin.path.display());
        return Ok(None);
    }
    Ok(bin.range(b)?.map(|(off, size)| (bin, off, size)))
}

/// Writes Chdr + zlib stream of a section at `out`'s end; `None` (and `out` to rewind)
/// when that is not smaller than the section.
fn write_zlib(out: &mut Out, src: &Input, off: u64, size: u64, align: u64, buf: &mut [u8]) -> Result<Option<u64>> {
    let at = out.pos;
    let context = format!("cannot compress {} into the debug file", src.path.display());
    let ioe = |e| Error::Io { context: context.clone(), source: e };
    out.write_all(&[0u8; 24]).map_err(ioe)?;
    let mut enc = ZlibEncoder::new(&mut *out, Compression::default());
    copy(src.reader(off, size), &mut enc, buf).map_err(ioe)?;
    enc.finish().map_err(ioe)?;
    let csize = out.pos - at;
    if csize >= size {
        return Ok(None);
    }
    let chdr = CompressionHeader64::<Le> {
        ch_type: U32::new(LE, elf::ELFCOMPRESS_ZLIB),
        ch_reserved: U32::new(LE, 0),
        ch_size: U64::new(LE, size),
        ch_addralign: U64::new(LE, align),
    };
    out.patch(at, bytes_of(&chdr)).map_err(ioe)?;
    Ok(Some(csize))
}

/// Program headers for the output: see the module doc.
/// `same_hdr_end`: end of the ELF header, or of the program headers when `src` had them at
/// the same offset.
fn map_segments(
    phdrs: &[Phdr],
    table: &SectionTable<'_, FileHeader64<Le>>,
    placed: &[Placed],
    same_hdr_end: u64,
    end: u64,
) -> Vec<Phdr> {
    let phoff = if phdrs.is_empty() { 0 } else { 64 };
    let overlaps = |a: u64, b: u64, off: u64, size: u64| off < b && a < off.saturating_add(size);
    // The segment's bytes, moved by the one shift of all the sections with bytes under it,
    // when every one of them was kept as it was and nothing else landed in the moved range.
    let moved = |off: u64, filesz: u64| -> Option<u64> {
        let stop = off.checked_add(filesz)?;
        let mut delta = None;
        for (i, s) in table.iter().enumerate() {
            let Some((o, n)) = s.file_range(LE) else { continue };
            if n == 0 || s.sh_type(LE) == elf::SHT_NULL || !overlaps(off, stop, o, n) {
                continue;
            }
            let p = &placed[placed.binary_search_by_key(&i, |p| p.index).ok()?];
            let d = p.new_off.wrapping_sub(p.same_as?);
            if delta.is_some_and(|x| x != d) {
                return None;
            }
            delta = Some(d);
        }
        let new = off.wrapping_add(delta?);
        let new_stop = new.checked_add(filesz).filter(|&e| e <= end)?;
        let intruder = placed.iter().any(|p| {
            p.same_as.map(|o| p.new_off.wrapping_sub(o)) != delta && overlaps(new, new_stop, p.new_off, p.new_size)
        });
        (!intruder).then_some(new)
    };
    // How much of a PT_LOAD's start is still in place (the headers, notes kept at their
    // offset), as objcopy keeps it: readelf wants PT_PHDR inside a PT_LOAD's file bytes.
    let load_prefix = |off: u64, filesz: u64| -> u64 {
        let stop = off.saturating_add(filesz).min(end);
        let mut kept_end = if off == 0 { same_hdr_end.min(stop) } else { off };
        for p in placed.iter().filter(|p| p.same_as == Some(p.new_off)) {
            if p.new_off >= off && p.new_off.saturating_add(p.new_size) <= stop {
                kept_end = kept_end.max(p.new_off + p.new_size);
            }
        }
        let moved_in = placed
            .iter()
            .any(|p| p.same_as != Some(p.new_off) && overlaps(off, kept_end, p.new_off, p.new_size));
        if moved_in { 0 } else { kept_end.saturating_sub(off) }
    };
    phdrs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = *p;
            let (ty, off, filesz) = (p.p_type(LE), p.p_offset(LE), p.p_filesz(LE));
            if i >= MAX_SEGMENTS {
                // Each one costs a pass over the sections: a hostile count stops here.
                q.p_offset = U64::new(LE, off.min(end));
                q.p_filesz = U64::new(LE, 0);
                return q;
            }
            if ty == elf::PT_LOAD {
                q.p_filesz = U64::new(LE, load_prefix(off, filesz));
                return q;
            }
            let new_off = if ty == elf::PT_PHDR && filesz == 56 * phdrs.len() as u64 {
                Some(phoff)
            } else {
                moved(off, filesz)
            };
            match new_off {
                Some(n) => q.p_offset = U64::new(LE, n),
                None => {
                    // Inside the file, which strict readers (llvm-readelf) check even
                    // for a segment without bytes.
                    q.p_offset = U64::new(LE, off.min(end));
                    q.p_filesz = U64::new(LE, 0);
                }
            }
            q
        })
        .collect()
}

/// Re-reads `out` and checks it against the contract; the stats on success.
fn verify(input: &Input, pcln_file: Option<&Input>, w: &Written, out_path: &Path) -> Result<DebugFileStats> {
    let bad = |what: String| Error::DebugFile(format!("{}: the debug file does not verify: {what}", out_path.display()));
    let file = w.out.try_clone().map_err(|e| io_err(out_path, "cannot reopen", e))?;
    // SAFETY: read-only map of our own file, which nobody writes any more.
    let map = unsafe { FileMap::map(&file) }.map_err(|e| io_err(out_path, "cannot map", e))?;
    let out = Input { path: out_path.to_path_buf(), file, map };
    let table = out.sections()?;
    let named = |n: &[u8]| table.iter().find(|s| table.section_name(LE, s) == Ok(n));
    let syms = named(b".symtab")
        .filter(|s| s.sh_type(LE) == elf::SHT_SYMTAB && s.sh_entsize(LE) > 0)
        .map_or(0, |s| s.sh_size(LE) / s.sh_entsize(LE));
    if syms != w.stats.symtab_entries {
        return Err(bad(format!(".symtab has {syms} entries, expected {}", w.stats.symtab_entries)));
    }
    if named(b".text").is_some_and(|s| s.sh_type(LE) != elf::SHT_NOBITS) {
        return Err(bad(".text still holds code bytes".into()));
    }
    if let Some((i, own, off, size)) = w.pcln {
        let orig = if own { Some(input) } else { pcln_file };
        let s = table.section(SectionIndex(i)).map_err(|e| bad(e.to_string()))?;
        let same = match (orig, out.range(s)?) {
            (Some(orig), Some((new_off, n))) if n == size => same_bytes(orig, off, &out, new_off, size)?,
            _ => false,
        };
        if !same {
            return Err(bad("the Go symbol table was not kept byte for byte".into()));
        }
    }
    for p in &w.placed {
        let Some(size) = p.inflated else { continue };
        let s = table.section(SectionIndex(p.index)).map_err(|e| bad(e.to_string()))?;
        let c = s.compression(LE, &out.map[..]).map_err(|e| bad(e.to_string()))?;
        let Some((ch, coff, csize)) = c else { return Err(bad(format!("section {} is not compressed", p.index))) };
        if ch.ch_type.get(LE) != elf::ELFCOMPRESS_ZLIB || ch.ch_size.get(LE) != size {
            return Err(bad(format!("section {} has a wrong compression header", p.index)));
        }
        // zlib checks the Adler-32 of the original bytes at the end of the stream.
        let mut dec = flate2::read::ZlibDecoder::new(out.reader(coff, csize));
        let n = io::copy(&mut dec, &mut io::sink()).map_err(|e| bad(format!("section {}: {e}", p.index)))?;
        if n != size {
            return Err(bad(format!("section {} inflates to {n} bytes, expected {size}", p.index)));
        }
    }
    Ok(w.stats.clone())
}

fn same_bytes(a: &Input, a_off: u64, b: &Input, b_off: u64, size: u64) -> Result<bool> {
    let (mut x, mut y) = (vec![0u8; COPY_CHUNK], vec![0u8; COPY_CHUNK]);
    let (mut ra, mut rb) = (a.reader(a_off, size), b.reader(b_off, size));
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(COPY_CHUNK).min(COPY_CHUNK);
        ra.read_exact(&mut x[..n]).map_err(|e| io_err(&a.path, "cannot read", e))?;
        rb.read_exact(&mut y[..n]).map_err(|e| io_err(&b.path, "cannot read", e))?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}
