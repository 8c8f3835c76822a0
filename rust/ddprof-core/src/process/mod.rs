//! The process registry: what each sampled process has mapped, and what it says about itself.
//!
//! Input: pids from samples. Output: per pid, a [`Process`]: its executable [`Mapping`]s
//! (address range, file offset, the open [`ElfFile`] and the bias between addresses in the
//! process and in the file), its [`ProcessInfo`] (for tagging) and a generation that changes
//! whenever its mappings were read again (stages that derive state from the mappings, such
//! as the Python detector, key it by generation). `/proc/PID/maps` is read on first sight,
//! re-read at once when a sample says the process exec'd or unmapped code since (its BPF
//! mappings generation, [`Registry::sync`]), re-read (rate-limited) when an address falls
//! outside the known mappings, and the process is forgotten when it exits. Non-goals:
//! unwinding, symbols, aggregation.
use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::{Avma, Bias, FileOffset, MappedRange};
use crate::counters::{Counter, Counters};
use crate::elf::{load_vdso, ElfFile, FileCache, FileKey, OpenFailure, Origin};

pub mod info;
pub mod maps;

pub use info::ProcessInfo;
use maps::parse_maps;

// Short: a process that just exec'd maps its libraries within milliseconds, and a
// short-lived one may not live to a later refresh.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(20);
const MAX_PROCESSES: usize = 16_384;
const MAX_FILES: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapKind {
    File,
    Vdso,
    /// Anonymous executable memory (JIT code) or another pseudo mapping such as `[vsyscall]`.
    Anon,
}

pub struct Mapping {
    pub range: MappedRange,
    pub path: String,
    pub kind: MapKind,
    pub file: Option<Arc<ElfFile>>,
    /// AVMA - SVMA for this mapping (AVMA - file offset when there is no file).
    pub bias: Bias,
    /// A file mapping whose file the profiler was not allowed to open (`file` is None): its
    /// code cannot be unwound for lack of a capability, not for lack of unwind information.
    pub denied: bool,
}

impl Mapping {
    pub fn contains(&self, addr: Avma) -> bool {
        self.range.contains(addr)
    }
    pub fn file_offset(&self, addr: Avma) -> FileOffset {
        self.range.file_offset(addr)
    }
}

pub struct Process {
    pub pid: u32,
    pub info: Arc<ProcessInfo>,
    /// Executable mappings, sorted by start.
    pub mappings: Vec<Mapping>,
    /// Changes each time the mappings are read; unique across the registry's processes.
    pub generation: u64,
    /// The sampler's mappings generation of the pid when the maps were read (see
    /// `sample_header.map_gen`).
    pub map_gen: u32,
    /// Go code maps this process: its samples should carry the frame-pointer chain (Go keeps
    /// frame pointers, and its stacks switch between goroutine and system stacks).
    pub runs_go: bool,
    exe_inode: u64,
    refreshed: Instant,
}

impl Process {
    pub fn mapping_index(&self, addr: Avma) -> Option<usize> {
        let i = self.mappings.partition_point(|m| m.range.start <= addr);
        (i > 0 && self.mappings[i - 1].contains(addr)).then(|| i - 1)
    }
    pub fn mapping(&self, addr: Avma) -> Option<&Mapping> {
        self.mapping_index(addr).map(|i| &self.mappings[i])
    }
}

fn exe_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).map(|m| m.ino()).unwrap_or(0)
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default()
}

pub struct Registry {
    procs: HashMap<u32, Process>,
    /// Loaded on first sight of a vDSO mapping; `Some(None)` when that failed.
    vdso: Option<Option<Arc<ElfFile>>>,
    pub files: FileCache,
    counters: Arc<Counters>,
    next_generation: u64,
    last_sweep: Instant,
    /// The missing CAP_SYS_PTRACE was logged.
    told_ptrace: bool,
    /// A mapped file refused for lack of permission was logged.
    told_files_denied: bool,
    last_load_denied: bool,
}

