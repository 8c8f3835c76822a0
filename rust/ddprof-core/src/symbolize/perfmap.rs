//! JIT symbols from perf maps: `/tmp/perf-PID.map`, as written by Node (--perf-basic-prof),
//! JVM agents, .NET, LuaJIT and CPython 3.12+ (-X perf).
//!
//! Two halves, for two threads. The drain thread only *opens* a process's map
//! ([`PerfMapFiles::get`], on the first sample in its anonymous executable memory), inside
//! the process's root and under the pid it has in its own pid namespace, while the process
//! lives; the descriptor keeps the map readable after the process exits. The symbolizer
//! thread *reads* it at snapshot time ([`PerfMapCache::lookup`]), again when it grew.
//! Each line is `START SIZE name` (hex, `0x` optional); later lines win over earlier ones for
//! the same start, as JITs append when they recompile. Non-goals: `perf-PID.dump` (jitdump).
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::addr::Avma;

/// A missing map is looked for again at most this often per process.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// A map larger than this is read up to this size: memory stays bounded.
const MAX_MAP_BYTES: u64 = 64 << 20;
/// Processes whose map state is remembered on the drain thread; maps parsed and kept on
/// the symbolizer thread.
const MAX_PROCESSES: usize = 4096;
const MAX_PARSED: usize = 256;

/// An open perf map of one process.
#[derive(Debug)]
pub struct PerfMapFile {
    pub pid: u32,
    file: File,
    key: (u64, u64),
}

/// The drain thread's half: open maps by pid.
#[derive(Default)]
pub struct PerfMapFiles {
    by_pid: HashMap<u32, (Option<Arc<PerfMapFile>>, Instant)>,
}

impl PerfMapFiles {
    /// The perf map of `pid`, opened on first need; `None` while the process has none
    /// (looked for again at most once a second).
    pub fn get(&mut self, pid: u32) -> Option<Arc<PerfMapFile>> {
        if let Some((map, checked)) = self.by_pid.get(&pid) {
            if map.is_some() || checked.elapsed() < REOPEN_INTERVAL {
                return map.clone();
            }
        }
        if self.by_pid.len() >= MAX_PROCESSES {
            self.by_pid.clear();
        }
        let path = format!("/proc/{pid}/root/tmp/perf-{}.map", namespace_pid(pid));
        let map = File::open(&path).ok().and_then(|file| {
            let m = file.metadata().ok()?;
            Some(Arc::new(PerfMapFile { pid, key: (m.dev(), m.ino()), file }))
        });
        self.by_pid.insert(pid, (map.clone(), Instant::now()));
        map
    }

    /// Forgets processes for which `alive` is false.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.by_pid.retain(|pid, _| alive(*pid));
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

/// The pid a process has inside its own pid namespace (the last NSpid field).
pub fn namespace_pid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|v| v.split_whitespace().last().and_then(|x| x.parse().ok()))
        })
        .unwrap_or(pid)
}

/// (start, end, name), sorted by start; overlaps resolved in favor of later lines.
type Entries = Vec<(u64, u64, Box<str>)>;

pub fn parse(text: &str) -> Entries {
    let mut raw: Vec<(usize, u64, u64, Box<str>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut it = line.splitn(3, ' ');
        let (Some(s), Some(z), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        let hexnum = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).ok();
        let (Some(start), Some(size)) = (hexnum(s), hexnum(z)) else { continue };
        let Some(end) = start.checked_add(size) else { continue };
        if size == 0 {
            continue;
        }
        raw.push((i, start, end, name.trim_end().into()));
    }
    // Later lines win: sort by start, and for the same start keep the last line.
    raw.sort_by_key(|&(i, start, _, _)| (start, std::cmp::Reverse(i)));
    raw.dedup_by_key(|e| e.1);
    raw.into_iter().map(|(_, s, e, n)| (s, e, n)).collect()
}

fn find(entries: &Entries, addr: u64) -> Option<&str> {
    let i = entries.partition_point(|e| e.0 <= addr);
    let (start, end, name) = entries.get(i.checked_sub(1)?)?;
    (addr >= *start && addr < *end).then_some(&**name)
}

/// The symbolizer thread's half: parsed maps, re-read when they grew.
#[derive(Default)]
pub struct PerfMapCache {
    parsed: HashMap<(u64, u64), (u64, Entries)>,
}

impl PerfMapCache {
    /// The JIT function containing `addr`, from the map as it is now.
    pub fn lookup(&mut self, map: &PerfMapFile, addr: Avma) -> Option<&str> {
        let size = map.file.metadata().map(|m| m.size()).unwrap_or(0);
        let stale = self.parsed.get(&map.key).is_none_or(|(s, _)| *s != size);
        if stale {
            if self.parsed.len() >= MAX_PARSED {
                self.parsed.clear();
            }
            let mut text = String::new();
            // Through our own descriptor from the start (pread-like: a fresh reader each time).
            let mut f = map.file.try_clone().ok()?;
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(0)).ok()?;
            let _ = f.take(MAX_MAP_BYTES).read_to_string(&mut text);
            self.parsed.insert(map.key, (size, parse(&text)));
        }
        self.parsed.get(&map.key).and_then(|(_, e)| find(e, addr.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let text = "7f0000001000 40 LazyCompile:~foo /app.js:1\n\
                    bogus line\n\
                    0x7f0000002000 0x100 py::bar:/x.py\n\
                    7f0000001000 20 LazyCompile:*foo /app.js:1\n";
        let e = parse(text);
        assert_eq!(find(&e, 0x7f0000001010), Some("LazyCompile:*foo /app.js:1"));
        assert_eq!(find(&e, 0x7f00000020ff), Some("py::bar:/x.py"));
        assert_eq!(find(&e, 0x7f0000002100), None);
        assert_eq!(find(&e, 0x7f0000000fff), None);
    }

    #[test]
    fn reads_a_map_that_grew_through_its_descriptor() {
        let me = std::process::id();
        let path = format!("/tmp/perf-{}.map", namespace_pid(me));
        std::fs::write(&path, "1000 10 first\n").expect("write map");
        let mut files = PerfMapFiles::default();
        let opened = files.get(me);
        let mut cache = PerfMapCache::default();
        let map = opened.expect("our own perf map opens");
        assert_eq!(cache.lookup(&map, Avma(0x1008)), Some("first"));
        std::fs::write(&path, "1000 10 first\n2000 10 second\n").expect("append");
        // Deleted, as when a process cleans up on exit: the descriptor still reads it.
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(cache.lookup(&map, Avma(0x2004)), Some("second"));
        assert_eq!(cache.lookup(&map, Avma(0x3000)), None);
    }
}
