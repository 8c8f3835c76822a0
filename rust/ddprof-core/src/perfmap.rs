//! JIT symbols from perf maps: `/tmp/perf-PID.map`, as written by Node (--perf-basic-prof),
//! JVM agents, .NET, LuaJIT and CPython 3.12+ (-X perf).
//!
//! Input: a process (the map is read inside its root, under the pid it has in its own pid
//! namespace). Output: the name of the JIT function containing an address of anonymous
//! executable memory. Each line is `START SIZE name` (hex, no 0x needed); later lines win
//! over earlier ones for the same range, as JITs append when they recompile. The file is
//! re-read when it grew, at most once a second per process. Non-goals: perf-PID.dump files
//! (jitdump).
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// A map larger than this is read up to this size: memory stays bounded.
const MAX_MAP_BYTES: u64 = 64 << 20;

#[derive(Default)]
pub struct PerfMap {
    /// (start, end, name), sorted by start; overlaps resolved in favor of later lines.
    entries: Vec<(u64, u64, Box<str>)>,
    size: u64,
    checked: Option<Instant>,
    pub missing: bool,
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

pub fn parse(text: &str) -> Vec<(u64, u64, Box<str>)> {
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

impl PerfMap {
    /// Re-reads the map of `pid` if it changed (at most once a second).
    pub fn refresh(&mut self, pid: u32) {
        if self.checked.is_some_and(|t| t.elapsed() < RELOAD_INTERVAL) {
            return;
        }
        self.checked = Some(Instant::now());
        let path = format!("/proc/{pid}/root/tmp/perf-{}.map", namespace_pid(pid));
        let Ok(meta) = std::fs::metadata(&path) else {
            self.missing = true;
            return;
        };
        self.missing = false;
        if meta.size() == self.size {
            return;
        }
        use std::io::Read;
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.take(MAX_MAP_BYTES).read_to_string(&mut text);
        }
        self.size = meta.size();
        self.entries = parse(&text);
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= addr);
        let (start, end, name) = self.entries.get(i.checked_sub(1)?)?;
        (addr >= *start && addr < *end).then_some(&**name)
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
        let m = PerfMap { entries: parse(text), ..PerfMap::default() };
        assert_eq!(m.lookup(0x7f0000001010), Some("LazyCompile:*foo /app.js:1"));
        assert_eq!(m.lookup(0x7f00000020ff), Some("py::bar:/x.py"));
        assert_eq!(m.lookup(0x7f0000002100), None);
        assert_eq!(m.lookup(0x7f0000000fff), None);
    }
}
