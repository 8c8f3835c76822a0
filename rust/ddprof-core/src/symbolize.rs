//! Turns addresses into functions, files and lines: Go code through the binary's own
//! `.gopclntab` (see `gopclntab`: right even when stripped, and what the Go runtime itself
//! reports), other user code through blazesym (ELF symtab/dynsym, DWARF lines and inlined
//! functions, demangling), kernel code through `kallsyms`.
//!
//! Input: a period's symbolization requests: file offsets in ELF files (kept open, read
//! through /proc/self/fd so deleted files and exited processes still work) and kernel
//! addresses. Output: the lines of each, innermost inlined function first, as pprof wants
//! them; empty when nothing resolves (the location keeps module + address).
//! Runs on its own thread (blazesym's symbolizer is not Send), so a slow first parse of a
//! large binary never stalls the ring buffer drain. Cached per (build id + symbols, offset) and
//! per kernel address, bounded.
//! Non-goals: unwinding, deciding which file an address is in (see `process`).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};
use std::time::{Duration, Instant};

use crate::aggregate::SymRequest;
use crate::elf::ElfFile;
use crate::gopclntab::GoTable;
use crate::kallsyms::{KernelSymbols, CORE_MODULE};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub function: String,
    pub file: String,
    pub line: u32,
}

pub type Lines = Arc<[Line]>;

/// Entries of each result cache (~150 bytes each): a few MiB at most, then start over.
const MAX_CACHED: usize = 32_768;

pub struct Symbolizer {
    blaze: Blaze,
    /// Keyed by `ElfFile::cache_key` (build id and the symbols the file holds), not the
    /// inode: the same binary in many containers is resolved once.
    user: HashMap<(Arc<str>, u64), Lines>,
    kernel: HashMap<u64, Lines>,
    empty: Lines,
    pub failures: u64,
    ksyms: Option<KernelSymbols>,
    ksyms_loaded: Option<Instant>,
}

const KALLSYMS_MAX_AGE: Duration = Duration::from_secs(600);

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

fn new_blaze() -> Blaze {
    blaze_builder().build()
}

fn blaze_builder() -> blazesym::symbolize::Builder {
    Blaze::builder()
        // Paths are /proc/self/fd/N, which a later file may reuse: check identity each time.
        .enable_auto_reload(true)
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
}

fn code_file(ci: &Option<CodeInfo<'_>>) -> (String, u32) {
    match ci {
        Some(ci) => {
            let file = match &ci.dir {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(&*ci.file).to_string_lossy().into_owned(),
                _ => Path::new(&*ci.file).to_string_lossy().into_owned(),
            };
            (file, ci.line.unwrap_or(0))
        }
        None => (String::new(), 0),
    }
}

