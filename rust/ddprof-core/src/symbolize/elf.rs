//! ELF code through blazesym: symtab/dynsym, DWARF lines and inlined functions, demangling.
//!
//! Input: the ELF file holding the best symbols (the binary or its debug file: `crate::elf`
//! decides, once; blazesym's own debug-link search is off) and SVMAs. Output: lines per
//! address, innermost inlined function first.
//!
//! Parses are kept between periods in [`Parses`], least recently used first out under a
//! byte budget: a busy process brings new addresses of libc every period, and parsing
//! libc's debug file again each time (decompressing ~10 MiB of DWARF) was most of the
//! profiler's CPU. A file larger than the whole budget is parsed, used and dropped at once.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Symbolized, Symbolizer as Blaze};

use super::Line;
use crate::addr::Svma;
use crate::memory;
use crate::elf::ElfFile;

/// A blazesym symbolizer, dropped (its maps of our files unmapped) under
/// `elf::maps::blazesym_guard`, so that releasing those maps' pages never meets a range that
/// was just unmapped and reused.
struct Guarded(std::mem::ManuallyDrop<Blaze>);

impl std::ops::Deref for Guarded {
    type Target = Blaze;
    fn deref(&self) -> &Blaze {
        &self.0
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let _guard = crate::elf::maps::blazesym_guard();
        // SAFETY: dropped once, here; the field is never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.0) }
    }
}

fn new_blaze() -> Guarded {
    Guarded(std::mem::ManuallyDrop::new(Blaze::builder()
        // Paths are /proc/self/fd/N, which a later file may reuse: check identity each time.
        .enable_auto_reload(true)
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .set_debug_dirs(Some(Vec::<PathBuf>::new()))
        .build()))
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

/// A demangled name as c++filt prints it. blazesym's demangler (cpp_demangle) prints an empty
/// template parameter pack as an empty argument, `f<llvm::Function, >` where c++filt says
/// `f<llvm::Function>`; no template argument is empty, so ", >" is always that.
fn tidy_name(name: &str) -> String {
    if name.contains(", >") {
        name.replace(", >", ">")
    } else {
        name.to_string()
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
        lines.push(Line { function: tidy_name(&f.name), system_name: String::new(), file, line });
    }
    let (file, line) = code_file(sym.code_info.as_deref());
    lines.push(Line { function: tidy_name(&sym.name), system_name: String::new(), file, line });
    Some(lines)
}

fn symbolize_with(blaze: &Blaze, path: &str, dwarf: bool, svmas: &[Svma]) -> Result<Resolved, blazesym::Error> {
    let addrs: Vec<u64> = svmas.iter().map(|s| s.0).collect();
    let mut src = Elf::new(path);
    src.debug_syms = dwarf;
    // blazesym maps and unmaps files inside the call: see `elf::maps`.
    let _guard = crate::elf::maps::blazesym_guard();
    let syms = blaze.symbolize(&Source::Elf(src), Input::VirtOffset(&addrs))?;
    Ok(syms.iter().map(to_lines).collect())
}

/// Lines per address, `None` where nothing resolves.
pub type Resolved = Vec<Option<Vec<Line>>>;

/// One file's parse, and the file itself: held open so that its `/proc/self/fd/N` path
/// stays this file's for as long as the parse is kept.
struct Parse {
    blaze: Guarded,
    file: Arc<ElfFile>,
    dwarf: bool,
    bytes: u64,
    last_used: u64,
    /// The batch that used it last: a parse is never dropped for another of the same batch
    /// (two files that do not fit together would each be parsed again every period).
    batch: u64,
}

/// How a batch was symbolized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// DWARF lines and inlined functions (or the symbol tables, for a file without DWARF).
    Full,
    /// The symbol tables only: the file's DWARF is over the parse cap.
    SymbolsOnly,
}

/// Kept parses, by the symbol file's cache key, within `budget` bytes; no parse, kept or
/// not, over `cap` bytes (a file whose DWARF would be is named from its symbol tables).
/// Bytes are estimates: see [`parse_cost`].
pub struct Parses {
    budget: u64,
    cap: u64,
    used: u64,
    clock: u64,
    batch: u64,
    kept: HashMap<Arc<str>, Parse>,
    /// Kept parses dropped since the last [`Parses::take_evicted`].
    evicted: u64,
    /// The resident size a new parse must fit under (the memory budget), if any.
    resident_limit: Option<u64>,
    /// Files named from their symbol tables for lack of room under `resident_limit`, since
    /// the last [`Parses::take_evicted`].
    no_room: u64,
}

