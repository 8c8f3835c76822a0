//! CPython: the Python frames a native stack was executing.
//!
//! Since 3.11, Python-to-Python calls do not grow the C stack: the Python stack is only in
//! the interpreter's own frame chain. The BPF sampler reads it at the moment of the sample
//! (thread state -> current frame -> previous ..., bounded; see `bpf/sampler.bpf.c`),
//! recording each frame's code object address and instruction offset. This module is the
//! user-space half:
//!
//! - here: recognizing a CPython (the executable or `libpython3.X.so` maps `_PyRuntime`),
//!   its version (the `cpython-3XY` cache tag every build carries, `Py_Version` 3.11+,
//!   `_Py_DebugOffsets` 3.13+), where its runtime and eval loop are in the process, and the
//!   per-process configuration the sampler needs ([`PyProcConfig`]);
//! - `offsets`: the struct layouts per version; `lines`: the line tables;
//! - `code`: code objects (qualified name, file, first line, line table), read from the
//!   process's memory once per (process, code object), cached and bounded;
//! - `merge`: replacing each run of eval-loop frames of the native stack by the Python
//!   frames it was executing;
//! - `trampoline`: unwinding through the perf trampolines of `-X perf` / `-X perf_jit`.
//!
//! An interpreter we do not support (version, debug or free-threaded build) gets native
//! frames only, and one log line naming it: never names read at guessed places.
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol};

use crate::addr::{Avma, FileOffset, Svma};
use crate::elf::ElfFile;
use crate::process::Process;

pub mod code;
pub mod lines;
pub mod memory;
pub mod merge;
pub mod offsets;
pub mod trampoline;

use offsets::{DebugOffsets, EntryMark, FrameLayout, Offsets};

/// Bytes of a frame the sampler reads at once (every frame field must fit, pointer fields
/// at multiples of 8): DDPROF_PY_FRAME_BLOCK in `bpf/sampler.h`.
pub const FRAME_BLOCK_BYTES: usize = 128;

/// What a binary that embeds CPython says about it (computed once per file).
#[derive(Debug)]
pub struct CpythonBinary {
    /// "3.11.2" when the binary states its micro version (3.11+), else "3.9".
    pub version: String,
    pub minor: u32,
    pub runtime: Svma,
    /// `_PyEval_EvalFrameDefault`: each native frame in it is one call of the eval loop.
    pub eval: Range<Svma>,
    /// `PyCode_Type`, to check that a pointer read from a frame is a code object.
    pub code_type: Option<Svma>,
    /// The layout, or why this interpreter is not supported.
    pub offsets: Result<Arc<Offsets>, String>,
}

/// A CPython in one process (one generation of its mappings).
#[derive(Debug)]
pub struct Interpreter {
    pub version: String,
    pub runtime: Avma,
    pub eval: Range<Avma>,
    pub code_type: Option<Avma>,
    pub offsets: Arc<Offsets>,
}

impl Interpreter {
    pub fn is_eval(&self, addr: Avma) -> bool {
        addr >= self.eval.start && addr < self.eval.end
    }
}

/// What the sampler needs to walk a process's Python frames (the BPF map value; see
/// `struct py_proc` in `bpf/sampler.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyProcConfig {
    pub runtime: u64,
    pub interp_head: u32,
    pub threads_head: u16,
    pub tstate_next: u16,
    pub tstate_id: u16,
    pub tstate_frame: u16,
    pub cframe_frame: u16,
    pub frame_code: u16,
    pub frame_previous: u16,
    pub frame_instr: u16,
    pub frame_entry: u16,
    pub block_len: u16,
    pub id_is_pthread: u8,
}

/// `py_proc.cframe_frame` when there is no CFrame between thread state and frame.
pub const NO_CFRAME: u16 = 0xffff;

/// One Python frame as the sampler read it (`struct py_frame`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPyFrame {
    /// The frame's code pointer field (3.14: tag bits included).
    pub code: u64,
    /// Bits 0-55: the instruction field; bits 56-63: the entry byte.
    pub instr: u64,
}

