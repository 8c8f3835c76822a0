//! What the fuzz targets (and the robustness tests, which include this file) do with
//! arbitrary bytes: drive the ELF/DWARF and Go table entry points through the public API the
//! profiler itself uses. Errors are expected; panics, hangs and runaway memory are findings.
//! Kept outside the library so that no fuzz hook ships in it.
#![allow(dead_code)]
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use ddprof_core::addr::{Avma, FileOffset, Svma};
use ddprof_core::counters::Counters;
use ddprof_core::elf::inspect::BinaryInfo;
use ddprof_core::elf::{memfd, ElfFile, FileKey, Origin};
use ddprof_core::symbolize::gopclntab::GoTable;
use ddprof_core::symbolize::{SymRequest, SymbolizeMode, Symbolizer};

/// The path a mapped file takes: parse, segments, bias, ids, unwind sections, inspection,
/// symbolization of a few offsets. Returns how many of the offsets resolved.
pub fn elf(data: &[u8]) -> usize {
    if data.is_empty() {
        return 0;
    }
    let Some(mut file) = memfd("ddprof-fuzz") else { return 0 };
    if file.write_all(data).is_err() {
        return 0;
    }
    let Ok(inode) = file.metadata().map(|m| m.ino()) else { return 0 };
    let Ok(f) = ElfFile::open(reopened(&file), FileKey { dev: 0, inode }, Origin::none("fuzz")) else { return 0 };
    let _ = f.bias_for(Avma(0x5555_0000_0000), FileOffset(0x1000));
    let _ = f.file_id();
    let u = &f.unwind;
    for s in [&u.text, &u.eh_frame, &u.eh_frame_hdr, &u.debug_frame] {
        let _ = f.slice(s).map(|d| d.len());
    }
    let offsets: Vec<FileOffset> =
        f.segments.iter().map(|s| FileOffset(s.file_offset.0.saturating_add(s.file_size / 2))).take(4).collect();
    let f = Arc::new(f);
    let _ = BinaryInfo::of(&f).build_ids();
    unwind_tables(&f);
    let reqs: Vec<SymRequest> = offsets.iter().map(|&offset| SymRequest::File { file: f.clone(), offset, on_disk: true }).collect();
    let counters: Arc<Counters> = Arc::default();
    Symbolizer::new(SymbolizeMode::Host, counters).resolve(&reqs).iter().filter(|l| !l.is_empty()).count()
}

/// The unwinder's per-file work on a hostile file: CFI rows (and their evaluation on a
/// zeroed stack), prologue analysis, Go frames, entry points, at a spread of addresses.
fn unwind_tables(f: &Arc<ElfFile>) {
    use ddprof_core::arch::UserRegs;
    use ddprof_core::unwind::{cfi, entry, eval, go, heuristic, regs::Regs};
    let table = cfi::FileCfi::new(f);
    let text = f.unwind.text.as_ref().map_or(0..0x1000, |s| s.svma.clone());
    let step = ((text.end.saturating_sub(text.start)) / 64).max(1);
    let mut ctx = gimli::UnwindContext::new();
    let regs = Regs::sampled(&UserRegs::default());
    let stack = [0u8; 256];
    let mut read = |a: u64| -> Option<u64> {
        let i = usize::try_from(a).ok()?;
        stack.get(i..i + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()))
    };
    let entries = entry::EntryPoints::of(f.bytes(), None);
    let go = go::GoFrames::from_file(f).ok().flatten();
    let mut at = text.start;
    for _ in 0..64 {
        if let Ok(cfi::Lookup::Row(row)) = table.lookup(at, &mut ctx) {
            let _ = eval::step(&row, &regs, &mut read);
        }
        let _ = heuristic::rule_in_file(f, Svma(at), at.is_multiple_of(2));
        let _ = entries.contains(at);
        if let Some(g) = &go {
            let _ = g.frame(at);
            let _ = g.code(at);
        }
        at = at.saturating_add(step);
    }
}

fn reopened(file: &File) -> File {
    file.try_clone().expect("dup of a memfd")
}

/// Go's table: parse, then look up a handful of addresses. Returns a value derived from the
/// results so that the work is not optimized away.
pub fn gopclntab(data: &[u8]) -> usize {
    let Ok(Some(t)) = GoTable::parse(data) else { return 0 };
    let mut n = t.heap_bytes();
    let text = t.text_svma().0;
    let mut addrs = vec![0, text, text.wrapping_add(1), u64::MAX];
    let nfunc = t.num_funcs();
    for i in [0, 1, nfunc / 2, nfunc.saturating_sub(1)] {
        if let Some(e) = t.func_entry(i) {
            addrs.extend([e.0, e.0.wrapping_add(3), e.0.wrapping_add(17)]);
        }
    }
    for a in addrs {
        for l in t.lookup(Svma(a)).unwrap_or_default() {
            n = n.wrapping_add(l.function.len() + l.file.len() + l.line as usize);
        }
    }
    n
}
