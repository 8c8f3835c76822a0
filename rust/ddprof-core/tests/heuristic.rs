//! The prologue analysis (`unwind::heuristic`) against ground truth.
//!
//! 1. Code with CFI: for every function of `.eh_frame` (libc, the system's python3, and a C
//!    program built here with gcc at several optimization levels), at every instruction
//!    (leaf frames) and after every call (caller frames), the analyzer's answer must be the
//!    `.eh_frame` row's (CFA = rsp + N or rbp + N, the caller's rbp). `sure` answers must
//!    agree (the test prints the rates, and how often the answer is unsure or none).
//! 2. musl's static libc, which has no CFI: the program of `shared/cases/musl-static`,
//!    built with musl-gcc, is stopped many times with ptrace and its stacks walked with the
//!    analyzer's rules alone: every stack must be the right one down to `_start` or
//!    `__clone`; and the call sites of musl's start code, and every pc of `memcpy` and
//!    `memset`, must have a sure rule.
//!
//! Tools (gcc, musl-gcc) missing: skipped with the reason, or failed when
//! DDPROF_REQUIRE_BPF=1 (CI, which installs them: musl-tools). x86_64 hosts only: the code
//! checked is the host's.
#![cfg(target_arch = "x86_64")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ddprof_core::elf::{ElfFile, Origin};
use ddprof_core::unwind::heuristic::{self, CfaRule, HeuristicRule, RbpRule, X86Function};
use gimli::{BaseAddresses, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol};

mod common;
use common::skip_or_fail;

