//! Prologue analysis: where the CFA and the return address are in code that has neither
//! CFI (`.eh_frame`, `.debug_frame`) nor frame pointers, found by reading the function's
//! instructions. Static musl binaries are the main case: musl's C start code
//! (`__libc_start_main`, `libc_start_main_stage2`, `_start_c`, the thread entry `start`) and
//! its assembly (`memcpy`, `memset`) have no FDE.
//!
//! Input: the bytes of one function from its start (`func_start`, an SVMA), best the whole
//! function (its symbol's size, [`crate::elf::ElfFile::function_containing`]), at least up to
//! `pc`; the pc, and whether it is the leaf frame (the pc of an instruction about to run)
//! or a caller frame (a return address: the instruction before it is a call, and the state
//! at that call is what counts). Output: a [`HeuristicRule`], the same shape as a DWARF CFI
//! row: CFA = rsp + N or CFA = rbp + N, the return address at CFA - 8, the caller's rbp
//! still in rbp or saved at CFA + M; and whether the answer is `sure`.
//!
//! How: the function is decoded linearly (iced-x86, decoder only) and its control flow
//! graph is walked from the entry (CFA = rsp + 8) with the stack effect of each
//! instruction: push/pop, `sub`/`add rsp, imm`, `lea rsp, [rsp|rbp + imm]`, `mov rbp, rsp`
//! (the CFA moves to rbp), `mov rsp, rbp`, `leave`, `enter`, `and rsp, -N` (alignment: only an
//! rbp-based CFA survives it), and stores and loads of rbp to and from the stack. Every
//! other write to rsp or rbp makes it unknown. Branches inside the function are followed,
//! so the code after a `ret` in the middle (an earlier path's epilogue) gets the state of
//! the jumps that reach it, not the linear state after the epilogue. Where two paths meet
//! with different states the differing parts become unknown; a compiler emits exactly one
//! CFA rule per address, so a disagreement means one path was misread.
//!
//! `sure` is false when the answer rests on a guess:
//! - code no direct jump reaches (jump table targets: an indirect `jmp` has no known
//!   target) gets the state of the function's indirect jumps when they all agree, else the
//!   state before the epilogue or jump that precedes it; such guesses never override what
//!   the entry's paths reached;
//! - where the fall-through after a call meets a jump with another state, the call is taken
//!   not to return (`abort`, `__stack_chk_fail`) and the jump's state wins;
//! - two paths disagreed on the way, or a jump lands inside an instruction (data in the code,
//!   or a misread).
//!
//! Non-goals: registers other than rsp and rbp (the unwinder restores no others), code
//! that moves the stack by a register amount without a frame pointer (`alloca` without
//! rbp: `None`), functions split into parts (`foo.cold` starts mid-frame: `None`), finding
//! function starts without a symbol table. aarch64: no analyzer yet ([`analyze`] returns
//! `None`): the return address stays in x30 until a prologue stores it, leaf functions
//! often never do, so an A64 analyzer must track the link register as well as sp, and it
//! needs an A64 decoder (iced-x86 is x86 only).
//!
//! Cost: one decode and one pass over the function per [`X86Function::analyze`], about
//! 27 ns per byte of function in a release build (3 us for a typical 170-byte function of
//! libc; the ignored test `heuristic_cost` measures it); the unwinder caches rules per
//! (file, pc), or keeps an [`X86Function`] to ask it for many pcs.
//!
//! Checked (tests/heuristic.rs): against `.eh_frame` at every instruction and return address
//! of libc, python3 and gcc builds at -O0 to -O3 (every sure answer agrees), and against
//! the truth of a single-stepped static musl program (every executed pc).
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::addr::Svma;
use crate::elf::ElfFile;

/// `e_machine` of the architectures this module knows.
const EM_X86_64: u16 = 62;

/// Where the canonical frame address (the caller's sp, just above the return address) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CfaRule {
    /// CFA = rsp + N.
    SpOffset(i64),
    /// CFA = rbp + N (after `mov rbp, rsp`; N is 16 after the usual `push rbp`).
    BpOffset(i64),
}

