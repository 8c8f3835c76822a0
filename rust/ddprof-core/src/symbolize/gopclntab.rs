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
//! The header, function table and pc-value tables are read by `elf::gopclntab`, the one
//! parser, which the unwinder's Go frames (`unwind::go`) share; this module adds names, files,
//! lines and inline trees. The table borrows the file's bytes (no copy: a large table is page
//! cache, not heap).
//! Inline trees hang off `moduledata.gofunc`; without symbols the moduledata is found by its contents (first word =
//! the pcHeader's address) or, when the linker left them unapplied, through its dynamic
//! relocations. Go 1.26 places `go:func.*` inside .gopclntab; older linkers put it in .rodata,
//! of which only the span the trees occupy is read. A lookup binary-searches the function
//! table and decodes that function's pc-value tables up to the address, like the runtime's
//! `pcvalue`; there is no per-pc table.
use crate::addr::Svma;
use crate::elf::gopclntab::{bytes_at, cstr_at, read_va, u32_at, Func, Pclntab, Sect};
use crate::symbolize::Line;
/// internal/abi: PCDATA_InlTreeIndex and FUNCDATA_InlTree.
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;
/// A genuine chain is a handful deep; a longer one is a loop in corrupt data.
const MAX_INLINE_DEPTH: usize = 64;

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
    /// The function table and pc-value tables (`elf::gopclntab`, shared with the unwinder).
    pcln: Pclntab<'a>,
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