impl Parses {
    pub fn new(budget: u64, cap: u64) -> Self {
        Parses {
            budget,
            cap: cap.max(budget),
            used: 0,
            clock: 0,
            batch: 0,
            kept: HashMap::new(),
            evicted: 0,
            resident_limit: None,
            no_room: 0,
        }
    }

    /// New parses keep the process's resident size under `limit` bytes (see `symbolize`).
    pub fn with_resident_limit(mut self, limit: u64) -> Self {
        self.resident_limit = Some(limit);
        self
    }

    /// No resident limit (the default of [`Parses::new`]).
    pub fn without_resident_limit(mut self) -> Self {
        self.resident_limit = None;
        self
    }

    /// Starts a batch (a period's symbolization): see [`Parse::batch`].
    pub fn next_batch(&mut self) {
        self.batch += 1;
    }

    /// Lines of SVMAs of `file` (the file holding the symbols), from its kept parse or a
    /// new one.
    pub fn symbolize(&mut self, file: &Arc<ElfFile>, svmas: &[Svma]) -> Result<(Resolved, Depth), blazesym::Error> {
        self.clock += 1;
        if let Some(p) = self.kept.get_mut(&file.cache_key) {
            p.last_used = self.clock;
            p.batch = self.batch;
            let depth = if p.dwarf { Depth::Full } else { Depth::SymbolsOnly };
            return Ok((symbolize_with(&p.blaze, &p.file.fd_path(), p.dwarf, svmas)?, depth));
        }
        let cost = parse_cost(file);
        let mut dwarf = cost.tables + cost.dwarf <= self.cap;
        let mut bytes = cost.tables + if dwarf { cost.dwarf } else { 0 };
        // What is held at once, the kept parses and this new one, stays within the cap: the
        // least recently used kept parses make room first (this batch's too: each file is
        // parsed once per batch, so none is needed again before the next).
        while self.used + bytes > self.cap && self.evict_oldest(file) {}
        // And the process stays within its memory budget while the parse is made (the
        // period's peak): measured, since the estimates miss what else is resident. Kept
        // parses make room first; without enough, the file is named from its symbol tables.
        if let Some(limit) = self.resident_limit {
            let mut resident = memory::resident_bytes().unwrap_or(0);
            while resident + bytes > limit && self.evict_oldest(file) {
                memory::trim();
                resident = memory::resident_bytes().unwrap_or(0);
            }
            if dwarf && resident + bytes > limit {
                log::debug!("{}: symbol tables only ({} MiB resident, {} KiB of DWARF estimated)", file.origin.path, resident >> 20, cost.dwarf >> 10);
                (dwarf, bytes) = (false, cost.tables);
                self.no_room += 1;
            }
        }
        let depth = if dwarf { Depth::Full } else { Depth::SymbolsOnly };
        let blaze = new_blaze();
        let out = symbolize_with(&blaze, &file.fd_path(), dwarf, svmas)?;
        if bytes > self.budget {
            log::debug!("{}: parsed for one batch ({} KiB estimated, over the budget)", file.origin.path, bytes >> 10);
            return Ok((out, depth)); // the parse is dropped here
        }
        let batch = self.batch;
        let evictable: u64 = self.kept.values().filter(|p| p.batch != batch).map(|p| p.bytes).sum();
        if self.used - evictable + bytes > self.budget {
            log::debug!("{}: parsed for one batch ({} KiB estimated; the budget holds this batch's other files)", file.origin.path, bytes >> 10);
            return Ok((out, depth));
        }
        while self.used + bytes > self.budget {
            let Some(oldest) =
                self.kept.iter().filter(|(_, p)| p.batch != batch).min_by_key(|(_, p)| p.last_used).map(|(k, _)| k.clone())
            else {
                break;
            };
            self.evict(&oldest, file);
        }
        log::debug!("{}: parse kept ({} KiB estimated)", file.origin.path, bytes >> 10);
        self.used += bytes;
        self.kept.insert(file.cache_key.clone(), Parse { blaze, file: file.clone(), dwarf, bytes, last_used: self.clock, batch });
        Ok((out, depth))
    }

    /// Evicts the least recently used kept parse; false when none is kept.
    fn evict_oldest(&mut self, for_file: &ElfFile) -> bool {
        let Some(oldest) = self.kept.iter().min_by_key(|(_, p)| p.last_used).map(|(k, _)| k.clone()) else { return false };
        self.evict(&oldest, for_file);
        true
    }