/// Where the caller's rbp is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RbpRule {
    /// Still in rbp: not saved yet, or restored.
    Unchanged,
    /// Saved in the stack at CFA + offset (negative: CFA - 16 after `push rbp`).
    SavedAt(i64),
    /// Overwritten where we could not follow it: the caller's rbp is unknown.
    Unknown,
}

/// One row of the rule table at a pc, as DWARF CFI would give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeuristicRule {
    pub cfa: CfaRule,
    /// Where the return address is, from the CFA: -8 on x86_64 (the call pushed it).
    pub ra_offset_from_cfa: i64,
    pub rbp: RbpRule,
    /// False when the answer rests on a guess (see the module's doc): the unwinder marks
    /// frames found through it.
    pub sure: bool,
}

impl HeuristicRule {
    /// N of CFA = rsp + N, when the CFA is sp-based.
    pub fn cfa_offset_from_sp(&self) -> Option<i64> {
        match self.cfa {
            CfaRule::SpOffset(n) => Some(n),
            CfaRule::BpOffset(_) => None,
        }
    }
}

/// The rule at `pc` for a function of the architecture `machine` (ELF `e_machine`); `None`
/// for architectures without an analyzer (aarch64, see the module's doc).
pub fn analyze(machine: u16, code: &[u8], func_start: u64, pc: u64, is_leaf_frame: bool) -> Option<HeuristicRule> {
    match machine {
        EM_X86_64 => analyze_x86_64(code, func_start, pc, is_leaf_frame),
        _ => None,
    }
}

/// The rule at `pc` in x86_64 code `code` that starts at `func_start` (both SVMAs).
/// `None` when the CFA at pc cannot be found (unknown stack moves, pc not on an instruction
/// of the code, a caller pc not after a call).
pub fn analyze_x86_64(code: &[u8], func_start: u64, pc: u64, is_leaf_frame: bool) -> Option<HeuristicRule> {
    X86Function::analyze(code, func_start)?.rule_at(pc, is_leaf_frame)
}

/// The rule at `pc` (an SVMA of `file`): the function from the file's symbol table (else
/// its debug file's), its bytes from the file, then [`analyze`]. A caller pc is looked up
/// at pc - 1, as a call may be the last instruction of its function.
pub fn rule_in_file(file: &ElfFile, pc: Svma, is_leaf_frame: bool) -> Option<HeuristicRule> {
    let lookup = if is_leaf_frame { pc } else { Svma(pc.0.checked_sub(1)?) };
    let f = file.function_containing(lookup).or_else(|| file.debug_file()?.function_containing(lookup))?;
    if f.split_part {
        return None;
    }
    let code = file.svma_bytes(f.start, f.size)?;
    analyze(file.machine, code, f.start.0, pc.0, is_leaf_frame)
}

/// Where the caller's rbp is, during the analysis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rbp {
    Caller,
    /// Saved at CFA + offset.
    At(i64),
    Lost,
}

/// What is known at an instruction, before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Regs {
    /// CFA - rsp.
    sp: Option<i64>,
    /// CFA - rbp, while rbp holds an address of this frame.
    bp: Option<i64>,
    rbp: Rbp,
}

impl Regs {
    const ENTRY: Regs = Regs { sp: Some(8), bp: None, rbp: Rbp::Caller };

