//! Go's `.gopclntab`: the one parser of its header, its function table and its pc-value
//! tables, shared by the symbolizer (`symbolize::gopclntab`: names, files, lines, inline
//! trees) and the unwinder (`unwind::go`: stack-pointer deltas, function flags).
//!
//! Input: the bytes of a whole ELF file. Output: a [`Parsed`] table that borrows them (no
//! copy: a large table is page cache, not heap), whose [`Pclntab`] finds the function that
//! holds an address as the file states it (svma) and decodes any of its pc-value tables at a
//! pc (the runtime's `findfunc` and `pcvalue`). The header part ([`Header`]) is plain data, so
//! a caller that wants to keep the table can keep it with an owned copy of the bytes (a
//! `MapSlice`) and rebuild the borrowing view per lookup for free.
//!
//! Supported: 64-bit little-endian ELF binaries from Go 1.18/1.19 (magic 0xfffffff0) and
//! 1.20+ (0xfffffff1), pc quantum 1 (amd64) or 4 (arm64). Non-goals: Go 1.2-1.17 tables (an
//! error: their function table holds absolute pcs and their `_func` another layout; no
//! toolchain to test them is installed here), 32-bit or big-endian targets, non-ELF, text
//! split into several sections (only externally linked ppc64le), caching (the caller's).
//!
//! Every read is bounds-checked: the bytes come from files of unknown origin.
use object::{Object, ObjectSection, RelocationFlags, SectionFlags};

use crate::elf::GOPCLNTAB_SECTIONS;

pub const MAGIC_1_2: u32 = 0xffff_fffb;
pub const MAGIC_1_16: u32 = 0xffff_fffa;
pub const MAGIC_1_18: u32 = 0xffff_fff0;
pub const MAGIC_1_20: u32 = 0xffff_fff1;
/// Words of runtime.moduledata read: up to `gofunc` (word 40 on Go 1.20+).
pub const MD_WORDS: usize = 41;
const MD_TEXT: usize = 22;

/// Version-dependent record layouts (runtime2.go `_func`, symtabinl.go `inlinedCall`,
/// symtab.go `moduledata`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub func_size: usize,
    pub func_id_at: usize,
    /// abi.FuncFlag: the byte after funcID in every supported release.
    pub flag_at: usize,
    pub nfuncdata_at: usize,
    pub inl_size: usize,
    pub inl_func_id_at: usize,
    pub inl_name_at: usize,
    pub inl_parent_pc_at: usize,
    pub md_gofunc: usize,
}

pub const LAYOUT_1_18: Layout = Layout {
    // Before 1.20 `_func` had no startLine, and inlinedCall led with parent/file/line.
    func_size: 40,
    func_id_at: 36,
    flag_at: 37,
    nfuncdata_at: 39,
    inl_size: 20,
    inl_func_id_at: 2,
    inl_name_at: 12,
    inl_parent_pc_at: 16,
    // moduledata before covctrs/ecovctrs were added in 1.20.
    md_gofunc: 38,
};
pub const LAYOUT_1_20: Layout = Layout {
    func_size: 44,
    func_id_at: 40,
    flag_at: 41,
    nfuncdata_at: 43,
    inl_size: 16,
    inl_func_id_at: 0,
    inl_name_at: 4,
    inl_parent_pc_at: 8,
    md_gofunc: 40,
};

/// Where the table's parts are, as offsets into the pclntab bytes. Plain data: it can be
/// kept apart from the bytes it describes.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub magic: u32,
    pub layout: Layout,
    /// Instruction size unit of pc-value tables: 1 on amd64, 4 on arm64.
    pub quantum: u64,
    pub nfunc: usize,
    /// svma that ftab entry offsets are relative to (moduledata.text).
    pub text: u64,
    pub funcnametab: usize,
    pub cutab: usize,
    pub filetab: usize,
    pub pctab: usize,
    pub functab: usize,
}

/// The table: the pclntab bytes and where things are in them.
#[derive(Clone, Copy)]
pub struct Pclntab<'a> {
    pub bytes: &'a [u8],
    pub hdr: Header,
}

/// What [`Pclntab::parse`] found besides the table, for callers that read more of the file
/// (the symbolizer's inline trees).
pub struct Parsed<'a> {
    pub table: Pclntab<'a>,
    /// The pclntab's svma (the pcHeader's address).
    pub svma: u64,
    /// Where the pclntab bytes lie in the file.
    pub file_range: std::ops::Range<usize>,
    /// Pointer fields of runtime.moduledata, when found.
    pub moduledata: Option<Vec<u64>>,
    /// The file's sections with data, to read other addresses through ([`read_va`]).
    pub sections: Vec<Sect<'a>>,
}

