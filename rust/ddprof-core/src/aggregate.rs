//! The aggregate of one period: interned mappings, locations and stacks, and a count per
//! (pid, tid, cpu, stack).
//!
//! Input: frames already resolved to a mapping (see `pipeline`), each with what it takes to
//! symbolize it later. Output: a [`Snapshot`] of interned tables, which is all that Python
//! ever sees; `symbolize` fills in the lines of its locations. Non-goals: I/O.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::elf::ElfFile;
use crate::procinfo::ProcessInfo;
use crate::symbolize::Lines;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum FrameKey {
    /// A lookup address in a mapping of the snapshot's mapping table.
    User { mapping: u32, addr: u64 },
    /// An address in no known mapping.
    Unmapped { addr: u64 },
    Kernel { addr: u64 },
    Marker(&'static str),
}

/// What symbolizing a location takes; resolved when the snapshot is taken.
#[derive(Clone)]
pub enum SymRequest {
    /// A file offset in an ELF file, kept open by the Arc until then.
    File { file: Arc<ElfFile>, offset: u64 },
    Kernel { addr: u64 },
    /// Already known: marker frames, anonymous memory.
    Fixed(Lines),
}

#[derive(Clone, Debug)]
pub struct SnapshotMapping {
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
    pub path: String,
    pub build_id: String,
    pub is_kernel: bool,
}

#[derive(Clone, Debug)]
pub struct SnapshotLocation {
    /// Index into the mapping table; -1 for marker and unmapped frames.
    pub mapping: i64,
    pub address: u64,
    pub lines: Lines,
}

#[derive(Clone, Debug)]
pub struct SnapshotSample {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub stack: u32,
    pub count: u64,
    pub thread_name: String,
    pub process_name: String,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub start_ns: u64,
    pub end_ns: u64,
    pub frequency: u64,
    pub mappings: Vec<SnapshotMapping>,
    pub locations: Vec<SnapshotLocation>,
    pub stacks: Vec<Box<[u32]>>,
    pub samples: Vec<SnapshotSample>,
    pub processes: Vec<Arc<ProcessInfo>>,
    pub stats: Vec<(String, u64)>,
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

#[derive(Clone)]
pub struct Aggregate {
    start_ns: u64,
    /// Set when the period is closed, so that the next one starts exactly there.
    end_ns: Option<u64>,
    mappings: Vec<SnapshotMapping>,
    mapping_ids: HashMap<(u32, u64), u32>,
    kernel_mapping: Option<u32>,
    /// Per location: (mapping, address, how to symbolize it).
    locations: Vec<(i64, u64, SymRequest)>,
    frame_ids: HashMap<FrameKey, u32>,
    stacks: Vec<Box<[u32]>>,
    stack_ids: HashMap<Box<[u32]>, u32>,
    /// Keyed by (pid, tid, cpu, stack, thread name id): a thread renamed mid-period (exec,
    /// pthread_setname_np) counts under each of its names.
    counts: HashMap<(u32, u32, u32, u32, u32), u64>,
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
            locations: Vec::new(),
            frame_ids: HashMap::new(),
            stacks: Vec::new(),
            stack_ids: HashMap::new(),
            counts: HashMap::new(),
            thread_names: Vec::new(),
            thread_name_ids: HashMap::new(),
            process_names: HashMap::new(),
            process_info: HashMap::new(),
        }
    }

    /// The id of a process mapping, interning it with `make` on first use.
    pub fn mapping(&mut self, pid: u32, start: u64, make: impl FnOnce() -> SnapshotMapping) -> u32 {
        if let Some(&id) = self.mapping_ids.get(&(pid, start)) {
            return id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(make());
        self.mapping_ids.insert((pid, start), id);
        id
    }

    pub fn kernel_mapping(&mut self) -> u32 {
        if let Some(id) = self.kernel_mapping {
            return id;
        }
        let id = self.mappings.len() as u32;
        self.mappings.push(SnapshotMapping {
            start: 0xffff_8000_0000_0000,
            limit: u64::MAX,
            offset: 0,
            path: "[kernel.kallsyms]".into(),
            build_id: String::new(),
            is_kernel: true,
        });
        self.kernel_mapping = Some(id);
        id
    }

    /// The id of a frame; `make` (mapping index and symbolization request) runs only on the
    /// first sight of it in this period.
    pub fn frame(&mut self, key: FrameKey, make: impl FnOnce(&mut Self) -> (i64, SymRequest)) -> u32 {
        if let Some(&id) = self.frame_ids.get(&key) {
            return id;
        }
        let (mapping, req) = make(self);
        let address = match key {
            FrameKey::User { addr, .. } | FrameKey::Unmapped { addr } | FrameKey::Kernel { addr } => addr,
            FrameKey::Marker(_) => 0,
        };
        let id = self.locations.len() as u32;
        self.locations.push((mapping, address, req));
        self.frame_ids.insert(key, id);
        id
    }

    /// Counts one sample. `comm` is the thread's name as the kernel gave it (NUL-padded);
    /// `info` what the process said about itself, when it could be read.
    pub fn add(&mut self, pid: u32, tid: u32, cpu: u32, frames: &[u32], comm: &[u8; 16], info: Option<&Arc<ProcessInfo>>) {
        let process_name = info.map(|i| i.name.as_str());
        if let Some(i) = info {
            match self.process_info.get(&pid) {
                Some(old) if Arc::ptr_eq(old, i) => {}
                _ => {
                    self.process_info.insert(pid, i.clone());
                }
            }
        }
        let stack = match self.stack_ids.get(frames) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                let b: Box<[u32]> = frames.into();
                self.stacks.push(b.clone());
                self.stack_ids.insert(b, id);
                id
            }
        };
        let name_id = match self.thread_name_ids.get(comm) {
            Some(&id) => id,
            None => {
                let id = self.thread_names.len() as u32;
                self.thread_names.push(*comm);
                self.thread_name_ids.insert(*comm, id);
                id
            }
        };
        *self.counts.entry((pid, tid, cpu, stack, name_id)).or_insert(0) += 1;
        let name = process_name.unwrap_or_else(|| comm_str(comm));
        match self.process_names.get_mut(&pid) {
            Some(n) if n == name => {}
            Some(n) => *n = name.to_string(),
            None => {
                self.process_names.insert(pid, name.to_string());
            }
        }
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
        old
    }

    /// Closes the period. `symbolize` turns the requests into lines, all at once so that it
    /// can batch per file.
    pub fn into_snapshot(
        self,
        frequency: u64,
        stats: Vec<(String, u64)>,
        symbolize: impl FnOnce(&[SymRequest]) -> Vec<Lines>,
    ) -> Snapshot {
        let end_ns = self.end_ns.unwrap_or_else(now_ns);
        let mut samples: Vec<SnapshotSample> = self
            .counts
            .iter()
            .map(|(&(pid, tid, cpu, stack, name), &count)| SnapshotSample {
                pid,
                tid,
                cpu,
                stack,
                count,
                thread_name: self.thread_names.get(name as usize).map(|c| comm_str(c).to_string()).unwrap_or_default(),
                process_name: self.process_names.get(&pid).cloned().unwrap_or_default(),
            })
            .collect();
        samples.sort_by_key(|s| (s.pid, s.tid, s.cpu, s.stack));
        let (meta, requests): (Vec<(i64, u64)>, Vec<SymRequest>) =
            self.locations.into_iter().map(|(m, a, r)| ((m, a), r)).unzip();
        let lines = symbolize(&requests);
        let locations = meta
            .into_iter()
            .zip(lines)
            .map(|((mapping, address), lines)| SnapshotLocation { mapping, address, lines })
            .collect();
        let mut processes: Vec<Arc<ProcessInfo>> = self.process_info.into_values().collect();
        processes.sort_by_key(|p| p.pid);
        Snapshot {
            processes,
            start_ns: self.start_ns,
            end_ns,
            frequency,
            mappings: self.mappings,
            locations,
            stacks: self.stacks,
            samples,
            stats,
        }
    }
}
