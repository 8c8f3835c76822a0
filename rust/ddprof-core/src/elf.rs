//! ELF files as the unwinder and the mapping table need them, cached by file identity.
//!
//! Input: an open file (through `/proc/PID/map_files` or `/proc/PID/root`, so files inside
//! containers and deleted files work). Output: an [`ElfFile`] holding the memory map, the GNU
//! build id, the PT_LOAD segments (to compute the bias between addresses in the process and
//! addresses in the file) and the unwind sections, as ranges of the memory map.
//! Non-goals: symbols (see `symbolize`), CFI evaluation (framehop does it).
use std::collections::HashMap;
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::PathBuf;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

/// A file's identity: device and inode as `/proc/PID/maps` reports them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

/// A byte range of a shared memory map; what framehop keeps of each section.
#[derive(Clone)]
pub struct MapSlice {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for MapSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

#[derive(Clone, Debug)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub vaddr: u64,
}

#[derive(Clone, Default)]
pub struct Section {
    /// Address in the file (SVMA) and the bytes; `None` data for SHT_NOBITS or compressed.
    pub svma: Range<u64>,
    pub data: Option<Range<usize>>,
}

pub struct ElfFile {
    pub key: FileKey,
    /// Kept open so that the file stays readable (for symbolization at snapshot time) after
    /// the process that mapped it exits or the file is deleted.
    file: File,
    map: Arc<Mmap>,
    pub size: u64,
    pub build_id: Option<Vec<u8>>,
    /// The Go toolchain's build id (`.note.go.buildid`), for Go binaries.
    pub go_build_id: Option<String>,
    /// The id the backend knows this file by (see `file_id`).
    pub id: Arc<str>,
    /// What symbol caches are keyed by: the build id and which symbols the file itself
    /// holds, so one binary seen through many containers (other inodes) is resolved once but
    /// a stripped copy does not share a full copy's results; files with no build id (whose
    /// file hash only samples the ends) are keyed by device and inode.
    pub cache_key: Arc<str>,
    /// Where separate debug files may be (build-id trees and debug links), inside the root
    /// of the process that mapped the file first, then on the host.
    pub debug_dirs: Vec<PathBuf>,
    /// Whether the file has DWARF of its own, or names a debug file (.gnu_debuglink); if
    /// neither, a debug file is looked up by build id (see `debug_file_by_build_id`).
    pub has_debug_info: bool,
    pub has_debuglink: bool,
    /// Go's own symbol table, which survives `-ldflags=-s -w` (see `gopclntab`).
    pub has_gopclntab: bool,
    pub segments: Vec<LoadSegment>,
    pub text: Option<Section>,
    pub eh_frame: Option<Section>,
    pub eh_frame_hdr: Option<Section>,
    pub debug_frame: Option<Section>,
    pub got: Option<Section>,
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

impl ElfFile {
    pub fn open(file: File, key: FileKey) -> Result<ElfFile, ElfError> {
        let meta = file.metadata().map_err(ElfError::Open)?;
        if meta.ino() != key.inode {
            return Err(ElfError::Replaced);
        }
        // SAFETY: the map is read-only. A file truncated under us could fault on access; the
        // files we map are executables mapped by live processes, which the kernel protects
        // from writes (ETXTBSY) for as long as they are mapped.
        let map = Arc::new(unsafe { Mmap::map(&file) }.map_err(ElfError::Map)?);
        Self::parse(file, map, key, meta.len())
    }

