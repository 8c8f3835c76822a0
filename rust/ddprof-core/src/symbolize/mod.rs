//! Symbolization: addresses to functions, files and lines.
//!
//! - `gopclntab`: Go code, from the binary's own `.gopclntab` (right even when stripped, and
//!   what the Go runtime itself reports);
//! - `elf`: other user code through blazesym (ELF symtab/dynsym, DWARF lines and inlined
//!   functions, demangling), from the file or its separate debug file (`crate::elf` says which);
//! - `kernel`: the kernel and its modules, from kallsyms;
//! - `perfmap`: JIT code, from the process's perf map.
//!
//! Input: a period's [`SymRequest`]s (file offsets in ELF files kept open, kernel addresses,
//! JIT addresses with their process's perf map). Output: the lines of each, innermost inlined
//! function first, as pprof wants them; empty when nothing resolves (the location keeps its
//! mapping and address) or when [`SymbolizeMode::Backend`] leaves on-disk files to the
//! backend (no work is done for them at all). Runs on its own thread (blazesym's symbolizer
//! is not Send), so a slow first parse of a large binary never stalls the ring buffer
//! drain. Results are cached per (file's cache key, offset) and per kernel address, bounded.
//! Non-goals: unwinding, deciding which file an address is in (`process`).
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::{Avma, FileOffset, Svma};
use crate::counters::{Counter, Counters};
use crate::elf::ElfFile;
use crate::memory::MemoryBudget;

mod elf;
pub mod gopclntab;
pub mod kernel;
pub mod perfmap;

use gopclntab::GoTable;
use kernel::{KernelSymbols, CORE_MODULE};
use perfmap::{PerfMapCache, PerfMapFile};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Demangled name.
    pub function: String,
    /// Linkage (mangled) name; empty when the same as `function`, as the core's own are
    /// (blazesym demangles): only hand-made tables set it.
    pub system_name: String,
    pub file: String,
    pub line: u32,
}

pub type Lines = Arc<[Line]>;

/// Who names the frames of files on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SymbolizeMode {
    /// Here, on the host.
    #[default]
    Host,
    /// The backend, from each mapping's build id and the address: no symbolization work here
    /// for them (kernel, vDSO and JIT frames are still named here: the backend cannot).
    Backend,
    /// Both: named here, and the profile says the backend may do better.
    Both,
}

impl std::str::FromStr for SymbolizeMode {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "host" => Ok(SymbolizeMode::Host),
            "backend" => Ok(SymbolizeMode::Backend),
            "both" => Ok(SymbolizeMode::Both),
            other => Err(crate::Error::InvalidArgument(format!("symbolize mode {other:?} is not host, backend or both"))),
        }
    }
}

/// What symbolizing a location takes; resolved when the period's snapshot is taken.
#[derive(Clone)]
pub enum SymRequest {
    /// A file offset in an ELF file, kept open by the Arc until then. `on_disk`: a real
    /// file the backend may know by its id (not the vDSO).
    File { file: Arc<ElfFile>, offset: FileOffset, on_disk: bool },
    Kernel { addr: Avma },
    /// Anonymous executable memory: named by the process's perf map if it has one, else
    /// `fallback`.
    Jit { map: Option<Arc<PerfMapFile>>, addr: Avma, fallback: Lines },
    /// Already known: marker frames.
    Fixed(Lines),
}

/// Entries of each result cache (~150 bytes each): a few MiB at most, then start over.
const MAX_CACHED: usize = 32_768;
/// Files at least this large have their pages released right after their parse is used,
/// the rest at the end of the batch (one read of `/proc/self/maps` each time).
const RELEASE_EACH_FILE_ABOVE: u64 = 1 << 20;
// The bytes of blazesym parses kept between periods (`elf::Parses`) and what parses may hold
// at once come from the memory budget (`MemoryBudget::parse_budget`, `parse_cap`): with the
// default, 36 MiB kept (libc's debug file, ~13 MiB estimated, and a libpython with its
// DWARF, ~20 MiB, or several small ones; a file over it is parsed for its batch and
// dropped) and 48 MiB at once (a file whose DWARF would take more on its own, such as a
// large Go or C++ binary built with debug info, is named from its symbol tables only,
// without lines or inlined functions, so that one binary cannot raise the profiler's peak
// by that much).
const KALLSYMS_MAX_AGE: Duration = Duration::from_secs(600);

