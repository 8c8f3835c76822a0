//! Unwinding: a user stack snapshot into the addresses of its frames.
//!
//! - this module: the walk, frame by frame, and how it ended ([`Outcome`]);
//! - `regs`: the register state of a frame (which registers are known);
//! - `cfi`: DWARF CFI rows of a file (`.eh_frame`, `.debug_frame`, the debug file's);
//! - `eval`: evaluating a row, any register and DWARF expression (gimli);
//! - `entry`: the thread and process entry points a complete stack ends at;
//!
//! - `go`: Go code's frames from `.gopclntab` and the runtime's stack switches;
//! - `go_runtime`: what the sampler reads of a Go runtime to copy a thread's other stack.
//!
//! Why our own walk on gimli rather than framehop: see `eval`. Each frame is unwound by the
//! first of: a known shape (`known_code`: CPython's perf trampolines), Go's own tables (exact
//! at every instruction, also when stripped), the file's CFI, and for code in no file (JIT
//! code) the frame pointer. A frame none of these can unwind ends the walk with a reason;
//! nothing is guessed. Go's stack switches end a walk too ([`Outcome::StackSwitch`]): the
//! drain joins the other stack's frames where the sample holds them (`go::join_cgo`).
//!
//! Input: a process (from `process`), the user registers (`arch::UserRegs`) and the stack
//! bytes copied from sp. Output: addresses in the process (AVMAs), leaf first, each already
//! a lookup address (return addresses minus one, so that they fall inside the call
//! instruction; the interrupted pc of a signal frame's caller as is), and how the walk
//! ended ([`Outcome`], each a counter and, unless complete, a marker frame). Non-goals:
//! mapping addresses to files or symbols, depth limits (the aggregate keeps both ends).
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use crate::addr::Avma;
pub use crate::arch::KnownRule;
use crate::arch::{self, UserRegs};
use crate::counters::Counter;
use crate::elf::ElfFile;
use crate::process::{Mapping, Process, Registry};

pub mod cfi;
pub mod entry;
pub mod eval;
pub mod go;
pub mod go_runtime;
pub mod heuristic;
pub mod regs;

use cfi::{Cfa, FileCfi, Lookup, Row, Rule};
use go::{Code, GoFrame, GoFrameCache, GoFramesCache, StackSwitch};
use entry::EntryPoints;
use eval::StepError;
use regs::Regs;

/// The most frames one walk returns: a full snapshot of return addresses alone.
pub const MAX_WALK_FRAMES: usize = crate::sampler::abi::MAX_USTACK_BYTES as usize / 8 + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached a thread or process entry point (or a frame whose CFI ends the stack).
    Complete,
    /// Needed stack memory beyond the snapshot: the snapshot size cut the stack.
    Truncated,
    /// Needed stack memory that was not in the snapshot although the snapshot was not cut
    /// (another stack: a sigaltstack handler's interrupted code, a runtime's stack switch).
    BadStackRead,
    /// The walk stopped making progress or went backwards.
    Stuck,
    /// Deeper than the walk's own bound.
    TooDeep,
    /// Code with no CFI and no known shape.
    NoUnwindInfo,
    /// A return address in no mapping.
    UnknownAddress,
    /// Code in a file the profiler was not allowed to open (a missing capability).
    NoAccess,
    /// The CFI needed a register the callee did not preserve.
    LostRegister,
    /// The CFI could not be parsed or evaluated.
    BadCfi,
    /// The walk ended (a null return address) outside a known entry point.
    NoEntryPoint,
    /// Go code switched stacks here (runtime.asmcgocall, systemstack, morestack, gogo): the
    /// rest of the stack is on another stack.
    StackSwitch,
}

