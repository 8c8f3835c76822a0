//! Symbolizes Go code from the Go runtime's own `.gopclntab`, so Go binaries stripped with
//! `-ldflags="-s -w"` (no .symtab, no DWARF) still get function, file, line and inlined frames.
//!
//! Input: the bytes of a whole ELF file, then addresses as the file states them (svma), which
//! the caller has already turned from return into call addresses. Output: [`Line`]s,
//! innermost inlined function first, as `runtime.CallersFrames` reports them: generic shapes
//! printed `[...]`, wrapper frames of an inline chain dropped unless they called a panic
//! function, "?" and 0 where the tables have no file or line. One deliberate difference: the
//! runtime names "" the function whose name sits at offset 0 of funcnametab; we name it.
//! Supported: 64-bit little-endian binaries from Go 1.18/1.19 (magic 0xfffffff0) and 1.20+
//! (0xfffffff1). Non-goals: older tables (an error), 32-bit or big-endian targets, non-ELF,
//! text split into several sections (only externally linked ppc64le), caching (the caller's).
//!
//! Written by hand because no maintained Rust crate decodes gopclntab including inline trees.
//! The table borrows the file's bytes (no copy: a large table is page cache, not heap).
//! Inline trees hang off `moduledata.gofunc`; without symbols the moduledata is found by its contents (first word =
//! the pcHeader's address) or, when the linker left them unapplied, through its dynamic
//! relocations. Go 1.26 places `go:func.*` inside .gopclntab; older linkers put it in .rodata,
//! of which only the span the trees occupy is read. A lookup binary-searches the function
//! table and decodes that function's pc-value tables up to the address, like the runtime's
//! `pcvalue`; there is no per-pc table.
use object::{Object, ObjectSection, RelocationFlags, SectionFlags};

use crate::addr::Svma;
use crate::elf::GOPCLNTAB_SECTIONS;
use crate::symbolize::Line;
const MAGIC_1_2: u32 = 0xffff_fffb;
const MAGIC_1_16: u32 = 0xffff_fffa;
const MAGIC_1_18: u32 = 0xffff_fff0;
const MAGIC_1_20: u32 = 0xffff_fff1;
/// internal/abi: PCDATA_InlTreeIndex and FUNCDATA_InlTree.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// A genuine chain is a handful deep; a longer one is a loop in corrupt data.
const MAX_INLINE_DEPTH: usize = 64;
/// Words of runtime.moduledata read: up to `gofunc` (word 40 on Go 1.20+).
const MD_WORDS: usize = 41;
const MD_TEXT: usize = 22;

/// Version-dependent record layouts (runtime2.go `_func`, symtabinl.go `inlinedCall`).
#[derive(Clone, Copy, Debug)]
struct Layout {
    func_size: usize,
    func_id_at: usize,
    nfuncdata_at: usize,
    inl_size: usize,
    inl_func_id_at: usize,
    inl_name_at: usize,
    inl_parent_pc_at: usize,
    md_gofunc: usize,
}

const LAYOUT_1_18: Layout = Layout {
    // Before 1.20 `_func` had no startLine, and inlinedCall led with parent/file/line.
    func_size: 40,
    func_id_at: 36,
    nfuncdata_at: 39,
    inl_size: 20,
    inl_func_id_at: 2,
    inl_name_at: 12,
    inl_parent_pc_at: 16,
    // moduledata before covctrs/ecovctrs were added in 1.20.
    md_gofunc: 38,
};
const LAYOUT_1_20: Layout = Layout {
    func_size: 44,
    func_id_at: 40,
    nfuncdata_at: 43,
    inl_size: 16,
    inl_func_id_at: 0,
    inl_name_at: 4,
    inl_parent_pc_at: 8,
    md_gofunc: 40,
};

/// Where the inline trees (gofunc-relative offsets) are read from.
enum InlTrees<'a> {
    /// gofunc lies inside .gopclntab at this offset (Go 1.26+).
    InPclntab(usize),
    /// The gofunc-relative bytes `[lo, lo + bytes.len())`.
    InRodata { lo: u64, bytes: &'a [u8] },
}

