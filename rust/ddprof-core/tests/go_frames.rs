//! `unwind::go::GoFrames` against the Go linker's own `.debug_frame`, read with gimli, on
//! binaries built here from tests/go with the local Go toolchain (skipped when `go` is
//! missing): amd64 with the default toolchain and with any Go 1.18/1.19 at
//! /usr/lib/go-1.*/bin/go (the older table and prologue layouts), and arm64 (pc quantum 4),
//! cross-built. For every function that has an FDE, at the first, middle and last pc of every
//! CFI row, the CFA must be sp + sp_delta (+ 8 on amd64, for the return address). The
//! stripped twin (`-ldflags=-s -w`, no DWARF left) must give the same frames at the same pcs.
//!
//! `.debug_frame` is derived by the linker from the same pcsp tables, so this checks our
//! decoding and function lookup, not the compiler. `has_fp` has no DWARF rule (Go emits none
//! for rbp): every compiled (non-assembly) function that opens a frame must be seen to save
//! its frame pointer, which checks the prologue recognition on every such function.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use ddprof_core::elf::{ElfFile, Origin};
use ddprof_core::unwind::go::{GoFrameCache, GoFrames, GoFramesCache, StackSwitch, FUNC_FLAG_ASM};
use gimli::{BaseAddresses, CfaRule, CieOrFde, DebugFrame, LittleEndian, UnwindContext, UnwindSection};
use object::{Object, ObjectSection};

mod common;
use common::{older_toolchains, skip_or_fail, toolchain, Toolchain};

/// The toolchain on PATH, then the older ones beside it.
fn toolchains() -> Vec<Toolchain> {
    let main = toolchain(Path::new("go"));
    let older = older_toolchains(main.as_ref());
    main.into_iter().chain(older).collect()
}

fn build(tc: &Toolchain, out: &Path, goarch: &str, ldflags: &str) {
    build_in("tests/go", tc, out, goarch, ldflags);
}

/// The shared cgo-stack-switch case (Go -> C -> Go), relative to the crate.
const CGO_CASE: &str = "../../tests/cases/cgo-stack-switch";

/// Builds the program in `dir` (relative to the crate); cgo is on for the cgo case only.
fn build_in(dir: &str, tc: &Toolchain, out: &Path, goarch: &str, ldflags: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let cgo = if dir == CGO_CASE { "1" } else { "0" };
    let res = Command::new(&tc.go)
        .args(["build", "-o", out.to_str().expect("utf-8 path"), &format!("-ldflags={ldflags}"), "."])
        .current_dir(src)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", cgo)
        .env("GOARCH", goarch)
        .env("GOCACHE", std::env::temp_dir().join(format!("ddprof-goframes-gocache-1.{}", tc.minor)))
        .env("GOPATH", std::env::temp_dir().join("ddprof-goframes-gopath"))
        .output()
        .expect("run go build");
    assert!(res.status.success(), "go build {goarch} {ldflags}: {}", String::from_utf8_lossy(&res.stderr));
}

fn open(path: &Path) -> Arc<ElfFile> {
    Arc::new(ElfFile::open_path(path, Origin::at_path(path, Path::new("/"))).expect("opens as ELF"))
}

fn frames(file: &ElfFile) -> GoFrames {
    let start = Instant::now();
    let f = GoFrames::from_file(file).expect("parses").expect("is Go");
    eprintln!("{}: built in {:?}, {} functions, heap {} bytes", file.origin.path, start.elapsed(), f.num_funcs(), f.heap_bytes());
    f
}

/// (pc, CFA offset from sp) at the first, middle and last pc of every row of every FDE; and
/// the FDEs' start addresses.
fn debug_frame_truth(data: &[u8], sp_reg: u16) -> (Vec<(u64, i64)>, Vec<u64>) {
    let obj = object::File::parse(data).expect("elf");
    let sect = obj.section_by_name(".debug_frame").expect(".debug_frame (built with -compressdwarf=false)");
    let bytes = sect.data().expect("uncompressed .debug_frame");
    let mut df = DebugFrame::new(bytes, LittleEndian);
    df.set_address_size(8);
    let bases = BaseAddresses::default();
    let mut ctx = Box::new(UnwindContext::new());
    let (mut pcs, mut starts) = (Vec::new(), Vec::new());
    let mut entries = df.entries(&bases);
    while let Some(entry) = entries.next().expect("CFI entry") {
        let CieOrFde::Fde(partial) = entry else { continue };
        let fde = partial.parse(DebugFrame::cie_from_offset).expect("FDE");
        starts.push(fde.initial_address());
        let mut rows = fde.rows(&df, &bases, &mut ctx).expect("rows");
        while let Some(row) = rows.next_row().expect("row") {
            let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else { panic!("CFA by expression") };
            assert_eq!(register.0, sp_reg, "CFA from sp");
            let (lo, hi) = (row.start_address(), row.end_address());
            // The linker ends each FDE with an empty row (its last advance is cut by one).
            if hi <= lo {
                continue;
            }
            for pc in [lo, lo + (hi - lo) / 2, hi - 1] {
                pcs.push((pc, *offset));
            }
        }
    }
    (pcs, starts)
}