    fn evict(&mut self, key: &Arc<str>, for_file: &ElfFile) {
        if let Some(p) = self.kept.remove(key) {
            self.used -= p.bytes;
            self.evicted += 1;
            log::debug!("{}: parse dropped for {} ({} KiB)", p.file.origin.path, for_file.origin.path, p.bytes >> 10);
        }
    }

    /// Drops every kept parse (the memory budget was exceeded).
    pub fn clear(&mut self) {
        self.evicted += self.kept.len() as u64;
        self.kept = HashMap::new();
        self.used = 0;
    }

    /// Kept parses dropped (for room, or by [`Parses::clear`]) and files named from their
    /// symbol tables for lack of room under the resident limit, since the last call.
    pub fn take_evicted(&mut self) -> (u64, u64) {
        (std::mem::take(&mut self.evicted), std::mem::take(&mut self.no_room))
    }

    /// Bytes held by kept parses (estimated) and how many files.
    pub fn usage(&self) -> (u64, usize) {
        (self.used, self.kept.len())
    }
}

/// What parsing a file costs in memory, estimated from its section headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseCost {
    /// Its symbol tables (twice: as mapped and blazesym's index of them) and an eighth of
    /// their strings (the names looked up).
    pub tables: u64,
    /// Its DWARF, decompressed, and what blazesym builds over it: measured here at 1.35x
    /// (pyenv's libpython3.11, 21 MiB of DWARF) to 1.8x (Debian's libc debug file, 12 MiB)
    /// of the sections after a few hundred addresses; 1.5x is taken.
    pub dwarf: u64,
}