fn to_lines(sym: &Symbolized<'_>) -> Option<Vec<Line>> {
    let sym = sym.as_sym()?;
    // blazesym lists inlined calls outermost first; pprof wants the innermost first, each
    // with its own position, and the outer function last at the call site of the first
    // inlined one.
    let mut lines = Vec::with_capacity(sym.inlined.len() + 1);
    for f in sym.inlined.iter().rev() {
        let (file, line) = code_file(&f.code_info);
        lines.push(Line { function: f.name.to_string(), file, line });
    }
    let (file, line) = code_file(&sym.code_info.as_deref().cloned());
    lines.push(Line { function: sym.name.to_string(), file, line });
    Some(lines)
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: new_blaze(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            empty: Arc::from(Vec::new()),
            failures: 0,
            ksyms: None,
            ksyms_loaded: None,
        }
    }

    /// Lines for each request, in order. File offsets are batched per file, and each
    /// (file, offset) and kernel address is resolved once while it stays cached.
    pub fn resolve(&mut self, requests: &[SymRequest]) -> Vec<Lines> {
        if self.user.len() >= MAX_CACHED {
            self.user.clear();
        }
        if self.kernel.len() >= MAX_CACHED {
            self.kernel.clear();
        }
        // Gather what is missing, per file.
        let mut missing: HashMap<Arc<str>, (Arc<ElfFile>, Vec<u64>)> = HashMap::new();
        let mut kmissing: Vec<u64> = Vec::new();
        for r in requests {
            match r {
                SymRequest::File { file, offset } => {
                    if !self.user.contains_key(&(file.cache_key.clone(), *offset)) {
                        missing.entry(file.cache_key.clone()).or_insert_with(|| (file.clone(), Vec::new())).1.push(*offset);
                    }
                }
                SymRequest::Kernel { addr } => {
                    if !self.kernel.contains_key(addr) {
                        kmissing.push(*addr);
                    }
                }
                SymRequest::Fixed(_) => {}
            }
        }
        for (key, (file, mut offsets)) in missing {
            offsets.sort_unstable();
            offsets.dedup();
            if file.has_gopclntab {
                offsets = self.resolve_go(&file, offsets);
                if offsets.is_empty() {
                    continue;
                }
            }
            if !file.debug_dirs.is_empty() {
                self.blaze = blaze_builder().set_debug_dirs(Some(&file.debug_dirs)).build();
            }
            let result: Result<Vec<Option<Vec<Line>>>, _> = match file.debug_file_by_build_id() {
                // The debug file has the symbols and DWARF but no code: ask it by address.
                Some(debug) => {
                    let svmas: Vec<u64> = offsets.iter().map(|&o| file.file_offset_to_svma(o).unwrap_or(0)).collect();
                    self.blaze
                        .symbolize(&Source::Elf(Elf::new(&debug)), Input::VirtOffset(&svmas))
                        .map(|syms| syms.iter().map(to_lines).collect())
                }
                None => self
                    .blaze
                    .symbolize(&Source::Elf(Elf::new(file.fd_path())), Input::FileOffset(&offsets))
                    .map(|syms| syms.iter().map(to_lines).collect()),
            };
            // A parsed binary with its debug info can hold tens of MiB (libc with its debug
            // file: ~11 MiB). Results are cached above, so forget the parse after each file:
            // peak memory is that of the largest binary, not of all of them.
            self.blaze = new_blaze();
            match result {
                Ok(all) => {
                    for (off, lines) in offsets.iter().zip(all) {
                        let lines = self.lines_or_empty(lines);
                        self.user.insert((key.clone(), *off), lines);
                    }
                }
                Err(e) => {
                    log::debug!("symbolizing {key:?}: {e}");
                    for off in &offsets {
                        let lines = self.lines_or_empty(None);
                        self.user.insert((key.clone(), *off), lines);
                    }
                }
            }
        }
        if !kmissing.is_empty() {
            let ksyms = self.kernel_symbols();
            let resolved: Vec<(u64, Option<Vec<Line>>)> = kmissing
                .iter()
                .map(|&addr| {
                    let lines = ksyms.and_then(|k| k.lookup(addr)).map(|(name, module)| {
                        let file = if module == CORE_MODULE { module.to_string() } else { format!("[{module}]") };
                        vec![Line { function: name.to_string(), file, line: 0 }]
                    });
                    (addr, lines)
                })
                .collect();
            for (addr, lines) in resolved {
                let lines = self.lines_or_empty(lines);
                self.kernel.insert(addr, lines);
            }
        }
        requests
            .iter()
            .map(|r| match r {
                SymRequest::File { file, offset } => self.user.get(&(file.cache_key.clone(), *offset)).cloned().unwrap_or_else(|| self.empty.clone()),
                SymRequest::Kernel { addr } => self.kernel.get(addr).cloned().unwrap_or_else(|| self.empty.clone()),
                SymRequest::Fixed(l) => l.clone(),
            })
            .collect()
    }

    /// Resolves what `.gopclntab` covers and returns the other offsets (cgo's C code, or all
    /// of them when the table is unusable) for blazesym. Like a blazesym parse, the table is
    /// dropped after the batch: results are cached, and peak memory stays one table.
    fn resolve_go(&mut self, file: &ElfFile, offsets: Vec<u64>) -> Vec<u64> {
        let table = match GoTable::parse(file.bytes()) {
            Ok(Some(t)) => t,
            Ok(None) => return offsets,
            Err(e) => {
                log::debug!("{:?}: .gopclntab: {e}", file.key);
                return offsets;
            }
        };
        let mut rest = Vec::new();
        for off in offsets {
            match file.file_offset_to_svma(off).and_then(|svma| table.lookup(svma)) {
                Some(lines) => {
                    self.user.insert((file.cache_key.clone(), off), Arc::from(lines));
                }
                None => rest.push(off),
            }
        }
        rest
    }

    /// kallsyms, loaded on first need and again every 10 minutes (modules come and go).
    fn kernel_symbols(&mut self) -> Option<&KernelSymbols> {
        let stale = self.ksyms_loaded.is_none_or(|t| t.elapsed() > KALLSYMS_MAX_AGE);
        if stale {
            self.ksyms_loaded = Some(Instant::now());
            self.kernel.clear();
            self.ksyms = match KernelSymbols::load() {
                Ok(k) if !k.is_empty() => Some(k),
                Ok(_) => {
                    log::warn!("/proc/kallsyms shows no addresses: kernel frames stay unsymbolized (needs root or kernel.kptr_restrict=0)");
                    None
                }
                Err(e) => {
                    log::warn!("cannot read /proc/kallsyms ({e}): kernel frames stay unsymbolized");
                    None
                }
            };
        }
        self.ksyms.as_ref()
    }

    fn lines_or_empty(&mut self, lines: Option<Vec<Line>>) -> Lines {
        match lines {
            Some(l) => Arc::from(l),
            None => {
                self.failures += 1;
                self.empty.clone()
            }
        }
    }

    /// A JIT function named by a perf map.
    pub fn jit(name: &str) -> Lines {
        Arc::from(vec![Line { function: name.to_string(), file: "[perf-map]".to_string(), line: 0 }])
    }

    /// A constant marker frame such as `[truncated]`.
    pub fn marker(name: &str) -> Lines {
        Arc::from(vec![Line { function: name.to_string(), file: String::new(), line: 0 }])
    }
}

