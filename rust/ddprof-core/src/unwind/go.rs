//! Go code for the unwinder: exact stack-pointer deltas from `.gopclntab`, and the runtime's
//! stack switches.
//!
//! # Frames ([`GoFrames`])
//!
//! Input: an [`ElfFile`] with a `.gopclntab` (Go 1.18+, amd64 or arm64, stripped or not),
//! then addresses as the file states them (svma): the sample's ip for the leaf, a return
//! address minus one for every caller (so that a call at the very end of a function still
//! falls inside it). Output: a [`GoFrame`] per address, from the runtime's own tables, exact
//! at every instruction (prologues, epilogues, frameless leaves), the same tables Go's own
//! traceback uses; `None` for addresses in no Go function (cgo's C code: ask the CFI).
//!
//! How a frame unwinds, per architecture (`sp` the frame's stack pointer):
//! - amd64: the return address is at `sp + sp_delta`, the caller's sp is `sp + sp_delta + 8`;
//!   with `has_fp` the caller's rbp is at `caller_sp - 16`, else rbp is the caller's already.
//! - arm64: the caller's sp is `sp + sp_delta`; the return address is in x30 when
//!   `sp_delta == 0`, else at `sp`; with `has_fp` the caller's x29 is at `sp - 8`.
//!
//! `has_fp` comes from the prologue Go's compiler and assembler emit, checked in the
//! function's bytes: amd64 Go 1.21+ `PUSHQ BP` (saved as the frame opens), before 1.21
//! `SUBQ $n, SP; MOVQ BP, n-8(SP)` (saved one instruction later; the store has three
//! encodings), arm64 `MOVD.W R30, -n(RSP); MOVD R29, -8(RSP)` (one instruction later) or,
//! for large frames, the `STP` before the frame opens. A function whose first stack
//! adjustment is none of these (assembly with NOFRAME that pushes by hand) says `has_fp:
//! false`. A negative pcsp value (syscall.rawVforkSyscall pops its return address into a
//! register, as glibc's `__vfork` does) has no frame to give: `None`.
//!
//! [`GoFrame::is_entry_point`]: a stack that reaches this function is complete: the
//! functions the runtime marks TOPFRAME (runtime.goexit at the bottom of every goroutine,
//! runtime.mstart at the bottom of every system stack, runtime.rt0_go for the main thread)
//! and the `_rt0_*` ELF entries, but not the signal trampolines the runtime also marks
//! (runtime.sigtramp: the interrupted code lies beyond its signal frame).
//! [`GoFrame::stack_switch`] names the functions at which the stack changes ([`StackSwitch`]).
//!
//! Cost: [`GoFrames`] keeps the file's map (no copy: the table is page cache, shared with
//! the symbolizer), a copy of the table's header and the entries of the ~20 special
//! functions: under 1 KiB of heap per file (496 bytes); building it reads the function
//! table once (to find the special functions by name, since their funcIDs change between Go
//! releases): 3 ms for the Go compiler's 20k functions. A lookup binary-searches the
//! function table and decodes the function's pcsp table up to the address (the runtime's
//! `pcvalue`, without its cache): 250-850 ns at random pcs of the Go compiler's 11 MiB of
//! text (cold page cache and TLB misses dominate), 80-180 ns through a [`GoFrameCache`] when
//! samples repeat pcs (`bench_lookup` in tests/go_frames.rs). [`GoFramesCache`] builds one
//! table per file.
//!
//! # Stack switches ([`join_cgo`])
//!
//! A Go thread (an M) runs on goroutine stacks (allocated and moved by the runtime) and on
//! its system stack, g0 (the pthread's stack; the process's stack for the main thread). How
//! each switch is crossed, from the Go 1.26 `runtime/asm_amd64.s` (the same in substance
//! since 1.17; checked on live stacks of tests/cases/cgo-stack-switch in tests/go_cgo.rs):
//!
//! - **runtime.asmcgocall** (Go -> C; also the runtime's own C calls). On the goroutine stack
//!   it opens a frame (saved rbp, return address into runtime.cgocall) and saves the
//!   goroutine's state in `g.sched` (`gosave_systemstack_switch`: pc =
//!   runtime.systemstack_switch+8, sp = that frame, bp = rbp); then it sets sp to
//!   `m.g0.sched.sp`, aligns it, stores at `[sp]` the *depth* `g.stack.hi - goroutine sp`
//!   (not the sp: the goroutine stack may move during a callback) and at `[sp+8]` the g
//!   (Go 1.19: a 64-byte frame, at `[sp+40]` and `[sp+48]`), and calls C. Walking up from
//!   C, the CFI reaches the return address into asmcgocall; the CFA of the C function it
//!   called is that aligned sp: depth and g are in the snapshot, right above the C frames. The
//!   goroutine's sp is `*(g+8)` (`g.stack.hi`; `stack` is g's first field) minus the depth:
//!   one word of g's memory, then the goroutine's stack, neither in the sample. What the
//!   sample does hold: C compiled without frame pointers (cgo's default `-O2`) leaves rbp
//!   alone unless it uses it for data, so rbp still points to asmcgocall's frame record on
//!   the goroutine stack and the kernel's chain goes from the leaf straight to runtime.cgocall
//!   and on through Go frames (Go keeps frame pointers) to runtime.goexit. The join appends
//!   those (by code: the chain's first Go entry after any C ones; C frames that keep frame
//!   pointers put asmcgocall's own return address in the chain, and the join goes on after
//!   it). When the C code used rbp for data (the case's `c_driver` does), the chain is junk:
//!   the Go window (below) holds the goroutine's stack from `g.sched.sp`, walked from
//!   `g.sched.pc`; without it (the first samples of a process, before the sampler knows
//!   its runtime) the stack ends at asmcgocall, cut ([`JoinEnd::Cut`]).
//! - **runtime.cgocallback** (C -> Go, called by `crosscall2`, which cgo's C wrappers of
//!   exported functions call). On g0 it keeps `m.g0.sched.sp` on its frame and sets it to its
//!   own sp; then it moves to the goroutine's stack at `g.sched.sp`, "pushes" `g.sched.pc`
//!   (systemstack_switch+8, left there by asmcgocall; before Go 1.21 systemstack_switch's
//!   entry, which the walk looks up as it is, as Go's traceback does, not minus one: that
//!   would be runtime.mcall, the function before it) as its return address, opens a frame of
//!   the same size and calls cgocallbackg. So on the goroutine stack cgocallback returns to
//!   systemstack_switch, whose frame has asmcgocall's shape (saved rbp, return address into
//!   runtime.cgocall): a pcsp walk of the goroutine stack goes from the callback through
//!   cgocallback on to goexit, all in the snapshot (Go's traceback relies on it: it waives
//!   cgocallback's SPWRITE flag). What it cannot see are the C frames in between (crosscall2,
//!   the exported function's C wrapper, its C caller, asmcgocall): they are on g0, from
//!   `m.g0.sched.sp` up. The kernel's chain holds one of them: cgocallbackg saved
//!   cgocallback's frame pointer, which points to its g0 frame, whose return address is in
//!   crosscall2; past that it follows the C code's rbp. The Go window holds g0's stack from
//!   `m.g0.sched.sp`: cgocallback's g0 frame, which runs the same instruction as its
//!   goroutine-stack frame (the call of cgocallbackg) and has the same size, so the walk
//!   starts there at that pc, then crosscall2 (pcsp), the C frames (CFI) and asmcgocall;
//!   the join puts crosscall2 .. asmcgocall between cgocallback and the walk after
//!   systemstack_switch. Without a window that reaches asmcgocall, the join keeps the
//!   chain's crosscall2, then marks [`Gap::CallbackCFrames`].
//! - **runtime.systemstack** (runtime work on g0: GC, stack growth, ...): saves `g.sched`
//!   like asmcgocall and switches to g0, keeping rbp (its ABI wrapper's frame record on the
//!   goroutine stack), which the called function's prologue saves: the kernel's chain crosses
//!   back to the goroutine by itself; the join goes on after systemstack's return address in
//!   the chain.
//! - **runtime.mcall** (the scheduler: park, gosched, goexit0): switches to g0 for good; the
//!   goroutine that called it is parked, not a caller: the stack is complete there (Go's own
//!   profiler and OpenTelemetry's show the same).
//! - **runtime.morestack**: saves f's state in `g.sched`, clears rbp, calls newstack on g0
//!   (never returns): the goroutine is reachable only through `g.sched` in g's memory, which
//!   the Go window copies (pc in f, sp f's); without it, cut. **runtime.gogo** (restores a
//!   `g.sched`): the same.
//! - Signal handlers run on the signal stack (`runtime.sigtramp`, marked TOPFRAME by the
//!   runtime but not an entry point here): the kernel's signal frame says where the
//!   interrupted code is (issue 10's signal frames); Go's restorer is
//!   runtime.sigreturn__sigaction (1.21+) or runtime.sigreturn, not libc's `__restore_rt`.
//!
//! OpenTelemetry's profiler unwinds in BPF with any user memory at hand: since #1516 (x86-64)
//! it unwinds runtime.asmcgocall by frame pointer (rbp as the C frames' CFI restored it,
//! then `[rbp]`, `[rbp+8]` read from the goroutine stack); on arm64 (#1626), where asmcgocall
//! replaces the frame pointer with g0's, it reads g (TLS or r28), `g.m`, `m.curg` and
//! `curg.sched.bp` (offsets per Go version) and goes on by frame pointer from there; mcall
//! ends the stack; #1331 (closed for these) had proposed the frame-pointer route first. Our
//! sampler copies memory but does not unwind, so it cannot know the restored rbp at sample
//! time, and the unwinder, which knows it, runs after the memory is gone.
//!
//! | value | where | in the sample |
//! |---|---|---|
//! | asmcgocall's depth and g | g0 stack, at asmcgocall's CFA (+0, +8) | yes, when sampled in C |
//! | `curg.sched.{sp,pc,bp}` | g's memory | yes, sampled on g0 (the Go window's header) |
//! | the goroutine's frames (cgocall .. goexit) | goroutine stack | in a callback, the snapshot; on g0, the Go window (4 KiB from `sched.sp`); the chain's return addresses when C left rbp alone |
//! | `m.g0.sched.sp`, a callback's C frames | m.g0's memory, g0 stack | yes, sampled on a goroutine of a cgo binary (the Go window, 4 KiB) |
//!
//! What closes the cuts is the Go window (`bpf/sampler.h`): a copy of the other stack, taken
//! by the sampler for Go programs on x86_64. It reads g from TLS (the fs base, through CO-RE
//! as for CPython; the slot, -8 in linux/amd64 executables, from the binary's code), then
//! `g.m`, `m.g0` and `m.curg` (offsets per binary: `go_runtime`): when g is m.g0 (on the
//! system stack) and m.curg is set, it copies up to 4 KiB of the goroutine's stack from
//! `curg.sched.sp` (up to `curg.stack.hi`) and records `curg.sched.{pc,sp,bp}`; when g is
//! m.curg in a cgo binary, up to 4 KiB of g0's stack from `m.g0.sched.sp` (in a callback,
//! cgocallback's g0 frame: crosscall2 and the C frames above it; outside one, g0's top, a
//! few hundred bytes). The drain walks the window (from `sched.pc`, or from cgocallback's
//! frame) and passes it to [`join_cgo`] as `other`. The frame addresses of the chain would
//! not do it: the case's C code breaks the chain itself.
//!
//! Still not captured: a window that does not reach (C code deeper than 4 KiB between a
//! callback and asmcgocall: the gap stays marked; a goroutine deeper than 4 KiB at its cgo
//! call whose C code broke the chain: `[truncated]`), the outer C frames of nested
//! callbacks (Go -> C -> Go -> C -> Go: one window, the innermost), callbacks on threads C
//! created (their C frames below cgocallback), arm64 and Go code in shared libraries
//! (`go_runtime`'s non-goals).
//!
//! Non-goals: evaluating anything (the unwinder applies the rules above, and walks), Go
//! before 1.18, other architectures, inlined frames (symbolization's), reading process
//! memory.
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use crate::elf::gopclntab::{Header, Pclntab};
use crate::elf::{ElfFile, FileKey, MapSlice, Section};

