//! ELF files: the one place that reads them. Every stage asks here (the unwinder for its
//! CFI sections and the bias, the symbolizer for symbol sources and debug files, symbol
//! upload for ids and the debug-only file), so a binary is parsed once and described one way.
//!
//! Input: an open file (through `/proc/PID/map_files` or `/proc/PID/root`, so files inside
//! containers and deleted files work) and its [`Origin`]. Output: an [`ElfFile`] that keeps
//! the file open and mapped, with its ids (`ids`), its PT_LOAD segments (to convert between
//! addresses in the process and in the file, see `crate::addr`), its unwind sections as
//! ranges of the map, what symbols it holds ([`SymbolSource`]), and its separate debug file
//! (`debug_files`), found on first need, and the bounds of its functions from its symbol
//! table ([`ElfFile::function_containing`], for the unwinder's prologue analysis of code
//! without CFI). Also: [`FileCache`] (files by identity, bounded), [`inspect`] (what a binary
//! offers for symbol upload), [`debug_writer`] (the debug-only ELF), [`gobuildinfo`] (a Go
//! binary's Go version).
//! Non-goals: symbol names (`symbolize`), CFI evaluation (framehop, in `unwind`).
use std::collections::HashMap;
use std::fs::File;
use std::ops::{Deref, Range};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, OnceLock};

use maps::FileMap;
use object::{Object, ObjectSection, ObjectSegment, SectionKind};

use crate::addr::{Avma, Bias, FileOffset, LoadSegment, Svma};
use crate::counters::{Counter, Counters};

pub mod debug_files;
pub mod debug_writer;
pub mod gobuildinfo;
pub mod gopclntab;
pub mod ids;
pub mod inspect;
pub mod maps;
pub mod plt;
mod vdso;

pub use debug_files::{DebugLink, Origin, Via};
pub use vdso::{load_vdso, memfd};

/// Where Go's symbol table lives: `.gopclntab`, or in PIE builds `.data.rel.ro.gopclntab`.
pub const GOPCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

/// A file's identity: device and inode as `/proc/PID/maps` reports them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

/// The best symbols a file holds, in the order the backend ranks them
/// (datadog-contracts.md): `none < dynamic_symbol_table < symbol_table < gopclntab <
/// debug_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SymbolSource {
    None,
    DynamicSymbolTable,
    SymbolTable,
    Gopclntab,
    DebugInfo,
}

impl SymbolSource {
    /// Every source, worst first.
    pub const ALL: [SymbolSource; 5] = [
        SymbolSource::None,
        SymbolSource::DynamicSymbolTable,
        SymbolSource::SymbolTable,
        SymbolSource::Gopclntab,
        SymbolSource::DebugInfo,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SymbolSource::None => "none",
            SymbolSource::DynamicSymbolTable => "dynamic_symbol_table",
            SymbolSource::SymbolTable => "symbol_table",
            SymbolSource::Gopclntab => "gopclntab",
            SymbolSource::DebugInfo => "debug_info",
        }
    }
}

/// A byte range of a shared memory map; what framehop keeps of each section.
#[derive(Clone)]
pub struct MapSlice {
    map: Arc<FileMap>,
    range: Range<usize>,
}

impl Deref for MapSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A section as the unwinder wants it: its SVMA range, and its bytes in the map (`None`
/// for SHT_NOBITS or compressed sections).
#[derive(Clone, Default)]
pub struct Section {
    pub svma: Range<u64>,
    pub data: Option<Range<usize>>,
}

/// The sections framehop reads.
#[derive(Clone, Default)]
pub struct UnwindSections {
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Section>,
    pub got: Option<Section>,
}

/// What symbols a file itself holds (without its debug file).
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    pub source: Option<SymbolSource>,
    pub symtab_entries: u64,
    /// Bytes of `.debug_*` and `.zdebug_*` sections with data.
    pub debug_sections_size: u64,
    pub debuglink: Option<DebugLink>,
    pub has_gopclntab: bool,
}

