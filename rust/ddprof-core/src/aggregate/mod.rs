//! The aggregate of one period: interned mappings, frames and stacks, and per (pid, tid, cpu,
//! stack, thread name) two values: the CPU samples counted, and the off-CPU nanoseconds
//! (off-CPU mode: the time threads spent switched out in that stack). A CPU sample carries
//! no off-CPU time and an off-CPU stack no CPU samples.
//!
//! Input: frames already resolved to a mapping (by the drain), each with what it takes to
//! symbolize it later (a `SymRequest`). Output: a [`Snapshot`] of interned tables, which is
//! all that Python ever sees; the symbolizer fills in the lines of its frames when the
//! period closes. Every stack is at most [`MAX_STACK_DEPTH`] frames: a deeper one keeps both
//! ends (the leaf end, where the time is spent, and the root end, which says what the thread
//! is) and one `[elided frames]` marker in place of the middle: the one cap, in one place
//! (the backend limits a sample to 600 locations, datadog-contracts.md). Non-goals: I/O,
//! symbolization.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::addr::Avma;
use crate::counters::Stats;
use crate::process::ProcessInfo;
use crate::symbolize::{self, Lines, SymRequest};

mod snapshot;

pub use snapshot::{FrameKind, Snapshot, SnapshotFrame, SnapshotMapping, SnapshotSample};

/// The deepest stack a profile holds, markers included.
pub const MAX_STACK_DEPTH: usize = 600;
pub use crate::unwind::TRUNCATED;
/// Stands for the middle of a stack deeper than [`MAX_STACK_DEPTH`].
pub const ELIDED: &str = "[elided frames]";
/// Frames kept at the root end of such a stack (the rest, less the marker, at the leaf end):
/// enough for the entry point, the main loop and a request handler's frames.
pub const ROOT_FRAMES_KEPT: usize = 100;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FrameKey {
    /// A lookup address in a mapping of the snapshot's mapping table.
    User { mapping: u32, addr: Avma },
    /// An address in no known mapping.
    Unmapped { addr: Avma },
    Kernel { addr: Avma },
    Marker(&'static str),
}

/// A kernel task name (NUL-padded, at most 16 bytes) as text.
pub fn comm_str(comm: &[u8; 16]) -> &str {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    match std::str::from_utf8(&comm[..end]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&comm[..e.valid_up_to()]).unwrap_or_default(),
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A Python frame's key: (mapping, qualified name, file, line).
type PythonFrameKey = (u32, Arc<str>, Arc<str>, u32);

/// The values of one (pid, tid, cpu, stack, thread name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Values {
    /// CPU samples.
    pub count: u64,
    /// Off-CPU nanoseconds (already scaled up by the off-CPU sampling rate).
    pub off_cpu_ns: u64,
}

/// One interned frame before symbolization.
#[derive(Clone)]
struct PendingFrame {
    mapping: Option<u32>,
    address: Avma,
    kind: FrameKind,
    request: SymRequest,
}

#[derive(Clone)]
pub struct Aggregate {
    start_ns: u64,
    /// Set when the period is closed, so that the next one starts exactly there.
    end_ns: Option<u64>,
    mappings: Vec<SnapshotMapping>,
    /// By (pid, start, the file's device and inode): a program exec'd in the same pid, or a
    /// library loaded where another was, is a mapping of its own.
    mapping_ids: HashMap<(u32, Avma, u64, u64), u32>,
    kernel_mapping: Option<u32>,
    /// `[python X.Y.Z]` mappings by version.
    python_mappings: HashMap<String, u32>,
    /// Python frames by (mapping, qualified name, file, line).
    python_frames: HashMap<PythonFrameKey, u32>,
    frames: Vec<PendingFrame>,
    frame_ids: HashMap<FrameKey, u32>,
    stacks: Vec<Box<[u32]>>,
    stack_ids: HashMap<Box<[u32]>, u32>,
    /// Keyed by (pid, tid, cpu, stack, thread name id): a thread renamed mid-period (exec,
    /// pthread_setname_np) counts under each of its names.
    counts: HashMap<(u32, u32, u32, u32, u32), Values>,
    /// Off-CPU mode is on: the snapshot says so (the profile gets the off-CPU sample type
    /// even in a period where nothing blocked).
    off_cpu: bool,
    thread_names: Vec<[u8; 16]>,
    thread_name_ids: HashMap<[u8; 16], u32>,
    /// The latest name seen for each process.
    process_names: HashMap<u32, String>,
    /// What each process said about itself (service, container), when it could be read.
    process_info: HashMap<u32, Arc<ProcessInfo>>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self::new()
    }
}