/// abi.FuncFlag bits (internal/abi/symtab.go; the same values since Go 1.17).
pub const FUNC_FLAG_TOPFRAME: u8 = 1 << 0;
pub const FUNC_FLAG_SPWRITE: u8 = 1 << 1;
pub const FUNC_FLAG_ASM: u8 = 1 << 2;

/// The unwinding facts of one pc of Go code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoFrame {
    /// The pcsp value: bytes from sp to the return address slot at this pc on amd64 (the
    /// caller's sp is `sp + sp_delta + 8`), the frame's size on arm64 (caller's sp = `sp +
    /// sp_delta`).
    pub sp_delta: u32,
    /// The function has saved the caller's frame pointer at this pc: at `caller_sp - 16` on
    /// amd64, at `sp - 8` on arm64.
    pub has_fp: bool,
    /// The function's entry, as the file states it.
    pub func_entry: u64,
    /// A stack that reaches this function is complete (see the module doc).
    pub is_entry_point: bool,
    /// The function's abi.FuncFlag byte: [`FUNC_FLAG_TOPFRAME`] (Go's own traceback stops
    /// there, complete), [`FUNC_FLAG_SPWRITE`] (it writes sp in ways pcsp cannot say: Go's
    /// traceback refuses to unwind past it, except for runtime.cgocallback, and the
    /// innermost frame), [`FUNC_FLAG_ASM`].
    pub flag: u8,
    /// The function switches stacks (or is a signal trampoline): how to cross it is in the
    /// module doc of the join, [`join_cgo`].
    pub stack_switch: Option<StackSwitch>,
}