impl Symbols {
    pub fn source(&self) -> SymbolSource {
        self.source.unwrap_or(SymbolSource::None)
    }
}

/// A function as the symbol table bounds it: `[start, start + size)` in SVMAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionBounds {
    pub start: Svma,
    pub size: u64,
    /// A part the compiler split off a function (`foo.cold`): entered by a jump from the
    /// function's body, not by a call, so its start is not a function entry.
    pub split_part: bool,
}

pub struct ElfFile {
    pub key: FileKey,
    /// Kept open so that the file stays readable (for symbolization at snapshot time, and
    /// symbol upload) after the process that mapped it exits or the file is deleted.
    file: File,
    map: Arc<FileMap>,
    pub size: u64,
    /// `e_machine`.
    pub machine: u16,
    pub build_id: Option<Vec<u8>>,
    /// The Go toolchain's build id, for Go binaries.
    pub go_build_id: Option<String>,
    /// The id the backend knows this file by (`ids::file_id`).
    pub id: Arc<str>,
    /// What symbol caches are keyed by: the build id and which symbols the file itself
    /// holds, so one binary seen through many containers (other inodes) is resolved once but
    /// a stripped copy does not share a full copy's results; files with no build id (whose
    /// file hash only samples the ends) are keyed by device and inode.
    pub cache_key: Arc<str>,
    pub origin: Origin,
    pub symbols: Symbols,
    pub segments: Vec<LoadSegment>,
    pub unwind: UnwindSections,
    /// For a debug file: how it was found for its binary.
    pub found_via: Option<Via>,
    debug_file: OnceLock<Option<Arc<ElfFile>>>,
    /// Function bounds sorted by start, built on first need (most files never need them).
    functions: OnceLock<Vec<FunctionBounds>>,
    /// Named PLT entries, built on first need.
    plt: OnceLock<Vec<plt::PltEntry>>,
}

impl std::fmt::Debug for ElfFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElfFile").field("path", &self.origin.path).field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    #[error("not the mapped file (inode changed)")]
    Replaced,
    #[error("cannot map: {0}")]
    Map(std::io::Error),
    #[error("not a valid ELF file: {0}")]
    Parse(String),
}

impl ElfError {
    /// The core error for a file a user named: I/O, or not an ELF file we can read.
    pub fn into_error(self, path: &std::path::Path) -> crate::Error {
        match self {
            ElfError::Open(source) => crate::Error::Io { context: format!("cannot open {}", path.display()), source },
            other => crate::Error::InvalidBinary(format!("{}: {other}", path.display())),
        }
    }
}

impl ElfFile {
    /// Maps and parses `file`, which must still be the inode `key` names.
    pub fn open(file: File, key: FileKey, origin: Origin) -> Result<ElfFile, ElfError> {
        let meta = file.metadata().map_err(ElfError::Open)?;
        if meta.ino() != key.inode {
            return Err(ElfError::Replaced);
        }
        // SAFETY: the map is read-only. A file truncated under us could fault on access; the
        // files we map are executables mapped by live processes, which the kernel protects
        // from writes (ETXTBSY) for as long as they are mapped, or files a user named.
        let map = Arc::new(unsafe { FileMap::map(&file) }.map_err(ElfError::Map)?);
        Self::parse(file, map, key, meta.len(), origin)
    }

    /// Opens a file by path, keyed by its own device and inode.
    pub fn open_path(path: &std::path::Path, origin: Origin) -> Result<ElfFile, ElfError> {
        let file = File::open(path).map_err(ElfError::Open)?;
        let meta = file.metadata().map_err(ElfError::Open)?;
        Self::open(file, FileKey { dev: meta.dev(), inode: meta.ino() }, origin)
    }

