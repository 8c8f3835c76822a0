//! The one place that names the target architecture: the user registers a sample carries
//! (in DWARF register order, as `bpf/sampler.h` lays them out), which of them a callee
//! preserves, where the return address and the frame pointer are, and the ELF machine names
//! the symbol backend uses. Every other module is architecture-neutral; `build.rs` picks
//! the BPF target the same way.
//!
//! Supported: x86_64 and aarch64 (System V / AAPCS64 calling conventions, the DWARF register
//! numbers of their psABIs).
use crate::addr::Avma;

#[cfg(target_arch = "x86_64")]
mod imp {
    /// Our architecture's name, as ELF machines are named in symbol uploads.
    pub const NAME: &str = "x86_64";
    /// Registers in a sample: rax rdx rcx rbx rsi rdi rbp rsp r8-r15 rip (DWARF 0-16).
    pub const USER_REGS: usize = 17;
    pub const REG_SP: u16 = 7;
    pub const REG_FP: u16 = 6;
    /// Where the record keeps the instruction pointer; also DWARF's return address column.
    pub const REG_IP: u16 = 16;
    /// The return address column of CIEs (the "RA" pseudo register, 16).
    pub const RA_COLUMN: u16 = 16;
    /// rbx, rbp, rsp, r12-r15: what a callee hands back unchanged (psABI 3.2.1); the rest
    /// is clobbered by any call, so a caller's value of them is unknown.
    pub const CALLEE_SAVED: u64 = (1 << 3) | (1 << 6) | (1 << 7) | (0xf << 12);
    /// A return address is pushed by the call: the caller's sp is the CFA, the return
    /// address at CFA - 8, when no CFI says otherwise.
    pub const RA_ON_STACK: bool = true;
    /// Bytes of the frame record below the CFA: saved frame pointer at CFA - 16.
    pub const FP_SLOT: u64 = 16;
}

#[cfg(target_arch = "aarch64")]
mod imp {
    pub const NAME: &str = "aarch64";
    /// x0-x30 (DWARF 0-30), sp (31), then the pc (not a DWARF register; slot 32).
    pub const USER_REGS: usize = 33;
    pub const REG_SP: u16 = 31;
    pub const REG_FP: u16 = 29;
    pub const REG_IP: u16 = 32;
    /// The link register x30 holds the return address.
    pub const RA_COLUMN: u16 = 30;
    /// x19-x28, x29 (fp), sp (AAPCS64 6.1.1); x30 is the caller's to save.
    pub const CALLEE_SAVED: u64 = (0x3ff << 19) | (1 << 29) | (1 << 31);
    pub const RA_ON_STACK: bool = false;
    pub const FP_SLOT: u64 = 16;
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("ddprofiler supports x86_64 and aarch64 only");

pub use imp::*;

/// The user registers of a sample, as the sampler took them (DWARF order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegs {
    pub regs: [u64; USER_REGS],
}

impl Default for UserRegs {
    fn default() -> Self {
        UserRegs { regs: [0; USER_REGS] }
    }
}

impl UserRegs {
    pub fn ip(&self) -> Avma {
        Avma(self.regs[REG_IP as usize])
    }
    pub fn sp(&self) -> u64 {
        self.regs[REG_SP as usize]
    }
    pub fn fp(&self) -> u64 {
        self.regs[REG_FP as usize]
    }
}

/// A return address as code jumps to it: on aarch64 with pointer authentication the top
/// bits carry a signature (PAC) that the hardware strips when it authenticates; user
/// addresses are below 2^48 (55 with LVA, still clear of the PAC bits in use).
pub fn strip_return_address(ra: u64) -> u64 {
    if cfg!(target_arch = "aarch64") {
        ra & 0x0000_ffff_ffff_ffff
    } else {
        ra
    }
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
    use super::*;

    #[test]
    fn machine_names() {
        assert_eq!(elf_machine_name(62), "x86_64");
        assert_eq!(elf_machine_name(183), "aarch64");
        assert_eq!(elf_machine_name(3), "em_3");
    }

    #[test]
    fn registers_are_in_range() {
        for r in [REG_SP, REG_FP, REG_IP, RA_COLUMN] {
            assert!((r as usize) < USER_REGS);
        }
        assert_eq!(CALLEE_SAVED >> USER_REGS, 0);
        assert_ne!(CALLEE_SAVED & (1 << REG_SP), 0, "sp is the CFA: always known");
    }
}