/// Runtime functions at which a Go stack changes. See "Stack switches" below [`join_cgo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackSwitch {
    /// runtime.asmcgocall, runtime.asmcgocall_no_g: Go calling C, on the system stack.
    AsmCgoCall,
    /// runtime.cgocallback: C calling Go, from the system stack onto the goroutine's.
    CgoCallback,
    /// crosscall2: the C-callable entry of cgo's exported Go functions (C side of a callback).
    Crosscall2,
    /// runtime.systemstack: runs a function on the system stack.
    SystemStack,
    /// runtime.systemstack_switch: the pc the goroutine's saved state shows while it is off
    /// its stack (systemstack, asmcgocall); its "caller" is the goroutine's real frame.
    SystemStackSwitch,
    /// runtime.mcall: switches to the system stack for good (the scheduler).
    Mcall,
    /// runtime.morestack, runtime.morestack_noctxt: grows the goroutine's stack, from the
    /// system stack; never returns.
    Morestack,
    /// runtime.gogo: jumps into a goroutine's saved state.
    Gogo,
    /// runtime.sigtramp, runtime.cgoSigtramp, runtime.sigreturn__sigaction (Go 1.21+),
    /// runtime.sigreturn: Go's signal handler entry and restorer; the interrupted code is
    /// beyond the kernel's signal frame (`ucontext`), not at a return address.
    SignalTrampoline,
}