impl Outcome {
    pub fn counter(self) -> Counter {
        match self {
            Outcome::Complete => Counter::UnwindComplete,
            Outcome::Truncated | Outcome::TooDeep => Counter::UnwindTruncated,
            Outcome::BadStackRead => Counter::UnwindBadStackRead,
            Outcome::Stuck => Counter::UnwindStuck,
            Outcome::NoUnwindInfo => Counter::UnwindNoUnwindInfo,
            Outcome::UnknownAddress => Counter::UnwindUnknownAddress,
            Outcome::NoAccess => Counter::UnwindNoAccess,
            Outcome::LostRegister => Counter::UnwindLostRegister,
            Outcome::BadCfi => Counter::UnwindBadCfi,
            Outcome::NoEntryPoint => Counter::UnwindNoEntryPoint,
            Outcome::StackSwitch => Counter::UnwindBadStackRead,
        }
    }

    /// The marker frame a stack that ended this way carries last (`None`: complete).
    pub fn marker(self) -> Option<&'static str> {
        Some(match self {
            Outcome::Complete => return None,
            Outcome::Truncated | Outcome::TooDeep => TRUNCATED,
            Outcome::BadStackRead => "[unwind failed: stack memory not captured]",
            Outcome::Stuck => "[unwind failed: stuck]",
            Outcome::NoUnwindInfo => "[unwind failed: no unwind info]",
            Outcome::UnknownAddress => "[unwind failed: unknown address]",
            Outcome::NoAccess => "[unwind failed: no access to the file]",
            Outcome::LostRegister => "[unwind failed: register not saved]",
            Outcome::BadCfi => "[unwind failed: bad CFI]",
            Outcome::NoEntryPoint => "[unwind failed: no entry point]",
            Outcome::StackSwitch => "[unwind failed: stack switch]",
        })
    }
}

/// The user stack as the sampler copied it.
pub struct StackSnapshot<'a> {
    pub bytes: &'a [u8],
    /// The address of `bytes[0]`: at or below sp (the red zone is part of it).
    pub base: u64,
    /// The copy stopped at its size limit, not at the end of the stack.
    pub cut: bool,
}

/// The marker of frames a joined stack could not recover in its middle (a cgo callback's C
/// frames, on a stack the sample did not copy).
pub const GAP: &str = "[frames not captured]";

/// The marker of a stack cut short of its root (the snapshot size, a depth limit).
pub const TRUNCATED: &str = "[truncated]";

/// What the walk derives from one file, built on its first frame.
struct FileTables {
    /// Distinguishes files in the rule cache (a file's tables are rebuilt under a new id).
    id: u32,
    file: Weak<ElfFile>,
    cfi: FileCfi,
    entries: OnceLock<EntryPoints>,
}

impl FileTables {
    fn is_entry(&self, file: &ElfFile, svma: u64) -> bool {
        self.entries
            .get_or_init(|| {
                let stripped = file.symbols.source() < crate::elf::SymbolSource::SymbolTable;
                let debug = file.debug_file().filter(|_| stripped);
                let e = EntryPoints::of_releasing(file.bytes(), debug.as_ref().map(|d| d.bytes()), &mut || file.release_pages());
                file.release_pages(); // the symbol tables, read once: not resident from now on
                e
            })
            .contains(svma)
    }
}

/// A row found for an address, or that none covers it, or that its CFI is bad.
#[derive(Clone)]
enum Cached {
    Row(Row),
    /// No CFI: a row from prologue analysis (`heuristic`); `sure` as it says.
    Guessed { row: Row, sure: bool },
    Uncovered,
    Bad,
}

/// Rows by (file id, SVMA), direct-mapped: a hot loop's few addresses stay, the cost of a
/// miss is one FDE parse.
struct RuleCache {
    slots: Vec<Option<(u32, u64, Cached)>>,
}

const RULE_CACHE_SLOTS: usize = 4096;

impl RuleCache {
    fn new() -> Self {
        RuleCache { slots: vec![None; RULE_CACHE_SLOTS] }
    }

    fn slot(id: u32, svma: u64) -> usize {
        let h = svma.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(id).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        (h >> 52) as usize % RULE_CACHE_SLOTS
    }
}

