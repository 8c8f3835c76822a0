//! CPython's perf trampolines (3.12+ `-X perf`, 3.13+ `-X perf_jit`): a copy of a tiny
//! assembly function per code object, in anonymous memory, through which the eval loop is
//! entered so that `perf` can name Python functions. They have no CFI (no file: the
//! unwinder would stop there) and, in the builds without frame pointers, no frame pointer
//! either: case `python-perf-trampoline`, where perf itself stops too.
//!
//! Input: an address in anonymous executable memory of a CPython process. Output: the
//! [`KnownRule`] that unwinds it, when the bytes around it are one of the trampoline
//! shapes CPython emits (read from the process once per address, cached): x86_64
//! `sub $8,%rsp; call *%rcx; add $8,%rsp; ret` (3.12, 3.13) and `push %rbp; mov %rsp,%rbp;
//! call *%rcx; pop %rbp; ret` (the frame-pointer one, 3.14). Non-goals: jitdump's own
//! unwind records (the shapes are the same code), other JITs.
use std::collections::HashMap;

use super::memory::ProcessMemory;
use crate::addr::Avma;
use crate::arch::KnownRule;

struct Shape {
    bytes: &'static [u8],
    /// (offset of an instruction pointer in the shape, its rule); the return address of
    /// the call is looked up one byte before it (the call's last byte).
    rules: &'static [(usize, KnownRule)],
}

const fn rule(cfa_offset: u64, ra_at: u64, fp_at: Option<u64>) -> KnownRule {
    KnownRule { cfa_offset, ra_at, fp_at }
}

const SHAPES: [Shape; 2] = [
    Shape {
        // sub $0x8,%rsp; call *%rcx; add $0x8,%rsp; ret
        bytes: &[0x48, 0x83, 0xec, 0x08, 0xff, 0xd1, 0x48, 0x83, 0xc4, 0x08, 0xc3],
        rules: &[(0, rule(8, 0, None)), (4, rule(16, 8, None)), (5, rule(16, 8, None)), (6, rule(16, 8, None)), (10, rule(8, 0, None))],
    },
    Shape {
        // push %rbp; mov %rsp,%rbp; call *%rcx; pop %rbp; ret
        bytes: &[0x55, 0x48, 0x89, 0xe5, 0xff, 0xd1, 0x5d, 0xc3],
        rules: &[
            (0, rule(8, 0, None)),
            (1, rule(16, 8, Some(0))),
            (4, rule(16, 8, Some(0))),
            (5, rule(16, 8, Some(0))),
            (6, rule(16, 8, Some(0))),
            (7, rule(8, 0, None)),
        ],
    },
];

const LONGEST: usize = 11;
const MAX_CACHED: usize = 65_536;

/// The rule of `addr` when `window` (the bytes from `addr - (LONGEST - 1)` on, `2 *
/// LONGEST - 1` of them) shows it inside a trampoline.
fn rule_in(window: &[u8]) -> Option<KnownRule> {
    let here = LONGEST - 1;
    for shape in &SHAPES {
        let len = shape.bytes.len();
        for offset in 0..len {
            let Some(start) = here.checked_sub(offset) else { continue };
            if window.get(start..start + len) == Some(shape.bytes) {
                return shape.rules.iter().find(|(o, _)| *o == offset).map(|(_, r)| *r);
            }
        }
    }
    None
}

/// Trampoline rules by (pid, address), read on first need.
#[derive(Default)]
pub struct Trampolines {
    known: HashMap<(u32, u64), Option<KnownRule>>,
}

impl Trampolines {
    /// The rule of `addr` in process `pid`, or `None` when it is not in a trampoline.
    pub fn rule(&mut self, pid: u32, addr: Avma) -> Option<KnownRule> {
        if let Some(r) = self.known.get(&(pid, addr.0)) {
            return *r;
        }
        if self.known.len() >= MAX_CACHED {
            self.known.clear();
        }
        let from = Avma(addr.0.saturating_sub(LONGEST as u64 - 1));
        let r = ProcessMemory::new(pid).read(from, 2 * LONGEST - 1).ok().and_then(|w| rule_in(&w));
        self.known.insert((pid, addr.0), r);
        r
    }

    /// Whether `addr` was found to be in a trampoline (no read).
    pub fn is_trampoline(&self, pid: u32, addr: Avma) -> bool {
        matches!(self.known.get(&(pid, addr.0)), Some(Some(_)))
    }

    /// Forgets processes for which `alive` is false.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.known.retain(|(pid, _), _| alive(*pid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(code: &[u8], at: usize) -> Vec<u8> {
        // Pad so that the window of `at` exists, with bytes that match no shape.
        let mut padded = vec![0x90; LONGEST];
        padded.extend_from_slice(code);
        padded.extend(std::iter::repeat_n(0x90, LONGEST));
        let at = at + LONGEST;
        padded[at - (LONGEST - 1)..at + LONGEST].to_vec()
    }

    #[test]
    fn finds_each_shape_at_each_offset() {
        let a = SHAPES[0].bytes;
        // The return address of the call is a + 6; lookups use a + 5.
        assert_eq!(rule_in(&window(a, 5)), Some(rule(16, 8, None)));
        assert_eq!(rule_in(&window(a, 0)), Some(rule(8, 0, None)));
        assert_eq!(rule_in(&window(a, 10)), Some(rule(8, 0, None)));
        assert_eq!(rule_in(&window(a, 2)), None, "inside an instruction");
        let b = SHAPES[1].bytes;
        assert_eq!(rule_in(&window(b, 5)), Some(rule(16, 8, Some(0))));
        assert_eq!(rule_in(&window(b, 7)), Some(rule(8, 0, None)));
        // Two trampolines back to back, as the arena lays them out.
        let two: Vec<u8> = [a, &[0xcc; 5], a].concat();
        assert_eq!(rule_in(&window(&two, 16 + 5)), Some(rule(16, 8, None)));
        assert_eq!(rule_in(&window(&[0x90; 30], 10)), None);
    }

    #[test]
    fn reads_the_process() {
        let code: Vec<u8> = [&[0x90; 16][..], SHAPES[0].bytes, &[0x90; 16]].concat();
        let at = Avma(code.as_ptr() as u64 + 16 + 5);
        let mut t = Trampolines::default();
        assert_eq!(t.rule(std::process::id(), at), Some(rule(16, 8, None)));
        assert!(t.is_trampoline(std::process::id(), at));
        assert_eq!(t.rule(std::process::id(), Avma(code.as_ptr() as u64 + 2)), None);
    }
}
