//! One record in, one counted stack out: parse, unwind, resolve each address to a mapping
//! (and what it will take to symbolize it), add to the aggregate. Runs on the drain thread
//! only; symbolization waits for the snapshot, on another thread.
//!
//! Per-sample failures are data: each becomes a counter (and a `[truncated]` marker frame
//! where the stack was cut), never an error.
use std::collections::{BTreeMap, HashMap, HashSet};

use crate::abi::{self, Record};
use crate::aggregate::{Aggregate, FrameKey, SnapshotMapping, SymRequest};
use crate::perfmap::PerfMap;
use crate::process::{MapKind, Registry};
use crate::symbolize::Symbolizer;
use crate::unwind::{Outcome, StackUnwinder, UserRegs, MAX_FRAMES};

pub const TRUNCATED: &str = "[truncated]";
pub const EXITED: &str = "[process exited]";

pub struct Pipeline {
    pub registry: Registry,
    unwinder: StackUnwinder,
    pub aggregate: Aggregate,
    perf_maps: HashMap<u32, PerfMap>,
    pub counts: BTreeMap<&'static str, u64>,
    addrs: Vec<u64>,
    chain: Vec<u64>,
    frames: Vec<u32>,
    /// Pids whose samples should carry the frame-pointer chain, for the drain loop to hand
    /// to the sampler; `fp_chain_asked` keeps each from being asked twice (bounded).
    pub fp_chain_requests: Vec<u32>,
    fp_chain_asked: HashSet<u32>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline {
            registry: Registry::new(),
            unwinder: StackUnwinder::new(),
            aggregate: Aggregate::new(),
            perf_maps: HashMap::new(),
            counts: BTreeMap::new(),
            addrs: Vec::with_capacity(256),
            chain: Vec::new(),
            frames: Vec::with_capacity(256),
            fp_chain_requests: Vec::new(),
            fp_chain_asked: HashSet::new(),
        }
    }

    fn count(&mut self, name: &'static str) {
        *self.counts.entry(name).or_insert(0) += 1;
    }

    pub fn ingest(&mut self, bytes: &[u8]) {
        let Some(rec) = Record::parse(bytes) else {
            self.count("bad_records");
            return;
        };
        self.count("samples");
        let h = rec.header;
        self.frames.clear();

        for addr in rec.kernel_stack() {
            let id = self.aggregate.frame(FrameKey::Kernel { addr }, |agg| {
                (agg.kernel_mapping() as i64, SymRequest::Kernel { addr })
            });
            self.frames.push(id);
        }

        if h.flags & abi::F_USER_REGS != 0 {
            self.user_frames(&rec);
        } else if h.pid != 0 && rec.kernel_stack().next().is_none() {
            self.count("no_stack");
        }

        let info = self.registry.get(h.pid).map(|p| &p.info);
        self.aggregate.add(h.pid, h.tid, h.cpu, &self.frames, &h.comm, info);
        self.registry.sweep(false);
        if self.perf_maps.len() > self.registry.len() + 64 {
            let registry = &self.registry;
            self.perf_maps.retain(|pid, _| registry.get(*pid).is_some());
        }
    }

    /// A process that exited before its mappings could be read (a short-lived one, between
    /// the sample and the next drain): its user stack cannot be unwound. The sample keeps its
    /// process and thread names and this marker, so that the time is not silently lost.
    fn process_gone(&mut self) {
        self.count("process_gone");
        let id = self.aggregate.frame(FrameKey::Marker(EXITED), |_| (-1, SymRequest::Fixed(Symbolizer::marker(EXITED))));
        self.frames.push(id);
    }

    fn user_frames(&mut self, rec: &Record<'_>) {
        let h = rec.header;
        if self.registry.process(h.pid).is_none() {
            return self.process_gone();
        }
        // An ip outside the known mappings means new code was mapped (dlopen, exec): reload.
        self.registry.refresh_for(h.pid, h.user_ip);
        let Some(process) = self.registry.get(h.pid) else {
            return self.process_gone();
        };
        let cut = h.flags & abi::F_USTACK_CUT != 0;
        let mut addrs = std::mem::take(&mut self.addrs);
        let regs = UserRegs { ip: h.user_ip, sp: h.user_sp, bp: h.user_bp };
        let mut outcome = self.unwinder.unwind(process, regs, rec.ustack, cut, &mut addrs);
        if outcome != Outcome::Complete && rec.has_fp_chain() {
            self.chain.clear();
            self.chain.extend(rec.fp_chain());
            match extend_with_fp_chain(&mut addrs, &self.chain) {
                Some(o) => {
                    outcome = o;
                    *self.counts.entry("fp_chain_used").or_insert(0) += 1;
                }
                None => *self.counts.entry("fp_chain_failed").or_insert(0) += 1,
            }
        }
        *self.counts.entry(outcome.stat_name()).or_insert(0) += 1;
        if !rec.has_fp_chain() && process.runs_go && !self.fp_chain_asked.contains(&h.pid) {
            if self.fp_chain_asked.len() >= 16_384 {
                self.fp_chain_asked.clear();
            }
            self.fp_chain_asked.insert(h.pid);
            self.fp_chain_requests.push(h.pid);
        }

        for &addr in &addrs {
            let key = match process.mapping_index(addr) {
                Some(mi) => {
                    let m = &process.mappings[mi];
                    let agg = &mut self.aggregate;
                    let mapping = agg.mapping(h.pid, m.start, || SnapshotMapping {
                        start: m.start,
                        limit: m.end,
                        offset: m.offset,
                        path: m.path.clone(),
                        build_id: m.file.as_ref().map(|f| f.file_id()).unwrap_or_default(),
                        is_kernel: false,
                    });
                    let perf_maps = &mut self.perf_maps;
                    let id = agg.frame(FrameKey::User { mapping, addr }, |_| {
                        let req = match (&m.kind, &m.file) {
                            (MapKind::File | MapKind::Vdso, Some(f)) => SymRequest::File { file: f.clone(), offset: m.file_offset(addr) },
                            // JIT code lives in anonymous executable memory; its names are in
                            // the perf map, read on the first new frame of such memory.
                            (MapKind::Anon, _) => {
                                let pm = perf_maps.entry(h.pid).or_default();
                                pm.refresh(h.pid);
                                match pm.lookup(addr) {
                                    Some(name) => SymRequest::Fixed(Symbolizer::jit(name)),
                                    None => SymRequest::Fixed(Symbolizer::marker(if m.path.is_empty() { "[anon]" } else { &m.path })),
                                }
                            }
                            // A file that could not be opened or parsed (counted in elf_errors).
                            _ => SymRequest::Fixed(Symbolizer::marker(&m.path)),
                        };
                        (mapping as i64, req)
                    });
                    self.frames.push(id);
                    continue;
                }
                None => FrameKey::Unmapped { addr },
            };
            let id = self.aggregate.frame(key, |_| (-1, SymRequest::Fixed(Symbolizer::marker("[unknown]"))));
            self.frames.push(id);
        }
        if outcome != Outcome::Complete {
            let id = self.aggregate.frame(FrameKey::Marker(TRUNCATED), |_| (-1, SymRequest::Fixed(Symbolizer::marker(TRUNCATED))));
            self.frames.push(id);
        }
        self.addrs = addrs;
    }

    /// Counters of this pipeline, the registry and the symbolizer.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let r = &self.registry.stats;
        v.push(("processes".into(), self.registry.len() as u64));
        v.push(("processes_seen".into(), r.processes_seen));
        v.push(("processes_exited".into(), r.processes_exited));
        v.push(("maps_refreshes".into(), r.maps_refreshes));
        v.push(("maps_errors".into(), r.maps_errors));
        v.push(("elf_errors".into(), self.registry.files.errors));
        v.push(("files_cached".into(), self.registry.files.len() as u64));
        v
    }
}