    fn parse(file: File, map: Arc<Mmap>, key: FileKey, size: u64) -> Result<ElfFile, ElfError> {
        let obj = object::File::parse(&**map).map_err(|e| ElfError::Parse(e.to_string()))?;
        let build_id = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
        let go_build_id = obj
            .section_by_name(".note.go.buildid")
            .and_then(|s| s.data().ok())
            .and_then(go_build_id_from_note);
        let segments = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                LoadSegment { file_offset: off, file_size: size, vaddr: s.address() }
            })
            .collect();
        let section = |name: &str| -> Option<Section> {
            let s = obj.section_by_name(name)?;
            let svma = s.address()..s.address() + s.size();
            let data = match s.compressed_file_range() {
                Ok(r) if r.format == object::CompressionFormat::None => {
                    let (off, len) = (r.offset as usize, r.uncompressed_size as usize);
                    (off.checked_add(len)? <= map.len()).then_some(off..off + len)
                }
                _ => None,
            };
            Some(Section { svma, data })
        };
        let id: Arc<str> = Arc::from(file_id_of(build_id.as_deref(), go_build_id.as_deref(), &map, size));
        let has = |name: &str| obj.section_by_name(name).is_some();
        let cache_key: Arc<str> = if build_id.as_deref().is_some_and(|b| !b.is_empty()) || go_build_id.is_some() {
            let symbols = [".symtab", ".debug_info", ".gnu_debuglink"].map(|n| if has(n) { '1' } else { '0' });
            Arc::from(format!("{id}/{}", String::from_iter(symbols)))
        } else {
            Arc::from(format!("{}:{}", key.dev, key.inode))
        };
        Ok(ElfFile {
            key,
            file,
            size,
            build_id,
            go_build_id,
            id,
            cache_key,
            debug_dirs: Vec::new(),
            has_debug_info: obj.section_by_name(".debug_info").is_some(),
            has_debuglink: obj.section_by_name(".gnu_debuglink").is_some(),
            has_gopclntab: crate::gopclntab::SECTION_NAMES.iter().any(|n| obj.section_by_name(n).is_some()),
            segments,
            text: section(".text"),
            eh_frame: section(".eh_frame"),
            eh_frame_hdr: section(".eh_frame_hdr"),
            debug_frame: section(".debug_frame"),
            got: section(".got"),
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

    /// The bias (address in the process minus address in the file) of a mapping of this file
    /// that starts at `start` and maps file offset `offset`.
    pub fn bias_for(&self, start: u64, offset: u64) -> u64 {
        const PAGE: u64 = 4096;
        // The kernel maps each PT_LOAD from its page-aligned file offset, and linkers such as
        // lld pack segments so that one page holds the end of one and the start of the next:
        // the segment that begins on `offset` wins over one that merely covers it. Failing
        // that (a mapping split by mprotect), the covering segment that starts last.
        let lo = |s: &LoadSegment| s.file_offset & !(PAGE - 1);
        let seg = self
            .segments
            .iter()
            .rfind(|s| lo(s) == offset)
            .or_else(|| {
                self.segments
                    .iter()
                    .filter(|s| lo(s) <= offset && offset < s.file_offset + s.file_size.max(1))
                    .max_by_key(|s| s.file_offset)
            })
            .or_else(|| self.segments.first());
        match seg {
            // avma = start + (fileoff - offset); svma = vaddr + (fileoff - file_offset)
            Some(s) => start.wrapping_sub(offset).wrapping_add(s.file_offset).wrapping_sub(s.vaddr),
            None => start.wrapping_sub(offset),
        }
    }

    /// `<debug dir>/.build-id/xx/yyyy.debug` for a file that has neither DWARF nor a debug
    /// link (blazesym follows debug links, and build ids only through them).
    pub fn debug_file_by_build_id(&self) -> Option<PathBuf> {
        if self.has_debug_info || self.has_debuglink {
            return None;
        }
        let id = hex(self.build_id.as_deref().filter(|b| b.len() > 1)?);
        let rel = format!(".build-id/{}/{}.debug", &id[..2], &id[2..]);
        self.debug_dirs.iter().map(|d| d.join(&rel)).find(|p| p.is_file())
    }

    /// The address in the file (as its symbols state it) of a file offset.
    pub fn file_offset_to_svma(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.file_offset && offset < s.file_offset + s.file_size)
            .map(|s| s.vaddr + (offset - s.file_offset))
    }

    /// A path that opens this very file for as long as it is cached, whatever happened to
    /// the process or the name it was mapped from.
    pub fn fd_path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/self/fd/{}", self.file.as_raw_fd())
    }

    /// The id the backend knows this file by: the GNU build id, else the Go build id, else
    /// the file hash of datadog-contracts.md.
    pub fn file_id(&self) -> String {
        self.id.to_string()
    }
}

