//! What the sampler must know of a Go program's runtime to copy the thread's other stack
//! (the Go window, `bpf/sampler.h`): where g is, and where g.m, m.g0, m.curg, g.sched and
//! the gobuf's sp, pc and bp are.
//!
//! Input: a Go executable ([`ElfFile`] with its [`GoFrames`]). Output: a [`GoRuntime`] (the
//! sampler's `struct go_proc`, through `sampler::abi::GoProc`), or why the window cannot be
//! taken (one log line per binary, the caller's).
//!
//! Where the values come from, x86_64 only:
//! - **From the binary's own code**, first: `runtime.systemstack`, which every Go binary has,
//!   reads exactly these fields before it switches stacks (Go 1.17 to 1.26, same shape):
//!   `MOVQ g(TLS), AX` (the TLS slot: `mov %fs:-8, %rax`, or in PIE builds `mov $-8, %rcx;
//!   mov %fs:(%rcx), %rax`), `MOVQ g_m(AX), BX`, `CMPQ AX, m_gsignal(BX)`, `MOVQ m_g0(BX),
//!   DX`, `CMPQ AX, m_curg(BX)`, then calls `gosave_systemstack_switch`, which stores the
//!   gobuf: `MOVQ $systemstack_switch+8, R9; MOVQ R9, (g_sched+gobuf_pc)(R14)`, `LEAQ
//!   8(SP), R9; MOVQ R9, (g_sched+gobuf_sp)(R14)`, `MOVQ BP, (g_sched+gobuf_bp)(R14)`.
//!   [`decode_systemstack`] reads the displacements (iced-x86, as the prologue analysis). The TLS slot can only come from the code: it is -8 when g is
//!   the executable's only TLS variable, but a cgo binary's C code may add its own.
//! - **From a table by Go version** ([`offsets_for`], the version from `.go.buildinfo`),
//!   the same values as OpenTelemetry's profiler keeps (`interpreter/go/offsets.go`),
//!   checked here against the DWARF of Go 1.19 and 1.26 builds (tests/go_runtime.rs): g.m
//!   48, g.sched 56, gobuf pc +8; gobuf bp +48 and m.curg 192 up to Go 1.24, +40 and 184
//!   from Go 1.25 (gobuf lost its `ret` word). The table checks the decoder: a release the
//!   table knows must agree with its code, else no window (a toolchain patched in ways
//!   neither knows). A release it does not know (newer) uses the code's values alone.
//!
//! g.stack.hi is at 8 in every release (g's first field is its stack, `lo` then `hi`).
//! [`GoRuntime::cgo`]: the binary calls C (cgo's `crosscall2` is in its function table), so
//! goroutine samples take g0's window (a callback's C frames); pure Go binaries only ever
//! need the goroutine's, from g0.
//!
//! Non-goals: arm64 (g is in x28 in Go code, and at a libc-specific TLS slot in C code),
//! Go code in shared libraries (`-buildmode=c-shared`: g's slot is only known at run time,
//! through the GOT; the decoder finds no constant and says so), Go before 1.18 (no
//! `.gopclntab` support).
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

use crate::elf::gobuildinfo::{go_version, GoVersion};
use crate::elf::ElfFile;

use super::go::{GoFrames, StackSwitch};

/// Field offsets of the runtime's g, m and gobuf, as `struct go_proc` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoOffsets {
    pub g_stack_hi: u16,
    pub g_m: u16,
    pub g_sched: u16,
    pub gobuf_pc: u16,
    pub gobuf_bp: u16,
    pub m_g0: u16,
    pub m_curg: u16,
}

/// A Go program's runtime, as the Go window needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoRuntime {
    /// None when the build info holds no release (the offsets are then the code's).
    pub version: Option<GoVersion>,
    /// g's address minus the thread pointer (the fs base).
    pub tls_g: i64,
    pub offsets: GoOffsets,
    /// The binary calls C: samples on goroutine stacks take g0's window.
    pub cgo: bool,
}

/// g.stack is g's first field: `lo`, then `hi`.
const G_STACK_HI: u16 = 8;
/// gobuf.sp is the gobuf's first field.
const GOBUF_SP: u16 = 0;

