//! DWARF CFI of one ELF file, as rows the walk evaluates: which rule gives the CFA and each
//! register of the caller at an address in the file (an SVMA).
//!
//! Where CFI is looked for, in order: `.eh_frame` through `.eh_frame_hdr`'s binary search
//! table (or, without one, through an index of the FDEs built once), then the file's own
//! `.debug_frame`, then the `.debug_frame` of its separate debug file (`.gnu_debuglink`,
//! build id: `elf::ElfFile::debug_file`). Code built with `-fno-asynchronous-unwind-tables`
//! has CFI only in the last two; a stripped binary only in the last one.
//!
//! Output: a [`Row`] that owns what it needs (its DWARF expressions are copied out of the
//! section), so that rows can be cached apart from the file. Parsing uses gimli; the
//! evaluation of a row is `eval`'s. Non-goals: evaluating rows, code without CFI.
use std::sync::Arc;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Register,
    RegisterRule, UnwindContext, UnwindSection, UnwindTableRow,
};

use crate::elf::{ElfFile, MapSlice, Section};

type Slice<'a> = EndianSlice<'a, LittleEndian>;

/// How the CFA of a frame is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cfa {
    /// The value of a register plus an offset.
    Reg { reg: u16, offset: i64 },
    /// A DWARF expression's result (it may read registers and memory).
    Expr(Box<[u8]>),
}

/// How a register of the caller is found (DWARF 6.4.1's register rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    Undefined,
    SameValue,
    /// Saved at CFA + n.
    Offset(i64),
    /// Is CFA + n.
    ValOffset(i64),
    /// Is in that register.
    Register(u16),
    /// Saved at the address the expression computes (the CFA pushed first).
    Expr(Box<[u8]>),
    /// Is the value the expression computes (the CFA pushed first).
    ValExpr(Box<[u8]>),
    Constant(u64),
    /// An augmenter's rule: nothing portable can evaluate it.
    Architectural,
}

/// One row of a CFI table, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub cfa: Cfa,
    /// The registers with a rule other than the default ("same value" for callee-saved
    /// registers, unknown for the others).
    pub rules: Box<[(u16, Rule)]>,
    /// The CIE's return address column.
    pub ra_column: u16,
    /// The CIE has the `S` augmentation: this frame is a signal trampoline, whose caller
    /// was interrupted (not calling): its ip is looked up as is, not minus one.
    pub signal: bool,
    pub encoding: gimli::Encoding,
}

impl Row {
    pub fn rule(&self, reg: u16) -> Option<&Rule> {
        self.rules.iter().find(|(r, _)| *r == reg).map(|(_, rule)| rule)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Row(Row),
    /// No FDE covers the address.
    Uncovered,
}

/// An FDE's address range and offset, for sections without a search table.
#[derive(Clone, Copy)]
struct FdeEntry {
    start: u64,
    end: u64,
    offset: usize,
}

/// Sorted FDE ranges of a section (built once per file and section).
struct FdeIndex(Vec<FdeEntry>);

impl FdeIndex {
    fn build<'a, S: UnwindSection<Slice<'a>>>(section: &S, bases: &BaseAddresses) -> FdeIndex {
        let mut out = Vec::new();
        let mut entries = section.entries(bases);
        // A corrupt entry ends the scan: what came before it is still good.
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry {
                if let Ok(fde) = partial.parse(S::cie_from_offset) {
                    if fde.len() > 0 {
                        out.push(FdeEntry { start: fde.initial_address(), end: fde.end_address(), offset: fde.offset() });
                    }
                }
            }
        }
        out.sort_unstable_by_key(|e| e.start);
        FdeIndex(out)
    }

    fn find(&self, svma: u64) -> Option<usize> {
        let i = self.0.partition_point(|e| e.start <= svma);
        let e = self.0.get(i.checked_sub(1)?)?;
        (svma < e.end).then_some(e.offset)
    }
}

/// A section's bytes with its SVMA, kept alive by the file's map.
struct Sect {
    data: MapSlice,
    svma: u64,
}

impl Sect {
    fn of(file: &ElfFile, s: &Option<Section>) -> Option<Sect> {
        let data = file.slice(s)?;
        (!data.is_empty()).then(|| Sect { data, svma: s.as_ref().map_or(0, |s| s.svma.start) })
    }

    fn bytes(&self) -> Slice<'_> {
        EndianSlice::new(&self.data, LittleEndian)
    }
}

/// The CFI of one file (and of its debug file), ready for lookups.
pub struct FileCfi {
    eh_frame: Option<Sect>,
    eh_frame_hdr: Option<Sect>,
    /// Only when there is no usable `.eh_frame_hdr`.
    eh_index: Option<FdeIndex>,
    bases: BaseAddresses,
    debug_frame: Option<(Sect, FdeIndex)>,
    /// Kept so that the debug file's map outlives the section borrowed from it.
    _debug_file: Option<Arc<ElfFile>>,
    debug_file_frame: Option<(Sect, FdeIndex)>,
}

fn debug_frame_of(file: &ElfFile) -> Option<(Sect, FdeIndex)> {
    let sect = Sect::of(file, &file.unwind.debug_frame)?;
    let mut section = DebugFrame::from(sect.bytes());
    section.set_address_size(8);
    let index = FdeIndex::build(&section, &BaseAddresses::default());
    (!index.0.is_empty()).then_some((sect, index))
}

