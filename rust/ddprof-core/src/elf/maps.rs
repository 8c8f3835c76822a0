//! Read-only maps of files, and dropping their resident pages, ours and blazesym's.
//!
//! Input: files to map ([`FileMap`]), and files whose pages a batch read ([`release_mappings_of`]).
//! Output: maps, and fewer resident pages. Non-goals: what is read from the maps (`elf`).
//!
//! Why: a page of a file map that was read once stays in the profiler's resident size for as
//! long as the map lives. `ElfFile::release_pages` drops them from our own maps; blazesym
//! maps each file it parses again, itself (through `/proc/self/fd/N`), and keeps that map
//! with the kept parse, where gimli reads uncompressed DWARF in place: 8.7 MiB of pyenv's
//! libpython3.11 and 3.7 MiB of libc's compressed debug file (already decompressed, never
//! read again) stayed resident at 20 Hz. blazesym gives no handle on its map, so its ranges
//! are found in `/proc/self/maps` by the device and inode of our own map of the same file.
//!
//! `MADV_DONTNEED` on a shared read-only file map only drops page-table entries: the next
//! read faults the same bytes back from the page cache. On any other kind of map it would
//! zero memory, so a range found in `/proc/self/maps` must not be unmapped and replaced
//! between the read and the advice. Two locks make sure, and a release holds both:
//! - [`unmap_guard`]: every unmap of our [`FileMap`]s (short: the drain thread drops files);
//! - [`blazesym_guard`]: every call into blazesym and every drop of a blazesym symbolizer.
//!   blazesym maps and unmaps files of its own inside a call too (a debug link's build id is
//!   read through a map of the binary made and dropped at once), so with two symbolizers in
//!   one process (the profiler's and a `symbolize_file`), one thread's release could
//!   otherwise meet a range another thread's call just unmapped and reused.
//!
//! Non-goal: maps of these files made by code other than ours and blazesym's (none in this
//! process).
use std::collections::HashSet;
use std::fs::File;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::sync::{Mutex, MutexGuard};

use memmap2::Mmap;

static UNMAP: Mutex<()> = Mutex::new(());
static BLAZESYM: Mutex<()> = Mutex::new(());

/// Held while a [`FileMap`] is unmapped, and while ranges are released.
pub fn unmap_guard() -> MutexGuard<'static, ()> {
    UNMAP.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Held around every call into blazesym and every drop of a blazesym symbolizer, and while
/// ranges are released (taken before [`unmap_guard`]). Never take it while holding it: a
/// symbolizer must not be dropped inside a call.
pub fn blazesym_guard() -> MutexGuard<'static, ()> {
    BLAZESYM.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A whole file mapped read-only and shared (memmap2), unmapped under [`unmap_guard`].
pub struct FileMap(ManuallyDrop<Mmap>);

impl FileMap {
    /// Maps `file`.
    ///
    /// # Safety
    /// As `Mmap::map`: a file truncated while mapped faults on access (SIGBUS).
    pub unsafe fn map(file: &File) -> std::io::Result<FileMap> {
        // SAFETY: the caller's.
        Ok(FileMap(ManuallyDrop::new(unsafe { Mmap::map(file) }?)))
    }

    /// Drops this process's hold on the pages read so far (see the module doc).
    pub fn release(&self) -> std::io::Result<()> {
        // SAFETY: a read-only, file-backed map: after DONTNEED a read faults the same bytes
        // back from the page cache (no private copy exists to be lost).
        unsafe { self.0.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) }
    }
}

impl Deref for FileMap {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        let _guard = unmap_guard();
        // SAFETY: dropped once, here; the field is never used again.
        unsafe { ManuallyDrop::drop(&mut self.0) }
    }
}

/// One line of `/proc/self/maps`: its range, whether it is a shared read-only map, and the
/// file's identity as the kernel prints it ("fd:01", inode).
struct MapLine<'a> {
    start: usize,
    end: usize,
    shared_read_only: bool,
    dev: &'a str,
    inode: &'a str,
}

fn parse_line(line: &str) -> Option<MapLine<'_>> {
    let mut f = line.split_ascii_whitespace();
    let (range, perms, _offset, dev, inode) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    let (s, e) = range.split_once('-')?;
    let (start, end) = (usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?);
    Some(MapLine { start, end, shared_read_only: perms == "r--s", dev, inode })
}

/// Drops the resident pages of every shared read-only map of the files whose own maps start
/// at `starts` (our maps of them, found by address; blazesym's, by the same device and
/// inode). Returns how many ranges were released. Costs one read of `/proc/self/maps`; when
/// it cannot be read (said once), None: nothing was released, and callers release their own
/// maps with [`FileMap::release`] instead.
pub fn release_mappings_of(starts: &HashSet<usize>) -> Option<usize> {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if starts.is_empty() {
        return Some(0);
    }
    let _blazesym = blazesym_guard();
    let _unmap = unmap_guard();
    let text = match std::fs::read_to_string("/proc/self/maps") {
        Ok(text) => text,
        Err(e) => {
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!("cannot read /proc/self/maps ({e}): pages of parsed debug info stay resident until their parse is dropped");
            }
            return None;
        }
    };
    let lines: Vec<MapLine<'_>> = text.lines().filter_map(parse_line).collect();
    let ids: HashSet<(&str, &str)> =
        lines.iter().filter(|l| l.shared_read_only && starts.contains(&l.start)).map(|l| (l.dev, l.inode)).collect();
    let mut released = 0;
    for l in lines.iter().filter(|l| l.shared_read_only && l.inode != "0" && ids.contains(&(l.dev, l.inode))) {
        // SAFETY: a shared read-only map of one of our files (see the module doc: under both
        // locks, no map of these files is unmapped, so the range is still this map).
        if unsafe { libc::madvise(l.start as *mut libc::c_void, l.end - l.start, libc::MADV_DONTNEED) } == 0 {
            released += 1;
        }
    }
    Some(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages read through a second map of the same file (as blazesym's) stop being resident.
    #[test]
    fn another_map_of_the_same_file_is_released() {
        let exe = File::open(std::env::current_exe().expect("test binary")).expect("opens");
        // SAFETY: the test binary is not written while it runs.
        let (ours, theirs) = unsafe { (FileMap::map(&exe).expect("maps"), FileMap::map(&exe).expect("maps")) };
        let sum: u64 = theirs.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        let rss_of = |start: usize| -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            let mut inside = false;
            for line in smaps.lines() {
                if let Some(l) = parse_line(line) {
                    inside = l.start == start;
                } else if inside && line.starts_with("Rss:") {
                    return line.split_ascii_whitespace().nth(1).and_then(|k| k.parse().ok()).expect("kB");
                }
            }
            panic!("no map at {start:#x}")
        };
        let before = rss_of(theirs.as_ptr() as usize);
        assert!(before > 0 && sum > 0, "read, so resident: {before} kB");
        let n = release_mappings_of(&HashSet::from([ours.as_ptr() as usize])).expect("/proc/self/maps");
        assert!(n >= 2, "both maps released: {n}");
        assert_eq!(rss_of(theirs.as_ptr() as usize), 0, "not resident after the release");
        let again: u64 = theirs.iter().step_by(4096).map(|&b| u64::from(b)).sum();
        assert_eq!(again, sum, "the same bytes fault back in");
    }
}