pub struct StackUnwinder {
    files: HashMap<usize, FileTables>,
    next_file_id: u32,
    rules: RuleCache,
    ctx: Box<gimli::UnwindContext<usize>>,
    go_files: GoFramesCache,
    go_frames: GoFrameCache,
    /// The CFA of each frame of the last walk (its caller's sp); `u64::MAX` for the last
    /// frame, which was not unwound.
    cfas: Vec<u64>,
    /// The last walk went through a Go stack switch (a cgo callback) on its way.
    crossed_switch: bool,
    /// Frames unwound by prologue analysis, since the last [`Self::take_guessed_frames`].
    guessed_frames: u64,
    /// Files whose pages a walk read (a rule cache miss, a Go table lookup) since the last
    /// [`Self::release_touched`].
    touched: HashMap<usize, Weak<ElfFile>>,
}

impl Default for StackUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

/// How one frame was unwound.
// Regs is 136 bytes on x86_64, 272 on aarch64: a value that lives for one step, on the
// stack; boxing it would allocate once per frame.
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The caller's registers; `exact`: its ip is an interrupted pc, not a return address.
    Caller { regs: Regs, exact: bool },
    /// The caller's registers, whose ip the Go runtime saved (`g.sched.pc`, which
    /// runtime.cgocallback made its frame's return address): a pc between a function's
    /// prologue and epilogue, or before Go 1.21 runtime.systemstack_switch's entry, which a
    /// return address minus one would put in the function before it. Go's traceback looks
    /// a pc at an entry up as it is, so does the walk.
    SavedPc { regs: Regs },
    /// The frame is the outermost.
    End,
}

impl StackUnwinder {
    pub fn new() -> Self {
        StackUnwinder {
            files: HashMap::new(),
            next_file_id: 0,
            rules: RuleCache::new(),
            ctx: Box::new(gimli::UnwindContext::new()),
            go_files: GoFramesCache::default(),
            go_frames: GoFrameCache::new(4096),
            cfas: Vec::new(),
            crossed_switch: false,
            guessed_frames: 0,
            touched: HashMap::new(),
        }
    }

    /// Walks the stack, at most [`MAX_WALK_FRAMES`] deep; pushes lookup addresses into
    /// `out` (cleared first). `known_code` gives the rule of code that has no CFI but whose
    /// shape is known (CPython's perf trampolines, see `cpython::trampoline`): asked for
    /// each address in memory no file backs.
    pub fn unwind(
        &mut self,
        process: &Process,
        regs: UserRegs,
        stack: &StackSnapshot<'_>,
        known_code: &mut dyn FnMut(Avma, bool) -> Option<KnownRule>,
        out: &mut Vec<Avma>,
    ) -> Outcome {
        self.walk(process, Regs::sampled(&regs), stack, known_code, out)
    }

    /// Walks another stack of the sampled thread (a Go program's other stack, copied by the
    /// sampler as the Go window) from a frame known by its pc, sp and maybe frame pointer
    /// only: a saved state (`g.sched`) or a frame whose pc the first walk found (cgocallback,
    /// whose frames on both stacks run the same instruction). `ip` is looked up as it is,
    /// as a sampled pc is. Same output as [`Self::unwind`], and the same [`Self::cfas`] (the
    /// first walk's are replaced).
    pub fn unwind_from(
        &mut self,
        process: &Process,
        ip: u64,
        sp: u64,
        fp: Option<u64>,
        stack: &StackSnapshot<'_>,
        out: &mut Vec<Avma>,
    ) -> Outcome {
        self.walk(process, Regs::partial(ip, sp, fp), stack, &mut |_, _| None, out)
    }

    /// The Go frame table of `file` (None when it has none), built on first ask and kept.
    pub fn go_frames(&mut self, file: &Arc<ElfFile>) -> Option<Arc<go::GoFrames>> {
        self.go_files.get(file)
    }

