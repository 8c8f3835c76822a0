//! Code objects read from a CPython process's memory: what names a Python frame.
//!
//! Input: a process, its interpreter's [`Offsets`], and the address of a code object taken
//! from a frame by the sampler. Output: a [`Code`]: qualified name (`co_qualname` 3.11+,
//! else `co_name`), file name as the code object holds it, first line, and the parsed line
//! table, so that an instruction offset gives the line being executed. [`CodeCache`] reads
//! each code object once per process generation, bounded in entries, and re-checks an
//! entry that has not been confirmed for a while (a freed code object's address may be
//! reused by another). Non-goals: reading frames (the sampler does, at sample time).
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::lines::LineTable;
use super::memory::{u32_at, u64_at, ProcessMemory};
use super::offsets::Offsets;
use crate::addr::Avma;

/// Longest name or file name kept (characters beyond are dropped).
const MAX_STRING_CHARS: u64 = 1024;
/// Largest line table read.
const MAX_LINETABLE_BYTES: u64 = 64 * 1024;
/// An entry older than this is re-checked (one small read) before it is used again.
const RECHECK_AFTER: Duration = Duration::from_secs(10);
/// Code objects remembered per process, and in all.
const MAX_PER_PROCESS: usize = 16_384;
const MAX_TOTAL: usize = 65_536;

#[derive(Debug)]
pub struct Code {
    pub qualname: Arc<str>,
    pub filename: Arc<str>,
    pub first_line: u32,
    pub lines: LineTable,
    /// The header words re-read to confirm the address still holds this code object.
    fingerprint: [u64; 2],
}

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("unreadable: {0}")]
    Read(#[from] io::Error),
    #[error("not a code object")]
    NotCode,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

fn header_len(o: &Offsets) -> usize {
    let fields = [o.code_filename, o.code_name, o.code_qualname.unwrap_or(0), o.code_firstlineno, o.code_linetable];
    usize::try_from(fields.iter().max().copied().unwrap_or(0) + 8).unwrap_or(256)
}

/// Reads the code object at `addr`. `code_type`: `PyCode_Type`'s address, when known: a
/// pointer whose type is another is not a code object.
pub fn read_code(mem: &ProcessMemory, o: &Offsets, addr: Avma, code_type: Option<Avma>) -> Result<Code, CodeError> {
    let head = mem.read(addr, header_len(o))?;
    let word = |off: u64| u64_at(&head, off as usize).ok_or(CodeError::Malformed("short header"));
    if let Some(t) = code_type {
        if word(8)? != t.0 {
            return Err(CodeError::NotCode);
        }
    }
    let filename_ptr = word(o.code_filename)?;
    let name_ptr = word(o.code_qualname.unwrap_or(o.code_name))?;
    let first_line = u32_at(&head, o.code_firstlineno as usize).ok_or(CodeError::Malformed("short header"))?;
    let table_ptr = word(o.code_linetable)?;
    let filename = read_str(mem, o, Avma(filename_ptr))?;
    let qualname = read_str(mem, o, Avma(name_ptr))?;
    let table = read_bytes(mem, o, Avma(table_ptr))?;
    Ok(Code {
        lines: LineTable::parse(o.line_format, &table, first_line),
        qualname: Arc::from(qualname),
        filename: Arc::from(filename),
        first_line,
        fingerprint: [filename_ptr, name_ptr],
    })
}

/// A `str` object's text: compact strings only (what code objects hold).
pub fn read_str(mem: &ProcessMemory, o: &Offsets, addr: Avma) -> Result<String, CodeError> {
    let head = mem.read(addr, o.unicode_compact_size as usize)?;
    let length = u64_at(&head, o.unicode_length as usize).ok_or(CodeError::Malformed("str"))?;
    let state = u32_at(&head, o.unicode_state as usize).ok_or(CodeError::Malformed("str"))?;
    // state: interned:2, kind:3, compact:1, ascii:1 (3.8 to 3.13).
    let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1 == 1, (state >> 6) & 1 == 1);
    if !compact || !matches!(kind, 1 | 2 | 4) {
        return Err(CodeError::Malformed("not a compact str"));
    }
    let chars = length.min(MAX_STRING_CHARS);
    let data = if ascii { o.unicode_ascii_size } else { o.unicode_compact_size };
    let raw = mem.read(Avma(addr.0 + data), (chars * u64::from(kind)) as usize)?;
    let text = match kind {
        1 => raw.iter().map(|&b| char::from(b)).collect(),
        2 => raw.chunks_exact(2).map(|c| char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]]))).unwrap_or('\u{fffd}')).collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}'))
            .collect(),
    };
    Ok(text)
}