pub struct Symbolizer {
    mode: SymbolizeMode,
    counters: Arc<Counters>,
    /// Keyed by `ElfFile::cache_key` (build id and the symbols the file holds), not the
    /// inode: the same binary in many containers is resolved once.
    user: HashMap<(Arc<str>, FileOffset), Lines>,
    kernel: HashMap<Avma, Lines>,
    perf_maps: PerfMapCache,
    parses: elf::Parses,
    empty: Lines,
    ksyms: Option<KernelSymbols>,
    ksyms_loaded: Option<Instant>,
}

impl Symbolizer {
    /// A symbolizer with the default budget's parse bounds, for one-shot use (tools,
    /// `symbolize_file`): the process's own resident size does not limit its parses, since
    /// the caller's memory (a test run, a tool) is not the profiler's.
    pub fn new(mode: SymbolizeMode, counters: Arc<Counters>) -> Self {
        let mut s = Self::with_budget(mode, counters, MemoryBudget::default());
        s.parses = s.parses.without_resident_limit();
        s
    }

    /// The profiler's symbolizer: its parses fit `budget`, and a new one must leave the
    /// process under `budget.parse_limit()` (see `memory`).
    pub fn with_budget(mode: SymbolizeMode, counters: Arc<Counters>, budget: MemoryBudget) -> Self {
        Symbolizer {
            mode,
            counters,
            user: HashMap::new(),
            kernel: HashMap::new(),
            perf_maps: PerfMapCache::default(),
            parses: elf::Parses::new(parse_budget(&budget), budget.parse_cap()).with_resident_limit(budget.parse_limit()),
            empty: Arc::from(Vec::new()),
            ksyms: None,
            ksyms_loaded: None,
        }
    }

    fn left_to_backend(&self, on_disk: bool) -> bool {
        on_disk && self.mode == SymbolizeMode::Backend
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
        self.parses.next_batch();
        // Gather what is missing, per file.
        let mut missing: HashMap<Arc<str>, (Arc<ElfFile>, Vec<FileOffset>)> = HashMap::new();
        let mut kmissing: Vec<Avma> = Vec::new();
        for r in requests {
            match r {
                SymRequest::File { file, offset, on_disk } => {
                    if !self.left_to_backend(*on_disk) && !self.user.contains_key(&(file.cache_key.clone(), *offset)) {
                        missing.entry(file.cache_key.clone()).or_insert_with(|| (file.clone(), Vec::new())).1.push(*offset);
                    }
                }
                SymRequest::Kernel { addr } => {
                    if !self.kernel.contains_key(addr) {
                        kmissing.push(*addr);
                    }
                }
                SymRequest::Jit { .. } | SymRequest::Fixed(_) => {}
            }
        }
        for (key, (file, mut offsets)) in missing {
            offsets.sort_unstable();
            offsets.dedup();
            let svmas: Vec<Option<Svma>> = offsets.iter().map(|&o| file.svma_of(o)).collect();
            for (off, lines) in offsets.iter().zip(self.resolve_file(&file, &svmas)) {
                let lines = self.lines_or_empty(lines);
                self.user.insert((key.clone(), *off), lines);
            }
        }
        if !kmissing.is_empty() {
            self.resolve_kernel(&kmissing);
        }
        // What this period read of its files (their unwind tables while sampling, Go's
        // tables and the DWARF just now, through our maps and blazesym's) need not stay
        // resident until the next: see `elf::maps`.
        let (mut seen, mut starts) = (std::collections::HashSet::new(), std::collections::HashSet::new());
        let files: Vec<&Arc<ElfFile>> = requests
            .iter()
            .filter_map(|r| match r {
                SymRequest::File { file, .. } if seen.insert(Arc::as_ptr(file)) => Some(file),
                _ => None,
            })
            .collect();
        files.iter().for_each(|f| f.map_starts(&mut starts));
        if crate::elf::maps::release_mappings_of(&starts).is_none() {
            files.iter().for_each(|f| f.release_pages()); // ours at least
        }
        self.publish_usage();
        requests
            .iter()
            .map(|r| match r {
                SymRequest::File { on_disk, .. } if self.left_to_backend(*on_disk) => self.empty.clone(),
                SymRequest::File { file, offset, .. } => {
                    self.user.get(&(file.cache_key.clone(), *offset)).cloned().unwrap_or_else(|| self.empty.clone())
                }
                SymRequest::Kernel { addr } => self.kernel.get(addr).cloned().unwrap_or_else(|| self.empty.clone()),
                SymRequest::Jit { map, addr, fallback } => match map.as_ref().and_then(|m| self.perf_maps.lookup(m, *addr)) {
                    Some(name) => jit(name),
                    None => fallback.clone(),
                },
                SymRequest::Fixed(l) => l.clone(),
            })
            .collect()
    }

