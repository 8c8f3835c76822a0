//! GoTable against ground truth, on binaries built here from tests/go with the local Go
//! toolchain (skipped when `go` is missing): the stripped binary's own runtime
//! (`runtime.CallersFrames`, via the program's `frames` mode) for full inline chains, and
//! `go tool addr2line`/`go tool objdump` on the unstripped twin for the physical function and
//! innermost file:line. Also PIE, PIE with moduledata readable only through its dynamic
//! relocations, and any older toolchain found at /usr/lib/go-1.*/bin/go (Debian's
//! golang-1.19-go gives Go 1.18/1.19's table layout).
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use ddprof_core::addr::Svma;
use ddprof_core::symbolize::gopclntab::GoTable;
use ddprof_core::symbolize::Line;

mod common;
use common::{older_toolchains, skip_or_fail, toolchain, Toolchain};

#[path = "../fuzz/exercise/mod.rs"]
mod exercise;
use exercise::gopclntab as fuzz_parse;
use object::{Object, ObjectSection, RelocationFlags};

const SAMPLES: u64 = 400;

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddprof-gopclntab-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn go_cmd(tc: &Toolchain, args: &[&str]) -> Command {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go");
    let cache = std::env::temp_dir().join(format!("ddprof-gopclntab-gocache-1.{}", tc.minor));
    let mut c = Command::new(&tc.go);
    c.args(args)
        .current_dir(src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", cache)
        .env("GOPATH", std::env::temp_dir().join("ddprof-gopclntab-gopath"));
    c
}

fn build(tc: &Toolchain, out: &Path, extra: &[&str]) {
    build_for(tc, out, extra, "amd64");
}

fn build_for(tc: &Toolchain, out: &Path, extra: &[&str], goarch: &str) {
    let out_s = out.to_str().expect("utf-8 path");
    let mut args = vec!["build", "-o", out_s];
    args.extend_from_slice(extra);
    args.push(".");
    let res = go_cmd(tc, &args).env("GOARCH", goarch).output().expect("run go build");
    assert!(res.status.success(), "go build {extra:?}: {}", String::from_utf8_lossy(&res.stderr));
}

/// GoTable borrows the file's bytes; a test's binaries live until the process exits.
fn parse(path: &Path) -> (&'static [u8], GoTable<'static>) {
    let data: &'static [u8] = Box::leak(std::fs::read(path).expect("read binary").into_boxed_slice());
    let start = Instant::now();
    let t = GoTable::parse(data).expect("parses").expect("is Go");
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    eprintln!("{name}: parsed in {:?}, heap {} bytes, {} functions", start.elapsed(), t.heap_bytes(), t.num_funcs());
    (data, t)
}

fn text_range(data: &[u8]) -> (u64, u64) {
    let f = object::File::parse(data).expect("elf");
    let s = f.section_by_name(".text").expect(".text");
    (s.address(), s.address() + s.size())
}

fn sample_addrs(data: &[u8]) -> Vec<u64> {
    let (lo, hi) = text_range(data);
    (0..SAMPLES).map(|i| lo + (hi - lo) * i / SAMPLES + i % 7).collect()
}

fn find_entry(t: &GoTable, name: &str) -> Option<u64> {
    (0..t.num_funcs())
        .filter_map(|i| t.func_entry(i).map(|e| e.0))
        .find(|&e| t.lookup(Svma(e)).and_then(|l| l.last().map(|l| l.function == name)) == Some(true))
}

/// Frames the binary's own runtime reports for each svma; None where it cannot be asked.
fn runtime_frames(bin: &Path, t: &GoTable, addrs: &[u64]) -> HashMap<u64, Option<Vec<Line>>> {
    let sentinel = find_entry(t, "main.sentinel").expect("main.sentinel");
    let mut args = vec!["frames".to_string(), format!("{sentinel:#x}")];
    args.extend(addrs.iter().map(|a| format!("{a:#x}")));
    let out = Command::new(bin).args(&args).output().expect("run frames");
    assert!(out.status.success(), "frames: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut cols = l.split('\t');
            let addr = u64::from_str_radix(cols.next().unwrap_or("").trim_start_matches("0x"), 16).expect("addr");
            if l.ends_with("\tSKIP") {
                return (addr, None);
            }
            let frames = cols
                .map(|c| {
                    let p: Vec<&str> = c.splitn(3, '|').collect();
                    Line { function: p[0].into(), system_name: String::new(), file: p[1].into(), line: p[2].parse().expect("line") }
                })
                .collect();
            (addr, Some(frames))
        })
        .collect()
}