/// Borrows the file's bytes (an mmap): nothing is copied, so a large table costs page cache,
/// not heap, and the caller decides how long the map lives.
pub struct GoTable<'a> {
    pclntab: &'a [u8],
    layout: Layout,
    quantum: u64,
    nfunc: usize,
    /// svma that ftab entry offsets are relative to (moduledata.text).
    text: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    /// None when gofunc could not be found: inlined code then degrades (see `lookup`).
    inl: Option<InlTrees<'a>>,
    /// abi.FuncIDWrapper and the panic functions' IDs, for CallersFrames' wrapper elision.
    /// Read from this binary because the numbering changes between Go releases.
    wrapper_id: Option<u8>,
    panic_ids: [Option<u8>; 3],
}

/// One logical frame of the inline chain.
struct InlCall {
    name_off: u32,
    func_id: u8,
    parent_pc: u64,
}

/// One `_func` record, decoded enough for lookups.
struct Func {
    at: usize,
    entry: u64,
    end: u64,
    name_off: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_off: u32,
    func_id: u8,
    nfuncdata: u8,
}

fn bytes_at(b: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    b.get(off..off.checked_add(len)?)
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes_at(b, off, 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes_at(b, off, 8)?.try_into().ok()?))
}
fn cstr_at(b: &[u8], off: usize) -> Option<String> {
    let s = b.get(off..)?;
    let n = s.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&s[..n]).into_owned())
}

/// Go's readvarint, but refusing more than 32 bits instead of silently wrapping.
fn varint(b: &[u8], pos: usize) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for i in 0..5 {
        let c = *b.get(pos.checked_add(i)?)?;
        let bits = u32::from(c & 0x7f);
        if i == 4 && bits > 0xf {
            return None;
        }
        v |= bits << (7 * i);
        if c & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn zigzag(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

/// Decodes a pc-value table (runtime `step`): yields `(end, value)`, the value holding for
/// pcs below `end` since the previous item. Stops at the terminator, at malformed bytes, or
/// after `steps` items: every item but the first advances the pc, so a function's table has
/// at most size/quantum + 1, and a corrupt one cannot make a lookup scan all of pctab.
struct PcValues<'a> {
    tab: &'a [u8],
    pos: usize,
    entry: u64,
    pc: u64,
    val: i32,
    quantum: u64,
    steps: u64,
}

impl<'a> PcValues<'a> {
    fn new(tab: &'a [u8], pos: usize, entry: u64, quantum: u64, steps: u64) -> Self {
        PcValues { tab, pos, entry, pc: entry, val: -1, quantum, steps }
    }
}

impl Iterator for PcValues<'_> {
    type Item = (u64, i32);
    fn next(&mut self) -> Option<(u64, i32)> {
        self.steps = self.steps.checked_sub(1)?;
        let step = (|| {
            let (uv, n) = varint(self.tab, self.pos)?;
            // A zero value delta ends the table, except as the first entry (the runtime's
            // `first` is "pc is still the entry").
            if uv == 0 && self.pc != self.entry {
                return None;
            }
            let (pcd, m) = varint(self.tab, self.pos + n)?;
            self.pos += n + m;
            self.val = self.val.wrapping_add(zigzag(uv));
            self.pc = self.pc.checked_add(u64::from(pcd) * self.quantum)?;
            Some((self.pc, self.val))
        })();
        if step.is_none() {
            self.steps = 0;
        }
        step
    }
}

#[derive(Clone, Copy)]
struct Sect<'a> {
    addr: u64,
    data: &'a [u8],
    writable: bool,
}

fn read_va<'a>(sects: &[Sect<'a>], va: u64, len: usize) -> Option<&'a [u8]> {
    sects.iter().find_map(|s| {
        let off = usize::try_from(va.checked_sub(s.addr)?).ok()?;
        bytes_at(s.data, off, len)
    })
}

/// Pointer fields of the moduledata at some address, as found in the file.
struct ModuleData {
    words: Vec<u64>,
}