/// The offsets of Go release 1.`minor` on amd64, for the releases this table covers (1.18,
/// the first whose `.gopclntab` the unwinder reads, to 1.26).
pub fn offsets_for(v: GoVersion) -> Option<GoOffsets> {
    if v.major != 1 || !(18..=26).contains(&v.minor) {
        return None;
    }
    // Go 1.25 removed gobuf.ret (between lr and bp): gobuf.bp and everything in m after
    // m.morebuf (a gobuf) moved up 8 bytes.
    let (gobuf_bp, m_curg) = if v.minor >= 25 { (40, 184) } else { (48, 192) };
    Some(GoOffsets { g_stack_hi: G_STACK_HI, g_m: 48, g_sched: 56, gobuf_pc: 8, gobuf_bp, m_g0: 0, m_curg })
}

/// The runtime of the Go executable `file` (whose table is `frames`), or why the window
/// cannot be taken.
pub fn detect(file: &ElfFile, frames: &GoFrames) -> Result<GoRuntime, String> {
    if file.machine != object::elf::EM_X86_64 {
        return Err("the Go window is taken on x86_64 only".into());
    }
    let version = go_version(file.bytes());
    let code = decode_runtime(frames);
    let table = version.and_then(offsets_for);
    let (tls_g, offsets) = match (code, table) {
        (Ok(c), Some(t)) if c.offsets == t => (c.tls_g, t),
        (Ok(c), Some(t)) => {
            return Err(format!("its code says {:?}, the table for {} says {t:?}", c.offsets, fmt_version(version)));
        }
        (Ok(c), None) => (c.tls_g, c.offsets),
        (Err(e), _) => return Err(format!("{} runtime.systemstack: {e}", fmt_version(version))),
    };
    let cgo = frames.switch_entries(StackSwitch::Crosscall2).next().is_some();
    Ok(GoRuntime { version, tls_g, offsets, cgo })
}

fn fmt_version(v: Option<GoVersion>) -> String {
    v.map_or_else(|| "Go (no release in its build info)".into(), |v| v.to_string())
}

/// What [`decode_systemstack`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    pub tls_g: i64,
    pub offsets: GoOffsets,
}

/// Finds runtime.systemstack and the gosave_systemstack_switch it calls, and decodes them.
fn decode_runtime(frames: &GoFrames) -> Result<Decoded, String> {
    let entry = frames.switch_entries(StackSwitch::SystemStack).next().ok_or("not in the function table")?;
    let code = frames.code_bytes(entry, PROLOGUE_BYTES).ok_or("its code is not in .text")?;
    decode_systemstack(entry, code, |svma| frames.code_bytes(svma, PROLOGUE_BYTES).map(<[u8]>::to_vec))
}

/// Bytes decoded from the start of each function: the prologues are 60-90 bytes.
const PROLOGUE_BYTES: usize = 128;
/// Instructions decoded per function before giving up.
const MAX_INSNS: usize = 24;