impl FileCfi {
    pub fn new(file: &ElfFile) -> FileCfi {
        let u = &file.unwind;
        let eh_frame = Sect::of(file, &u.eh_frame);
        let eh_frame_hdr = Sect::of(file, &u.eh_frame_hdr);
        let mut bases = BaseAddresses::default();
        if let Some(s) = &eh_frame {
            bases = bases.set_eh_frame(s.svma);
        }
        if let Some(s) = &eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(s.svma);
        }
        if let Some(s) = &u.text {
            bases = bases.set_text(s.svma.start);
        }
        if let Some(s) = &u.got {
            bases = bases.set_got(s.svma.start);
        }
        let hdr_usable = eh_frame_hdr.as_ref().is_some_and(|h| {
            EhFrameHdr::new(h.bytes().slice(), LittleEndian).parse(&bases, 8).ok().is_some_and(|p| p.table().is_some())
        });
        let eh_index = match (&eh_frame, hdr_usable) {
            (Some(s), false) => Some(FdeIndex::build(&eh_section(s), &bases)),
            _ => None,
        };
        let debug_frame = debug_frame_of(file);
        // The debug file is looked for only when the file lacks `.debug_frame` and some code
        // may lack `.eh_frame` (a lookup costs a few stat calls, once per file).
        let debug_file = if debug_frame.is_none() { file.debug_file().cloned() } else { None };
        let debug_file_frame = debug_file.as_deref().and_then(debug_frame_of);
        FileCfi {
            eh_frame,
            eh_frame_hdr: if hdr_usable { eh_frame_hdr } else { None },
            eh_index,
            bases,
            debug_frame,
            _debug_file: debug_file,
            debug_file_frame,
        }
    }

    /// Whether the file has any CFI at all.
    pub fn is_empty(&self) -> bool {
        self.eh_frame.is_none() && self.debug_frame.is_none() && self.debug_file_frame.is_none()
    }

    /// The row for `svma`. `ctx` is scratch space reused across lookups.
    pub fn lookup(&self, svma: u64, ctx: &mut UnwindContext<usize>) -> Result<Lookup, gimli::Error> {
        if let Some(eh) = &self.eh_frame {
            let section = eh_section(eh);
            let fde = if let Some(hdr) = &self.eh_frame_hdr {
                let parsed = EhFrameHdr::new(hdr.bytes().slice(), LittleEndian).parse(&self.bases, 8)?;
                match parsed.table() {
                    Some(t) => match t.fde_for_address(&section, &self.bases, svma, EhFrame::cie_from_offset) {
                        Ok(fde) => Some(fde),
                        Err(gimli::Error::NoUnwindInfoForAddress) => None,
                        Err(e) => return Err(e),
                    },
                    None => None,
                }
            } else {
                match self.eh_index.as_ref().and_then(|i| i.find(svma)) {
                    Some(off) => Some(section.fde_from_offset(&self.bases, gimli::EhFrameOffset(off), EhFrame::cie_from_offset)?),
                    None => None,
                }
            };
            if let Some(fde) = fde.filter(|f| f.contains(svma)) {
                let row = fde.unwind_info_for_address(&section, &self.bases, ctx, svma)?;
                return compile(&section, row, fde.cie());
            }
        }
        for (sect, index) in [&self.debug_frame, &self.debug_file_frame].into_iter().flatten() {
            let Some(off) = index.find(svma) else { continue };
            let mut section = DebugFrame::from(sect.bytes());
            section.set_address_size(8);
            let bases = BaseAddresses::default();
            let fde = section.fde_from_offset(&bases, gimli::DebugFrameOffset(off), DebugFrame::cie_from_offset)?;
            if fde.contains(svma) {
                let row = fde.unwind_info_for_address(&section, &bases, ctx, svma)?;
                return compile(&section, row, fde.cie());
            }
        }
        Ok(Lookup::Uncovered)
    }
}

fn eh_section(s: &Sect) -> EhFrame<Slice<'_>> {
    let mut section = EhFrame::from(s.bytes());
    section.set_address_size(8);
    section
}

fn expression<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    e: &gimli::UnwindExpression<usize>,
) -> Result<Box<[u8]>, gimli::Error> {
    Ok(Box::from(e.get(section)?.0.slice()))
}

fn reg(r: Register) -> u16 {
    r.0
}

fn compile<'a, S: UnwindSection<Slice<'a>>>(
    section: &S,
    row: &UnwindTableRow<usize>,
    cie: &gimli::CommonInformationEntry<Slice<'a>>,
) -> Result<Lookup, gimli::Error> {
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => Cfa::Reg { reg: reg(*register), offset: *offset },
        CfaRule::Expression(e) => Cfa::Expr(expression(section, e)?),
    };
    let mut rules = Vec::new();
    for (r, rule) in row.registers() {
        let rule = match rule {
            RegisterRule::Undefined => Rule::Undefined,
            RegisterRule::SameValue => Rule::SameValue,
            RegisterRule::Offset(n) => Rule::Offset(*n),
            RegisterRule::ValOffset(n) => Rule::ValOffset(*n),
            RegisterRule::Register(r) => Rule::Register(reg(*r)),
            RegisterRule::Expression(e) => Rule::Expr(expression(section, e)?),
            RegisterRule::ValExpression(e) => Rule::ValExpr(expression(section, e)?),
            RegisterRule::Constant(c) => Rule::Constant(*c),
            RegisterRule::Architectural => Rule::Architectural,
        };
        rules.push((reg(*r), rule));
    }
    Ok(Lookup::Row(Row {
        cfa,
        rules: rules.into_boxed_slice(),
        ra_column: reg(cie.return_address_register()),
        signal: cie.is_signal_trampoline(),
        encoding: cie.encoding(),
    }))
}
