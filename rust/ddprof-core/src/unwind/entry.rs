//! Known thread and process entry points: the functions a stack may end at and be complete.
//!
//! A walk is complete when the CFI says the frame is the outermost (its return address
//! column is undefined: glibc's `_start` and `clone3`), or when it stops at one of these
//! functions, whose own CFI (or lack of it) may not say so: musl's `start` and
//! `libc_start_main_stage2` have no CFI at all, Go's `runtime.goexit` has a fake caller.
//! Anywhere else, a walk that ends is marked, never passed off as complete.
//!
//! Input: an ELF file's symbol tables (also its debug file's, when it is stripped) and its
//! header's entry address. Output: the SVMA ranges of its entry points, found
//! once per file. Non-goals: symbolization (the symbolizer names frames later, from the
//! best symbols available).
use std::ops::Range;

use object::{Object, ObjectSymbol, SymbolKind};

/// The names, from the C libraries (glibc, musl), the dynamic loader and Go's runtime.
pub const ENTRY_POINTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "__GI___clone",
    "__GI___clone3",
    "_dl_start",
    "_dl_start_user",
    // musl (see MUSL_ONLY)
    "_start_c",
    "start",
    "start_c",
    "libc_start_main_stage2",
    // Go
    "runtime.goexit",
    "runtime.goexit.abi0",
    "runtime.mstart",
    "runtime.mstart.abi0",
    "runtime.mstart0",
    "runtime.rt0_go",
    "runtime.rt0_go.abi0",
    // The scheduler's stack: the goroutine that called mcall is parked, not a caller.
    "runtime.mcall",
    "runtime.mcall.abi0",
    "_rt0_amd64_linux",
    "_rt0_arm64_linux",
];

/// Names too common to trust outside musl: entry points only in a file that also defines
/// musl's `libc_start_main_stage2`.
const MUSL_ONLY: &[&str] = &["start", "start_c"];

/// Whether `name` (a symbol or function name) is a known entry point.
pub fn is_entry_name(name: &str) -> bool {
    ENTRY_POINTS.contains(&name)
}

/// Symbols read between two calls of the release callback of [`EntryPoints::of_releasing`]
/// (about 1.5 MiB of symbol table and its names).
pub const RELEASE_EVERY: usize = 1 << 16;

/// The entry points named in one symbol table (the same SVMAs in a binary and its debug file),
/// in one pass over its symbols.
fn named_entries(obj: &object::File<'_>, release: &mut dyn FnMut()) -> Vec<Range<u64>> {
    let mut musl = false;
    let mut found: Vec<(bool, Range<u64>)> = Vec::new();
    for (i, s) in obj.symbols().chain(obj.dynamic_symbols()).enumerate() {
        if i % RELEASE_EVERY == RELEASE_EVERY - 1 {
            release();
        }
        let Ok(name) = s.name() else { continue };
        musl |= name == "libc_start_main_stage2";
        // Hand-written entry points (musl's `_start`) are labels without a type.
        if is_entry_name(name) && matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown) && s.address() != 0 {
            // A symbol without a size (hand-written assembly): its first instruction.
            found.push((MUSL_ONLY.contains(&name), s.address()..s.address().saturating_add(s.size().max(1))));
        }
    }
    found.into_iter().filter(|(musl_only, _)| musl || !musl_only).map(|(_, r)| r).collect()
}

/// The entry points of one file, as SVMA ranges sorted by start.
#[derive(Default)]
pub struct EntryPoints(Vec<Range<u64>>);

impl EntryPoints {
    /// From the file's `.symtab` and `.dynsym`, the ELF header's entry address, and `debug`
    /// (the separate debug file's bytes, for a stripped file: Debian's dynamic loader names
    /// `_start` and `_dl_start_user` only there). Empty when nothing parses.
    pub fn of(bytes: &[u8], debug: Option<&[u8]>) -> EntryPoints {
        Self::of_releasing(bytes, debug, &mut || {})
    }

    /// [`EntryPoints::of`], calling `release` after every [`RELEASE_EVERY`] symbols read:
    /// the caller drops the pages read so far (`ElfFile::release_pages`), so that scanning a
    /// large library's tables (libLLVM: 6 MiB of symbols, 17.5 MiB of names) does not make
    /// them all resident at once.
    pub fn of_releasing(bytes: &[u8], debug: Option<&[u8]>, release: &mut dyn FnMut()) -> EntryPoints {
        let Ok(obj) = object::File::parse(bytes) else { return EntryPoints::default() };
        let dbg = debug.and_then(|d| object::File::parse(d).ok());
        let mut out = named_entries(&obj, release);
        if let Some(d) = &dbg {
            out.extend(named_entries(d, release));
        }
        // `e_entry` is where the kernel starts the process (an executable's `_start`, the
        // dynamic loader's own `_start` when it maps itself), named or not. Shared libraries
        // have 0 there; libc's points at the function that runs when it is executed.
        if obj.entry() != 0 {
            out.push(obj.entry()..obj.entry() + 1);
        }
        out.sort_unstable_by_key(|r| r.start);
        out.dedup();
        EntryPoints(out)
    }

    /// Whether `svma` is inside an entry point. Sizeless symbols (hand-written `_start`s)
    /// cover up to the next symbol of the list at most: close enough for a function that
    /// is the root of every stack it is in.
    pub fn contains(&self, svma: u64) -> bool {
        let i = self.0.partition_point(|r| r.start <= svma);
        i > 0 && {
            let r = &self.0[i - 1];
            svma < r.end || (r.end == r.start + 1 && svma < r.start + 64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ranges() {
        assert!(is_entry_name("_start"));
        assert!(is_entry_name("runtime.goexit.abi0"));
        assert!(!is_entry_name("main"));
        let e = EntryPoints(vec![0x100..0x140, 0x200..0x201]);
        assert!(e.contains(0x100) && e.contains(0x13f) && !e.contains(0x140));
        assert!(e.contains(0x220), "a sizeless entry covers its first instructions");
        assert!(!e.contains(0xff) && !e.contains(0x300));
    }

    #[test]
    fn found_in_a_real_binary() {
        let exe = std::env::current_exe().expect("test binary");
        let bytes = std::fs::read(exe).expect("read");
        let e = EntryPoints::of(&bytes, None);
        assert!(!e.0.is_empty(), "a Rust test binary links crt1's _start");
    }

    /// A stripped dynamic loader (Debian's): its `_start`, and `_dl_start_user` right after
    /// it, from the header alone.
    #[test]
    fn stripped_loader_entry_from_the_header() {
        let Ok(bytes) = std::fs::read("/lib64/ld-linux-x86-64.so.2") else { return };
        let entry = object::File::parse(&*bytes).expect("ld.so parses").entry();
        let e = EntryPoints::of(&bytes, None);
        assert!(e.contains(entry) && e.contains(entry + 0x30), "_start and _dl_start_user's call sites");
    }
}