impl<'a> GoTable<'a> {
    /// Parse from the bytes of a whole ELF file (an mmap). Ok(None) when the file has no
    /// .gopclntab (not Go). Err with a short reason on malformed or unsupported data.
    pub fn parse(elf: &'a [u8]) -> Result<Option<GoTable<'a>>, String> {
        let file = object::File::parse(elf).map_err(|e| format!("not a parsable ELF: {e}"))?;
        if file.format() != object::BinaryFormat::Elf {
            return Ok(None);
        }
        let Some(sect) = GOPCLNTAB_SECTIONS.iter().find_map(|n| file.section_by_name(n)) else {
            return Ok(None);
        };
        if !file.is_64() || !file.is_little_endian() {
            return Err("unsupported: only 64-bit little-endian Go binaries".into());
        }
        let pcln = sect.data().map_err(|e| format!("unreadable .gopclntab: {e}"))?;
        let pch = sect.address();
        let magic = u32_at(pcln, 0).ok_or("truncated pclntab header")?;
        let layout = match magic {
            MAGIC_1_18 => LAYOUT_1_18,
            MAGIC_1_20 => LAYOUT_1_20,
            MAGIC_1_16 | MAGIC_1_2 => return Err("unsupported pclntab version (Go < 1.18)".into()),
            _ => return Err(format!("bad pclntab magic {magic:#x}")),
        };
        let hdr = bytes_at(pcln, 0, 72).ok_or("truncated pclntab header")?;
        if hdr[4] != 0 || hdr[5] != 0 || !matches!(hdr[6], 1 | 2 | 4) || hdr[7] != 8 {
            return Err("bad pclntab header (quantum or pointer size)".into());
        }
        let word = |i: usize| u64_at(hdr, 8 + 8 * i).unwrap_or(u64::MAX);
        let off = |i: usize| -> Result<usize, String> {
            usize::try_from(word(i))
                .ok()
                .filter(|&o| o <= pcln.len())
                .ok_or_else(|| format!("pclntab header offset {i} out of range"))
        };
        let (funcnametab, cutab, filetab, pctab, functab) = (off(3)?, off(4)?, off(5)?, off(6)?, off(7)?);
        let nfunc = usize::try_from(word(0)).map_err(|_| "nfunc too large")?;
        // ftab holds nfunc+1 (entryoff, funcoff) pairs; check before trusting nfunc.
        let ftab_end = nfunc.checked_add(1).and_then(|n| n.checked_mul(8)).and_then(|n| n.checked_add(functab));
        if ftab_end.is_none_or(|e| e > pcln.len()) {
            return Err("nfunc exceeds the function table".into());
        }

        let sects: Vec<Sect> = file
            .sections()
            .filter_map(|s| {
                let data = s.data().ok().filter(|d| !d.is_empty())?;
                let writable = matches!(s.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_WRITE) != 0);
                Some(Sect { addr: s.address(), data, writable })
            })
            .collect();
        let md = find_moduledata(&file, &sects, pch, pcln, nfunc);
        let text_section = file.section_by_name(".text").map(|s| s.address());
        // moduledata.text is authoritative; 1.18/1.19 headers also carry it; else .text, as
        // debug/gosym assumes.
        let text = match (&md, word(2), text_section) {
            (Some(md), _, _) => md.words[MD_TEXT],
            (None, t, _) if magic == MAGIC_1_18 && t != 0 => t,
            (None, _, Some(t)) => t,
            (None, _, None) => return Err("cannot find the start of Go text".into()),
        };
        let mut table = GoTable {
            pclntab: pcln,
            layout,
            quantum: u64::from(hdr[6]),
            nfunc,
            text,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
            inl: None,
            wrapper_id: None,
            panic_ids: [None; 3],
        };
        table.find_func_ids();
        let gofunc = md.map(|m| m.words[layout.md_gofunc]);
        table.inl = gofunc.and_then(|g| table.locate_inl_trees(pch, g, &sects));
        if table.inl.is_none() {
            log::debug!("gopclntab: go:func.* not found, inlined code resolves to its outer function, line 0");
        } else if !table.inl_trees_plausible() {
            log::debug!("gopclntab: inline trees fail sanity checks, ignoring them");
            table.inl = None;
        }
        Ok(Some(table))
    }

