//! The process registry: what each sampled process has mapped, and an unwinder per process.
//!
//! Input: pids from samples. Output: per pid, its executable mappings (address range in the
//! process, file offset, the file and the bias between process and file addresses) and a
//! framehop unwinder holding one module per mapping. `/proc/PID/maps` is read on first sight,
//! re-read (rate-limited) when an address falls outside the known mappings, and the process
//! is forgotten when it exits or execs. Non-goals: symbols, aggregation.
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framehop::x86_64::UnwinderX86_64;
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};

use crate::elf::{FileCache, FileKey, MapSlice};
use crate::procinfo::ProcessInfo;
pub use crate::elf::ElfFile;

// Short: a process that just exec'd maps its libraries within milliseconds, and a
// short-lived one may not live to a later refresh.
const REFRESH_MIN_INTERVAL: Duration = Duration::from_millis(20);
const MAX_PROCESSES: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapKind {
    File,
    Vdso,
    /// Anonymous executable memory (JIT code) or another pseudo mapping such as `[vsyscall]`.
    Anon,
}

pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
    pub kind: MapKind,
    pub file: Option<Arc<ElfFile>>,
    /// Address in the process minus address in the file.
    pub bias: u64,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr < self.end
    }
    /// File offset of an address in the process.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

pub struct Process {
    pub pid: u32,
    pub name: String,
    pub info: Arc<ProcessInfo>,
    /// Executable mappings, sorted by start.
    pub mappings: Vec<Mapping>,
    pub unwinder: UnwinderX86_64<MapSlice>,
    /// Go code maps this process: its samples should carry the frame-pointer chain (Go keeps
    /// frame pointers, and its stacks switch between goroutine and system stacks).
    pub runs_go: bool,
    exe_inode: u64,
    refreshed: Instant,
}

impl Process {
    pub fn mapping_index(&self, addr: u64) -> Option<usize> {
        let i = self.mappings.partition_point(|m| m.start <= addr);
        (i > 0 && self.mappings[i - 1].contains(addr)).then(|| i - 1)
    }
}

/// One line of /proc/PID/maps that is executable.
#[derive(Debug, PartialEq)]
pub struct MapsLine {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub dev: u64,
    pub inode: u64,
    pub path: String,
}

/// Parses the executable lines of a /proc/PID/maps text.
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        if perms.as_bytes().get(2) != Some(&b'x') {
            continue;
        }
        let path = it.next().unwrap_or("").trim_start().to_string();
        let Some((s, e)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16), u64::from_str_radix(off, 16))
        else {
            continue;
        };
        let dev = dev
            .split_once(':')
            .and_then(|(ma, mi)| Some((u64::from_str_radix(ma, 16).ok()? << 32) | u64::from_str_radix(mi, 16).ok()?))
            .unwrap_or(0);
        let inode = inode.parse().unwrap_or(0);
        out.push(MapsLine { start, end, offset, dev, inode, path });
    }
    out
}

fn exe_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).map(|m| m.ino()).unwrap_or(0)
}

fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim_end().to_string()).unwrap_or_default()
}

#[derive(Default, Debug, Clone)]
pub struct RegistryStats {
    pub processes_seen: u64,
    pub processes_exited: u64,
    pub maps_refreshes: u64,
    pub maps_errors: u64,
}

