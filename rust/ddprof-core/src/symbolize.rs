//! Turns addresses into functions, files and lines, through blazesym (ELF symtab/dynsym,
//! DWARF lines and inlined functions, demangling, kallsyms).
//!
//! Input: a file offset in an ELF file (plus the file's identity, for caching) or a kernel
//! address. Output: the lines of that address, innermost inlined function first, as pprof
//! wants them; empty when nothing resolves (the caller keeps module + address).
//! Cached per (file identity, offset) and per kernel address, bounded. blazesym's own caches
//! are keyed by file identity (stat), so several processes mapping one binary parse it once.
//! Non-goals: unwinding, deciding which file an address is in (see `process`).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};
use blazesym::MaybeDefault;

use crate::elf::FileKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub function: String,
    pub file: String,
    pub line: u32,
}

pub type Lines = Arc<[Line]>;

const MAX_CACHED: usize = 262_144;

pub struct Symbolizer {
    blaze: Blaze,
    user: HashMap<(FileKey, u64), Lines>,
    kernel: HashMap<u64, Lines>,
    empty: Lines,
    pub failures: u64,
    /// blazesym keeps a path entry per distinct path; rebuilt when this many were used.
    paths_used: usize,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

fn new_blaze() -> Blaze {
    Blaze::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

fn code_file(ci: &Option<CodeInfo<'_>>) -> (String, u32) {
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
        let (file, line) = code_file(&f.code_info);
        lines.push(Line { function: f.name.to_string(), file, line });
    }
    let (file, line) = code_file(&sym.code_info.as_deref().cloned());
    lines.push(Line { function: sym.name.to_string(), file, line });
    Some(lines)
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: new_blaze(),
            user: HashMap::new(),
            kernel: HashMap::new(),
            empty: Arc::from(Vec::new()),
            failures: 0,
            paths_used: 0,
        }
    }

    /// Lines of `file_offset` in the file `key`, read through `path` on a miss.
    pub fn user(&mut self, key: FileKey, path: &str, file_offset: u64) -> Lines {
        if let Some(l) = self.user.get(&(key, file_offset)) {
            return l.clone();
        }
        if self.user.len() >= MAX_CACHED {
            self.user.clear();
        }
        self.paths_used += 1;
        if self.paths_used > 4096 {
            // Paths are per process (/proc/PID/map_files/...); start afresh to bound them.
            self.blaze = new_blaze();
            self.paths_used = 0;
        }
        let src = Source::Elf(Elf::new(path));
        let lines = match self.blaze.symbolize(&src, Input::FileOffset(&[file_offset])) {
            Ok(v) => v.first().and_then(to_lines),
            Err(e) => {
                log::debug!("symbolizing {path}+{file_offset:#x}: {e}");
                None
            }
        };
        let lines: Lines = match lines {
            Some(l) => Arc::from(l),
            None => {
                self.failures += 1;
                self.empty.clone()
            }
        };
        self.user.insert((key, file_offset), lines.clone());
        lines
    }

    pub fn kernel(&mut self, addr: u64) -> Lines {
        if let Some(l) = self.kernel.get(&addr) {
            return l.clone();
        }
        if self.kernel.len() >= MAX_CACHED {
            self.kernel.clear();
        }
        let mut k = Kernel::default();
        // kallsyms is enough for names; searching for a vmlinux image costs time for nothing.
        k.vmlinux = MaybeDefault::None;
        let lines = self
            .blaze
            .symbolize(&Source::Kernel(k), Input::AbsAddr(&[addr]))
            .ok()
            .and_then(|v| v.first().and_then(to_lines))
            .map(|mut l| {
                for line in &mut l {
                    if line.file.is_empty() {
                        line.file = "[kernel.kallsyms]".into();
                    }
                }
                Arc::from(l)
            })
            .unwrap_or_else(|| {
                self.failures += 1;
                self.empty.clone()
            });
        self.kernel.insert(addr, lines.clone());
        lines
    }

    /// A constant marker frame such as `[truncated]`.
    pub fn marker(name: &str) -> Lines {
        Arc::from(vec![Line { function: name.to_string(), file: String::new(), line: 0 }])
    }
}
