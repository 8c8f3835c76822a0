//! The drain thread: records out of the ring buffer, each turned into a counted stack.
//!
//! Per record: parse (`abi`), the process's mappings (`process`), walk the user stack
//! (`unwind`; for Go programs also the other stack's window, joined across the runtime's
//! stack switches, `join_go_stacks`), resolve each address to a mapping and what it will
//! take to symbolize it (`symbolize::SymRequest`), count it in the period's aggregate
//! (`aggregate`). On a snapshot command the period is closed and handed to the symbolizer
//! thread: this thread never symbolizes (a first parse of a large binary's DWARF can take
//! seconds, and the ring buffer would overflow meanwhile).
//!
//! Off-CPU mode: a switch-out's stack record is unwound the same way (the thread is in the
//! kernel: the user part from the registers it saved on entry) and waits in the join
//! (`offcpu`) until the weight record of its switch-in gives it its off-CPU time; stacks
//! still waiting when a period closes are carried into the next one. A thread that left the
//! CPU still runnable (preempted) gets a `[preempted]` marker as its leaf frame, so that
//! waiting for a CPU and blocking stand apart.
//!
//! Per-sample failures are data: each becomes a counter (`counters`) and, where the stack
//! was cut, a `[truncated]` marker frame; never an error.
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::abi::{self, GoWindow, GoWindowKind, OffCpuWeight, PyStatus, Record};
use super::bpf::Sampler;
use super::offcpu::{OffCpuJoin, Pending};
use crate::addr::Avma;
use crate::aggregate::{Aggregate, FrameKey, FrameKind, Snapshot, SnapshotMapping, Values, ELIDED};
use crate::counters::{Counter, Counters};
use crate::cpython::code::CodeCache;
use crate::cpython::merge::{merge_sampled, Piece, PyFrame, NO_INSTR};
use crate::cpython::offsets::FrameLayout;
use crate::cpython::trampoline::Trampolines;
use crate::cpython::{Detected, Detector, Interpreter};
use crate::process::{MapKind, Mapping, Process, Registry};
use crate::symbolize::perfmap::PerfMapFiles;
use crate::symbolize::{self, SymRequest};
use crate::elf::FileKey;
use crate::memory::{self, MemoryBudget, ShedPolicy};
use crate::unwind::go::{join_cgo, Code, JoinEnd, Joined, StackSwitch, WalkFrame};
use crate::unwind::go_runtime::{self, GoRuntime};
use crate::unwind::{Outcome, StackSnapshot, StackUnwinder, GAP, MAX_WALK_FRAMES};

pub const EXITED: &str = "[process exited]";
pub const UNKNOWN: &str = "[unknown]";
/// A process whose mappings may not be read (CAP_SYS_PTRACE missing).
pub const MAPS_DENIED: &str = "[unwind failed: no access to the process's mappings]";
/// A sample taken before an exec or code unmap whose mappings were re-read already.
pub const MAPS_CHANGED: &str = "[unwind failed: mappings changed]";
/// The leaf of an off-CPU stack whose thread left the CPU still runnable (preempted, or a
/// yield): its time is waiting for a CPU, not blocked by its own choice.
pub const PREEMPTED: &str = "[preempted]";
/// A Python frame whose code object could not be read.
pub const PYTHON_UNREADABLE: &str = "[python: unreadable code object]";
/// The root of a stack whose Python frames and eval-loop frames did not line up
/// (`Merged::trusted`): the frames are all there, their interleaving may be wrong.
pub const PYTHON_UNALIGNED: &str = "[python: frames not aligned with the native stack]";

/// How often the BPF counters are read between snapshots (`Profiler.stats()` sees them so),
/// and the pages the walks read are released (`StackUnwinder::release_touched`).
const COUNTERS_INTERVAL: Duration = Duration::from_secs(1);
/// Pids asked for the frame-pointer chain, remembered so that each is asked once.
const MAX_FP_CHAIN_ASKED: usize = 16_384;
/// Go binaries whose runtime was looked at, remembered (cleared when full).
const MAX_GO_FILES: usize = 1024;

/// What the drain thread asks of the BPF side (it owns no map).
pub enum BpfRequest {
    /// Samples of this pid carry the user frame-pointer chain.
    FpChain(u32),
    /// Samples of this pid carry its interpreter's Python frames (`None`: no longer).
    Python(u32, Option<abi::PyProc>),
    /// Samples of this pid carry the Go window, read as described (`None`: no longer).
    Go(u32, Option<abi::GoProc>),
}

