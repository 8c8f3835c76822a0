//! Where a binary's separate debug file is, the way GDB and Debian's `-dbgsym` packages lay
//! them out. Used by both the symbolizer and symbol upload (one lookup, one answer).
//!
//! Input: the binary's build id and `.gnu_debuglink` (name, CRC-32), and its [`Origin`]:
//! the roots to search (the root of the process that mapped it, e.g. `/proc/PID/root`, then
//! the host's `/`) and its directory inside them. Output: the first of, in order:
//! 1. `<root>/usr/lib/debug/.build-id/xx/yyyy.debug` whose own build id matches, for each
//!    root (GDB's debug-file-directory; `/lib/debug` is the same on merged-/usr systems);
//! 2. the debug link's name, without a `/`, in the binary's directory, its `.debug/`, and
//!    `<root>/usr/lib/debug/<binary's directory>` (then `<root>/usr/lib/debug`), for each
//!    root, whose CRC-32 (zlib's) matches and which is not the binary itself.
//!
//! Non-goals: debuginfod (no network), `.gnu_debugaltlink` (DWZ supplementary files).
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::ids::hex;

/// Where a binary was found, for the debug file lookup.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    /// The path as the binary's user names it (in the process's mount namespace), for logs
    /// and uploads.
    pub path: String,
    /// Roots to search in, most specific first.
    pub roots: Vec<PathBuf>,
    /// The binary's directory inside the roots (e.g. `/usr/lib`).
    pub dir_in_root: PathBuf,
    /// The same directory as this process opens it (e.g. `/proc/PID/root/usr/lib`).
    pub dir: PathBuf,
}

impl Origin {
    /// A file mapped by process `pid` at `path` (as /proc/PID/maps names it): its debug
    /// files may be in the process's root, then on the host.
    pub fn in_process(pid: u32, path: &str) -> Origin {
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let dir_in_root = Path::new(path).parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = join_in_root(&root, &dir_in_root);
        Origin { path: path.to_string(), roots: vec![root, PathBuf::from("/")], dir_in_root, dir }
    }

    /// A file given by a path of this process (a tool's argument): debug files in `root`
    /// only; the binary's directory inside `root` when the path is under it.
    pub fn at_path(path: &Path, root: &Path) -> Origin {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let dir = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        let root_abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let dir_in_root = match dir.strip_prefix(&root_abs) {
            Ok(rel) if root_abs != Path::new("/") => Path::new("/").join(rel),
            _ => dir.clone(),
        };
        Origin { path: path.to_string_lossy().into_owned(), roots: vec![root_abs], dir_in_root, dir }
    }

    /// A file with no place on disk (the vDSO): no debug files.
    pub fn none(name: &str) -> Origin {
        Origin { path: name.to_string(), ..Origin::default() }
    }
}

fn join_in_root(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

/// How a debug file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    BuildId,
    DebugLink,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::BuildId => "build-id",
            Via::DebugLink => "debuglink",
        }
    }
}

/// The `.gnu_debuglink` of a binary: the debug file's name and its CRC-32.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugLink {
    pub name: String,
    pub crc: u32,
}

impl DebugLink {
    /// Parses the section: a NUL-terminated name, padding to 4 bytes, the CRC in the
    /// file's byte order. `None` for an empty or truncated one.
    pub fn parse(data: &[u8], big_endian: bool) -> Option<DebugLink> {
        let end = data.iter().position(|&b| b == 0)?;
        if end == 0 {
            return None;
        }
        let crc_at = (end + 4) / 4 * 4;
        let raw: [u8; 4] = data.get(crc_at..crc_at + 4)?.try_into().ok()?;
        let crc = if big_endian { u32::from_be_bytes(raw) } else { u32::from_le_bytes(raw) };
        Some(DebugLink { name: String::from_utf8_lossy(&data[..end]).into_owned(), crc })
    }
}

/// A debug file found for a binary, open.
pub struct Found {
    pub path: PathBuf,
    pub via: Via,
    pub file: File,
}

