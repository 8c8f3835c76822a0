//! Where CPython keeps what we read, per version: byte offsets of the fields of its runtime,
//! interpreter, thread state, frames, code objects, bytes and str objects.
//!
//! Input: the interpreter's version (major, minor) and, for 3.13 and later, the
//! `_Py_DebugOffsets` block that starts `_PyRuntime` (the interpreter describes itself for
//! debuggers). Output: an [`Offsets`], or `None` for a version we do not know: such a
//! process gets native frames only, never names read at guessed places.
//! The tables for 3.8 to 3.12 are generated from each version's own headers by
//! `scripts/cpython-offsets/gen.sh` (x86_64 and aarch64 share them: LP64, same padding).
//! Non-goals: debug builds (`Py_TRACE_REFS` changes every object's header; refused by the
//! caller), free-threaded builds (refused).
use super::memory::u64_at;

/// How frames link and which of them begin a C-level call of the eval loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLayout {
    /// 3.8-3.10: `PyFrameObject`s; every frame is its own call of the eval loop; `f_lasti`
    /// is an int (bytes in 3.8-3.9, code units in 3.10).
    Objects { lasti_in_bytes: bool },
    /// 3.11+: `_PyInterpreterFrame`s; the instruction is a pointer into the code object.
    /// The first frame of each eval call is marked by `is_entry` (3.11) or followed by a
    /// shim frame whose `owner` is FRAME_OWNED_BY_CSTACK (3.12+).
    Interpreter { entry: EntryMark },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMark {
    /// A byte flag on the entry frame (3.11 `is_entry`).
    IsEntry,
    /// Shim frames, whose `owner` is this value or more, sit below each entry frame (3.12+).
    CstackOwner(u8),
}

/// Which line table a code object carries (see `lines`).
pub use super::lines::Format as LineFormat;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub minor: u32,
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interpreters_head: u64,
    /// `PyInterpreterState.tstate_head` / `.threads.head`.
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    /// `PyThreadState.thread_id` (pthread_self()).
    pub tstate_thread_id: u64,
    /// `PyThreadState.native_thread_id` (the kernel's tid), 3.11+; `None` before.
    pub tstate_native_thread_id: Option<u64>,
    /// `PyThreadState.frame` (3.8-3.10), `.cframe` (3.11-3.12), `.current_frame` (3.13+).
    pub tstate_frame: u64,
    /// `_PyCFrame.current_frame` when `tstate_frame` leads to a CFrame (3.11-3.12).
    pub cframe_current_frame: Option<u64>,
    pub frame_code: u64,
    pub frame_previous: u64,
    /// `f_lasti` (3.8-3.10), `prev_instr` (3.11-3.12), `instr_ptr` (3.13+).
    pub frame_instr: u64,
    /// `is_entry` (3.11) or `owner` (3.12+); unused before.
    pub frame_entry: u64,
    pub frame_layout: FrameLayout,
    /// Bits of the frame's code pointer that are tags (3.14's `_PyStackRef`).
    pub code_tag_bits: u64,
    pub code_filename: u64,
    pub code_name: u64,
    /// `co_qualname`, 3.11+.
    pub code_qualname: Option<u64>,
    pub code_firstlineno: u64,
    /// `co_lnotab` (3.8-3.9) or `co_linetable` (3.10+).
    pub code_linetable: u64,
    pub line_format: LineFormat,
    /// `co_code_adaptive`: where the instructions start inside the code object, 3.11+.
    pub code_adaptive: Option<u64>,
    pub bytes_size: u64,
    pub bytes_sval: u64,
    pub unicode_state: u64,
    pub unicode_length: u64,
    /// Where a compact ASCII string's characters start (sizeof(PyASCIIObject)).
    pub unicode_ascii_size: u64,
    /// Where a compact non-ASCII string's characters start (sizeof(PyCompactUnicodeObject)).
    pub unicode_compact_size: u64,
}

/// The versions whose layout is built in (3.13+ read theirs from the process).
pub const TABLE_VERSIONS: [u32; 5] = [8, 9, 10, 11, 12];