impl Aggregate {
    pub fn new() -> Self {
        Self::starting_at(now_ns())
    }

    pub fn starting_at(start_ns: u64) -> Self {
        Aggregate {
            start_ns,
            end_ns: None,
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
            kernel_mapping: None,
            python_mappings: HashMap::new(),
            python_frames: HashMap::new(),
            frames: Vec::new(),
            frame_ids: HashMap::new(),
            stacks: Vec::new(),
            stack_ids: HashMap::new(),
            counts: HashMap::new(),
            off_cpu: false,
            thread_names: Vec::new(),
            thread_name_ids: HashMap::new(),
            process_names: HashMap::new(),
            process_info: HashMap::new(),
        }
    }

    /// The id of a process mapping (by pid, start and file: `(dev, inode)`, zeros for none),
    /// interning it with `make` on first use.
    pub fn mapping(&mut self, pid: u32, start: Avma, file: (u64, u64), make: impl FnOnce() -> SnapshotMapping) -> u32 {
        let key = (pid, start, file.0, file.1);
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(make());
        self.mapping_ids.insert(key, id);
        id
    }

    pub fn kernel_mapping(&mut self) -> u32 {
        if let Some(id) = self.kernel_mapping {
            return id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(SnapshotMapping {
            start: Avma(0xffff_8000_0000_0000),
            limit: Avma(u64::MAX),
            offset: crate::addr::FileOffset(0),
            path: "[kernel.kallsyms]".into(),
            file_id: String::new(),
            is_kernel: true,
            file: None,
        });
        self.kernel_mapping = Some(id);
        id
    }

    /// The pseudo-mapping of the Python functions of CPython `version`: `[python 3.11.2]`.
    pub fn python_mapping(&mut self, version: &str) -> u32 {
        if let Some(&id) = self.python_mappings.get(version) {
            return id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(SnapshotMapping {
            start: Avma(0),
            limit: Avma(0),
            offset: crate::addr::FileOffset(0),
            path: format!("[python {version}]"),
            file_id: String::new(),
            is_kernel: false,
            file: None,
        });
        self.python_mappings.insert(version.to_string(), id);
        id
    }

    /// The id of a Python frame: function `qualname` of `file` at `line`, of CPython
    /// `version`.
    pub fn python_frame(&mut self, version: &str, qualname: &Arc<str>, file: &Arc<str>, line: u32) -> u32 {
        let mapping = self.python_mapping(version);
        let key = (mapping, qualname.clone(), file.clone(), line);
        if let Some(&id) = self.python_frames.get(&key) {
            return id;
        }
        let lines = Arc::from(vec![crate::symbolize::Line { function: qualname.to_string(), system_name: String::new(), file: file.to_string(), line }]);
        let id = self.frames.len() as u32;
        self.frames.push(PendingFrame { mapping: Some(mapping), address: Avma(0), kind: FrameKind::Python, request: SymRequest::Fixed(lines) });
        self.python_frames.insert(key, id);
        id
    }

    /// The id of a frame; `make` (mapping index, kind and symbolization request) runs only
    /// on the first sight of it in this period.
    pub fn frame(&mut self, key: FrameKey, make: impl FnOnce(&mut Self) -> (Option<u32>, FrameKind, SymRequest)) -> u32 {
        if let Some(&id) = self.frame_ids.get(&key) {
            return id;
        }
        let (mapping, kind, request) = make(self);
        let address = match key {
            FrameKey::User { addr, .. } | FrameKey::Unmapped { addr } | FrameKey::Kernel { addr } => addr,
            FrameKey::Marker(_) => Avma(0),
        };
        let id = self.frames.len() as u32;
        self.frames.push(PendingFrame { mapping, address, kind, request });
        self.frame_ids.insert(key, id);
        id
    }

    /// The id of a marker frame such as `[truncated]`.
    pub fn marker(&mut self, name: &'static str) -> u32 {
        self.frame(FrameKey::Marker(name), |_| (None, FrameKind::Marker, SymRequest::Fixed(symbolize::marker(name))))
    }

    /// Counts one CPU sample. `frames` leaf first; deeper than [`MAX_STACK_DEPTH`], its
    /// middle is elided (see the module doc). `comm` is the thread's name as the kernel gave
    /// it (NUL-padded); `info` what the process said about itself, when it could be read.
    pub fn add(&mut self, pid: u32, tid: u32, cpu: u32, frames: &mut Vec<u32>, comm: &[u8; 16], info: Option<&Arc<ProcessInfo>>) {
        let stack = self.stack(frames);
        self.count(pid, tid, cpu, stack, comm, info, Values { count: 1, off_cpu_ns: 0 });
    }

    /// The id of a stack of `frames` (leaf first), capped as [`Aggregate::add`] says.
    pub fn stack(&mut self, frames: &mut Vec<u32>) -> u32 {
        if frames.len() > MAX_STACK_DEPTH {
            let marker = self.marker(ELIDED);
            let leaf_kept = MAX_STACK_DEPTH - ROOT_FRAMES_KEPT - 1;
            let root_from = frames.len() - ROOT_FRAMES_KEPT;
            frames[leaf_kept] = marker;
            frames.drain(leaf_kept + 1..root_from);
        }
        match self.stack_ids.get(frames.as_slice()) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                let b: Box<[u32]> = frames.as_slice().into();
                self.stacks.push(b.clone());
                self.stack_ids.insert(b, id);
                id
            }
        }
    }