impl Interpreter {
    pub fn config(&self) -> PyProcConfig {
        let o = &self.offsets;
        let u16_of = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        let last = [o.frame_code, o.frame_previous, o.frame_instr, o.frame_entry].into_iter().max().unwrap_or(0);
        PyProcConfig {
            runtime: self.runtime.0,
            interp_head: u32::try_from(o.runtime_interpreters_head).unwrap_or(u32::MAX),
            threads_head: u16_of(o.interp_threads_head),
            tstate_next: u16_of(o.tstate_next),
            tstate_id: u16_of(o.tstate_native_thread_id.unwrap_or(o.tstate_thread_id)),
            tstate_frame: u16_of(o.tstate_frame),
            cframe_frame: o.cframe_current_frame.map_or(NO_CFRAME, u16_of),
            frame_code: u16_of(o.frame_code),
            frame_previous: u16_of(o.frame_previous),
            frame_instr: u16_of(o.frame_instr),
            frame_entry: u16_of(o.frame_entry),
            block_len: u16_of((last + 8).next_multiple_of(8)),
            id_is_pthread: u8::from(o.tstate_native_thread_id.is_none()),
        }
    }

    /// The frames the sampler read, as the merge wants them: C-stack shims (3.12+) dropped
    /// and the frame above each marked as its eval call's entry, instructions as code-unit
    /// (3.10+) or byte (3.8-3.9) offsets, code pointers untagged.
    pub fn decode(&self, raw: impl Iterator<Item = RawPyFrame>, out: &mut Vec<merge::PyFrame>) {
        out.clear();
        let o = &self.offsets;
        for r in raw {
            let code = r.code & !o.code_tag_bits;
            let entry_byte = (r.instr >> 56) as u8;
            let field = r.instr & 0x00ff_ffff_ffff_ffff;
            let (instr, entry) = match o.frame_layout {
                FrameLayout::Objects { .. } => {
                    let lasti = field as u32 as i32;
                    (u32::try_from(lasti).unwrap_or(merge::NO_INSTR), true)
                }
                FrameLayout::Interpreter { entry } => {
                    if let EntryMark::CstackOwner(shim) = entry {
                        if entry_byte >= shim {
                            if let Some(last) = out.last_mut() {
                                last.flags |= merge::PY_ENTRY;
                            }
                            continue;
                        }
                    }
                    let base = code.wrapping_add(o.code_adaptive.unwrap_or(0));
                    let unit = field.checked_sub(base).map(|d| d / 2).and_then(|u| u32::try_from(u).ok());
                    (unit.unwrap_or(merge::NO_INSTR), entry == EntryMark::IsEntry && entry_byte != 0)
                }
            };
            out.push(merge::PyFrame { code, instr, flags: if entry { merge::PY_ENTRY } else { 0 } });
        }
    }
}

/// The minor version a binary was built as, from the `cpython-3XY` cache tag every build
/// carries (`sys.implementation.cache_tag`).
fn cache_tag_minor(data: &[u8]) -> Option<u32> {
    const TAG: &[u8] = b"cpython-3";
    // The tag is a string of its own: not preceded by text (Debian's libpython puts it right
    // after a table's 0xff bytes, not after a NUL).
    let own_start = |i: usize| i == 0 || !(data[i - 1].is_ascii_graphic() || data[i - 1] == b' ');
    let starts = data.windows(TAG.len()).enumerate().filter(|(i, w)| *w == TAG && own_start(*i));
    let mut minors = starts.filter_map(|(i, _)| {
        let rest = data.get(i + TAG.len()..)?;
        let rest = &rest[..rest.len().min(4)];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        (digits > 0 && rest.get(digits) == Some(&0)).then(|| std::str::from_utf8(&rest[..digits]).ok()?.parse().ok())?
    });
    let first = minors.next()?;
    minors.all(|m| m == first).then_some(first)
}