/// What the profiler handle asks the drain thread.
pub enum Command {
    /// Close the period (with `reset`; else a copy of it) and reply with its snapshot.
    Snapshot { reset: bool, reply: Sender<Snapshot> },
    /// Stop sampling; keep serving snapshots of what was collected.
    Stop,
}

/// A closed period on its way to the symbolizer thread.
pub struct SymJob {
    pub aggregate: Aggregate,
    pub reply: Sender<Snapshot>,
    /// The memory budget was exceeded: the symbolizer drops its caches first.
    pub shed: bool,
}

pub struct Drain {
    registry: Registry,
    unwinder: StackUnwinder,
    aggregate: Aggregate,
    perf_maps: PerfMapFiles,
    counters: Arc<Counters>,
    addrs: Vec<Avma>,
    chain: Vec<u64>,
    frames: Vec<u32>,
    /// What to tell the sampler, for the loop to hand over; `fp_chain_asked` keeps each pid
    /// from being asked twice for its chain (bounded).
    requests: Vec<BpfRequest>,
    fp_chain_asked: HashSet<u32>,
    /// CPython: what each process (generation) is, its code objects, and scratch space.
    detector: Detector,
    pythons: HashMap<u32, (u64, Detected)>,
    codes: CodeCache,
    trampolines: Trampolines,
    python: Vec<PyFrame>,
    pieces: Vec<Piece>,
    /// Whether CPython processes get their Python frames read.
    python_frames: bool,
    /// Go: each process (generation) looked at, and whether the sampler takes its Go window;
    /// the runtime of each Go binary (None: refused, logged once).
    gos: HashMap<u32, (u64, bool)>,
    go_runtimes: HashMap<FileKey, Option<GoRuntime>>,
    /// Off-CPU mode: the stacks waiting for their weight (None: off).
    offcpu: Option<OffCpuJoin>,
}

impl Drain {
    /// `off_cpu_rate`: off-CPU mode's sampling rate (None: off).
    pub fn new(counters: Arc<Counters>, python_frames: bool, off_cpu_rate: Option<f64>) -> Self {
        let mut aggregate = Aggregate::new();
        aggregate.set_off_cpu(off_cpu_rate.is_some());
        Drain {
            registry: Registry::new(counters.clone()),
            unwinder: StackUnwinder::new(),
            aggregate,
            perf_maps: PerfMapFiles::default(),
            counters,
            addrs: Vec::with_capacity(256),
            chain: Vec::new(),
            frames: Vec::with_capacity(256),
            requests: Vec::new(),
            fp_chain_asked: HashSet::new(),
            detector: Detector::default(),
            pythons: HashMap::new(),
            codes: CodeCache::default(),
            trampolines: Trampolines::default(),
            python: Vec::new(),
            pieces: Vec::new(),
            python_frames,
            gos: HashMap::new(),
            go_runtimes: HashMap::new(),
            offcpu: off_cpu_rate.map(OffCpuJoin::new),
        }
    }