/// What the lookup needs to know of the binary.
pub struct Wanted<'a> {
    pub build_id: Option<&'a [u8]>,
    pub debuglink: Option<&'a DebugLink>,
    /// (device, inode) of the binary, so that a debug link never names the binary itself.
    pub binary: (u64, u64),
    /// Reads the build id of a candidate file (the caller parses ELF).
    pub build_id_of: &'a dyn Fn(&File) -> Option<Vec<u8>>,
}

/// The binary's separate debug file; see the module doc for the order.
pub fn find(origin: &Origin, want: &Wanted<'_>) -> Option<Found> {
    if let Some(id) = want.build_id.filter(|b| b.len() > 1) {
        let id = hex(id);
        let rel = format!(".build-id/{}/{}.debug", &id[..2], &id[2..]);
        for root in &origin.roots {
            let path = root.join("usr/lib/debug").join(&rel);
            let Ok(file) = File::open(&path) else { continue };
            if (want.build_id_of)(&file).as_deref() == want.build_id {
                return Some(Found { path, via: Via::BuildId, file });
            }
            log::debug!("{}: build id does not match {id}", path.display());
        }
    }
    let link = want.debuglink.filter(|l| !l.name.contains('/'))?;
    let mut dirs = vec![origin.dir.clone(), origin.dir.join(".debug")];
    for root in &origin.roots {
        dirs.push(join_in_root(&root.join("usr/lib/debug"), &origin.dir_in_root));
        dirs.push(root.join("usr/lib/debug"));
    }
    for dir in dirs {
        let path = dir.join(&link.name);
        let Ok(file) = File::open(&path) else { continue };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() || (meta.dev(), meta.ino()) == want.binary {
            continue;
        }
        match crc32(&file) {
            Some(crc) if crc == link.crc => return Some(Found { path, via: Via::DebugLink, file }),
            _ => log::debug!("{}: CRC does not match the debug link's {:08x}", path.display(), link.crc),
        }
    }
    None
}

/// zlib's CRC-32 of a whole file, read in 1 MiB chunks.
fn crc32(mut file: &File) -> Option<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debuglink_parses_with_padding_and_byte_order() {
        let mut d = b"libfoo.so.debug\0".to_vec(); // 16 bytes: the CRC follows at once
        d.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        assert_eq!(DebugLink::parse(&d, false), Some(DebugLink { name: "libfoo.so.debug".into(), crc: 0x1234_5678 }));
        let mut d = b"ab.debug\0\0\0\0".to_vec(); // 9 bytes of name + NUL, padded to 12
        d.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        assert_eq!(DebugLink::parse(&d, true).map(|l| l.crc), Some(0x1234_5678));
        assert_eq!(DebugLink::parse(b"ab.debug\0\0\0\0\x01", false), None);
        assert_eq!(DebugLink::parse(b"\0\0\0\0\0\0\0\0", false), None);
    }

    #[test]
    fn origins_name_the_directory_inside_the_root() {
        let o = Origin::in_process(42, "/usr/lib/libx.so (deleted)");
        assert_eq!(o.path, "/usr/lib/libx.so");
        assert_eq!(o.dir, PathBuf::from("/proc/42/root/usr/lib"));
        assert_eq!(o.dir_in_root, PathBuf::from("/usr/lib"));
        assert_eq!(o.roots, [PathBuf::from("/proc/42/root"), PathBuf::from("/")]);
        let o = Origin::at_path(Path::new("/srv/rootfs/usr/bin/app"), Path::new("/srv/rootfs"));
        assert_eq!(o.dir, PathBuf::from("/srv/rootfs/usr/bin"));
        assert_eq!(o.dir_in_root, PathBuf::from("/usr/bin"));
        let o = Origin::at_path(Path::new("/opt/app/bin/app"), Path::new("/"));
        assert_eq!(o.dir_in_root, PathBuf::from("/opt/app/bin"));
    }

    #[test]
    fn crc32_is_zlibs() {
        let dir = std::env::temp_dir().join(format!("ddprof-crc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp");
        let p = dir.join("f");
        std::fs::write(&p, b"123456789").expect("write");
        let got = crc32(&File::open(&p).expect("open"));
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(got, Some(0xcbf4_3926)); // the CRC-32 check value
    }
}
