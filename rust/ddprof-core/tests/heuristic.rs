//! The prologue analysis (`unwind::heuristic`) against ground truth: code with CFI. For
//! every function of `.eh_frame` (libc, the system's python3, and a C program built here
//! with gcc at several optimization levels), at every instruction (leaf frames) and after
//! every call (caller frames), the analyzer's answer must be the `.eh_frame` row's (CFA =
//! rsp + N or rbp + N, the caller's rbp). `sure` answers must agree (the test prints the
//! rates, and how often the answer is unsure or none). Code without CFI (musl's static libc)
//! is tests/heuristic_musl.rs.
//!
//! Tools (gcc) missing: skipped with the reason, or failed when DDPROF_REQUIRE_BPF=1 (CI,
//! which installs them). x86_64 hosts only: the code checked is the host's.
#![cfg(target_arch = "x86_64")]
use std::path::Path;
use std::time::Instant;

use ddprof_core::unwind::heuristic::{self, CfaRule, HeuristicRule, RbpRule, X86Function};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

mod common;
use common::eh_frame::{eh_frame_fdes, CfiRow};
use common::{have, open_elf, run, skip_or_fail, tmp_dir};

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
    let file = open_elf(path);
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
    let dir = tmp_dir("heuristic", "gcc");
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
    let dir = tmp_dir("heuristic", "bounds");
    let src = dir.join("patterns.c");
    std::fs::write(&src, PATTERNS_C).expect("write source");
    let out = dir.join("p");
    run("gcc", &["-O2", "-o", out.to_str().expect("utf-8"), src.to_str().expect("utf-8")]);
    let file = open_elf(&out);
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
    let file = open_elf(path);
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