    /// Lines for an address as the file states it (svma), innermost inlined function first,
    /// outer function last. None if the address is in no Go function.
    ///
    /// When the inline trees are unavailable (go:func.* not found or corrupt), code inlined
    /// at `svma` cannot be named; then the outer function is reported alone with its own file
    /// and line 0, since the pc's line belongs to an unknown callee and would mislead.
    pub fn lookup(&self, svma: Svma) -> Option<Vec<Line>> {
        let svma = svma.0;
        let f = self.find_func(svma)?;
        let tree = self.inl_tree_off(&f);
        let mut out = Vec::new();
        let mut last_id = None;
        let mut pc = svma;
        let mut ix = if tree.is_some() { self.pcdata(&f, PCDATA_INL_TREE_INDEX, pc) } else { -1 };
        for depth in 0.. {
            let call = if ix < 0 {
                InlCall { name_off: f.name_off, func_id: f.func_id, parent_pc: 0 }
            } else if let Some(c) = tree.filter(|_| depth < MAX_INLINE_DEPTH).and_then(|t| self.inl_call(&f, t, ix)) {
                c
            } else {
                let (file, _) = self.file_line(&f, f.entry);
                return Some(vec![Line { function: self.func_name(f.name_off), file, line: 0 }]);
            };
            if !last_id.is_some_and(|callee| self.elided(call.func_id, callee)) {
                let (file, line) = self.file_line(&f, pc);
                out.push(Line { function: self.func_name(call.name_off), file, line });
                last_id = Some(call.func_id);
            }
            if ix < 0 {
                break;
            }
            pc = call.parent_pc;
            ix = self.pcdata(&f, PCDATA_INL_TREE_INDEX, pc);
        }
        Some(out)
    }

    /// CallersFrames drops wrapper frames of an inline chain unless they called a panic
    /// function (runtime.elideWrapperCalling).
    fn elided(&self, func_id: u8, callee: u8) -> bool {
        Some(func_id) == self.wrapper_id && !self.panic_ids.contains(&Some(callee))
    }

    /// FuncIDWrapper is the last ID of abi.FuncID in every supported release, and every Go
    /// binary has autogenerated functions, so it is the largest ID present.
    fn find_func_ids(&mut self) {
        const PANICS: [&[u8]; 3] = [b"runtime.gopanic\0", b"runtime.sigpanic\0", b"runtime.panicwrap\0"];
        let (mut wrapper, mut panics) = (None, [None; 3]);
        for f in (0..self.nfunc).filter_map(|i| self.func_at(i)) {
            wrapper = wrapper.max(Some(f.func_id));
            let at = self.funcnametab.saturating_add(f.name_off as usize);
            for (id, name) in panics.iter_mut().zip(PANICS) {
                if bytes_at(self.pclntab, at, name.len()) == Some(name) {
                    *id = Some(f.func_id);
                }
            }
        }
        (self.wrapper_id, self.panic_ids) = (wrapper, panics);
    }