/// The estimate of [`ParseCost`]; a file that does not parse costs its size in tables.
pub fn parse_cost(file: &ElfFile) -> ParseCost {
    use object::{Object, ObjectSection};
    let Ok(obj) = object::File::parse(file.bytes()) else { return ParseCost { tables: file.size, dwarf: 0 } };
    let mut cost = ParseCost { tables: 256 << 10, dwarf: 0 };
    for s in obj.sections() {
        let Ok(name) = s.name() else { continue };
        let size = s.compressed_data().map_or(s.size(), |c| c.uncompressed_size);
        if name.starts_with(".debug_") || name.starts_with(".zdebug_") {
            // Location lists are never read: they say where variables live.
            if !name.contains("loclists") && !name.ends_with("_loc") {
                cost.dwarf += size + size / 2;
            }
        } else if matches!(name, ".symtab" | ".dynsym") {
            // Read whole (its pages, in blazesym's own mapping) and indexed by address.
            cost.tables += 2 * size;
        } else if matches!(name, ".strtab" | ".dynstr") {
            // Only the names looked up are read: measured here, a symbols-only parse of
            // librustc_driver (3.9 MiB .symtab, 19 MiB .strtab) peaked at +9 MiB and one of
            // libLLVM (6.1 and 17.5 MiB) at +13 MiB, where counting the tables whole said 26
            // and 27, and kept both from fitting the parse budget together.
            cost.tables += size / 8;
        }
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::Origin;

    fn open(path: &Path) -> Arc<ElfFile> {
        Arc::new(ElfFile::open_path(path, Origin::at_path(path, Path::new("/"))).expect("an ELF file"))
    }

    /// An address inside a function of this test binary (this module's helper).
    fn some_function(f: &ElfFile) -> Svma {
        use object::{Object, ObjectSymbol};
        let obj = object::File::parse(f.bytes()).expect("parses");
        let sym = obj
            .symbols()
            .find(|s| s.kind() == object::SymbolKind::Text && s.size() > 64 && s.name().is_ok_and(|n| n.contains("some_function")))
            .expect("this function's symbol");
        Svma(sym.address() + 8)
    }

    #[test]
    fn kept_within_the_budget_and_symbols_only_over_the_cap() {
        let exe = open(&std::env::current_exe().expect("test binary"));
        let svma = some_function(&exe);
        let cost = parse_cost(&exe);
        assert!(cost.dwarf > 0, "a test binary carries DWARF");

        let mut kept = Parses::new(u64::MAX / 4, u64::MAX / 4);
        let (lines, depth) = kept.symbolize(&exe, &[svma]).expect("symbolizes");
        assert_eq!(depth, Depth::Full);
        let l = lines[0].as_ref().expect("named");
        assert!(l.last().is_some_and(|x| x.function.contains("some_function") && x.line > 0), "{l:?}");
        assert_eq!(kept.usage(), (cost.tables + cost.dwarf, 1), "kept");
        let again = kept.symbolize(&exe, &[svma]).expect("symbolizes").0;
        assert_eq!(again, lines, "the kept parse answers the same");

        let mut capped = Parses::new(0, 0);
        let (lines, depth) = capped.symbolize(&exe, &[svma]).expect("symbolizes");
        assert_eq!(depth, Depth::SymbolsOnly);
        let l = lines[0].as_ref().expect("named from the symbol table");
        assert_eq!(l.len(), 1);
        assert!(l[0].function.contains("some_function") && l[0].line == 0, "{l:?}");
        assert_eq!(capped.usage(), (0, 0), "nothing kept over the budget");

        // Under a resident limit with no room for the DWARF (the resident size now plus less
        // than the estimate): the kept parse is evicted first, then the file is named from
        // its symbol tables, and both are counted.
        let resident = memory::resident_bytes().expect("statm");
        let mut tight = Parses::new(u64::MAX / 4, u64::MAX / 4).with_resident_limit(resident + cost.dwarf / 4);
        let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
        if let Ok(other) = ElfFile::open_path(libc, Origin::at_path(libc, Path::new("/"))) {
            tight.resident_limit = None;
            tight.symbolize(&Arc::new(other), &[Svma(0x1000)]).expect("symbolizes");
            assert_eq!(tight.usage().1, 1, "kept without a limit");
            tight.resident_limit = Some(resident + cost.dwarf / 4);
        }
        let (lines, depth) = tight.symbolize(&exe, &[svma]).expect("symbolizes");
        assert_eq!(depth, Depth::SymbolsOnly, "no room for the DWARF");
        assert!(lines[0].as_ref().is_some_and(|l| l[0].function.contains("some_function")), "{lines:?}");
        let (evicted, no_room) = tight.take_evicted();
        assert_eq!(no_room, 1);
        assert_eq!(evicted, u64::from(libc.exists()), "the kept parse made room first");
    }

    #[test]
    fn an_empty_parameter_pack_prints_as_cxxfilt_does() {
        // `template <typename T, typename... Rest> int f(T)` as f<int>: _Z1fIiJEEiT_ (the
        // pack `JE` is empty) came out of blazesym as `int f<int, >(int)`; c++filt says
        // `int f<int>(int)`.
        assert_eq!(tidy_name("int f<int, >(int)"), "int f<int>(int)");
        assert_eq!(tidy_name("llvm::cast<llvm::Function, >(llvm::Value*)"), "llvm::cast<llvm::Function>(llvm::Value*)");
        assert_eq!(tidy_name("std::map<int, int>::at"), "std::map<int, int>::at");
    }

    /// Two files that do not fit together: the one kept first stays for its batch, so that
    /// neither is parsed again every period; the next batch may evict it.
    #[test]
    fn a_batch_does_not_evict_its_own_parses() {
        let exe = open(&std::env::current_exe().expect("test binary"));
        let Ok(libc) = ElfFile::open_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), Origin::at_path(Path::new("/lib/x86_64-linux-gnu/libc.so.6"), Path::new("/"))) else { return };
        let libc = Arc::new(libc);
        let (ce, cl) = (parse_cost(&exe), parse_cost(&libc));
        let (be, bl) = (ce.tables + ce.dwarf, cl.tables + cl.dwarf);
        let mut p = Parses::new(be.max(bl) + be.min(bl) / 2, u64::MAX / 4);
        let svma = some_function(&exe);
        p.next_batch();
        p.symbolize(&exe, &[svma]).expect("symbolizes");
        p.symbolize(&libc, &[Svma(0x1000)]).expect("symbolizes");
        assert_eq!(p.usage(), (be, 1), "the first kept, the second parsed for its batch only");
        p.next_batch();
        p.symbolize(&libc, &[Svma(0x1000)]).expect("symbolizes");
        assert_eq!(p.usage(), (bl, 1), "a later batch evicts the least recently used");
        assert_eq!(p.take_evicted(), (1, 0), "the eviction is counted");
        p.clear();
        assert_eq!((p.usage(), p.take_evicted(), p.take_evicted()), ((0, 0), (1, 0), (0, 0)), "a shed drops and counts all");
    }
}