impl Registry {
    /// A registry that counts in `counters` (processes_*, maps_*, elf_errors).
    pub fn new(counters: Arc<Counters>) -> Self {
        Registry {
            procs: HashMap::new(),
            vdso: None,
            files: FileCache::new(MAX_FILES, counters.clone()),
            counters,
            next_generation: 1,
            last_sweep: Instant::now(),
            told_ptrace: false,
            told_files_denied: false,
            last_load_denied: false,
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    /// The process, loading it on first sight (for a sample taken at mappings generation
    /// `map_gen`). `None` when it is gone or unreadable.
    pub fn process(&mut self, pid: u32, map_gen: u32) -> Option<&Process> {
        if !self.procs.contains_key(&pid) {
            if self.procs.len() >= MAX_PROCESSES {
                self.sweep(true);
            }
            let p = self.load(pid, map_gen)?;
            self.counters.incr(Counter::ProcessesSeen);
            self.procs.insert(pid, p);
        }
        self.procs.get(&pid)
    }

    /// Brings the process to the mappings generation of a sample taken at `map_gen`: a
    /// newer one (an exec, a code unmap since the maps were read) re-reads them now, before
    /// the sample is unwound. Returns false for a sample older than the maps held: its
    /// mappings are gone and its addresses cannot be trusted.
    pub fn sync(&mut self, pid: u32, map_gen: u32) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else { return true };
        match map_gen.wrapping_sub(p.map_gen) as i32 {
            0 => true,
            d if d < 0 => false,
            _ => {
                self.counters.incr(Counter::MapsRefreshes);
                match self.load(pid, map_gen) {
                    Some(np) => {
                        self.procs.insert(pid, np);
                    }
                    None => {
                        self.procs.remove(&pid);
                    }
                }
                true
            }
        }
    }

    /// Re-reads the maps of `pid` when `addr` is outside them, at most every
    /// `REFRESH_MIN_INTERVAL`. Returns true when the process was reloaded.
    pub fn refresh_for(&mut self, pid: u32, addr: Avma) -> bool {
        let Some(p) = self.procs.get(&pid) else { return false };
        if p.mapping_index(addr).is_some() || p.refreshed.elapsed() < REFRESH_MIN_INTERVAL {
            return false;
        }
        self.counters.incr(Counter::MapsRefreshes);
        let map_gen = p.map_gen;
        match self.load(pid, map_gen) {
            Some(np) => {
                self.procs.insert(pid, np);
                true
            }
            None => {
                self.procs.remove(&pid);
                false
            }
        }
    }

    /// Forgets exited processes now, then the files no process maps (see `FileCache::shed`).
    pub fn shed_files(&mut self) {
        self.sweep(true);
        self.files.shed();
    }

    /// Forgets processes that exited or exec'd; at most every 2 s unless forced. Returns
    /// true when it looked.
    pub fn sweep(&mut self, force: bool) -> bool {
        if !force && self.last_sweep.elapsed() < Duration::from_secs(2) {
            return false;
        }
        self.last_sweep = Instant::now();
        let before = self.procs.len();
        self.procs.retain(|&pid, p| {
            // SAFETY: signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            alive && exe_inode(pid) == p.exe_inode
        });
        self.counters.add(Counter::ProcessesExited, (before - self.procs.len()) as u64);
        if force && self.procs.len() >= MAX_PROCESSES {
            self.procs.clear();
        }
        true
    }

    /// The last process that failed to load did so because its maps may not be read (a
    /// missing CAP_SYS_PTRACE), not because it is gone.
    pub fn last_load_denied(&self) -> bool {
        self.last_load_denied
    }

    fn load(&mut self, pid: u32, map_gen: u32) -> Option<Process> {
        self.last_load_denied = false;
        let text = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(t) => t,
            // Gone already: the caller counts that (process_gone); anything else is an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => return None,
            Err(e) => {
                self.last_load_denied = e.kind() == std::io::ErrorKind::PermissionDenied;
                if self.last_load_denied && !self.told_ptrace {
                    // Without it every sample of other users' processes is a lone address.
                    self.told_ptrace = true;
                    log::warn!(
                        "cannot read /proc/{pid}/maps ({e}): the stacks of processes of other users need CAP_SYS_PTRACE \
                         (or root); their samples are counted in maps_errors and marked"
                    );
                } else {
                    log::debug!("/proc/{pid}/maps: {e}");
                }
                self.counters.incr(Counter::MapsErrors);
                return None;
            }
        };
        Some(self.load_maps(pid, map_gen, &text))
    }

