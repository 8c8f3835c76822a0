//! `unwind::go::join_cgo` on live stacks of tests/cases/cgo-stack-switch (the shared case: Go ->
//! C, and Go -> C -> Go), stopped by gdb at its hot loop (skipped without go, gcc, gdb or
//! ptrace). Each capture takes what the sampler takes for a Go process: the registers, 16
//! KiB of stack from sp (clamped at the end of its mapping), and the kernel's frame-pointer
//! chain (walked here as perf_callchain_user does: ip, then [fp+8] while [fp] reads).
//!
//! The walk of the sampled stack is what the unwinder does: Go frames by their pcsp deltas
//! (`GoFrames`, over the captured bytes), C frames by CFI (here gdb's own walk, from
//! `.eh_frame`, stands in for the crate's). The joined stack, named by the symbolizer's Go
//! table and the symbol table, must be the case's right answer. Along the Go walk, every
//! frame that says `has_fp` must hold its caller's frame pointer at `cfa - 16`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ddprof_core::addr::Svma;
use ddprof_core::elf::{ElfFile, Origin};
use ddprof_core::symbolize::gopclntab::GoTable;
use ddprof_core::unwind::go::{join_cgo, Gap, GoFrames, JoinEnd, Joined, StackSwitch, WalkFrame};
use object::{Object, ObjectSymbol};

mod common;
use common::skip_or_fail;

const CAPTURE: &str = r#"
import gdb, os
want = os.environ["CAP_WANT"]
inf = gdb.selected_inferior()
th = next((t for t in inf.threads() if (t.switch() or True) and want in (gdb.newest_frame().name() or "")), None)
if th is None:
    print("CAPTURE-MISS")
