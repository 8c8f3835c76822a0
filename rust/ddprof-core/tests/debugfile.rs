//! `debugfile::write_debug_file` against binutils as ground truth: on a C program built
//! here with gcc (skipped without gcc/binutils) and a stripped Go program (skipped without
//! go), `nm`, `addr2line`, `readelf` must read the debug file as they read the original;
//! hostile inputs must fail without leaving a file behind. Sizes are printed next to what
//! `objcopy --only-keep-debug --compress-debug-sections=zlib` makes of the same input.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ddprof_core::elf::debug_writer::write_debug_file;

mod common;
use common::{have, run, skip_or_fail, tmp_dir};
use object::{Object, ObjectSection, SectionKind};

const SRC: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int counter = 7;
static const char *names[] = {"a", "b", "c"};
__attribute__((noinline)) int work(int n) { int s = 0; for (int i = 0; i < n; i++) s += i * counter; return s; }
static inline int helper(int x) { return x * 3 + counter; }
__attribute__((noinline)) int outer(int n) { return helper(n) + work(n); }
int main(int argc, char **argv) { printf("%d %s\n", outer(argc + atoi(argv[0])), names[argc % 3]); return 0; }
"#;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn build_c(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let c = dir.join("p.c");
    std::fs::write(&c, SRC).expect("write source");
    let out = dir.join(name);
    let mut args = vec!["-g", "-O2", "-Wl,--build-id", "-o", s(&out), s(&c)];
    args.extend_from_slice(extra);
    run("gcc", &args);
    out
}

/// (address, name) of every symbol; the type letter of data symbols changes with NOBITS.
fn nm(p: &Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = run("nm", &[s(p)])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = if f.len() == 3 { f[0] } else { "" };
            (addr.to_string(), f.last().copied().unwrap_or_default().to_string())
        })
        .collect();
    v.sort();
    v
}

fn section_data(p: &Path, name: &str) -> Option<Vec<u8>> {
    let data = std::fs::read(p).expect("read");
    let f = object::File::parse(&*data).expect("parse");
    let sec = f.section_by_name(name)?;
    Some(sec.uncompressed_data().expect("section data").into_owned())
}

fn objcopy_size(src: &Path, dir: &Path) -> Option<(u64, f64)> {
    let out = dir.join("objcopy.debug");
    let t = Instant::now();
    let ok = Command::new("objcopy")
        .args(["--only-keep-debug", "--remove-section=.gdb_index", "--compress-debug-sections=zlib", s(src), s(&out)])
        .status()
        .is_ok_and(|st| st.success());
    let secs = t.elapsed().as_secs_f64();
    ok.then(|| (std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0), secs))
}

fn check_like_original(orig: &Path, out: &Path) {
    assert_eq!(nm(out), nm(orig));
    let sections = run("readelf", &["-SW", s(out)]);
    assert!(sections.lines().any(|l| l.contains(" .text ") && l.contains("NOBITS")), "{sections}");
    let t = run("readelf", &["-tW", s(out)]);
    let info = t.split("] .debug_info").nth(1).expect(".debug_info in readelf -t");
    let info: String = info.lines().take(4).collect();
    assert!(info.contains("COMPRESSED") && info.contains("ZLIB"), "{info}");
    let id = |p: &Path| run("readelf", &["-n", s(p)]).lines().find(|l| l.contains("Build ID")).map(str::to_string);
    assert!(id(orig).is_some());
    assert_eq!(id(out), id(orig));
    // A few code addresses: function starts and a little inside them.
    let mut addrs = Vec::new();
    for (a, name) in nm(orig) {
        if ["main", "work", "outer"].contains(&name.as_str()) {
            let a = u64::from_str_radix(&a, 16).expect("hex address");
            addrs.extend([format!("{a:#x}"), format!("{:#x}", a + 4), format!("{:#x}", a + 9)]);
        }
    }
    assert_eq!(addrs.len(), 9);
    let a2l = |p: &Path| {
        let mut args = vec!["-f", "-i", "-e", s(p)];
        args.extend(addrs.iter().map(String::as_str));
        run("addr2line", &args)
    };
    let want = a2l(orig);
    assert!(want.contains("work") && want.contains("p.c:"), "{want}");
    assert_eq!(a2l(out), want);
}