/// Compares lookups with the runtime's frames; with `full` the whole inline chain, else only
/// the innermost frame (CallersFrames before Go 1.21 did not expand a lone pc's chain).
/// Returns how many were compared and how many of those had inlined frames.
///
/// One known difference: the runtime names the function whose name sits at offset 0 of
/// funcnametab "" (it takes offset 0 as "no name"); GoTable gives its real name.
fn compare_with_runtime(t: &GoTable, truth: &HashMap<u64, Option<Vec<Line>>>, addrs: &[u64], full: bool) -> (usize, usize) {
    let mut bad = Vec::new();
    let (mut compared, mut chains, mut unnamed) = (0, 0, 0);
    for a in addrs {
        let Some(want) = &truth[a] else { continue };
        let got = t.lookup(Svma(*a)).unwrap_or_default();
        compared += 1;
        chains += usize::from(got.len() > 1);
        let mut want = want.clone();
        if let (Some(w), Some(g)) = (want.last_mut(), got.last()) {
            if w.function.is_empty() && !g.function.is_empty() {
                w.function = g.function.clone();
                unnamed += 1;
            }
        }
        let ok = if full { got == want } else { got.first() == want.first() };
        if !ok {
            bad.push(format!("{a:#x}: got {got:?} want {want:?}"));
        }
    }
    assert!(bad.is_empty(), "{} of {compared} disagree with CallersFrames:\n{}", bad.len(), bad.join("\n"));
    assert!(compared * 2 >= addrs.len(), "the runtime answered for only {compared} of {} addresses", addrs.len());
    assert!(unnamed <= 2, "{unnamed} frames the runtime leaves unnamed");
    (compared, chains)
}

/// `go tool addr2line`: physical function and innermost file:line, per address.
fn addr2line(tc: &Toolchain, bin: &Path, addrs: &[u64]) -> Vec<(String, String)> {
    let mut child = go_cmd(tc, &["tool", "addr2line", bin.to_str().expect("path")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("go tool addr2line");
    let input: String = addrs.iter().map(|a| format!("{a:#x}\n")).collect();
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("addr2line output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * addrs.len(), "addr2line output");
    lines.chunks(2).map(|c| (c[0].to_string(), c[1].to_string())).collect()
}

/// (file:line, address) of each instruction of `func` in `go tool objdump`.
fn objdump(tc: &Toolchain, bin: &Path, func: &str) -> Vec<(String, u64)> {
    let pat = format!("^{}$", func.replace('.', "\\.").replace('(', "\\(").replace(')', "\\)").replace('*', "\\*"));
    let out = go_cmd(tc, &["tool", "objdump", "-s", &pat, bin.to_str().expect("path")]).output().expect("objdump");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let pos = cols.next()?.to_string();
            let addr = u64::from_str_radix(cols.next()?.strip_prefix("0x")?, 16).ok()?;
            pos.contains(':').then_some((pos, addr))
        })
        .collect()
}

/// 1-based line of the first source line containing `needle`.
fn src_line(needle: &str) -> u32 {
    let src = include_str!("go/main.go");
    let i = src.lines().position(|l| l.contains(needle)).expect("needle in main.go");
    i as u32 + 1
}

fn main_go() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go/main.go").to_string_lossy().into_owned()
}