    /// One record in: a CPU sample's counted stack, an off-CPU stack left to wait for its
    /// weight, or an off-CPU weight that gives its waiting stack its time.
    pub fn ingest(&mut self, bytes: &[u8]) {
        if abi::record_kind(bytes) == Some(abi::REC_OFFCPU_WEIGHT) {
            match OffCpuWeight::parse(bytes) {
                Some(w) => self.weight(&w),
                None => self.counters.incr(Counter::BadRecords),
            }
            return;
        }
        let Some(rec) = Record::parse(bytes) else {
            self.counters.incr(Counter::BadRecords);
            return;
        };
        let off_cpu = rec.header.kind == abi::REC_OFFCPU_STACK;
        if !off_cpu {
            self.counters.incr(Counter::Samples);
        }
        let h = rec.header;
        self.frames.clear();
        if off_cpu && h.flags & abi::F_PREEMPTED != 0 {
            let id = self.aggregate.marker(PREEMPTED);
            self.frames.push(id);
        }

        for addr in rec.kernel_stack() {
            let id = self.aggregate.frame(FrameKey::Kernel { addr }, |agg| {
                (Some(agg.kernel_mapping()), FrameKind::Kernel, SymRequest::Kernel { addr })
            });
            self.frames.push(id);
        }

        match rec.user_regs() {
            Some(_) => self.user_frames(&rec),
            None if h.pid != 0 && self.frames.is_empty() => self.counters.incr(Counter::NoStack),
            None => {}
        }

        let info = self.registry.get(h.pid).map(|p| &p.info);
        match (&mut self.offcpu, off_cpu) {
            (Some(join), true) => {
                let stack = self.aggregate.stack(&mut self.frames);
                let p = Pending { pid: h.pid, tid: h.tid, cpu: h.cpu, stack, comm: h.comm, info: info.cloned() };
                let dropped = join.stack(h.ktime_ns, p);
                self.counters.add(Counter::OffCpuStale, dropped);
            }
            (None, true) => {} // not asked for: the sampler sends none
            (_, false) => self.aggregate.add(h.pid, h.tid, h.cpu, &mut self.frames, &h.comm, info),
        }
        if self.registry.sweep(false) {
            self.unwinder.forget_stale(&self.registry);
            let registry = &self.registry;
            self.perf_maps.retain(|pid| registry.get(pid).is_some());
            self.codes.retain(|pid| registry.get(pid).is_some());
            self.trampolines.retain(|pid| registry.get(pid).is_some());
            self.pythons.retain(|pid, _| registry.get(*pid).is_some());
            self.gos.retain(|pid, _| registry.get(*pid).is_some());
        }
    }

    /// An off-CPU weight: its waiting stack gets the time.
    fn weight(&mut self, w: &OffCpuWeight) {
        let Some(join) = &mut self.offcpu else { return };
        match join.weight(w) {
            Some((p, ns)) => {
                self.counters.incr(Counter::OffCpuJoined);
                let values = Values { count: 0, off_cpu_ns: ns };
                self.aggregate.count(p.pid, p.tid, p.cpu, p.stack, &p.comm, p.info.as_ref(), values);
            }
            None => self.counters.incr(Counter::OffCpuUnmatched),
        }
    }