/// C with the shapes compilers give functions: frame pointer or not, alloca and VLAs,
/// over-aligned locals (`and rsp, -32`), switch jump tables, noreturn calls in the middle,
/// early returns (epilogues before the end), variadic functions, many callee-saved
/// registers, recursion, tail calls.
const PATTERNS_C: &str = r#"
#include <alloca.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
volatile int sink;
__attribute__((noinline)) int leaf(int x) { return x * 7 + sink; }
__attribute__((noinline)) int callee_saved(int a, int b, int c, int d) {
    int s = 0;
    for (int i = 0; i < a; i++) s += leaf(i) * b + leaf(s) * c + leaf(d) + leaf(a ^ i);
    return s;
}
__attribute__((noinline)) int with_alloca(int n) {
    char *p = alloca(n + 16);
    memset(p, n, n + 16);
    return leaf(p[n / 2]) + leaf(n);
}
__attribute__((noinline)) int with_vla(int n) {
    int v[n + 1];
    for (int i = 0; i <= n; i++) v[i] = leaf(i);
    return v[n / 2] + leaf(v[0]);
}
__attribute__((noinline)) int aligned_locals(int n) {
    double a[8] __attribute__((aligned(64)));
    for (int i = 0; i < 8; i++) a[i] = leaf(i + n);
    sink = (int)a[n & 7];
    return leaf((int)a[3]);
}
__attribute__((noinline)) int early_return(int n) {
    if (n < 0) return -1;
    char buf[64];
    snprintf(buf, sizeof buf, "%d", n);
    if (buf[0] == '9') { puts(buf); return 9; }
    int r = leaf(buf[1]);
    if (r > 100) abort();
    return r + leaf(n);
}
__attribute__((noinline)) int switchy(int k, int x) {
    switch (k) {
    case 0: return leaf(x);
    case 1: return leaf(x + 1) * 3;
    case 2: x = leaf(x) + leaf(x * 2); break;
    case 3: return callee_saved(x, 1, 2, 3);
    case 4: x = with_alloca(x & 63); break;
    case 5: return with_vla(x & 31) + 1;
    case 6: x += aligned_locals(x); break;
    case 7: return early_return(x);
    case 8: x ^= leaf(~x); break;
    case 9: if (x == 12345) abort(); x = leaf(x); break;
    default: return 0;
    }
    return x + leaf(k);
}
__attribute__((noinline)) int variadic(int n, ...) {
    va_list ap; va_start(ap, n);
    int s = 0;
    for (int i = 0; i < n; i++) s += leaf(va_arg(ap, int));
    va_end(ap);
    return s;
}
__attribute__((noinline)) int recurse(int n) { return n <= 0 ? leaf(n) : recurse(n - 1) + leaf(n); }
__attribute__((noinline)) int tail(int n) { if (n & 1) return leaf(n); return switchy(n & 7, n); }
static jmp_buf jb;
__attribute__((noinline)) int jumper(int n) { if (setjmp(jb)) return leaf(n); if (n > 3) longjmp(jb, 1); return leaf(n + 1); }
struct big { long a[6]; };
__attribute__((noinline)) struct big by_value(struct big b, int n) { b.a[n % 6] += leaf(n); return b; }
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 3;
    struct big b = {{1, 2, 3, 4, 5, 6}};
    b = by_value(b, n);
    printf("%d\n", switchy(n, n) + variadic(3, n, n, n) + recurse(n) + tail(n) + jumper(n) + (int)b.a[0]);
    return 0;
}
"#;

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddprof-heuristic-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn run(cmd: &str, args: &[&str]) {
    let o = Command::new(cmd).args(args).output().expect("tool runs");
    assert!(o.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

fn open(path: &Path) -> ElfFile {
    ElfFile::open_path(path, Origin::at_path(path, Path::new("/"))).expect("an ELF file")
}

/// A row of `.eh_frame` as the analyzer would state it; `None` parts are rules the
/// analyzer does not express (expressions, other registers).
#[derive(Clone, Copy, Debug)]
struct CfiRow {
    start: u64,
    end: u64,
    cfa: Option<CfaRule>,
    rbp: Option<RbpRule>,
    ra_at_cfa_minus_8: bool,
}

/// Every FDE of the file's `.eh_frame`: (start, end, rows).
fn eh_frame_fdes(file: &ElfFile) -> Vec<(u64, u64, Vec<CfiRow>)> {
    let obj = object::File::parse(file.bytes()).expect("parse");
    let Some(sec) = obj.section_by_name(".eh_frame") else { return Vec::new() };
    let data = sec.data().expect("eh_frame data");
    let eh = EhFrame::new(data, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(sec.address());
    if let Some(t) = obj.section_by_name(".text") {
        bases = bases.set_text(t.address());
    }
    if let Some(g) = obj.section_by_name(".got") {
        bases = bases.set_got(g.address());
    }
    let mut ctx = Box::new(UnwindContext::new());
    let mut out = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let gimli::CieOrFde::Fde(partial) = entry else { continue };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else { continue };
        let Ok(mut table) = fde.rows(&eh, &bases, &mut ctx) else { continue };
        let mut rows = Vec::new();
        while let Ok(Some(row)) = table.next_row() {
            let cfa = match row.cfa() {
                gimli::CfaRule::RegisterAndOffset { register, offset } if register.0 == 7 => Some(CfaRule::SpOffset(*offset)),
                gimli::CfaRule::RegisterAndOffset { register, offset } if register.0 == 6 => Some(CfaRule::BpOffset(*offset)),
                _ => None,
            };
            let rbp = match row.register(gimli::Register(6)) {
                None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => Some(RbpRule::Unchanged),
                Some(RegisterRule::Offset(n)) => Some(RbpRule::SavedAt(n)),
                _ => None,
            };
            let ra_at_cfa_minus_8 = matches!(row.register(gimli::Register(16)), Some(RegisterRule::Offset(-8)));
            rows.push(CfiRow { start: row.start_address(), end: row.end_address(), cfa, rbp, ra_at_cfa_minus_8 });
        }
        out.push((fde.initial_address(), fde.end_address(), rows));
    }
    out
}

#[derive(Default, Debug)]
struct Tally {
    checked: u64,
    sure_agree: u64,
    sure_disagree: u64,
    unsure_agree: u64,
    unsure_disagree: u64,
    none: u64,
    /// CFA right, rbp: we say still in rbp, CFI says in its (still intact) slot: after the
    /// epilogue's `pop rbp`, where compilers leave the save rule in place. Both are right.
    rbp_restored_early: u64,
    rbp_unknown: u64,
}

impl Tally {
    fn line(&self, what: &str) -> String {
        let answered = self.sure_agree + self.sure_disagree + self.unsure_agree + self.unsure_disagree;
        let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { 100.0 * a as f64 / b as f64 };
        format!(
            "{what}: {} pcs; sure {:.2}% of pcs, agreeing {:.3}% ({} wrong); unsure {:.2}% of pcs, agreeing {:.1}%; none {:.2}%; (rbp restored before CFI says {}, rbp unknown {})",
            self.checked,
            pct(self.sure_agree + self.sure_disagree, self.checked),
            pct(self.sure_agree, self.sure_agree + self.sure_disagree),
            self.sure_disagree,
            pct(self.unsure_agree + self.unsure_disagree, self.checked),
            pct(self.unsure_agree, self.unsure_agree + self.unsure_disagree),
            pct(self.none, self.checked),
            self.rbp_restored_early,
            self.rbp_unknown,
        ) + if answered == 0 { " (nothing answered)" } else { "" }
    }
}

#[derive(Default, Debug)]
struct Comparison {
    functions: u64,
    empty_fdes: u64,
    /// Functions whose analysis did not settle (`X86Function::analyze` gave up).
    unsettled: u64,
    leaf: Tally,
    caller: Tally,
    wrong: Vec<String>,
}

fn row_at(rows: &[CfiRow], pc: u64) -> Option<&CfiRow> {
    rows.iter().find(|r| r.start <= pc && pc < r.end)
}

fn judge(t: &mut Tally, wrong: &mut Vec<String>, got: Option<HeuristicRule>, want: &CfiRow, what: String) {
    t.checked += 1;
    let Some(got) = got else {
        t.none += 1;
        return;
    };
    let (Some(cfa), Some(rbp)) = (want.cfa, want.rbp) else { return };
    let rbp_ok = match (got.rbp, rbp) {
        (a, b) if a == b => true,
        (RbpRule::Unchanged, RbpRule::SavedAt(_)) => {
            t.rbp_restored_early += 1;
            true
        }
        (RbpRule::Unknown, _) => {
            t.rbp_unknown += 1;

            true
        }
        _ => false,
    };
    let agree = got.cfa == cfa && rbp_ok && got.ra_offset_from_cfa == -8;
    match (got.sure, agree) {
        (true, true) => t.sure_agree += 1,
        (true, false) => t.sure_disagree += 1,
        (false, true) => t.unsure_agree += 1,
        (false, false) => t.unsure_disagree += 1,
    }
    let verbose = std::env::var("HEURISTIC_VERBOSE").is_ok();
    if (got.sure || verbose) && !agree && wrong.len() < 60 {
        wrong.push(format!("{what}: got {got:?}, CFI says {cfa:?} {rbp:?}"));
    }
}

/// Compares the analyzer with `.eh_frame` at every instruction and return address of
/// every function that starts as a function (CFA = rsp + 8 at its first byte: not a
/// `.cold` part, which starts inside its parent's frame).
fn compare_with_cfi(path: &Path) -> Comparison {
    let file = open(path);
    let mut c = Comparison::default();
    for (start, end, rows) in eh_frame_fdes(&file) {
        let Some(first) = rows.first() else { continue };
        if first.start != start || first.cfa != Some(CfaRule::SpOffset(8)) || !first.ra_at_cfa_minus_8 {
            continue;
        }
        let Some(code) = file.svma_bytes(ddprof_core::addr::Svma(start), end - start) else { continue };
        let f = X86Function::analyze(code, start);
        // Hand-written assembly whose FDE has no rule past the entry although the code moves
        // the stack (glibc's mpn functions): the CFI describes nothing to compare with.
        if rows.len() == 1 {
            let moves = |f: &X86Function| {
                let mut d = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
                d.iter().any(|i| f.rule_at(i.ip(), true).is_some_and(|r| r.cfa != CfaRule::SpOffset(8)))
            };
            if f.as_ref().is_some_and(moves) {
                c.empty_fdes += 1;
                continue;
            }
        }
        c.functions += 1;
        c.unsettled += u64::from(f.is_none());
        let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        while decoder.can_decode() {
            decoder.decode_out(&mut ins);
            if ins.is_invalid() {
                break;
            }
            let pc = ins.ip();
            if let Some(row) = row_at(&rows, pc).filter(|r| r.ra_at_cfa_minus_8) {
                let got = f.as_ref().and_then(|f| f.rule_at(pc, true));
                judge(&mut c.leaf, &mut c.wrong, got, row, format!("leaf {pc:#x} in {start:#x}"));
            }
            if ins.mnemonic() == Mnemonic::Call {
                let ra = ins.next_ip();
                if let Some(row) = row_at(&rows, pc).filter(|r| r.ra_at_cfa_minus_8) {
                    let got = f.as_ref().and_then(|f| f.rule_at(ra, false));
                    // The single-pc entry point must say the same as the per-function one.
                    if c.caller.checked % 64 == 0 {
                        assert_eq!(got, heuristic::analyze_x86_64(code, start, ra, false));
                    }
                    judge(&mut c.caller, &mut c.wrong, got, row, format!("caller {ra:#x} in {start:#x}"));
                }
            }
        }
    }
    c
}

fn report_and_check(name: &str, c: &Comparison) {
    eprintln!(
        "{name}: {} functions ({} not settled; {} more whose FDE describes nothing)",
        c.functions, c.unsettled, c.empty_fdes
    );
    eprintln!("  {}", c.leaf.line("leaf frames"));
    eprintln!("  {}", c.caller.line("caller frames"));
    for w in &c.wrong {
        eprintln!("  wrong: {w}");
    }
    assert!(c.functions > 0, "{name}: no function with CFI");
    for (what, t) in [("leaf", &c.leaf), ("caller", &c.caller)] {
        let sure = t.sure_agree + t.sure_disagree;
        assert!(sure > 0, "{name} {what}: no sure answer");
        // Sure answers are right: at most one in ten thousand may differ (hand-written
        // assembly with data in .text can fool any linear decode).
        assert!(t.sure_disagree * 10_000 <= sure, "{name} {what}: {} of {sure} sure answers disagree with CFI", t.sure_disagree);
        // And most pcs get one.
        assert!(sure * 2 >= t.checked, "{name} {what}: only {sure} of {} pcs have a sure answer", t.checked);
    }
}

#[test]
fn agrees_with_eh_frame_of_libc_and_python() {
    for path in ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3"] {
        let p = Path::new(path);
        if !p.exists() {
            skip_or_fail(&format!("{path} is missing"));
            continue;
        }
        let t = Instant::now();
        let c = compare_with_cfi(p);
        eprintln!("({:.1} s)", t.elapsed().as_secs_f64());
        report_and_check(path, &c);
    }
}

#[test]
fn agrees_with_eh_frame_of_gcc_builds() {
    if !have("gcc") {
        return skip_or_fail("gcc is missing");
    }
    let dir = tmp_dir("gcc");
    let src = dir.join("patterns.c");
    std::fs::write(&src, PATTERNS_C).expect("write source");
    let flag_sets: [&[&str]; 5] = [
        &["-O2"],
        &["-O2", "-fno-omit-frame-pointer"],
        &["-O0"],
        &["-Os", "-fstack-protector-strong"],
        &["-O3", "-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"],
    ];
    for flags in flag_sets {
        let out = dir.join(format!("p{}", flags.join("").replace(['-', ' '], "_")));
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["-g", "-o", out.to_str().expect("utf-8"), src.to_str().expect("utf-8")]);
        run("gcc", &args);
        let c = compare_with_cfi(&out);
        report_and_check(&format!("gcc {}", flags.join(" ")), &c);
    }
}