/// A `bytes` object's contents, up to `MAX_LINETABLE_BYTES`.
fn read_bytes(mem: &ProcessMemory, o: &Offsets, addr: Avma) -> Result<Vec<u8>, CodeError> {
    let size = mem.u64(Avma(addr.0 + o.bytes_size))?;
    if size > MAX_LINETABLE_BYTES {
        return Err(CodeError::Malformed("line table too large"));
    }
    Ok(mem.read(Avma(addr.0 + o.bytes_sval), size as usize)?)
}

struct Entry {
    code: Arc<Code>,
    checked: Instant,
}

impl Code {
    /// Heap bytes held, approximately (strings, line table, the entry itself).
    pub fn heap_bytes(&self) -> usize {
        self.qualname.len() + self.filename.len() + self.lines.heap_bytes() + std::mem::size_of::<Code>() + 64
    }
}

/// Code objects by (pid, generation, address).
#[derive(Default)]
pub struct CodeCache {
    per_process: HashMap<u32, (u64, HashMap<u64, Entry>)>,
    total: usize,
    bytes: usize,
}

impl CodeCache {
    /// The code object at `addr` in process `pid` (of `generation`), read on first sight.
    pub fn get(
        &mut self,
        pid: u32,
        generation: u64,
        o: &Offsets,
        addr: Avma,
        code_type: Option<Avma>,
    ) -> Result<Arc<Code>, CodeError> {
        let mem = ProcessMemory::new(pid);
        let (gen, codes) = self.per_process.entry(pid).or_insert_with(|| (generation, HashMap::new()));
        if *gen != generation {
            self.total -= codes.len();
            self.bytes -= codes.values().map(|e| e.code.heap_bytes()).sum::<usize>();
            codes.clear();
            *gen = generation;
        }
        if let Some(e) = codes.get_mut(&addr.0) {
            if e.checked.elapsed() < RECHECK_AFTER {
                return Ok(e.code.clone());
            }
            // Still the same object? Its file and name pointers say so.
            let fields = [o.code_filename, o.code_qualname.unwrap_or(o.code_name)];
            let now: Option<Vec<u64>> = fields.iter().map(|&f| mem.u64(Avma(addr.0 + f)).ok()).collect();
            if now.as_deref() == Some(&e.code.fingerprint[..]) {
                e.checked = Instant::now();
                return Ok(e.code.clone());
            }
            if let Some(old) = codes.remove(&addr.0) {
                self.total -= 1;
                self.bytes -= old.code.heap_bytes();
            }
        }
        let code = Arc::new(read_code(&mem, o, addr, code_type)?);
        if codes.len() >= MAX_PER_PROCESS {
            self.total -= codes.len();
            self.bytes -= codes.values().map(|e| e.code.heap_bytes()).sum::<usize>();
            codes.clear();
        }
        self.bytes += code.heap_bytes();
        codes.insert(addr.0, Entry { code: code.clone(), checked: Instant::now() });
        self.total += 1;
        if self.total > MAX_TOTAL {
            self.per_process.clear();
            self.total = 0;
            self.bytes = 0;
        }
        Ok(code)
    }

    /// Forgets processes for which `alive` is false.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        let (total, bytes) = (&mut self.total, &mut self.bytes);
        self.per_process.retain(|pid, (_, codes)| {
            let keep = alive(*pid);
            if !keep {
                *total -= codes.len();
                *bytes -= codes.values().map(|e| e.code.heap_bytes()).sum::<usize>();
            }
            keep
        });
    }

    /// Heap bytes held, approximately.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}