    fn parse(file: File, map: Arc<FileMap>, key: FileKey, size: u64, origin: Origin) -> Result<ElfFile, ElfError> {
        let obj = object::File::parse(&**map).map_err(|e| ElfError::Parse(e.to_string()))?;
        let machine = match &obj {
            object::File::Elf32(f) => f.elf_header().e_machine.get(f.endian()),
            object::File::Elf64(f) => f.elf_header().e_machine.get(f.endian()),
            _ => return Err(ElfError::Parse("not an ELF file".into())),
        };
        let build_id = ids::gnu_build_id(&obj);
        let go_build_id = ids::go_build_id(&obj, &map);
        let segments = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                LoadSegment { file_offset: FileOffset(off), file_size: size, svma: Svma(s.address()) }
            })
            .collect();
        let section = |name: &str| -> Option<Section> {
            let s = obj.section_by_name(name)?;
            let svma = s.address()..s.address().saturating_add(s.size());
            let data = match s.compressed_file_range() {
                Ok(r) if r.format == object::CompressionFormat::None => {
                    let (off, len) = (usize::try_from(r.offset).ok()?, usize::try_from(r.uncompressed_size).ok()?);
                    (off.checked_add(len)? <= map.len()).then_some(off..off + len)
                }
                _ => None,
            };
            Some(Section { svma, data })
        };
        let symbols = symbols_of(&obj);
        let id: Arc<str> = Arc::from(ids::file_id(build_id.as_deref(), go_build_id.as_deref(), &map, size));
        let cache_key: Arc<str> = if build_id.is_some() || go_build_id.is_some() {
            let has = |n: &str| obj.section_by_name(n).is_some();
            let which = [".symtab", ".debug_info", ".gnu_debuglink"].map(|n| if has(n) { '1' } else { '0' });
            Arc::from(format!("{id}/{}", String::from_iter(which)))
        } else {
            Arc::from(format!("{}:{}", key.dev, key.inode))
        };
        let unwind = UnwindSections {
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame"),
            got: section(".got"),
        };
        Ok(ElfFile {
            key,
            file,
            size,
            machine,
            build_id,
            go_build_id,
            id,
            cache_key,
            origin,
            symbols,
            segments,
            unwind,
            found_via: None,
            debug_file: OnceLock::new(),
            functions: OnceLock::new(),
            plt: OnceLock::new(),
            map: map.clone(),
        })
    }

    /// The whole file, as mapped.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn slice(&self, s: &Option<Section>) -> Option<MapSlice> {
        let r = s.as_ref()?.data.clone()?;
        Some(MapSlice { map: self.map.clone(), range: r })
    }

    /// The bias of a mapping of this file that starts at `start` and maps file offset
    /// `offset` (see [`bias_for`]).
    pub fn bias_for(&self, start: Avma, offset: FileOffset) -> Bias {
        bias_for(&self.segments, start, offset)
    }

    /// `len` bytes of the file at `at`, when one segment holds them all in the file.
    pub fn svma_bytes(&self, at: Svma, len: u64) -> Option<&[u8]> {
        let seg = self.segments.iter().find(|s| at >= s.svma && (at.0 - s.svma.0).checked_add(len).is_some_and(|e| e <= s.file_size))?;
        let start = usize::try_from(seg.file_offset.0.checked_add(at.0 - seg.svma.0)?).ok()?;
        self.map.get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    /// The function of this file's own symbol table (`.symtab`, else `.dynsym`) that
    /// holds `svma`. The table is read once, on the first call. A stripped file has no
    /// answer here: ask its [`ElfFile::debug_file`] too.
    pub fn function_containing(&self, svma: Svma) -> Option<FunctionBounds> {
        let funcs = self.functions.get_or_init(|| {
            let funcs = object::File::parse(&**self.map).map(|obj| function_bounds(&obj)).unwrap_or_default();
            self.release_pages(); // the symbol table, read once
            funcs
        });
        let i = funcs.partition_point(|f| f.start <= svma).checked_sub(1)?;
        let f = funcs[i];
        (svma.0 - f.start.0 < f.size).then_some(f)
    }

    /// The name of the PLT entry holding `svma` (`pthread_self@plt`), if it is in one. The
    /// entries are read once, on the first call (see [`plt`]).
    pub fn plt_name(&self, svma: Svma) -> Option<&str> {
        let entries = self.plt.get_or_init(|| {
            let entries = plt::entries(&self.map);
            self.release_pages();
            entries
        });
        plt::lookup(entries, svma).map(|e| e.name.as_str())
    }

    /// Drops this process's hold on the pages of the file read so far (`MADV_DONTNEED` on
    /// its mapping, and its debug file's): they stay in the page cache and fault back in on
    /// the next read, but stop counting in the profiler's resident memory. Without it, what
    /// any scan ever touched (symbol tables, Go's tables, unwind tables) stayed resident for
    /// as long as the file was held: 51 MiB for one 112 MiB Go binary.
    pub fn release_pages(&self) {
        // A file truncated under the map raises SIGBUS with or without this call.
        if let Err(e) = self.map.release() {
            log::debug!("{}: madvise(DONTNEED): {e}", self.origin.path);
        }
        if let Some(Some(d)) = self.debug_file.get() {
            d.release_pages();
        }
    }

    /// Where this file's map, and its debug file's if looked up, start: for
    /// [`maps::release_mappings_of`], which also releases other maps of the same files.
    pub fn map_starts(&self, out: &mut std::collections::HashSet<usize>) {
        out.insert(self.map.as_ptr() as usize);
        if let Some(Some(d)) = self.debug_file.get() {
            d.map_starts(out);
        }
    }

    /// The SVMA of a file offset, through the segment that holds it.
    pub fn svma_of(&self, offset: FileOffset) -> Option<Svma> {
        self.segments.iter().find_map(|s| s.svma_of(offset))
    }

    /// A path that opens this very file for as long as it is held, whatever happened to the
    /// process or the name it was mapped from.
    pub fn fd_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// A second descriptor of the file (for a reader that wants its own).
    pub fn reopen(&self) -> std::io::Result<File> {
        self.file.try_clone()
    }

    /// The id the backend knows this file by: the GNU build id, else the Go build id, else
    /// the file hash of datadog-contracts.md.
    pub fn file_id(&self) -> &str {
        &self.id
    }

    /// The separate debug file (see `debug_files`), looked up once; `None` when there is none.
    pub fn debug_file(&self) -> Option<&Arc<ElfFile>> {
        self.debug_file
            .get_or_init(|| {
                let build_id_of = |f: &File| -> Option<Vec<u8>> {
                    // SAFETY: read-only map of a debug file, dropped before returning.
                    let map = unsafe { FileMap::map(f) }.ok()?;
                    ids::gnu_build_id(&object::File::parse(&*map).ok()?)
                };
                let want = debug_files::Wanted {
                    build_id: self.build_id.as_deref(),
                    debuglink: self.symbols.debuglink.as_ref(),
                    binary: (self.key.dev, self.key.inode),
                    build_id_of: &build_id_of,
                };
                let found = debug_files::find(&self.origin, &want)?;
                let meta = found.file.metadata().ok()?;
                let key = FileKey { dev: meta.dev(), inode: meta.ino() };
                let origin = Origin { path: found.path.to_string_lossy().into_owned(), ..Origin::default() };
                match ElfFile::open(found.file, key, origin) {
                    Ok(mut f) => {
                        f.found_via = Some(found.via);
                        Some(Arc::new(f))
                    }
                    Err(e) => {
                        log::debug!("{}: debug file: {e}", found.path.display());
                        None
                    }
                }
            })
            .as_ref()
    }

    /// Where the symbolizer and symbol upload take symbols from: the debug file when it
    /// ranks better than the file itself.
    pub fn best_symbols(self: &Arc<Self>) -> (&Arc<ElfFile>, SymbolSource) {
        let own = self.symbols.source();
        if own < SymbolSource::DebugInfo {
            if let Some(d) = self.debug_file() {
                let theirs = d.symbols.source();
                if theirs > own {
                    return (d, theirs);
                }
            }
        }
        (self, own)
    }
}

