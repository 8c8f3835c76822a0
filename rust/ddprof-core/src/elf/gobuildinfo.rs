//! The Go version a binary was built with, from its build info (`.go.buildinfo`), which Go
//! writes into every binary, stripped or not (`go version FILE` reads the same bytes).
//!
//! Input: the bytes of a whole ELF file. Output: the release as [`GoVersion`] (`go1.26.8` is
//! 1.26), or None: no build info, the pre-1.18 layout (pointers to strings, not the strings),
//! or a version that is not a release (`devel go1.27-abcdef`, whose runtime layout no table
//! knows). Non-goals: the module info (dependencies, build settings) that follows.
//!
//! Layout (Go 1.18+, `debug/buildinfo`): at a 16-byte aligned address, the 14-byte magic
//! `\xff Go buildinf:`, a pointer-size byte, a flags byte (bit 1: the strings are inline),
//! padding to 32 bytes, then the version as a uvarint length and its bytes.
use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const FLAG_INLINE: u8 = 0x2;
const HEADER_LEN: usize = 32;
/// How far into the first writable segment the magic is looked for when the section is
/// gone: the linker puts it first.
const SEARCH_LIMIT: usize = 64 * 1024;

/// A Go release, `go1.MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for GoVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "go{}.{}", self.major, self.minor)
    }
}

/// The Go version of the ELF file `data`; None as the module doc says.
pub fn go_version(data: &[u8]) -> Option<GoVersion> {
    let obj = object::File::parse(data).ok()?;
    let found = obj.section_by_name(".go.buildinfo").and_then(|s| s.data().ok()).and_then(|b| at_magic(b, 0));
    let found = found.or_else(|| {
        // Section headers removed (sstrip): the first writable PT_LOAD holds it.
        let seg = obj.segments().find(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_W != 0))?;
        let bytes = seg.data().ok()?;
        let end = bytes.len().min(SEARCH_LIMIT);
        (0..end).step_by(16).find_map(|off| at_magic(bytes, off))
    })?;
    parse_version(found)
}

/// The version string of the build info at `off` of `bytes`, when the magic is there.
fn at_magic(bytes: &[u8], off: usize) -> Option<&str> {
    let hdr = bytes.get(off..off.checked_add(HEADER_LEN)?)?;
    if &hdr[..MAGIC.len()] != MAGIC || hdr[15] & FLAG_INLINE == 0 {
        return None;
    }
    let rest = bytes.get(off + HEADER_LEN..)?;
    let (len, n) = uvarint(rest)?;
    let s = rest.get(n..n.checked_add(usize::try_from(len).ok()?)?)?;
    std::str::from_utf8(s).ok()
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// `go1.26.8`, `go1.21rc2`, `go1.22.0 X:boringcrypto` -> 1.26, 1.21, 1.22.
fn parse_version(s: &str) -> Option<GoVersion> {
    let rest = s.strip_prefix("go")?;
    let number = |t: &str| -> Option<(u32, usize)> {
        let n = t.bytes().take_while(u8::is_ascii_digit).count();
        Some((t.get(..n)?.parse().ok()?, n))
    };
    let (major, n) = number(rest)?;
    let rest = rest.get(n..)?.strip_prefix('.')?;
    let (minor, _) = number(rest)?;
    Some(GoVersion { major, minor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let v = |major, minor| Some(GoVersion { major, minor });
        assert_eq!(parse_version("go1.26.8"), v(1, 26));
        assert_eq!(parse_version("go1.19"), v(1, 19));
        assert_eq!(parse_version("go1.21rc2"), v(1, 21));
        assert_eq!(parse_version("go1.22.0 X:boringcrypto"), v(1, 22));
        assert_eq!(parse_version("devel go1.27-abcdef"), None);
        assert_eq!(parse_version("go1"), None);
        assert!(v(1, 25) > v(1, 24));
    }

    #[test]
    fn inline_build_info() {
        let mut b = vec![0u8; 48];
        b[..14].copy_from_slice(MAGIC);
        b[14] = 8;
        b[15] = FLAG_INLINE;
        b[32] = 8;
        b[33..41].copy_from_slice(b"go1.26.8");
        assert_eq!(at_magic(&b, 0), Some("go1.26.8"));
        assert_eq!(at_magic(&b[..40], 0), None, "a string past the end");
        b[15] = 0;
        assert_eq!(at_magic(&b, 0), None, "pre-1.18: pointers, not strings");
        assert_eq!(uvarint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(uvarint(&[0x80; 12]), None);
    }
}
