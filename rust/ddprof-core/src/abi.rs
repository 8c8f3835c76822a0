//! Rust mirror of `bpf/sampler.h`, the contract with the BPF sampler.
//!
//! Input: raw ring buffer records. Output: a parsed [`Record`] borrowing the record's bytes.
//! Any change here goes with the same change in the header; the size assertions catch drift.

/// Must match DDPROF_MAX_KSTACK_DEPTH.
pub const MAX_KSTACK_DEPTH: usize = 127;
/// Must match DDPROF_MAX_UFP_DEPTH.
pub const MAX_UFP_DEPTH: usize = 127;
/// Must match DDPROF_MAX_USTACK_BYTES.
pub const MAX_USTACK_BYTES: u32 = 64 * 1024;

pub const F_USER_REGS: u32 = 0x1;
pub const F_KERNEL_MODE: u32 = 0x2;
pub const F_USTACK_CUT: u32 = 0x4;

/// Indices of the per-CPU `counters` map (enum ddprof_counter).
pub mod counter {
    pub const SAMPLES: u32 = 0;
    pub const FILTERED: u32 = 1;
    pub const RB_DROPPED: u32 = 2;
    pub const USTACK_FAILED: u32 = 3;
    pub const KSTACK_FAILED: u32 = 4;
    pub const REGS_FAILED: u32 = 5;
    pub const USTACK_CLAMPED: u32 = 6;
    pub const NEW_PIDS: u32 = 7;
    pub const UFP_FAILED: u32 = 8;
    pub const MAX: u32 = 9;
    /// Names reported in the stats, by index.
    pub const NAMES: [(u32, &str); 9] = [
        (SAMPLES, "bpf_samples"),
        (FILTERED, "bpf_filtered"),
        (RB_DROPPED, "lost"),
        (USTACK_FAILED, "bpf_ustack_failed"),
        (KSTACK_FAILED, "bpf_kstack_failed"),
        (REGS_FAILED, "bpf_no_user_regs"),
        (USTACK_CLAMPED, "bpf_ustack_clamped"),
        (NEW_PIDS, "bpf_new_pids"),
        (UFP_FAILED, "bpf_fp_chain_failed"),
    ];
}

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
    pub fn kernel_stack(&self) -> impl Iterator<Item = u64> + 'a {
        self.kstack
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
    }
}
