use super::*;

const START: u64 = 0x1000;

/// Assembles nothing: `code` is machine code written out with its assembly beside it.
fn rule(code: &[u8], pc: u64, leaf: bool) -> Option<HeuristicRule> {
    analyze_x86_64(code, START, START + pc, leaf)
}

fn sp(n: i64, rbp: RbpRule, sure: bool) -> Option<HeuristicRule> {
    Some(HeuristicRule { cfa: CfaRule::SpOffset(n), ra_offset_from_cfa: -8, rbp, sure })
}

fn bp(n: i64, rbp: RbpRule, sure: bool) -> Option<HeuristicRule> {
    Some(HeuristicRule { cfa: CfaRule::BpOffset(n), ra_offset_from_cfa: -8, rbp, sure })
}

#[test]
fn frame_pointer_prologue_alignment_and_leave() {
    #[rustfmt::skip]
    let code = [
        0x55,                         // 0: push rbp
        0x48, 0x89, 0xe5,             // 1: mov rbp, rsp
        0x48, 0x83, 0xe4, 0xe0,       // 4: and rsp, -32
        0x48, 0x83, 0xec, 0x40,       // 8: sub rsp, 0x40
        0xe8, 0, 0, 0, 0,             // c: call (next)... as a real call below
        0xc9,                         // 11: leave
        0xc3,                         // 12: ret
    ];
    let mut code = code;
    // A call elsewhere: e8 rel32 with a target outside the function.
    code[13..17].copy_from_slice(&0x100i32.to_le_bytes());
    let saved = RbpRule::SavedAt(-16);
    assert_eq!(rule(&code, 0, true), sp(8, RbpRule::Unchanged, true));
    assert_eq!(rule(&code, 1, true), sp(16, saved, true));
    assert_eq!(rule(&code, 4, true), bp(16, saved, true));
    // After the alignment only rbp knows where the CFA is.
    assert_eq!(rule(&code, 0x8, true), bp(16, saved, true));
    assert_eq!(rule(&code, 0x11, false), bp(16, saved, true));
    assert_eq!(rule(&code, 0x12, true), sp(8, RbpRule::Unchanged, true));
    // Not after a call, not on an instruction.
    assert_eq!(rule(&code, 0x12, false), None);
    assert_eq!(rule(&code, 0x2, true), None);
}

#[test]
fn alignment_without_frame_pointer_gives_up() {
    #[rustfmt::skip]
    let code = [
        0x53,                         // 0: push rbx
        0x48, 0x83, 0xe4, 0xf0,       // 1: and rsp, -16
        0x90,                         // 5: nop
        0xc3,                         // 6: ret
    ];
    assert_eq!(rule(&code, 1, true), sp(16, RbpRule::Unchanged, true));
    assert_eq!(rule(&code, 5, true), None);
}

#[test]
fn early_return_does_not_leak_its_epilogue_into_the_code_after_it() {
    #[rustfmt::skip]
    let code = [
        0x53,                         // 0: push rbx
        0x48, 0x83, 0xec, 0x10,       // 1: sub rsp, 0x10
        0x85, 0xff,                   // 5: test edi, edi
        0x74, 0x06,                   // 7: je 0xf
        0x48, 0x83, 0xc4, 0x10,       // 9: add rsp, 0x10
        0x5b,                         // d: pop rbx
        0xc3,                         // e: ret
        0xe8, 0x00, 0x01, 0x00, 0x00, // f: call (outside)
        0xeb, 0xf3,                   // 14: jmp 0x9
    ];
    assert_eq!(rule(&code, 0xe, true), sp(8, RbpRule::Unchanged, true));
    // Linear state after `ret` would say CFA = rsp + 8; the jump says + 32.
    assert_eq!(rule(&code, 0xf, true), sp(32, RbpRule::Unchanged, true));
    assert_eq!(rule(&code, 0x14, false), sp(32, RbpRule::Unchanged, true));
}

#[test]
fn noreturn_call_before_a_jump_target_loses_to_the_jump() {
    #[rustfmt::skip]
    let code = [
        0x85, 0xff,                   // 0: test edi, edi
        0x74, 0x09,                   // 2: je 0xd
        0x50,                         // 4: push rax
        0xe8, 0x00, 0x01, 0x00, 0x00, // 5: call abort (outside; does not return)
        0x0f, 0x1f, 0x00,             // a: nop dword [rax] (padding)
        0x31, 0xc0,                   // d: xor eax, eax
        0xc3,                         // f: ret
    ];
    assert_eq!(rule(&code, 0xa, false), sp(16, RbpRule::Unchanged, true));
    // Both paths reach 0xd; the jump's state wins, marked as a guess.
    assert_eq!(rule(&code, 0xd, true), sp(8, RbpRule::Unchanged, false));
}

#[test]
fn jump_table_targets_take_the_indirect_jump_state_unsure() {
    #[rustfmt::skip]
    let code = [
        0x55,                         // 0: push rbp (as a general register)
        0x53,                         // 1: push rbx
        0xff, 0xe0,                   // 2: jmp rax (through a table)
        0xe8, 0x00, 0x01, 0x00, 0x00, // 4: call (a case; reached from the table only)
        0x5b,                         // 9: pop rbx
        0x5d,                         // a: pop rbp
        0xc3,                         // b: ret
    ];
    assert_eq!(rule(&code, 2, true), sp(24, RbpRule::SavedAt(-16), true));
    assert_eq!(rule(&code, 9, false), sp(24, RbpRule::SavedAt(-16), false));
    assert_eq!(rule(&code, 0xb, true), sp(8, RbpRule::Unchanged, false));
}

#[test]
fn alloca_without_frame_pointer_is_unknown_and_rbp_stored_with_mov_is_found() {
    #[rustfmt::skip]
    let code = [
        0x48, 0x83, 0xec, 0x18,       // 0: sub rsp, 0x18
        0x48, 0x89, 0x6c, 0x24, 0x10, // 4: mov [rsp+0x10], rbp
        0x48, 0x89, 0xfd,             // 9: mov rbp, rdi
        0x48, 0x29, 0xc4,             // c: sub rsp, rax
        0x90,                         // f: nop
        0xc3,                         // 10: ret
    ];
    assert_eq!(rule(&code, 9, true), sp(32, RbpRule::SavedAt(-16), true));
    assert_eq!(rule(&code, 0xc, true), sp(32, RbpRule::SavedAt(-16), true));
    assert_eq!(rule(&code, 0xf, true), None);
}

#[test]
fn other_architectures_have_no_analyzer() {
    // aarch64 `ret`: no analyzer yet.
    assert_eq!(analyze(183, &[0xc0, 0x03, 0x5f, 0xd6], START, START, true), None);
    assert_eq!(analyze(EM_X86_64, &[0xc3], START, START, true), sp(8, RbpRule::Unchanged, true));
}

#[test]
fn hostile_bytes_never_panic() {
    // Data, cut instructions, jumps into instructions, loops.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..300usize {
        let code: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        if let Some(f) = X86Function::analyze(&code, START) {
            for pc in 0..len as u64 {
                let _ = f.rule_at(START + pc, true);
                let _ = f.rule_at(START + pc, false);
            }
        }
    }
    assert_eq!(X86Function::analyze(&[], START).and_then(|f| f.rule_at(START, true)), None);
}