/// The symbols a parsed file itself holds.
fn symbols_of(obj: &object::File<'_>) -> Symbols {
    let has_data = |name: &str| {
        obj.section_by_name(name).is_some_and(|s| s.kind() != SectionKind::UninitializedData && s.size() > 0 && s.file_range().is_some())
    };
    let has_gopclntab = GOPCLNTAB_SECTIONS.iter().any(|n| has_data(n));
    let source = if has_data(".debug_info") || has_data(".zdebug_info") {
        SymbolSource::DebugInfo
    } else if has_gopclntab {
        SymbolSource::Gopclntab
    } else if has_data(".symtab") {
        SymbolSource::SymbolTable
    } else if has_data(".dynsym") {
        SymbolSource::DynamicSymbolTable
    } else {
        SymbolSource::None
    };
    let symtab_entries = match obj {
        object::File::Elf32(f) => symtab_entries(f.elf_section_table(), f.endian()),
        object::File::Elf64(f) => symtab_entries(f.elf_section_table(), f.endian()),
        _ => 0,
    };
    let debug_sections_size = obj
        .sections()
        .filter(|s| s.file_range().is_some() && s.name().is_ok_and(|n| n.starts_with(".debug_") || n.starts_with(".zdebug_")))
        .map(|s| s.size())
        .sum();
    let debuglink = obj
        .section_by_name(".gnu_debuglink")
        .and_then(|s| s.data().ok())
        .and_then(|d| DebugLink::parse(d, !obj.is_little_endian()));
    Symbols { source: Some(source), symtab_entries, debug_sections_size, debuglink, has_gopclntab }
}