/// The function-start lookup agrees with the FDEs of a binary that has both.
#[test]
fn function_bounds_match_fdes() {
    if !have("gcc") {
        return skip_or_fail("gcc is missing");
    }
    let dir = tmp_dir("bounds");
    let src = dir.join("patterns.c");
    std::fs::write(&src, PATTERNS_C).expect("write source");
    let out = dir.join("p");
    run("gcc", &["-O2", "-o", out.to_str().expect("utf-8"), src.to_str().expect("utf-8")]);
    let file = open(&out);
    let (mut same, mut all) = (0, 0);
    for (start, end, _) in eh_frame_fdes(&file) {
        all += 1;
        let mid = ddprof_core::addr::Svma(start + (end - start) / 2);
        if let Some(f) = file.function_containing(mid) {
            same += u64::from(f.start.0 == start && f.start.0 + f.size == end);
        }
    }
    eprintln!("{same} of {all} FDEs are exactly a function symbol");
    // crt1's _start and the PLT-adjacent stubs have FDEs that are not one symbol.
    assert!(same * 10 >= all * 8, "{same} of {all}");
}

/// The musl-static case's program, built as its README says (`musl-gcc -static -O2 -g
/// -fno-optimize-sibling-calls`); `small` shrinks its buffers to 256 bytes so that a
/// single-stepped run stays short (the same code runs, with fewer `rep movsq` rounds).
fn build_musl_case(dir: &Path, small: bool) -> Option<PathBuf> {
    // The repository's copy of the case, else the shared cases beside the repository.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let case = [root.join("tests/cases/musl-static/m.c"), root.join("../shared/cases/musl-static/m.c")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| root.join("tests/cases/musl-static/m.c"));
    let Ok(src) = std::fs::read_to_string(&case) else {
        skip_or_fail(&format!("{} is missing", case.display()));
        return None;
    };
    if !have("musl-gcc") {
        skip_or_fail("musl-gcc is missing (apt-get install musl-tools)");
        return None;
    }
    let src = if small { src.replace("1 << 18", "1 << 8") } else { src };
    let c = dir.join(if small { "m_small.c" } else { "m.c" });
    std::fs::write(&c, src).expect("write source");
    let out = dir.join(if small { "m_small" } else { "m" });
    // Small copies would be inlined: keep the calls into musl, as with the real sizes.
    let no_inline: &[&str] = if small { &["-fno-builtin-memcpy", "-fno-builtin-memset"] } else { &[] };
    let mut args = vec!["-static", "-O2", "-g", "-fno-optimize-sibling-calls"];
    args.extend_from_slice(no_inline);
    args.extend(["-o", out.to_str().expect("utf-8"), c.to_str().expect("utf-8")]);
    run("musl-gcc", &args);
    Some(out)
}

