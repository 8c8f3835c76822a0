//! Off-CPU mode's join: each switch-out's stack waits here until the weight record of the
//! same thread's switch-in (how long it stayed out) comes through the ring buffer.
//!
//! Input: stacks already unwound and interned in the period's aggregate (an id there), keyed
//! by (tid, switch-out ktime), and weight records ([`abi::OffCpuWeight`]). Output: for each
//! weight whose stack is pending, the stack and its off-CPU nanoseconds, scaled up by the
//! inverse of the sampling rate (each switch-out was recorded with that probability: the
//! sum is an unbiased estimate of the time blocked). The ring buffer is one buffer for all
//! CPUs and the BPF side stores a switch-out time only once its stack record is committed,
//! so a weight never comes before its stack; a weight without a pending stack is a lost
//! stack record (or one dropped here) and is counted by the caller.
//!
//! Bounded: at most [`MAX_PENDING`] stacks (the oldest goes first), none older than
//! [`STALE_NS`] by the records' own clock (a thread blocked longer than that loses its
//! time: its stack would otherwise be kept for ever, as a thread that exits while its
//! weight record is lost would leave it). Pending stacks outlive the period that unwound
//! them: the caller carries them into the next aggregate ([`OffCpuJoin::carry`]). When
//! sampling stops, those still waiting get the time from their switch-out to the stop
//! ([`OffCpuJoin::flush`]).
//! Non-goals: unwinding, aggregation.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::abi::OffCpuWeight;
use crate::process::ProcessInfo;

/// Stacks waiting for their weight, at most: a host with more threads blocked at once than
/// this loses the oldest ones' time (counted as stale).
pub const MAX_PENDING: usize = 16_384;
/// A stack waits at most this long (10 minutes) for its thread to switch in again.
pub const STALE_NS: u64 = 600_000_000_000;

/// A stack waiting for its weight.
#[derive(Clone, Debug)]
pub struct Pending {
    pub pid: u32,
    pub tid: u32,
    /// Where the thread switched out.
    pub cpu: u32,
    /// The stack's id in the current period's aggregate.
    pub stack: u32,
    pub comm: [u8; 16],
    pub info: Option<Arc<ProcessInfo>>,
}

pub struct OffCpuJoin {
    pending: HashMap<(u32, u64), Pending>,
    /// (ktime, tid) in arrival order, for eviction; entries already joined are skipped
    /// (and compacted away when they pile up).
    order: VecDeque<(u64, u32)>,
    /// 1 / the sampling rate.
    scale: f64,
    /// The latest switch-out time seen: the clock of staleness.
    now_ns: u64,
}

impl OffCpuJoin {
    /// `rate`: the fraction of switch-outs recorded (0 < rate <= 1).
    pub fn new(rate: f64) -> Self {
        let scale = if rate > 0.0 && rate <= 1.0 { 1.0 / rate } else { 1.0 };
        OffCpuJoin { pending: HashMap::new(), order: VecDeque::new(), scale, now_ns: 0 }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// A switch-out's stack, to wait for its weight. Returns how many pending stacks were
    /// dropped (stale, or the oldest when full).
    pub fn stack(&mut self, ktime_ns: u64, p: Pending) -> u64 {
        self.now_ns = self.now_ns.max(ktime_ns);
        let mut dropped = self.expire();
        while self.pending.len() >= MAX_PENDING {
            match self.order.pop_front() {
                Some(key) => dropped += u64::from(self.pending.remove(&(key.1, key.0)).is_some()),
                None => break,
            }
        }
        self.order.push_back((ktime_ns, p.tid));
        if self.pending.insert((p.tid, ktime_ns), p).is_some() {
            dropped += 1; // the same switch-out twice: not from the sampler
        }
        if self.order.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.order.retain(|&(k, t)| pending.contains_key(&(t, k)));
        }
        dropped
    }

    /// The stack of a weight and its off-CPU nanoseconds (scaled); `None` when no stack of
    /// that switch-out is pending.
    pub fn weight(&mut self, w: &OffCpuWeight) -> Option<(Pending, u64)> {
        let p = self.pending.remove(&(w.tid, w.ktime_ns))?;
        let ns = (w.blocked_ns as f64 * self.scale).round();
        Some((p, if ns >= u64::MAX as f64 { u64::MAX } else { ns as u64 }))
    }

    /// Sampling stopped: every stack still waiting (its thread still switched out) with the
    /// time from its switch-out to `now_ns` (CLOCK_MONOTONIC, the sampler's clock), scaled;
    /// the join is empty afterwards. Without this a thread blocked for the whole recording
    /// (a server waiting in accept) would show no off-CPU time at all.
    pub fn flush(&mut self, now_ns: u64) -> Vec<(Pending, u64)> {
        self.order.clear();
        let scale = self.scale;
        self.pending
            .drain()
            .map(|((_, ktime), p)| {
                let ns = (now_ns.saturating_sub(ktime) as f64 * scale).round();
                (p, if ns >= u64::MAX as f64 { u64::MAX } else { ns as u64 })
            })
            .collect()
    }

    /// Drops the stacks older than [`STALE_NS`] before the latest switch-out; how many.
    pub fn expire(&mut self) -> u64 {
        let mut dropped = 0;
        while let Some(&(ktime, tid)) = self.order.front() {
            if self.now_ns.saturating_sub(ktime) <= STALE_NS && self.pending.contains_key(&(tid, ktime)) {
                break;
            }
            self.order.pop_front();
            if self.now_ns.saturating_sub(ktime) > STALE_NS {
                dropped += u64::from(self.pending.remove(&(tid, ktime)).is_some());
            }
        }
        dropped
    }

