use super::*;

// Real stacks of the cgo-stack-switch case (tests/cases/cgo-stack-switch, Go 1.26.8 amd64, not PIE),
// stopped by gdb in its hot loops (tests/go_cgo.rs captures them live): the unwinder's
// walk (lookup address, CFA) and the kernel-style frame-pointer chain of the same moment.
const FUNCS: &[(u64, u64, Code)] = &[
    (0x48f420, 0x48f462, Code::Other),                                  // c_work.constprop.0
    (0x48f470, 0x48f48f, Code::Other),                                  // c_only
    (0x48f3a0, 0x48f3de, Code::Other),                                  // goWork (cgo's C wrapper)
    (0x48f3e0, 0x48f40a, Code::Other),                                  // c_driver
    (0x480580, 0x480637, Code::Switch(StackSwitch::AsmCgoCall)),        // runtime.asmcgocall (asm)
    (0x479400, 0x4794d8, Code::Go),                                     // runtime.cgocall
    (0x48f0c0, 0x48f14a, Code::Go),                                     // main._Cfunc_c_only
    (0x48f1a0, 0x48f1d5, Code::Go),                                     // main.runCOnly
    (0x48f1e0, 0x48f31a, Code::Go),                                     // main.main
    (0x44a920, 0x44ad4a, Code::Go),                                     // runtime.main
    (0x480940, 0x480947, Code::EntryPoint),                             // runtime.goexit
    (0x48f320, 0x48f35f, Code::Go),                                     // _cgoexp_..._goWork
    (0x414d40, 0x4150f0, Code::Go),                                     // runtime.cgocallbackg1
    (0x414b20, 0x414d26, Code::Go),                                     // runtime.cgocallbackg
    (0x482a00, 0x482a2f, Code::Go),                                     // its ABI wrapper
    (0x480640, 0x480781, Code::Switch(StackSwitch::CgoCallback)),       // runtime.cgocallback
    (0x47ed00, 0x47ed0d, Code::Switch(StackSwitch::SystemStackSwitch)), // runtime.systemstack_switch
    (0x4874c0, 0x487528, Code::Switch(StackSwitch::Crosscall2)),        // crosscall2
    (0x48f020, 0x48f0aa, Code::Go),                                     // main._Cfunc_c_driver
    (0x48f160, 0x48f195, Code::Go),                                     // main.runDriver
    (0x47ed20, 0x47edb5, Code::Switch(StackSwitch::SystemStack)),       // runtime.systemstack (asm)
    (0x47e4a0, 0x47e520, Code::Switch(StackSwitch::Mcall)),             // runtime.mcall (made up)
    (0x47e600, 0x47e680, Code::Switch(StackSwitch::Morestack)),         // runtime.morestack (made up)
    (0x44b000, 0x44b100, Code::Go),                                     // runtime.gcBgMarkWorker.func2 (made up)
    (0x44c000, 0x44c100, Code::Go),                                     // runtime.gcDrain (made up)
];

fn classify(a: u64) -> Code {
    FUNCS.iter().find(|f| f.0 <= a && a < f.1).map_or(Code::Other, |f| f.2)
}

fn w(frames: &[(u64, u64)]) -> Vec<WalkFrame> {
    frames.iter().map(|&(addr, cfa)| WalkFrame { addr, cfa }).collect()
}

const C_WALK: &[(u64, u64)] = &[(0x48f445, 0x7ffe17113a90), (0x48f484, 0x7ffe17113aa0), (0x4805e3, 0x7ffe17113ab0)];
const C_CHAIN: &[u64] = &[0x48f445, 0x479475, 0x48f0fa, 0x48f1bb, 0x48f2f6, 0x44abf5, 0x480941];
const CB_WALK: &[(u64, u64)] = &[
    (0x48f342, 0x2f1642585cf8),
    (0x415024, 0x2f1642585db0),
    (0x414c4f, 0x2f1642585e18),
    (0x482a28, 0x2f1642585e40),
    (0x48070b, 0x2f1642585e68),
    (0x47ed07, 0x2f1642585e78),
    (0x479474, 0x2f1642585eb0),
    (0x48f059, 0x2f1642585ed8),
    (0x48f17a, 0x2f1642585ef0),
    (0x48f304, 0x2f1642585f48),
    (0x44abf4, 0x2f1642585fe0),
    (0x480940, 0x2f1642585fe8),
];
const CB_CHAIN: &[u64] = &[0x48f342, 0x414c50, 0x482a29, 0x48070c, 0x487501, 0x30d40, 0x48f3cf];

