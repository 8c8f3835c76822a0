//! Names for the address spaces a profiler moves between (framehop's and samply's words):
//!
//! - [`Avma`]: an *actual* virtual memory address, in a process (or in the kernel);
//! - [`Svma`]: a *stated* virtual memory address, as an ELF file's headers and symbols state
//!   it (what `addr2line` takes);
//! - [`FileOffset`]: a byte offset in a file;
//! - [`Bias`]: `AVMA - SVMA` for one mapping of a file.
//!
//! Conversions between them live here and nowhere else: [`Bias`] between AVMA and SVMA,
//! [`MappedRange`] between AVMA and file offset, [`LoadSegment`] between file offset and SVMA.
//! Arithmetic wraps, as addresses do: a bias may be "negative".
use std::fmt;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

address_type!(
    /// An address in a process's (or the kernel's) address space.
    Avma
);
address_type!(
    /// An address as an ELF file states it (segment and symbol addresses).
    Svma
);
address_type!(
    /// A byte offset in a file.
    FileOffset
);
address_type!(
    /// `AVMA - SVMA` of one mapping: where the loader put the file's addresses.
    Bias
);

impl Bias {
    pub fn between(avma: Avma, svma: Svma) -> Bias {
        Bias(avma.0.wrapping_sub(svma.0))
    }
    pub fn svma(self, avma: Avma) -> Svma {
        Svma(avma.0.wrapping_sub(self.0))
    }
    pub fn avma(self, svma: Svma) -> Avma {
        Avma(svma.0.wrapping_add(self.0))
    }
}

/// Part of a file mapped into a process: `[start, end)` maps the file from `offset` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedRange {
    pub start: Avma,
    pub end: Avma,
    pub offset: FileOffset,
}

impl MappedRange {
    pub fn contains(&self, avma: Avma) -> bool {
        avma >= self.start && avma < self.end
    }
    /// The file offset an address of this range was loaded from.
    pub fn file_offset(&self, avma: Avma) -> FileOffset {
        FileOffset(avma.0.wrapping_sub(self.start.0).wrapping_add(self.offset.0))
    }
}

/// A PT_LOAD segment: file bytes `[file_offset, file_offset + file_size)` at `svma`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub file_offset: FileOffset,
    pub file_size: u64,
    pub svma: Svma,
}

impl LoadSegment {
    pub fn holds(&self, offset: FileOffset) -> bool {
        offset >= self.file_offset && offset.0 - self.file_offset.0 < self.file_size
    }
    /// The SVMA of a file offset inside this segment.
    pub fn svma_of(&self, offset: FileOffset) -> Option<Svma> {
        self.holds(offset).then(|| Svma(self.svma.0.wrapping_add(offset.0 - self.file_offset.0)))
    }
    /// The bias of a mapping that starts at `start` with file offset `offset` and holds
    /// this segment: `avma = start + (f - offset)` and `svma = vaddr + (f - file_offset)`
    /// for every file offset `f` of the segment.
    pub fn bias_when_mapped(&self, start: Avma, offset: FileOffset) -> Bias {
        Bias(start.0.wrapping_sub(offset.0).wrapping_add(self.file_offset.0).wrapping_sub(self.svma.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        // libc's text: file offset 0x28000 at svma 0x28000, mapped at 0x7f00_0002_8000.
        let seg = LoadSegment { file_offset: FileOffset(0x28000), file_size: 0x1000, svma: Svma(0x28000) };
        let range = MappedRange { start: Avma(0x7f00_0002_8000), end: Avma(0x7f00_0002_9000), offset: FileOffset(0x28000) };
        let bias = seg.bias_when_mapped(range.start, range.offset);
        assert_eq!(bias, Bias(0x7f00_0000_0000));
        let avma = Avma(0x7f00_0002_8123);
        assert!(range.contains(avma));
        assert_eq!(range.file_offset(avma), FileOffset(0x28123));
        assert_eq!(seg.svma_of(FileOffset(0x28123)), Some(Svma(0x28123)));
        assert_eq!(bias.svma(avma), Svma(0x28123));
        assert_eq!(bias.avma(Svma(0x28123)), avma);
        assert_eq!(seg.svma_of(FileOffset(0x29000)), None);
        // A segment whose addresses sit below its file offsets (lld's packing): the bias
        // still converts both ways.
        let lld = LoadSegment { file_offset: FileOffset(0x1f00), file_size: 0x200, svma: Svma(0xf00) };
        let b = lld.bias_when_mapped(Avma(0x5000_1000), FileOffset(0x1000));
        assert_eq!(b.svma(Avma(0x5000_1f10)), Svma(0xf10));
    }
}
