//! The ids a binary is known by (datadog-contracts.md, "Symbol upload"): the GNU build id,
//! the Go toolchain's build id, and the file hash of a file that has neither.
//!
//! Input: a parsed ELF file and its bytes. Output: ids as the backend spells them (hex for
//! GNU build ids, the note's text for Go). Non-goals: reading files (the caller maps them).
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endianness, Object};

/// The GNU build id (`NT_GNU_BUILD_ID` in a note section, else a PT_NOTE segment).
pub fn gnu_build_id(obj: &object::File<'_>) -> Option<Vec<u8>> {
    obj.build_id().ok().flatten().filter(|b| !b.is_empty()).map(<[u8]>::to_vec)
}

/// The Go build id: the `Go` note of type 4 (`.note.go.buildid`), in a note section, else a
/// PT_NOTE segment; trailing NULs dropped.
pub fn go_build_id(obj: &object::File<'_>, data: &[u8]) -> Option<String> {
    match obj {
        object::File::Elf32(f) => go_note(f.elf_header(), f.endian(), data),
        object::File::Elf64(f) => go_note(f.elf_header(), f.endian(), data),
        _ => None,
    }
}

fn go_note<H: FileHeader<Endian = Endianness>>(header: &H, endian: Endianness, data: &[u8]) -> Option<String> {
    const NT_GO_BUILD_ID: u32 = 4;
    let found = |name: &[u8], kind: u32, desc: &[u8]| -> Option<String> {
        (name == b"Go" && kind == NT_GO_BUILD_ID)
            .then(|| String::from_utf8_lossy(desc).trim_end_matches('\0').to_string())
            .filter(|s| !s.is_empty())
    };
    let sections = header.sections(endian, data).ok()?;
    let mut any_note_section = false;
    for s in sections.iter() {
        if let Ok(Some(mut notes)) = s.notes(endian, data) {
            any_note_section = true;
            while let Ok(Some(n)) = notes.next() {
                if let Some(id) = found(n.name(), n.n_type(endian), n.desc()) {
                    return Some(id);
                }
            }
        }
    }
    if any_note_section {
        return None;
    }
    for p in header.program_headers(endian, data).ok()? {
        if let Ok(Some(mut notes)) = p.notes(endian, data) {
            while let Ok(Some(n)) = notes.next() {
                if let Some(id) = found(n.name(), n.n_type(endian), n.desc()) {
                    return Some(id);
                }
            }
        }
    }
    None
}

/// SHA-256 over the first 4096 bytes, the last 4096 bytes and the size (8 bytes, big
/// endian); the first 16 bytes as 32 hex characters. The id of a file with no build id.
pub fn file_hash(data: &[u8], size: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(&data[..data.len().min(4096)]);
    h.update(&data[data.len().saturating_sub(4096)..]);
    h.update(size.to_be_bytes());
    hex(&h.finalize()[..16])
}

/// The id the backend knows a file by: the GNU build id, else the Go build id, else the
/// file hash.
pub fn file_id(gnu: Option<&[u8]>, go: Option<&str>, data: &[u8], size: u64) -> String {
    match (gnu, go) {
        (Some(b), _) => hex(b),
        (None, Some(g)) => g.to_string(),
        (None, None) => file_hash(data, size),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_follows_the_contract() {
        // Values computed independently with Python's hashlib from the contract's words:
        // sha256(first 4096 + last 4096 + size as 8 bytes big endian)[:16], hex.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(file_hash(&data, 10_000), "29e3194e821b97b5565d43a5156ad97a");
        // A 100-byte file: both ends are the whole file, hashed twice.
        assert_eq!(file_hash(&[7u8; 100], 100), "a66b9ca932de00f5182c029fb2f03699");
    }

    #[test]
    fn ids_prefer_gnu_then_go_then_hash() {
        assert_eq!(file_id(Some(&[0xab, 0x01]), Some("go/id"), b"x", 1), "ab01");
        assert_eq!(file_id(None, Some("go/id"), b"x", 1), "go/id");
        assert_eq!(file_id(None, None, b"x", 1), file_hash(b"x", 1));
    }
}