fn file_id_of(build_id: Option<&[u8]>, go_build_id: Option<&str>, data: &[u8], size: u64) -> String {
    if let Some(b) = build_id.filter(|b| !b.is_empty()) {
        return hex(b);
    }
    if let Some(g) = go_build_id {
        return g.to_string();
    }
    file_hash(data, size)
}

/// For the fuzz target: the whole path a mapped file takes (parse, segments, bias, file id,
/// unwind sections, symbolization of a few offsets) on arbitrary bytes. Returns how many
/// of the offsets resolved; errors are expected, panics and hangs are bugs.
pub fn fuzz_parse(data: &[u8]) -> usize {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid C string; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"ddprof-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    if file.write_all(data).is_err() || data.is_empty() {
        return 0;
    }
    let Ok(inode) = file.metadata().map(|m| m.ino()) else { return 0 };
    let Ok(f) = ElfFile::open(file, FileKey { dev: 0, inode }) else { return 0 };
    let _ = f.bias_for(0x5555_0000_0000, 0x1000);
    let _ = f.file_id();
    let _ = f.debug_file_by_build_id();
    for s in [&f.text, &f.eh_frame, &f.eh_frame_hdr, &f.debug_frame] {
        let _ = f.slice(s).map(|d| d.len());
    }
    let offsets: Vec<u64> = f.segments.iter().map(|s| s.file_offset.saturating_add(s.file_size / 2)).take(4).collect();
    let f = Arc::new(f);
    let reqs: Vec<crate::aggregate::SymRequest> =
        offsets.iter().map(|&offset| crate::aggregate::SymRequest::File { file: f.clone(), offset }).collect();
    crate::symbolize::Symbolizer::new().resolve(&reqs).iter().filter(|l| !l.is_empty()).count()
}

/// The vDSO image, the same in every process on this kernel: copied from our own address
/// space into a memfd so that it can be unwound and symbolized like any file.
pub fn load_vdso() -> Option<ElfFile> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (range, _) = line.split_once(' ')?;
    let (s, e) = range.split_once('-')?;
    let (start, end) = (usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?);
    // SAFETY: the [vdso] mapping of this very process is readable for its whole range and
    // never unmapped.
    let image = unsafe { std::slice::from_raw_parts(start as *const u8, end.checked_sub(start)?) };
    // SAFETY: memfd_create with a valid C string; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(c"ddprof-vdso".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(image).ok()?;
    let inode = file.metadata().ok()?.ino();
    ElfFile::open(file, FileKey { dev: 0, inode }).ok()
}

/// The contents of a `.note.go.buildid` note: namesz, descsz, type 4, "Go\0\0", the id.
fn go_build_id_from_note(data: &[u8]) -> Option<String> {
    let word = |i: usize| Some(u32::from_le_bytes(data.get(i..i + 4)?.try_into().ok()?) as usize);
    let (namesz, descsz, kind) = (word(0)?, word(4)?, word(8)?);
    if namesz != 4 || kind != 4 || data.get(12..16)? != b"Go\0\0" {
        return None;
    }
    let id = data.get(16..16usize.checked_add(descsz)?)?;
    std::str::from_utf8(id).ok().map(str::to_string).filter(|s| !s.is_empty())
}