    /// What two paths agree on.
    fn meet(self, o: Regs) -> Regs {
        Regs {
            sp: if self.sp == o.sp { self.sp } else { None },
            bp: if self.bp == o.bp { self.bp } else { None },
            rbp: if self.rbp == o.rbp { self.rbp } else { Rbp::Lost },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    regs: Regs,
    guessed: bool,
}

impl State {
    /// Two paths into one instruction: what they agree on. A compiler emits one CFA rule
    /// per address, so a disagreement means a path was misread: the result is a guess.
    fn join(self, o: State) -> State {
        State { regs: self.regs.meet(o.regs), guessed: self.guessed || o.guessed || self.regs != o.regs }
    }
}

/// The stack effect of one instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    None,
    /// rsp += d.
    SpAdd(i64),
    PushRbp,
    PopRbp,
    SpUnknown,
    /// rsp = rbp + d.
    SpFromBp(i64),
    /// rbp = rsp + d.
    BpFromSp(i64),
    BpUnknown,
    BothUnknown,
    /// [rsp + d] = rbp.
    StoreRbp(i64),
    /// rbp = [rsp + d].
    LoadRbp(i64),
    Leave,
    /// `enter size, 0`.
    Enter(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Next,
    /// Falls through when the callee returns.
    Call,
    /// Conditional: to the target or the next instruction.
    Branch(u64),
    Jump(u64),
    IndirectJump,
    /// `ret`, or the end of a path (`ud2`, `hlt`, `int3`).
    Ret,
    Stop,
}

#[derive(Clone, Copy, Debug)]
struct Insn {
    ip: u64,
    len: u8,
    effect: Effect,
    flow: Flow,
    is_call: bool,
    is_nop: bool,
}

impl Insn {
    fn end(&self) -> u64 {
        self.ip + u64::from(self.len)
    }
}

/// A decoded x86_64 function and the state at each of its instructions: analyze once,
/// ask for many pcs.
pub struct X86Function {
    insns: Vec<Insn>,
    states: Vec<Option<State>>,
    /// A jump into the middle of an instruction: the decode is suspect everywhere.
    odd: bool,
}

/// Re-visits of one instruction before the analysis gives up: each part of a state can
/// only go from unset to known to unknown, and from sure to guessed, so a few suffice.
const MAX_VISITS: u8 = 32;

impl X86Function {
    /// Decodes `code` (at `func_start`) and computes the state at each instruction. `None`
    /// when the function's paths do not settle (never seen in compiled code).
    pub fn analyze(code: &[u8], func_start: u64) -> Option<X86Function> {
        let insns = decode(code, func_start);
        let n = insns.len();
        let mut f = X86Function { insns, states: vec![None; n], odd: false };
        if n == 0 {
            return Some(f);
        }
        // Incoming states per instruction, apart: from jumps and plain fall-through
        // (`strong`), and from the fall-through after a call (`weak`), which a noreturn
        // call makes wrong.
        let mut strong: Vec<Option<State>> = vec![None; n];
        let mut weak: Vec<Option<State>> = vec![None; n];
        let mut visits = vec![0u8; n];
        let mut work = vec![0usize];
        strong[0] = Some(State { regs: Regs::ENTRY, guessed: false });
        f.states[0] = strong[0];
        // First what the entry reaches; then code it does not reach (jump table targets,
        // code after a noreturn call that only an indirect jump reaches), each run seeded
        // with a guess. Guesses never flow back into what the entry reached: a wrong one
        // would spoil right states, and a compiler gives each address one rule anyway.
        let mut frozen = vec![false; n];
        f.settle(&mut strong, &mut weak, &mut visits, &mut work, &frozen)?;
        for (frozen, state) in frozen.iter_mut().zip(&f.states) {
            *frozen = state.is_some();
        }
        let table_state = f.table_state();
        while let Some((i, seed)) = f.orphan_seed(table_state) {
            strong[i] = Some(seed);
            f.states[i] = Some(seed);
            work.push(i);
            f.settle(&mut strong, &mut weak, &mut visits, &mut work, &frozen)?;
        }
        Some(f)
    }

    fn index_of(&self, ip: u64) -> Option<usize> {
        self.insns.binary_search_by_key(&ip, |i| i.ip).ok()
    }

    fn settle(
        &mut self,
        strong: &mut [Option<State>],
        weak: &mut [Option<State>],
        visits: &mut [u8],
        work: &mut Vec<usize>,
        frozen: &[bool],
    ) -> Option<()> {
        let (start, end) = match (self.insns.first(), self.insns.last()) {
            (Some(a), Some(b)) => (a.ip, b.end()),
            _ => return Some(()),
        };
        while let Some(i) = work.pop() {
            visits[i] = visits[i].saturating_add(1);
            if visits[i] > MAX_VISITS {
                return None;
            }
            let Some(state) = self.states[i] else { continue };
            let insn = self.insns[i];
            let out = State { regs: step(state.regs, insn.effect), guessed: state.guessed };
            let mut edges: [Option<(u64, bool)>; 2] = [None, None];
            match insn.flow {
                // Padding after a call that did not return is still its fall-through.
                Flow::Next if insn.is_nop && strong[i].is_none() => edges[0] = Some((insn.end(), false)),
                Flow::Next => edges[0] = Some((insn.end(), true)),
                Flow::Call => edges[0] = Some((insn.end(), false)),
                Flow::Branch(t) => edges = [Some((insn.end(), true)), Some((t, true))],
                Flow::Jump(t) => edges[0] = Some((t, true)),
                Flow::IndirectJump | Flow::Ret | Flow::Stop => {}
            }
            for (target, is_strong) in edges.into_iter().flatten() {
                if target < start || target >= end {
                    // A tail call, or the end of the code we were given.
                    continue;
                }
                let Some(j) = self.index_of(target) else {
                    self.odd = true;
                    continue;
                };
                if frozen[j] {
                    continue;
                }
                let slot = if is_strong { &mut strong[j] } else { &mut weak[j] };
                let joined = match *slot {
                    Some(old) => old.join(out),
                    None => out,
                };
                if *slot == Some(joined) {
                    continue;
                }
                *slot = Some(joined);
                let new = combine(strong[j], weak[j]);
                if new != self.states[j] {
                    self.states[j] = new;
                    work.push(j);
                }
            }
        }
        Some(())
    }

    /// The first instruction without a state right after the end of a path that has one,
    /// and its guessed state. Where the function jumps through tables (indirect jumps that
    /// all have one state), that state: such code is most likely a table's target. Else
    /// the state before the epilogue that ends the path (code after a `ret` or a tail call
    /// in the middle of a function continues the body), or at the jump that ends it.
    fn orphan_seed(&self, table_state: Option<Regs>) -> Option<(usize, State)> {
        let i = (1..self.insns.len()).find(|&i| self.states[i].is_none() && self.states[i - 1].is_some())?;
        if let Some(regs) = table_state {
            return Some((i, State { regs, guessed: true }));
        }
        let mut from = i - 1;
        let leaves_function = match self.insns[from].flow {
            Flow::Ret | Flow::IndirectJump => true,
            Flow::Jump(t) => self.index_of(t).is_none(),
            _ => false,
        };
        if leaves_function {
            // Back over the epilogue: pops and stack releases, and the instructions without
            // a stack effect mixed in (setting the return value), up to a call or a branch.
            while from > 0 {
                let prev = self.insns[from - 1];
                let quiet = prev.effect == Effect::None || is_epilogue(prev.effect);
                if !quiet || prev.flow != Flow::Next || self.states[from - 1].is_none() {
                    break;
                }
                from -= 1;
            }
        }
        let seed = self.states[from]?;
        Some((i, State { regs: seed.regs, guessed: true }))
    }

    /// The state shared by every indirect jump the entry reaches, when there are some and
    /// they agree.
    fn table_state(&self) -> Option<Regs> {
        let mut states = self.insns.iter().zip(&self.states).filter(|(i, _)| i.flow == Flow::IndirectJump).map(|(_, s)| *s);
        let first = states.next()??;
        states.all(|s| s.is_some_and(|s| s.regs == first.regs)).then_some(first.regs)
    }

    /// The rule at `pc`: for a leaf frame the state before the instruction at pc runs; for a
    /// caller frame (pc is a return address) the state at the call before it.
    pub fn rule_at(&self, pc: u64, is_leaf_frame: bool) -> Option<HeuristicRule> {
        let i = if is_leaf_frame {
            self.index_of(pc)?
        } else {
            let i = self.insns.partition_point(|x| x.ip < pc).checked_sub(1)?;
            let call = self.insns.get(i)?;
            if call.end() != pc || !call.is_call {
                return None;
            }
            i
        };
        let state = self.states.get(i).copied().flatten()?;
        // Both can be known: state it as the compiler's CFI would. rbp pointing at the
        // caller's saved rbp is a frame pointer (CFA = rbp + 16 after `push rbp; mov rbp,
        // rsp`), which also survives stack moves we cannot follow; otherwise rbp is a
        // general register that happens to hold a stack address, and sp is the base.
        let frame_pointer = matches!((state.regs.bp, state.regs.rbp), (Some(bp), Rbp::At(at)) if at == -bp);
        let cfa = match (state.regs.bp, state.regs.sp) {
            (Some(bp), _) if frame_pointer => CfaRule::BpOffset(bp),
            (_, Some(sp)) => CfaRule::SpOffset(sp),
            (Some(bp), None) => CfaRule::BpOffset(bp),
            (None, None) => return None,
        };
        let rbp = match state.regs.rbp {
            Rbp::Caller => RbpRule::Unchanged,
            Rbp::At(off) => RbpRule::SavedAt(off),
            Rbp::Lost => RbpRule::Unknown,
        };
        Some(HeuristicRule { cfa, ra_offset_from_cfa: -8, rbp, sure: !state.guessed && !self.odd })
    }
}

/// The state of an instruction from its incoming paths: the strong ones win over the
/// fall-through after a call when they disagree (the call did not return).
fn combine(strong: Option<State>, weak: Option<State>) -> Option<State> {
    match (strong, weak) {
        (Some(s), Some(w)) => Some(State { regs: s.regs, guessed: s.guessed || w.guessed || s.regs != w.regs }),
        (s, w) => s.or(w),
    }
}

fn is_epilogue(e: Effect) -> bool {
    matches!(e, Effect::SpAdd(d) if d > 0) || matches!(e, Effect::PopRbp | Effect::Leave | Effect::SpFromBp(_))
}

/// The state after an instruction with effect `e` runs in state `r`.
fn step(r: Regs, e: Effect) -> Regs {
    // Where rsp + d is, as an offset from the CFA.
    let slot = |d: i64| r.sp.map(|s| d - s);
    let overwrite_rbp = |rbp: Rbp| if rbp == Rbp::Caller { Rbp::Lost } else { rbp };
    match e {
        Effect::None => r,
        Effect::SpAdd(d) => Regs { sp: r.sp.map(|s| s - d), ..r },
        Effect::PushRbp => {
            let sp = r.sp.map(|s| s + 8);
            let rbp = match (r.rbp, sp) {
                (Rbp::Caller, Some(s)) => Rbp::At(-s),
                (rbp, _) => rbp,
            };
            Regs { sp, rbp, ..r }
        }
        Effect::PopRbp => Regs { sp: r.sp.map(|s| s - 8), bp: None, rbp: load_rbp(r.rbp, slot(0)) },
        Effect::SpUnknown => Regs { sp: None, ..r },
        Effect::SpFromBp(d) => Regs { sp: r.bp.map(|b| b - d), ..r },
        Effect::BpFromSp(d) => Regs { bp: r.sp.map(|s| s - d), rbp: overwrite_rbp(r.rbp), ..r },
        Effect::BpUnknown => Regs { bp: None, rbp: overwrite_rbp(r.rbp), ..r },
        Effect::BothUnknown => Regs { sp: None, bp: None, rbp: overwrite_rbp(r.rbp) },
        Effect::StoreRbp(d) => match (r.rbp, slot(d)) {
            (Rbp::Caller, Some(at)) => Regs { rbp: Rbp::At(at), ..r },
            _ => r,
        },
        Effect::LoadRbp(d) => Regs { bp: None, rbp: load_rbp(r.rbp, slot(d)), ..r },
        // mov rsp, rbp; pop rbp.
        Effect::Leave => Regs { sp: r.bp.map(|b| b - 8), bp: None, rbp: load_rbp(r.rbp, r.bp.map(|b| -b)) },
        Effect::Enter(size) => {
            let r = step(r, Effect::PushRbp);
            let r = step(r, Effect::BpFromSp(0));
            step(r, Effect::SpAdd(-size))
        }
    }
}

/// Where the caller's rbp is after rbp is loaded from the stack slot at CFA + `slot`: back
/// in rbp when that is where it was saved; still in its slot when it was saved elsewhere
/// (rbp is a general register in code without a frame pointer); lost when it was in rbp.
fn load_rbp(rbp: Rbp, slot: Option<i64>) -> Rbp {
    match (rbp, slot) {
        (Rbp::At(at), Some(s)) if at == s => Rbp::Caller,
        (Rbp::At(at), _) => Rbp::At(at),
        _ => Rbp::Lost,
    }
}

/// Decodes `code` linearly up to its end or the first byte sequence that is no
/// instruction (data, or a cut last instruction): what follows is not code we can read.
fn decode(code: &[u8], ip: u64) -> Vec<Insn> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    let mut out = Vec::with_capacity(code.len() / 4);
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            break;
        }
        let (effect, flow) = classify(&ins);
        let len = u8::try_from(ins.len()).unwrap_or(u8::MAX);
        out.push(Insn {
            ip: ins.ip(),
            len,
            effect,
            flow,
            is_call: ins.mnemonic() == Mnemonic::Call,
            is_nop: ins.mnemonic() == Mnemonic::Nop,
        });
    }
    out
}