#[test]
fn c_program_reads_like_the_original() {
    if !have("gcc") || !have("readelf") || !have("addr2line") {
        skip_or_fail("needs gcc and binutils");
        return;
    }
    let dir = tmp_dir("debugfile", "c");
    for (name, extra) in [("plain", &[][..]), ("gz", &["-gz=zlib"][..])] {
        let prog = build_c(&dir, name, extra);
        let out = dir.join(format!("{name}.debug"));
        let t = Instant::now();
        let stats = write_debug_file(&prog, None, &out).expect("debug file");
        let ours = t.elapsed().as_secs_f64();
        check_like_original(&prog, &out);
        assert!(stats.output_bytes < stats.input_bytes, "{stats:?}");
        assert_eq!(stats.output_bytes, std::fs::metadata(&out).expect("out").len());
        assert!(stats.symtab_entries > 20, "{stats:?}");
        // Sections gcc compressed already are copied as they are.
        assert_eq!(stats.sections_compressed == 0, name == "gz", "{stats:?}");
        let theirs = objcopy_size(&prog, &dir);
        let (input, output) = (stats.input_bytes, stats.output_bytes);
        eprintln!("{name}: input {input} B, ours {output} B in {ours:.3}s, objcopy (B, s) {theirs:?}");
        // A debug file of a debug file is the same debug file.
        let again = dir.join(format!("{name}.debug2"));
        let st2 = write_debug_file(&out, None, &again).expect("debug file of a debug file");
        assert_eq!(st2.output_bytes, stats.output_bytes);
        check_like_original(&prog, &again);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn segments_stay_usable() {
    if !have("gcc") || !have("readelf") {
        skip_or_fail("needs gcc and binutils");
        return;
    }
    let dir = tmp_dir("debugfile", "seg");
    let prog = build_c(&dir, "prog", &[]);
    let out = dir.join("prog.debug");
    write_debug_file(&prog, None, &out).expect("debug file");
    let data = std::fs::read(&out).expect("read");
    let orig = std::fs::read(&prog).expect("read");
    let (f, o) = (object::File::parse(&*data).expect("parse"), object::File::parse(&*orig).expect("parse"));
    use object::ObjectSegment;
    let segs = |f: &object::File| f.segments().map(|s| (s.address(), s.size())).collect::<Vec<_>>();
    assert_eq!(segs(&f), segs(&o));
    // PT_NOTE segments still lead to the notes (readers without section headers use them).
    let notes = |d: &[u8]| {
        use object::read::elf::{FileHeader, ProgramHeader};
        let h = object::elf::FileHeader64::<object::LittleEndian>::parse(d).expect("header");
        let mut names = Vec::new();
        for ph in h.program_headers(object::LittleEndian, d).expect("phdrs") {
            if let Some(mut it) = ph.notes(object::LittleEndian, d).expect("notes") {
                while let Some(n) = it.next().expect("note") {
                    names.push((n.name().to_vec(), n.n_type(object::LittleEndian), n.desc().to_vec()));
                }
            }
        }
        names
    };
    assert!(notes(&orig).iter().any(|n| n.0 == b"GNU" && n.1 == 3));
    assert_eq!(notes(&data), notes(&orig));
    let o = Command::new("readelf").args(["-lW", s(&out)]).output().expect("readelf");
    let (ph, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!err.contains("PHDR segment is not covered"), "{err}");
    let loads: Vec<&str> = ph.lines().filter(|l| l.trim_start().starts_with("LOAD")).collect();
    let orig_loads: Vec<String> = run("readelf", &["-lW", s(&prog)])
        .lines()
        .filter(|l| l.trim_start().starts_with("LOAD"))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(loads.len(), orig_loads.len());
    for (i, (l, want)) in loads.iter().zip(&orig_loads).enumerate() {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f[..4].join(" "), *want, "offset and addresses kept: {l}");
        // Only the first keeps file bytes: the headers and notes at their offsets.
        assert_eq!(f[4] == "0x000000", i > 0, "{l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stripped Go workload, built here; `None` only when there is no Go toolchain (a
/// toolchain that fails to build it fails the test).
fn go_binary(dir: &Path) -> Option<PathBuf> {
    let go = ["go", "/usr/local/go/bin/go"].into_iter().find(|g| have_go(g))?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/workloads/gowork");
    let out = dir.join("gowork");
    let st = Command::new(go)
        .args(["build", "-ldflags=-s -w", "-o", s(&out), "."])
        .current_dir(src)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", std::env::temp_dir().join("ddprof-debugfile-gocache"))
        .status()
        .expect("run go build");
    assert!(st.success(), "go build of the Go workload failed");
    Some(out)
}

fn have_go(go: &str) -> bool {
    Command::new(go).arg("version").env("GOTOOLCHAIN", "local").output().is_ok_and(|o| o.status.success())
}

#[test]
fn go_stripped_keeps_gopclntab() {
    let dir = tmp_dir("debugfile", "go");
    let Some(bin) = go_binary(&dir) else {
        skip_or_fail("no go toolchain");
        return;
    };
    let out = dir.join("gowork.debug");
    let t = Instant::now();
    let stats = write_debug_file(&bin, None, &out).expect("debug file");
    let ours = t.elapsed().as_secs_f64();
    let want = section_data(&bin, ".gopclntab").expect("gopclntab");
    assert_eq!(section_data(&out, ".gopclntab").as_deref(), Some(&want[..]));
    assert_eq!(stats.gopclntab_bytes, want.len() as u64);
    for note in [".note.go.buildid", ".note.gnu.build-id"] {
        assert_eq!(section_data(&out, note), section_data(&bin, note), "{note}");
    }
    let data = std::fs::read(&out).expect("read");
    let f = object::File::parse(&*data).expect("parse");
    assert_eq!(f.section_by_name(".text").expect(".text").kind(), SectionKind::UninitializedData);
    let pcln = f.section_by_name(".gopclntab").expect(".gopclntab");
    let orig = std::fs::read(&bin).expect("read");
    let o = object::File::parse(&*orig).expect("parse");
    assert_eq!(pcln.address(), o.section_by_name(".gopclntab").expect("orig").address());
    assert!(stats.output_bytes < stats.input_bytes);
    let (input, output, theirs) = (stats.input_bytes, stats.output_bytes, objcopy_size(&bin, &dir));
    eprintln!("go: input {input} B, ours {output} B in {ours:.3}s, objcopy (B, s; no gopclntab) {theirs:?}");

    // A separate debug file (its gopclntab NOBITS) gets the table from the binary.
    if have("objcopy") {
        let dbg = dir.join("gowork.dbg");
        run("objcopy", &["--only-keep-debug", s(&bin), s(&dbg)]);
        assert!(section_data(&dbg, ".gopclntab").is_some_and(|d| d.is_empty()));
        let out2 = dir.join("gowork2.debug");
        write_debug_file(&dbg, None, &out2).expect("debug file without the table");
        assert!(section_data(&out2, ".gopclntab").is_some_and(|d| d.is_empty()));
        write_debug_file(&dbg, Some(&bin), &out2).expect("debug file with the table");
        assert_eq!(section_data(&out2, ".gopclntab").as_deref(), Some(&want[..]));
    } else {
        skip_or_fail("objcopy is needed for the separate-debug-file case");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_inputs_fail_cleanly() {
    let dir = tmp_dir("debugfile", "bad");
    let good = if have("gcc") {
        std::fs::read(build_c(&dir, "prog", &[])).ok()
    } else {
        skip_or_fail("gcc is needed for the ELF-derived hostile cases");
        None
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("text", b"#!/bin/sh\necho hi\n".to_vec()),
        ("garbage", [&b"\x7fELF\x02\x01\x01"[..], &[0xA5; 4000]].concat()),
    ];
    if let Some(g) = good {
        let shoff = u64::from_le_bytes(g[0x28..0x30].try_into().expect("8 bytes")) as usize;
        cases.push(("truncated", g[..200].to_vec()));
        cases.push(("half", g[..g.len() / 2].to_vec()));
        let mut h = g[..64].to_vec();
        h.extend_from_slice(&[0; 1000]);
        h[0x28..0x30].copy_from_slice(&500u64.to_le_bytes());
        h[0x3C..0x3E].copy_from_slice(&0xFFFFu16.to_le_bytes());
        cases.push(("hostile_counts", h));
        let mut e32 = g.clone();
        e32[4] = 1;
        cases.push(("elf32", e32));
        let mut be = g.clone();
        be[5] = 2;
        cases.push(("big_endian", be));
        // Section 1's sh_offset far past the end of the file.
        let mut past = g.clone();
        past[shoff + 64 + 0x18..shoff + 64 + 0x20].copy_from_slice(&(1u64 << 40).to_le_bytes());
        cases.push(("section_past_eof", past));
        let mut huge = g.clone();
        huge[shoff + 64 + 0x20..shoff + 64 + 0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push(("section_size_overflow", huge));
    }
    for (name, bytes) in cases {
        let src = dir.join(name);
        std::fs::write(&src, &bytes).expect("write");
        let out = dir.join(format!("{name}.debug"));
        let t = Instant::now();
        let err = write_debug_file(&src, None, &out).expect_err(name);
        assert!(t.elapsed().as_secs() < 2, "{name}");
        assert!(err.to_string().contains(s(&src)), "{name}: {err}");
        assert!(!out.exists(), "{name}: {err}");
        eprintln!("{name}: {err}");
    }
    // Valid but hostile: 60000 segments over 60000 tiny sections must stay fast and small.
    let src = dir.join("many");
    std::fs::write(&src, many_headers(60_000, 60_000)).expect("write");
    let out = dir.join("many.debug");
    let t = Instant::now();
    let res = write_debug_file(&src, None, &out);
    assert!(t.elapsed().as_secs() < 5, "{res:?}");
    let len = std::fs::metadata(&src).expect("src").len();
    eprintln!("many: {len} B in, {:.2}s: {res:?}", t.elapsed().as_secs_f64());
    match res {
        Ok(st) => assert!(st.output_bytes < 2 * len, "{st:?}"),
        Err(e) => assert!(!out.exists(), "{e}"),
    }
    let missing = write_debug_file(&dir.join("missing"), None, &dir.join("m.debug")).expect_err("missing");
    assert!(matches!(missing, ddprof_core::Error::Io { .. }), "{missing}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ELF64 file with `nph` PT_NOTE headers and `nsh` 1-byte sections aligned to 4 KiB,
/// all over its first bytes; section 1 names them all "" (byte 8 of e_ident is 0).
fn many_headers(nph: usize, nsh: usize) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4..7].copy_from_slice(&[2, 1, 1]);
    let u16_at = |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let u64_at = |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    u16_at(&mut f, 0x10, 3);
    u16_at(&mut f, 0x12, 62);
    f[0x14] = 1;
    u64_at(&mut f, 0x20, 64);
    let shoff = 64 + 56 * nph as u64;
    u64_at(&mut f, 0x28, shoff);
    u16_at(&mut f, 0x34, 64);
    u16_at(&mut f, 0x36, 56);
    u16_at(&mut f, 0x38, nph as u16);
    u16_at(&mut f, 0x3A, 64);
    u16_at(&mut f, 0x3C, 0); // extended: the count is in section 0's sh_size
    u16_at(&mut f, 0x3E, 1);
    for _ in 0..nph {
        let mut ph = [0u8; 56];
        ph[..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        ph[32..40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz over the header
        f.extend_from_slice(&ph);
    }
    for i in 0..nsh {
        let mut sh = [0u8; 64];
        if i == 0 {
            sh[32..40].copy_from_slice(&(nsh as u64).to_le_bytes());
        } else {
            sh[4..8].copy_from_slice(&(if i == 1 { 3u32 } else { 1 }).to_le_bytes()); // STRTAB, PROGBITS
            sh[24..32].copy_from_slice(&8u64.to_le_bytes()); // sh_offset
            sh[32..40].copy_from_slice(&1u64.to_le_bytes()); // sh_size
            sh[48..56].copy_from_slice(&4096u64.to_le_bytes()); // sh_addralign
        }
        f.extend_from_slice(&sh);
    }
    f
}
