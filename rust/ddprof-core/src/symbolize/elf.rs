//! ELF code through blazesym: symtab/dynsym, DWARF lines and inlined functions, demangling.
//!
//! Input: a path that opens the symbol file (for open files, `/proc/self/fd/N`: works for
//! deleted files and exited processes) and SVMAs. Output: lines per address, innermost
//! inlined function first. Which file holds the best symbols (the binary or its debug file)
//! is `crate::elf`'s decision, made once: blazesym's own debug-link search is off.
//! A parse is dropped after each call (a binary with its debug info can hold tens of MiB:
//! libc with its debug file, ~11 MiB); the caller caches results, so peak memory is that of
//! the largest binary, not of all of them.
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};

use super::Line;
use crate::addr::Svma;

fn new_blaze() -> Blaze {
    Blaze::builder()
        // Paths are /proc/self/fd/N, which a later file may reuse: check identity each time.
        .enable_auto_reload(true)
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .set_debug_dirs(Some(Vec::<PathBuf>::new()))
        .build()
}

fn code_file(ci: Option<&CodeInfo<'_>>) -> (String, u32) {
    match ci {
        Some(ci) => {
            let file = match &ci.dir {
                Some(dir) if !dir.as_os_str().is_empty() => dir.join(&*ci.file).to_string_lossy().into_owned(),
                _ => Path::new(&*ci.file).to_string_lossy().into_owned(),
            };
            (file, ci.line.unwrap_or(0))
        }
        None => (String::new(), 0),
    }
}

fn to_lines(sym: &Symbolized<'_>) -> Option<Vec<Line>> {
    let sym = sym.as_sym()?;
    // blazesym lists inlined calls outermost first; pprof wants the innermost first, each
    // with its own position, and the outer function last at the call site of the first
    // inlined one.
    let mut lines = Vec::with_capacity(sym.inlined.len() + 1);
    for f in sym.inlined.iter().rev() {
        let (file, line) = code_file(f.code_info.as_ref());
        lines.push(Line { function: f.name.to_string(), file, line });
    }
    let (file, line) = code_file(sym.code_info.as_deref());
    lines.push(Line { function: sym.name.to_string(), file, line });
    Some(lines)
}

/// Lines of SVMAs of the ELF file at `path`.
pub fn symbolize_svmas(path: &str, svmas: &[Svma]) -> Result<Vec<Option<Vec<Line>>>, blazesym::Error> {
    let addrs: Vec<u64> = svmas.iter().map(|s| s.0).collect();
    let blaze = new_blaze();
    let syms = blaze.symbolize(&Source::Elf(Elf::new(path)), Input::VirtOffset(&addrs))?;
    Ok(syms.iter().map(to_lines).collect())
}