    /// Loads `pid` from a maps text read elsewhere: a process whose own view of its maps
    /// differs from /proc/PID/maps (a program run under qemu-user, whose emulated
    /// /proc/self/maps is the guest's), for tests that unwind such a snapshot. Its files
    /// are opened as for any process (`/proc/PID/map_files`, `/proc/PID/root`): it must be
    /// alive. Replaces what the registry held for `pid`.
    pub fn insert_from_maps(&mut self, pid: u32, maps: &str) -> &Process {
        let p = self.load_maps(pid, 0, maps);
        self.procs.insert(pid, p);
        &self.procs[&pid]
    }

    fn load_maps(&mut self, pid: u32, map_gen: u32, text: &str) -> Process {
        let lines = parse_maps(text);
        let mut mappings = Vec::new();
        for (i, l) in lines.iter().enumerate().filter(|(_, l)| l.exec) {
            if l.inode == 0 && l.path.is_empty() {
                if let Some(m) = self.remapped_code(pid, &lines, i) {
                    mappings.push(m);
                    continue;
                }
            }
            let kind = if l.path == "[vdso]" {
                MapKind::Vdso
            } else if l.inode == 0 || l.path.is_empty() || l.path.starts_with('[') || is_jitdump(&l.path) {
                MapKind::Anon
            } else {
                MapKind::File
            };
            let mut denied = false;
            let file = match kind {
                MapKind::File => {
                    let file = self.open_file(pid, l);
                    denied = matches!(file, Err(OpenFailure::Denied));
                    if denied && !self.told_files_denied {
                        self.told_files_denied = true;
                        log::warn!(
                            "cannot open {} of pid {pid} (permission denied): the code of other users' processes \
                             needs CAP_SYS_PTRACE, and files this user may not read need CAP_DAC_READ_SEARCH (or root); \
                             their stacks stop at the first such frame, marked and counted in unwind_no_access",
                            l.path
                        );
                    }
                    file.ok()
                }
                MapKind::Vdso => self.vdso.get_or_insert_with(|| load_vdso().map(Arc::new)).clone(),
                MapKind::Anon => None,
            };
            let bias = match &file {
                Some(f) => f.bias_for(l.range.start, l.range.offset),
                None => Bias(l.range.start.0.wrapping_sub(l.range.offset.0)),
            };
            mappings.push(Mapping { range: l.range, path: l.path.clone(), kind, file, bias, denied });
        }
        mappings.sort_by_key(|m| m.range.start);
        let info = Arc::new(ProcessInfo::read(pid, &read_comm(pid)));
        let runs_go = mappings.iter().any(|m| m.file.as_ref().is_some_and(|f| f.symbols.has_gopclntab));
        let generation = self.next_generation;
        self.next_generation += 1;
        Process { pid, info, mappings, generation, map_gen, runs_go, exe_inode: exe_inode(pid), refreshed: Instant::now() }
    }
}

impl Registry {
    fn open_file(&mut self, pid: u32, l: &maps::MapsLine) -> Result<Arc<ElfFile>, OpenFailure> {
        let key = FileKey { dev: l.dev, inode: l.inode };
        let (range, path) = (l.range, l.path.as_str());
        self.files.get_or_open(key, || Origin::in_process(pid, path), || open_mapped_file(pid, range, path))
    }