/// Continues a walk that stopped early (framehop needed stack memory the snapshot from sp
/// does not hold) with the frame-pointer chain the kernel walked for the same sample. In Go,
/// `runtime.systemstack` runs code on the thread's system stack whose frame pointers lead
/// back into the goroutine's stack, elsewhere in memory: only the chain gets there. Both
/// walks agree up to where framehop stopped (Go code has no CFI, framehop follows frame
/// pointers too), so the chain's entries after framehop's last return address are
/// appended. `None` when they do not meet (nothing is appended).
pub fn extend_with_fp_chain(addrs: &mut Vec<u64>, chain: &[u64]) -> Option<Outcome> {
    if chain.len() < 2 {
        return None;
    }
    let from = match addrs.len() {
        0 => {
            addrs.push(chain[0]);
            1
        }
        1 => 1,
        n => {
            // Both walks follow the same frame pointers, so they line up entry for entry;
            // search only when they do not (a frame framehop found by CFI that the chain
            // skipped), and then for the match whose earlier entries agree too, so that
            // recursion (the same return address many times) joins at the right depth.
            let last_return = addrs[n - 1].wrapping_add(1);
            if chain.get(n - 1) == Some(&last_return) {
                n
            } else {
                let agrees = |j: usize| {
                    j >= 1 && chain[j] == last_return && (n < 3 || chain[j - 1] == addrs[n - 2].wrapping_add(1))
                };
                (1..chain.len()).filter(|&j| agrees(j)).min_by_key(|&j| j.abs_diff(n - 1))? + 1
            }
        }
    };
    if from >= chain.len() {
        return None;
    }
    for &ret in &chain[from..] {
        if addrs.len() >= MAX_FRAMES {
            return Some(Outcome::TooDeep);
        }
        addrs.push(ret.wrapping_sub(1));
    }
    // A chain as deep as the kernel walks may go on; a shorter one reached a null frame pointer.
    Some(if chain.len() >= max_chain_depth() { Outcome::Truncated } else { Outcome::Complete })
}