/// The functions found by name (their funcIDs change between Go releases; names do not).
const SPECIAL_NAMES: &[(&[u8], Special)] = &[
    (b"runtime.goexit", Special::Entry),
    (b"runtime.mstart", Special::Entry),
    (b"runtime.rt0_go", Special::Entry),
    (b"runtime.asmcgocall", Special::Switch(StackSwitch::AsmCgoCall)),
    (b"runtime.asmcgocall_no_g", Special::Switch(StackSwitch::AsmCgoCall)),
    (b"runtime.cgocallback", Special::Switch(StackSwitch::CgoCallback)),
    (b"crosscall2", Special::Switch(StackSwitch::Crosscall2)),
    (b"runtime.systemstack", Special::Switch(StackSwitch::SystemStack)),
    (b"runtime.systemstack_switch", Special::Switch(StackSwitch::SystemStackSwitch)),
    (b"runtime.mcall", Special::Switch(StackSwitch::Mcall)),
    (b"runtime.morestack", Special::Switch(StackSwitch::Morestack)),
    (b"runtime.morestack_noctxt", Special::Switch(StackSwitch::Morestack)),
    (b"runtime.gogo", Special::Switch(StackSwitch::Gogo)),
    (b"gogo", Special::Switch(StackSwitch::Gogo)),
    (b"runtime.sigtramp", Special::Switch(StackSwitch::SignalTrampoline)),
    (b"runtime.cgoSigtramp", Special::Switch(StackSwitch::SignalTrampoline)),
    (b"runtime.sigreturn__sigaction", Special::Switch(StackSwitch::SignalTrampoline)),
    (b"runtime.sigreturn", Special::Switch(StackSwitch::SignalTrampoline)),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    Entry,
    Switch(StackSwitch),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arch {
    Amd64,
    Arm64,
}

/// A Go binary's frame table: the file's `.gopclntab`, kept mapped.
pub struct GoFrames {
    /// The `.gopclntab` bytes, in the file's map.
    pcln: MapSlice,
    hdr: Header,
    /// `.text` (svma of its start, bytes), for the prologue check of `has_fp`.
    text: Option<(u64, MapSlice)>,
    arch: Arch,
    /// (entry, what) of the special functions, sorted by entry.
    specials: Vec<(u64, Special)>,
    /// Unique per table, so that a [`GoFrameCache`] never mistakes a new table for a dropped
    /// one at the same address.
    id: u64,
}

impl std::fmt::Debug for GoFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoFrames").field("nfunc", &self.hdr.nfunc).field("arch", &self.arch).finish()
    }
}

