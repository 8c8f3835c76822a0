//! The memory budget: how much resident memory the profiler may hold, how it is divided
//! between the caches that grow with what the machine runs, and when they are shed.
//!
//! Input: the operator's budget in bytes (`--memory-budget`, default [`DEFAULT_BUDGET`]) and
//! the process's resident size, read from `/proc/self/statm` at each period's end. Output:
//! the byte bounds of the caches that scale with the machine's binaries (the kept symbol
//! parses, what parses hold at once, and the resident size a new parse must leave: a parse
//! that would not fit evicts kept ones, then is made from the symbol tables only; see
//! `symbolize::elf::Parses`) and the decision to shed: when the resident size is
//! over [`MemoryBudget::shed_above`] at a period's end, every cache that can be rebuilt is
//! dropped (parses, symbol results, unwind tables, files no live process maps, the pages of
//! mapped files), counted in `memory_sheds`; the next period rebuilds what it needs.
//!
//! Why both bounds and a measured check: the bounds are estimates from section sizes (see
//! `symbolize::elf::parse_cost`), and what the estimates miss (allocator fragmentation,
//! pages of mapped files, the interpreter's own heap) only the resident size shows. Why only
//! at a period's end: shedding is cheap to do and costly to undo (the next period parses
//! again), so it is decided once per period, before the symbolization burst that is the
//! period's peak. Non-goals: the upload queue (bounded in bytes by the exporters, in
//! Python, from the same budget) and the ring buffer (sized from the rate at start).
use std::time::Duration;

/// The default budget: fits the Kubernetes manifests' 256 MiB limit with room for the
/// upload queue's worst case, and holds a build host's load (benches/soak_build.py).
pub const DEFAULT_BUDGET: u64 = 128 << 20;
/// The smallest budget accepted: the interpreter, the extension and the ring buffer alone
/// take ~40 MiB resident (measured: 38-45 MiB after the first period at 20 Hz).
pub const MIN_BUDGET: u64 = 64 << 20;
/// A period that ends within this many seconds of a shed does not shed again: a budget set
/// below what one period needs would otherwise parse everything again every period.
const SHED_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Bytes of resident memory the profiler keeps under.
    pub bytes: u64,
}

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget { bytes: DEFAULT_BUDGET }
    }
}

impl MemoryBudget {
    /// A budget of `bytes`, at least [`MIN_BUDGET`].
    pub fn new(bytes: u64) -> crate::Result<Self> {
        if bytes < MIN_BUDGET {
            return Err(crate::Error::InvalidArgument(format!(
                "a memory budget of {} MiB is below the minimum of {} MiB",
                bytes >> 20,
                MIN_BUDGET >> 20
            )));
        }
        Ok(MemoryBudget { bytes })
    }

    /// Bytes of symbol file parses kept between periods: 9/32 of the budget (36 MiB of the
    /// default: libc's debug file and a libpython with its DWARF).
    pub fn parse_budget(&self) -> u64 {
        self.bytes / 32 * 9
    }

    /// What symbol parses may hold at once, the kept ones and the one being made: 3/8 of
    /// the budget (48 MiB of the default). A file whose DWARF would take more on its own is
    /// named from its symbol tables only; kept parses make room for one that fits.
    pub fn parse_cap(&self) -> u64 {
        self.bytes / 8 * 3
    }

    /// The resident size a new symbol parse must leave the process under: 7/8 of the
    /// budget. The rest is for what the estimate misses and what runs meanwhile (the drain
    /// thread, the period's export): with 15/16, the Agent-outage soak peaked 3.7 MiB over
    /// the budget for less than a second.
    pub fn parse_limit(&self) -> u64 {
        self.bytes / 8 * 7
    }

    /// The resident size over which a period's end sheds the caches: 7/8 of the budget,
    /// leaving the rest for the symbolization burst that follows.
    pub fn shed_above(&self) -> u64 {
        self.bytes / 8 * 7
    }
}

/// Decides, once per period, whether to shed.
pub struct ShedPolicy {
    shed_above: u64,
    last_shed: Option<std::time::Instant>,
}

impl ShedPolicy {
    /// The threshold is the budget's, or `DDPROF_SHED_ABOVE_MB` MiB: the tests force a shed
    /// with it, whatever the interpreter's own size on the machine.
    pub fn new(budget: MemoryBudget) -> Self {
        let forced = std::env::var("DDPROF_SHED_ABOVE_MB").ok().and_then(|v| v.parse::<u64>().ok());
        ShedPolicy { shed_above: forced.map_or(budget.shed_above(), |mb| mb << 20), last_shed: None }
    }

    /// Whether a period ending with `resident` bytes resident sheds its caches now.
    pub fn should_shed(&mut self, resident: u64) -> bool {
        if resident <= self.shed_above || self.last_shed.is_some_and(|t| t.elapsed() < SHED_INTERVAL) {
            return false;
        }
        self.last_shed = Some(std::time::Instant::now());
        true
    }
}

/// Hands the allocator's free memory back to the system (glibc keeps freed blocks in each
/// thread's arena): after a parse is dropped, so that the resident size measured next shows
/// the room it made, and after each period's symbolization.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// This process's resident size in bytes (`/proc/self/statm`'s second field, in pages), or
/// None when it cannot be read.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|&p| p > 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_divides_as_documented() {
        let b = MemoryBudget::default();
        assert_eq!(b.parse_budget(), 36 << 20);
        assert_eq!(b.parse_cap(), 48 << 20);
        assert_eq!(b.shed_above(), 112 << 20);
        assert_eq!(b.parse_limit(), 112 << 20);
        assert!(MemoryBudget::new(63 << 20).is_err(), "under the minimum");
        assert_eq!(MemoryBudget::new(256 << 20).map(|b| b.parse_cap()).ok(), Some(96 << 20));
    }

    #[test]
    fn sheds_over_the_threshold_at_most_once_a_minute() {
        let mut p = ShedPolicy::new(MemoryBudget::default());
        assert!(!p.should_shed(100 << 20));
        assert!(p.should_shed(120 << 20));
        assert!(!p.should_shed(120 << 20), "a minute must pass");
    }

    #[test]
    fn reads_its_own_resident_size() {
        let r = resident_bytes().expect("statm");
        assert!(r > 1 << 20 && r < 16 << 30, "{r}");
    }
}