/// The layout of CPython 3.`minor` for 3.8 to 3.12 (from `scripts/cpython-offsets/gen.sh`).
pub fn table(minor: u32) -> Option<Offsets> {
    let objects = |lasti_in_bytes| FrameLayout::Objects { lasti_in_bytes };
    // 3.8, 3.9 and 3.10 share every offset but f_lasti's and the line table's format.
    let old = |minor: u32, frame_instr: u64, line_format| Offsets {
        minor,
        runtime_interpreters_head: 32,
        interp_threads_head: 8,
        tstate_next: 8,
        tstate_thread_id: 176,
        tstate_native_thread_id: None,
        tstate_frame: 24,
        cframe_current_frame: None,
        frame_code: 32,
        frame_previous: 24,
        frame_instr,
        frame_entry: 0,
        frame_layout: objects(minor < 10),
        code_tag_bits: 0,
        code_filename: 104,
        code_name: 112,
        code_qualname: None,
        code_firstlineno: 40,
        code_linetable: 120,
        line_format,
        code_adaptive: None,
        bytes_size: 16,
        bytes_sval: 32,
        unicode_state: 32,
        unicode_length: 16,
        unicode_ascii_size: 48,
        unicode_compact_size: 72,
    };
    match minor {
        8 => Some(old(8, 104, LineFormat::Lnotab)),
        9 => Some(old(9, 104, LineFormat::Lnotab)),
        10 => Some(old(10, 96, LineFormat::Linetable310)),
        11 => Some(Offsets {
            minor: 11,
            runtime_interpreters_head: 40,
            interp_threads_head: 16,
            tstate_next: 8,
            tstate_thread_id: 152,
            tstate_native_thread_id: Some(160),
            tstate_frame: 56,
            cframe_current_frame: Some(8),
            frame_code: 32,
            frame_previous: 48,
            frame_instr: 56,
            frame_entry: 68,
            frame_layout: FrameLayout::Interpreter { entry: EntryMark::IsEntry },
            code_tag_bits: 0,
            code_filename: 112,
            code_name: 120,
            code_qualname: Some(128),
            code_firstlineno: 72,
            code_linetable: 136,
            line_format: LineFormat::Locations,
            code_adaptive: Some(184),
            bytes_size: 16,
            bytes_sval: 32,
            unicode_state: 32,
            unicode_length: 16,
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
        }),
        12 => Some(Offsets {
            minor: 12,
            runtime_interpreters_head: 40,
            interp_threads_head: 72,
            tstate_next: 8,
            tstate_thread_id: 136,
            tstate_native_thread_id: Some(144),
            tstate_frame: 56,
            cframe_current_frame: Some(0),
            frame_code: 0,
            frame_previous: 8,
            frame_instr: 56,
            frame_entry: 70,
            frame_layout: FrameLayout::Interpreter { entry: EntryMark::CstackOwner(3) },
            code_tag_bits: 0,
            code_filename: 112,
            code_name: 120,
            code_qualname: Some(128),
            code_firstlineno: 68,
            code_linetable: 136,
            line_format: LineFormat::Locations,
            code_adaptive: Some(192),
            bytes_size: 16,
            bytes_sval: 32,
            unicode_state: 32,
            unicode_length: 16,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
        }),
        _ => None,
    }
}

/// The cookie that starts `_Py_DebugOffsets` (3.13+).
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// What the `_Py_DebugOffsets` block says about the interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugOffsets {
    /// PY_VERSION_HEX.
    pub version_hex: u64,
    pub free_threaded: bool,
    pub offsets: Option<Offsets>,
}

/// Positions (in u64 words after the cookie) of the fields we use, per layout of the block.
struct DebugLayout {
    runtime_interpreters_head: usize,
    interp_threads_head: usize,
    tstate_next: usize,
    tstate_current_frame: usize,
    tstate_thread_id: usize,
    tstate_native_thread_id: usize,
    frame_previous: usize,
    frame_executable: usize,
    frame_instr_ptr: usize,
    frame_owner: usize,
    code_filename: usize,
    code_name: usize,
    code_qualname: usize,
    code_linetable: usize,
    code_firstlineno: usize,
    code_adaptive: usize,
    bytes_size: usize,
    bytes_sval: usize,
    unicode_state: usize,
    unicode_length: usize,
    unicode_ascii_size: usize,
}