fn is_sp(r: Register) -> bool {
    matches!(r, Register::RSP | Register::ESP | Register::SP | Register::SPL)
}

fn is_bp(r: Register) -> bool {
    matches!(r, Register::RBP | Register::EBP | Register::BP | Register::BPL)
}

/// `[rsp + d]` or `[rbp + d]` (no index): the base and d.
fn simple_memory(ins: &Instruction) -> Option<(Register, i64)> {
    (ins.memory_index() == Register::None).then(|| (ins.memory_base(), ins.memory_displacement64() as i64))
}

/// The stack effect and control flow of one instruction.
fn classify(ins: &Instruction) -> (Effect, Flow) {
    let op = |i: u32| if i < ins.op_count() { ins.op_kind(i) } else { OpKind::Register };
    let reg = |i: u32| if i < ins.op_count() && ins.op_kind(i) == OpKind::Register { ins.op_register(i) } else { Register::None };
    let imm = |i: u32| ins.try_immediate(i).ok().map(|v| v as i64);
    let near_target = match op(0) {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => Some(ins.near_branch_target()),
        _ => None,
    };
    let m = ins.mnemonic();
    let flow = match m {
        Mnemonic::Call => Flow::Call,
        Mnemonic::Ret | Mnemonic::Retf | Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq | Mnemonic::Sysretq => Flow::Ret,
        Mnemonic::Sysret | Mnemonic::Sysexit | Mnemonic::Sysexitq => Flow::Ret,
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 | Mnemonic::Hlt | Mnemonic::Int3 => Flow::Stop,
        Mnemonic::Jmp => near_target.map_or(Flow::IndirectJump, Flow::Jump),
        // jcc, jrcxz, loop, xbegin: every near branch left is conditional.
        _ => near_target.map_or(Flow::Next, Flow::Branch),
    };
    // `call` to the next instruction pushes its address: the 32-bit way to read rip.
    if m == Mnemonic::Call && near_target == Some(ins.next_ip()) {
        return (Effect::SpAdd(-8), Flow::Next);
    }
    let r0 = reg(0);
    let effect = match m {
        Mnemonic::Push => {
            let word = matches!(
                ins.code(),
                Code::Push_r16 | Code::Push_rm16 | Code::Pushw_imm8 | Code::Push_imm16 | Code::Pushw_FS | Code::Pushw_GS
            );
            if r0 == Register::RBP {
                Effect::PushRbp
            } else {
                Effect::SpAdd(if word { -2 } else { -8 })
            }
        }
        Mnemonic::Pop => {
            let word = matches!(ins.code(), Code::Pop_r16 | Code::Pop_rm16 | Code::Popw_FS | Code::Popw_GS);
            if is_sp(r0) {
                Effect::SpUnknown
            } else if r0 == Register::RBP {
                Effect::PopRbp
            } else if is_bp(r0) {
                Effect::BpUnknown
            } else {
                Effect::SpAdd(if word { 2 } else { 8 })
            }
        }
        Mnemonic::Pushf => Effect::SpAdd(-2),
        Mnemonic::Pushfq => Effect::SpAdd(-8),
        Mnemonic::Popf => Effect::SpAdd(2),
        Mnemonic::Popfq => Effect::SpAdd(8),
        Mnemonic::Leave => Effect::Leave,
        Mnemonic::Enter => match (imm(0), imm(1)) {
            (Some(size), Some(0)) => Effect::Enter(size),
            _ => Effect::BothUnknown,
        },
        Mnemonic::Sub | Mnemonic::Add if r0 == Register::RSP => match imm(1) {
            Some(v) if m == Mnemonic::Sub => Effect::SpAdd(-v),
            Some(v) => Effect::SpAdd(v),
            None => Effect::SpUnknown,
        },
        Mnemonic::Lea if r0 == Register::RSP => match simple_memory(ins) {
            Some((Register::RSP, d)) => Effect::SpAdd(d),
            Some((Register::RBP, d)) => Effect::SpFromBp(d),
            _ => Effect::SpUnknown,
        },
        Mnemonic::Lea if r0 == Register::RBP => match simple_memory(ins) {
            Some((Register::RSP, d)) => Effect::BpFromSp(d),
            _ => Effect::BpUnknown,
        },
        Mnemonic::Mov if r0 == Register::RSP => {
            if reg(1) == Register::RBP {
                Effect::SpFromBp(0)
            } else {
                Effect::SpUnknown
            }
        }
        Mnemonic::Mov if r0 == Register::RBP => match (op(1), reg(1)) {
            (OpKind::Register, Register::RSP) => Effect::BpFromSp(0),
            (OpKind::Memory, _) => match simple_memory(ins) {
                Some((Register::RSP, d)) => Effect::LoadRbp(d),
                _ => Effect::BpUnknown,
            },
            _ => Effect::BpUnknown,
        },
        Mnemonic::Mov if op(0) == OpKind::Memory && reg(1) == Register::RBP => match simple_memory(ins) {
            Some((Register::RSP, d)) => Effect::StoreRbp(d),
            _ => Effect::None,
        },
        // Instructions that read their first operand only.
        Mnemonic::Cmp | Mnemonic::Test | Mnemonic::Bt => Effect::None,
        // These write both register operands.
        Mnemonic::Xchg | Mnemonic::Xadd | Mnemonic::Cmpxchg => match (is_sp(r0) || is_sp(reg(1)), is_bp(r0) || is_bp(reg(1))) {
            (true, true) => Effect::BothUnknown,
            (true, false) => Effect::SpUnknown,
            (false, true) => Effect::BpUnknown,
            (false, false) => Effect::None,
        },
        // Any other write to rsp or rbp as the first operand: not a move we can follow.
        _ if is_sp(r0) => Effect::SpUnknown,
        _ if is_bp(r0) => Effect::BpUnknown,
        _ => Effect::None,
    };
    (effect, flow)
}