    /// Sampling stopped: the threads still switched out get their time until now.
    fn flush_off_cpu(&mut self) {
        let Some(join) = &mut self.offcpu else { return };
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid pointer to a timespec. CLOCK_MONOTONIC is bpf_ktime_get_ns's clock.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
            return;
        }
        let now = (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64);
        for (p, ns) in join.flush(now) {
            self.counters.incr(Counter::OffCpuOpenAtStop);
            let values = Values { count: 0, off_cpu_ns: ns };
            self.aggregate.count(p.pid, p.tid, p.cpu, p.stack, &p.comm, p.info.as_ref(), values);
        }
    }

    /// A process that exited before its mappings could be read (a short-lived one, between
    /// the sample and the next drain): its user stack cannot be unwound. The sample keeps its
    /// process and thread names and this marker, so that the time is not silently lost.
    fn process_gone(&mut self) {
        self.counters.incr(Counter::ProcessGone);
        let id = self.aggregate.marker(EXITED);
        self.frames.push(id);
    }

    fn user_frames(&mut self, rec: &Record<'_>) {
        let h = rec.header;
        let Some(regs) = rec.user_regs() else { return };
        if self.registry.process(h.pid, h.map_gen).is_none() {
            if self.registry.last_load_denied() {
                let id = self.aggregate.marker(MAPS_DENIED);
                self.frames.push(id);
                return;
            }
            return self.process_gone();
        }
        if !self.registry.sync(h.pid, h.map_gen) {
            self.counters.incr(Counter::UnwindMapsChanged);
            let id = self.aggregate.marker(MAPS_CHANGED);
            self.frames.push(id);
            return;
        }
        // An ip outside the known mappings means new code was mapped (dlopen, exec): reload.
        self.registry.refresh_for(h.pid, regs.ip());
        let Some(process) = self.registry.get(h.pid) else {
            return self.process_gone();
        };
        // Detected either way: CPython's perf trampolines are unwound with Python frames off.
        let detected = python_of(&mut self.pythons, &mut self.detector, &mut self.requests, self.python_frames, process).cloned();
        let python = if self.python_frames { detected.clone() } else { None };
        if process.runs_go || self.gos.contains_key(&h.pid) {
            go_of(&mut self.gos, &mut self.go_runtimes, &mut self.unwinder, &mut self.requests, process);
        }
        let cut = h.flags & abi::F_USTACK_CUT != 0;
        let mut addrs = std::mem::take(&mut self.addrs);
        // CPython 3.12+ may enter its eval loop through perf trampolines (-X perf).
        let trampoline_pid = match &detected {
            Some(Detected::Python(i)) if i.offsets.minor >= 12 => Some(h.pid),
            _ => None,
        };
        let trampolines = &mut self.trampolines;
        let mut known = |addr: Avma, _first: bool| trampoline_pid.and_then(|pid| trampolines.rule(pid, addr));
        let stack = StackSnapshot { bytes: rec.ustack, base: regs.sp().wrapping_sub(u64::from(h.ustack_below_sp)), cut };
        let mut outcome = self.unwinder.unwind(process, regs, &stack, &mut known, &mut addrs);
        let mut gap_at = None;
        if rec.go_window.is_some() {
            self.counters.incr(Counter::GoWindows);
        }
        if process.runs_go && (outcome != Outcome::Complete || self.unwinder.crossed_switch()) {
            self.chain.clear();
            self.chain.extend(rec.fp_chain());
            match join_go_stacks(&mut self.unwinder, &self.chain, rec.go_window.as_ref(), process, &mut addrs, &mut gap_at) {
                Some(o) => {
                    outcome = o;
                    self.counters.incr(Counter::FpChainUsed);
                }
                None if rec.has_fp_chain() => self.counters.incr(Counter::FpChainFailed),
                None => {}
            }
        }
        let guessed = self.unwinder.take_guessed_frames();
        if guessed > 0 {
            self.counters.add(Counter::UnwindHeuristic, guessed);
        }
        self.counters.incr(outcome.counter());
        if !rec.has_fp_chain() && process.runs_go && !self.fp_chain_asked.contains(&h.pid) {
            if self.fp_chain_asked.len() >= MAX_FP_CHAIN_ASKED {
                self.fp_chain_asked.clear();
            }
            self.fp_chain_asked.insert(h.pid);
            self.requests.push(BpfRequest::FpChain(h.pid));
        }

        self.python.clear();
        let interp = match &python {
            Some(Detected::Python(interp)) => {
                interp.decode(rec.python_frames(), &mut self.python);
                count_python_status(&self.counters, rec.py_status, !self.python.is_empty());
                Some(interp)
            }
            Some(Detected::Unsupported { .. }) => {
                self.counters.incr(Counter::PythonUnsupported);
                None
            }
            _ => None,
        };
        match &interp {
            Some(interp) if !self.python.is_empty() => {
                let cut = rec.py_status == PyStatus::Cut;
                let merged = merge_sampled(addrs.len(), |i| interp.is_eval(addrs[i]), &self.python, cut, &mut self.pieces);
                let unaligned = !merged.trusted(outcome == Outcome::Complete, cut);
                if unaligned {
                    self.counters.incr(Counter::PythonMergeMismatch);
                }
                let pieces = std::mem::take(&mut self.pieces);
                for piece in &pieces {
                    let id = match *piece {
                        // A perf trampoline says again what the Python frames say.
                        Piece::Native(i) if self.trampolines.is_trampoline(h.pid, addrs[i]) => continue,
                        Piece::Native(i) => native_frame(&mut self.aggregate, &mut self.perf_maps, process, addrs[i]),
                        Piece::Python(i) => {
                            python_frame(&mut self.aggregate, &mut self.codes, &self.counters, process, interp, self.python[i])
                        }
                        Piece::Gap => self.aggregate.marker(ELIDED),
                    };
                    self.frames.push(id);
                }
                self.pieces = pieces;
                if unaligned {
                    let id = self.aggregate.marker(PYTHON_UNALIGNED);
                    self.frames.push(id);
                }
            }
            _ => {
                for (i, &addr) in addrs.iter().enumerate() {
                    if gap_at == Some(i) {
                        let id = self.aggregate.marker(GAP);
                        self.frames.push(id);
                    }
                    let id = native_frame(&mut self.aggregate, &mut self.perf_maps, process, addr);
                    self.frames.push(id);
                }
            }
        }
        if let Some(marker) = outcome.marker() {
            let id = self.aggregate.marker(marker);
            self.frames.push(id);
        }
        self.addrs = addrs;
    }

    /// Sets the counters that are levels, not counts.
    fn publish_gauges(&self) {
        self.counters.set(Counter::Processes, self.registry.len() as u64);
        self.counters.set(Counter::FilesCached, self.registry.files.len() as u64);
        self.counters.set(Counter::PythonCodeObjects, self.codes.len() as u64);
        self.counters.set(Counter::PythonCodeBytes, self.codes.bytes() as u64);
        self.counters.set(Counter::OffCpuPending, self.offcpu.as_ref().map_or(0, |j| j.len() as u64));
    }

    /// Drops what the next samples can rebuild (the memory budget was exceeded: see
    /// `memory`): unwind tables, files no live process maps, the pages of mapped files read
    /// so far, Python code objects.
    fn shed(&mut self) {
        self.unwinder.shed();
        self.registry.shed_files();
        self.codes = CodeCache::default();
        self.trampolines = Trampolines::default();
        memory::trim();
        self.publish_gauges();
    }

    /// The period so far; with `reset` the next one starts, and the off-CPU stacks still
    /// waiting for their weight are carried into it.
    fn close_period(&mut self, reset: bool) -> Aggregate {
        if !reset {
            return self.aggregate.clone();
        }
        let old = self.aggregate.close();
        if let Some(join) = &mut self.offcpu {
            let dropped = join.expire();
            let carried = self.aggregate.carry_stacks(&old, join.stacks());
            self.counters.add(Counter::OffCpuStale, dropped + join.carry(&carried));
        }
        old
    }
}