/// Lines of addresses as the file states them (virtual addresses, as `addr2line` takes),
/// for tools and tests: one entry per address, empty where nothing resolves.
pub fn symbolize_file(path: &str, addrs: &[u64]) -> Result<Vec<Vec<Line>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: read-only map of a file a tool asked about; see `ElfFile::open`.
    let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| format!("{path}: {e}"))?;
    if let Ok(Some(go)) = GoTable::parse(&data) {
        let found: Vec<Option<Vec<Line>>> = addrs.iter().map(|&a| go.lookup(a)).collect();
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().map(Option::unwrap_or_default).collect());
        }
        let blaze = new_blaze();
        let src = Source::Elf(Elf::new(path));
        let syms = blaze.symbolize(&src, Input::VirtOffset(addrs)).map_err(|e| format!("{path}: {e}"))?;
        return Ok(found
            .into_iter()
            .zip(syms.iter())
            .map(|(go, s)| go.or_else(|| to_lines(s)).unwrap_or_default())
            .collect());
    }
    let blaze = new_blaze();
    let src = Source::Elf(Elf::new(path));
    let syms = blaze.symbolize(&src, Input::VirtOffset(addrs)).map_err(|e| format!("{path}: {e}"))?;
    Ok(syms.iter().map(|s| to_lines(s).unwrap_or_default()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::FileKey;
    use std::os::unix::fs::MetadataExt;

    fn open(path: &std::path::Path) -> Arc<ElfFile> {
        let f = std::fs::File::open(path).expect("open");
        let meta = f.metadata().expect("metadata");
        let key = FileKey { dev: meta.dev(), inode: meta.ino() };
        Arc::new(ElfFile::open(f, key).expect("an ELF file"))
    }

    /// Two copies of one binary (as two containers' layers would hold it): other inodes,
    /// same build id, resolved once.
    #[test]
    fn cache_is_keyed_by_build_id_not_inode() {
        let dir = std::env::temp_dir().join(format!("ddprof-symkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let (a, b) = (dir.join("a"), dir.join("b"));
        let exe = std::env::current_exe().expect("this test's binary");
        std::fs::copy(&exe, &a).expect("copy");
        std::fs::copy(&exe, &b).expect("copy");
        let (fa, fb) = (open(&a), open(&b));
        std::fs::remove_dir_all(&dir).ok();
        assert_ne!(fa.key, fb.key);
        assert_eq!(fa.cache_key, fb.cache_key);
        let text = fa.text.as_ref().expect(".text").svma.start;
        let offset = fa.segments.iter().find_map(|s| (text >= s.vaddr && text < s.vaddr + s.file_size).then(|| text - s.vaddr + s.file_offset));
        let offset = offset.expect("text in a segment") + 16;
        let mut sym = Symbolizer::new();
        let first = sym.resolve(&[SymRequest::File { file: fa, offset }]);
        assert_eq!(sym.user.len(), 1);
        let second = sym.resolve(&[SymRequest::File { file: fb, offset }]);
        assert_eq!(sym.user.len(), 1, "the copy was resolved again");
        assert!(Arc::ptr_eq(&first[0], &second[0]));
    }
}