/// Checks one unstripped/stripped pair; returns (functions, pcs) checked.
fn check_pair(unstripped: &Path, stripped: &Path, arm64: bool, label: &str) -> (usize, usize) {
    let (uf, sf) = (open(unstripped), open(stripped));
    let (u, s) = (frames(&uf), frames(&sf));
    assert!(object::File::parse(sf.bytes()).expect("elf").section_by_name(".debug_frame").is_none(), "stripped has DWARF");
    let (truth, starts) = debug_frame_truth(uf.bytes(), if arm64 { 31 } else { 7 });
    let entries: std::collections::HashSet<u64> = (0..u.num_funcs()).filter_map(|i| u.func_range(i)).map(|r| r.0).collect();
    // Every FDE is one Go function, and (nearly) every Go function has one.
    let unknown: Vec<_> = starts.iter().filter(|s| !entries.contains(s)).collect();
    assert!(unknown.is_empty(), "{label}: FDEs at no Go function entry: {unknown:x?}");
    assert!(starts.len() * 100 >= u.num_funcs() * 95, "{label}: {} FDEs for {} functions", starts.len(), u.num_funcs());
    let (mut bad, mut negative) = (Vec::new(), 0);
    for &(pc, cfa) in &truth {
        negative += usize::from(cfa < if arm64 { 0 } else { 8 });
        let got = u.frame(pc);
        // A negative delta (syscall.rawVforkSyscall pops its return address into a register,
        // like glibc's __vfork) has no frame to give: None.
        let want = Some(if arm64 { cfa } else { cfa - 8 }).filter(|&w| w >= 0);
        if got.map(|g| i64::from(g.sp_delta)) != want {
            bad.push(format!("{pc:#x} ({:?}): got {got:?}, CFA sp+{cfa}", u.func_name(pc)));
        }
        assert_eq!(s.frame(pc), got, "{label}: stripped differs at {pc:#x}");
    }
    assert!(bad.is_empty(), "{label}: {} of {} pcs disagree with .debug_frame:\n{}", bad.len(), truth.len(), bad[..bad.len().min(20)].join("\n"));
    eprintln!(
        "{label}: {} functions with an FDE ({} in the table), {} pcs agree with .debug_frame ({negative} with a negative delta: None), stripped identical",
        starts.len(),
        u.num_funcs(),
        truth.len()
    );
    check_frame_pointers(&u, label);
    check_specials(&u, label);
    (starts.len(), truth.len())
}

/// Every compiled function that opens a frame saves the frame pointer in it; report the
/// assembly ones.
fn check_frame_pointers(f: &GoFrames, label: &str) {
    let (mut compiled, mut asm_fp, mut asm_nofp) = (0, 0, 0);
    let mut missing = Vec::new();
    for i in 0..f.num_funcs() {
        let Some((lo, hi)) = f.func_range(i) else { continue };
        // The deepest point of the function, at instruction granularity well enough: scan
        // every pc of small functions, a stride of larger ones.
        let step = ((hi - lo) / 256).max(1);
        let deepest = (lo..hi).step_by(step as usize).filter_map(|pc| f.frame(pc).map(|g| (g, pc))).max_by_key(|(g, _)| g.sp_delta);
        let Some((g, pc)) = deepest.filter(|(g, _)| g.sp_delta > 0) else { continue };
        if g.flag & FUNC_FLAG_ASM != 0 {
            if g.has_fp {
                asm_fp += 1;
            } else {
                asm_nofp += 1;
            }
            continue;
        }
        compiled += 1;
        if !g.has_fp {
            missing.push(format!("{:?} at {pc:#x}", f.func_name(pc)));
        }
    }
    assert!(missing.is_empty(), "{label}: compiled functions with a frame but no saved frame pointer: {missing:?}");
    eprintln!("{label}: frame pointer saved in all {compiled} compiled functions with a frame; assembly: {asm_fp} save one, {asm_nofp} do not");
}