/// Joins a Go walk that stopped at a stack switch (or crossed a cgo callback) with what the
/// sample holds of the other stack: the Go window, walked here ([`window_walk`]), else the
/// kernel's frame-pointer chain (`chain`); see `unwind::go::join_cgo`. Rewrites `addrs`
/// (and where frames could not be recovered, `gap_at`) and returns the joined stack's
/// outcome; `None` when the walk crossed no switch.
fn join_go_stacks(
    unwinder: &mut StackUnwinder,
    chain: &[u64],
    window: Option<&GoWindow<'_>>,
    process: &Process,
    addrs: &mut Vec<Avma>,
    gap_at: &mut Option<usize>,
) -> Option<Outcome> {
    let walk: Vec<WalkFrame> =
        addrs.iter().zip(unwinder.cfas()).map(|(a, &cfa)| WalkFrame { addr: a.0, cfa }).collect();
    let other = window.and_then(|w| window_walk(unwinder, process, &walk, w).map(|(frames, o)| (w.kind, frames, o)));
    let unwinder = std::cell::RefCell::new(unwinder);
    let classify = |a: u64| unwinder.borrow_mut().go_code(process, Avma(a));
    let mut joined = Vec::new();
    let end = join_cgo(&walk, chain, other.as_ref().map(|(_, f, _)| f.as_slice()), &classify, &mut joined)?;
    // A goroutine deeper than the window, called into C code that left rbp alone: the
    // chain reaches the root where the window stops.
    let (end, window_cut) = match &other {
        Some((kind, _, o)) if end != JoinEnd::Complete && !chain.is_empty() => {
            let mut by_chain = Vec::new();
            if join_cgo(&walk, chain, None, &classify, &mut by_chain) == Some(JoinEnd::Complete) {
                joined = by_chain;
                (JoinEnd::Complete, false)
            } else {
                (end, *kind == GoWindowKind::Curg && *o == Outcome::Truncated)
            }
        }
        Some((kind, _, o)) => (end, *kind == GoWindowKind::Curg && *o == Outcome::Truncated),
        None => (end, false),
    };
    addrs.clear();
    for j in joined {
        match j {
            Joined::Frame(a) => addrs.push(Avma(a)),
            Joined::Gap(_) => *gap_at = Some(addrs.len()),
        }
    }
    addrs.truncate(MAX_WALK_FRAMES);
    Some(match end {
        JoinEnd::Complete => Outcome::Complete,
        JoinEnd::Cut(_) => Outcome::StackSwitch,
        // The goroutine's frames ran out at the end of its window: the stack goes on.
        JoinEnd::ChainEnded if window_cut => Outcome::Truncated,
        JoinEnd::ChainEnded => Outcome::NoEntryPoint,
    })
}

