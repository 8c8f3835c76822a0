//! Rust mirror of `bpf/sampler.h`, the contract with the BPF sampler.
//!
//! Input: raw ring buffer records. Output: their kind ([`record_kind`]), a parsed stack
//! [`Record`] (a CPU sample or an off-CPU switch-out) borrowing the record's bytes, or an
//! off-CPU [`OffCpuWeight`].
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
/// Must match DDPROF_GO_WINDOW_BYTES.
pub const GO_WINDOW_BYTES: usize = 4096;

pub const F_USER_REGS: u32 = 0x1;
pub const F_KERNEL_MODE: u32 = 0x2;
pub const F_USTACK_CUT: u32 = 0x4;
pub const F_GO_WINDOW_CUT: u32 = 0x8;
pub const F_PREEMPTED: u32 = 0x10;

/// enum ddprof_record_kind: a record's first u32.
pub const REC_CPU: u32 = 0;
pub const REC_OFFCPU_STACK: u32 = 1;
pub const REC_OFFCPU_WEIGHT: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleHeader {
    /// enum ddprof_record_kind: [`REC_CPU`] or [`REC_OFFCPU_STACK`].
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_MONOTONIC; an off-CPU stack's switch-out, which its weight record names.
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
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
    pub _pad: u32,
    /// DWARF order (`arch`).
    pub regs: [u64; USER_REGS],
    /// The Go window's saved sp (where it starts), and the goroutine's saved pc and bp.
    pub go_sp: u64,
    pub go_pc: u64,
    pub go_bp: u64,
    /// m.g0.sched.sp: where a switch to the system stack puts sp.
    pub go_g0_sp: u64,
    pub go_window_len: u32,
    /// enum ddprof_go_window.
    pub go_window: u32,
}

const _: () = assert!(std::mem::size_of::<SampleHeader>() == 112 + 8 * USER_REGS);

/// struct offcpu_weight: how long a thread stayed switched out since the switch-out whose
/// stack record has the same `tid` and `ktime_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuWeight {
    pub kind: u32,
    /// Where the thread switched in.
    pub cpu: u32,
    /// Its switch-out: the stack record's `ktime_ns`.
    pub ktime_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub blocked_ns: u64,
}

const _: () = assert!(std::mem::size_of::<OffCpuWeight>() == 32);

impl OffCpuWeight {
    /// Parses a weight record; `None` when it is short or of another kind.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<OffCpuWeight>() || record_kind(bytes) != Some(REC_OFFCPU_WEIGHT) {
            return None;
        }
        // SAFETY: OffCpuWeight is plain old data of the size checked above; read_unaligned
        // copes with any alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<OffCpuWeight>()) })
    }
}

/// The kind of a record (its first u32); `None` for a record shorter than that.
pub fn record_kind(bytes: &[u8]) -> Option<u32> {
    bytes.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// enum ddprof_go_window: which stack of a Go thread the Go window holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoWindowKind {
    /// Sampled on a goroutine's stack (cgo binaries): g0's stack from `m.g0.sched.sp`.
    G0,
    /// Sampled on g0 while the thread's goroutine is off its stack: the goroutine's stack
    /// from its saved `sched.sp`, with its saved pc and bp.
    Curg,
}

impl GoWindowKind {
    /// None for DDPROF_GO_WINDOW_NONE; Err for a value the header does not define.
    fn from_raw(v: u32) -> Result<Option<GoWindowKind>, ()> {
        match v {
            0 => Ok(None),
            1 => Ok(Some(GoWindowKind::G0)),
            2 => Ok(Some(GoWindowKind::Curg)),
            _ => Err(()),
        }
    }
}

/// The Go window of a sample: a copy of the sampled thread's other stack.
#[derive(Clone, Copy, Debug)]
pub struct GoWindow<'a> {
    pub kind: GoWindowKind,
    /// The bytes, from `sp` up.
    pub bytes: &'a [u8],
    /// The stack's saved sp, the address of `bytes[0]`.
    pub sp: u64,
    /// The goroutine's saved pc and bp ([`GoWindowKind::Curg`]; 0 otherwise).
    pub pc: u64,
    pub bp: u64,
    /// `m.g0.sched.sp`: the sp a switch to the system stack starts from.
    pub g0_sp: u64,
    /// The copy stopped at its size limit (or an unreadable page), below the stack's top.
    pub cut: bool,
}

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