impl GoFrames {
    /// Builds the table of `file`. Ok(None) when the file is not Go (no `.gopclntab`) or not
    /// an architecture this module knows; Err with a short reason when the table is
    /// malformed or of an unsupported Go version.
    pub fn from_file(file: &ElfFile) -> Result<Option<GoFrames>, String> {
        let arch = match file.machine {
            object::elf::EM_X86_64 => Arch::Amd64,
            object::elf::EM_AARCH64 => Arch::Arm64,
            _ => return Ok(None),
        };
        let Some(parsed) = Pclntab::parse(file.bytes())? else { return Ok(None) };
        let want_quantum = if arch == Arch::Amd64 { 1 } else { 4 };
        if parsed.table.hdr.quantum != want_quantum {
            return Err(format!("pc quantum {} on {arch:?}", parsed.table.hdr.quantum));
        }
        let range = parsed.file_range.clone();
        let section = Section { svma: parsed.svma..parsed.svma.saturating_add(range.len() as u64), data: Some(range) };
        let pcln = file.slice(&Some(section)).ok_or("the .gopclntab bytes are not in the map")?;
        let text = file.unwind.text.as_ref().and_then(|t| Some((t.svma.start, file.slice(&Some(t.clone()))?)));
        let specials = find_specials(&parsed.table);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(GoFrames { pcln, hdr: parsed.table.hdr, text, arch, specials, id }))
    }

    fn table(&self) -> Pclntab<'_> {
        Pclntab { bytes: &self.pcln, hdr: self.hdr }
    }

    /// The frame facts at `svma` (see the module doc for which address to ask), None when
    /// no Go function holds it or its table has no value there.
    pub fn frame(&self, svma: u64) -> Option<GoFrame> {
        let t = self.table();
        let f = t.find_func(svma)?;
        // The runtime's "no frame information, must be external function".
        if f.pcsp == 0 {
            return None;
        }
        let pos = t.hdr.pctab.checked_add(f.pcsp as usize)?;
        // One pass: the value at svma, and where the frame first opened (for has_fp).
        let (mut start, mut opened, mut value) = (f.entry, None, None);
        for (end, v) in t.pc_values(&f, pos) {
            if opened.is_none() && v > 0 {
                opened = Some((start, v));
            }
            if svma < end {
                value = Some(v);
                break;
            }
            start = end;
        }
        let sp_delta = u32::try_from(value?).ok()?;
        let has_fp = match (self.arch, opened) {
            (Arch::Amd64, Some((at, size))) => sp_delta >= 8 && self.fp_saved_from(at, size).is_some_and(|from| !(at..from).contains(&svma)),
            (Arch::Arm64, Some((at, size))) => sp_delta > 0 && self.fp_saved_from(at, size).is_some_and(|from| !(at..from).contains(&svma)),
            (_, None) => false,
        };
        let (is_entry_point, stack_switch) = self.kind(f.entry, f.flag);
        Some(GoFrame { sp_delta, has_fp, func_entry: f.entry, is_entry_point, flag: f.flag, stack_switch })
    }

    /// Whether the function at `entry` (with flag byte `flag`) ends stacks, and the switch it
    /// is.
    fn kind(&self, entry: u64, flag: u8) -> (bool, Option<StackSwitch>) {
        let special = self.specials.binary_search_by_key(&entry, |s| s.0).ok().map(|i| self.specials[i].1);
        let signal = special == Some(Special::Switch(StackSwitch::SignalTrampoline));
        let entry_point = special == Some(Special::Entry) || (flag & FUNC_FLAG_TOPFRAME != 0 && !signal);
        let switch = match special {
            Some(Special::Switch(s)) => Some(s),
            _ => None,
        };
        (entry_point, switch)
    }

    /// What the code at `svma` is, for [`join_cgo`]: any Go function counts, also where
    /// [`GoFrames::frame`] has no frame to give.
    pub fn code(&self, svma: u64) -> Code {
        let Some(f) = self.table().find_func(svma) else { return Code::Other };
        match self.kind(f.entry, f.flag) {
            (true, _) => Code::EntryPoint,
            (false, Some(s)) => Code::Switch(s),
            (false, None) => Code::Go,
        }
    }

    /// Where the caller's frame pointer is saved from, given that the frame first opened
    /// (pcsp went from 0 to `size`) at `at`: `at` itself when the opening instruction saved
    /// it, the end of the next instruction when that one saves it, None for any other
    /// prologue (no frame pointer kept).
    fn fp_saved_from(&self, at: u64, size: i32) -> Option<u64> {
        let (text_start, text) = self.text.as_ref()?;
        let bytes = |svma: u64, len: usize| -> Option<&[u8]> {
            let off = usize::try_from(svma.checked_sub(*text_start)?).ok()?;
            text.get(off..off.checked_add(len)?)
        };
        match self.arch {
            Arch::Amd64 => {
                // Go 1.21+: PUSHQ BP (0x55) opened the frame by 8.
                if size == 8 && bytes(at.checked_sub(1)?, 1) == Some(&[0x55]) {
                    return Some(at);
                }
                // Before: SUBQ $size, SP, then MOVQ BP, size-8(SP) (no displacement when it is
                // 0, else disp8 or disp32).
                let disp = u32::try_from(size - 8).ok()?;
                if disp == 0 && bytes(at, 4) == Some(&[0x48, 0x89, 0x2c, 0x24]) {
                    return Some(at + 4);
                }
                let d8 = u8::try_from(disp).ok().filter(|&d| d < 0x80);
                if let (Some(d), Some(b)) = (d8, bytes(at, 5)) {
                    if b == [0x48, 0x89, 0x6c, 0x24, d] {
                        return Some(at + 5);
                    }
                }
                let b = bytes(at, 8)?;
                (b[..4] == [0x48, 0x89, 0xac, 0x24] && b[4..] == disp.to_le_bytes()).then_some(at + 8)
            }
            Arch::Arm64 => {
                // Small frames: MOVD.W R30, -size(RSP) opened it; MOVD R29, -8(RSP) follows.
                if bytes(at, 4) == Some(&0xf81f_83fdu32.to_le_bytes()) {
                    return Some(at + 4);
                }
                // Large frames: STP (R29, R30), -8(R20) before MOVD R20, RSP opened it. Opcode
                // of STP x29, x30, [x20, #-8] (signed offset form).
                let stp = bytes(at.checked_sub(8)?, 4)?;
                (stp == 0xa93ffa9du32.to_le_bytes()).then_some(at)
            }
        }
    }

    /// The entry of the function that holds `svma`.
    pub fn func_entry(&self, svma: u64) -> Option<u64> {
        self.table().find_func(svma).map(|f| f.entry)
    }

    /// The entries of the functions that are the switch `s` (see `find_specials`: the
    /// assembly functions, not their ABI wrappers).
    pub fn switch_entries(&self, s: StackSwitch) -> impl Iterator<Item = u64> + '_ {
        self.specials.iter().filter(move |(_, k)| *k == Special::Switch(s)).map(|(e, _)| *e)
    }

    /// Up to `len` bytes of `.text` from `svma` (fewer at its end); None outside it.
    pub fn code_bytes(&self, svma: u64, len: usize) -> Option<&[u8]> {
        let (start, text) = self.text.as_ref()?;
        let off = usize::try_from(svma.checked_sub(*start)?).ok()?;
        text.get(off..off.saturating_add(len).min(text.len()))
    }

    /// Number of functions in the table.
    pub fn num_funcs(&self) -> usize {
        self.hdr.nfunc
    }

    /// `[entry, end)` of the i-th function (ascending), for tests and benches.
    pub fn func_range(&self, i: usize) -> Option<(u64, u64)> {
        self.table().func_at(i).map(|f| (f.entry, f.end))
    }

    /// The name of the function at `svma`, lossy, for tests and logs.
    pub fn func_name(&self, svma: u64) -> Option<String> {
        let t = self.table();
        t.name(t.find_func(svma)?.name_off).map(|n| String::from_utf8_lossy(n).into_owned())
    }

    /// Heap bytes held (the table itself is the file's map).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.specials.capacity() * std::mem::size_of::<(u64, Special)>()
    }
}