/// 3.13's `_Py_DebugOffsets` (Include/internal/pycore_runtime.h of 3.13): word 0 is the
/// version, word 1 free_threaded, then each sub-struct's fields in order, each starting
/// with its `size`.
const LAYOUT_3_13: DebugLayout = DebugLayout {
    // runtime_state {size 2, finalizing 3, interpreters_head 4}
    runtime_interpreters_head: 4,
    // interpreter_state {size 5, id 6, next 7, threads_head 8, ... 13 fields: 5..=17}
    interp_threads_head: 8,
    // thread_state {size 18, prev 19, next 20, interp 21, current_frame 22, thread_id 23,
    // native_thread_id 24, datastack_chunk 25, status 26}
    tstate_next: 20,
    tstate_current_frame: 22,
    tstate_thread_id: 23,
    tstate_native_thread_id: 24,
    // interpreter_frame {size 27, previous 28, executable 29, instr_ptr 30, localsplus 31,
    // owner 32}
    frame_previous: 28,
    frame_executable: 29,
    frame_instr_ptr: 30,
    frame_owner: 32,
    // code_object {size 33, filename 34, name 35, qualname 36, linetable 37, firstlineno 38,
    // argcount 39, localsplusnames 40, localspluskinds 41, co_code_adaptive 42}
    code_filename: 34,
    code_name: 35,
    code_qualname: 36,
    code_linetable: 37,
    code_firstlineno: 38,
    code_adaptive: 42,
    // pyobject {43, 44}, type_object {45..=48}, tuple {49..=51}, list {52..=54},
    // dict {55..=57}, float {58, 59}, long {60..=62}, bytes {size 63, ob_size 64, ob_sval 65}
    bytes_size: 64,
    bytes_sval: 65,
    // unicode {size 66, state 67, length 68, asciiobject_size 69}
    unicode_state: 67,
    unicode_length: 68,
    unicode_ascii_size: 69,
};

/// 3.14's (Include/internal/pycore_debug_offsets.h of 3.14.0, as py-spy's bindings
/// generated from the v3.14.0 and v3.14.5 tags and pystack's copy give it):
/// `interpreter_state.threads_main` was inserted after `threads_head`, fields were appended
/// to `interpreter_state`, `interpreter_frame` and `code_object`, and a `set_object`
/// sub-struct was inserted before `dict_object`. Word `i` is at byte `8 + 8 * i`.
const LAYOUT_3_14: DebugLayout = DebugLayout {
    runtime_interpreters_head: 4,
    interp_threads_head: 8,
    // thread_state {size 176 ..}: next 192, current_frame 208, thread_id 216, native 224
    tstate_next: 23,
    tstate_current_frame: 25,
    tstate_thread_id: 26,
    tstate_native_thread_id: 27,
    // interpreter_frame {size 248 ..}: previous 256, executable 264, instr_ptr 272, owner 288
    frame_previous: 31,
    frame_executable: 32,
    frame_instr_ptr: 33,
    frame_owner: 35,
    // code_object {size 312 ..}: filename 320, name 328, qualname 336, linetable 344,
    // firstlineno 352, co_code_adaptive 384
    code_filename: 39,
    code_name: 40,
    code_qualname: 41,
    code_linetable: 42,
    code_firstlineno: 43,
    code_adaptive: 47,
    // bytes_object {size 592, ob_size 600, ob_sval 608}
    bytes_size: 74,
    bytes_sval: 75,
    // unicode_object {size 616, state 624, length 632, asciiobject_size 640}
    unicode_state: 77,
    unicode_length: 78,
    unicode_ascii_size: 79,
};

/// Words of the block read (enough for every layout known).
pub const DEBUG_OFFSETS_BYTES: usize = 8 + 8 * 200;