/// How deep the kernel walks a chain: our buffer, or kernel.perf_event_max_stack if lower.
fn max_chain_depth() -> usize {
    static DEPTH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEPTH.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(abi::MAX_UFP_DEPTH, |d| d.clamp(1, abi::MAX_UFP_DEPTH))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp_chain_continues_where_the_walk_stopped() {
        // framehop: ip, then return addresses minus one; the chain: ip, return addresses.
        let chain = [0x100, 0x201, 0x301, 0x401, 0x501];
        let mut addrs = vec![0x100, 0x200, 0x300];
        assert_eq!(extend_with_fp_chain(&mut addrs, &chain), Some(Outcome::Complete));
        assert_eq!(addrs, [0x100, 0x200, 0x300, 0x400, 0x500]);
        let mut only_ip = vec![0x100];
        assert_eq!(extend_with_fp_chain(&mut only_ip, &chain), Some(Outcome::Complete));
        assert_eq!(only_ip, [0x100, 0x200, 0x300, 0x400, 0x500]);
        // Walks that do not meet, or a chain with nothing more: left alone.
        let mut other = vec![0x100, 0x900];
        assert_eq!(extend_with_fp_chain(&mut other, &chain), None);
        assert_eq!(other, [0x100, 0x900]);
        let mut done = vec![0x100, 0x200, 0x300, 0x400, 0x500];
        assert_eq!(extend_with_fp_chain(&mut done, &chain), None);
        let mut empty = Vec::new();
        assert_eq!(extend_with_fp_chain(&mut empty, &[0x100]), None);
    }

    #[test]
    fn fp_chain_joins_recursion_at_the_right_depth() {
        // f calls f calls f, from main: framehop stopped two frames in.
        let chain = [0x100, 0x201, 0x201, 0x201, 0x501];
        let mut addrs = vec![0x100, 0x200, 0x200];
        assert_eq!(extend_with_fp_chain(&mut addrs, &chain), Some(Outcome::Complete));
        assert_eq!(addrs, [0x100, 0x200, 0x200, 0x200, 0x500]);
        // framehop found one frame the chain skipped (a leaf before its frame pointer push):
        // the chain is joined one entry earlier than aligned.
        let chain = [0x100, 0x301, 0x401, 0x501];
        let mut addrs = vec![0x100, 0x200, 0x300, 0x400];
        assert_eq!(extend_with_fp_chain(&mut addrs, &chain), Some(Outcome::Complete));
        assert_eq!(addrs, [0x100, 0x200, 0x300, 0x400, 0x500]);
    }
}