fn check_specials(f: &GoFrames, label: &str) {
    let find = |name: &str| (0..f.num_funcs()).filter_map(|i| f.func_range(i)).find(|r| f.func_name(r.0).as_deref() == Some(name));
    let frame_of = |name: &str| find(name).and_then(|(lo, hi)| (lo..hi).find_map(|pc| f.frame(pc)));
    for root in ["runtime.goexit", "runtime.mstart", "runtime.rt0_go"] {
        assert!(frame_of(root).is_some_and(|g| g.is_entry_point), "{label}: {root} is an entry point");
    }
    for (name, kind) in [
        ("runtime.asmcgocall", StackSwitch::AsmCgoCall),
        ("runtime.cgocallback", StackSwitch::CgoCallback),
        ("runtime.systemstack", StackSwitch::SystemStack),
        ("runtime.systemstack_switch", StackSwitch::SystemStackSwitch),
        ("runtime.mcall", StackSwitch::Mcall),
        ("runtime.morestack", StackSwitch::Morestack),
    ] {
        // An assembly function has an ABI wrapper of the same name (an ordinary frame).
        let all: Vec<_> = (0..f.num_funcs())
            .filter_map(|i| f.func_range(i))
            .filter(|r| f.func_name(r.0).as_deref() == Some(name))
            .filter_map(|(lo, hi)| (lo..hi).find_map(|pc| f.frame(pc)))
            .collect();
        // cgo's functions are linked in only when used.
        if all.is_empty() {
            assert!(name.contains("cgo"), "{label}: {name} has frames");
            continue;
        }
        let asm: Vec<_> = all.iter().filter(|g| g.flag & FUNC_FLAG_ASM != 0).collect();
        assert_eq!(asm.len(), 1, "{label}: one assembly {name}");
        for g in &all {
            let want = (g.flag & FUNC_FLAG_ASM != 0).then_some(kind);
            assert_eq!(g.stack_switch, want, "{label}: {name} (the assembly one switches, its wrapper does not)");
            assert!(!g.is_entry_point, "{label}: {name} is not an entry point");
        }
    }
    if let Some(g) = frame_of("runtime.sigtramp") {
        assert_eq!(g.stack_switch, Some(StackSwitch::SignalTrampoline), "{label}");
        assert!(!g.is_entry_point, "{label}: the signal trampoline does not end a stack");
    }
    let main = frame_of("main.main").expect("main.main");
    assert!(!main.is_entry_point && main.stack_switch.is_none(), "{label}: main.main is plain");
    // Functions the runtime marks TOPFRAME, for the record.
    let top: Vec<String> = (0..f.num_funcs())
        .filter_map(|i| f.func_range(i))
        .filter_map(|(lo, hi)| (lo..hi).find_map(|pc| f.frame(pc)).filter(|g| g.flag & 1 != 0).and(f.func_name(lo)))
        .collect();
    eprintln!("{label}: TOPFRAME functions: {top:?}");
}

fn work_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ddprof-goframes-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn pcsp_deltas_match_debug_frame() {
    let tcs = toolchains();
    if tcs.is_empty() {
        skip_or_fail("no `go` on PATH");
        return;
    }
    if !tcs.iter().any(|t| t.minor <= 20) {
        skip_or_fail("no Go 1.18-1.20 toolchain at /usr/lib/go-1.*/bin/go: the 1.18 table layout and pre-1.21 prologues are untested");
    }
    let dir = work_dir();
    let (mut funcs, mut pcs) = (0, 0);
    for tc in &tcs {
        for arch in ["amd64", "arm64"] {
            let (u, s) = (dir.join(format!("u-1.{}-{arch}", tc.minor)), dir.join(format!("s-1.{}-{arch}", tc.minor)));
            build(tc, &u, arch, "-compressdwarf=false");
            build(tc, &s, arch, "-s -w");
            let (f, p) = check_pair(&u, &s, arch == "arm64", &format!("go1.{} {arch}", tc.minor));
            funcs += f;
            pcs += p;
        }
    }
    // cgo: externally linked, C code in the same text, crosscall2 and cgocallback linked in.
    if Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let (u, s) = (dir.join("cgo-u"), dir.join("cgo-s"));
        build_in(CGO_CASE, &tcs[0], &u, "amd64", "-compressdwarf=false");
        build_in(CGO_CASE, &tcs[0], &s, "amd64", "-s -w");
        let (f, p) = check_pair(&u, &s, false, &format!("go1.{} amd64 cgo", tcs[0].minor));
        funcs += f;
        pcs += p;
        let frames = frames(&open(&u));
        let named = |name: &str| (0..frames.num_funcs()).filter_map(|i| frames.func_range(i)).find(|r| frames.func_name(r.0).as_deref() == Some(name));
        // One table per file, kept while the file is.
        let mut cache = GoFramesCache::default();
        let file = open(&u);
        let a = cache.get(&file).expect("a Go table");
        assert!(Arc::ptr_eq(&a, &cache.get(&file).expect("cached")));
        assert_eq!(cache.len(), 1);
        drop(file);
        cache.forget_dropped();
        assert!(cache.is_empty());
        mutate_real(&s, &dir);
        let (lo, _) = named("crosscall2").expect("crosscall2 in a cgo binary");
        assert_eq!(frames.frame(lo).and_then(|g| g.stack_switch), Some(StackSwitch::Crosscall2));
        assert!(named("runtime.cgocallback").is_some(), "cgocallback in a cgo binary");
    } else {
        skip_or_fail("no gcc: the cgo binary is untested");
    }
    eprintln!("in all: {funcs} functions, {pcs} pcs agree");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Random corruption of a real binary's table (header, function table, records, pc tables)