/// Function bounds from `.symtab` (or `.dynsym` when there is no `.symtab`), sorted by start.
fn function_bounds(obj: &object::File<'_>) -> Vec<FunctionBounds> {
    use object::{ObjectSymbol, SymbolKind};
    struct Sym {
        start: u64,
        size: u64,
        split: bool,
        section_end: u64,
    }
    let collect = |syms: &mut dyn Iterator<Item = object::Symbol<'_, '_>>| -> Vec<Sym> {
        syms.filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .map(|s| Sym {
                start: s.address(),
                size: s.size(),
                split: s.name().is_ok_and(|n| n.ends_with(".cold") || n.contains(".cold.")),
                section_end: s
                    .section_index()
                    .and_then(|i| obj.section_by_index(i).ok())
                    .map_or(0, |sec| sec.address().saturating_add(sec.size())),
            })
            .collect()
    };
    let mut syms = collect(&mut obj.symbols());
    if syms.is_empty() {
        syms = collect(&mut obj.dynamic_symbols());
    }
    // Aliases share a start: keep the largest size, and call the start a split part only
    // when every name there says so.
    syms.sort_unstable_by_key(|s| (s.start, std::cmp::Reverse(s.size)));
    let mut out: Vec<(FunctionBounds, u64)> = Vec::with_capacity(syms.len());
    for s in syms {
        match out.last_mut() {
            Some((last, _)) if last.start.0 == s.start => last.split_part &= s.split,
            _ => out.push((FunctionBounds { start: Svma(s.start), size: s.size, split_part: s.split }, s.section_end)),
        }
    }
    // Hand-written assembly often has no `.size`: such a function ends where the next one
    // starts, or where its section ends.
    let starts: Vec<u64> = out.iter().map(|(f, _)| f.start.0).skip(1).chain([u64::MAX]).collect();
    out.iter()
        .zip(starts)
        .map(|(&(mut f, section_end), next)| {
            if f.size == 0 {
                f.size = next.min(section_end).saturating_sub(f.start.0);
            }
            f
        })
        .collect()
}

