//! Unwinding: a user stack snapshot into the addresses of its frames.
//!
//! - this module: the walk, with DWARF CFI through framehop (`.eh_frame_hdr`, `.eh_frame`,
//!   `.debug_frame`), frame pointers where no CFI covers an address;
//! - `modules`: the per-process module table framehop walks with;
//! - `fp_chain`: joining a walk that stopped early with the kernel's frame-pointer chain
//!   (Go's system stacks).
//!
//! Input: a process (from `process`), the user registers (`arch::UserRegs`) and the stack
//! bytes copied from sp. Output: addresses in the process (AVMAs), leaf first, each already
//! a lookup address (return addresses minus one, so that they fall inside the call
//! instruction), and how the walk ended ([`Outcome`], each a counter). Non-goals: mapping
//! addresses to files or symbols.
use framehop::{FrameAddress, Unwinder as _};

use crate::addr::Avma;
pub use crate::arch::KnownRule;
use crate::arch::{self, UnwindCache, UserRegs};
use crate::counters::Counter;
use crate::process::{Process, Registry};

pub mod fp_chain;
pub mod go;
pub mod heuristic;
pub mod modules;

pub use fp_chain::{chain_capacity, extend_with_fp_chain};
use modules::ModuleTables;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Reached the root (a frame whose CFI ends the stack, or a null return address).
    Complete,
    /// Needed stack memory beyond the snapshot: the snapshot size cut the stack.
    Truncated,
    /// Needed stack memory that was not in the snapshot although the snapshot was not cut.
    BadStackRead,
    /// The walk stopped making progress or went backwards.
    Stuck,
    /// Deeper than the depth cap.
    TooDeep,
}

impl Outcome {
    pub fn counter(self) -> Counter {
        match self {
            Outcome::Complete => Counter::UnwindComplete,
            Outcome::Truncated => Counter::UnwindTruncated,
            Outcome::BadStackRead => Counter::UnwindBadStackRead,
            Outcome::Stuck => Counter::UnwindStuck,
            Outcome::TooDeep => Counter::UnwindTooDeep,
        }
    }
}

pub struct StackUnwinder {
    cache: UnwindCache,
    modules: ModuleTables,
}

impl Default for StackUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl StackUnwinder {
    pub fn new() -> Self {
        StackUnwinder { cache: UnwindCache::new(), modules: ModuleTables::default() }
    }

    /// Walks the stack, at most `max_frames` deep; pushes lookup addresses into `out`
    /// (cleared first). `known_code` gives the rule of code that has no CFI but whose shape
    /// is known (CPython's perf trampolines, see `cpython::trampoline`): asked for each
    /// address in memory no module covers, framehop otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn unwind(
        &mut self,
        process: &Process,
        regs: UserRegs,
        stack: &[u8],
        snapshot_cut: bool,
        max_frames: usize,
        known_code: &mut dyn FnMut(Avma, bool) -> Option<KnownRule>,
        out: &mut Vec<Avma>,
    ) -> Outcome {
        out.clear();
        let sp = regs.sp;
        let stack_end = sp.saturating_add(stack.len() as u64);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if addr < sp || addr.checked_add(8).is_none_or(|e| e > stack_end) {
                return Err(());
            }
            let off = usize::try_from(addr - sp).map_err(|_| ())?;
            let b: [u8; 8] = stack.get(off..off + 8).ok_or(())?.try_into().map_err(|_| ())?;
            Ok(u64::from_ne_bytes(b))
        };
        let unwinder = self.modules.get(process);
        let mut unwind_regs = arch::unwind_regs(&regs);
        let mut frame = FrameAddress::InstructionPointer(regs.ip.0);
        out.push(regs.ip);
        loop {
            let addr = frame.address_for_lookup();
            let in_module = process.mapping(Avma(addr)).is_some_and(|m| m.file.is_some());
            let rule = if in_module { None } else { known_code(Avma(addr), !frame.is_return_address()) };
            let next = match rule {
                Some(rule) => arch::apply_known_rule(&rule, &mut unwind_regs, &mut read_stack)
                    .map(Some)
                    .map_err(framehop::Error::CouldNotReadStack),
                None => unwinder.unwind_frame(frame, &mut unwind_regs, &mut self.cache, &mut read_stack),
            };
            match next {
                Ok(Some(ra)) => {
                    // A null return address: a chain that ends without a root CFI says so.
                    let Some(next) = FrameAddress::from_return_address(ra) else { return Outcome::Stuck };
                    if out.len() >= max_frames {
                        return Outcome::TooDeep;
                    }
                    out.push(Avma(next.address_for_lookup()));
                    frame = next;
                }
                Ok(None) => return Outcome::Complete,
                Err(framehop::Error::CouldNotReadStack(addr)) => {
                    return if addr >= stack_end && snapshot_cut { Outcome::Truncated } else { Outcome::BadStackRead };
                }
                Err(_) => return Outcome::Stuck,
            }
        }
    }

    /// Drops what was derived from processes the registry forgot or reloaded.
    pub fn forget_stale(&mut self, registry: &Registry) {
        self.modules.forget_stale(registry);
    }
}
