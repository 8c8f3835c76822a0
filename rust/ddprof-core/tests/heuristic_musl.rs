//! The prologue analysis (`unwind::heuristic`) on code without CFI: musl's static libc. The
//! program of `shared/cases/musl-static`, built with musl-gcc, is stopped many times with
//! ptrace and its stacks walked with the analyzer's rules alone: every stack must be the
//! right one down to `_start` or `__clone`; and the call sites of musl's start code, and
//! every pc of `memcpy` and `memset`, must have a sure rule.
//!
//! musl-gcc missing: skipped with the reason, or failed when DDPROF_REQUIRE_BPF=1 (CI, which
//! installs musl-tools). x86_64 hosts only: the code checked is the host's.
#![cfg(target_arch = "x86_64")]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ddprof_core::elf::ElfFile;
use ddprof_core::unwind::heuristic::{self, CfaRule, HeuristicRule, RbpRule};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSymbol};

mod common;
use common::eh_frame::eh_frame_fdes;
use common::{have, open_elf, run, skip_or_fail, tmp_dir};

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
    let dir = tmp_dir("heuristic", "musl");
    let Some(bin) = build_musl_case(&dir, false) else { return };
    let file = open_elf(&bin);
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
    let dir = tmp_dir("heuristic", "musl-trace");
    let Some(bin) = build_musl_case(&dir, true) else { return };
    let file = open_elf(&bin);
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
