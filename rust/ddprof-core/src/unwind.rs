//! Unwinds a user stack snapshot into return addresses, with DWARF CFI through framehop and
//! frame pointers where no CFI covers an address.
//!
//! Input: a process (its framehop unwinder), the user registers (ip, sp, bp) and the stack
//! bytes copied from sp. Output: addresses in the process, leaf first, each already made a
//! lookup address (return addresses minus one, so they fall inside the call instruction), and
//! how the walk ended. Non-goals: mapping addresses to files or symbols.
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, Unwinder};

use crate::process::Process;

/// Deep enough for any real stack; the pprof exporter cuts at 600 anyway.
pub const MAX_FRAMES: usize = 1024;

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
    TooDeep,
}

impl Outcome {
    pub fn stat_name(self) -> &'static str {
        match self {
            Outcome::Complete => "unwind_complete",
            Outcome::Truncated => "unwind_truncated",
            Outcome::BadStackRead => "unwind_bad_stack_read",
            Outcome::Stuck => "unwind_stuck",
            Outcome::TooDeep => "unwind_too_deep",
        }
    }
}

/// The user registers a walk starts from, as the sampler took them.
#[derive(Clone, Copy, Debug)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

pub struct StackUnwinder {
    cache: CacheX86_64,
}

impl Default for StackUnwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl StackUnwinder {
    pub fn new() -> Self {
        StackUnwinder { cache: CacheX86_64::new() }
    }

    /// Walks the stack; pushes lookup addresses into `out` (cleared first).
    pub fn unwind(&mut self, process: &Process, regs: UserRegs, stack: &[u8], snapshot_cut: bool, out: &mut Vec<u64>) -> Outcome {
        let UserRegs { ip, sp, bp } = regs;
        out.clear();
        let stack_end = sp + stack.len() as u64;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            if addr < sp || addr.checked_add(8).is_none_or(|e| e > stack_end) {
                return Err(());
            }
            let off = (addr - sp) as usize;
            let b = stack.get(off..off + 8).ok_or(())?;
            Ok(u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        };
        let regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut it = process.unwinder.iter_frames(ip, regs, &mut self.cache, &mut read_stack);
        loop {
            match it.next() {
                Ok(Some(frame)) => {
                    if out.len() >= MAX_FRAMES {
                        return Outcome::TooDeep;
                    }
                    out.push(match frame {
                        FrameAddress::InstructionPointer(a) => a,
                        FrameAddress::ReturnAddress(a) => a.get().wrapping_sub(1),
                    });
                }
                Ok(None) => return Outcome::Complete,
                Err(framehop::Error::CouldNotReadStack(addr)) => {
                    return if addr >= stack_end && snapshot_cut {
                        Outcome::Truncated
                    } else {
                        Outcome::BadStackRead
                    };
                }
                Err(_) => return Outcome::Stuck,
            }
        }
    }
}