/// One `_func` record, decoded enough for lookups.
#[derive(Clone, Copy, Debug)]
pub struct Func {
    /// Offset of the record in the pclntab bytes.
    pub at: usize,
    pub entry: u64,
    pub end: u64,
    pub name_off: u32,
    pub pcsp: u32,
    pub pcfile: u32,
    pub pcln: u32,
    pub npcdata: u32,
    pub cu_off: u32,
    pub func_id: u8,
    pub flag: u8,
    pub nfuncdata: u8,
}

pub fn bytes_at(b: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    b.get(off..off.checked_add(len)?)
}
pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes_at(b, off, 4)?.try_into().ok()?))
}
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes_at(b, off, 8)?.try_into().ok()?))
}
pub fn cstr_at(b: &[u8], off: usize) -> Option<&[u8]> {
    let s = b.get(off..)?;
    let n = s.iter().position(|&c| c == 0)?;
    Some(&s[..n])
}

/// Go's readvarint, but refusing more than 32 bits instead of silently wrapping.
pub fn varint(b: &[u8], pos: usize) -> Option<(u32, usize)> {
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

pub fn zigzag(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

/// Decodes a pc-value table (runtime `step`): yields `(end, value)`, the value holding for
/// pcs below `end` since the previous item. Stops at the terminator, at malformed bytes, or
/// after `steps` items: every item but the first advances the pc, so a function's table has
/// at most size/quantum + 1, and a corrupt one cannot make a lookup scan all of pctab.
pub struct PcValues<'a> {
    tab: &'a [u8],
    pos: usize,
    entry: u64,
    pc: u64,
    val: i32,
    quantum: u64,
    steps: u64,
}

impl<'a> PcValues<'a> {
    pub fn new(tab: &'a [u8], pos: usize, entry: u64, quantum: u64, steps: u64) -> Self {
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

/// A section with data, by address.
#[derive(Clone, Copy)]
pub struct Sect<'a> {
    pub addr: u64,
    pub data: &'a [u8],
    pub writable: bool,
}

/// `len` bytes at `va`, from the section that holds them all.
pub fn read_va<'a>(sects: &[Sect<'a>], va: u64, len: usize) -> Option<&'a [u8]> {
    sects.iter().find_map(|s| {
        let off = usize::try_from(va.checked_sub(s.addr)?).ok()?;
        bytes_at(s.data, off, len)
    })
}