    /// The stack ids of the pending stacks (each once), for carrying them to a new period.
    pub fn stacks(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.pending.values().map(|p| p.stack).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The period closed: each pending stack takes its id in the next one (`new_id`), and
    /// those it has none for (not carried) are dropped. Returns how many were dropped.
    pub fn carry(&mut self, new_id: &HashMap<u32, u32>) -> u64 {
        let before = self.pending.len();
        self.pending.retain(|_, p| match new_id.get(&p.stack) {
            Some(&id) => {
                p.stack = id;
                true
            }
            None => false,
        });
        (before - self.pending.len()) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::abi::REC_OFFCPU_WEIGHT;

    fn pending(tid: u32, stack: u32) -> Pending {
        Pending { pid: 100, tid, cpu: 0, stack, comm: [0; 16], info: None }
    }

    fn weight(tid: u32, ktime_ns: u64, blocked_ns: u64) -> OffCpuWeight {
        OffCpuWeight { kind: REC_OFFCPU_WEIGHT, cpu: 1, ktime_ns, pid: 100, tid, blocked_ns }
    }

    #[test]
    fn weights_join_their_stack_in_any_order() {
        let mut j = OffCpuJoin::new(1.0);
        assert_eq!(j.stack(1_000, pending(1, 10)), 0);
        assert_eq!(j.stack(2_000, pending(2, 20)), 0);
        assert_eq!(j.stack(3_000, pending(1, 11)), 0, "tid 1 again: another switch-out");
        // Thread 2 switches in first, then thread 1's second switch-out's weight.
        let (p, ns) = j.weight(&weight(2, 2_000, 500)).expect("joined");
        assert_eq!((p.tid, p.stack, ns), (2, 20, 500));
        assert_eq!(j.weight(&weight(1, 3_000, 7)).map(|(p, ns)| (p.stack, ns)), Some((11, 7)));
        assert_eq!(j.weight(&weight(1, 1_000, 9)).map(|(p, ns)| (p.stack, ns)), Some((10, 9)));
        // Each weight joins once; a weight whose stack never came joins nothing.
        assert!(j.weight(&weight(2, 2_000, 500)).is_none());
        assert!(j.weight(&weight(3, 4_000, 1)).is_none());
        assert!(j.is_empty());
    }

    #[test]
    fn the_rate_scales_the_time_up() {
        let mut j = OffCpuJoin::new(0.25);
        j.stack(1, pending(1, 0));
        assert_eq!(j.weight(&weight(1, 1, 1_000)).map(|(_, ns)| ns), Some(4_000));
    }

    #[test]
    fn stale_stacks_are_dropped_and_counted() {
        let mut j = OffCpuJoin::new(1.0);
        j.stack(1_000, pending(1, 1));
        j.stack(2_000, pending(2, 2));
        // Thread 2's weight came; thread 1 never switched in again.
        assert!(j.weight(&weight(2, 2_000, 5)).is_some());
        // Ten minutes later by the records' clock, a new switch-out drops thread 1's stack.
        assert_eq!(j.stack(1_000 + STALE_NS + 1, pending(3, 3)), 1);
        assert_eq!(j.len(), 1);
        assert!(j.weight(&weight(1, 1_000, 5)).is_none(), "dropped: its weight is unmatched");
        assert!(j.weight(&weight(3, 1_000 + STALE_NS + 1, 5)).is_some());
    }

    #[test]
    fn a_full_table_drops_its_oldest() {
        let mut j = OffCpuJoin::new(1.0);
        for tid in 0..MAX_PENDING as u32 {
            assert_eq!(j.stack(u64::from(tid), pending(tid, tid)), 0);
        }
        assert_eq!(j.stack(MAX_PENDING as u64, pending(1 << 20, 0)), 1);
        assert_eq!(j.len(), MAX_PENDING);
        assert!(j.weight(&weight(0, 0, 1)).is_none(), "the oldest went");
        assert!(j.weight(&weight(1, 1, 1)).is_some());
    }

    #[test]
    fn a_stop_gives_waiting_stacks_their_time_so_far() {
        let mut j = OffCpuJoin::new(0.5);
        j.stack(1_000, pending(1, 1));
        j.stack(2_000, pending(2, 2));
        assert!(j.weight(&weight(2, 2_000, 10)).is_some());
        let flushed: Vec<(u32, u64)> = j.flush(11_000).into_iter().map(|(p, ns)| (p.stack, ns)).collect();
        assert_eq!(flushed, [(1, 20_000)], "10 us out so far, at rate 0.5");
        assert!(j.is_empty());
        assert!(j.weight(&weight(1, 1_000, 5)).is_none());
    }

    #[test]
    fn pending_stacks_carry_into_the_next_period() {
        let mut j = OffCpuJoin::new(1.0);
        j.stack(1, pending(1, 5));
        j.stack(2, pending(2, 6));
        j.stack(3, pending(3, 5));
        assert_eq!(j.stacks(), [5, 6]);
        // Stack 6 could not be carried (say its frames were gone): its stack is dropped.
        assert_eq!(j.carry(&HashMap::from([(5, 0)])), 1);
        assert_eq!(j.weight(&weight(3, 3, 1)).map(|(p, _)| p.stack), Some(0));
        assert!(j.weight(&weight(2, 2, 1)).is_none());
    }
}