/// The walk of the Go window (`sampler.h`), from where the other stack's frames start, and
/// how it ended; None when the window is not the stack this walk needs.
///
/// - g0's window ([`GoWindowKind::G0`], the sample is in a cgo callback): runtime.cgocallback
///   keeps a frame on each stack, the same size, running the same instruction (its call of
///   cgocallbackg); m.g0.sched.sp is its g0 frame. So the walk starts at the pc of
///   cgocallback's frame in the first walk, at that sp: its return address leads to
///   crosscall2, then the C frames (CFI), up to runtime.asmcgocall, where it stops.
/// - the goroutine's window ([`GoWindowKind::Curg`], the sample is on g0): from its saved
///   state, `g.sched.{pc,sp,bp}` (pc in runtime.systemstack_switch, whose frame has the shape
///   of the one the switch left, or the function morestack was called from). Only when the
///   switch the walk stopped at is the one that left the goroutine: it moved sp to
///   `m.g0.sched.sp` (asmcgocall aligns it and reserves 16 bytes, 64 before Go 1.21), so
///   the function it called has its CFA there. runtime.asmcgocall called on g0 already (the
///   runtime's own C calls: its no-switch path) is deeper in g0's stack, and its callers are
///   g0 frames, which the chain gives.
fn window_walk(
    unwinder: &mut StackUnwinder,
    process: &Process,
    walk: &[WalkFrame],
    w: &GoWindow<'_>,
) -> Option<(Vec<WalkFrame>, Outcome)> {
    /// How far below `m.g0.sched.sp` a switch to g0 may put its callee's CFA.
    const SWITCH_SLACK: u64 = 128;
    let (ip, fp) = match w.kind {
        GoWindowKind::G0 => {
            let callback = Code::Switch(StackSwitch::CgoCallback);
            (walk.iter().find(|f| unwinder.go_code(process, Avma(f.addr)) == callback)?.addr, None)
        }
        GoWindowKind::Curg => {
            // The walk ends at the switch; the frame before it is the function it called.
            let callee = walk.len().checked_sub(2).map(|i| walk[i].cfa)?;
            if !(w.g0_sp.saturating_sub(SWITCH_SLACK)..=w.g0_sp).contains(&callee) {
                return None;
            }
            (w.pc, Some(w.bp))
        }
    };
    let stack = StackSnapshot { bytes: w.bytes, base: w.sp, cut: w.cut };
    let mut out = Vec::new();
    let outcome = unwinder.unwind_from(process, ip, w.sp, fp, &stack, &mut out);
    let frames = out.iter().zip(unwinder.cfas()).map(|(a, &cfa)| WalkFrame { addr: a.0, cfa }).collect();
    Some((frames, outcome))
}

/// Registers a Go process's runtime with the sampler on first sight of this generation of
/// it (its Go window), and unregisters a process that exec'd into something else.
fn go_of(
    gos: &mut HashMap<u32, (u64, bool)>,
    runtimes: &mut HashMap<FileKey, Option<GoRuntime>>,
    unwinder: &mut StackUnwinder,
    requests: &mut Vec<BpfRequest>,
    process: &Process,
) {
    if gos.get(&process.pid).is_some_and(|(g, _)| *g == process.generation) {
        return;
    }
    let was_on = gos.get(&process.pid).is_some_and(|(_, on)| *on);
    let runtime = go_runtime_of(runtimes, unwinder, process);
    match &runtime {
        Some(r) => {
            log::debug!("pid {}: Go window on ({:?}, g at fs{:+}, cgo {})", process.pid, r.version, r.tls_g, r.cgo);
            requests.push(BpfRequest::Go(process.pid, Some(abi::GoProc::from(r))));
        }
        None if was_on => requests.push(BpfRequest::Go(process.pid, None)),
        None => {}
    }
    gos.insert(process.pid, (process.generation, runtime.is_some()));
}

/// The runtime of the first Go file `process` maps whose runtime the window can read
/// (`go_runtime::detect`), each file looked at once; a refused file is logged once.
fn go_runtime_of(
    runtimes: &mut HashMap<FileKey, Option<GoRuntime>>,
    unwinder: &mut StackUnwinder,
    process: &Process,
) -> Option<GoRuntime> {
    let files = process.mappings.iter().filter_map(|m| m.file.as_ref()).filter(|f| f.symbols.has_gopclntab);
    for file in files {
        if !runtimes.contains_key(&file.key) {
            if runtimes.len() >= MAX_GO_FILES {
                runtimes.clear();
            }
            let found = match unwinder.go_frames(file) {
                Some(frames) => go_runtime::detect(file, &frames),
                None => Err("no usable .gopclntab".into()),
            };
            let found = found
                .map_err(|e| {
                    let level = if cfg!(target_arch = "x86_64") { log::Level::Info } else { log::Level::Debug };
                    log::log!(level, "{}: no Go window (the other stack of cgo calls and callbacks is not copied): {e}", file.origin.path);
                })
                .ok();
            runtimes.insert(file.key, found);
        }
        if let Some(Some(r)) = runtimes.get(&file.key) {
            return Some(*r);
        }
    }
    None
}