    /// Adds `values` to stack `stack` (an id of [`Aggregate::stack`]) of a thread.
    #[allow(clippy::too_many_arguments)] // the key's parts, as `add` takes them
    pub fn count(&mut self, pid: u32, tid: u32, cpu: u32, stack: u32, comm: &[u8; 16], info: Option<&Arc<ProcessInfo>>, values: Values) {
        if let Some(i) = info {
            match self.process_info.get(&pid) {
                Some(old) if Arc::ptr_eq(old, i) => {}
                _ => {
                    self.process_info.insert(pid, i.clone());
                }
            }
        }
        let name_id = match self.thread_name_ids.get(comm) {
            Some(&id) => id,
            None => {
                let id = self.thread_names.len() as u32;
                self.thread_names.push(*comm);
                self.thread_name_ids.insert(*comm, id);
                id
            }
        };
        let v = self.counts.entry((pid, tid, cpu, stack, name_id)).or_default();
        v.count += values.count;
        v.off_cpu_ns = v.off_cpu_ns.saturating_add(values.off_cpu_ns);
        let name = info.map(|i| i.name.as_str()).unwrap_or_else(|| comm_str(comm));
        match self.process_names.get_mut(&pid) {
            Some(n) if n == name => {}
            Some(n) => *n = name.to_string(),
            None => {
                self.process_names.insert(pid, name.to_string());
            }
        }
    }

    /// Off-CPU mode on or off: the snapshots say so (and every later period's).
    pub fn set_off_cpu(&mut self, on: bool) {
        self.off_cpu = on;
    }