#[cfg(test)]
mod tests;

/// Whether the instruction that ends right before `ra` is a call: `before` is the code just
/// below `ra` (up to 15 bytes, the longest x86 instruction; fewer at a section's start).
/// What an unwinder that guessed a frame checks of the return address it found: a value on
/// the stack that is not a return address fails it in all but a few cases.
pub fn follows_call(before: &[u8], ra: u64) -> bool {
    // Calls are 2 (`call *%rax`) to 7 (`call *disp32(%rip)` with a prefix) bytes, more with
    // prefixes; try each start from which one instruction ends exactly at `ra`.
    (2..=before.len().min(15)).any(|len| {
        let code = &before[before.len() - len..];
        let mut d = Decoder::with_ip(64, code, ra - len as u64, DecoderOptions::NONE);
        let i = d.decode();
        !i.is_invalid() && i.len() == len && matches!(i.mnemonic(), Mnemonic::Call)
    })
}

#[cfg(test)]
mod call_tests {
    use super::follows_call;

    #[test]
    fn calls_and_not_calls() {
        // e8 rel32: call; ff d0: call *%rax; 41 ff d3: call *%r11; ff 15 disp32: call *(%rip).
        assert!(follows_call(&[0x90, 0xe8, 1, 2, 3, 4], 0x1006));
        assert!(follows_call(&[0x90, 0x90, 0xff, 0xd0], 0x1004));
        assert!(follows_call(&[0x41, 0xff, 0xd3], 0x1003));
        assert!(follows_call(&[0xff, 0x15, 0, 0, 0, 0], 0x1006));
        // mov %rsp,%rbp; nop: no call ends here.
        assert!(!follows_call(&[0x48, 0x89, 0xe5, 0x90], 0x1004));
        assert!(!follows_call(&[], 0x1000));
    }
}