/// struct go_proc: the `go_procs` map's value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoProc {
    pub tls_g: i64,
    pub g_stack_hi: u16,
    pub g_m: u16,
    pub g_sched: u16,
    pub gobuf_pc: u16,
    pub gobuf_bp: u16,
    pub m_g0: u16,
    pub m_curg: u16,
    pub cgo: u8,
    pub _pad: u8,
}

const _: () = assert!(std::mem::size_of::<GoProc>() == 24);
// SAFETY: plain old data, no padding (the size assertion above), any bit pattern is valid.
unsafe impl aya::Pod for GoProc {}

impl From<&crate::unwind::go_runtime::GoRuntime> for GoProc {
    fn from(r: &crate::unwind::go_runtime::GoRuntime) -> Self {
        let o = &r.offsets;
        GoProc {
            tls_g: r.tls_g,
            g_stack_hi: o.g_stack_hi,
            g_m: o.g_m,
            g_sched: o.g_sched,
            gobuf_pc: o.gobuf_pc,
            gobuf_bp: o.gobuf_bp,
            m_g0: o.m_g0,
            m_curg: o.m_curg,
            cgo: u8::from(r.cgo),
            _pad: 0,
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
    pub go_window: Option<GoWindow<'a>>,
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
        let go_off = py_off + plen;
        let glen = header.go_window_len as usize;
        if !matches!(header.kind, REC_CPU | REC_OFFCPU_STACK)
            || ulen > MAX_USTACK_BYTES as usize
            || header.kstack_len as usize > MAX_KSTACK_DEPTH
            || header.ufp_len as usize > MAX_UFP_DEPTH
            || header.py_len as usize > MAX_PY_FRAMES
            || header.ustack_below_sp as usize > ulen
            || glen > GO_WINDOW_BYTES
            || go_off + glen > bytes.len()
        {
            return None;
        }
        let go_window = match GoWindowKind::from_raw(header.go_window).ok()? {
            Some(kind) if glen > 0 => Some(GoWindow {
                kind,
                bytes: &bytes[go_off..go_off + glen],
                sp: header.go_sp,
                pc: header.go_pc,
                bp: header.go_bp,
                g0_sp: header.go_g0_sp,
                cut: header.flags & F_GO_WINDOW_CUT != 0,
            }),
            _ => None,
        };
        Some(Record {
            header,
            ustack: &bytes[HDR..HDR + ulen],
            kstack: &bytes[kstack_off..ufp_off],
            ufp: &bytes[ufp_off..py_off],
            py: &bytes[py_off..go_off],
            py_status: PyStatus::from_raw(header.py_status)?,
            go_window,
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
        assert_eq!(header_define("DDPROF_GO_WINDOW_BYTES"), GO_WINDOW_BYTES as u64);
        assert_eq!(header_define("DDPROF_F_GO_WINDOW_CUT"), u64::from(F_GO_WINDOW_CUT));
        assert_eq!(header_define("DDPROF_F_PREEMPTED"), u64::from(F_PREEMPTED));
        assert_eq!(header_define("DDPROF_ABI_VERSION"), 6);
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
        use std::mem::offset_of;
        let mut bytes = vec![0u8; HDR + 16 + 8];
        // ustack_len 12 (padded to 16), one kernel address.
        let (k, u) = (offset_of!(SampleHeader, kstack_len), offset_of!(SampleHeader, ustack_len));
        bytes[k..k + 4].copy_from_slice(&1u32.to_ne_bytes());
        bytes[u..u + 4].copy_from_slice(&12u32.to_ne_bytes());
        bytes[HDR + 16..].copy_from_slice(&0xffff_ffff_8100_0000u64.to_ne_bytes());
        let r = Record::parse(&bytes).expect("a valid record");
        assert_eq!(r.ustack.len(), 12);
        assert_eq!(r.kernel_stack().collect::<Vec<_>>(), [Avma(0xffff_ffff_8100_0000)]);
        assert!(r.user_regs().is_none());
        assert!(Record::parse(&bytes[..HDR + 16]).is_none(), "a kernel stack past the end");
        assert!(Record::parse(&bytes[..HDR - 1]).is_none());
        // An off-CPU stack parses as a stack; a weight record, or an unknown kind, does not.
        bytes[..4].copy_from_slice(&REC_OFFCPU_STACK.to_ne_bytes());
        assert_eq!(Record::parse(&bytes).expect("a stack").header.kind, REC_OFFCPU_STACK);
        bytes[..4].copy_from_slice(&REC_OFFCPU_WEIGHT.to_ne_bytes());
        assert!(Record::parse(&bytes).is_none());
        bytes[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert!(Record::parse(&bytes).is_none());
    }

    #[test]
    fn weight_records_are_parsed() {
        let w = OffCpuWeight { kind: REC_OFFCPU_WEIGHT, cpu: 1, ktime_ns: 5_000, pid: 10, tid: 11, blocked_ns: 200_000_000 };
        // SAFETY: plain old data, read as bytes.
        let bytes = unsafe { std::slice::from_raw_parts((&w as *const OffCpuWeight).cast::<u8>(), 32) }.to_vec();
        assert_eq!(record_kind(&bytes), Some(REC_OFFCPU_WEIGHT));
        assert_eq!(OffCpuWeight::parse(&bytes), Some(w));
        assert_eq!(OffCpuWeight::parse(&bytes[..31]), None);
        assert_eq!(record_kind(&bytes[..3]), None);
    }

    #[test]
    fn the_go_window_follows_the_python_frames() {
        use std::mem::offset_of;
        let put32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let put64 = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        // 8 stack bytes, one Python frame, a 24-byte curg window.
        let mut bytes = vec![0u8; HDR + 8 + 16 + 24];
        put32(&mut bytes, offset_of!(SampleHeader, ustack_len), 8);
        bytes[offset_of!(SampleHeader, py_len)] = 1;
        put32(&mut bytes, offset_of!(SampleHeader, flags), F_GO_WINDOW_CUT);
        put64(&mut bytes, offset_of!(SampleHeader, go_sp), 0xc000_1000);
        put64(&mut bytes, offset_of!(SampleHeader, go_pc), 0x47_ed08);
        put64(&mut bytes, offset_of!(SampleHeader, go_bp), 0xc000_1040);
        put64(&mut bytes, offset_of!(SampleHeader, go_g0_sp), 0x7ffe_0000);
        put32(&mut bytes, offset_of!(SampleHeader, go_window_len), 24);
        put32(&mut bytes, offset_of!(SampleHeader, go_window), 2);
        put64(&mut bytes, HDR + 8 + 16, 0x47_9475);
        let r = Record::parse(&bytes).expect("a valid record");
        assert_eq!(r.python_frames().count(), 1);
        let w = r.go_window.expect("a window");
        assert_eq!((w.kind, w.sp, w.pc, w.bp, w.g0_sp), (GoWindowKind::Curg, 0xc000_1000, 0x47_ed08, 0xc000_1040, 0x7ffe_0000));
        assert_eq!((w.cut, w.bytes.len()), (true, 24));
        assert_eq!(w.bytes[..8], 0x47_9475u64.to_ne_bytes());
        // A window past the record's end, longer than the sampler copies, of an unknown kind.
        assert!(Record::parse(&bytes[..bytes.len() - 1]).is_none());
        put32(&mut bytes, offset_of!(SampleHeader, go_window), 3);
        assert!(Record::parse(&bytes).is_none());
        put32(&mut bytes, offset_of!(SampleHeader, go_window), 1);
        put32(&mut bytes, offset_of!(SampleHeader, go_window_len), GO_WINDOW_BYTES as u32 + 8);
        assert!(Record::parse(&bytes).is_none());
        // No window: none parsed, whatever the kind says.
        put32(&mut bytes, offset_of!(SampleHeader, go_window_len), 0);
        assert!(Record::parse(&bytes).expect("valid").go_window.is_none());
    }
}