    fn walk(
        &mut self,
        process: &Process,
        mut r: Regs,
        stack: &StackSnapshot<'_>,
        known_code: &mut dyn FnMut(Avma, bool) -> Option<KnownRule>,
        out: &mut Vec<Avma>,
    ) -> Outcome {
        out.clear();
        self.cfas.clear();
        self.crossed_switch = false;
        let stack_end = stack.base.saturating_add(stack.bytes.len() as u64);
        let mut read = |addr: u64| -> Option<u64> {
            let off = usize::try_from(addr.checked_sub(stack.base)?).ok()?;
            let b: [u8; 8] = stack.bytes.get(off..off.checked_add(8)?)?.try_into().ok()?;
            Some(u64::from_ne_bytes(b))
        };
        let memory_outcome = |addr: u64| {
            if addr >= stack_end && stack.cut {
                Outcome::Truncated
            } else {
                Outcome::BadStackRead
            }
        };
        // The lookup address of the current frame: its pc, or its return address minus one.
        let mut lookup = r.ip();
        out.push(Avma(lookup));
        let mut first = true;
        let outcome = loop {
            // Unknown until the frame is unwound (the last frame of a walk keeps it so).
            self.cfas.push(u64::MAX);
            let addr = Avma(lookup);
            let mapping = process.mapping(addr);
            let next = match mapping {
                Some(m) if m.file.is_some() => self.file_frame(process, m, addr, &r, first, &mut read),
                Some(m) if m.denied => break Outcome::NoAccess,
                Some(_) => match known_code(addr, first) {
                    Some(rule) => apply_known_rule(&rule, &r, &mut read),
                    None => frame_pointer_step(&r, &mut read),
                },
                None => {
                    if !first {
                        // A return address that points nowhere: not a frame to show.
                        out.pop();
                    }
                    break Outcome::UnknownAddress;
                }
            };
            let next = match next {
                Ok(n) => n,
                Err(e) => {
                    break match e {
                        FrameError::Step(StepError::Memory(a)) => memory_outcome(a),
                        FrameError::Step(StepError::LostRegister) => Outcome::LostRegister,
                        FrameError::Step(StepError::BadCfi) => Outcome::BadCfi,
                        FrameError::NoRule => Outcome::NoUnwindInfo,
                        FrameError::Switch => Outcome::StackSwitch,
                    };
                }
            };
            let (caller, exact, saved_pc) = match next {
                Next::End => break Outcome::Complete,
                Next::Caller { regs, exact } => (regs, exact, false),
                Next::SavedPc { regs } => (regs, false, true),
            };
            if exact && !first {
                // A signal trampoline, entered by a return address at its first byte (its
                // FDE starts one byte early so that the address minus one finds it): shown
                // at that address, where its symbol is.
                if let Some(last) = out.last_mut() {
                    *last = Avma(lookup.wrapping_add(1));
                }
            }
            let ip = caller.ip();
            if ip == 0 {
                // Some entry points push a null return address instead of marking their CFI.
                break Outcome::NoEntryPoint;
            }
            // The stack grows down: a caller's frame is above its callee's, except across a
            // signal frame, whose interrupted code may be on another stack.
            if !exact && (caller.sp() < r.sp() || (caller.sp() == r.sp() && ip == r.ip())) {
                break Outcome::Stuck;
            }
            if out.len() >= MAX_WALK_FRAMES {
                break Outcome::TooDeep;
            }
            lookup = if exact || (saved_pc && self.is_go_func_entry(process, ip)) { ip } else { ip.wrapping_sub(1) };
            out.push(Avma(lookup));
            if let Some(cfa) = self.cfas.last_mut() {
                *cfa = caller.sp();
            }
            r = caller;
            first = exact;
        };
        // The frame popped for an unknown return address takes its CFA along.
        self.cfas.truncate(out.len());
        // A walk that stops at a thread or process entry point is complete however it
        // stopped (musl's `__clone` and `start` have no CFI; `_start`s leave junk above).
        match out.last() {
            Some(&last) if outcome != Outcome::Complete && process.mapping(last).is_some_and(|m| self.is_entry(m, last)) => {
                Outcome::Complete
            }
            _ => outcome,
        }
    }

    /// The CFA of each frame of the last walk, in the order of its addresses (`u64::MAX`:
    /// not unwound).
    pub fn cfas(&self) -> &[u64] {
        &self.cfas
    }

