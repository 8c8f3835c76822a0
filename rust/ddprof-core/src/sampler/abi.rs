//! Rust mirror of `bpf/sampler.h`, the contract with the BPF sampler.
//!
//! Input: raw ring buffer records. Output: a parsed [`Record`] borrowing the record's bytes.
//! Any change here goes with the same change in the header; the size assertions catch drift.
//! The counter indices are not mirrored by hand: `build.rs` generates them from the header
//! (see `crate::counters`).
use crate::addr::Avma;
use crate::arch::{UserRegs, USER_REGS};

/// Must match DDPROF_MAX_KSTACK_DEPTH.
pub const MAX_KSTACK_DEPTH: usize = 127;
/// Must match DDPROF_MAX_UFP_DEPTH.
pub const MAX_UFP_DEPTH: usize = 127;
/// Must match DDPROF_MAX_USTACK_BYTES.
pub const MAX_USTACK_BYTES: u32 = 64 * 1024;
/// Must match DDPROF_MAX_PY_FRAMES.
pub const MAX_PY_FRAMES: usize = 160;
/// Must match DDPROF_PY_FRAME_BLOCK.
pub const PY_FRAME_BLOCK: usize = 128;

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
    pub kstack_len: u32,
    pub ustack_len: u32,
    pub ufp_len: u32,
    /// The process's mappings generation when sampled (exec and code unmaps move it).
    pub map_gen: u32,
    pub comm: [u8; 16],
    pub py_len: u16,
    pub py_status: u16,
    /// The snapshot starts this many bytes below sp (the red zone).
    pub ustack_below_sp: u32,
    /// DWARF order (`arch`).
    pub regs: [u64; USER_REGS],
}

const _: () = assert!(std::mem::size_of::<SampleHeader>() == 64 + 8 * USER_REGS);

/// enum ddprof_py_status: how the walk of a sample's Python frames ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyStatus {
    None,
    Ok,
    NoThread,
    NoFrame,
    ReadFailed,
    Cut,
}

impl PyStatus {
    fn from_raw(v: u16) -> Option<PyStatus> {
        Some(match v {
            0 => PyStatus::None,
            1 => PyStatus::Ok,
            2 => PyStatus::NoThread,
            3 => PyStatus::NoFrame,
            4 => PyStatus::ReadFailed,
            5 => PyStatus::Cut,
            _ => return None,
        })
    }
}

/// struct py_proc: the `py_procs` map's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PyProc {
    pub runtime: u64,
    pub interp_head: u32,
    pub threads_head: u16,
    pub tstate_next: u16,
    pub tstate_id: u16,
    pub tstate_frame: u16,
    pub cframe_frame: u16,
    pub frame_code: u16,
    pub frame_previous: u16,
    pub frame_instr: u16,
    pub frame_entry: u16,
    pub block_len: u16,
    pub id_is_pthread: u8,
    pub _pad: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<PyProc>() == 40);
// SAFETY: plain old data, no padding (the size assertion above), any bit pattern is valid.
unsafe impl aya::Pod for PyProc {}

impl From<&crate::cpython::PyProcConfig> for PyProc {
    fn from(c: &crate::cpython::PyProcConfig) -> Self {
        PyProc {
            runtime: c.runtime,
            interp_head: c.interp_head,
            threads_head: c.threads_head,
            tstate_next: c.tstate_next,
            tstate_id: c.tstate_id,
            tstate_frame: c.tstate_frame,
            cframe_frame: c.cframe_frame,
            frame_code: c.frame_code,
            frame_previous: c.frame_previous,
            frame_instr: c.frame_instr,
            frame_entry: c.frame_entry,
            block_len: c.block_len,
            id_is_pthread: c.id_is_pthread,
            _pad: [0; 7],
        }
    }
}

const PY_FRAME_BYTES: usize = 16;
const HDR: usize = std::mem::size_of::<SampleHeader>();

/// One sample as it came out of the ring buffer.
pub struct Record<'a> {
    pub header: SampleHeader,
    /// User stack bytes starting at sp minus `header.ustack_below_sp`.
    pub ustack: &'a [u8],
    kstack: &'a [u8],
    ufp: &'a [u8],
    py: &'a [u8],
    pub py_status: PyStatus,
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
        let py_off = ufp_off + flen;
        let plen = header.py_len as usize * PY_FRAME_BYTES;
        if ulen > MAX_USTACK_BYTES as usize
            || header.kstack_len as usize > MAX_KSTACK_DEPTH
            || header.ufp_len as usize > MAX_UFP_DEPTH
            || header.py_len as usize > MAX_PY_FRAMES
            || header.ustack_below_sp as usize > ulen
            || py_off + plen > bytes.len()
        {
            return None;
        }
        Some(Record {
            header,
            ustack: &bytes[HDR..HDR + ulen],
            kstack: &bytes[kstack_off..ufp_off],
            ufp: &bytes[ufp_off..py_off],
            py: &bytes[py_off..py_off + plen],
            py_status: PyStatus::from_raw(header.py_status)?,
        })
    }

    /// The user registers at the sample, when the header says they are valid.
    pub fn user_regs(&self) -> Option<UserRegs> {
        let h = &self.header;
        (h.flags & F_USER_REGS != 0).then_some(UserRegs { regs: h.regs })
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

    /// The Python frames the sampler read, leaf first, raw: (code field, instruction field
    /// with the entry byte in bits 56-63).
    pub fn python_frames(&self) -> impl Iterator<Item = crate::cpython::RawPyFrame> + 'a {
        self.py.chunks_exact(PY_FRAME_BYTES).map(|c| {
            let word = |i: usize| u64::from_ne_bytes([c[i], c[i + 1], c[i + 2], c[i + 3], c[i + 4], c[i + 5], c[i + 6], c[i + 7]]);
            crate::cpython::RawPyFrame { code: word(0), instr: word(8) }
        })
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
        assert_eq!(header_define("DDPROF_MAX_PY_FRAMES"), MAX_PY_FRAMES as u64);
        assert_eq!(header_define("DDPROF_PY_FRAME_BLOCK"), PY_FRAME_BLOCK as u64);
        assert_eq!(PY_FRAME_BLOCK, crate::cpython::FRAME_BLOCK_BYTES);
        // The header's first block is x86_64's (the parser here does not evaluate #if).
        if cfg!(target_arch = "x86_64") {
            assert_eq!(header_define("DDPROF_USER_REGS"), USER_REGS as u64);
            assert_eq!(header_define("DDPROF_REG_IP"), u64::from(crate::arch::REG_IP));
            assert_eq!(header_define("DDPROF_REG_SP"), u64::from(crate::arch::REG_SP));
            assert_eq!(header_define("DDPROF_REG_FP"), u64::from(crate::arch::REG_FP));
        }
    }

    #[test]
    fn records_are_parsed_defensively() {
        let mut bytes = vec![0u8; HDR + 16 + 8];
        // ustack_len 12 (padded to 16), one kernel address.
        bytes[24..28].copy_from_slice(&1u32.to_ne_bytes());
        bytes[28..32].copy_from_slice(&12u32.to_ne_bytes());
        bytes[HDR + 16..].copy_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        let r = Record::parse(&bytes).expect("a valid record");
        assert_eq!(r.ustack.len(), 12);
        assert_eq!(r.kernel_stack().collect::<Vec<_>>(), [Avma(0xffff_ffff_8100_0000)]);
        assert!(r.user_regs().is_none());
        assert!(Record::parse(&bytes[..HDR + 16]).is_none(), "a kernel stack past the end");
        assert!(Record::parse(&bytes[..HDR - 1]).is_none());
    }
}