/// Recent lookups, for the caller to keep (the drain thread's unwinder): a lookup decodes the
/// function's pcsp table from its entry, a few hundred ns in large functions, while samples
/// repeat the same hot pcs and return addresses; a hit costs a hash and a compare. Direct
/// mapped, by (table, svma).
pub struct GoFrameCache {
    slots: Box<[(u64, u64, Option<GoFrame>)]>,
    pub hits: u64,
    pub misses: u64,
}

impl GoFrameCache {
    /// A cache of `slots` entries (rounded up to a power of two; 4096 is 160 KiB).
    pub fn new(slots: usize) -> Self {
        let n = slots.max(1).next_power_of_two();
        GoFrameCache { slots: vec![(0, 0, None); n].into_boxed_slice(), hits: 0, misses: 0 }
    }

    /// [`GoFrames::frame`], remembered.
    pub fn frame(&mut self, frames: &GoFrames, svma: u64) -> Option<GoFrame> {
        let h = (svma ^ frames.id.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let i = (h >> 32) as usize & (self.slots.len() - 1);
        let slot = &mut self.slots[i];
        // Table ids start at 1, so an empty slot (id 0) never matches.
        if slot.0 == frames.id && slot.1 == svma {
            self.hits += 1;
            return slot.2;
        }
        self.misses += 1;
        let f = frames.frame(svma);
        *slot = (frames.id, svma, f);
        f
    }
}

/// The special functions' entries, by name, in one pass over the function table.
///
/// An assembly function called from Go code has an ABI wrapper of the same name in the table
/// (`runtime.asmcgocall`, compiled, calling `runtime.asmcgocall.abi0`, whose table name has
/// no suffix); the wrapper is an ordinary frame. So where a name has functions with the
/// FuncFlagAsm bit (Go 1.19+), only those are special.
fn find_specials(t: &Pclntab) -> Vec<(u64, Special)> {
    let mut found: Vec<(usize, u64, Special, bool)> = (0..t.hdr.nfunc)
        .filter_map(|i| t.func_at(i))
        .filter_map(|f| {
            let name = t.name(f.name_off)?;
            // Cheap reject first: every special name starts with one of these bytes.
            if !matches!(name.first(), Some(b'r' | b'c' | b'g' | b'_')) {
                return None;
            }
            // The ELF entries (_rt0_amd64_linux, _rt0_amd64, ...) start the main thread.
            if name.starts_with(b"_rt0_") {
                return Some((usize::MAX, f.entry, Special::Entry, false));
            }
            let which = SPECIAL_NAMES.iter().position(|(n, _)| *n == name)?;
            Some((which, f.entry, SPECIAL_NAMES[which].1, f.flag & FUNC_FLAG_ASM != 0))
        })
        .collect();
    let asm_names: Vec<usize> = found.iter().filter(|c| c.3).map(|c| c.0).collect();
    found.retain(|c| c.3 || !asm_names.contains(&c.0));
    let mut out: Vec<(u64, Special)> = found.into_iter().map(|c| (c.1, c.2)).collect();
    out.sort_unstable_by_key(|s| s.0);
    out.dedup_by_key(|s| s.0);
    out
}

/// [`GoFrames`] per file, built on first ask and kept for as long as the file is: the
/// unwinder asks when it builds a process's module table, and keeps the `Arc`.
///
/// Why a cache here rather than a `OnceLock` in [`ElfFile`]: `elf` sits below `unwind` in
/// the dependency order, so `ElfFile` cannot name this type; the one parser it would share
/// (`elf::gopclntab`) is there. Only the drain thread asks, so there is no lock. Entries
/// hold the file weakly: when the file cache and every process drop a file, its entry goes
/// at the next [`GoFramesCache::forget_dropped`].
#[derive(Default)]
pub struct GoFramesCache {
    files: HashMap<FileKey, (Weak<ElfFile>, Option<Arc<GoFrames>>)>,
}

impl GoFramesCache {
    /// The table of `file`; None for files that are not Go or whose table is unusable
    /// (logged once per file).
    pub fn get(&mut self, file: &Arc<ElfFile>) -> Option<Arc<GoFrames>> {
        if !file.symbols.has_gopclntab {
            return None;
        }
        if let Some((weak, frames)) = self.files.get(&file.key) {
            // Same key, other file: an inode reused after the first was deleted.
            if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(file)) {
                return frames.clone();
            }
        }
        let frames = match GoFrames::from_file(file) {
            Ok(f) => f.map(Arc::new),
            Err(e) => {
                log::debug!("{}: .gopclntab frames: {e}", file.origin.path);
                None
            }
        };
        self.files.insert(file.key, (Arc::downgrade(file), frames.clone()));
        frames
    }