impl<'a> GoTable<'a> {
    /// Parse from the bytes of a whole ELF file (an mmap). Ok(None) when the file has no
    /// .gopclntab (not Go). Err with a short reason on malformed or unsupported data.
    pub fn parse(elf: &'a [u8]) -> Result<Option<GoTable<'a>>, String> {
        let Some(parsed) = Pclntab::parse(elf)? else { return Ok(None) };
        let mut table = GoTable { pcln: parsed.table, inl: None, wrapper_id: None, panic_ids: [None; 3] };
        table.find_func_ids();
        let gofunc = parsed.moduledata.map(|m| m[table.pcln.hdr.layout.md_gofunc]);
        table.inl = gofunc.and_then(|g| table.locate_inl_trees(parsed.svma, g, &parsed.sections));
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
        let f = self.pcln.find_func(svma)?;
        let tree = self.inl_tree_off(&f);
        let mut out = Vec::new();
        let mut last_id = None;
        let mut pc = svma;
        let mut ix = if tree.is_some() { self.pcln.pcdata(&f, PCDATA_INL_TREE_INDEX, pc) } else { -1 };
        for depth in 0.. {
            let call = if ix < 0 {
                InlCall { name_off: f.name_off, func_id: f.func_id, parent_pc: 0 }
            } else if let Some(c) = tree.filter(|_| depth < MAX_INLINE_DEPTH).and_then(|t| self.inl_call(&f, t, ix)) {
                c
            } else {
                let (file, _) = self.file_line(&f, f.entry);
                return Some(vec![Line { function: self.func_name(f.name_off), system_name: String::new(), file, line: 0 }]);
            };
            if !last_id.is_some_and(|callee| self.elided(call.func_id, callee)) {
                let (file, line) = self.file_line(&f, pc);
                out.push(Line { function: self.func_name(call.name_off), system_name: String::new(), file, line });
                last_id = Some(call.func_id);
            }
            if ix < 0 {
                break;
            }
            pc = call.parent_pc;
            ix = self.pcln.pcdata(&f, PCDATA_INL_TREE_INDEX, pc);
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
        for f in (0..self.pcln.hdr.nfunc).filter_map(|i| self.pcln.func_at(i)) {
            wrapper = wrapper.max(Some(f.func_id));
            let at = self.pcln.hdr.funcnametab.saturating_add(f.name_off as usize);
            for (id, name) in panics.iter_mut().zip(PANICS) {
                if bytes_at(self.pcln.bytes, at, name.len()) == Some(name) {
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
        self.pcln.hdr.nfunc
    }

    /// Entry svma of the i-th function (ascending), for tests and fuzzing.
    pub fn func_entry(&self, i: usize) -> Option<Svma> {
        self.pcln.func_at(i).map(|f| Svma(f.entry))
    }

    /// The svma function entries are relative to (moduledata.text).
    pub fn text_svma(&self) -> Svma {
        Svma(self.pcln.hdr.text)
    }

    /// The name as CallersFrames prints it: generic shape arguments become "[...]"
    /// (runtime.funcNameForPrint).
    fn func_name(&self, name_off: u32) -> String {
        let Some(name) = self.pcln.name(name_off).map(|n| String::from_utf8_lossy(n).into_owned()) else {
            return "?".into();
        };
        match (name.find('['), name.rfind(']')) {
            (Some(i), Some(j)) if i < j => format!("{}[...]{}", &name[..i], &name[j + 1..]),
            _ => name,
        }
    }

    /// The gofunc-relative offset of f's inline tree, if it has one.
    fn inl_tree_off(&self, f: &Func) -> Option<u64> {
        if u32::from(f.nfuncdata) <= FUNCDATA_INL_TREE {
            return None;
        }
        let at = f.at + self.pcln.hdr.layout.func_size + 4 * (f.npcdata as usize).checked_add(FUNCDATA_INL_TREE as usize)?;
        let off = u32_at(self.pcln.bytes, at)?;
        (off != u32::MAX).then_some(u64::from(off))
    }

    /// Raw bytes of entry `ix` of the tree at gofunc-relative offset `tree`.
    fn inl_entry(&self, tree: u64, ix: i32) -> Option<&[u8]> {
        let size = self.pcln.hdr.layout.inl_size;
        let rel = tree.checked_add(u64::try_from(ix).ok()?.checked_mul(size as u64)?)?;
        match self.inl.as_ref()? {
            InlTrees::InPclntab(g) => bytes_at(self.pcln.bytes, g.checked_add(usize::try_from(rel).ok()?)?, size),
            InlTrees::InRodata { lo, bytes } => bytes_at(bytes, usize::try_from(rel.checked_sub(*lo)?).ok()?, size),
        }
    }

    /// Entry `ix` of the tree at `tree`, its parent pc as an svma inside `f`.
    fn inl_call(&self, f: &Func, tree: u64, ix: i32) -> Option<InlCall> {
        let l = self.pcln.hdr.layout;
        let e = self.inl_entry(tree, ix)?;
        let parent_pc = f.entry.checked_add(u64::from(u32_at(e, l.inl_parent_pc_at)?))?;
        let call = InlCall { name_off: u32_at(e, l.inl_name_at)?, func_id: e[l.inl_func_id_at], parent_pc };
        (parent_pc < f.end).then_some(call)
    }

    /// funcline1: file and line at pc, ("?", 0) when the tables have none.
    fn file_line(&self, f: &Func, pc: u64) -> (String, u32) {
        let fileno = self.pcln.pcvalue(f, f.pcfile, pc);
        let line = self.pcln.pcvalue(f, f.pcln, pc);
        let (Ok(fileno), Ok(line)) = (u32::try_from(fileno), u32::try_from(line)) else {
            return ("?".into(), 0);
        };
        let file = (|| {
            let idx = (f.cu_off as usize).checked_add(fileno as usize)?;
            let fileoff = u32_at(self.pcln.bytes, self.pcln.hdr.cutab.checked_add(idx.checked_mul(4)?)?)?;
            if fileoff == u32::MAX {
                return None;
            }
            cstr_at(self.pcln.bytes, self.pcln.hdr.filetab.checked_add(fileoff as usize)?).map(|b| String::from_utf8_lossy(b).into_owned())
        })();
        (file.unwrap_or_else(|| "?".into()), line)
    }

    /// Finds the bytes holding the inline trees given gofunc's svma.
    fn locate_inl_trees(&self, pch: u64, gofunc: u64, sects: &[Sect<'a>]) -> Option<InlTrees<'a>> {
        if let Some(g) = gofunc.checked_sub(pch).and_then(|g| usize::try_from(g).ok()) {
            if g < self.pcln.bytes.len() {
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
        let mut budget = self.pcln.bytes.len().saturating_sub(self.pcln.hdr.pctab);
        let mut memo: std::collections::HashMap<u32, Option<i32>> = std::collections::HashMap::new();
        for i in 0..self.pcln.hdr.nfunc {
            let Some(f) = self.pcln.func_at(i) else { continue };
            let Some(tree) = self.inl_tree_off(&f) else { continue };
            if f.npcdata <= PCDATA_INL_TREE_INDEX {
                continue;
            }
            let off = u32_at(self.pcln.bytes, f.at + self.pcln.hdr.layout.func_size + 4 * PCDATA_INL_TREE_INDEX as usize)?;
            if off == 0 {
                continue;
            }
            let max = match memo.get(&off) {
                Some(&m) => m,
                None => {
                    let mut m = None;
                    for (_, v) in self.pcln.pc_values(&f, self.pcln.hdr.pctab.checked_add(off as usize)?) {
                        budget = budget.checked_sub(1)?;
                        m = m.max(Some(v));
                    }
                    memo.insert(off, m);
                    m
                }
            };
            if let Some(max) = max.filter(|&m| m >= 0) {
                lo = lo.min(tree);
                hi = hi.max(tree + (max as u64 + 1) * self.pcln.hdr.layout.inl_size as u64);
            }
        }
        (lo < hi).then_some((lo, hi))
    }

    /// A wrong gofunc (e.g. a future moduledata layout) shows as garbage entries: check the
    /// first trees before trusting any.
    fn inl_trees_plausible(&self) -> bool {
        let names_len = self.pcln.bytes.len().saturating_sub(self.pcln.hdr.funcnametab) as u64;
        let l = self.pcln.hdr.layout;
        let mut checked = 0;
        for f in (0..self.pcln.hdr.nfunc).filter_map(|i| self.pcln.func_at(i)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::gopclntab::{Header, LAYOUT_1_20, MAGIC_1_20};

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
        let hdr = Header {
            magic: MAGIC_1_20,
            layout: LAYOUT_1_20,
            quantum: 1,
            nfunc: 1,
            text: 0x1000,
            funcnametab: 0,
            cutab,
            filetab,
            pctab,
            functab,
        };
        GoTable {
            pcln: Pclntab { bytes: Vec::leak(p), hdr },
            inl: Some(InlTrees::InPclntab(gofunc)),
            wrapper_id: None,
            panic_ids: [None; 3],
        }
    }

    #[test]
    fn inline_chains_and_corrupt_ones() {
        let l = |f: &str, line| Line { function: f.into(), system_name: String::new(), file: "a.go".into(), line };
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
