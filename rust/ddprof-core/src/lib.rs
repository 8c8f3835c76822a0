//! ddprofiler's core: BPF sampling, unwinding, symbolization and aggregation. Knows nothing
//! of Python; `ddprof-py` binds it.
//!
//! One folder per stage, in the order a sample goes through them:
//!
//! | stage | folder | |
//! |---|---|---|
//! | sample, drain | `sampler/` | the BPF program's loading and records; the drain thread |
//! | (per process) | `process/` | mappings, process facts (service, container) |
//! | unwind | `unwind/` | CFI walk, module tables, the frame-pointer join |
//! | (Python) | `cpython/` | interpreters, code objects, merging Python frames in |
//! | (per file) | `elf/` | open files, ids, debug files, the debug-only ELF writer |
//! | symbolize | `symbolize/` | blazesym, Go tables, kernel, perf maps (own thread) |
//! | aggregate | `aggregate/` | interned tables, the depth cap, snapshots |
//! | encode | `pprof/`, `otlp/` | a snapshot's profiles as pprof, or as one OTLP request |
//! | render | `flamegraph` | flame graph SVGs of collapsed stacks (inferno) |
//!
//! Shared vocabulary: `addr` (AVMA, SVMA, file offsets, bias), `arch` (the one place that
//! names the target architecture), `counters` (the typed counter registry), `error`.
//! `memory` (the memory budget and when caches are shed). `profiler` runs the threads. Dependencies point down the list `otlp`, `pprof`, `profiler`,
//! `sampler`, `aggregate`, `symbolize`, `cpython`, `unwind`, `process`, `elf`, then the shared
//! modules: no cycle.
pub mod addr;
pub mod aggregate;
pub mod arch;
pub mod counters;
pub mod cpython;
pub mod elf;
pub mod error;
pub mod flamegraph;
pub mod memory;
pub mod otlp;
pub mod pprof;
pub mod process;
pub mod profiler;
pub mod sampler;
pub mod symbolize;
pub mod unwind;

pub use aggregate::Snapshot;
pub use counters::{Counter, CounterKind, Counters, Stats};
pub use error::{Error, Result};
pub use profiler::{Profiler, ProfilerConfig};
pub use sampler::OffCpuConfig;
pub use symbolize::SymbolizeMode;

#[cfg(test)]
pub(crate) mod test_support {
    /// Skips a test (returns normally) with a note, or fails it when DDPROF_REQUIRE_BPF=1
    /// (CI), so that a missing capability never passes silently.
    pub fn skip_or_fail(reason: &str) {
        assert!(std::env::var("DDPROF_REQUIRE_BPF").as_deref() != Ok("1"), "{reason} (and DDPROF_REQUIRE_BPF=1 forbids skipping)");
        eprintln!("skipped: {reason}");
    }
}
