//! `.eh_frame` rows as the prologue analysis states rules: the ground truth of the
//! heuristic tests (tests/heuristic.rs, tests/heuristic_musl.rs).
use ddprof_core::elf::ElfFile;
use ddprof_core::unwind::heuristic::{CfaRule, RbpRule};
use gimli::{BaseAddresses, EhFrame, LittleEndian, RegisterRule, UnwindContext, UnwindSection};
use object::{Object, ObjectSection};

/// A row of `.eh_frame` as the analyzer would state it; `None` parts are rules the
/// analyzer does not express (expressions, other registers).
#[derive(Clone, Copy, Debug)]
pub struct CfiRow {
    pub start: u64,
    pub end: u64,
    pub cfa: Option<CfaRule>,
    pub rbp: Option<RbpRule>,
    pub ra_at_cfa_minus_8: bool,
}

/// Every FDE of the file's `.eh_frame`: (start, end, rows).
pub fn eh_frame_fdes(file: &ElfFile) -> Vec<(u64, u64, Vec<CfiRow>)> {
    let obj = object::File::parse(file.bytes()).expect("parse");
    let Some(sec) = obj.section_by_name(".eh_frame") else { return Vec::new() };
    let data = sec.data().expect("eh_frame data");
    let eh = EhFrame::new(data, LittleEndian);
    let mut bases = BaseAddresses::default().set_eh_frame(sec.address());
    if let Some(t) = obj.section_by_name(".text") {
        bases = bases.set_text(t.address());
    }
    if let Some(g) = obj.section_by_name(".got") {
        bases = bases.set_got(g.address());
    }
    let mut ctx = Box::new(UnwindContext::new());
    let mut out = Vec::new();
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let gimli::CieOrFde::Fde(partial) = entry else { continue };
        let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else { continue };
        let Ok(mut table) = fde.rows(&eh, &bases, &mut ctx) else { continue };
        let mut rows = Vec::new();
        while let Ok(Some(row)) = table.next_row() {
            let cfa = match row.cfa() {
                gimli::CfaRule::RegisterAndOffset { register, offset } if register.0 == 7 => Some(CfaRule::SpOffset(*offset)),
                gimli::CfaRule::RegisterAndOffset { register, offset } if register.0 == 6 => Some(CfaRule::BpOffset(*offset)),
                _ => None,
            };
            let rbp = match row.register(gimli::Register(6)) {
                None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => Some(RbpRule::Unchanged),
                Some(RegisterRule::Offset(n)) => Some(RbpRule::SavedAt(n)),
                _ => None,
            };
            let ra_at_cfa_minus_8 = matches!(row.register(gimli::Register(16)), Some(RegisterRule::Offset(-8)));
            rows.push(CfiRow { start: row.start_address(), end: row.end_address(), cfa, rbp, ra_at_cfa_minus_8 });
        }
        out.push((fde.initial_address(), fde.end_address(), rows));
    }
    out
}