fn symtab_entries<H: object::read::elf::FileHeader>(
    sections: &object::read::elf::SectionTable<'_, H>,
    endian: H::Endian,
) -> u64 {
    use object::read::elf::SectionHeader;
    sections
        .iter()
        .find(|s| s.sh_type(endian) == object::elf::SHT_SYMTAB)
        .map(|s| {
            let entsize: u64 = s.sh_entsize(endian).into();
            let size: u64 = s.sh_size(endian).into();
            size.checked_div(entsize).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The bias (AVMA - SVMA) of a mapping that starts at `start` and maps file offset `offset`.
pub fn bias_for(segments: &[LoadSegment], start: Avma, offset: FileOffset) -> Bias {
    const PAGE: u64 = 4096;
    // The kernel maps each PT_LOAD from its page-aligned file offset, and linkers such as
    // lld pack segments so that one page holds the end of one and the start of the next:
    // the segment that begins on `offset` wins over one that merely covers it. Failing
    // that (a mapping split by mprotect), the covering segment that starts last.
    let lo = |s: &LoadSegment| s.file_offset.0 & !(PAGE - 1);
    let seg = segments
        .iter()
        .rfind(|s| lo(s) == offset.0)
        .or_else(|| {
            segments
                .iter()
                .filter(|s| lo(s) <= offset.0 && offset.0 < s.file_offset.0.saturating_add(s.file_size.max(1)))
                .max_by_key(|s| s.file_offset)
        })
        .or_else(|| segments.first());
    match seg {
        Some(s) => s.bias_when_mapped(start, offset),
        None => Bias(start.0.wrapping_sub(offset.0)),
    }
}

/// Why a mapped file is not available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenFailure {
    /// The open was refused for lack of permission (through this process; another may do).
    Denied,
    /// The file could not be opened or parsed (remembered).
    Failed,
}

/// Parsed files by identity, bounded in count. Failures are remembered too, so a corrupt or
/// unreadable file costs one attempt, not one per sample; except a permission refused: that
/// depends on the process the file was opened through (another user's, without
/// CAP_SYS_PTRACE), and the same file (a shared libc) may open through the next one.
pub struct FileCache {
    files: HashMap<FileKey, Result<Arc<ElfFile>, ()>>,
    limit: usize,
    /// Counts files that could not be opened or parsed (`elf_errors`), and refused opens
    /// (`files_denied`).
    counters: Arc<Counters>,
}

impl FileCache {
    pub fn new(limit: usize, counters: Arc<Counters>) -> Self {
        FileCache { files: HashMap::new(), limit, counters }
    }

    /// The cached file for `key`, opening it with `open` on a miss.
    pub fn get_or_open(
        &mut self,
        key: FileKey,
        origin: impl FnOnce() -> Origin,
        open: impl FnOnce() -> Result<File, std::io::Error>,
    ) -> Result<Arc<ElfFile>, OpenFailure> {
        if let Some(r) = self.files.get(&key) {
            return r.as_ref().cloned().map_err(|_| OpenFailure::Failed);
        }
        if self.files.len() >= self.limit {
            // Drop what no live process holds any more; if that frees nothing, start over.
            self.files.retain(|_, v| matches!(v, Ok(f) if Arc::strong_count(f) > 1));
            if self.files.len() >= self.limit {
                self.files.clear();
            }
        }
        let entry = match open().map_err(ElfError::Open).and_then(|f| ElfFile::open(f, key, origin())) {
            Ok(f) => Ok(Arc::new(f)),
            Err(ElfError::Open(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                self.counters.incr(Counter::FilesDenied);
                log::debug!("file {key:?}: {e}");
                return Err(OpenFailure::Denied);
            }
            Err(e) => {
                self.counters.incr(Counter::ElfErrors);
                log::debug!("file {key:?}: {e}");
                Err(())
            }
        };
        self.files.insert(key, entry.clone());
        entry.map_err(|_| OpenFailure::Failed)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Forgets the files no live process maps, and drops this process's hold on the pages
    /// read of the others (the memory budget was exceeded: see `memory`). Failures stay
    /// remembered: they cost nothing and would be retried on every sample.
    pub fn shed(&mut self) {
        self.files.retain(|_, v| match v {
            Ok(f) => Arc::strong_count(f) > 1,
            Err(()) => true,
        });
        self.files.shrink_to_fit();
        for f in self.files.values().flatten() {
            f.release_pages();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_open_is_not_remembered_but_a_failed_one_is() {
        // Through another user's process the open is refused; through the next process
        // the same file (a shared libc) opens: the refusal must not stick to the file.
        let counters: Arc<Counters> = Arc::default();
        let mut cache = FileCache::new(16, counters.clone());
        let exe = std::fs::canonicalize("/proc/self/exe").expect("own executable");
        let meta = std::fs::metadata(&exe).expect("metadata");
        let key = FileKey { dev: meta.dev(), inode: meta.ino() };
        let origin = || Origin::in_process(std::process::id(), exe.to_str().unwrap_or_default());
        let denied = || Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert_eq!(cache.get_or_open(key, origin, denied).err(), Some(OpenFailure::Denied));
        assert!(cache.get_or_open(key, origin, || File::open(&exe)).is_ok());
        let other = FileKey { dev: key.dev, inode: key.inode.wrapping_add(1) };
        let missing = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert_eq!(cache.get_or_open(other, origin, missing).err(), Some(OpenFailure::Failed));
        assert_eq!(cache.get_or_open(other, origin, || File::open(&exe)).err(), Some(OpenFailure::Failed));
        assert_eq!((counters.get(Counter::FilesDenied), counters.get(Counter::ElfErrors)), (1, 1));
    }

    fn seg(file_offset: u64, vaddr: u64, file_size: u64) -> LoadSegment {
        LoadSegment { file_offset: FileOffset(file_offset), file_size, svma: Svma(vaddr) }
    }

    #[test]
    fn lld_packed_segments_use_the_segment_that_starts_on_the_mapping() {
        // readelf -l of an lld-linked Rust cdylib: the R segment covers file offset 0x8d000
        // too, but the kernel maps the R E segment there, 0x1000 further in memory.
        let segs = [seg(0, 0, 0x8d8cc), seg(0x8d8cc, 0x8e8cc, 0x209ce4), seg(0x2975b0, 0x2995b0, 0xa848)];
        let start = Avma(0x7f00_0008_e000);
        let b = bias_for(&segs, start, FileOffset(0x8d000));
        // file offset 0x8d900 (.text) is at svma 0x8e900.
        let avma = Avma(start.0 + (0x8d900 - 0x8d000));
        assert_eq!(b.svma(avma), Svma(0x8e900));
    }

    #[test]
    fn classic_layout_and_split_mappings() {
        let segs = [seg(0, 0, 0x1000), seg(0x1000, 0x1000, 0x5000)];
        assert_eq!(bias_for(&segs, Avma(0x5555_0000_1000), FileOffset(0x1000)), Bias(0x5555_0000_0000));
        // A mapping that begins in the middle of the text segment.
        assert_eq!(bias_for(&segs, Avma(0x5555_0000_3000), FileOffset(0x3000)), Bias(0x5555_0000_0000));
    }

    #[test]
    fn this_test_binary_reads_as_elf() {
        let exe = std::env::current_exe().expect("test binary");
        let f = ElfFile::open_path(&exe, Origin::at_path(&exe, std::path::Path::new("/"))).expect("ELF");
        assert_eq!(crate::arch::elf_machine_name(f.machine), crate::arch::NAME);
        // cargo builds test binaries with symbols and DWARF.
        assert_eq!(f.symbols.source(), SymbolSource::DebugInfo);
        assert!(f.symbols.symtab_entries > 100, "{}", f.symbols.symtab_entries);
        assert!(f.unwind.eh_frame.as_ref().is_some_and(|s| s.data.is_some()));
        let text = f.unwind.text.as_ref().expect(".text").svma.start;
        let seg = f.segments.iter().find(|s| text >= s.svma.0 && text < s.svma.0 + s.file_size).expect("text segment");
        let off = FileOffset(text - seg.svma.0 + seg.file_offset.0);
        assert_eq!(f.svma_of(off), Some(Svma(text)));
        assert_eq!(f.file_id().len(), 40, "a GNU build id (sha1) from the linker");
    }
}