    /// Drops every cache that the next period can rebuild (the memory budget was exceeded:
    /// see `memory`): kept parses (counted in `parses_evicted`), results, perf maps.
    pub fn shed(&mut self) {
        self.parses.clear();
        self.user = HashMap::new();
        self.kernel = HashMap::new();
        self.perf_maps = PerfMapCache::default();
        crate::memory::trim();
        self.publish_usage();
    }

    fn publish_usage(&mut self) {
        let (bytes, files) = self.parses.usage();
        self.counters.set(Counter::SymbolParses, files as u64);
        self.counters.set(Counter::SymbolParseBytes, bytes);
        let (evicted, no_room) = self.parses.take_evicted();
        self.counters.add(Counter::ParsesEvicted, evicted);
        self.counters.add(Counter::ParsesNoRoom, no_room);
    }

    /// Lines of SVMAs of one file: PLT entries by their own names, Go's table for a Go
    /// binary, then blazesym for what they do not cover (cgo's C code, or everything when the table is unusable). The Go
    /// table is read in place from the mapped binary, cheap to find again: it is dropped
    /// after the batch; blazesym's parse is kept (`elf::Parses`).
    fn resolve_file(&mut self, file: &Arc<ElfFile>, svmas: &[Option<Svma>]) -> Vec<Option<Vec<Line>>> {
        let mut out: Vec<Option<Vec<Line>>> = vec![None; svmas.len()];
        // PLT stubs have no symbol: named from the binary's own relocations, never after the
        // symbol before them (the debug file has no PLT contents to decode).
        for (o, svma) in out.iter_mut().zip(svmas) {
            if let Some(name) = svma.and_then(|s| file.plt_name(s)) {
                *o = Some(vec![Line { function: name.to_string(), system_name: String::new(), file: String::new(), line: 0 }]);
            }
        }
        if file.symbols.has_gopclntab {
            match GoTable::parse(file.bytes()) {
                Ok(Some(table)) => {
                    for (o, svma) in out.iter_mut().zip(svmas).filter(|(o, _)| o.is_none()) {
                        *o = svma.and_then(|s| table.lookup(s));
                    }
                }
                Ok(None) => {}
                Err(e) => log::debug!("{}: .gopclntab: {e}", file.origin.path),
            }
        }
        let rest: Vec<(usize, Svma)> =
            svmas.iter().enumerate().filter(|(i, _)| out[*i].is_none()).filter_map(|(i, s)| Some((i, (*s)?))).collect();
        if !rest.is_empty() {
            let (source, _) = file.best_symbols();
            let addrs: Vec<Svma> = rest.iter().map(|(_, s)| *s).collect();
            match self.parses.symbolize(source, &addrs) {
                Ok((lines, depth)) => {
                    if depth == elf::Depth::SymbolsOnly {
                        self.counters.add(Counter::SymbolizeSymbolsOnly, addrs.len() as u64);
                    }
                    for ((i, _), l) in rest.iter().zip(lines) {
                        out[*i] = l;
                    }
                }
                Err(e) => log::debug!("symbolizing {}: {e}", file.origin.path),
            }
            // What a large file's parse read goes before the next file's is read, so that a
            // batch's peak holds one such file's pages, not all of them (see `elf::maps`).
            if source.size >= RELEASE_EACH_FILE_ABOVE {
                let mut starts = std::collections::HashSet::new();
                file.map_starts(&mut starts);
                crate::elf::maps::release_mappings_of(&starts);
            }
        }
        out
    }

