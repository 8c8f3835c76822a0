//! ddprofiler's core: BPF sampling, unwinding, symbolization and aggregation. Knows nothing
//! of Python; `ddprof-py` binds it.
//!
//! Data flow: `sampler` (BPF, ring buffer) -> `pipeline` on the drain thread (`process`
//! registry, `unwind`, `symbolize`, `aggregate`) -> `profiler::Profiler::snapshot`.
pub mod abi;
pub mod aggregate;
pub mod debugfile;
pub mod elf;
pub mod error;
pub mod gopclntab;
pub mod kallsyms;
pub mod perfmap;
pub mod pipeline;
pub mod procinfo;
pub mod process;
pub mod profiler;
pub mod sampler;
pub mod symbolize;
pub mod unwind;

pub use aggregate::Snapshot;
pub use error::{Error, Result};
pub use profiler::Profiler;
pub use sampler::SamplerConfig;
