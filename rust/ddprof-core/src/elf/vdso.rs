//! The vDSO as a file: the image is the same in every process on this kernel, so it is
//! copied from our own address space into a memfd, then unwound and symbolized like any ELF
//! file.
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;

use super::{ElfFile, FileKey, Origin};

pub fn load_vdso() -> Option<ElfFile> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let (range, _) = line.split_once(' ')?;
    let (s, e) = range.split_once('-')?;
    let (start, end) = (usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?);
    // SAFETY: the [vdso] mapping of this very process is readable for its whole range and
    // never unmapped.
    let image = unsafe { std::slice::from_raw_parts(start as *const u8, end.checked_sub(start)?) };
    let mut file = memfd("ddprof-vdso")?;
    file.write_all(image).ok()?;
    let inode = file.metadata().ok()?.ino();
    ElfFile::open(file, FileKey { dev: 0, inode }, Origin::none("[vdso]")).ok()
}

/// An anonymous in-memory file (closed on exec).
pub fn memfd(name: &str) -> Option<File> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: memfd_create with a valid C string; the fd is owned by the File below.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) })
}