    fn resolve_kernel(&mut self, addrs: &[Avma]) {
        let ksyms = self.kernel_symbols();
        let resolved: Vec<(Avma, Option<Vec<Line>>)> = addrs
            .iter()
            .map(|&addr| {
                let lines = ksyms.and_then(|k| k.lookup(addr)).map(|(name, module)| {
                    let file = if module == CORE_MODULE { module.to_string() } else { format!("[{module}]") };
                    vec![Line { function: name.to_string(), system_name: String::new(), file, line: 0 }]
                });
                (addr, lines)
            })
            .collect();
        for (addr, lines) in resolved {
            let lines = self.lines_or_empty(lines);
            self.kernel.insert(addr, lines);
        }
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
                self.counters.incr(Counter::SymbolizeFailures);
                self.empty.clone()
            }
        }
    }
}

/// Lines of addresses as the file states them (SVMAs, as `addr2line` takes them), for tools
/// and tests: one entry per address, empty where nothing resolves. The profiler's own path.
pub fn symbolize_file(path: &str, addrs: &[u64]) -> crate::Result<Vec<Vec<Line>>> {
    let p = std::path::Path::new(path);
    let file = ElfFile::open_path(p, crate::elf::Origin::at_path(p, std::path::Path::new("/"))).map_err(|e| e.into_error(p))?;
    let svmas: Vec<Option<Svma>> = addrs.iter().map(|&a| Some(Svma(a))).collect();
    let mut sym = Symbolizer::new(SymbolizeMode::Host, Arc::default());
    Ok(sym.resolve_file(&Arc::new(file), &svmas).into_iter().map(Option::unwrap_or_default).collect())
}

/// The budget's share for parses, or `DDPROF_PARSE_BUDGET_MB` MiB: benches compare budgets
/// with it (0 drops every parse after its batch, as before parses were kept).
fn parse_budget(budget: &MemoryBudget) -> u64 {
    std::env::var("DDPROF_PARSE_BUDGET_MB").ok().and_then(|v| v.parse::<u64>().ok()).map_or(budget.parse_budget(), |mb| mb << 20)
}

/// A JIT function named by a perf map.
pub fn jit(name: &str) -> Lines {
    Arc::from(vec![Line { function: name.to_string(), system_name: String::new(), file: "[perf-map]".to_string(), line: 0 }])
}

/// A constant marker frame such as `[truncated]`.
pub fn marker(name: &str) -> Lines {
    Arc::from(vec![Line { function: name.to_string(), system_name: String::new(), file: String::new(), line: 0 }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Origin;

    fn open(path: &std::path::Path) -> Arc<ElfFile> {
        Arc::new(ElfFile::open_path(path, Origin::at_path(path, std::path::Path::new("/"))).expect("an ELF file"))
    }

    fn text_offset(f: &ElfFile) -> FileOffset {
        let text = f.unwind.text.as_ref().expect(".text").svma.start;
        let seg = f.segments.iter().find(|s| text >= s.svma.0 && text < s.svma.0 + s.file_size).expect("text in a segment");
        FileOffset(text - seg.svma.0 + seg.file_offset.0 + 16)
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
        let offset = text_offset(&fa);
        let mut sym = Symbolizer::new(SymbolizeMode::Host, Arc::default());
        let first = sym.resolve(&[SymRequest::File { file: fa, offset, on_disk: true }]);
        assert_eq!(sym.user.len(), 1);
        assert!(!first[0].is_empty(), "the test binary's own text resolves");
        let second = sym.resolve(&[SymRequest::File { file: fb, offset, on_disk: true }]);
        assert_eq!(sym.user.len(), 1, "the copy was resolved again");
        assert!(Arc::ptr_eq(&first[0], &second[0]));
    }

    #[test]
    fn backend_mode_does_no_work_for_files_on_disk() {
        let exe = std::env::current_exe().expect("this test's binary");
        let f = open(&exe);
        let offset = text_offset(&f);
        let counters: Arc<Counters> = Arc::default();
        let mut sym = Symbolizer::new(SymbolizeMode::Backend, counters.clone());
        let got = sym.resolve(&[
            SymRequest::File { file: f.clone(), offset, on_disk: true },
            SymRequest::File { file: f, offset, on_disk: false },
            SymRequest::Fixed(marker("[truncated]")),
        ]);
        assert!(got[0].is_empty(), "left to the backend");
        assert!(!got[1].is_empty(), "not on disk (the vDSO): named here");
        assert_eq!(got[2][0].function, "[truncated]");
        assert_eq!(sym.user.len(), 1, "only the vDSO-like request was resolved");
        assert_eq!(counters.get(Counter::SymbolizeFailures), 0, "skipping is not a failure");
    }
}
