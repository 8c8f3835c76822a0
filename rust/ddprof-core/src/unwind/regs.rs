//! The register state of one frame during a walk: the value of each user register and
//! whether it is known in that frame.
//!
//! In the sampled frame every register is known. Unwinding one call makes the caller's
//! callee-saved registers known only when they were never touched (the CFI has no rule for
//! them: "same value") or when the CFI says where they were saved; the caller-saved ones are
//! unknown unless the CFI restores them (signal frames restore all of them). A rule that
//! needs an unknown register fails the walk with [`super::Outcome::LostRegister`] instead
//! of computing a wrong frame from a clobbered value.
use crate::arch::{self, UserRegs, USER_REGS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Regs {
    values: [u64; USER_REGS],
    /// Bit n: register n is known.
    known: u64,
}

impl Regs {
    /// The sampled frame: every register known.
    pub fn sampled(r: &UserRegs) -> Regs {
        Regs { values: r.regs, known: (1u64 << USER_REGS) - 1 }
    }

    /// A frame known only by its pc, sp and maybe frame pointer: a stack's saved state (a
    /// goroutine's `g.sched`, a frame on another stack). Rules that need any other
    /// register fail with [`super::Outcome::LostRegister`].
    pub fn partial(ip: u64, sp: u64, fp: Option<u64>) -> Regs {
        let mut r = Regs { values: [0; USER_REGS], known: 0 };
        r.set(arch::REG_IP, ip);
        r.set(arch::REG_SP, sp);
        if let Some(fp) = fp {
            r.set(arch::REG_FP, fp);
        }
        r
    }

    /// `reg` in this frame, when known.
    #[inline]
    pub fn get(&self, reg: u16) -> Option<u64> {
        let i = reg as usize;
        (i < USER_REGS && self.known & (1 << i) != 0).then(|| self.values[i])
    }

    /// Sets `reg` (a register this architecture records; others are ignored).
    #[inline]
    pub fn set(&mut self, reg: u16, value: u64) {
        let i = reg as usize;
        if i < USER_REGS {
            self.values[i] = value;
            self.known |= 1 << i;
        }
    }

    pub fn forget(&mut self, reg: u16) {
        let i = reg as usize;
        if i < USER_REGS {
            self.known &= !(1 << i);
        }
    }

    /// The caller's registers before its rules are applied: what a call preserves.
    #[inline]
    pub fn across_call(&self) -> Regs {
        Regs { values: self.values, known: self.known & arch::CALLEE_SAVED }
    }

    /// The registers as they are, every one kept (the caller of a signal frame, whose rules
    /// restore each register the kernel saved).
    #[inline]
    pub fn unchanged(&self) -> Regs {
        *self
    }

    pub fn ip(&self) -> u64 {
        self.values[arch::REG_IP as usize]
    }

    pub fn sp(&self) -> u64 {
        self.values[arch::REG_SP as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_clobbers_what_the_callee_may_change() {
        let mut u = UserRegs::default();
        u.regs[arch::REG_SP as usize] = 0x7000;
        let r = Regs::sampled(&u);
        assert_eq!(r.get(arch::REG_SP), Some(0x7000));
        assert_eq!(r.get(0), Some(0));
        let c = r.across_call();
        assert_eq!(c.get(arch::REG_SP), Some(0x7000));
        assert_eq!(c.get(arch::REG_FP), Some(0));
        assert_eq!(c.get(0), None, "x86 rax / aarch64 x0 are the caller's to save");
        assert_eq!(c.get(200), None);
    }

    #[test]
    fn a_saved_state_knows_three_registers() {
        let r = Regs::partial(0x47_ed08, 0xc000_1000, Some(0xc000_1040));
        assert_eq!((r.ip(), r.sp(), r.get(arch::REG_FP)), (0x47_ed08, 0xc000_1000, Some(0xc000_1040)));
        assert_eq!(r.get(0), None);
        assert_eq!(Regs::partial(1, 2, None).get(arch::REG_FP), None);
    }
}