/// SHA-256 over the first 4096 bytes, the last 4096 bytes and the size (8 bytes, big
/// endian); the first 16 bytes as 32 hex characters. The id of a file with no build id.
pub fn file_hash(data: &[u8], size: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(&data[..data.len().min(4096)]);
    h.update(&data[data.len().saturating_sub(4096)..]);
    h.update(size.to_be_bytes());
    hex(&h.finalize()[..16])
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parsed files by identity, bounded in count. Failures are remembered too, so a corrupt or
/// unreadable file costs one attempt, not one per sample.
pub struct FileCache {
    files: HashMap<FileKey, Result<Arc<ElfFile>, ()>>,
    limit: usize,
    pub errors: u64,
}

impl FileCache {
    pub fn new(limit: usize) -> Self {
        FileCache { files: HashMap::new(), limit, errors: 0 }
    }

    /// The cached file for `key`, opening it with `open` on a miss.
    pub fn get_or_open(
        &mut self,
        key: FileKey,
        debug_dirs: impl FnOnce() -> Vec<PathBuf>,
        open: impl FnOnce() -> Result<File, std::io::Error>,
    ) -> Option<Arc<ElfFile>> {
        if let Some(r) = self.files.get(&key) {
            return r.as_ref().ok().cloned();
        }
        if self.files.len() >= self.limit {
            // Drop what no live process holds any more; if that frees nothing, start over.
            self.files.retain(|_, v| matches!(v, Ok(f) if Arc::strong_count(f) > 1));
            if self.files.len() >= self.limit {
                self.files.clear();
            }
        }
        let res = open().map_err(ElfError::Open).and_then(|f| ElfFile::open(f, key));
        let entry = match res {
            Ok(mut f) => {
                f.debug_dirs = debug_dirs();
                Ok(Arc::new(f))
            }
            Err(e) => {
                self.errors += 1;
                log::debug!("file {key:?}: {e}");
                Err(())
            }
        };
        self.files.insert(key, entry.clone());
        entry.ok()
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(file_offset: u64, vaddr: u64, file_size: u64) -> LoadSegment {
        LoadSegment { file_offset, file_size, vaddr }
    }

    fn bias(segments: Vec<LoadSegment>, start: u64, offset: u64) -> u64 {
        // Only the segments matter to bias_for; build the rest from an empty map.
        let map = Arc::new(memmap2::MmapMut::map_anon(1).expect("anon map").make_read_only().expect("ro"));
        let file = File::open("/dev/null").expect("/dev/null");
        let f = ElfFile {
            key: FileKey { dev: 0, inode: 0 },
            file,
            map,
            size: 0,
            build_id: None,
            go_build_id: None,
            id: Arc::from(""),
            cache_key: Arc::from(""),
            debug_dirs: Vec::new(),
            has_debug_info: false,
            has_debuglink: false,
            has_gopclntab: false,
            segments,
            text: None,
            eh_frame: None,
            eh_frame_hdr: None,
            debug_frame: None,
            got: None,
        };
        f.bias_for(start, offset)
    }

    #[test]
    fn lld_packed_segments_use_the_segment_that_starts_on_the_mapping() {
        // readelf -l of an lld-linked Rust cdylib: the R segment covers file offset 0x8d000
        // too, but the kernel maps the R E segment there, 0x1000 further in memory.
        let segs = vec![seg(0, 0, 0x8d8cc), seg(0x8d8cc, 0x8e8cc, 0x209ce4), seg(0x2975b0, 0x2995b0, 0xa848)];
        let start = 0x7f00_0008_e000;
        let b = bias(segs, start, 0x8d000);
        // file offset 0x8d900 (.text) is at svma 0x8e900.
        let avma = start + (0x8d900 - 0x8d000);
        assert_eq!(avma - b, 0x8e900);
    }

    #[test]
    fn file_hash_follows_the_contract() {
        // 10000 bytes: the first 4096 and the last 4096 overlap, as they do for small files.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut input = data[..4096].to_vec();
        input.extend_from_slice(&data[10_000 - 4096..]);
        input.extend_from_slice(&10_000u64.to_be_bytes());
        use sha2::{Digest, Sha256};
        let want = hex(&Sha256::digest(&input)[..16]);
        assert_eq!(file_hash(&data, 10_000), want);
        assert_eq!(want.len(), 32);
    }

    #[test]
    fn go_build_id_note() {
        let id = b"abc/def";
        let mut note = vec![4, 0, 0, 0, id.len() as u8, 0, 0, 0, 4, 0, 0, 0];
        note.extend_from_slice(b"Go\0\0");
        note.extend_from_slice(id);
        assert_eq!(go_build_id_from_note(&note).as_deref(), Some("abc/def"));
        note[8] = 3;
        assert_eq!(go_build_id_from_note(&note), None);
        assert_eq!(go_build_id_from_note(&note[..10]), None);
    }

    #[test]
    fn classic_layout_and_split_mappings() {
        let segs = vec![seg(0, 0, 0x1000), seg(0x1000, 0x1000, 0x5000)];
        assert_eq!(bias(segs.clone(), 0x5555_0000_1000, 0x1000), 0x5555_0000_0000);
        // A mapping that begins in the middle of the text segment.
        assert_eq!(bias(segs, 0x5555_0000_3000, 0x3000), 0x5555_0000_0000);
    }
}