/// The minor version in a file name such as `python3.11`, `libpython3.9.so.1.0`.
fn name_minor(path: &str) -> Option<u32> {
    let base = path.rsplit('/').next()?;
    let at = base.find("python3.")? + "python3.".len();
    let digits: String = base[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn svma_bytes(file: &ElfFile, at: Svma, len: usize) -> Option<&[u8]> {
    let seg = file.segments.iter().find(|s| at >= s.svma && at.0 - s.svma.0 + len as u64 <= s.file_size)?;
    let off = FileOffset(seg.file_offset.0 + (at.0 - seg.svma.0));
    let start = usize::try_from(off.0).ok()?;
    file.bytes().get(start..start.checked_add(len)?)
}

/// Recognizes the CPython a binary embeds; `None` when it is not one (no `_PyRuntime`).
pub fn inspect_binary(file: &ElfFile) -> Option<CpythonBinary> {
    let obj = object::File::parse(file.bytes()).ok()?;
    let mut syms: HashMap<&str, (u64, u64)> = HashMap::new();
    const WANTED: [&str; 5] = ["_PyRuntime", "_PyEval_EvalFrameDefault", "PyCode_Type", "Py_Version", "_Py_NegativeRefcount"];
    for s in obj.dynamic_symbols().chain(obj.symbols()) {
        if let Ok(name) = s.name() {
            if WANTED.contains(&name) && s.address() != 0 {
                syms.entry(name).or_insert((s.address(), s.size()));
            }
        }
    }
    let runtime = Svma(syms.get("_PyRuntime")?.0);
    let eval = syms.get("_PyEval_EvalFrameDefault").map(|&(a, n)| Svma(a)..Svma(a + n.max(1)));
    let code_type = syms.get("PyCode_Type").map(|&(a, _)| Svma(a));
    let rodata = obj.section_by_name(".rodata").and_then(|s| s.data().ok()).unwrap_or_default();
    let minor = cache_tag_minor(rodata).or_else(|| cache_tag_minor(file.bytes()));
    let py_version = syms
        .get("Py_Version")
        .and_then(|&(a, _)| svma_bytes(file, Svma(a), 8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes);
    let block = svma_bytes(file, runtime, offsets::DEBUG_OFFSETS_BYTES)
        .or_else(|| svma_bytes(file, runtime, offsets::DEBUG_OFFSETS_BYTES / 2));
    let facts = BinaryFacts {
        minor,
        named_minor: name_minor(&file.origin.path),
        has_eval: eval.is_some(),
        debug_build: syms.contains_key("_Py_NegativeRefcount"),
        py_version,
        debug_offsets: block,
    };
    let (version, offsets) = decide(&facts);
    let offsets = offsets.and_then(|o| o.check().map(|()| Arc::new(o)));
    Some(CpythonBinary {
        version,
        minor: minor.unwrap_or(0),
        runtime,
        eval: eval.unwrap_or(Svma(0)..Svma(0)),
        code_type,
        offsets,
    })
}

/// What a binary says about the CPython in it, for [`decide`].
struct BinaryFacts<'a> {
    /// From the `cpython-3XY` cache tag.
    minor: Option<u32>,
    /// From the file name (`python3.11`, `libpython3.11.so`).
    named_minor: Option<u32>,
    has_eval: bool,
    debug_build: bool,
    /// `Py_Version` (3.11+).
    py_version: Option<u64>,
    /// The file's bytes at `_PyRuntime` (its `_Py_DebugOffsets`, 3.13+).
    debug_offsets: Option<&'a [u8]>,
}

/// The version to name, and the layout or why there is none.
fn decide(f: &BinaryFacts<'_>) -> (String, Result<Offsets, String>) {
    let mut version = f.minor.map_or_else(|| "3.?".to_string(), |m| format!("3.{m}"));
    if let Some(hex) = f.py_version {
        version = version_of_hex(hex);
    }
    let Some(minor) = f.minor else { return (version, Err("no cpython-3XY cache tag in the binary".into())) };
    let refuse = |why: String| Err(why);
    let offsets = if !f.has_eval {
        refuse("no _PyEval_EvalFrameDefault symbol".into())
    } else if let Some(n) = f.named_minor.filter(|&n| n != minor) {
        refuse(format!("its name says 3.{n}, its cache tag 3.{minor}"))
    } else if f.debug_build {
        refuse("a debug build (object headers differ)".into())
    } else if !(8..=14).contains(&minor) {
        refuse("a version we do not support (3.8 to 3.14 are)".into())
    } else if minor < 13 {
        offsets::table(minor).ok_or_else(|| "a version without a layout table".to_string())
    } else {
        match f.debug_offsets.and_then(DebugOffsets::parse) {
            None => refuse("no _Py_DebugOffsets at _PyRuntime".into()),
            Some(d) => {
                version = version_of_hex(d.version_hex);
                match (d.free_threaded, d.offsets) {
                    (true, _) => refuse("a free-threaded build (its objects' layout differs)".into()),
                    (false, None) => refuse("a _Py_DebugOffsets layout we do not know (3.13 and 3.14 are)".into()),
                    (false, Some(o)) if o.minor != minor => refuse(format!("_Py_DebugOffsets says 3.{}", o.minor)),
                    (false, Some(o)) => Ok(o),
                }
            }
        }
    };
    (version, offsets)
}

/// "3.11.2", "3.13.0rc1" from PY_VERSION_HEX.
pub fn version_of_hex(hex: u64) -> String {
    let (major, minor, micro) = ((hex >> 24) & 0xff, (hex >> 16) & 0xff, (hex >> 8) & 0xff);
    let level = match (hex >> 4) & 0xf {
        0xa => "a",
        0xb => "b",
        0xc => "rc",
        _ => "",
    };
    let serial = hex & 0xf;
    if level.is_empty() {
        format!("{major}.{minor}.{micro}")
    } else {
        format!("{major}.{minor}.{micro}{level}{serial}")
    }
}

/// What the detector concluded for one process.
#[derive(Debug, Clone)]
pub enum Detected {
    NotPython,
    /// CPython whose frames we do not read: the version and why.
    Unsupported { version: String, why: String },
    Python(Arc<Interpreter>),
}

/// Recognizes the CPython of processes, caching what each binary says.
#[derive(Default)]
pub struct Detector {
    binaries: HashMap<Arc<str>, Option<Arc<CpythonBinary>>>,
    /// Versions already named in a log line, so that each is logged once.
    logged: std::collections::HashSet<String>,
}

const MAX_BINARIES: usize = 4096;

impl Detector {
    pub fn detect(&mut self, process: &Process) -> Detected {
        for m in &process.mappings {
            let Some(file) = &m.file else { continue };
            // Only files that can be a CPython are searched for its symbols.
            if !m.path.rsplit('/').next().is_some_and(|b| b.contains("python")) {
                continue;
            }
            if self.binaries.len() >= MAX_BINARIES {
                self.binaries.clear();
            }
            let bin = self.binaries.entry(file.cache_key.clone()).or_insert_with(|| inspect_binary(file).map(Arc::new)).clone();
            let Some(bin) = bin else { continue };
            return match &bin.offsets {
                Ok(offsets) => Detected::Python(Arc::new(Interpreter {
                    version: bin.version.clone(),
                    runtime: m.bias.avma(bin.runtime),
                    eval: m.bias.avma(bin.eval.start)..m.bias.avma(bin.eval.end),
                    code_type: bin.code_type.map(|t| m.bias.avma(t)),
                    offsets: offsets.clone(),
                })),
                Err(why) => {
                    if self.logged.insert(format!("{}: {why}", bin.version)) {
                        log::warn!(
                            "CPython {} (pid {}, {}): {why}: its samples get native frames only",
                            bin.version,
                            process.pid,
                            m.path
                        );
                    }
                    Detected::Unsupported { version: bin.version.clone(), why: why.clone() }
                }
            };
        }
        Detected::NotPython
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_tags_names_and_hex() {
        assert_eq!(cache_tag_minor(b"x\0cpython-311\0y\0cpython-311\0"), Some(11));
        assert_eq!(cache_tag_minor(b"x\0cpython-39\0"), Some(9));
        assert_eq!(cache_tag_minor(b"x\0cpython-39\0cpython-310\0"), None, "two tags disagree");
        assert_eq!(cache_tag_minor(b"xcpython-39\0"), None, "not a whole string");
        assert_eq!(cache_tag_minor(b"cpython-39\0"), Some(9), "at the start of the data");
        assert_eq!(cache_tag_minor(b"\xff\xff\xffcpython-311\0memo"), Some(11), "after a table (Debian's libpython)");
        assert_eq!(name_minor("/usr/bin/python3.11"), Some(11));
        assert_eq!(name_minor("/opt/lib/libpython3.9.so.1.0"), Some(9));
        assert_eq!(name_minor("/usr/bin/python3"), None);
        assert_eq!(version_of_hex(0x030b02f0), "3.11.2");
        assert_eq!(version_of_hex(0x030d00c1), "3.13.0rc1");
    }

    fn debug_block(version_hex: u64, free_threaded: bool) -> Vec<u8> {
        let mut b = offsets::DEBUG_COOKIE.to_vec();
        b.extend(version_hex.to_ne_bytes());
        b.extend(u64::from(free_threaded).to_ne_bytes());
        // Every field word: its own position times 8, so that each parsed offset says
        // which word it came from; the frame fields small enough to fit a frame block.
        for i in 2..200u64 {
            b.extend((if (28..=35).contains(&i) { 8 * (i - 26) } else { 8 * i }).to_ne_bytes());
        }
        b
    }

    fn facts(minor: Option<u32>) -> BinaryFacts<'static> {
        BinaryFacts { minor, named_minor: minor, has_eval: true, debug_build: false, py_version: None, debug_offsets: None }
    }

    #[test]
    fn decides_versions_and_refuses_what_it_cannot_read() {
        let (v, o) = decide(&facts(Some(11)));
        assert_eq!(v, "3.11");
        assert_eq!(o.map(|o| o.minor), Ok(11));
        let (v, o) = decide(&BinaryFacts { py_version: Some(0x030b07f0), ..facts(Some(11)) });
        assert_eq!((v.as_str(), o.is_ok()), ("3.11.7", true));
        let refused = |f: BinaryFacts<'_>| decide(&f).1.err().unwrap_or_default();
        assert!(refused(facts(Some(7))).contains("version we do not support"));
        assert!(refused(facts(Some(99))).contains("version we do not support"));
        assert!(refused(facts(None)).contains("cache tag"));
        assert!(refused(BinaryFacts { debug_build: true, ..facts(Some(12)) }).contains("debug build"));
        assert!(refused(BinaryFacts { named_minor: Some(12), ..facts(Some(11)) }).contains("name says 3.12"));
        assert!(refused(BinaryFacts { has_eval: false, ..facts(Some(11)) }).contains("_PyEval_EvalFrameDefault"));
        assert!(refused(facts(Some(13))).contains("no _Py_DebugOffsets"));
        let ft = debug_block(0x030d00f0, true);
        let (v, o) = decide(&BinaryFacts { debug_offsets: Some(&ft), ..facts(Some(13)) });
        assert_eq!(v, "3.13.0");
        assert!(o.err().unwrap_or_default().contains("free-threaded"));
        let ok = debug_block(0x030e00f0, false);
        let (v, o) = decide(&BinaryFacts { debug_offsets: Some(&ok), ..facts(Some(14)) });
        assert_eq!(v, "3.14.0");
        let o = o.expect("3.14's layout");
        // 3.14 positions: thread_state.next is word 23 (byte 192), code_object.filename word
        // 39 (byte 320), unicode_object.state word 77 (byte 624); f_executable is tagged.
        assert_eq!((o.tstate_next, o.code_filename, o.unicode_state), (8 * 23, 8 * 39, 8 * 77));
        assert_eq!(o.code_tag_bits, 3);
        let mismatch = debug_block(0x030e00f0, false);
        assert!(refused(BinaryFacts { debug_offsets: Some(&mismatch), ..facts(Some(13)) }).contains("says 3.14"));
    }

    fn interp(o: Offsets) -> Interpreter {
        Interpreter { version: "3.x".into(), runtime: Avma(0), eval: Avma(0)..Avma(1), code_type: None, offsets: Arc::new(o) }
    }

    #[test]
    fn decodes_shims_entries_and_instructions() {
        use merge::{NO_INSTR, PY_ENTRY};
        let entry = |byte: u8, field: u64| (u64::from(byte) << 56) | field;
        // 3.12: a leaf, its caller (the entry frame of its eval call), a shim (owner 3).
        let i312 = interp(offsets::table(12).expect("3.12"));
        let adaptive = 192;
        let raw = [
            RawPyFrame { code: 0x1000, instr: entry(0, 0x1000 + adaptive + 10) },
            RawPyFrame { code: 0x2000, instr: entry(0, 0x2000 + adaptive - 2) },
            RawPyFrame { code: 0x9000, instr: entry(3, 0) },
            RawPyFrame { code: 0x3000, instr: entry(0, 0x3000 + adaptive) },
        ];
        let mut out = Vec::new();
        i312.decode(raw.into_iter(), &mut out);
        assert_eq!(out.len(), 3, "the shim is not a Python frame");
        assert_eq!((out[0].instr, out[0].flags), (5, 0));
        assert_eq!((out[1].instr, out[1].flags), (NO_INSTR, PY_ENTRY), "before its first instruction; entry");
        assert_eq!((out[2].code, out[2].instr), (0x3000, 0));
        // 3.11: is_entry says it; 3.9: every frame is an entry, f_lasti an int (-1: none yet).
        let i311 = interp(offsets::table(11).expect("3.11"));
        i311.decode([RawPyFrame { code: 0x10, instr: entry(1, 0x10 + 184 + 4) }].into_iter(), &mut out);
        assert_eq!((out[0].instr, out[0].flags), (2, PY_ENTRY));
        let i39 = interp(offsets::table(9).expect("3.9"));
        i39.decode([RawPyFrame { code: 0x10, instr: 0xffff_ffff }, RawPyFrame { code: 0x20, instr: 42 }].into_iter(), &mut out);
        assert_eq!((out[0].instr, out[0].flags, out[1].instr), (NO_INSTR, PY_ENTRY, 42));
        // 3.14: the code pointer's tag bits go.
        let ok = debug_block(0x030e00f0, false);
        let o314 = decide(&BinaryFacts { debug_offsets: Some(&ok), ..facts(Some(14)) }).1.expect("3.14");
        interp(o314).decode([RawPyFrame { code: 0x4001, instr: 0 }].into_iter(), &mut out);
        assert_eq!(out[0].code, 0x4000);
    }
}