    /// `lines[i]`, anonymous executable memory, as the file whose code it holds: servers
    /// tuned for huge pages (and BOLT-ed ones) copy their `.text` into anonymous memory at
    /// the same addresses and remap it there, so the code is the file's but the mapping has
    /// no name (perf and bcc attribute it the same way). It is the file's when a mapping of
    /// that file is its neighbor and one of the file's segments, placed by that neighbor's
    /// bias, spans it.
    fn remapped_code(&mut self, pid: u32, lines: &[maps::MapsLine], i: usize) -> Option<Mapping> {
        let anon = &lines[i];
        let neighbors = [i.checked_sub(1), Some(i + 1)];
        for j in neighbors.into_iter().flatten() {
            let Some(n) = lines.get(j) else { continue };
            let adjacent = n.range.end == anon.range.start || n.range.start == anon.range.end;
            if !adjacent || n.inode == 0 || n.path.is_empty() || n.path.starts_with('[') {
                continue;
            }
            let file = self.open_file(pid, n).ok()?;
            let bias = file.bias_for(n.range.start, n.range.offset);
            let start = bias.svma(anon.range.start);
            let end = bias.svma(anon.range.end);
            const PAGE: u64 = 4096;
            let seg = file.segments.iter().find(|s| {
                let seg_end = s.svma.0.saturating_add(s.file_size).saturating_add(PAGE - 1) & !(PAGE - 1);
                (s.svma.0 & !(PAGE - 1)) <= start.0 && end.0 <= seg_end
            })?;
            let offset = FileOffset(seg.file_offset.0.wrapping_add(start.0.wrapping_sub(seg.svma.0)));
            let range = MappedRange { start: anon.range.start, end: anon.range.end, offset };
            log::debug!("pid {pid}: anonymous code at {:?} is {}'s (remapped)", anon.range.start, n.path);
            return Some(Mapping { range, path: n.path.clone(), kind: MapKind::File, file: Some(file), bias, denied: false });
        }
        None
    }
}

/// A JIT's `jit-PID.dump`, which it maps executable only to mark it for perf: no code.
fn is_jitdump(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|b| b.starts_with("jit-") && b.ends_with(".dump"))
}

/// Opens the file behind a mapping as the process sees it: through map_files (works for
/// deleted files and other mount namespaces), else through the process's root.
pub fn open_mapped_file(pid: u32, range: MappedRange, path: &str) -> std::io::Result<File> {
    File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", range.start.0, range.end.0)).or_else(|_| {
        let p = path.strip_suffix(" (deleted)").unwrap_or(path);
        File::open(format!("/proc/{pid}/root{p}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_this_process_with_its_own_code() {
        let me = std::process::id();
        let counters: Arc<Counters> = Arc::default();
        let mut r = Registry::new(counters.clone());
        let here = Avma(loads_this_process_with_its_own_code as *const () as u64);
        let p = r.process(me, 0).expect("this process");
        let g = p.generation;
        let m = p.mapping(here).expect("our own code is mapped");
        assert_eq!(m.kind, MapKind::File);
        let f = m.file.as_ref().expect("the test binary opens");
        // The bias takes our own function's address to its address in the file.
        let svma = m.bias.svma(here);
        assert_eq!(f.svma_of(m.file_offset(here)), Some(svma));
        assert!(p.mappings.iter().any(|m| m.kind == MapKind::Vdso && m.file.is_some()), "the vDSO as a file");
        // An address nowhere: reloaded once (new generation), not again within the interval.
        std::thread::sleep(REFRESH_MIN_INTERVAL);
        assert!(r.refresh_for(me, Avma(8)));
        let g2 = r.get(me).map(|p| p.generation).expect("still here");
        assert_ne!(g, g2);
        assert!(!r.refresh_for(me, Avma(8)));
        assert_eq!(counters.get(Counter::MapsRefreshes), 1);
        assert_eq!(counters.get(Counter::ProcessesSeen), 1);
        // A sample from after an exec re-reads at once; one from before is refused.
        assert!(r.sync(me, 1));
        assert_ne!(r.get(me).map(|p| p.generation), Some(g2));
        assert!(r.sync(me, 1) && !r.sync(me, 0));
        assert_eq!(counters.get(Counter::MapsRefreshes), 2);
    }
}