/// Function symbols of a file by name: (start, size).
fn symbols(path: &Path) -> HashMap<String, (u64, u64)> {
    let data = std::fs::read(path).expect("read binary");
    let obj = object::File::parse(&*data).expect("parse");
    obj.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.address() != 0)
        .filter_map(|s| Some((s.name().ok()?.to_string(), (s.address(), s.size()))))
        .collect()
}

/// musl's start code and string functions have no CFI; the analyzer must give a sure
/// rule at every call site of the start code and at every pc of memcpy and memset (they
/// never move the stack: CFA = rsp + 8 throughout). Whether the rules are *right* is what
/// `musl_static_rules_are_right_at_every_executed_pc` checks against the running program.
#[test]
fn musl_static_start_code_and_string_functions_have_rules() {
    let dir = tmp_dir("musl");
    let Some(bin) = build_musl_case(&dir, false) else { return };
    let file = open(&bin);
    let syms = symbols(&bin);
    let fdes = eh_frame_fdes(&file);
    for (name, leaf_pcs) in [
        ("main", false),
        ("libc_start_main_stage2", false),
        ("__libc_start_main", false),
        ("_start_c", false),
        ("start", false),
        ("memcpy", true),
        ("memset", true),
    ] {
        let &(start, _) = syms.get(name).unwrap_or_else(|| panic!("{name} not in the symbol table"));
        let f = file.function_containing(ddprof_core::addr::Svma(start)).expect("function bounds");
        assert_eq!(f.start.0, start, "{name}");
        if name != "main" && name != "_start_c" {
            assert!(!fdes.iter().any(|(s, e, _)| (*s..*e).contains(&start)), "{name} has CFI: not the case this test is about");
        }
        let code = file.svma_bytes(f.start, f.size).expect("code");
        let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        let mut lines = Vec::new();
        for ins in decoder.iter() {
            if leaf_pcs {
                let rule = heuristic::rule_in_file(&file, ddprof_core::addr::Svma(ins.ip()), true);
                assert!(
                    rule.is_some_and(|r| r.sure && r.cfa == CfaRule::SpOffset(8) && r.rbp == RbpRule::Unchanged),
                    "{name} at {:#x}: {rule:?}",
                    ins.ip()
                );
            }
            if ins.mnemonic() == Mnemonic::Call {
                let rule = heuristic::rule_in_file(&file, ddprof_core::addr::Svma(ins.next_ip()), false);
                lines.push(format!("{:#x}: {rule:?}", ins.next_ip()));
                // `start`'s call to `__wait` follows the thread's exit syscalls, reached by
                // a jump back: sure too, since every path agrees.
                assert!(rule.is_some_and(|r| r.sure), "{name}: return address {:#x}: {rule:?}", ins.next_ip());
            }
        }
        eprintln!("{name} ({:#x}, {} bytes): {} call sites {lines:?}", start, f.size, lines.len());
    }
}