/// What `process` (this generation of it) is as a CPython, detected on first sight: a new
/// interpreter is registered with the sampler, a process that exec'd into something else
/// is unregistered.
fn python_of<'a>(
    pythons: &'a mut HashMap<u32, (u64, Detected)>,
    detector: &mut Detector,
    requests: &mut Vec<BpfRequest>,
    register: bool,
    process: &Process,
) -> Option<&'a Detected> {
    let known = pythons.get(&process.pid).is_some_and(|(g, _)| *g == process.generation);
    if !known {
        let was_python = matches!(pythons.get(&process.pid), Some((_, Detected::Python(_))));
        let detected = detector.detect(process);
        match &detected {
            Detected::Python(interp) if register => {
                log::debug!("pid {}: CPython {} (runtime at {:?})", process.pid, interp.version, interp.runtime);
                requests.push(BpfRequest::Python(process.pid, Some(abi::PyProc::from(&interp.config()))));
            }
            Detected::Python(_) => {}
            _ if was_python && register => requests.push(BpfRequest::Python(process.pid, None)),
            _ => {}
        }
        pythons.insert(process.pid, (process.generation, detected));
    }
    pythons.get(&process.pid).map(|(_, d)| d)
}

fn count_python_status(counters: &Counters, status: PyStatus, has_frames: bool) {
    if has_frames {
        counters.incr(Counter::PythonSamples);
    }
    match status {
        PyStatus::NoThread => counters.incr(Counter::PythonNoThread),
        PyStatus::NoFrame => counters.incr(Counter::PythonNoFrame),
        PyStatus::ReadFailed => counters.incr(Counter::PythonReadFailed),
        PyStatus::Cut => counters.incr(Counter::PythonCut),
        PyStatus::None | PyStatus::Ok => {}
    }
}

/// The frame id of a native frame of `process`: in a mapping, or not.
fn native_frame(aggregate: &mut Aggregate, perf_maps: &mut PerfMapFiles, process: &Process, addr: Avma) -> u32 {
    let pid = process.pid;
    match process.mapping(addr) {
        Some(m) => {
            let file = m.file.as_ref().map_or((0, 0), |f| (f.key.dev, f.key.inode));
            let mapping = aggregate.mapping(pid, m.range.start, file, || snapshot_mapping(m));
            aggregate.frame(FrameKey::User { mapping, addr }, |_| {
                let (kind, request) = request_for(m, addr, pid, perf_maps);
                (Some(mapping), kind, request)
            })
        }
        None => aggregate.frame(FrameKey::Unmapped { addr }, |_| {
            (None, FrameKind::Marker, SymRequest::Fixed(symbolize::marker(UNKNOWN)))
        }),
    }
}

/// The frame id of a Python frame: its code object's name, file, and the line of its
/// instruction.
fn python_frame(
    aggregate: &mut Aggregate,
    codes: &mut CodeCache,
    counters: &Counters,
    process: &Process,
    interp: &Interpreter,
    f: PyFrame,
) -> u32 {
    let o = &interp.offsets;
    match codes.get(process.pid, process.generation, o, Avma(f.code), interp.code_type) {
        Ok(code) => {
            let unit = match (f.instr, o.frame_layout) {
                (NO_INSTR, _) => None,
                (i, FrameLayout::Objects { lasti_in_bytes: true }) => Some(i / 2),
                (i, _) => Some(i),
            };
            let line = code.lines.line(unit);
            aggregate.python_frame(&interp.version, &code.qualname, &code.filename, line)
        }
        Err(e) => {
            log::debug!("pid {}: code object {:#x}: {e}", process.pid, f.code);
            counters.incr(Counter::PythonCodeErrors);
            aggregate.marker(PYTHON_UNREADABLE)
        }
    }
}

fn snapshot_mapping(m: &Mapping) -> SnapshotMapping {
    SnapshotMapping {
        start: m.range.start,
        limit: m.range.end,
        offset: m.range.offset,
        path: m.path.clone(),
        file_id: m.file.as_ref().map(|f| f.file_id().to_string()).unwrap_or_default(),
        is_kernel: false,
        file: m.file.clone(),
    }
}

