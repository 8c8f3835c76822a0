//! Evaluates one CFI row: the caller's registers from the callee's, any register, any rule,
//! DWARF expressions included (gimli's evaluator, fed registers and stack memory).
//!
//! This is why the walk is not framehop's: framehop knows rip, rsp and rbp only, so a CFA
//! held in a scratch register (OpenSSL's `bn_mul_mont`: CFA = rax + 8), a CFA expression
//! (`*(rsp + 8 * r9) + 8`), a return address in a register (glibc's `__vfork`: rdi) or a
//! signal frame (every register restored from the `ucontext` by expressions) stopped it, and
//! its fallback to frame pointers then made up the rest of the stack.
//!
//! Input: a [`Row`], the callee's [`Regs`], a stack reader. Output: the caller's registers
//! and return address ([`Step`]), or why not ([`StepError`]). Non-goals: finding rows.
use gimli::{EndianSlice, Evaluation, EvaluationResult, LittleEndian, Location, Value};

use super::cfi::{Cfa, Row, Rule};
use super::regs::Regs;
use crate::arch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// Stack memory at this address was needed and is not in the snapshot.
    Memory(u64),
    /// A rule needs a register the callee did not preserve (or the sample lacks).
    LostRegister,
    /// The CFI cannot be evaluated (a malformed expression, an unsupported operation).
    BadCfi,
}

/// The caller's frame.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    pub regs: Regs,
    /// The return address; `None` when the CFI says the callee is the outermost frame.
    pub ra: Option<u64>,
}

/// Applies `row` to `regs` (the callee's), reading the stack through `read`.
pub fn step(row: &Row, regs: &Regs, read: &mut dyn FnMut(u64) -> Option<u64>) -> Result<Step, StepError> {
    let cfa = match &row.cfa {
        Cfa::Reg { reg, offset } => regs.get(*reg).ok_or(StepError::LostRegister)?.wrapping_add(*offset as u64),
        Cfa::Expr(e) => evaluate(e, row.encoding, regs, read, None)?,
    };
    let mut caller = regs.across_call();
    caller.set(arch::REG_SP, cfa);
    let mut ra_rule_seen = false;
    for (reg, rule) in row.rules.iter() {
        let value = match rule {
            Rule::Undefined | Rule::Architectural => None,
            Rule::SameValue => regs.get(*reg),
            Rule::Offset(n) => Some(read_word(read, cfa.wrapping_add(*n as u64))?),
            Rule::ValOffset(n) => Some(cfa.wrapping_add(*n as u64)),
            Rule::Register(r) => regs.get(*r),
            Rule::Expr(e) => {
                let at = evaluate(e, row.encoding, regs, read, Some(cfa))?;
                Some(read_word(read, at)?)
            }
            Rule::ValExpr(e) => Some(evaluate(e, row.encoding, regs, read, Some(cfa))?),
            Rule::Constant(c) => Some(*c),
        };
        if *reg == row.ra_column {
            ra_rule_seen = true;
        }
        match value {
            Some(v) => caller.set(*reg, v),
            None => caller.forget(*reg),
        }
    }
    let ra = if ra_rule_seen {
        match row.rule(row.ra_column) {
            Some(Rule::Undefined) => None,
            _ => Some(caller.get(row.ra_column).ok_or(StepError::LostRegister)?),
        }
    } else if arch::RA_ON_STACK {
        // No rule for the return address column at all: no CFI producer emits this for
        // a frame that has a caller; the psABI's convention for the outermost frame.
        None
    } else {
        // aarch64: the return address is still in the link register (a leaf function).
        Some(regs.get(row.ra_column).ok_or(StepError::LostRegister)?)
    };
    if let Some(ra) = ra {
        let ip = arch::strip_return_address(ra);
        caller.set(arch::REG_IP, ip);
    }
    Ok(Step { regs: caller, ra: ra.map(arch::strip_return_address) })
}

fn read_word(read: &mut dyn FnMut(u64) -> Option<u64>, addr: u64) -> Result<u64, StepError> {
    read(addr).ok_or(StepError::Memory(addr))
}