    /// Frames unwound by prologue analysis since the last call (for `unwind_heuristic`).
    pub fn take_guessed_frames(&mut self) -> u64 {
        std::mem::take(&mut self.guessed_frames)
    }

    /// Whether the last walk went through a cgo callback (C calling Go): its C frames are on
    /// another stack, which `go::join_cgo` marks.
    pub fn crossed_switch(&self) -> bool {
        self.crossed_switch
    }

    /// What the code at `addr` of `process` is, as Go's tables say (for `go::join_cgo`).
    pub fn go_code(&mut self, process: &Process, addr: Avma) -> Code {
        let Some(m) = process.mapping(addr) else { return Code::Other };
        let Some(file) = &m.file else { return Code::Other };
        match self.go_files.get(file) {
            Some(frames) => frames.code(m.bias.svma(addr).0),
            None => Code::Other,
        }
    }

    /// Whether `addr` is the first instruction of a Go function.
    fn is_go_func_entry(&mut self, process: &Process, addr: u64) -> bool {
        let Some(m) = process.mapping(Avma(addr)) else { return false };
        let Some(file) = &m.file else { return false };
        let svma = m.bias.svma(Avma(addr)).0;
        let Some(frames) = self.go_files.get(file) else { return false };
        frames.func_entry(svma) == Some(svma)
    }

    /// Whether `addr` (in `m`) is inside a known entry point of its file.
    fn is_entry(&mut self, m: &Mapping, addr: Avma) -> bool {
        let Some(file) = &m.file else { return false };
        let svma = m.bias.svma(addr).0;
        self.tables(file).is_entry(file, svma)
    }

    fn tables(&mut self, file: &Arc<ElfFile>) -> &FileTables {
        let key = Arc::as_ptr(file) as usize;
        let stale = self.files.get(&key).is_some_and(|t| t.file.upgrade().is_none_or(|f| !Arc::ptr_eq(&f, file)));
        if stale || !self.files.contains_key(&key) {
            let id = self.next_file_id;
            self.next_file_id = self.next_file_id.wrapping_add(1);
            let t = FileTables { id, file: Arc::downgrade(file), cfi: FileCfi::new(file), entries: OnceLock::new() };
            self.files.insert(key, t);
        }
        &self.files[&key]
    }

    /// One frame of code in a file: its CFI.
    fn file_frame(
        &mut self,
        process: &Process,
        m: &Mapping,
        addr: Avma,
        r: &Regs,
        first: bool,
        read: &mut dyn FnMut(u64) -> Option<u64>,
    ) -> Result<Next, FrameError> {
        let Some(file) = &m.file else { return Err(FrameError::NoRule) };
        let svma = m.bias.svma(addr).0;
        if cfg!(target_arch = "x86_64") && file.symbols.has_gopclntab {
            self.touched.entry(Arc::as_ptr(file) as usize).or_insert_with(|| Arc::downgrade(file));
            if let Some(frames) = self.go_files.get(file) {
                if let Some(f) = self.go_frames.frame(&frames, svma) {
                    self.crossed_switch |= f.stack_switch == Some(StackSwitch::CgoCallback);
                    return go_step(&f, r, read);
                }
            }
        }
        let id = self.tables(file).id;
        let slot = RuleCache::slot(id, svma);
        let hit = matches!(&self.rules.slots[slot], Some((i, s, _)) if *i == id && *s == svma);
        if !hit {
            let key = Arc::as_ptr(file) as usize;
            self.touched.entry(key).or_insert_with(|| Arc::downgrade(file));
            let cached = match self.files.get(&key).map(|t| t.cfi.lookup(svma, &mut self.ctx)) {
                Some(Ok(Lookup::Row(row))) => Cached::Row(row),
                Some(Ok(Lookup::Uncovered)) | None => guess(file, svma, first),
                Some(Err(e)) => {
                    log::debug!("{}: CFI at {svma:#x}: {e}", m.path);
                    Cached::Bad
                }
            };
            self.rules.slots[slot] = Some((id, svma, cached));
        }
        match &self.rules.slots[slot] {
            Some((_, _, Cached::Row(row))) => {
                let step = eval::step(row, r, read).map_err(FrameError::Step)?;
                Ok(match step.ra {
                    None => Next::End,
                    Some(_) => Next::Caller { regs: step.regs, exact: row.signal },
                })
            }
            Some((_, _, Cached::Guessed { row, sure })) => {
                let sure = *sure;
                let step = eval::step(row, r, read).map_err(FrameError::Step)?;
                let Some(ra) = step.ra else { return Err(FrameError::NoRule) };
                // A guess stands only if what it found is a return address.
                if !sure && !process_follows_call(process, ra) {
                    return Err(FrameError::NoRule);
                }
                self.guessed_frames += 1;
                Ok(Next::Caller { regs: step.regs, exact: false })
            }
            Some((_, _, Cached::Bad)) => Err(FrameError::Step(StepError::BadCfi)),
            _ => Err(FrameError::NoRule),
        }
    }

