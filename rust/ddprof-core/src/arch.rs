//! The one place that names the target architecture: framehop's unwinder, cache and register
//! types for it, the registers a walk starts from, and the ELF machine names the symbol
//! backend uses. Every other module is architecture-neutral; `build.rs` picks the BPF
//! target the same way.
//!
//! Supported: x86_64 and aarch64. On aarch64 the sampler does not record the link register
//! yet (the record's register set grows in issue 10): a leaf that has not saved it loses its
//! caller, and the walk is marked where it stops.
use crate::addr::Avma;

/// The user registers a walk starts from, as the sampler took them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: Avma,
    pub sp: u64,
    /// The frame pointer: rbp on x86_64, x29 on aarch64.
    pub fp: u64,
}

/// How to unwind one frame of code that has no CFI but a known shape: the caller's stack
/// pointer is `sp + cfa_offset`, its return address is at `sp + ra_at`, and its frame
/// pointer at `sp + fp_at` (else unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownRule {
    pub cfa_offset: u64,
    pub ra_at: u64,
    pub fp_at: Option<u64>,
}

#[cfg(target_arch = "x86_64")]
mod imp {
    pub use framehop::x86_64::{CacheX86_64 as UnwindCache, UnwindRegsX86_64 as UnwindRegs, UnwinderX86_64 as Unwinder};

    /// Our architecture's name, as ELF machines are named in symbol uploads.
    pub const NAME: &str = "x86_64";

    pub fn unwind_regs(r: &super::UserRegs) -> UnwindRegs {
        UnwindRegs::new(r.ip.0, r.sp, r.fp)
    }

    /// Applies `rule` to `regs`; the return address, or the stack address that could not
    /// be read.
    pub fn apply_known_rule(
        rule: &super::KnownRule,
        regs: &mut UnwindRegs,
        read: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Result<u64, u64> {
        let sp = regs.sp();
        let at = |off: u64| sp.wrapping_add(off);
        let ra = read(at(rule.ra_at)).map_err(|()| at(rule.ra_at))?;
        if let Some(fp) = rule.fp_at {
            let bp = read(at(fp)).map_err(|()| at(fp))?;
            regs.set_bp(bp);
        }
        regs.set_sp(at(rule.cfa_offset));
        Ok(ra)
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    pub use framehop::aarch64::{CacheAarch64 as UnwindCache, UnwindRegsAarch64 as UnwindRegs, UnwinderAarch64 as Unwinder};

    pub const NAME: &str = "aarch64";

    pub fn unwind_regs(r: &super::UserRegs) -> UnwindRegs {
        // The link register is not in the record yet (see the module doc).
        UnwindRegs::new(0, r.sp, r.fp)
    }

    /// Known-shape rules are x86_64's only for now (CPython's aarch64 trampoline keeps its
    /// return address in x30): never applied.
    pub fn apply_known_rule(
        _rule: &super::KnownRule,
        regs: &mut UnwindRegs,
        _read: &mut dyn FnMut(u64) -> Result<u64, ()>,
    ) -> Result<u64, u64> {
        Err(regs.sp())
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("ddprofiler supports x86_64 and aarch64 only");

pub use imp::{apply_known_rule, unwind_regs, UnwindCache, UnwindRegs, Unwinder, NAME};

/// The name of an ELF `e_machine`, as Datadog's symbol upload spells architectures
/// (`x86_64`, `aarch64`), else `em_<n>`.
pub fn elf_machine_name(machine: u16) -> String {
    match machine {
        object::elf::EM_X86_64 => "x86_64".into(),
        object::elf::EM_AARCH64 => "aarch64".into(),
        n => format!("em_{n}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn machine_names() {
        assert_eq!(super::elf_machine_name(62), "x86_64");
        assert_eq!(super::elf_machine_name(183), "aarch64");
        assert_eq!(super::elf_machine_name(3), "em_3");
    }
}