/// The truth about one frame of a traced thread, kept from the call that made it.
#[derive(Clone, Copy, Debug)]
struct TrueFrame {
    /// The CFA: the caller's rsp before its call.
    cfa: u64,
    /// The caller's rbp at the call.
    rbp: u64,
}

#[derive(Default, Debug)]
struct TraceTally {
    sure_ok: u64,
    sure_bad: u64,
    unsure_ok: u64,
    unsure_bad: u64,
    none: u64,
}

fn peek(tid: libc::pid_t, addr: u64) -> Option<u64> {
    // SAFETY: PTRACE_PEEKDATA on a thread we trace and that is stopped; errors come back as
    // -1 with errno set, which we check.
    unsafe {
        *libc::__errno_location() = 0;
        let v = libc::ptrace(libc::PTRACE_PEEKDATA, tid, addr as *mut libc::c_void, std::ptr::null_mut::<libc::c_void>());
        (v != -1 || *libc::__errno_location() == 0).then_some(v as u64)
    }
}

fn regs_of(tid: libc::pid_t) -> Option<libc::user_regs_struct> {
    // SAFETY: `regs` is a plain struct the kernel fills for a stopped tracee.
    unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        (libc::ptrace(libc::PTRACE_GETREGS, tid, std::ptr::null_mut::<libc::c_void>(), &mut regs as *mut _ as *mut libc::c_void)
            == 0)
            .then_some(regs)
    }
}