pub struct Registry {
    procs: HashMap<u32, Process>,
    /// Loaded on first sight of a vDSO mapping; `Some(None)` when that failed.
    vdso: Option<Option<Arc<ElfFile>>>,
    pub files: FileCache,
    pub stats: RegistryStats,
    last_sweep: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    pub fn new() -> Self {
        Registry { procs: HashMap::new(), vdso: None, files: FileCache::new(512), stats: RegistryStats::default(), last_sweep: Instant::now() }
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

    /// The process, loading it on first sight. `None` when it is gone or unreadable.
    pub fn process(&mut self, pid: u32) -> Option<&Process> {
        if !self.procs.contains_key(&pid) {
            if self.procs.len() >= MAX_PROCESSES {
                self.sweep(true);
            }
            let p = self.load(pid)?;
            self.stats.processes_seen += 1;
            self.procs.insert(pid, p);
        }
        self.procs.get(&pid)
    }

    /// Re-reads the maps of `pid` when `addr` is outside them, at most every 200 ms.
    /// Returns true when the process was reloaded.
    pub fn refresh_for(&mut self, pid: u32, addr: u64) -> bool {
        let Some(p) = self.procs.get(&pid) else { return false };
        if p.mapping_index(addr).is_some() || p.refreshed.elapsed() < REFRESH_MIN_INTERVAL {
            return false;
        }
        self.stats.maps_refreshes += 1;
        match self.load(pid) {
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

    /// Forgets processes that exited or exec'd; at most every 2 s unless forced.
    pub fn sweep(&mut self, force: bool) {
        if !force && self.last_sweep.elapsed() < Duration::from_secs(2) {
            return;
        }
        self.last_sweep = Instant::now();
        let before = self.procs.len();
        self.procs.retain(|&pid, p| {
            // SAFETY: signal 0 only checks for existence.
            let alive = unsafe { libc::kill(pid as i32, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            alive && exe_inode(pid) == p.exe_inode
        });
        self.stats.processes_exited += (before - self.procs.len()) as u64;
        if force && self.procs.len() >= MAX_PROCESSES {
            self.procs.clear();
        }
    }

    fn load(&mut self, pid: u32) -> Option<Process> {
        let text = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(t) => t,
            // Gone already: the caller counts that (process_gone); anything else is an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => return None,
            Err(e) => {
                log::debug!("/proc/{pid}/maps: {e}");
                self.stats.maps_errors += 1;
                return None;
            }
        };
        let mut mappings = Vec::new();
        let mut unwinder = UnwinderX86_64::new();
        for l in parse_maps(&text) {
            let kind = if l.path == "[vdso]" {
                MapKind::Vdso
            } else if l.inode == 0 || l.path.is_empty() || l.path.starts_with('[') {
                MapKind::Anon
            } else {
                MapKind::File
            };
            let file = match kind {
                MapKind::File => {
                    let key = FileKey { dev: l.dev, inode: l.inode };
                    let (start, end, path) = (l.start, l.end, l.path.clone());
                    self.files.get_or_open(key, || debug_dirs(pid, &path), || open_mapped_file(pid, start, end, &path))
                }
                MapKind::Vdso => self.vdso.get_or_insert_with(|| crate::elf::load_vdso().map(Arc::new)).clone(),
                MapKind::Anon => None,
            };
            let bias = file.as_ref().map(|f| f.bias_for(l.start, l.offset)).unwrap_or(l.start);
            if let Some(f) = &file {
                let info = ExplicitModuleSectionInfo {
                    base_svma: 0,
                    text_svma: f.text.as_ref().map(|s| s.svma.clone()),
                    text: f.slice(&f.text),
                    got_svma: f.got.as_ref().map(|s| s.svma.clone()),
                    eh_frame_svma: f.eh_frame.as_ref().map(|s| s.svma.clone()),
                    eh_frame: f.slice(&f.eh_frame),
                    eh_frame_hdr_svma: f.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
                    eh_frame_hdr: f.slice(&f.eh_frame_hdr),
                    debug_frame: f.slice(&f.debug_frame),
                    stubs_svma: None,
                    stub_helper_svma: None,
                    unwind_info: None,
                    text_segment_svma: None,
                    text_segment: None,
                };
                unwinder.add_module(Module::new(l.path.clone(), l.start..l.end, bias, info));
            }
            mappings.push(Mapping { start: l.start, end: l.end, offset: l.offset, path: l.path, kind, file, bias });
        }
        mappings.sort_by_key(|m| m.start);
        let name = read_comm(pid);
        let info = Arc::new(ProcessInfo::read(pid, &name));
        let runs_go = mappings.iter().any(|m| m.file.as_ref().is_some_and(|f| f.has_gopclntab));
        Some(Process { pid, name, info, mappings, unwinder, runs_go, exe_inode: exe_inode(pid), refreshed: Instant::now() })
    }
}

/// Where debug files for `path` (as process `pid` names it) may be: next to it and in the
/// debug trees of the process's root, then the host's. blazesym looks for
/// `.build-id/xx/yyyy.debug` and debug-link names in each.
fn debug_dirs(pid: u32, path: &str) -> Vec<PathBuf> {
    let root = format!("/proc/{pid}/root");
    let mut dirs = Vec::new();
    if let Some(parent) = std::path::Path::new(path.strip_suffix(" (deleted)").unwrap_or(path)).parent() {
        dirs.push(PathBuf::from(format!("{root}{}", parent.display())));
    }
    for d in ["/usr/lib/debug", "/lib/debug"] {
        dirs.push(PathBuf::from(format!("{root}{d}")));
    }
    dirs.extend(["/usr/lib/debug", "/lib/debug"].map(PathBuf::from));
    dirs
}

/// Opens the file behind a mapping as the process sees it: through map_files (works for
/// deleted files and other mount namespaces), else through the process's root.
pub fn open_mapped_file(pid: u32, start: u64, end: u64, path: &str) -> std::io::Result<File> {
    File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}")).or_else(|_| {
        let p = path.strip_suffix(" (deleted)").unwrap_or(path);
        File::open(format!("/proc/{pid}/root{p}"))
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_lines_only() {
        let text = "\
55d0c0a00000-55d0c0a2c000 r--p 00000000 fd:01 1311 /usr/bin/python3.11
55d0c0a2c000-55d0c0d1e000 r-xp 0002c000 fd:01 1311 /usr/bin/python3.11
7ffd1c5f2000-7ffd1c5f4000 r-xp 00000000 00:00 0                          [vdso]
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 
7f1000000000-7f1000001000 r-xp 00001000 08:02 77 /tmp/a b (deleted)
";
        let v = parse_maps(text);
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].start, 0x55d0c0a2c000);
        assert_eq!(v[0].offset, 0x2c000);
        assert_eq!(v[0].dev, (0xfd << 32) | 1);
        assert_eq!(v[0].inode, 1311);
        assert_eq!(v[0].path, "/usr/bin/python3.11");
        assert_eq!(v[1].path, "[vdso]");
        assert_eq!(v[2].path, "");
        assert_eq!(v[3].path, "/tmp/a b (deleted)");
    }
}
