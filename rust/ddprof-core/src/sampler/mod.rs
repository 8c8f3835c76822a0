//! Sampling: the BPF program and the thread that drains it.
//!
//! - `bpf`: loads the embedded sampler (`bpf/sampler.bpf.c`) with aya and attaches it to a
//!   cpu-clock perf event on every online CPU; reads its counters;
//! - `abi`: the record layout of `bpf/sampler.h`, the contract with the BPF side;
//! - `drain`: the drain thread, which turns each record into a counted stack (through
//!   `process`, `unwind` and `aggregate`) and closes periods for the symbolizer;
//! - `offcpu`: off-CPU mode's join of each switch-out's stack with its thread's weight.
//!
//! Input: a [`SamplerConfig`]. Output: records, then aggregates of them. Non-goals:
//! symbolization (the symbolizer thread, `symbolize`), anything Python.
pub mod abi;
pub mod bpf;
pub mod drain;
pub mod offcpu;

pub use bpf::{OffCpuConfig, Sampler, SamplerConfig};
