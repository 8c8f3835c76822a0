//! Names of PLT entries (`pthread_self@plt`), as binutils' synthetic symbols and perf give
//! them. A PLT stub has no symbol of its own: without this, a sample in one is named after
//! whatever symbol precedes the `.plt` section (`_init`), a wrong name.
//!
//! Input: an ELF file's bytes. Output: sorted, disjoint SVMA ranges, each named
//! `<symbol>@plt` (`[plt]` for the resolver stub that heads `.plt`). How an entry is tied
//! to its symbol:
//! - x86-64: the entry's indirect jump through the GOT (`jmp *slot(%rip)`, after an
//!   `endbr64` or a `bnd` prefix or not) gives the GOT slot, and the dynamic relocation of
//!   that slot (`R_X86_64_JUMP_SLOT` in `.rela.plt`, `R_X86_64_GLOB_DAT` for `.plt.got`)
//!   its symbol; an entry without that jump (the lazy stubs of `.plt` beside `.plt.sec`)
//!   is tied by the relocation index it pushes;
//! - aarch64 (and any entry not decoded): entry `i` of `.plt`, after the 32-byte header, is
//!   `.rela.plt`'s relocation `i`, the layout the linkers write.
//!
//! Written here because neither object nor blazesym makes synthetic PLT symbols; the
//! instruction decoding is iced-x86's. Non-goals: `.iplt`, PLTs of 32-bit files.
use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget};

use crate::addr::Svma;

/// One named range of a PLT section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PltEntry {
    pub start: Svma,
    pub end: Svma,
    pub name: String,
}

const X86_PLT0: u64 = 16;
const AARCH64_PLT0: u64 = 32;

/// The named PLT entries of `bytes` (empty when there is no PLT, or the file does not
/// parse), sorted by start.
pub fn entries(bytes: &[u8]) -> Vec<PltEntry> {
    let Ok(obj) = object::File::parse(bytes) else { return Vec::new() };
    let x86 = obj.architecture() == object::Architecture::X86_64;
    if !x86 && obj.architecture() != object::Architecture::Aarch64 {
        return Vec::new();
    }
    // GOT slot -> symbol name, from every dynamic relocation; and .rela.plt in order.
    let names = dynamic_names(&obj);
    let mut by_slot: HashMap<u64, &str> = HashMap::new();
    let mut jump_slots: Vec<&str> = Vec::new();
    if let Some(relocs) = obj.dynamic_relocations() {
        for (offset, r) in relocs {
            let RelocationTarget::Symbol(i) = r.target() else { continue };
            let Some(name) = names.get(&i.0) else { continue };
            by_slot.insert(offset, name);
            if matches!(r.flags(), object::RelocationFlags::Elf { r_type } if is_jump_slot(r_type, x86)) {
                jump_slots.push(name);
            }
        }
    }
    let mut out = Vec::new();
    for section in obj.sections() {
        let Ok(name) = section.name() else { continue };
        if !matches!(name, ".plt" | ".plt.sec" | ".plt.got") {
            continue;
        }
        let Ok(code) = section.data() else { continue };
        let (base, size) = (section.address(), code.len() as u64);
        let header = match name {
            ".plt" if x86 => X86_PLT0,
            ".plt" => AARCH64_PLT0,
            _ => 0,
        };
        let entsize = match section_entsize(&obj, &section) {
            Some(e) if e >= 8 => e,
            _ if name == ".plt.got" => 8,
            _ => 16,
        };
        if header > 0 && header <= size {
            out.push(PltEntry { start: Svma(base), end: Svma(base + header), name: "[plt]".into() });
        }
        let mut at = header;
        let mut index = 0usize;
        while at + entsize <= size {
            let entry = &code[at as usize..(at + entsize) as usize];
            let target = if x86 { x86_target(entry, base + at) } else { None };
            let name = match target {
                Some(Target::Slot(slot)) => by_slot.get(&slot).copied(),
                Some(Target::Index(i)) => jump_slots.get(i).copied(),
                None if name == ".plt" => jump_slots.get(index).copied(),
                None => None,
            };
            if let Some(n) = name {
                out.push(PltEntry { start: Svma(base + at), end: Svma(base + at + entsize), name: format!("{n}@plt") });
            }
            at += entsize;
            index += 1;
        }
    }
    out.sort_by_key(|e| e.start);
    out.dedup_by_key(|e| e.start);
    out
}

/// The entry holding `svma` in `entries` (sorted, as [`entries`] returns them).
pub fn lookup(entries: &[PltEntry], svma: Svma) -> Option<&PltEntry> {
    let i = entries.partition_point(|e| e.start <= svma).checked_sub(1)?;
    let e = &entries[i];
    (svma < e.end).then_some(e)
}

enum Target {
    /// The GOT slot an indirect jump reads.
    Slot(u64),
    /// The `.rela.plt` index a lazy stub pushes.
    Index(usize),
}

fn x86_target(entry: &[u8], ip: u64) -> Option<Target> {
    let mut decoder = Decoder::with_ip(64, entry, ip, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut ins);
        if ins.is_invalid() {
            return None;
        }
        if ins.mnemonic() == Mnemonic::Jmp && ins.op0_kind() == OpKind::Memory && ins.memory_base() == Register::RIP {
            return Some(Target::Slot(ins.memory_displacement64()));
        }
        if ins.code() == Code::Pushq_imm32 {
            return usize::try_from(ins.immediate32()).ok().map(Target::Index);
        }
    }
    None
}

fn is_jump_slot(r_type: u32, x86: bool) -> bool {
    if x86 {
        r_type == object::elf::R_X86_64_JUMP_SLOT
    } else {
        r_type == object::elf::R_AARCH64_JUMP_SLOT
    }
}

fn dynamic_names<'a>(obj: &'a object::File<'a>) -> HashMap<usize, &'a str> {
    let mut out = HashMap::new();
    if let Some(table) = obj.dynamic_symbol_table() {
        for sym in table.symbols() {
            if let Ok(name) = sym.name() {
                if !name.is_empty() {
                    out.insert(sym.index().0, name);
                }
            }
        }
    }
    out
}

fn section_entsize(obj: &object::File<'_>, section: &object::Section<'_, '_>) -> Option<u64> {
    use object::read::elf::SectionHeader;
    match (obj, section.flags()) {
        (object::File::Elf64(elf), object::SectionFlags::Elf { .. }) => {
            let header = elf.elf_section_table().section(object::SectionIndex(section.index().0)).ok()?;
            Some(header.sh_entsize(elf.endian()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_entry_and_nothing_outside() {
        let e = vec![
            PltEntry { start: Svma(0x1020), end: Svma(0x1030), name: "[plt]".into() },
            PltEntry { start: Svma(0x1030), end: Svma(0x1040), name: "tiny_add@plt".into() },
        ];
        assert_eq!(lookup(&e, Svma(0x1035)).map(|e| e.name.as_str()), Some("tiny_add@plt"));
        assert_eq!(lookup(&e, Svma(0x1020)).map(|e| e.name.as_str()), Some("[plt]"));
        assert!(lookup(&e, Svma(0x1040)).is_none() && lookup(&e, Svma(0x101f)).is_none());
    }

    #[test]
    fn libc_has_named_plt_entries() {
        let Ok(bytes) = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6") else { return };
        let e = entries(&bytes);
        assert!(e.len() > 5, "{e:?}");
        assert!(e.iter().all(|x| x.name == "[plt]" || x.name.ends_with("@plt")), "{e:?}");
        assert!(e.windows(2).all(|w| w[0].end <= w[1].start));
    }
}