/// Checks a rule against the truth: the CFA it computes from the registers, and where it
/// says the caller's rbp is.
fn rule_is_right(tid: libc::pid_t, rule: &HeuristicRule, rsp: u64, rbp: u64, truth: TrueFrame) -> bool {
    let cfa = match rule.cfa {
        CfaRule::SpOffset(n) => rsp.wrapping_add(n as u64),
        CfaRule::BpOffset(n) => rbp.wrapping_add(n as u64),
    };
    let caller_rbp = match rule.rbp {
        RbpRule::Unchanged => Some(rbp),
        RbpRule::SavedAt(off) => peek(tid, cfa.wrapping_add(off as u64)),
        RbpRule::Unknown => Some(truth.rbp),
    };
    cfa == truth.cfa && caller_rbp == Some(truth.rbp) && rule.ra_offset_from_cfa == -8
}

/// Runs `bin args` single-stepping every thread from exec to exit, with a shadow stack of
/// the true CFA of each frame (pushed at each call, popped when rsp leaves the frame), and
/// checks the analyzer's rule at every executed pc of the binary (leaf frames) and at every
/// executed call (the caller frame the callee will see): per function name.
fn single_step_and_check(bin: &Path, args: &[&str], file: &ElfFile) -> Option<HashMap<String, (TraceTally, TraceTally)>> {
    use std::ffi::CString;
    let path = CString::new(bin.to_str().expect("utf-8")).expect("path");
    let argv_owned: Vec<CString> =
        std::iter::once(path.clone()).chain(args.iter().map(|a| CString::new(*a).expect("arg"))).collect();
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let names = {
        let mut v: Vec<(u64, u64, String)> = symbols(bin).into_iter().map(|(n, (a, s))| (a, s, n)).collect();
        v.sort();
        v
    };
    let name_of = |pc: u64| -> String {
        match file.function_containing(ddprof_core::addr::Svma(pc)) {
            Some(f) => {
                names.iter().find(|(a, _, _)| *a == f.start.0).map_or_else(|| format!("{:#x}", f.start.0), |(_, _, n)| n.clone())
            }
            None => "?".into(),
        }
    };
    // SAFETY: the child calls only async-signal-safe functions (ptrace, raise, execv,
    // _exit) between fork and exec; the strings were built before the fork.
    let pid = unsafe {
        let pid = libc::fork();
        if pid == 0 {
            libc::ptrace(libc::PTRACE_TRACEME, 0, std::ptr::null_mut::<libc::c_void>(), std::ptr::null_mut::<libc::c_void>());
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        pid
    };
    assert!(pid > 0, "fork failed");
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if !libc::WIFSTOPPED(status) {
        skip_or_fail("cannot ptrace a child here");
        return None;
    }
    // SAFETY: options on our stopped tracee.
    unsafe {
        libc::ptrace(
            libc::PTRACE_SETOPTIONS,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            (libc::PTRACE_O_TRACECLONE | libc::PTRACE_O_EXITKILL) as *mut libc::c_void,
        )
    };
    let mut stacks: HashMap<libc::pid_t, Vec<TrueFrame>> = HashMap::from([(pid, Vec::new())]);
    let mut tallies: HashMap<String, (TraceTally, TraceTally)> = HashMap::new();
    let mut rules: HashMap<(u64, bool), Option<HeuristicRule>> = HashMap::new();
    let mut rule = |pc: u64, leaf: bool| {
        *rules.entry((pc, leaf)).or_insert_with(|| heuristic::rule_in_file(file, ddprof_core::addr::Svma(pc), leaf))
    };
    let count = |t: &mut TraceTally, r: Option<HeuristicRule>, ok: bool| match r {
        None => t.none += 1,
        Some(r) if r.sure && ok => t.sure_ok += 1,
        Some(r) if r.sure => t.sure_bad += 1,
        Some(_) if ok => t.unsure_ok += 1,
        Some(_) => t.unsure_bad += 1,
    };
    let in_file = |pc: u64| file.function_containing(ddprof_core::addr::Svma(pc)).is_some();
    let (mut tid, mut steps, started) = (pid, 0u64, Instant::now());
    loop {
        let mut signal = 0;
        if libc::WIFSTOPPED(status) {
            let sig = libc::WSTOPSIG(status);
            if sig != libc::SIGTRAP && sig != libc::SIGSTOP {
                signal = sig;
            }
            if status >> 16 == libc::PTRACE_EVENT_CLONE {
                let mut new_tid: libc::c_ulong = 0;
                // SAFETY: reads the new thread's id into `new_tid`.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_GETEVENTMSG,
                        tid,
                        std::ptr::null_mut::<libc::c_void>(),
                        &mut new_tid as *mut _ as *mut libc::c_void,
                    )
                };
                stacks.insert(new_tid as libc::pid_t, Vec::new());
            }
            let regs = regs_of(tid);
            if let (Some(regs), Some(stack)) = (regs, stacks.get_mut(&tid)) {
                steps += 1;
                while stack.last().is_some_and(|f| regs.rsp >= f.cfa) {
                    stack.pop();
                }
                let pc = regs.rip;
                if let Some(&truth) = stack.last() {
                    if in_file(pc) {
                        let r = rule(pc, true);
                        let ok = r.is_some_and(|r| rule_is_right(tid, &r, regs.rsp, regs.rbp, truth));
                        if r.is_some_and(|r| r.sure) && !ok {
                            eprintln!("wrong leaf rule at {pc:#x} ({}): {r:?}, truth {truth:x?}", name_of(pc));
                        }
                        count(&mut tallies.entry(name_of(pc)).or_default().0, r, ok);
                    }
                }
                let bytes: Vec<u8> =
                    [peek(tid, pc), peek(tid, pc + 8)].into_iter().flatten().flat_map(u64::to_le_bytes).collect();
                let ins = Decoder::with_ip(64, &bytes, pc, DecoderOptions::NONE).decode();
                if ins.mnemonic() == Mnemonic::Call {
                    let ra = ins.next_ip();
                    if let Some(&truth) = stack.last() {
                        if in_file(pc) {
                            // What the unwinder will see in this frame while the callee runs:
                            // rsp as it is now (the callee pops the return address), and rbp
                            // as it is now (callees preserve it).
                            let r = rule(ra, false);
                            let ok = r.is_some_and(|r| rule_is_right(tid, &r, regs.rsp, regs.rbp, truth));
                            if r.is_some_and(|r| r.sure) && !ok {
                                eprintln!("wrong caller rule at {ra:#x} ({}): {r:?}, truth {truth:x?}", name_of(pc));
                            }
                            count(&mut tallies.entry(name_of(pc)).or_default().1, r, ok);
                        }
                    }
                    stack.push(TrueFrame { cfa: regs.rsp, rbp: regs.rbp });
                }
            }
            // SAFETY: resumes our stopped tracee for one instruction.
            unsafe {
                libc::ptrace(libc::PTRACE_SINGLESTEP, tid, std::ptr::null_mut::<libc::c_void>(), signal as *mut libc::c_void)
            };
        } else {
            stacks.remove(&tid);
            if stacks.is_empty() {
                break;
            }
        }
        // SAFETY: waits for any of our tracees.
        tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if tid <= 0 {
            break;
        }
        assert!(started.elapsed().as_secs() < 120, "single-stepping took too long ({steps} steps)");
    }
    eprintln!("{steps} steps in {:.1} s", started.elapsed().as_secs_f64());
    Some(tallies)
}