impl DebugOffsets {
    /// Parses the block at the start of `_PyRuntime` (`bytes` from the cookie on). `None`
    /// when the cookie is not there (not a 3.13+ runtime).
    pub fn parse(bytes: &[u8]) -> Option<DebugOffsets> {
        if bytes.get(..8)? != DEBUG_COOKIE {
            return None;
        }
        let word = |i: usize| u64_at(bytes, 8 + 8 * i);
        let version_hex = word(0)?;
        let free_threaded = word(1)? != 0;
        let (major, minor) = ((version_hex >> 24) & 0xff, (version_hex >> 16) & 0xff);
        let layout = match (major, minor) {
            (3, 13) => Some(&LAYOUT_3_13),
            (3, 14) => Some(&LAYOUT_3_14),
            _ => None,
        };
        let offsets = layout.and_then(|l| {
            let w = |i: usize| word(i);
            // sizeof(PyCompactUnicodeObject) = sizeof(PyASCIIObject) + utf8_length + utf8
            // (3.12+: wstr is gone).
            let ascii = w(l.unicode_ascii_size)?;
            Some(Offsets {
                minor: u32::try_from(minor).ok()?,
                runtime_interpreters_head: w(l.runtime_interpreters_head)?,
                interp_threads_head: w(l.interp_threads_head)?,
                tstate_next: w(l.tstate_next)?,
                tstate_thread_id: w(l.tstate_thread_id)?,
                tstate_native_thread_id: Some(w(l.tstate_native_thread_id)?),
                tstate_frame: w(l.tstate_current_frame)?,
                cframe_current_frame: None,
                frame_code: w(l.frame_executable)?,
                frame_previous: w(l.frame_previous)?,
                frame_instr: w(l.frame_instr_ptr)?,
                frame_entry: w(l.frame_owner)?,
                // 3.12-3.13: FRAME_OWNED_BY_CSTACK = 3; 3.14: the shim is
                // FRAME_OWNED_BY_INTERPRETER = 3 (and CSTACK = 4): "owner >= 3" in both.
                frame_layout: FrameLayout::Interpreter { entry: EntryMark::CstackOwner(3) },
                // 3.14's f_executable is a _PyStackRef: Py_TAG_BITS = 3 in GIL builds.
                code_tag_bits: if minor >= 14 { 3 } else { 0 },
                code_filename: w(l.code_filename)?,
                code_name: w(l.code_name)?,
                code_qualname: Some(w(l.code_qualname)?),
                code_firstlineno: w(l.code_firstlineno)?,
                code_linetable: w(l.code_linetable)?,
                line_format: LineFormat::Locations,
                code_adaptive: Some(w(l.code_adaptive)?),
                bytes_size: w(l.bytes_size)?,
                bytes_sval: w(l.bytes_sval)?,
                unicode_state: w(l.unicode_state)?,
                unicode_length: w(l.unicode_length)?,
                unicode_ascii_size: ascii,
                unicode_compact_size: ascii + 16,
            })
        });
        Some(DebugOffsets { version_hex, free_threaded, offsets })
    }
}

impl Offsets {
    /// Every offset the BPF side reads fits in its record (and in the frame block it reads
    /// at once); a table that does not is refused rather than trusted.
    pub fn check(&self) -> Result<(), String> {
        let frame_fields = [self.frame_code, self.frame_previous, self.frame_instr, self.frame_entry];
        if let Some(f) = frame_fields.iter().find(|&&f| f + 8 > super::FRAME_BLOCK_BYTES as u64) {
            return Err(format!("a frame field at offset {f} is beyond the {} bytes read per frame", super::FRAME_BLOCK_BYTES));
        }
        // The sampler loads the pointer-sized fields aligned.
        if [self.frame_code, self.frame_previous, self.frame_instr].iter().any(|f| f % 8 != 0) {
            return Err("a frame field the sampler reads is not 8-byte aligned".into());
        }
        let small = [self.interp_threads_head, self.tstate_next, self.tstate_thread_id, self.tstate_frame];
        if small.iter().any(|&o| o > u64::from(u16::MAX)) || self.runtime_interpreters_head > u64::from(u32::MAX) {
            return Err("an offset is implausibly large".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_cover_their_versions_and_fit() {
        for minor in TABLE_VERSIONS {
            let t = table(minor).expect("a table");
            assert_eq!(t.minor, minor);
            t.check().expect("fits");
        }
        assert!(table(7).is_none() && table(13).is_none());
        assert_eq!(table(9).map(|t| t.frame_layout), Some(FrameLayout::Objects { lasti_in_bytes: true }));
        assert_eq!(table(10).map(|t| t.frame_layout), Some(FrameLayout::Objects { lasti_in_bytes: false }));
    }

    #[test]
    fn debug_offsets_need_the_cookie_and_a_known_layout() {
        assert!(DebugOffsets::parse(b"notdebug0000000000").is_none());
        let mut block = DEBUG_COOKIE.to_vec();
        block.extend(0x030f_00f0u64.to_ne_bytes()); // 3.15
        block.extend(0u64.to_ne_bytes());
        block.resize(DEBUG_OFFSETS_BYTES, 0);
        let d = DebugOffsets::parse(&block).expect("cookie");
        assert_eq!((d.version_hex, d.free_threaded, d.offsets), (0x030f_00f0, false, None));
    }
}