/// Decodes runtime.systemstack's prologue (`code`, at `entry`) and the function it calls
/// first (`callee(svma)`: its bytes): see the module doc for the instructions read.
pub fn decode_systemstack(entry: u64, code: &[u8], callee: impl Fn(u64) -> Option<Vec<u8>>) -> Result<Decoded, String> {
    // Registers loaded with a constant (the TLS offset in PIE builds).
    let mut imm: Vec<(Register, i64)> = Vec::new();
    let (mut tls, mut g_reg, mut m_reg) = (None, None, None);
    let (mut g_m, mut m_g0, mut m_curg, mut gosave) = (None, None, None, None);
    for ins in Decoder::with_ip(64, code, entry, DecoderOptions::NONE).into_iter().take(MAX_INSNS) {
        if ins.is_invalid() {
            return Err(format!("undecodable code at {:#x}", ins.ip()));
        }
        let dst = (ins.op_count() > 0 && ins.op0_kind() == OpKind::Register).then(|| ins.op0_register());
        match (ins.mnemonic(), dst, mem_operand(&ins, 1)) {
            (Mnemonic::Mov, Some(r), None) if is_immediate(ins.op1_kind()) => imm.push((r, ins.immediate(1) as i64)),
            (Mnemonic::Mov, Some(r), Some((base, disp))) if ins.memory_segment() == Register::FS => {
                tls = match base {
                    Register::None => Some(disp),
                    b if disp == 0 => imm.iter().rev().find(|(reg, _)| *reg == b).map(|(_, v)| *v),
                    _ => None,
                };
                g_reg = Some(r);
            }
            (Mnemonic::Mov, Some(r), Some((base, disp))) if Some(base) == g_reg && g_m.is_none() => {
                g_m = Some(disp);
                m_reg = Some(r);
            }
            (Mnemonic::Mov, Some(_), Some((base, disp))) if Some(base) == m_reg && m_g0.is_none() => m_g0 = Some(disp),
            // CMPQ AX, m_gsignal(BX) comes before the g0 load, CMPQ AX, m_curg(BX) after.
            (Mnemonic::Cmp, Some(r), Some((base, disp))) if Some(base) == m_reg && Some(r) == g_reg && m_g0.is_some() => {
                m_curg = Some(disp);
            }
            (Mnemonic::Call, _, _) => {
                gosave = matches!(ins.op0_kind(), OpKind::NearBranch64).then(|| ins.near_branch_target());
                break;
            }
            _ => {}
        }
    }
    let tls_g = tls.ok_or("no constant TLS slot of g")?;
    let (g_m, m_g0, m_curg) = (g_m.ok_or("no load of g.m")?, m_g0.ok_or("no load of m.g0")?, m_curg.ok_or("no compare with m.curg")?);
    let gosave = gosave.ok_or("no call of gosave_systemstack_switch")?;
    let code = callee(gosave).ok_or("gosave_systemstack_switch is not in .text")?;
    let (sched_sp, sched_pc, sched_bp) = decode_gosave(gosave, &code)?;
    let field = |v: i64, what: &str| u16::try_from(v).map_err(|_| format!("{what} offset {v} out of range"));
    let g_sched = field(sched_sp, "g.sched")?.checked_sub(GOBUF_SP).ok_or("g.sched before gobuf.sp")?;
    let rel = |v: i64, what: &str| field(v, what)?.checked_sub(g_sched).ok_or_else(|| format!("{what} before g.sched"));
    if !(-4096..0).contains(&tls_g) || tls_g % 8 != 0 {
        return Err(format!("TLS slot of g {tls_g} is not in the executable's TLS block"));
    }
    Ok(Decoded {
        tls_g,
        offsets: GoOffsets {
            g_stack_hi: G_STACK_HI,
            g_m: field(g_m, "g.m")?,
            g_sched,
            gobuf_pc: rel(sched_pc, "gobuf.pc")?,
            gobuf_bp: rel(sched_bp, "gobuf.bp")?,
            m_g0: field(m_g0, "m.g0")?,
            m_curg: field(m_curg, "m.curg")?,
        },
    })
}

/// gosave_systemstack_switch: where it stores (in g, through R14) the pc it takes with a
/// RIP-relative LEAQ, the sp it takes with LEAQ 8(SP), and BP. (sp, pc, bp) offsets in g.
fn decode_gosave(at: u64, code: &[u8]) -> Result<(i64, i64, i64), String> {
    // What each register holds: the pc or the sp.
    let mut holds: Vec<(Register, bool)> = Vec::new();
    let (mut sp, mut pc, mut bp) = (None, None, None);
    for ins in Decoder::with_ip(64, code, at, DecoderOptions::NONE).into_iter().take(MAX_INSNS) {
        if ins.is_invalid() || ins.mnemonic() == Mnemonic::Ret {
            break;
        }
        let reg = |i: u32| (ins.op_kind(i) == OpKind::Register).then(|| ins.op_register(i));
        match (ins.mnemonic(), reg(0), mem_operand(&ins, 1), mem_operand(&ins, 0), reg(1)) {
            (Mnemonic::Lea, Some(r), Some((Register::RIP, _)), _, _) => holds.push((r, true)),
            (Mnemonic::Lea, Some(r), Some((Register::RSP, 8)), _, _) => holds.push((r, false)),
            (Mnemonic::Mov, _, _, Some((Register::R14, disp)), Some(src)) => {
                if src == Register::RBP {
                    bp = bp.or(Some(disp));
                } else {
                    match holds.iter().rev().find(|(r, _)| *r == src) {
                        Some((_, true)) => pc = pc.or(Some(disp)),
                        Some((_, false)) => sp = sp.or(Some(disp)),
                        None => {}
                    }
                }
            }
            _ => {}
        }
        if sp.is_some() && pc.is_some() && bp.is_some() {
            break;
        }
    }
    Ok((sp.ok_or("gosave: no store of sp")?, pc.ok_or("gosave: no store of pc")?, bp.ok_or("gosave: no store of bp")?))
}