/// The musl case's program (with small buffers), single-stepped from exec to exit in both
/// threads: at every executed pc of every function of the binary, and at every executed
/// call, the analyzer's rule must give the true CFA and the caller's rbp when it says it is
/// sure; musl's start code, thread entry and string functions must be covered and sure.
#[test]
fn musl_static_rules_are_right_at_every_executed_pc() {
    let dir = tmp_dir("musl-trace");
    let Some(bin) = build_musl_case(&dir, true) else { return };
    let file = open(&bin);
    let Some(tallies) = single_step_and_check(&bin, &["0"], &file) else { return };
    let mut names: Vec<_> = tallies.keys().cloned().collect();
    names.sort();
    let (mut sure_bad, mut sure) = (0, 0);
    for n in &names {
        let (leaf, caller) = &tallies[n];
        eprintln!("{n}: leaf {leaf:?}; caller {caller:?}");
        sure_bad += leaf.sure_bad + caller.sure_bad;
        sure += leaf.sure_ok + leaf.sure_bad + caller.sure_ok + caller.sure_bad;
    }
    let executed: u64 = tallies
        .values()
        .map(|(l, c)| {
            let n = |t: &TraceTally| t.sure_ok + t.sure_bad + t.unsure_ok + t.unsure_bad + t.none;
            n(l) + n(c)
        })
        .sum();
    eprintln!("{executed} checks (executed pcs and calls): {sure} sure, {sure_bad} of them wrong");
    assert_eq!(sure_bad, 0, "sure rules that are wrong (of {sure})");
    for (name, want_leaf, want_caller) in [
        ("main", true, true),
        ("libc_start_main_stage2", true, true),
        ("__libc_start_main", true, true),
        ("_start_c", true, false),
        ("start", true, true),
        ("memcpy", true, false),
        ("memset", true, false),
        ("copy_block", true, true),
        ("pump", true, true),
    ] {
        let (leaf, caller) = tallies.get(name).unwrap_or_else(|| panic!("{name} never ran"));
        if want_leaf {
            assert!(
                leaf.sure_ok > 0 && leaf.sure_bad + leaf.unsure_ok + leaf.unsure_bad + leaf.none == 0,
                "{name}: leaf {leaf:?}"
            );
        }
        if want_caller {
            assert!(
                caller.sure_ok > 0 && caller.sure_bad + caller.unsure_ok + caller.unsure_bad + caller.none == 0,
                "{name}: caller {caller:?}"
            );
        }
    }
}