fn frames(addrs: &[u64]) -> Vec<Joined> {
    addrs.iter().map(|&a| Joined::Frame(a)).collect()
}

fn join(walk: &[(u64, u64)], chain: &[u64], other: Option<&[(u64, u64)]>) -> (Option<JoinEnd>, Vec<Joined>) {
    let other = other.map(w);
    let mut out = vec![Joined::Frame(1)];
    let end = join_cgo(&w(walk), chain, other.as_deref(), &classify, &mut out);
    (end, out)
}

#[test]
fn go_to_c_continues_with_the_chain_past_the_c_frames() {
    // C code left rbp alone (gcc -O2 keeps no frame pointer): the chain goes from the leaf
    // straight to asmcgocall's Go caller.
    let (end, out) = join(C_WALK, C_CHAIN, None);
    assert_eq!(end, Some(JoinEnd::Complete));
    assert_eq!(out, frames(&[0x48f445, 0x48f484, 0x4805e3, 0x479474, 0x48f0f9, 0x48f1ba, 0x48f2f5, 0x44abf4, 0x480940]));
    // C code that keeps frame pointers: the chain has the C frames and asmcgocall's own
    // return address too; the join continues after it.
    let chain = [0x48f445, 0x48f485, 0x4805e4, 0x479475, 0x48f0fa, 0x48f1bb, 0x48f2f6, 0x44abf5, 0x480941];
    assert_eq!(join(C_WALK, &chain, None), (end, out.clone()));
    // C code that used rbp as a general register: no chain to follow, the stack is cut at
    // the switch (the goroutine's stack is not in the sample).
    let (end, cut) = join(C_WALK, &[0x48f445], None);
    assert_eq!(end, Some(JoinEnd::Cut(StackSwitch::AsmCgoCall)));
    assert_eq!(cut, frames(&[0x48f445, 0x48f484, 0x4805e3]));
    // A chain that leaves Go code before an entry point.
    let (end, short) = join(C_WALK, &[0x48f445, 0x479475, 0x48f0fa, 0x30d40, 0x480941], None);
    assert_eq!(end, Some(JoinEnd::ChainEnded));
    assert_eq!(short, frames(&[0x48f445, 0x48f484, 0x4805e3, 0x479474, 0x48f0f9]));
    // Junk the walk found past the switch is ignored.
    let mut past = C_WALK.to_vec();
    past.extend([(0x47ed69, 0x7ffe17113ac0), (0x480940, 0x7ffe17113ad0)]);
    assert_eq!(join(&past, C_CHAIN, None), (Some(JoinEnd::Complete), out));
}

#[test]
fn go_to_c_with_the_goroutine_window() {
    // What a copy of the goroutine's stack from g.sched.sp would give: its walk from the
    // saved pc (systemstack_switch), which the join drops.
    let goroutine = [(0x47ed07, 0x2f1642585e78), (0x479474, 0x2f1642585eb0), (0x48f0f9, 0x2f1642585ed8), (0x48f1ba, 0x2f1642585ef0), (0x48f2f5, 0x2f1642585f48), (0x44abf4, 0x2f1642585fe0), (0x480940, 0x2f1642585fe8)];
    let (end, out) = join(C_WALK, &[0x48f445], Some(&goroutine));
    assert_eq!(end, Some(JoinEnd::Complete));
    assert_eq!(out, frames(&[0x48f445, 0x48f484, 0x4805e3, 0x479474, 0x48f0f9, 0x48f1ba, 0x48f2f5, 0x44abf4, 0x480940]));
}