    /// Approximate heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
    }

    /// Number of functions in the table.
    pub fn num_funcs(&self) -> usize {
        self.nfunc
    }

    /// Entry svma of the i-th function (ascending), for tests and fuzzing.
    pub fn func_entry(&self, i: usize) -> Option<Svma> {
        self.func_at(i).map(|f| Svma(f.entry))
    }

    /// The svma function entries are relative to (moduledata.text).
    pub fn text_svma(&self) -> Svma {
        Svma(self.text)
    }

    fn ftab(&self, i: usize) -> Option<(u32, u32)> {
        let at = self.functab.checked_add(i.checked_mul(8)?)?;
        Some((u32_at(self.pclntab, at)?, u32_at(self.pclntab, at + 4)?))
    }

    fn func_at(&self, i: usize) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        let (entry_off, func_off) = self.ftab(i)?;
        let (end_off, _) = self.ftab(i + 1)?;
        let at = self.functab.checked_add(func_off as usize)?;
        let rec = bytes_at(self.pclntab, at, self.layout.func_size)?;
        let field = |o: usize| u32_at(rec, o).unwrap_or(0);
        // The record repeats the entry; disagreeing is corruption, not a function.
        if field(0) != entry_off || end_off < entry_off {
            return None;
        }
        Some(Func {
            at,
            entry: self.text.checked_add(u64::from(entry_off))?,
            end: self.text.checked_add(u64::from(end_off))?,
            name_off: field(4),
            pcfile: field(20),
            pcln: field(24),
            npcdata: field(28),
            cu_off: field(32),
            func_id: rec[self.layout.func_id_at],
            nfuncdata: rec[self.layout.nfuncdata_at],
        })
    }

    fn find_func(&self, svma: u64) -> Option<Func> {
        let off = u32::try_from(svma.checked_sub(self.text)?).ok()?;
        // Last entry with entryoff <= off, searched over the nfunc real entries.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ftab(mid)?.0 <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let f = self.func_at(lo.checked_sub(1)?)?;
        (svma < f.end).then_some(f)
    }

    /// The name as CallersFrames prints it: generic shape arguments become "[...]"
    /// (runtime.funcNameForPrint).
    fn func_name(&self, name_off: u32) -> String {
        let Some(name) = self.funcnametab.checked_add(name_off as usize).and_then(|at| cstr_at(self.pclntab, at)) else {
            return "?".into();
        };
        match (name.find('['), name.rfind(']')) {
            (Some(i), Some(j)) if i < j => format!("{}[...]{}", &name[..i], &name[j + 1..]),
            _ => name,
        }
    }

    /// pcvalue: the table's value at `pc`, -1 when there is none (as the runtime returns).
    fn pcvalue(&self, f: &Func, off: u32, pc: u64) -> i32 {
        if off == 0 {
            return -1;
        }
        let Some(pos) = self.pctab.checked_add(off as usize) else { return -1 };
        self.pc_values(f, pos).find(|&(end, _)| pc < end).map_or(-1, |(_, v)| v)
    }

    fn pc_values(&self, f: &Func, pos: usize) -> PcValues<'_> {
        PcValues::new(self.pclntab, pos, f.entry, self.quantum, (f.end - f.entry) / self.quantum + 2)
    }

    fn pcdata(&self, f: &Func, table: u32, pc: u64) -> i32 {
        if table >= f.npcdata {
            return -1;
        }
        match u32_at(self.pclntab, f.at + self.layout.func_size + 4 * table as usize) {
            Some(off) => self.pcvalue(f, off, pc),
            None => -1,
        }
    }

    /// The gofunc-relative offset of f's inline tree, if it has one.
    fn inl_tree_off(&self, f: &Func) -> Option<u64> {
        if u32::from(f.nfuncdata) <= FUNCDATA_INL_TREE {
            return None;
        }
        let at = f.at + self.layout.func_size + 4 * (f.npcdata as usize).checked_add(FUNCDATA_INL_TREE as usize)?;
        let off = u32_at(self.pclntab, at)?;
        (off != u32::MAX).then_some(u64::from(off))
    }

    /// Raw bytes of entry `ix` of the tree at gofunc-relative offset `tree`.
    fn inl_entry(&self, tree: u64, ix: i32) -> Option<&[u8]> {
        let size = self.layout.inl_size;
        let rel = tree.checked_add(u64::try_from(ix).ok()?.checked_mul(size as u64)?)?;
        match self.inl.as_ref()? {
            InlTrees::InPclntab(g) => bytes_at(self.pclntab, g.checked_add(usize::try_from(rel).ok()?)?, size),
            InlTrees::InRodata { lo, bytes } => bytes_at(bytes, usize::try_from(rel.checked_sub(*lo)?).ok()?, size),
        }
    }

    /// Entry `ix` of the tree at `tree`, its parent pc as an svma inside `f`.
    fn inl_call(&self, f: &Func, tree: u64, ix: i32) -> Option<InlCall> {
        let l = self.layout;
        let e = self.inl_entry(tree, ix)?;
        let parent_pc = f.entry.checked_add(u64::from(u32_at(e, l.inl_parent_pc_at)?))?;
        let call = InlCall { name_off: u32_at(e, l.inl_name_at)?, func_id: e[l.inl_func_id_at], parent_pc };
        (parent_pc < f.end).then_some(call)
    }

    /// funcline1: file and line at pc, ("?", 0) when the tables have none.
    fn file_line(&self, f: &Func, pc: u64) -> (String, u32) {
        let fileno = self.pcvalue(f, f.pcfile, pc);
        let line = self.pcvalue(f, f.pcln, pc);
        let (Ok(fileno), Ok(line)) = (u32::try_from(fileno), u32::try_from(line)) else {
            return ("?".into(), 0);
        };
        let file = (|| {
            let idx = (f.cu_off as usize).checked_add(fileno as usize)?;
            let fileoff = u32_at(self.pclntab, self.cutab.checked_add(idx.checked_mul(4)?)?)?;
            if fileoff == u32::MAX {
                return None;
            }
            cstr_at(self.pclntab, self.filetab.checked_add(fileoff as usize)?)
        })();
        (file.unwrap_or_else(|| "?".into()), line)
    }

    /// Finds the bytes holding the inline trees given gofunc's svma.
    fn locate_inl_trees(&self, pch: u64, gofunc: u64, sects: &[Sect<'a>]) -> Option<InlTrees<'a>> {
        if let Some(g) = gofunc.checked_sub(pch).and_then(|g| usize::try_from(g).ok()) {
            if g < self.pclntab.len() {
                return Some(InlTrees::InPclntab(g));
            }
        }
        // In .rodata the extent of go:func.* is unknown without symbols: take the span of the
        // trees themselves, each sized by the largest index its pc table yields.
        let (lo, hi) = self.inl_tree_span()?;
        let len = usize::try_from(hi - lo).ok()?;
        let bytes = read_va(sects, gofunc.checked_add(lo)?, len)?;
        Some(InlTrees::InRodata { lo, bytes })
    }

    /// gofunc-relative [lo, hi) covering every function's inline tree entries.
    ///
    /// The linker shares identical pc tables between functions, so each table is decoded
    /// once (memo by offset); every step consumes table bytes, so all the distinct tables of
    /// a real binary take fewer steps than the table area has bytes. Past that budget the
    /// data is hostile (tables overlapping on purpose): no inline trees rather than a stall.
    fn inl_tree_span(&self) -> Option<(u64, u64)> {
        let (mut lo, mut hi) = (u64::MAX, 0u64);
        let mut budget = self.pclntab.len().saturating_sub(self.pctab);
        let mut memo: std::collections::HashMap<u32, Option<i32>> = std::collections::HashMap::new();
        for i in 0..self.nfunc {
            let Some(f) = self.func_at(i) else { continue };
            let Some(tree) = self.inl_tree_off(&f) else { continue };
            if f.npcdata <= PCDATA_INL_TREE_INDEX {
                continue;
            }
            let off = u32_at(self.pclntab, f.at + self.layout.func_size + 4 * PCDATA_INL_TREE_INDEX as usize)?;
            if off == 0 {
                continue;
            }
            let max = match memo.get(&off) {
                Some(&m) => m,
                None => {
                    let mut m = None;
                    for (_, v) in self.pc_values(&f, self.pctab.checked_add(off as usize)?) {
                        budget = budget.checked_sub(1)?;
                        m = m.max(Some(v));
                    }
                    memo.insert(off, m);
                    m
                }
            };
            if let Some(max) = max.filter(|&m| m >= 0) {
                lo = lo.min(tree);
                hi = hi.max(tree + (max as u64 + 1) * self.layout.inl_size as u64);
            }
        }
        (lo < hi).then_some((lo, hi))
    }

    /// A wrong gofunc (e.g. a future moduledata layout) shows as garbage entries: check the
    /// first trees before trusting any.
    fn inl_trees_plausible(&self) -> bool {
        let names_len = self.pclntab.len().saturating_sub(self.funcnametab) as u64;
        let l = self.layout;
        let mut checked = 0;
        for f in (0..self.nfunc).filter_map(|i| self.func_at(i)) {
            // Entry 0 may lie outside an Owned span if no pc uses this tree: skip those.
            let Some(e) = self.inl_tree_off(&f).and_then(|t| self.inl_entry(t, 0)) else { continue };
            let pad_zero = if l.inl_size == 16 { e[1..4] == [0, 0, 0] } else { e[3] == 0 };
            let name_ok = u32_at(e, l.inl_name_at).is_some_and(|n| u64::from(n) < names_len);
            let parent_ok = u32_at(e, l.inl_parent_pc_at).is_some_and(|p| u64::from(p) < f.end - f.entry);
            if !(pad_zero && name_ok && parent_ok) {
                return false;
            }
            checked += 1;
            if checked == 16 {
                break;
            }
        }
        true
    }
}

/// Finds runtime.moduledata: 8-byte aligned in a writable section, first word the pcHeader
/// svma, its table pointers matching the header. PIE binaries whose linker left dynamic
/// relocation targets zero are read through their R_*_RELATIVE addends instead.
fn find_moduledata(file: &object::File, sects: &[Sect], pch: u64, pcln: &[u8], nfunc: usize) -> Option<ModuleData> {
    let hw = |i: usize| u64_at(pcln, 8 + 8 * i).unwrap_or(u64::MAX);
    let valid = |w: &[u64]| {
        w[0] == pch
            && w[1] == pch.wrapping_add(hw(3))
            && w[4] == pch.wrapping_add(hw(4))
            && w[7] == pch.wrapping_add(hw(5))
            && w[10] == pch.wrapping_add(hw(6))
            && w[13] == pch.wrapping_add(hw(7))
            && w[16] == w[13]
            && w[17] == nfunc as u64 + 1
    };
    let words_at = |s: &[u8], at: usize| -> Option<Vec<u64>> {
        (0..MD_WORDS).map(|i| u64_at(s, at.checked_add(8 * i)?)).collect()
    };
    for s in sects.iter().filter(|s| s.writable) {
        let first = ((8 - (s.addr % 8)) % 8) as usize;
        for at in (first..s.data.len().saturating_sub(7)).step_by(8) {
            if u64_at(s.data, at) != Some(pch) {
                continue;
            }
            if let Some(words) = words_at(s.data, at).filter(|w| valid(w)) {
                return Some(ModuleData { words });
            }
        }
    }
    let relative = |r: &object::Relocation| {
        matches!(r.flags(), RelocationFlags::Elf { r_type }
            if r_type == object::elf::R_X86_64_RELATIVE || r_type == object::elf::R_AARCH64_RELATIVE)
    };
    // Indexed once: rescanning every relocation per candidate is quadratic on hostile files.
    let targets: std::collections::HashMap<u64, u64> = file
        .dynamic_relocations()
        .into_iter()
        .flatten()
        .filter(|(_, r)| relative(r))
        .map(|(at, r)| (at, r.addend() as u64))
        .collect();
    let mut candidates: Vec<u64> = targets.iter().filter(|&(_, &v)| v == pch).map(|(&at, _)| at).collect();
    candidates.sort_unstable();
    for md in candidates.into_iter().take(64) {
        let Some(mut words) = read_va(sects, md, 8 * MD_WORDS).and_then(|raw| words_at(raw, 0)) else {
            continue;
        };
        for (i, w) in words.iter_mut().enumerate() {
            if let Some(&v) = md.checked_add(8 * i as u64).and_then(|at| targets.get(&at)) {
                *w = v;
            }
        }
        if valid(&words) {
            return Some(ModuleData { words });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_decodes_and_rejects_overflow() {
        assert_eq!(varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(varint(&[0x96, 0x01], 0), Some((150, 2)));
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0x0f], 0), Some((u32::MAX, 5)));
        assert_eq!(varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], 0), None);
        assert_eq!(varint(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01], 0), None);
        assert_eq!(varint(&[0x80], 0), None);
        assert_eq!(varint(&[], 0), None);
        assert_eq!(varint(&[1], usize::MAX), None);
    }

    #[test]
    fn zigzag_matches_go() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(1), -1);
        assert_eq!(zigzag(2), 1);
        assert_eq!(zigzag(3), -2);
        assert_eq!(zigzag(u32::MAX), i32::MIN);
    }

    #[test]
    fn pcvalues_follow_runtime_step() {
        // From -1: +11 until entry+4*q, +1 (zigzag 2) until +6*q, then -2 (zigzag 3) until +7*q.
        let tab = [22, 4, 2, 2, 3, 1, 0];
        let got: Vec<_> = PcValues::new(&tab, 0, 0x1000, 4, u64::MAX).collect();
        assert_eq!(got, vec![(0x1010, 10), (0x1018, 11), (0x101c, 9)]);
        // A zero first delta is data, not the terminator.
        let got: Vec<_> = PcValues::new(&[0, 2, 0], 0, 0x10, 1, u64::MAX).collect();
        assert_eq!(got, vec![(0x12, -1)]);
        // Truncated or overflowing tables stop instead of panicking.
        assert_eq!(PcValues::new(&[22], 0, 0, 1, u64::MAX).count(), 0);
        assert_eq!(PcValues::new(&[0xff; 9], 0, 0, 1, u64::MAX).count(), 0);
        assert_eq!(PcValues::new(&[2, 0xff, 0xff, 0xff, 0xff, 0x0f], 0, u64::MAX - 8, 4, u64::MAX).count(), 0);
        // A table that never advances the pc is cut off by the step cap.
        assert_eq!(PcValues::new(&[2, 0].repeat(1000), 0, 0, 1, 5).count(), 5);
        assert_eq!(PcValues::new(&tab, 0, 0x1000, 4, 2).count(), 2);
    }

    /// One function "main.outer" at 0x1000..0x1020 (a.go, line 7 then 9 from 0x1010) whose
    /// first 0x10 bytes are "main.inl" inlined, called from entry + `parent_pc`.
    fn inline_table(parent_pc: u32) -> GoTable<'static> {
        let mut p = vec![0u8; 72];
        let names = p.len();
        p.extend_from_slice(b"main.outer\0main.inl\0\0\0\0\0");
        let (cutab, filetab, pctab) = (p.len(), p.len() + 4, p.len() + 9);
        p.extend_from_slice(b"\0\0\0\0a.go\0");
        // Tables at 1 (file 0), 4 (line 7, 9) and 9 (inline index 0, then -1), offset 0 = none.
        p.extend_from_slice(&[0, 2, 0x20, 0, 16, 0x10, 4, 0x10, 0, 2, 0x10, 1, 0x10, 0, 0, 0]);
        let functab = p.len();
        let mut words = vec![0, 16, 0x20, 0, 0, names as u32, 0, 0, 0, 1, 4, 3, 0, 0, 4 << 24];
        words.extend([0, 0, 9, u32::MAX, u32::MAX, u32::MAX, 0]);
        let gofunc = functab + 4 * words.len();
        words.extend([0, names as u32 + 11, parent_pc, 0]);
        words.iter().for_each(|w| p.extend_from_slice(&w.to_le_bytes()));
        GoTable {
            pclntab: Vec::leak(p),
            layout: LAYOUT_1_20,
            quantum: 1,
            nfunc: 1,
            text: 0x1000,
            funcnametab: 0,
            cutab,
            filetab,
            pctab,
            functab,
            inl: Some(InlTrees::InPclntab(gofunc)),
            wrapper_id: None,
            panic_ids: [None; 3],
        }
    }

    #[test]
    fn inline_chains_and_corrupt_ones() {
        let l = |f: &str, line| Line { function: f.into(), file: "a.go".into(), line };
        let t = inline_table(0x10);
        assert_eq!(t.lookup(Svma(0x1000)), Some(vec![l("main.inl", 7), l("main.outer", 9)]));
        assert_eq!(t.lookup(Svma(0x1010)), Some(vec![l("main.outer", 9)]));
        assert_eq!(t.lookup(Svma(0x1020)), None);
        // A parent pc inside the inlined code is a loop; one outside the function is bogus;
        // a tree outside the data is unreadable: all degrade to the outer function, line 0.
        let unreadable = GoTable { inl: Some(InlTrees::InPclntab(1 << 20)), ..inline_table(0x10) };
        for t in [inline_table(0), inline_table(0x40), unreadable] {
            assert_eq!(t.lookup(Svma(0x1004)), Some(vec![l("main.outer", 0)]));
        }
    }

    #[test]
    fn garbage_is_an_error_or_not_go() {
        assert!(GoTable::parse(b"").is_err());
        assert!(GoTable::parse(b"\x7fELF garbage").is_err());
        assert!(GoTable::parse(&[0u8; 4096]).is_err());
        for n in [0, 1, 4, 16, 63, 64] {
            let mut elf = vec![0u8; n];
            elf.iter_mut().zip(b"\x7fELF\x02\x01\x01").for_each(|(d, s)| *d = *s);
            assert!(matches!(GoTable::parse(&elf), Err(_) | Ok(None)), "{n}");
        }
    }
}