/// Operand `i` of `ins` when it is memory with no index: (base register, displacement).
/// RIP-relative operands have base RIP (iced gives their target as the displacement).
fn mem_operand(ins: &Instruction, i: u32) -> Option<(Register, i64)> {
    (i < ins.op_count() && ins.op_kind(i) == OpKind::Memory && ins.memory_index() == Register::None)
        .then(|| (ins.memory_base(), ins.memory_displacement64() as i64))
}

fn is_immediate(k: OpKind) -> bool {
    matches!(k, OpKind::Immediate32to64 | OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate8to64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::ElfFile;

    // runtime.systemstack and gosave_systemstack_switch of tests/cases/cgo-stack-switch built
    // by Go 1.26.8 (not PIE, and PIE) and Go 1.19.8, as objdump shows them.
    const SYSTEMSTACK_126: &[u8] = &[
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x7c, 0x24, 0x10, 0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x48,
        0x8b, 0x58, 0x30, 0x48, 0x3b, 0x43, 0x48, 0x74, 0x65, 0x48, 0x8b, 0x13, 0x48, 0x39, 0xd0, 0x74, 0x5d, 0x48,
        0x3b, 0x83, 0xb8, 0x00, 0x00, 0x00, 0x75, 0x5d, 0xe8, 0xae, 0xf2, 0xff, 0xff,
    ];
    const GOSAVE_126: &[u8] = &[
        0x4c, 0x8d, 0x0d, 0x01, 0x0d, 0x00, 0x00, 0x4d, 0x89, 0x4e, 0x40, 0x4c, 0x8d, 0x4c, 0x24, 0x08, 0x4d, 0x89, 0x4e,
        0x38, 0x49, 0x89, 0x6e, 0x60, 0x4d, 0x8b, 0x4e, 0x50, 0x4d, 0x85, 0xc9, 0x74, 0x05, 0xe8, 0x9a, 0x27, 0x00,
        0x00, 0xc3,
    ];
    const SYSTEMSTACK_126_PIE: &[u8] = &[
        0x55, 0x48, 0x89, 0xe5, 0x48, 0x8b, 0x7c, 0x24, 0x10, 0x48, 0xc7, 0xc1, 0xf8, 0xff, 0xff, 0xff, 0x64, 0x48, 0x8b,
        0x01, 0x48, 0x8b, 0x58, 0x30, 0x48, 0x3b, 0x43, 0x48, 0x74, 0x5d, 0x48, 0x8b, 0x13, 0x48, 0x39, 0xd0, 0x74,
        0x55, 0x48, 0x3b, 0x83, 0xb8, 0x00, 0x00, 0x00, 0x75, 0x55, 0xe8, 0x8c, 0xf2, 0xff, 0xff,
    ];
    const SYSTEMSTACK_119: &[u8] = &[
        0x48, 0x8b, 0x7c, 0x24, 0x08, 0x64, 0x48, 0x8b, 0x04, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x48, 0x8b, 0x58, 0x30, 0x48,
        0x3b, 0x43, 0x50, 0x74, 0x5b, 0x48, 0x8b, 0x13, 0x48, 0x39, 0xd0, 0x74, 0x53, 0x48, 0x3b, 0x83, 0xc0, 0x00,
        0x00, 0x00, 0x75, 0x52, 0xe8, 0xd2, 0xf1, 0xff, 0xff,
    ];
    const GOSAVE_119: &[u8] = &[
        0x4c, 0x8d, 0x0d, 0xd9, 0x0d, 0x00, 0x00, 0x4d, 0x89, 0x4e, 0x40, 0x4c, 0x8d, 0x4c, 0x24, 0x08, 0x4d, 0x89, 0x4e,
        0x38, 0x49, 0xc7, 0x46, 0x58, 0x00, 0x00, 0x00, 0x00, 0x49, 0x89, 0x6e, 0x68, 0x4d, 0x8b, 0x4e, 0x50, 0x4d,
        0x85, 0xc9, 0x74, 0x05, 0xe8, 0x32, 0x2e, 0x00, 0x00, 0xc3,
    ];

    fn v(minor: u32) -> GoVersion {
        GoVersion { major: 1, minor }
    }

    #[test]
    fn decodes_the_runtime_as_the_table_says() {
        // 0x47ed20 + 50 + (-0xd52) = 0x47e000: the call's target.
        let decoded = decode_systemstack(0x47ed20, SYSTEMSTACK_126, |at| (at == 0x47e000).then(|| GOSAVE_126.to_vec()));
        assert_eq!(decoded, Ok(Decoded { tls_g: -8, offsets: offsets_for(v(26)).expect("1.26") }));
        let pie = decode_systemstack(0xa4020, SYSTEMSTACK_126_PIE, |at| (at == 0xa32e0).then(|| GOSAVE_126.to_vec()));
        assert_eq!(pie, decoded);
        let old = decode_systemstack(0x4593e0, SYSTEMSTACK_119, |at| (at == 0x4585e0).then(|| GOSAVE_119.to_vec()));
        assert_eq!(old, Ok(Decoded { tls_g: -8, offsets: offsets_for(v(19)).expect("1.19") }));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        // The callee is not where the call goes.
        assert!(decode_systemstack(0x47ed20, SYSTEMSTACK_126, |_| None).is_err());
        // Cut before the compare with m.curg.
        assert!(decode_systemstack(0x47ed20, &SYSTEMSTACK_126[..36], |_| Some(GOSAVE_126.to_vec())).is_err());
        // g through a GOT slot (c-shared): `mov disp(%rip), %rcx; mov %fs:(%rcx), %rax`.
        let mut got = vec![0x48, 0x8b, 0x0d, 0x10, 0x20, 0x00, 0x00, 0x64, 0x48, 0x8b, 0x01];
        got.extend_from_slice(&SYSTEMSTACK_126_PIE[20..]);
        let e = decode_systemstack(0xa4020, &got, |_| Some(GOSAVE_126.to_vec()));
        assert_eq!(e, Err("no constant TLS slot of g".into()));
        // Other code altogether.
        assert!(decode_systemstack(0, &[0xf3, 0x0f, 0x1e, 0xfa, 0xc3], |_| None).is_err());
        assert!(decode_systemstack(0, &[0x0f, 0xff], |_| None).is_err());
    }

    /// Real builds by each toolchain installed here (the current `go`; Debian's Go 1.19):
    /// `detect` on a Go program not stripped and on the same built stripped as PIE (the other
    /// TLS form) agree, and the offsets are those of the runtime's own DWARF. A toolchain
    /// that is not installed is skipped (the current one fails under DDPROF_REQUIRE_BPF=1).
    #[test]
    fn real_builds_agree_with_their_dwarf() {
        let current = if std::path::Path::new("/usr/local/go/bin/go").exists() { "/usr/local/go/bin/go" } else { "go" };
        for (go, required) in [(current, true), ("/usr/lib/go-1.19/bin/go", false)] {
            let Some(dir) = build_hello(go) else {
                let reason = format!("{go} cannot build a Go program here");
                assert!(!required || std::env::var("DDPROF_REQUIRE_BPF").as_deref() != Ok("1"), "{reason}");
                eprintln!("skipped: {reason}");
                continue;
            };
            let open = |name: &str| {
                let path = dir.join(name);
                let file = ElfFile::open_path(&path, crate::elf::Origin::none(name)).expect("the build opens");
                let frames = GoFrames::from_file(&file).expect("a valid table").expect("a Go table");
                detect(&file, &frames)
            };
            let full = open("full").expect("the window can be taken");
            assert_eq!(open("pie-stripped"), Ok(full), "{go}");
            let version = full.version.expect("a release");
            assert_eq!(Some(full.offsets), offsets_for(version), "{go}");
            assert_eq!((full.tls_g, full.cgo), (-8, false), "{go}");
            let dwarf = dwarf_offsets(&std::fs::read(dir.join("full")).expect("read the build"));
            let o = full.offsets;
            let at = |s: &str, m: &str| dwarf.get(&(s.to_string(), m.to_string())).copied();
            assert_eq!(at("runtime.g", "stack"), Some(u64::from(o.g_stack_hi) - 8), "{go} {version}");
            assert_eq!(at("runtime.stack", "hi"), Some(8));
            assert_eq!(at("runtime.g", "m"), Some(u64::from(o.g_m)), "{go} {version}");
            assert_eq!(at("runtime.g", "sched"), Some(u64::from(o.g_sched)), "{go} {version}");
            assert_eq!(at("runtime.gobuf", "sp"), Some(u64::from(GOBUF_SP)), "{go} {version}");
            assert_eq!(at("runtime.gobuf", "pc"), Some(u64::from(o.gobuf_pc)), "{go} {version}");
            assert_eq!(at("runtime.gobuf", "bp"), Some(u64::from(o.gobuf_bp)), "{go} {version}");
            assert_eq!(at("runtime.m", "g0"), Some(u64::from(o.m_g0)), "{go} {version}");
            assert_eq!(at("runtime.m", "curg"), Some(u64::from(o.m_curg)), "{go} {version}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A pure Go program built by `go` as `full` (DWARF uncompressed) and `pie-stripped`.
    fn build_hello(go: &str) -> Option<std::path::PathBuf> {
        use std::process::Command;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ddprof-go-runtime-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::write(dir.join("go.mod"), "module hello\n\ngo 1.18\n").ok()?;
        std::fs::write(dir.join("main.go"), "package main\n\nfunc main() { println(\"hello\") }\n").ok()?;
        for (out, flags) in [("full", vec!["-ldflags=-compressdwarf=false"]), ("pie-stripped", vec!["-buildmode=pie", "-ldflags=-s -w"])] {
            let ok = Command::new(go)
                .arg("build")
                .args(&flags)
                .args(["-o", out, "."])
                .current_dir(&dir)
                .env("CGO_ENABLED", "0")
                .env("GOTOOLCHAIN", "local")
                .env("GOFLAGS", "-mod=mod")
                .env("GOPROXY", "off")
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                let _ = std::fs::remove_dir_all(&dir);
                return None;
            }
        }
        Some(dir)
    }

    /// (struct, member) -> offset, for the runtime's structs in the DWARF of `data`.
    fn dwarf_offsets(data: &[u8]) -> std::collections::HashMap<(String, String), u64> {
        use object::{Object, ObjectSection};
        let obj = object::File::parse(data).expect("an ELF file");
        let load = |id: gimli::SectionId| -> Result<std::borrow::Cow<'_, [u8]>, gimli::Error> {
            Ok(obj.section_by_name(id.name()).and_then(|s| s.uncompressed_data().ok()).unwrap_or_default())
        };
        let sections = gimli::DwarfSections::load(load).expect("DWARF");
        let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
        let wanted = ["runtime.g", "runtime.m", "runtime.gobuf", "runtime.stack"];
        let mut out = std::collections::HashMap::new();
        let mut units = dwarf.units();
        while let Ok(Some(header)) = units.next() {
            let unit = dwarf.unit(header).expect("a unit");
            let mut entries = unit.entries();
            let mut current: Option<(String, isize)> = None;
            while let Ok(Some(e)) = entries.next_dfs() {
                let depth = e.depth();
                let name = e.attr_value(gimli::DW_AT_name).and_then(|v| dwarf.attr_string(&unit, v).ok()).map(|s| s.to_string_lossy().into_owned());
                if current.as_ref().is_some_and(|(_, d)| depth <= *d) {
                    current = None;
                }
                if e.tag() == gimli::DW_TAG_structure_type {
                    current = name.filter(|n| wanted.contains(&n.as_str())).map(|n| (n, depth));
                } else if let (Some((s, d)), gimli::DW_TAG_member, Some(m)) = (&current, e.tag(), name) {
                    if depth == d + 1 {
                        if let Some(gimli::AttributeValue::Udata(off)) = e.attr_value(gimli::DW_AT_data_member_location) {
                            out.insert((s.clone(), m), off);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_table() {
        assert_eq!(offsets_for(v(17)), None);
        assert_eq!(offsets_for(v(27)), None);
        assert_eq!(offsets_for(v(24)).map(|o| (o.gobuf_bp, o.m_curg)), Some((48, 192)));
        assert_eq!(offsets_for(v(25)).map(|o| (o.gobuf_bp, o.m_curg)), Some((40, 184)));
        assert_eq!(offsets_for(GoVersion { major: 2, minor: 20 }), None);
    }
}