fn line(function: &str, line: u32) -> Line {
    Line { function: function.into(), system_name: String::new(), file: main_go(), line }
}

/// Addresses of instructions from the known functions, for the exact chain checks.
fn known_checks(tc: &Toolchain, unstripped: &Path, t: &GoTable) -> Vec<u64> {
    let leaf_body = src_line("x ^= x << 13")..=src_line("x ^= x << 17");
    let hot = objdump(tc, unstripped, "main.hot");
    assert!(!hot.is_empty(), "objdump found main.hot");
    // (b) inside leaf, inlined into middle, inlined into hot.
    let (_, a) = hot
        .iter()
        .find(|(p, _)| leaf_body.clone().any(|l| p.ends_with(&format!("main.go:{l}"))))
        .expect("an instruction of leaf's body in main.hot");
    let leaf_line = hot.iter().find(|(_, x)| x == a).map(|(p, _)| p.rsplit(':').next().unwrap_or("0").parse().unwrap_or(0));
    assert_eq!(
        t.lookup(Svma(*a)),
        Some(vec![
            line("main.leaf", leaf_line.expect("line")),
            line("main.middle", src_line("y := leaf(x)")),
            line("main.hot", src_line("acc = middle(acc)")),
        ]),
        "2-deep inline chain at {a:#x}"
    );
    // (a) hot's own loop code (its loop is the first such line in main.go).
    let loop_line = src_line("for i := 0; i < n; i++ {");
    let (_, own) = hot.iter().find(|(p, _)| p.ends_with(&format!("main.go:{loop_line}"))).expect("hot's loop");
    assert_eq!(t.lookup(Svma(*own)), Some(vec![line("main.hot", loop_line)]), "hot's own code at {own:#x}");
    let mut addrs = vec![*a, *own];
    for f in ["main.(*Worker).Spin", "main.hot", "main.main"] {
        let insns = objdump(tc, unstripped, f);
        assert!(!insns.is_empty(), "objdump {f}");
        for (_, a) in &insns {
            let got = t.lookup(Svma(*a)).expect("in a function");
            assert_eq!(got.last().map(|l| l.function.as_str()), Some(f), "{a:#x}");
        }
        addrs.extend(insns.iter().map(|(_, a)| *a));
    }
    // Inlined into an autogenerated wrapper: CallersFrames drops the wrapper frame.
    let get = objdump(tc, unstripped, "main.(*Val).Get");
    assert!(!get.is_empty(), "objdump main.(*Val).Get");
    let get_line = src_line("func (v Val) Get()");
    let at_get: Vec<_> = get.iter().filter(|(p, _)| p.ends_with(&format!("main.go:{get_line}"))).collect();
    // Go 1.21+ inlines Val.Get into the wrapper (1.26: 2 such instructions; 1.19: none).
    assert!(tc.minor < 21 || !at_get.is_empty(), "no code of Val.Get inlined into its wrapper");
    for (_, a) in at_get {
        assert_eq!(t.lookup(Svma(*a)), Some(vec![line("main.Val.Get", get_line)]), "wrapper elided at {a:#x}");
    }
    addrs.extend(get.iter().map(|(_, a)| *a));
    let sum = (0..t.num_funcs())
        .filter_map(|i| t.func_entry(i).map(|e| e.0))
        .filter_map(|e| t.lookup(Svma(e)))
        .any(|l| l.last().is_some_and(|l| l.function == "main.sum[...]"));
    assert!(sum, "generic main.sum[...] named as CallersFrames prints it");
    addrs
}

fn assert_stripped(data: &[u8]) {
    let f = object::File::parse(data).expect("elf");
    assert!(f.section_by_name(".symtab").is_none(), "stripped binary has .symtab");
    assert!(f.section_by_name(".debug_info").is_none(), "stripped binary has DWARF");
}

