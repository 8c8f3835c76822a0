//! A closed, symbolized period: interned tables, all that crosses into Python.
use std::sync::Arc;

use crate::addr::{Avma, FileOffset};
use crate::counters::Stats;
use crate::elf::ElfFile;
use crate::process::ProcessInfo;
use crate::symbolize::Lines;

/// What a frame is, for readers that colour or filter by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Code of an ELF file (the vDSO included).
    Native,
    Kernel,
    /// Anonymous executable memory: JIT code.
    Jit,
    /// A Python function (CPython's frame, read by the sampler), under a `[python X.Y.Z]`
    /// mapping.
    Python,
    /// Not code: a marker such as `[truncated]`, `[unknown]`, `[process exited]`.
    Marker,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Native => "native",
            FrameKind::Kernel => "kernel",
            FrameKind::Jit => "jit",
            FrameKind::Python => "python",
            FrameKind::Marker => "marker",
        }
    }
}

#[derive(Clone, Debug)]
pub struct SnapshotMapping {
    pub start: Avma,
    pub limit: Avma,
    pub offset: FileOffset,
    pub path: String,
    /// The id the backend knows the file by (`ElfFile::file_id`), "" when unknown.
    pub file_id: String,
    pub is_kernel: bool,
    /// The file, held open (symbol upload reads it after the process is gone).
    pub file: Option<Arc<ElfFile>>,
}

#[derive(Clone, Debug)]
pub struct SnapshotFrame {
    /// Index into the mapping table; `None` for markers and addresses in no mapping.
    pub mapping: Option<u32>,
    pub address: Avma,
    pub kind: FrameKind,
    pub lines: Lines,
}

#[derive(Clone, Debug)]
pub struct SnapshotSample {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    /// Index into the stack table.
    pub stack: u32,
    /// CPU samples.
    pub count: u64,
    /// Off-CPU nanoseconds (off-CPU mode; 0 in a CPU sample).
    pub off_cpu_ns: u64,
    pub thread_name: String,
    pub process_name: String,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Wall clock (Unix epoch ns) of the period's start and end.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Samples per second on each CPU.
    pub frequency: u64,
    /// Off-CPU mode was on: the samples carry off-CPU time, and the profiles its sample type.
    pub off_cpu: bool,
    pub mappings: Vec<SnapshotMapping>,
    pub frames: Vec<SnapshotFrame>,
    /// Frame indices, leaf first, at most `MAX_STACK_DEPTH`.
    pub stacks: Vec<Box<[u32]>>,
    pub samples: Vec<SnapshotSample>,
    pub processes: Vec<Arc<ProcessInfo>>,
    /// The counters when the period closed (after its symbolization).
    pub stats: Stats,
}

impl SnapshotSample {
    /// A CPU count or off-CPU time: the sample is worth writing.
    pub fn has_value(&self) -> bool {
        self.count > 0 || self.off_cpu_ns > 0
    }
}

impl Snapshot {
    /// The pids of the samples with a value, each once, in order of first appearance.
    pub fn sampled_pids(&self) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        self.samples.iter().filter(|x| x.has_value() && seen.insert(x.pid)).map(|x| x.pid).collect()
    }

    /// Indices of the mappings that the stacks of samples with a value touch, in table order.
    pub fn sampled_mappings(&self) -> Vec<u32> {
        let mut stack_seen = vec![false; self.stacks.len()];
        let mut used = vec![false; self.mappings.len()];
        for x in self.samples.iter().filter(|x| x.has_value()) {
            let Some(seen) = stack_seen.get_mut(x.stack as usize) else { continue };
            if std::mem::replace(seen, true) {
                continue;
            }
            for &f in self.stacks[x.stack as usize].iter() {
                if let Some(m) = self.frames.get(f as usize).and_then(|f| f.mapping) {
                    if let Some(u) = used.get_mut(m as usize) {
                        *u = true;
                    }
                }
            }
        }
        (0..used.len() as u32).filter(|&i| used[i as usize]).collect()
    }

    /// Sum of the sample counts.
    pub fn total(&self) -> u64 {
        self.samples.iter().map(|x| x.count).sum()
    }

    /// Sum of the off-CPU nanoseconds.
    pub fn off_cpu_total(&self) -> u64 {
        self.samples.iter().map(|x| x.off_cpu_ns).fold(0, u64::saturating_add)
    }
}