/// A DWARF expression's value: registers from `regs`, memory from `read`; `initial` is
/// pushed first (the CFA, for register rules).
fn evaluate(
    bytes: &[u8],
    encoding: gimli::Encoding,
    regs: &Regs,
    read: &mut dyn FnMut(u64) -> Option<u64>,
    initial: Option<u64>,
) -> Result<u64, StepError> {
    let bad = |_| StepError::BadCfi;
    let mut eval = Evaluation::new(EndianSlice::new(bytes, LittleEndian), encoding);
    if let Some(v) = initial {
        eval.set_initial_value(v);
    }
    let mut state = eval.evaluate().map_err(bad)?;
    // Expressions in CFI are short; a bound keeps a hostile one from spinning.
    for _ in 0..64 {
        state = match state {
            EvaluationResult::Complete => {
                let pieces = eval.result();
                return match pieces.first().map(|p| &p.location) {
                    Some(Location::Address { address }) => Ok(*address),
                    Some(Location::Value { value }) => value.to_u64(u64::MAX).map_err(bad),
                    Some(Location::Register { register }) => regs.get(register.0).ok_or(StepError::LostRegister),
                    _ => Err(StepError::BadCfi),
                };
            }
            EvaluationResult::RequiresRegister { register, .. } => {
                let v = regs.get(register.0).ok_or(StepError::LostRegister)?;
                eval.resume_with_register(Value::Generic(v)).map_err(bad)?
            }
            EvaluationResult::RequiresMemory { address, size, .. } => {
                let word = read_word(read, address)?;
                let v = if size >= 8 { word } else { word & ((1u64 << (u32::from(size) * 8)) - 1) };
                eval.resume_with_memory(Value::Generic(v)).map_err(bad)?
            }
            _ => return Err(StepError::BadCfi),
        };
    }
    Err(StepError::BadCfi)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::arch::UserRegs;

    const ENC: gimli::Encoding = gimli::Encoding { address_size: 8, format: gimli::Format::Dwarf32, version: 1 };

    fn row(cfa: Cfa, rules: Vec<(u16, Rule)>) -> Row {
        Row { cfa, rules: rules.into_boxed_slice(), ra_column: 16, signal: false, encoding: ENC }
    }

    /// A stack of words from `base`.
    fn stack(base: u64, words: &[u64]) -> impl FnMut(u64) -> Option<u64> + '_ {
        move |a| {
            let i = a.checked_sub(base)? / 8;
            (a % 8 == 0).then(|| words.get(i as usize).copied()).flatten()
        }
    }

    fn regs(pairs: &[(u16, u64)]) -> Regs {
        let mut u = UserRegs::default();
        for &(r, v) in pairs {
            u.regs[r as usize] = v;
        }
        Regs::sampled(&u)
    }

    #[test]
    fn cfa_in_a_scratch_register() {
        // OpenSSL's phase A: CFA = rax + 8, return address at CFA - 8.
        let r = row(Cfa::Reg { reg: 0, offset: 8 }, vec![(16, Rule::Offset(-8))]);
        let words = [0u64, 0x4242];
        let s = step(&r, &regs(&[(0, 0x1008), (7, 0x1000), (16, 0x500)]), &mut stack(0x1000, &words)).expect("step");
        assert_eq!(s.ra, Some(0x4242));
        assert_eq!(s.regs.sp(), 0x1010);
        assert_eq!(s.regs.get(0), None, "rax is clobbered across the call");
    }

    #[test]
    fn cfa_expression_reading_memory_and_registers() {
        // *(rsp + 8 * r9) + 8: DW_OP_breg7 0; DW_OP_breg9 0; DW_OP_lit8; DW_OP_mul; DW_OP_plus;
        // DW_OP_deref; DW_OP_plus_uconst 8.
        let e: Box<[u8]> = Box::new([0x77, 0x00, 0x79, 0x00, 0x38, 0x1e, 0x22, 0x06, 0x23, 0x08]);
        let r = row(Cfa::Expr(e), vec![(16, Rule::Offset(-8))]);
        // rsp = 0x1000, r9 = 2: the saved sp is at 0x1010 and holds 0x1020; CFA = 0x1028.
        let words = [0u64, 0, 0x1020, 0, 0x7777];
        let s = step(&r, &regs(&[(7, 0x1000), (9, 2)]), &mut stack(0x1000, &words)).expect("step");
        assert_eq!(s.regs.sp(), 0x1028);
        assert_eq!(s.ra, Some(0x7777));
    }

    #[test]
    fn return_address_in_a_register_and_end_of_stack() {
        // __vfork after its syscall: CFA = rsp, rip in rdi.
        let r = row(Cfa::Reg { reg: 7, offset: 0 }, vec![(16, Rule::Register(5))]);
        let s = step(&r, &regs(&[(7, 0x1000), (5, 0xabc)]), &mut stack(0x1000, &[])).expect("step");
        assert_eq!(s.ra, Some(0xabc));
        let lost = step(&r, &regs(&[(7, 0x1000)]).across_call(), &mut stack(0x1000, &[]));
        assert_eq!(lost.map(|s| s.ra), Err(StepError::LostRegister), "rdi of a caller frame is unknown");
        // _start: the return address is undefined.
        let end = row(Cfa::Reg { reg: 7, offset: 8 }, vec![(16, Rule::Undefined)]);
        assert_eq!(step(&end, &regs(&[(7, 0x1000)]), &mut stack(0x1000, &[])).expect("step").ra, None);
    }

    #[test]
    fn memory_outside_the_snapshot_is_reported() {
        let r = row(Cfa::Reg { reg: 7, offset: 0x100 }, vec![(16, Rule::Offset(-8))]);
        assert_eq!(step(&r, &regs(&[(7, 0x1000)]), &mut stack(0x1000, &[1, 2])).map(|s| s.ra), Err(StepError::Memory(0x10f8)));
    }
}
