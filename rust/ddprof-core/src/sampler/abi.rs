//! Rust mirror of `bpf/sampler.h`, the contract with the BPF sampler.
//!
//! Input: raw ring buffer records. Output: a parsed [`Record`] borrowing the record's bytes.
//! Any change here goes with the same change in the header; the size assertions catch drift.
//! The counter indices are not mirrored by hand: `build.rs` generates them from the header
//! (see `crate::counters`).
use crate::addr::Avma;
use crate::arch::UserRegs;

/// Must match DDPROF_MAX_KSTACK_DEPTH.
pub const MAX_KSTACK_DEPTH: usize = 127;
/// Must match DDPROF_MAX_UFP_DEPTH.
pub const MAX_UFP_DEPTH: usize = 127;
/// Must match DDPROF_MAX_USTACK_BYTES.
pub const MAX_USTACK_BYTES: u32 = 64 * 1024;

pub const F_USER_REGS: u32 = 0x1;
pub const F_KERNEL_MODE: u32 = 0x2;
pub const F_USTACK_CUT: u32 = 0x4;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleHeader {
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub flags: u32,
    pub user_ip: u64,
    pub user_sp: u64,
    pub user_bp: u64,
    pub kstack_len: u32,
    pub ustack_len: u32,
    pub comm: [u8; 16],
    pub ufp_len: u32,
    pub _pad: u32,
}

const _: () = assert!(std::mem::size_of::<SampleHeader>() == 80);
const HDR: usize = std::mem::size_of::<SampleHeader>();

/// One sample as it came out of the ring buffer.
pub struct Record<'a> {
    pub header: SampleHeader,
    /// User stack bytes starting at `header.user_sp`.
    pub ustack: &'a [u8],
    kstack: &'a [u8],
    ufp: &'a [u8],
}

impl<'a> Record<'a> {
    /// Parses a record; `None` when its lengths disagree with its size (never trusted blindly).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < HDR {
            return None;
        }
        // SAFETY: SampleHeader is plain old data of HDR bytes; read_unaligned copes with any
        // alignment of the ring buffer slice.
        let header: SampleHeader =
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SampleHeader>()) };
        let ulen = header.ustack_len as usize;
        let kstack_off = HDR + ((ulen + 7) & !7);
        let klen = header.kstack_len as usize * 8;
        let ufp_off = kstack_off + klen;
        let flen = header.ufp_len as usize * 8;
        if ulen > MAX_USTACK_BYTES as usize
            || header.kstack_len as usize > MAX_KSTACK_DEPTH
            || header.ufp_len as usize > MAX_UFP_DEPTH
            || ufp_off + flen > bytes.len()
        {
            return None;
        }
        Some(Record {
            header,
            ustack: &bytes[HDR..HDR + ulen],
            kstack: &bytes[kstack_off..ufp_off],
            ufp: &bytes[ufp_off..ufp_off + flen],
        })
    }

    /// The user registers at the sample, when the header says they are valid.
    pub fn user_regs(&self) -> Option<UserRegs> {
        let h = &self.header;
        (h.flags & F_USER_REGS != 0).then_some(UserRegs { ip: Avma(h.user_ip), sp: h.user_sp, fp: h.user_bp })
    }

    /// The user frame-pointer chain (ip, then return addresses), when the sampler took one.
    pub fn fp_chain(&self) -> impl Iterator<Item = u64> + 'a {
        self.ufp
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }

    pub fn has_fp_chain(&self) -> bool {
        !self.ufp.is_empty()
    }

    /// Kernel addresses, leaf first.
    pub fn kernel_stack(&self) -> impl Iterator<Item = Avma> + 'a {
        self.kstack
            .chunks_exact(8)
            .map(|c| Avma(u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `#define`s of the header, evaluated for the few forms it uses (`N`, `(A * B)`).
    fn header_define(name: &str) -> u64 {
        let header = include_str!("../../../../bpf/sampler.h");
        let line = header
            .lines()
            .find_map(|l| l.strip_prefix("#define ").and_then(|r| r.strip_prefix(name)).filter(|r| r.starts_with(' ')))
            .unwrap_or_else(|| panic!("{name} is not defined in sampler.h"));
        let expr = line.split("/*").next().unwrap_or("").trim().trim_matches(|c| c == '(' || c == ')');
        expr.split('*').map(|f| {
            let f = f.trim();
            f.strip_prefix("0x").map_or_else(|| f.parse::<u64>(), |h| u64::from_str_radix(h, 16)).expect("a number")
        }).product()
    }

    #[test]
    fn constants_match_the_header() {
        assert_eq!(header_define("DDPROF_MAX_KSTACK_DEPTH"), MAX_KSTACK_DEPTH as u64);
        assert_eq!(header_define("DDPROF_MAX_UFP_DEPTH"), MAX_UFP_DEPTH as u64);
        assert_eq!(header_define("DDPROF_MAX_USTACK_BYTES"), u64::from(MAX_USTACK_BYTES));
        assert_eq!(header_define("DDPROF_F_USER_REGS"), u64::from(F_USER_REGS));
        assert_eq!(header_define("DDPROF_F_KERNEL_MODE"), u64::from(F_KERNEL_MODE));
        assert_eq!(header_define("DDPROF_F_USTACK_CUT"), u64::from(F_USTACK_CUT));
    }

    #[test]
    fn records_are_parsed_defensively() {
        let mut bytes = vec![0u8; HDR + 16 + 8];
        // ustack_len 12 (padded to 16), one kernel address.
        bytes[48..52].copy_from_slice(&1u32.to_ne_bytes());
        bytes[52..56].copy_from_slice(&12u32.to_ne_bytes());
        bytes[HDR + 16..].copy_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        let r = Record::parse(&bytes).expect("a valid record");
        assert_eq!(r.ustack.len(), 12);
        assert_eq!(r.kernel_stack().collect::<Vec<_>>(), [Avma(0xffff_ffff_8100_0000)]);
        assert!(r.user_regs().is_none());
        assert!(Record::parse(&bytes[..HDR + 16]).is_none(), "a kernel stack past the end");
        assert!(Record::parse(&bytes[..HDR - 1]).is_none());
    }
}