/// and of its text: errors, None and wrong answers are fine; panics and hangs are not.
fn mutate_real(path: &Path, dir: &Path) {
    let data = std::fs::read(path).expect("read");
    let obj = object::File::parse(&*data).expect("elf");
    let (off, size) = obj.section_by_name(".gopclntab").and_then(|s| s.file_range()).expect("pclntab");
    let (toff, tsize) = obj.section_by_name(".text").and_then(|s| s.file_range()).expect("text");
    let text = obj.section_by_name(".text").map(|s| s.address()).expect("text");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let target = dir.join("mutated");
    for round in 0..60u64 {
        let mut d = data.clone();
        for _ in 0..1 + round % 8 {
            let pos = match next() % 5 {
                0 => off + next() % 72,
                1..=3 => off + next() % size,
                _ => toff + next() % tsize,
            } as usize;
            d[pos] = next() as u8;
        }
        std::fs::write(&target, &d).expect("write");
        let Ok(Some(f)) = GoFrames::from_file(&open(&target)) else { continue };
        for _ in 0..3000 {
            let pc = text + next() % tsize;
            let _ = (f.frame(pc), f.code(pc));
        }
    }
}

/// Not Go, or not ELF: no table, no panic.
#[test]
fn non_go_files_have_no_frames() {
    let exe = std::env::current_exe().expect("test binary");
    let f = open(&exe);
    assert!(GoFrames::from_file(&f).expect("no error").is_none());
    let mut cache = ddprof_core::unwind::go::GoFramesCache::default();
    assert!(cache.get(&f).is_none());
}

/// Lookup cost and memory on the largest Go binary at hand (the Go compiler), release build:
/// `cargo test --release -p ddprof-core --test go_frames -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_lookup() {
    let candidates = ["/usr/local/go/pkg/tool/linux_amd64/compile", "/usr/local/go/bin/go", "/usr/lib/go-1.19/pkg/tool/linux_amd64/compile"];
    for path in candidates.iter().map(Path::new).filter(|p| p.exists()) {
        let file = open(path);
        let start = Instant::now();
        let f = GoFrames::from_file(&file).expect("parses").expect("is Go");
        let build = start.elapsed();
        let text: Vec<(u64, u64)> = (0..f.num_funcs()).filter_map(|i| f.func_range(i)).collect();
        let (lo, hi) = (text[0].0, text[text.len() - 1].1);
        // Random pcs across the text (xorshift), some of which fall in padding.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let pcs: Vec<u64> = (0..200_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                lo + rng % (hi - lo)
            })
            .collect();
        // Samples repeat hot pcs: 3000 distinct ones, drawn with a skew (the square of a
        // uniform index), through the caller's cache.
        let hot: Vec<u64> = pcs[..3000].to_vec();
        let draws: Vec<u64> = (0..200_000u64)
            .map(|i| {
                let u = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 3000;
                hot[(u * u / 3000) as usize]
            })
            .collect();
        let mut cache = GoFrameCache::new(4096);
        let t = Instant::now();
        let found = draws.iter().filter(|&&pc| cache.frame(&f, pc).is_some()).count();
        let ns = t.elapsed().as_nanos() as f64 / draws.len() as f64;
        eprintln!("{}: cached, 3000 hot pcs: {ns:.0} ns/lookup ({found} found, {} hits, {} misses)", path.display(), cache.hits, cache.misses);
        for _ in 0..2 {
            let t = Instant::now();
            let found: usize = pcs.iter().filter(|&&pc| f.frame(pc).is_some()).count();
            let ns = t.elapsed().as_nanos() as f64 / pcs.len() as f64;
            eprintln!(
                "{}: {} functions, text {} KiB, pclntab {} KiB; built in {build:?}; {ns:.0} ns/lookup ({found} of {} found); heap {} bytes",
                path.display(),
                f.num_funcs(),
                (hi - lo) / 1024,
                object::File::parse(file.bytes())
                    .ok()
                    .and_then(|o| o.section_by_name(".gopclntab").map(|s| s.size() / 1024))
                    .unwrap_or(0),
                pcs.len(),
                f.heap_bytes()
            );
        }
    }
}
