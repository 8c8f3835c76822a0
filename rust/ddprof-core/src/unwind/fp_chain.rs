//! Joins a walk that stopped early with the frame-pointer chain the kernel walked for the
//! same sample (`bpf_get_stack` with `BPF_F_USER_STACK`, what `perf --call-graph fp` uses).
//!
//! Why: in Go, `runtime.systemstack` runs code on the thread's system stack whose frame
//! pointers lead back into the goroutine's stack, elsewhere in memory: the snapshot copied
//! from sp cannot follow, the kernel's chain does. Both walks follow the same frame pointers
//! up to where the CFI walk stopped (Go code has no CFI; framehop follows frame pointers
//! too), so the chain's entries after the walk's last return address are appended.
use super::Outcome;
use crate::addr::Avma;

/// Continues `addrs` (lookup addresses: the ip, then return addresses minus one) with
/// `chain` (the ip, then return addresses), up to `max_frames`. `chain_capacity` is how
/// deep the kernel walks: a chain that long may go on. `None` when the walks do not meet
/// (nothing is appended).
pub fn extend_with_fp_chain(addrs: &mut Vec<Avma>, chain: &[u64], chain_capacity: usize, max_frames: usize) -> Option<Outcome> {
    if chain.len() < 2 {
        return None;
    }
    let from = match addrs.len() {
        0 => {
            addrs.push(Avma(chain[0]));
            1
        }
        1 => 1,
        n => {
            // Both walks follow the same frame pointers, so they line up entry for entry;
            // search only when they do not (a frame framehop found by CFI that the chain
            // skipped), and then for the match whose earlier entries agree too, so that
            // recursion (the same return address many times) joins at the right depth.
            let last_return = addrs[n - 1].0.wrapping_add(1);
            if chain.get(n - 1) == Some(&last_return) {
                n
            } else {
                let agrees = |j: usize| {
                    j >= 1 && chain[j] == last_return && (n < 3 || chain[j - 1] == addrs[n - 2].0.wrapping_add(1))
                };
                (1..chain.len()).filter(|&j| agrees(j)).min_by_key(|&j| j.abs_diff(n - 1))? + 1
            }
        }
    };
    if from >= chain.len() {
        return None;
    }
    for &ret in &chain[from..] {
        if addrs.len() >= max_frames {
            return Some(Outcome::TooDeep);
        }
        addrs.push(Avma(ret.wrapping_sub(1)));
    }
    // A chain as deep as the kernel walks may go on; a shorter one reached a null frame pointer.
    Some(if chain.len() >= chain_capacity { Outcome::Truncated } else { Outcome::Complete })
}

/// How deep the kernel walks a chain: `buffer` entries, or kernel.perf_event_max_stack if
/// lower.
pub fn chain_capacity(buffer: usize) -> usize {
    static DEPTH: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let sysctl = *DEPTH.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack").ok().and_then(|s| s.trim().parse::<usize>().ok())
    });
    sysctl.map_or(buffer, |d| d.clamp(1, buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avmas(v: &[u64]) -> Vec<Avma> {
        v.iter().map(|&a| Avma(a)).collect()
    }

    #[test]
    fn continues_where_the_walk_stopped() {
        // framehop: ip, then return addresses minus one; the chain: ip, return addresses.
        let chain = [0x100, 0x201, 0x301, 0x401, 0x501];
        let ext = |addrs: &mut Vec<Avma>, chain: &[u64]| extend_with_fp_chain(addrs, chain, 127, 1024);
        let mut addrs = avmas(&[0x100, 0x200, 0x300]);
        assert_eq!(ext(&mut addrs, &chain), Some(Outcome::Complete));
        assert_eq!(addrs, avmas(&[0x100, 0x200, 0x300, 0x400, 0x500]));
        let mut only_ip = avmas(&[0x100]);
        assert_eq!(ext(&mut only_ip, &chain), Some(Outcome::Complete));
        assert_eq!(only_ip, avmas(&[0x100, 0x200, 0x300, 0x400, 0x500]));
        // Walks that do not meet, or a chain with nothing more: left alone.
        let mut other = avmas(&[0x100, 0x900]);
        assert_eq!(ext(&mut other, &chain), None);
        assert_eq!(other, avmas(&[0x100, 0x900]));
        let mut done = avmas(&[0x100, 0x200, 0x300, 0x400, 0x500]);
        assert_eq!(ext(&mut done, &chain), None);
        let mut empty = Vec::new();
        assert_eq!(ext(&mut empty, &[0x100]), None);
        // A chain as long as the kernel walks may go on; the depth cap stops the join.
        let mut full = avmas(&[0x100]);
        assert_eq!(extend_with_fp_chain(&mut full, &chain, 5, 1024), Some(Outcome::Truncated));
        let mut capped = avmas(&[0x100]);
        assert_eq!(extend_with_fp_chain(&mut capped, &chain, 127, 3), Some(Outcome::TooDeep));
        assert_eq!(capped.len(), 3);
    }

    #[test]
    fn joins_recursion_at_the_right_depth() {
        // f calls f calls f, from main: framehop stopped two frames in.
        let chain = [0x100, 0x201, 0x201, 0x201, 0x501];
        let mut addrs = avmas(&[0x100, 0x200, 0x200]);
        assert_eq!(extend_with_fp_chain(&mut addrs, &chain, 127, 1024), Some(Outcome::Complete));
        assert_eq!(addrs, avmas(&[0x100, 0x200, 0x200, 0x200, 0x500]));
        // framehop found one frame the chain skipped (a leaf before its frame pointer push):
        // the chain is joined one entry earlier than aligned.
        let chain = [0x100, 0x301, 0x401, 0x501];
        let mut addrs = avmas(&[0x100, 0x200, 0x300, 0x400]);
        assert_eq!(extend_with_fp_chain(&mut addrs, &chain, 127, 1024), Some(Outcome::Complete));
        assert_eq!(addrs, avmas(&[0x100, 0x200, 0x300, 0x400, 0x500]));
    }
}