/// What a frame at `addr` in mapping `m` is, and what naming it will take.
fn request_for(m: &Mapping, addr: Avma, pid: u32, perf_maps: &mut PerfMapFiles) -> (FrameKind, SymRequest) {
    match (&m.kind, &m.file) {
        (MapKind::File | MapKind::Vdso, Some(f)) => (
            FrameKind::Native,
            SymRequest::File { file: f.clone(), offset: m.file_offset(addr), on_disk: m.kind == MapKind::File },
        ),
        // JIT code lives in anonymous executable memory; its names are in the perf map,
        // opened here while the process lives and read when the period closes.
        (MapKind::Anon, _) => {
            let fallback = symbolize::marker(if m.path.is_empty() { "[anon]" } else { &m.path });
            (FrameKind::Jit, SymRequest::Jit { map: perf_maps.get(pid), addr, fallback })
        }
        // A file that could not be opened or parsed (counted in elf_errors): its path.
        _ => (FrameKind::Native, SymRequest::Fixed(symbolize::marker(&m.path))),
    }
}

/// The drain thread's loop: wait for records (the BPF side wakes us at ~1 MiB pending, or
/// the timer does), ingest them, answer commands. After `Stop` (or when the handle is gone)
/// the sampler is dropped at once (detaching the program), and snapshots of what was
/// collected are served until the handle goes away.
pub fn drain_loop(
    mut sampler: Sampler,
    rx: Receiver<Command>,
    sym: Sender<SymJob>,
    counters: Arc<Counters>,
    python: bool,
    off_cpu_rate: Option<f64>,
    budget: MemoryBudget,
) {
    let mut drain = Drain::new(counters.clone(), python, off_cpu_rate);
    let mut shed_policy = ShedPolicy::new(budget);
    let mut shed_logged = false;
    // At a period's end, before the symbolization burst: over the budget, shed (see `memory`).
    let mut shed_now = |drain: &mut Drain| {
        let Some(resident) = memory::resident_bytes() else { return false };
        counters.set(Counter::ResidentBytes, resident);
        if !shed_policy.should_shed(resident) {
            return false;
        }
        counters.incr(Counter::MemorySheds);
        let msg = format!(
            "resident memory {} MiB is over 7/8 of the memory budget ({} MiB): caches dropped and rebuilt as needed (memory_sheds)",
            resident >> 20,
            budget.bytes >> 20
        );
        if shed_logged {
            log::debug!("{msg}");
        } else {
            log::warn!("{msg}; raise --memory-budget if memory_sheds keeps growing");
            shed_logged = true;
        }
        drain.shed();
        true
    };
    // The BPF counters are one syscall each to read: once a second, and at every snapshot.
    let mut counters_read = Instant::now();
    let mut ingest_all = |sampler: &mut Sampler, drain: &mut Drain, exact: bool| {
        sampler.drain(|bytes| drain.ingest(bytes));
        for request in drain.requests.drain(..) {
            match request {
                BpfRequest::FpChain(pid) => sampler.want_fp_chain(pid),
                BpfRequest::Python(pid, cfg) => sampler.want_python(pid, cfg.as_ref()),
                BpfRequest::Go(pid, cfg) => sampler.want_go(pid, cfg.as_ref()),
            }
        }
        if exact || counters_read.elapsed() >= COUNTERS_INTERVAL {
            sampler.copy_counters(&counters);
            drain.unwinder.release_touched();
            counters_read = Instant::now();
        }
        drain.publish_gauges();
    };
    loop {
        sampler.wait(sampler.interval_ms);
        ingest_all(&mut sampler, &mut drain, false);
        match rx.recv_timeout(Duration::ZERO) {
            Ok(Command::Snapshot { reset, reply }) => {
                ingest_all(&mut sampler, &mut drain, true);
                let shed = reset && shed_now(&mut drain);
                let _ = sym.send(SymJob { aggregate: drain.close_period(reset), reply, shed });
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    ingest_all(&mut sampler, &mut drain, true);
    // Detach the program and free the maps now, not when the handle goes away.
    drop(sampler);
    drain.flush_off_cpu();
    while let Ok(cmd) = rx.recv() {
        if let Command::Snapshot { reset, reply } = cmd {
            let _ = sym.send(SymJob { aggregate: drain.close_period(reset), reply, shed: false });
        }
    }
}