    /// Drops this process's hold on the pages the walks read since the last call (see
    /// `ElfFile::release_pages`): a Go compiler's tables or a large library's CFI, read while
    /// a period's samples are unwound, would otherwise stay resident until the period's
    /// symbolization releases them (13 MiB for Go's `compile` on a build host).
    pub fn release_touched(&mut self) {
        for file in self.touched.drain().filter_map(|(_, f)| f.upgrade()) {
            file.release_pages();
        }
    }

    /// Drops every file's tables, rules and Go tables (the memory budget was exceeded): the
    /// next frames in each file build them again.
    pub fn shed(&mut self) {
        self.files = HashMap::new();
        self.rules = RuleCache::new();
        self.go_files = GoFramesCache::default();
        self.go_frames = GoFrameCache::new(4096);
    }

    /// Drops what was derived from files no process maps any more.
    pub fn forget_stale(&mut self, _registry: &Registry) {
        self.files.retain(|_, t| t.file.strong_count() > 0);
        self.go_files.forget_dropped();
    }
}

/// Why a frame could not be unwound.
#[derive(Debug)]
enum FrameError {
    Step(StepError),
    /// No rule covers the address.
    NoRule,
    /// Go code that switches stacks: its caller is on another stack.
    Switch,
}

/// One frame of Go code on amd64 (see `go`'s module doc): the return address at `sp +
/// sp_delta`, the caller's sp above it, the caller's rbp below it when the function saved it.
fn go_step(f: &GoFrame, r: &Regs, read: &mut dyn FnMut(u64) -> Option<u64>) -> Result<Next, FrameError> {
    if f.is_entry_point {
        return Ok(Next::End);
    }
    match f.stack_switch {
        Some(StackSwitch::Mcall) => return Ok(Next::End),
        Some(StackSwitch::AsmCgoCall | StackSwitch::SystemStack | StackSwitch::Morestack | StackSwitch::Gogo) => {
            return Err(FrameError::Switch)
        }
        _ => {}
    }
    let sp = r.get(arch::REG_SP).ok_or(FrameError::Step(StepError::LostRegister))?;
    let mem = |read: &mut dyn FnMut(u64) -> Option<u64>, a: u64| read(a).ok_or(FrameError::Step(StepError::Memory(a)));
    let ra_at = sp.wrapping_add(u64::from(f.sp_delta));
    let ra = mem(read, ra_at)?;
    let cfa = ra_at.wrapping_add(8);
    let mut caller = r.across_call();
    caller.set(arch::REG_SP, cfa);
    if f.has_fp {
        caller.set(arch::REG_FP, mem(read, cfa.wrapping_sub(arch::FP_SLOT))?);
    } else if let Some(fp) = r.get(arch::REG_FP) {
        // Go code that did not save rbp has not changed it.
        caller.set(arch::REG_FP, fp);
    }
    caller.set(arch::REG_IP, ra);
    if f.stack_switch == Some(StackSwitch::CgoCallback) {
        return Ok(Next::SavedPc { regs: caller });
    }
    Ok(Next::Caller { regs: caller, exact: false })
}