    /// Drops the tables of files nobody holds any more.
    pub fn forget_dropped(&mut self) {
        self.files.retain(|_, (weak, _)| weak.strong_count() > 0);
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A frame of a walk: its lookup address (the ip, then return addresses minus one) and its
/// CFA (the caller's sp), as AVMAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkFrame {
    pub addr: u64,
    pub cfa: u64,
}

/// What the code at an address is, as the unwinder's modules know it (from [`GoFrames`]:
/// `frame()` is Some for Go code; its `is_entry_point` and `stack_switch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Go,
    /// Go code that ends a stack ([`GoFrame::is_entry_point`]).
    EntryPoint,
    Switch(StackSwitch),
    /// C, or anything no Go table covers.
    Other,
}

/// One frame of a joined stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Joined {
    /// A lookup address.
    Frame(u64),
    /// Frames that ran on the other stack and could not be recovered (a marker frame).
    Gap(Gap),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gap {
    /// The C frames between cgo's callback entry (crosscall2) and the Go code that called C
    /// (runtime.asmcgocall): they live on the system stack, which the sample did not copy.
    CallbackCFrames,
}

/// How a joined stack ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinEnd {
    /// At an entry point (or runtime.mcall: the scheduler's stack, whose goroutine is parked,
    /// not a caller).
    Complete,
    /// At a switch whose other side the sample does not hold.
    Cut(StackSwitch),
    /// The frame-pointer chain ended, or left Go code, before an entry point.
    ChainEnded,
}

/// Joins the walk of the sampled stack with what the sample holds of the other stack, across
/// the Go runtime's stack switches (see "Stack switches" below). Returns None when the walk
/// crosses no switch (the caller's own outcome stands); else `out` holds the whole stack,
/// leaf first, and how it ends.
///
/// Inputs:
/// - `walk`: the CFI/pcsp walk of the sampled stack, leaf first. The unwinder stops it at the
///   first frame whose code is [`StackSwitch::AsmCgoCall`], `SystemStack`, `Mcall`,
///   `Morestack` or `Gogo` (that frame included: past it, the stack holds nothing the
///   switch's own tables can describe), and goes on through `CgoCallback` and
///   `SystemStackSwitch` frames (there, as Go's own traceback relies on, both stacks hold a
///   valid frame). Frames after a stopping switch are ignored.
/// - `chain`: the kernel's frame-pointer walk for the same sample (the ip, then return
///   addresses), as the sampler records it for Go processes; may be empty.
/// - `other`: a walk of the other stack, when the sampler copied a window of it (the Go
///   window, "What closes the cuts"): from the goroutine's saved state (pc
///   runtime.systemstack_switch or the morestack caller, sp `g.sched.sp`) when the sample is
///   on the system stack; from cgocallback's system-stack frame (sp `m.g0.sched.sp`, then
///   crosscall2) when it is in a callback. A callback's window without crosscall2 ..
///   asmcgocall is ignored (the chain and the gap marker, as without one); at the other
///   switches `other` replaces the chain (the drain joins again without it when the join
///   with it does not reach an entry point).
/// - `classify`: the code at a lookup address.
///
/// Joins are checked by code, since the chain has no frame addresses: appended chain entries
/// must all be Go code, and the join is `Complete` only when they reach an entry point.
pub fn join_cgo(
    walk: &[WalkFrame],
    chain: &[u64],
    other: Option<&[WalkFrame]>,
    classify: &dyn Fn(u64) -> Code,
    out: &mut Vec<Joined>,
) -> Option<JoinEnd> {
    out.clear();
    let code: Vec<Code> = walk.iter().map(|f| classify(f.addr)).collect();
    if !code.iter().any(|c| matches!(c, Code::Switch(s) if *s != StackSwitch::SignalTrampoline && *s != StackSwitch::Crosscall2)) {
        return None;
    }
    // Chain entries as lookup addresses (the ip as it is, return addresses minus one).
    let chain_at = |i: usize| if i == 0 { chain[0] } else { chain[i].wrapping_sub(1) };
    let mut callbacks = 0;
    let mut i = 0;
    while i < walk.len() {
        // Each stack's frames lie above the previous ones (a walk that went backwards went
        // astray): stop there.
        if i > 0 && walk[i].cfa <= walk[i - 1].cfa {
            return Some(JoinEnd::ChainEnded);
        }
        out.push(Joined::Frame(walk[i].addr));
        match code[i] {
            // Go -> C -> Go: cgocallback's frame on the goroutine stack returns to the pc the
            // goroutine saved when it left for C (systemstack_switch); C ran in between.
            Code::Switch(StackSwitch::CgoCallback) if code.get(i + 1) == Some(&Code::Switch(StackSwitch::SystemStackSwitch)) => {
                callbacks += 1;
                let from_other = other.filter(|_| callbacks == 1).and_then(|o| {
                    let first = o.iter().position(|f| classify(f.addr) == Code::Switch(StackSwitch::Crosscall2))?;
                    let last = o.iter().position(|f| classify(f.addr) == Code::Switch(StackSwitch::AsmCgoCall))?;
                    (first <= last).then(|| &o[first..=last])
                });
                if let Some(c_side) = from_other {
                    out.extend(c_side.iter().map(|f| Joined::Frame(f.addr)));
                } else {
                    // The chain follows cgocallback's frame pointer into its system-stack frame,
                    // whose return address is in crosscall2; past that, C code's frame pointers
                    // (if any) lead to junk as often as not: only crosscall2 is taken.
                    if callbacks == 1 {
                        let at = (1..chain.len()).find(|&j| chain_at(j) == walk[i].addr);
                        if let Some(j) = at.filter(|&j| j + 1 < chain.len()) {
                            if classify(chain_at(j + 1)) == Code::Switch(StackSwitch::Crosscall2) {
                                out.push(Joined::Frame(chain_at(j + 1)));
                            }
                        }
                    }
                    out.push(Joined::Gap(Gap::CallbackCFrames));
                }
                // systemstack_switch stands for the part of this stack that ran elsewhere.
                i += 2;
                continue;
            }
            Code::Switch(StackSwitch::Mcall) => return Some(JoinEnd::Complete),
            Code::Switch(s @ (StackSwitch::AsmCgoCall | StackSwitch::SystemStack)) => {
                if let Some(o) = other {
                    // The goroutine's walk from its saved state: its first frame is the
                    // systemstack_switch placeholder.
                    let skip = usize::from(o.first().is_some_and(|f| classify(f.addr) == Code::Switch(StackSwitch::SystemStackSwitch)));
                    return Some(append_go(out, o.iter().skip(skip).map(|f| f.addr), classify).unwrap_or(JoinEnd::Cut(s)));
                }
                return Some(join_chain(out, walk, i, chain, &chain_at, classify).unwrap_or(JoinEnd::Cut(s)));
            }
            Code::Switch(s @ (StackSwitch::Morestack | StackSwitch::Gogo)) => {
                if let Some(o) = other {
                    return Some(append_go(out, o.iter().map(|f| f.addr), classify).unwrap_or(JoinEnd::Cut(s)));
                }
                return Some(JoinEnd::Cut(s));
            }
            Code::EntryPoint => return Some(JoinEnd::Complete),
            _ => {}
        }
        i += 1;
    }
    // The walk ran out (the snapshot's end, or a frame it could not unwind) after a callback.
    Some(JoinEnd::ChainEnded)
}