else:
    th.switch()
    reg = lambda r: int(gdb.parse_and_eval("$" + r)) & 0xffffffffffffffff
    rip, rsp, rbp = reg("rip"), reg("rsp"), reg("rbp")
    stack, at, end = b"", rsp, rsp + 16384
    while at < end:
        nxt = min(end, (at // 4096 + 1) * 4096)
        try:
            stack += bytes(inf.read_memory(at, nxt - at))
        except Exception:
            break
        at = nxt
    chain, fp = [rip], rbp
    for _ in range(126):
        try:
            nxt, ra = [int.from_bytes(bytes(inf.read_memory(fp + 8 * i, 8)), "little") for i in (0, 1)]
        except Exception:
            break
        chain.append(ra)
        if nxt == 0:
            break
        fp = nxt
    lines = ["REGS %x %x %x" % (rip, rsp, rbp), "CHAIN " + " ".join("%x" % a for a in chain), "STACK " + stack.hex()]
    f = gdb.newest_frame()
    while f is not None and len(lines) < 40:
        f.select()
        cfa = None
        for l in gdb.execute("info frame", to_string=True).splitlines():
            if "frame at 0x" in l:
                cfa = int(l.split("frame at ")[1].split()[0].rstrip(",:"), 16)
        lines.append("FRAME %x %x" % (f.pc(), cfa or 0))
        try:
            f = f.older()
        except gdb.error:
            break
    print("\n".join(lines))
"#;

struct Capture {
    rip: u64,
    rsp: u64,
    rbp: u64,
    chain: Vec<u64>,
    stack: Vec<u8>,
    /// gdb's walk: (pc, CFA), leaf first.
    gdb: Vec<(u64, u64)>,
}

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn build(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/cgo-stack-switch");
    let res = Command::new("go")
        .args(["build", "-o", out.to_str().expect("utf-8 path"), "."])
        .current_dir(src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "1")
        .env("GOCACHE", std::env::temp_dir().join("ddprof-gocgo-gocache"))
        .env("GOPATH", std::env::temp_dir().join("ddprof-goframes-gopath"))
        .output()
        .expect("run go build");
    assert!(res.status.success(), "go build: {}", String::from_utf8_lossy(&res.stderr));
}

fn capture(pid: u32, want: &str, script: &Path) -> Option<Capture> {
    let out = Command::new("gdb")
        .args(["-nx", "-p", &pid.to_string(), "-batch", "-x", script.to_str().expect("path")])
        .env("CAP_WANT", want)
        .output()
        .expect("gdb runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
    let mut c = Capture { rip: 0, rsp: 0, rbp: 0, chain: Vec::new(), stack: Vec::new(), gdb: Vec::new() };
    for l in text.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("REGS") => {
                let v: Vec<u64> = w.map(hex).collect();
                (c.rip, c.rsp, c.rbp) = (v[0], v[1], v[2]);
            }
            Some("CHAIN") => c.chain = w.map(hex).collect(),
            Some("STACK") => {
                let s = w.next().unwrap_or("");
                c.stack = (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex byte")).collect();
            }
            Some("FRAME") => {
                let v: Vec<u64> = w.map(hex).collect();
                c.gdb.push((v[0], v[1]));
            }
            _ => {}
        }
    }
    (c.rip != 0).then_some(c)
}

/// The unwinder's walk of the captured stack: Go frames by pcsp, C frames from gdb's CFI
/// walk; stops at a stopping switch (see `join_cgo`), an entry point, or what it cannot read.
fn walk(c: &Capture, frames: &GoFrames) -> Vec<WalkFrame> {
    let read = |a: u64| -> Option<u64> {
        let off = usize::try_from(a.checked_sub(c.rsp)?).ok()?;
        Some(u64::from_le_bytes(c.stack.get(off..off + 8)?.try_into().ok()?))
    };
    let mut out = Vec::new();
    let (mut pc, mut sp, mut rbp) = (c.rip, c.rsp, c.rbp);
    let mut gdb_i = 0;
    loop {
        let addr = if out.is_empty() { pc } else { pc - 1 };
        let Some(g) = frames.frame(addr) else {
            // C: take gdb's frame for this pc, and its caller from gdb's walk.
            let Some(j) = (gdb_i..c.gdb.len()).find(|&j| c.gdb[j].0 == pc) else { break };
            let Some(&(next_pc, _)) = c.gdb.get(j + 1) else { break };
            out.push(WalkFrame { addr, cfa: c.gdb[j].1 });
            // gdb's CFA of this frame is the caller's sp.
            sp = c.gdb[j].1;
            pc = next_pc;
            gdb_i = j + 1;
            continue;
        };
        let cfa = sp + u64::from(g.sp_delta) + 8;
        out.push(WalkFrame { addr, cfa });
        if g.has_fp {
            // The frame pointer this function holds is its own frame's, cfa - 16, unless it
            // is on the other stack (cgocallback's prologue ran on the system stack).
            let held = if out.len() == 1 { Some(rbp) } else { None };
            if let Some(held) = held.filter(|_| g.stack_switch.is_none()) {
                assert_eq!(held, cfa - 16, "leaf {addr:#x} holds its frame pointer");
            }
            rbp = read(cfa - 16).unwrap_or(0);
        }
        let stops = matches!(
            g.stack_switch,
            Some(StackSwitch::AsmCgoCall | StackSwitch::SystemStack | StackSwitch::Mcall | StackSwitch::Morestack | StackSwitch::Gogo)
        );
        if g.is_entry_point || stops {
            break;
        }
        let Some(ra) = read(cfa - 8) else { break };
        // Frame pointers along Go frames: the caller's, restored from this frame, is the
        // caller's own frame record (checked when the caller keeps one and is no switch).
        if let Some(caller) = frames.frame(ra - 1) {
            if caller.has_fp && g.has_fp && caller.stack_switch.is_none() && g.stack_switch.is_none() {
                let caller_cfa = cfa + u64::from(caller.sp_delta) + 8;
                assert_eq!(rbp, caller_cfa - 16, "frame pointer restored from {addr:#x} for {:#x}", ra - 1);
            }
        }
        pc = ra;
        sp = cfa;
    }
    out
}

/// Names: Go's table for Go code (the physical function), the symbol table for C.
fn namer(path: &Path) -> impl Fn(u64) -> String {
    let data: &'static [u8] = Box::leak(std::fs::read(path).expect("read").into_boxed_slice());
    let table = GoTable::parse(data).expect("parses").expect("is Go");
    let obj = object::File::parse(data).expect("elf");
    let mut syms: Vec<(u64, u64, String)> = obj
        .symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect();
    syms.sort();
    move |a| {
        if let Some(lines) = table.lookup(Svma(a)) {
            return lines.last().map_or("?".into(), |l| l.function.clone());
        }
        let i = syms.partition_point(|s| s.0 <= a);
        i.checked_sub(1).map(|i| &syms[i]).filter(|s| a < s.0 + s.1).map_or("?".into(), |s| s.2.clone())
    }
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cgo_stacks_join_to_the_right_answer() {
    for (tool, arg) in [("go", "version"), ("gcc", "--version"), ("gdb", "--version")] {
        if !have(tool, arg) {
            skip_or_fail(&format!("no {tool}: the cgo join is untested on live stacks"));
            return;
        }
    }
    let dir = std::env::temp_dir().join(format!("ddprof-gocgo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bin: PathBuf = dir.join("cgocb");
    build(&bin);
    let script = dir.join("capture.py");
    std::fs::write(&script, CAPTURE).expect("write script");
    let file = Arc::new(ElfFile::open_path(&bin, Origin::at_path(&bin, Path::new("/"))).expect("ELF"));
    let frames = GoFrames::from_file(&file).expect("parses").expect("is Go");
    let name = namer(&bin);
    let cases: [(&str, &[&str], &str, &[&str]); 2] = [
        (
            "Go -> C",
            &["20", "c"],
            "c_work",
            &["c_work", "c_only", "runtime.asmcgocall", "runtime.cgocall", "main._Cfunc_c_only", "main.runCOnly", "main.main", "runtime.main", "runtime.goexit"],
        ),
        (
            "Go -> C -> Go",
            &["20"],
            "goWork",
            &[
                "_cgoexp_*_goWork",
                "runtime.cgocallbackg1",
                "runtime.cgocallbackg",
                "runtime.cgocallbackg",
                "runtime.cgocallback",
                "crosscall2",
                "[C frames]",
                "runtime.cgocall",
                "main._Cfunc_c_driver",
                "main.runDriver",
                "main.main",
                "runtime.main",
                "runtime.goexit",
            ],
        ),
    ];
    let mut checked = 0;
    for (label, args, want_leaf, want) in cases {
        let child = Command::new(&bin).args(args).stdout(Stdio::null()).spawn().expect("start the case");
        let _running = Running(child);
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..3 {
            let Some(c) = capture(_running.0.id(), want_leaf, &script) else {
                // gdb could not attach (ptrace restricted) or stopped elsewhere.
                continue;
            };
            let w = walk(&c, &frames);
            let mut out = Vec::new();
            let end = join_cgo(&w, &c.chain, None, &|a| frames.code(a), &mut out);
            let got: Vec<String> = out
                .iter()
                .map(|j| match j {
                    Joined::Frame(a) => name(*a),
                    Joined::Gap(Gap::CallbackCFrames) => "[C frames]".into(),
                })
                .collect();
            let matches = got.len() == want.len()
                && got.iter().zip(want.iter()).all(|(g, w)| match w.split_once('*') {
                    Some((pre, post)) => g.starts_with(pre) && g.ends_with(post),
                    None => g == w || g.strip_suffix(".constprop.0") == Some(w),
                });
            let walk_names: Vec<String> = w.iter().map(|f| format!("{}@{:#x}", name(f.addr), f.cfa)).collect();
            let chain_names: Vec<String> = c.chain.iter().enumerate().map(|(i, &a)| name(if i == 0 { a } else { a - 1 })).collect();
            assert!(matches, "{label}: joined {got:?} ({end:?})\n want {want:?}\n walk {walk_names:?}\n chain {chain_names:?}");
            assert_eq!(end, Some(JoinEnd::Complete), "{label}");
            eprintln!("{label}: {}", got.join(" <- "));
            eprintln!("  walk {:x?}\n  chain {:x?}", w.iter().map(|f| (f.addr, f.cfa)).collect::<Vec<_>>(), c.chain);
            checked += 1;
        }
    }
    if checked == 0 {
        skip_or_fail("gdb could not capture a stack (ptrace restricted?)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
