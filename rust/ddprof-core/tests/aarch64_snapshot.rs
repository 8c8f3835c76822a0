//! The aarch64 unwinder on a real arm64 stack, without arm64 hardware (scripts/check-aarch64.sh
//! builds this test for aarch64-unknown-linux-gnu and runs it under qemu-user, next to
//! tests/cases/aarch64-snapshot, a C program cross-compiled with -O2 -fomit-frame-pointer
//! and also run under qemu-user). That program takes, in `leaf`, what the BPF sampler takes
//! on arm64 (x0-x30, sp, pc in `bpf/sampler.h`'s order, and the stack from sp), writes it with
//! its own view of its mappings to $DDPROF_AARCH64_SNAPSHOT, and waits. The unwinder, fed that
//! snapshot and the process's files, must walk leaf <- middle <- outer <- main <- (libc's
//! start code) <- _start by the binaries' CFI, and call the walk complete.
//!
//! On other architectures this file is empty: the unwinder is compiled for one.
#![cfg(target_arch = "aarch64")]

use std::sync::Arc;

use ddprof_core::addr::Avma;
use ddprof_core::arch::{UserRegs, USER_REGS};
use ddprof_core::process::Registry;
use ddprof_core::unwind::{Outcome, StackSnapshot, StackUnwinder};
use ddprof_core::Counters;
use object::{Object, ObjectSymbol};

mod common;
use common::skip_or_fail;

struct Snapshot {
    pid: u32,
    regs: [u64; USER_REGS],
    base: u64,
    stack: Vec<u8>,
    maps: String,
}

fn field<'a>(data: &'a [u8], at: &mut usize) -> &'a str {
    let end = data[*at..].iter().position(|&b| b == b'\n').expect("a line") + *at;
    let line = std::str::from_utf8(&data[*at..end]).expect("text");
    *at = end + 1;
    line
}

fn parse(data: &[u8]) -> Snapshot {
    let mut at = 0;
    let pid = field(data, &mut at).strip_prefix("pid ").expect("pid line").parse().expect("pid");
    let words: Vec<u64> = field(data, &mut at)
        .strip_prefix("regs ")
        .expect("regs line")
        .split(' ')
        .map(|w| u64::from_str_radix(w, 16).expect("hex register"))
        .collect();
    let regs: [u64; USER_REGS] = words.try_into().expect("33 registers");
    let stack_line = field(data, &mut at).strip_prefix("stack ").expect("stack line").to_string();
    let (base, len) = stack_line.split_once(' ').expect("base and length");
    let base = u64::from_str_radix(base, 16).expect("hex base");
    let len: usize = len.parse().expect("length");
    let stack = data[at..at + len].to_vec();
    at += len;
    assert_eq!(field(data, &mut at), "maps");
    let maps = String::from_utf8(data[at..].to_vec()).expect("maps text");
    Snapshot { pid, regs, base, stack, maps }
}

/// The name of the function holding `svma` in the symbol table of `path`.
fn function_at(path: &str, svma: u64) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    file.symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.address() <= svma)
        .filter(|s| svma < s.address() + s.size().max(1))
        .max_by_key(|s| s.address())
        .and_then(|s| s.name().ok().map(str::to_string))
}

#[test]
fn unwinds_an_arm64_snapshot_to_its_known_chain() {
    let Ok(path) = std::env::var("DDPROF_AARCH64_SNAPSHOT") else {
        skip_or_fail("DDPROF_AARCH64_SNAPSHOT is not set: scripts/check-aarch64.sh runs this test");
        return;
    };
    let snap = parse(&std::fs::read(&path).expect("the snapshot file"));
    let exe = std::env::var("DDPROF_AARCH64_EXE").expect("DDPROF_AARCH64_EXE");
    let mut registry = Registry::new(Arc::new(Counters::default()));
    let process = registry.insert_from_maps(snap.pid, &snap.maps);
    // sp is the snapshot's base: the program copied from sp to the end of its stack.
    assert_eq!(snap.regs[31], snap.base);
    let stack = StackSnapshot { bytes: &snap.stack, base: snap.base, cut: false };
    let mut out = Vec::new();
    let outcome = StackUnwinder::new().unwind(process, UserRegs { regs: snap.regs }, &stack, &mut |_, _| None, &mut out);

    let names: Vec<String> = out
        .iter()
        .map(|&Avma(a)| match process.mapping(Avma(a)) {
            Some(m) if m.file.is_some() => {
                let svma = m.bias.svma(Avma(a)).0;
                function_at(&m.path, svma).unwrap_or_else(|| format!("{}+{svma:#x}", m.path))
            }
            Some(m) => format!("{}@{a:#x}", m.path),
            None => format!("?@{a:#x}"),
        })
        .collect();
    eprintln!("walk ({outcome:?}): {}", names.join(" <- "));
    assert_eq!(outcome, Outcome::Complete, "walk: {names:?}");
    assert_eq!(&names[..4], ["leaf", "middle", "outer", "main"], "walk: {names:?}");
    assert_eq!(names.last().map(String::as_str), Some("_start"), "walk: {names:?}");
    // Between main and _start: libc's start code, in libc.
    let libc_frames = out[4..out.len() - 1]
        .iter()
        .filter(|&&a| process.mapping(a).is_some_and(|m| m.path.contains("libc.so")))
        .count();
    assert!(libc_frames >= 1 && libc_frames == out.len() - 5, "walk: {names:?}");
    // The frames of the test program are its own.
    for &a in &out[..4] {
        assert_eq!(process.mapping(a).map(|m| m.path.as_str()), Some(exe.as_str()));
    }
}