/// Appends the chain's continuation of a walk that stopped at the switch frame `walk[i]` on
/// the system stack. None when the chain has none.
///
/// Where the chain continues: Go keeps frame pointers, so on the goroutine side the chain is
/// right; on the system stack it passes only through C frames that keep frame pointers
/// (often none: gcc omits them at -O2, and then rbp is still the Go caller's frame pointer,
/// unless the C code used it as a general register: then the chain is junk from the start).
/// So: skip the chain's leading entries that are C or the switch itself, take the first Go
/// entry as the switch's caller when the chain holds no Go code before it, then Go code up
/// to an entry point.
fn join_chain(
    out: &mut Vec<Joined>,
    walk: &[WalkFrame],
    i: usize,
    chain: &[u64],
    chain_at: &dyn Fn(usize) -> u64,
    classify: &dyn Fn(u64) -> Code,
) -> Option<JoinEnd> {
    if chain.len() < 2 {
        return None;
    }
    // The switch's own return address in the chain (C frames that keep frame pointers, or a
    // Go caller like systemstack's): continue right after it, at the aligned match first.
    let own = (1..chain.len()).filter(|&j| chain_at(j) == walk[i].addr).min_by_key(|&j| j.abs_diff(i));
    let from = match own {
        Some(j) => j + 1,
        None => (1..chain.len()).find(|&j| !matches!(classify(chain_at(j)), Code::Other | Code::Switch(StackSwitch::AsmCgoCall)))?,
    };
    append_go(out, (from..chain.len()).map(chain_at), classify)
}

/// Appends Go frames up to an entry point; None when the first is not Go code.
fn append_go(out: &mut Vec<Joined>, addrs: impl Iterator<Item = u64>, classify: &dyn Fn(u64) -> Code) -> Option<JoinEnd> {
    let start = out.len();
    for a in addrs {
        match classify(a) {
            Code::Other => break,
            c => {
                out.push(Joined::Frame(a));
                if c == Code::EntryPoint {
                    return Some(JoinEnd::Complete);
                }
            }
        }
    }
    (out.len() > start).then_some(JoinEnd::ChainEnded)
}

#[cfg(test)]
mod tests;