    /// The stacks `stacks` of `from` (a closed period), interned in this one with their
    /// frames and mappings: the id of each here, by its id there (a stack id out of range is
    /// left out). For off-CPU stacks whose weight comes in a later period.
    pub fn carry_stacks(&mut self, from: &Aggregate, stacks: impl IntoIterator<Item = u32>) -> HashMap<u32, u32> {
        let mut frame_keys: Vec<Option<FrameKey>> = vec![None; from.frames.len()];
        for (key, &id) in &from.frame_ids {
            if let Some(k) = frame_keys.get_mut(id as usize) {
                *k = Some(*key);
            }
        }
        let mut python_keys: HashMap<u32, &PythonFrameKey> = HashMap::new();
        for (key, &id) in &from.python_frames {
            python_keys.insert(id, key);
        }
        let python_versions: HashMap<u32, &str> = from.python_mappings.iter().map(|(v, &id)| (id, v.as_str())).collect();
        let mapping_keys: HashMap<u32, &(u32, Avma, u64, u64)> = from.mapping_ids.iter().map(|(k, &id)| (id, k)).collect();
        let mut mapping_of: HashMap<u32, Option<u32>> = HashMap::new();
        let mut frame_of: HashMap<u32, Option<u32>> = HashMap::new();
        let mut out = HashMap::new();
        let mut frames = Vec::new();
        for old in stacks {
            let Some(old_frames) = from.stacks.get(old as usize) else { continue };
            frames.clear();
            for &f in old_frames.iter() {
                let new = *frame_of.entry(f).or_insert_with(|| {
                    let pending = from.frames.get(f as usize)?;
                    let mut map = |m: u32, agg: &mut Aggregate| -> Option<u32> {
                        *mapping_of.entry(m).or_insert_with(|| {
                            if from.kernel_mapping == Some(m) {
                                Some(agg.kernel_mapping())
                            } else if let Some(v) = python_versions.get(&m) {
                                Some(agg.python_mapping(v))
                            } else {
                                let &&(pid, start, dev, ino) = mapping_keys.get(&m)?;
                                let made = from.mappings.get(m as usize)?.clone();
                                Some(agg.mapping(pid, start, (dev, ino), || made))
                            }
                        })
                    };
                    if let Some((_, qualname, file, line)) = python_keys.get(&f) {
                        let version = pending.mapping.and_then(|m| python_versions.get(&m))?;
                        return Some(self.python_frame(version, qualname, file, *line));
                    }
                    let mapping = match pending.mapping {
                        Some(m) => Some(map(m, self)?),
                        None => None,
                    };
                    let key = match frame_keys.get(f as usize).copied().flatten()? {
                        FrameKey::User { addr, .. } => FrameKey::User { mapping: mapping?, addr },
                        other => other,
                    };
                    let (kind, request) = (pending.kind, pending.request.clone());
                    Some(self.frame(key, |_| (mapping, kind, request)))
                });
                match new {
                    Some(id) => frames.push(id),
                    None => break,
                }
            }
            if frames.len() == old_frames.len() {
                out.insert(old, self.stack(&mut frames));
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Ends this period now and returns it; `self` becomes the next period, starting at the
    /// same instant: no gap, no overlap.
    pub fn close(&mut self) -> Aggregate {
        let now = now_ns();
        let mut old = std::mem::replace(self, Aggregate::starting_at(now));
        old.end_ns = Some(now);
        self.off_cpu = old.off_cpu;
        old
    }

    /// Turns the period into a snapshot. `symbolize` turns the requests into lines, all at
    /// once so that it can batch per file; `stats` are the counters after it ran.
    pub fn into_snapshot(
        self,
        frequency: u64,
        symbolize: impl FnOnce(&[SymRequest]) -> Vec<Lines>,
        stats: impl FnOnce() -> Stats,
    ) -> Snapshot {
        let end_ns = self.end_ns.unwrap_or_else(now_ns);
        let mut samples: Vec<SnapshotSample> = self
            .counts
            .iter()
            .map(|(&(pid, tid, cpu, stack, name), &v)| SnapshotSample {
                pid,
                tid,
                cpu,
                stack,
                count: v.count,
                off_cpu_ns: v.off_cpu_ns,
                thread_name: self.thread_names.get(name as usize).map(|c| comm_str(c).to_string()).unwrap_or_default(),
                process_name: self.process_names.get(&pid).cloned().unwrap_or_default(),
            })
            .collect();
        samples.sort_by_key(|s| (s.pid, s.tid, s.cpu, s.stack));
        let requests: Vec<SymRequest> = self.frames.iter().map(|f| f.request.clone()).collect();
        let lines = symbolize(&requests);
        let frames = self
            .frames
            .into_iter()
            .zip(lines)
            .map(|(f, lines)| SnapshotFrame { mapping: f.mapping, address: f.address, kind: f.kind, lines })
            .collect();
        let mut processes: Vec<Arc<ProcessInfo>> = self.process_info.into_values().collect();
        processes.sort_by_key(|p| p.pid);
        Snapshot {
            processes,
            start_ns: self.start_ns,
            end_ns,
            frequency,
            off_cpu: self.off_cpu,
            mappings: self.mappings,
            frames,
            stacks: self.stacks,
            samples,
            stats: stats(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cap_both_ends_kept() {
        let mut agg = Aggregate::new();
        let fixed = |n: &'static str| SymRequest::Fixed(symbolize::marker(n));
        let leaf = agg.frame(FrameKey::Unmapped { addr: Avma(0x10) }, |_| (None, FrameKind::Marker, fixed("leaf")));
        let mid = agg.frame(FrameKey::Unmapped { addr: Avma(0x20) }, |_| (None, FrameKind::Marker, fixed("mid")));
        let root = agg.frame(FrameKey::Unmapped { addr: Avma(0x30) }, |_| (None, FrameKind::Marker, fixed("root")));
        let comm = *b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        // Deeper than the cap: leaf end and root end kept, one marker between.
        let mut deep = vec![leaf; 1];
        deep.extend(std::iter::repeat_n(mid, MAX_STACK_DEPTH + 50));
        deep.push(root);
        agg.add(1, 1, 0, &mut deep, &comm, None);
        // Exactly the cap: untouched.
        let mut at_cap = vec![mid; MAX_STACK_DEPTH];
        agg.add(1, 1, 0, &mut at_cap, &comm, None);
        let snap = agg.into_snapshot(99, |reqs| reqs.iter().map(|_| symbolize::marker("x")).collect(), Stats::default);
        assert_eq!(snap.stacks.len(), 2);
        let cut = &snap.stacks[0];
        assert_eq!(cut.len(), MAX_STACK_DEPTH);
        assert_eq!((cut[0], cut[MAX_STACK_DEPTH - 1]), (leaf, root));
        let markers: Vec<usize> = (0..cut.len()).filter(|&i| snap.frames[cut[i] as usize].kind == FrameKind::Marker && ![leaf, mid, root].contains(&cut[i])).collect();
        assert_eq!(markers, [MAX_STACK_DEPTH - ROOT_FRAMES_KEPT - 1]);
        assert_eq!(snap.stacks[1].len(), MAX_STACK_DEPTH);
        assert_eq!(snap.samples.iter().map(|s| s.count).sum::<u64>(), 2);
    }

    #[test]
    fn carried_stacks_keep_their_frames_and_mappings() {
        let mut old = Aggregate::new();
        let fixed = |n: &'static str| SymRequest::Fixed(symbolize::marker(n));
        let kernel = old.frame(FrameKey::Kernel { addr: Avma(0xffff_1000) }, |agg| {
            (Some(agg.kernel_mapping()), FrameKind::Kernel, fixed("schedule"))
        });
        let file = SnapshotMapping {
            start: Avma(0x1000),
            limit: Avma(0x2000),
            offset: crate::addr::FileOffset(0),
            path: "/app".into(),
            file_id: "id".into(),
            is_kernel: false,
            file: None,
        };
        let m = old.mapping(7, Avma(0x1000), (1, 2), || file.clone());
        let user = old.frame(FrameKey::User { mapping: m, addr: Avma(0x1100) }, |_| (Some(m), FrameKind::Native, fixed("wait_here")));
        let py = old.python_frame("3.11.2", &Arc::from("handler"), &Arc::from("app.py"), 3);
        let marker = old.marker(ELIDED);
        let other = old.frame(FrameKey::Unmapped { addr: Avma(0x9) }, |_| (None, FrameKind::Marker, fixed("x")));
        let mut frames = vec![kernel, user, py, marker];
        let blocked = old.stack(&mut frames);
        let unrelated = old.stack(&mut vec![other]);
        // The next period already has a frame of its own: ids differ there.
        let mut new = Aggregate::new();
        new.marker(crate::unwind::TRUNCATED);
        let carried = new.carry_stacks(&old, [blocked, 99]);
        assert_eq!(carried.len(), 1, "an id out of range is left out");
        let id = carried[&blocked];
        new.count(7, 8, 0, id, b"t\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", None, Values { count: 0, off_cpu_ns: 5 });
        let snap = new.into_snapshot(99, |reqs| reqs.iter().map(|r| match r {
            SymRequest::Fixed(l) => l.clone(),
            _ => symbolize::marker("?"),
        }).collect(), Stats::default);
        let names: Vec<&str> = snap.stacks[id as usize].iter().map(|&f| snap.frames[f as usize].lines[0].function.as_str()).collect();
        assert_eq!(names, ["schedule", "wait_here", "handler", ELIDED]);
        let mappings: Vec<&str> = snap.stacks[id as usize].iter()
            .filter_map(|&f| snap.frames[f as usize].mapping).map(|m| snap.mappings[m as usize].path.as_str()).collect();
        assert_eq!(mappings, ["[kernel.kallsyms]", "/app", "[python 3.11.2]"]);
        assert_eq!(snap.samples[0].off_cpu_ns, 5);
        assert_ne!(unrelated, blocked);
        assert!(snap.frames.iter().all(|f| f.lines[0].function != "x"), "the stack not carried stayed behind");
        assert_eq!(snap.frames.len(), 5, "[truncated] and the four carried frames");
    }

    #[test]
    fn periods_meet_without_gap() {
        let mut agg = Aggregate::starting_at(1000);
        let old = agg.close();
        let snap = old.into_snapshot(20, |_| Vec::new(), Stats::default);
        assert_eq!(snap.start_ns, 1000);
        let next = agg.into_snapshot(20, |_| Vec::new(), Stats::default);
        assert_eq!(next.start_ns, snap.end_ns);
    }
}