#[test]
fn go_to_c_to_go_marks_the_c_frames() {
    // The walk of the goroutine stack crosses cgocallback's frame to systemstack_switch
    // and on to goexit; the chain gives crosscall2 (then C's junk rbp: 0x30d40 is the
    // wrapper's argument).
    let (end, out) = join(CB_WALK, CB_CHAIN, None);
    assert_eq!(end, Some(JoinEnd::Complete));
    let mut want = frames(&[0x48f342, 0x415024, 0x414c4f, 0x482a28, 0x48070b, 0x487500]);
    want.push(Joined::Gap(Gap::CallbackCFrames));
    want.extend(frames(&[0x479474, 0x48f059, 0x48f17a, 0x48f304, 0x44abf4, 0x480940]));
    assert_eq!(out, want);
    // Without a chain: the gap alone.
    let (end, no_chain) = join(CB_WALK, &[], None);
    assert_eq!(end, Some(JoinEnd::Complete));
    let mut without = want.clone();
    without.remove(5);
    assert_eq!(no_chain, without);
    // With a window of the system stack from cgocallback's frame: its C frames fill the gap.
    let g0 = [(0x487500, 0x7ffcafe63d08), (0x48f3ce, 0x7ffcafe63d30), (0x48f3fd, 0x7ffcafe63d50), (0x4805e3, 0x7ffcafe63d60)];
    let (end, full) = join(CB_WALK, CB_CHAIN, Some(&g0));
    assert_eq!(end, Some(JoinEnd::Complete));
    let mut want = frames(&[0x48f342, 0x415024, 0x414c4f, 0x482a28, 0x48070b, 0x487500, 0x48f3ce, 0x48f3fd, 0x4805e3]);
    want.extend(frames(&[0x479474, 0x48f059, 0x48f17a, 0x48f304, 0x44abf4, 0x480940]));
    assert_eq!(full, want);
    // A walk cut short (the snapshot ended) after the callback.
    let (end, _) = join(&CB_WALK[..8], CB_CHAIN, None);
    assert_eq!(end, Some(JoinEnd::ChainEnded));
}

#[test]
fn other_switches() {
    // No switch: nothing to join.
    assert_eq!(join(&CB_WALK[6..], CB_CHAIN, None).0, None);
    assert_eq!(join(&[(0x48f445, 0), (0x48f484, 0)], C_CHAIN, None).0, None);
    // systemstack: the chain (Go code keeps frame pointers) has its return address at the
    // walk's depth; the join goes on after it.
    let walk = [(0x44c010, 0x10), (0x44b010, 0x20), (0x47ed69, 0x30)];
    let chain = [0x44c010, 0x44b011, 0x47ed6a, 0x48f305, 0x44abf5, 0x480941];
    let (end, out) = join(&walk, &chain, None);
    assert_eq!(end, Some(JoinEnd::Complete));
    assert_eq!(out, frames(&[0x44c010, 0x44b010, 0x47ed69, 0x48f304, 0x44abf4, 0x480940]));
    // mcall: the scheduler's stack is complete; morestack needs the goroutine's window.
    assert_eq!(join(&[(0x44c010, 0x10), (0x47e4b0, 0x20)], &[], None).0, Some(JoinEnd::Complete));
    let (end, out) = join(&[(0x44c010, 0x10), (0x47e610, 0x20)], &chain, None);
    assert_eq!(end, Some(JoinEnd::Cut(StackSwitch::Morestack)));
    assert_eq!(out, frames(&[0x44c010, 0x47e610]));
    let goroutine = [(0x48f304, 0x100), (0x44abf4, 0x110), (0x480940, 0x120)];
    let (end, out) = join(&[(0x44c010, 0x10), (0x47e610, 0x20)], &chain, Some(&goroutine));
    assert_eq!(end, Some(JoinEnd::Complete));
    assert_eq!(out, frames(&[0x44c010, 0x47e610, 0x48f304, 0x44abf4, 0x480940]));
}