/// The rule prologue analysis finds at `svma` of `file` (code no CFI covers), as a CFI row;
/// `first`: the sampled frame (else `svma` is a return address minus one).
fn guess(file: &ElfFile, svma: u64, first: bool) -> Cached {
    let pc = if first { svma } else { svma.wrapping_add(1) };
    let Some(h) = heuristic::rule_in_file(file, crate::addr::Svma(pc), first) else { return Cached::Uncovered };
    let cfa = match h.cfa {
        heuristic::CfaRule::SpOffset(n) => Cfa::Reg { reg: arch::REG_SP, offset: n },
        heuristic::CfaRule::BpOffset(n) => Cfa::Reg { reg: arch::REG_FP, offset: n },
    };
    let mut rules = vec![(arch::RA_COLUMN, Rule::Offset(h.ra_offset_from_cfa))];
    match h.rbp {
        heuristic::RbpRule::Unchanged => {}
        heuristic::RbpRule::SavedAt(off) => rules.push((arch::REG_FP, Rule::Offset(off))),
        heuristic::RbpRule::Unknown => rules.push((arch::REG_FP, Rule::Undefined)),
    }
    let encoding = gimli::Encoding { address_size: 8, format: gimli::Format::Dwarf32, version: 1 };
    let row = Row { cfa, rules: rules.into_boxed_slice(), ra_column: arch::RA_COLUMN, signal: false, encoding };
    Cached::Guessed { row, sure: h.sure }
}

/// Whether `ra` is right after a call instruction in the file that maps it.
fn process_follows_call(process: &Process, ra: u64) -> bool {
    let Some(m) = process.mapping(Avma(ra)) else { return false };
    let Some(file) = &m.file else { return false };
    let svma = m.bias.svma(Avma(ra)).0;
    let len = svma.min(15);
    file.svma_bytes(crate::addr::Svma(svma - len), len).is_some_and(|b| heuristic::follows_call(b, ra))
}

/// Applies a known-shape rule (see [`KnownRule`]).
fn apply_known_rule(rule: &KnownRule, r: &Regs, read: &mut dyn FnMut(u64) -> Option<u64>) -> Result<Next, FrameError> {
    let sp = r.get(arch::REG_SP).ok_or(FrameError::Step(StepError::LostRegister))?;
    let at = |off: u64| sp.wrapping_add(off);
    let mem = |read: &mut dyn FnMut(u64) -> Option<u64>, a: u64| read(a).ok_or(FrameError::Step(StepError::Memory(a)));
    let ra = mem(read, at(rule.ra_at))?;
    let mut caller = r.across_call();
    if let Some(fp) = rule.fp_at {
        caller.set(arch::REG_FP, mem(read, at(fp))?);
    }
    caller.set(arch::REG_SP, at(rule.cfa_offset));
    caller.set(arch::REG_IP, arch::strip_return_address(ra));
    Ok(Next::Caller { regs: caller, exact: false })
}

/// Code in no file (JIT code): its frame pointer, which JITs keep (V8, HotSpot with
/// -XX:+PreserveFramePointer, .NET), is the only record of its frame.
fn frame_pointer_step(r: &Regs, read: &mut dyn FnMut(u64) -> Option<u64>) -> Result<Next, FrameError> {
    let fp = r.get(arch::REG_FP).ok_or(FrameError::Step(StepError::LostRegister))?;
    let sp = r.sp();
    if fp < sp || fp % 8 != 0 {
        return Err(FrameError::NoRule);
    }
    let mem = |read: &mut dyn FnMut(u64) -> Option<u64>, a: u64| read(a).ok_or(FrameError::Step(StepError::Memory(a)));
    let saved_fp = mem(read, fp)?;
    let ra = mem(read, fp.wrapping_add(8))?;
    let mut caller = r.across_call();
    caller.set(arch::REG_FP, saved_fp);
    caller.set(arch::REG_SP, fp.wrapping_add(arch::FP_SLOT));
    caller.set(arch::REG_IP, arch::strip_return_address(ra));
    Ok(Next::Caller { regs: caller, exact: false })
}