impl<'a> Pclntab<'a> {
    /// Parses from the bytes of a whole ELF file (an mmap). Ok(None) when the file has no
    /// .gopclntab (not Go). Err with a short reason on malformed or unsupported data.
    pub fn parse(elf: &'a [u8]) -> Result<Option<Parsed<'a>>, String> {
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
        // The ELF reader hands out sub-slices of the file for uncompressed sections; anything
        // else (an empty or NOBITS section) has no place in the file to keep.
        let file_range = (pcln.as_ptr() as usize)
            .checked_sub(elf.as_ptr() as usize)
            .filter(|&o| o.checked_add(pcln.len()).is_some_and(|e| e <= elf.len()))
            .map(|o| o..o + pcln.len())
            .ok_or("the .gopclntab bytes are not in the file")?;
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

        let sections: Vec<Sect> = file
            .sections()
            .filter_map(|s| {
                let data = s.data().ok().filter(|d| !d.is_empty())?;
                let writable = matches!(s.flags(), SectionFlags::Elf { sh_flags }
                    if sh_flags & u64::from(object::elf::SHF_WRITE) != 0);
                Some(Sect { addr: s.address(), data, writable })
            })
            .collect();
        let md = find_moduledata(&file, &sections, pch, pcln, nfunc);
        let text_section = file.section_by_name(".text").map(|s| s.address());
        // moduledata.text is authoritative; 1.18/1.19 headers also carry it; else .text, as
        // debug/gosym assumes.
        let text = match (&md, word(2), text_section) {
            (Some(md), _, _) => md[MD_TEXT],
            (None, t, _) if magic == MAGIC_1_18 && t != 0 => t,
            (None, _, Some(t)) => t,
            (None, _, None) => return Err("cannot find the start of Go text".into()),
        };
        let hdr = Header {
            magic,
            layout,
            quantum: u64::from(hdr[6]),
            nfunc,
            text,
            funcnametab,
            cutab,
            filetab,
            pctab,
            functab,
        };
        Ok(Some(Parsed { table: Pclntab { bytes: pcln, hdr }, svma: pch, file_range, moduledata: md, sections }))
    }

    /// The i-th function table entry: (entry offset from text, record offset from functab).
    pub fn ftab(&self, i: usize) -> Option<(u32, u32)> {
        let at = self.hdr.functab.checked_add(i.checked_mul(8)?)?;
        Some((u32_at(self.bytes, at)?, u32_at(self.bytes, at + 4)?))
    }

    /// The i-th function (ascending entries), None past the end or when corrupt.
    pub fn func_at(&self, i: usize) -> Option<Func> {
        if i >= self.hdr.nfunc {
            return None;
        }
        let (entry_off, func_off) = self.ftab(i)?;
        let (end_off, _) = self.ftab(i + 1)?;
        let at = self.hdr.functab.checked_add(func_off as usize)?;
        let l = self.hdr.layout;
        let rec = bytes_at(self.bytes, at, l.func_size)?;
        let field = |o: usize| u32_at(rec, o).unwrap_or(0);
        // The record repeats the entry; disagreeing is corruption, not a function.
        if field(0) != entry_off || end_off < entry_off {
            return None;
        }
        Some(Func {
            at,
            entry: self.hdr.text.checked_add(u64::from(entry_off))?,
            end: self.hdr.text.checked_add(u64::from(end_off))?,
            name_off: field(4),
            pcsp: field(16),
            pcfile: field(20),
            pcln: field(24),
            npcdata: field(28),
            cu_off: field(32),
            func_id: rec[l.func_id_at],
            flag: rec[l.flag_at],
            nfuncdata: rec[l.nfuncdata_at],
        })
    }

    /// The index of the function that holds `svma` (the runtime's findfunc without its bucket
    /// table: a binary search of ftab, about 15 reads for the largest binaries).
    pub fn find_index(&self, svma: u64) -> Option<usize> {
        let off = u32::try_from(svma.checked_sub(self.hdr.text)?).ok()?;
        // Last entry with entryoff <= off, searched over the nfunc real entries.
        let (mut lo, mut hi) = (0usize, self.hdr.nfunc);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.ftab(mid)?.0 <= off {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    /// The function that holds `svma`.
    pub fn find_func(&self, svma: u64) -> Option<Func> {
        let f = self.func_at(self.find_index(svma)?)?;
        (svma < f.end).then_some(f)
    }

    /// The raw name (no trailing NUL) at `name_off` of funcnametab.
    pub fn name(&self, name_off: u32) -> Option<&'a [u8]> {
        cstr_at(self.bytes, self.hdr.funcnametab.checked_add(name_off as usize)?)
    }

    /// pcvalue: the table at pctab offset `off` decoded at `pc`, -1 when there is none (as the
    /// runtime returns).
    pub fn pcvalue(&self, f: &Func, off: u32, pc: u64) -> i32 {
        if off == 0 {
            return -1;
        }
        let Some(pos) = self.hdr.pctab.checked_add(off as usize) else { return -1 };
        self.pc_values(f, pos).find(|&(end, _)| pc < end).map_or(-1, |(_, v)| v)
    }

    /// The rows of the table at pclntab offset `pos` (not pctab-relative) of function `f`.
    pub fn pc_values(&self, f: &Func, pos: usize) -> PcValues<'a> {
        let steps = (f.end - f.entry) / self.hdr.quantum.max(1) + 2;
        PcValues::new(self.bytes, pos, f.entry, self.hdr.quantum, steps)
    }

    /// PCDATA table `table` of `f` at `pc`, -1 when there is none.
    pub fn pcdata(&self, f: &Func, table: u32, pc: u64) -> i32 {
        if table >= f.npcdata {
            return -1;
        }
        match u32_at(self.bytes, f.at + self.hdr.layout.func_size + 4 * table as usize) {
            Some(off) => self.pcvalue(f, off, pc),
            None => -1,
        }
    }
}

/// Finds runtime.moduledata: 8-byte aligned in a writable section, first word the pcHeader
/// svma, its table pointers matching the header. PIE binaries whose linker left dynamic
/// relocation targets zero are read through their R_*_RELATIVE addends instead. Returns its
/// first [`MD_WORDS`] words.
fn find_moduledata(file: &object::File, sects: &[Sect], pch: u64, pcln: &[u8], nfunc: usize) -> Option<Vec<u64>> {
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
                return Some(words);
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
            return Some(words);
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
}