/// What one analysis costs (`cargo test --release --test heuristic heuristic_cost --
/// --ignored --nocapture`): `analyze_x86_64` at the first return address of every function
/// of libc with a call, and the per-function analysis alone, in ns per call; with the
/// function sizes, as the cost grows with them.
#[test]
#[ignore]
fn heuristic_cost() {
    let path = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
    if !path.exists() {
        return skip_or_fail("libc.so.6 is missing");
    }
    let file = open(path);
    let mut cases: Vec<(u64, u64, &[u8])> = Vec::new();
    for (start, end, _) in eh_frame_fdes(&file) {
        let Some(code) = file.svma_bytes(ddprof_core::addr::Svma(start), end - start) else { continue };
        let mut d = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
        if let Some(call) = d.iter().find(|i| i.mnemonic() == Mnemonic::Call) {
            cases.push((start, call.next_ip(), code));
        }
    }
    let mut sizes: Vec<usize> = cases.iter().map(|c| c.2.len()).collect();
    sizes.sort_unstable();
    let median = sizes[sizes.len() / 2];
    let rounds = 20;
    let t = Instant::now();
    let mut answered = 0u64;
    for _ in 0..rounds {
        for &(start, ra, code) in &cases {
            answered += u64::from(std::hint::black_box(heuristic::analyze_x86_64(code, start, ra, false)).is_some());
        }
    }
    let per_call = t.elapsed().as_nanos() as f64 / (rounds * cases.len()) as f64;
    let bytes: usize = sizes.iter().sum();
    // Typical: the functions of about the median size.
    let typical: Vec<_> = cases.iter().filter(|c| c.2.len().abs_diff(median) <= median / 4).collect();
    let t = Instant::now();
    for _ in 0..rounds * 10 {
        for &&(start, ra, code) in &typical {
            std::hint::black_box(heuristic::analyze_x86_64(code, start, ra, false));
        }
    }
    let per_typical = t.elapsed().as_nanos() as f64 / (rounds * 10 * typical.len()) as f64;
    eprintln!(
        "libc: {} functions, median {median} bytes, mean {} bytes: {per_call:.0} ns per call on average ({:.1} ns per byte); \
         {per_typical:.0} ns for a typical ({median}-byte) function; {answered} answers",
        cases.len(),
        bytes / cases.len(),
        per_call * cases.len() as f64 / bytes as f64,
    );
}