/// Zeroes the file's copy of every moduledata word that a R_X86_64_RELATIVE fills at load
/// time, as linkers that do not apply dynamic relocations leave them.
fn zero_moduledata_relocs(data: &[u8]) -> Option<Vec<u8>> {
    let f = object::File::parse(data).ok()?;
    let pch = f.section_by_name(".gopclntab")?.address();
    let relocs: Vec<(u64, i64)> = f
        .dynamic_relocations()?
        .filter(|(_, r)| matches!(r.flags(), RelocationFlags::Elf { r_type } if r_type == object::elf::R_X86_64_RELATIVE))
        .map(|(at, r)| (at, r.addend()))
        .collect();
    let md = relocs.iter().find(|&&(_, a)| a as u64 == pch)?.0;
    let mut out = data.to_vec();
    for &(at, _) in relocs.iter().filter(|&&(at, _)| at >= md && at < md + 64 * 8) {
        let sect = f.sections().find(|s| at >= s.address() && at < s.address() + s.size())?;
        let off = (sect.file_range()?.0 + at - sect.address()) as usize;
        out[off..off + 8].fill(0);
    }
    Some(out)
}

#[test]
fn stripped_go_binaries_match_the_go_runtime() {
    let Some(tc) = toolchain(Path::new("go")) else {
        skip_or_fail("no `go` on PATH");
        return;
    };
    let dir = work_dir();
    let (normal, stripped, pie) = (dir.join("normal"), dir.join("stripped"), dir.join("pie"));
    build(&tc, &normal, &[]);
    build(&tc, &stripped, &["-ldflags=-s -w"]);

    let (sdata, st) = parse(&stripped);
    assert_stripped(sdata);
    let (ndata, nt) = parse(&normal);
    // Same layout, so addresses chosen in the unstripped binary hold in the stripped one.
    assert_eq!(text_range(ndata), text_range(sdata));
    assert_eq!(nt.num_funcs(), st.num_funcs());
    assert!((0..st.num_funcs()).all(|i| nt.func_entry(i) == st.func_entry(i)));

    mutate_real(sdata);
    let mut addrs = sample_addrs(sdata);
    addrs.extend(known_checks(&tc, &normal, &st));
    let truth = runtime_frames(&stripped, &st, &addrs);
    let (n, chains) = compare_with_runtime(&st, &truth, &addrs, tc.minor >= 21);
    eprintln!("go1.{}: {n} addresses agree with CallersFrames ({chains} inlined chains; {} skipped)", tc.minor, addrs.len() - n);

    // go tool addr2line names the physical function and the innermost file:line. Where no pc
    // table covers a pc (alignment padding after a function's code) it prints ":-1" and the
    // runtime (and GoTable) "?:0". Where the physical function is a wrapper (autogenerated,
    // or reflect.callMethod) with code inlined into it, CallersFrames and GoTable drop the
    // wrapper frame while addr2line names it.
    let a2l = addr2line(&tc, &normal, &addrs);
    let (mut bad, mut wrappers) = (Vec::new(), 0);
    for (a, (func, pos)) in addrs.iter().zip(&a2l) {
        let got = st.lookup(Svma(*a)).unwrap_or_default();
        let got_pos = got.first().map_or("?:0".to_string(), |l| format!("{}:{}", l.file, l.line));
        let got_func = got.last().map_or("?", |l| l.function.as_str());
        // addr2line prints raw table names; CallersFrames abbreviates generic shapes.
        let pos = if pos.ends_with(":-1") { "?:0" } else { pos.as_str() };
        let runtime_outer = truth[a].as_ref().and_then(|w| w.last()).map(|l| l.function.as_str());
        let elided = got_func != func && got.len() == 1 && runtime_outer == Some(got_func);
        wrappers += usize::from(elided);
        if got_pos != pos || (got_func != func && !func.contains('[') && !elided) {
            bad.push(format!("{a:#x}: got {got_func} {got_pos}, addr2line {func} {pos}"));
        }
    }
    assert!(bad.is_empty(), "disagree with go tool addr2line:\n{}", bad.join("\n"));
    eprintln!("go1.{}: {} addresses agree with go tool addr2line ({wrappers} elided wrappers)", tc.minor, addrs.len());

    let start = Instant::now();
    let (lo, hi) = text_range(sdata);
    let n = 50_000u64;
    let found = (0..n).filter(|i| st.lookup(Svma(lo + (hi - lo) * i / n)).is_some()).count();
    let ns = start.elapsed().as_nanos() / u128::from(n);
    eprintln!("lookup: {ns} ns/address over {n} ({found} found)");

    // Without moduledata go:func.* is unknown: plain code still resolves, inlined code
    // degrades to the outer function with line 0.
    let wt = without_moduledata(sdata);
    let mut checked = 0;
    for (a, (physical, _)) in addrs.iter().zip(&a2l) {
        let (Some(Some(want)), Some(got)) = (truth.get(a), wt.lookup(Svma(*a))) else { continue };
        checked += 1;
        assert_eq!(got.len(), 1, "{a:#x} without moduledata");
        let generic = physical.contains('[') && got[0].function.contains("[...]");
        assert!(got[0].function == *physical || generic, "{a:#x} without moduledata: {got:?}");
        // Inlined code is where the full table shows more frames or an elided wrapper.
        let plain = want.len() == 1 && (want[0].function == *physical || generic || want[0].function.is_empty());
        let line = if plain { want[0].line } else { 0 };
        assert_eq!(got[0].line, line, "{a:#x} without moduledata");
    }
    assert!(checked * 2 >= addrs.len(), "without moduledata: only {checked} of {} addresses checked", addrs.len());

    // PIE: moduledata sits in .data.rel.ro/.go.module behind dynamic relocations.
    build(&tc, &pie, &["-buildmode=pie", "-ldflags=-s -w"]);
    let (pdata, pt) = parse(&pie);
    let paddrs = sample_addrs(pdata);
    let ptruth = runtime_frames(&pie, &pt, &paddrs);
    compare_with_runtime(&pt, &ptruth, &paddrs, tc.minor >= 21);
    if let Some(zeroed) = zero_moduledata_relocs(pdata) {
        let zt = GoTable::parse(&zeroed).expect("parses").expect("is Go");
        compare_with_runtime(&zt, &ptruth, &paddrs, tc.minor >= 21);
        eprintln!("PIE: {} addresses agree, also with moduledata only in relocations", paddrs.len());
    } else {
        panic!("PIE without R_X86_64_RELATIVE moduledata relocations");
    }

    // aarch64 (pc quantum 4), cross-built: its runtime cannot run here, so the truth is
    // objdump/addr2line, and the physical function from the table without inline trees.
    let (arm, arm_stripped) = (dir.join("arm64"), dir.join("arm64-stripped"));
    build_for(&tc, &arm, &[], "arm64");
    build_for(&tc, &arm_stripped, &["-ldflags=-s -w"], "arm64");
    let (adata, at) = parse(&arm_stripped);
    assert_stripped(adata);
    let mut aaddrs = sample_addrs(adata);
    aaddrs.extend(known_checks(&tc, &arm, &at));
    let physical = without_moduledata(adata);
    let (mut inlined, mut elided) = (0, 0);
    for (a, (func, pos)) in aaddrs.iter().zip(addr2line(&tc, &arm, &aaddrs)) {
        let got = at.lookup(Svma(*a)).unwrap_or_default();
        let got_pos = got.first().map_or("?:0".to_string(), |l| format!("{}:{}", l.file, l.line));
        let pos = if pos.ends_with(":-1") { "?:0".to_string() } else { pos };
        assert_eq!(got_pos, pos, "arm64 {a:#x}: {got:?}");
        let phys = physical.lookup(Svma(*a)).and_then(|l| l.first().map(|l| l.function.clone()));
        let phys = phys.unwrap_or_else(|| "?".into());
        assert!(phys == func || (func.contains('[') && phys.contains("[...]")), "arm64 {a:#x}: {phys} vs {func}");
        inlined += usize::from(got.len() > 1);
        elided += usize::from(got.last().is_some_and(|l| l.function != phys));
    }
    assert!(elided * 20 <= aaddrs.len(), "arm64: {elided} of {} with the physical frame elided", aaddrs.len());
    eprintln!("arm64: {} addresses agree with go tool addr2line ({inlined} inlined chains, {elided} elided wrappers)", aaddrs.len());

    let olds = older_toolchains(Some(&tc));
    if !olds.iter().any(|t| t.minor <= 19) {
        skip_or_fail("no Go 1.18/1.19 toolchain at /usr/lib/go-1.*/bin/go (Debian's golang-1.19-go): its table layout is untested");
    }
    for old in olds {
        let bin = dir.join(format!("stripped-1.{}", old.minor));
        let unstripped = dir.join(format!("normal-1.{}", old.minor));
        build(&old, &bin, &["-ldflags=-s -w"]);
        build(&old, &unstripped, &[]);
        let (odata, ot) = parse(&bin);
        assert_stripped(odata);
        let mut addrs = sample_addrs(odata);
        addrs.extend(known_checks(&old, &unstripped, &ot));
        let truth = runtime_frames(&bin, &ot, &addrs);
        let (n, chains) = compare_with_runtime(&ot, &truth, &addrs, old.minor >= 21);
        eprintln!("go1.{}: {n} addresses agree with CallersFrames ({chains} inlined chains; {} skipped)", old.minor, addrs.len() - n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The table with moduledata's pcHeader pointer wiped, so go:func.* cannot be found.
fn without_moduledata(data: &[u8]) -> GoTable<'static> {
    let elf = object::File::parse(data).expect("elf");
    let pch = elf.section_by_name(".gopclntab").expect(".gopclntab").address().to_le_bytes();
    let mut wiped = data.to_vec();
    let at = (0..wiped.len() - 8).step_by(8).find(|&i| wiped[i..i + 8] == pch).expect("moduledata");
    wiped[at..at + 8].fill(0);
    GoTable::parse(Vec::leak(wiped)).expect("parses").expect("is Go")
}

/// Random corruption of a real table (header, ftab, records, pc tables, names) and of the
/// rest of the file: Err/None/wrong answers are fine, panics and hangs are not.
fn mutate_real(data: &[u8]) {
    let f = object::File::parse(data).expect("elf");
    let (off, size) = f.section_by_name(".gopclntab").and_then(|s| s.file_range()).expect("pclntab");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..150u64 {
        let mut d = data.to_vec();
        for _ in 0..1 + round % 8 {
            let pos = match next() % 4 {
                0 => off + next() % 72,
                1 | 2 => off + next() % size,
                _ => next() % d.len() as u64,
            } as usize;
            d[pos] = next() as u8;
        }
        fuzz_parse(&d);
    }
    for cut in [off + 8, off + 72, off + size / 2, off + size - 1] {
        fuzz_parse(&data[..cut as usize]);
    }
}

// Synthetic tables, no Go toolchain needed.

fn elf_with_pclntab(pcln: &[u8]) -> Vec<u8> {
    // Minimal ELF64 LE: null section, .gopclntab, .shstrtab, .text at 0x1000.
    let shstr = b"\0.gopclntab\0.shstrtab\0.text\0";
    let data_off = 64usize;
    let shstr_off = data_off + pcln.len();
    let sh_off = (shstr_off + shstr.len() + 7) & !7;
    let mut f = vec![0u8; sh_off + 4 * 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[40..48].copy_from_slice(&(sh_off as u64).to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&4u16.to_le_bytes());
    f[62..64].copy_from_slice(&2u16.to_le_bytes());
    f[data_off..data_off + pcln.len()].copy_from_slice(pcln);
    f[shstr_off..shstr_off + shstr.len()].copy_from_slice(shstr);
    let mut sh = |i: usize, name: u32, ty: u32, flags: u64, addr: u64, off: usize, size: usize| {
        let b = sh_off + 64 * i;
        f[b..b + 4].copy_from_slice(&name.to_le_bytes());
        f[b + 4..b + 8].copy_from_slice(&ty.to_le_bytes());
        f[b + 8..b + 16].copy_from_slice(&flags.to_le_bytes());
        f[b + 16..b + 24].copy_from_slice(&addr.to_le_bytes());
        f[b + 24..b + 32].copy_from_slice(&(off as u64).to_le_bytes());
        f[b + 32..b + 40].copy_from_slice(&(size as u64).to_le_bytes());
    };
    sh(1, 1, 1, 2, 0x40_0000, data_off, pcln.len());
    sh(2, 12, 3, 0, 0, shstr_off, shstr.len());
    sh(3, 22, 1, 6, 0x1000, 0, 0x20);
    f
}

/// A one-function 1.20 table: entry 0x1000 (text 0x1000), size 0x20, file "a.go",
/// line 7 then 9, named "main.f".
fn tiny_pclntab() -> Vec<u8> {
    let mut p = vec![0u8; 72];
    p[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes()); // Go 1.20+
    p[6] = 1;
    p[7] = 8;
    let put = |p: &mut Vec<u8>, i: usize, v: u64| p[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    put(&mut p, 0, 1);
    let names = p.len();
    p.extend_from_slice(b"main.f\0");
    let cu = p.len();
    p.extend_from_slice(&0u32.to_le_bytes());
    let files = p.len();
    p.extend_from_slice(b"a.go\0");
    let pct = p.len();
    // Offset 0 means "no table", so tables start at 1: pcfile (0 for 0x20 bytes) at 1,
    // pcln (7 for 0x10 bytes, then 9 for 0x10) at 4.
    p.extend_from_slice(&[0, 2, 0x20, 0, 16, 0x10, 4, 0x10, 0]);
    while !p.len().is_multiple_of(4) {
        p.push(0);
    }
    let ftab = p.len();
    for (i, v) in [(3, names), (4, cu), (5, files), (6, pct), (7, ftab)] {
        put(&mut p, i, v as u64);
    }
    for w in [0u32, 16, 0x20, 0] {
        p.extend_from_slice(&w.to_le_bytes());
    }
    let mut func = vec![0u8; 44];
    func[20..24].copy_from_slice(&1u32.to_le_bytes());
    func[24..28].copy_from_slice(&4u32.to_le_bytes());
    p.extend_from_slice(&func);
    p
}

#[test]
fn tiny_table_resolves() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GoTable>();
    let elf = elf_with_pclntab(&tiny_pclntab());
    let t = GoTable::parse(&elf).expect("parses").expect("is go");
    let line = |function: &str, line| vec![Line { function: function.into(), system_name: String::new(), file: "a.go".into(), line }];
    assert_eq!(t.lookup(Svma(0x1000)), Some(line("main.f", 7)));
    assert_eq!(t.lookup(Svma(0x100f)), Some(line("main.f", 7)));
    assert_eq!(t.lookup(Svma(0x1010)), Some(line("main.f", 9)));
    assert_eq!(t.lookup(Svma(0x1020)), None);
    assert_eq!(t.lookup(Svma(0xfff)), None);
    assert!(t.heap_bytes() > 100);
}

#[test]
fn hostile_tables_never_panic() {
    let good = tiny_pclntab();
    for cut in 0..good.len() {
        let _ = fuzz_parse(&elf_with_pclntab(&good[..cut]));
    }
    for i in 0..good.len() {
        for v in [0u8, 0x7f, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[i] = v;
            let _ = fuzz_parse(&elf_with_pclntab(&bad));
        }
    }
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(GoTable::parse(&elf_with_pclntab(&huge)).is_err());
    let mut old = good;
    old[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes()); // Go 1.16
    assert!(GoTable::parse(&elf_with_pclntab(&old)).is_err());
}
