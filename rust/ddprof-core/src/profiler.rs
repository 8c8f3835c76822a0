//! The running profiler: the sampler, the drain thread (`sampler::drain`) and the symbolizer
//! thread, behind one handle.
//!
//! Input: a [`ProfilerConfig`]. Output: the counters at any time ([`Profiler::stats`],
//! lock-free) and, on request, a symbolized [`Snapshot`] of the period so far, optionally
//! starting a new one at the same instant. Every method takes `&self` and may be called from
//! any thread at any time: the only lock guards the command channel's sender for the time
//! of a clone, never across a wait. Non-goals: anything Python (`ddprof-py`).
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::aggregate::Snapshot;
use crate::counters::{Counters, Stats};
use crate::error::{Error, Result};
use crate::memory::MemoryBudget;
use crate::sampler::drain::{drain_loop, Command, SymJob};
use crate::sampler::{OffCpuConfig, Sampler, SamplerConfig};
use crate::symbolize::{SymbolizeMode, Symbolizer};

#[derive(Clone, Debug)]
pub struct ProfilerConfig {
    /// Samples per second on each CPU, 1 to 10000.
    pub frequency: u64,
    /// Only these processes; empty: all.
    pub pids: Vec<u32>,
    /// Bytes of user stack copied per sample: a multiple of 8, at most 64 KiB.
    pub stack_bytes: u32,
    pub symbolize: SymbolizeMode,
    /// Read CPython processes' Python frames (see `cpython`).
    pub python: bool,
    /// With `pids`: the processes they start (and theirs, whatever they exec) are sampled
    /// too, from their first instruction.
    pub follow_children: bool,
    /// Keep the samples of the idle task (the kernel's, pid 0: `swapper/N`), dropped by
    /// default as CPU time nobody spent.
    pub idle: bool,
    /// Resident memory the profiler keeps under (see `memory`).
    pub memory_budget: MemoryBudget,
    /// Off-CPU mode: the time threads spend switched out, by the stack they blocked in, as
    /// a second value of the profile (None: off).
    pub off_cpu: Option<OffCpuConfig>,
}

impl Default for ProfilerConfig {
    fn default() -> Self {
        ProfilerConfig {
            frequency: 99,
            pids: Vec::new(),
            stack_bytes: 16384,
            symbolize: SymbolizeMode::Host,
            python: true,
            follow_children: false,
            idle: false,
            memory_budget: MemoryBudget::default(),
            off_cpu: None,
        }
    }
}

pub struct Profiler {
    /// `None` once closed.
    commands: Mutex<Option<Sender<Command>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

fn symbolize_loop(rx: Receiver<SymJob>, counters: Arc<Counters>, frequency: u64, mode: SymbolizeMode, budget: MemoryBudget) {
    let mut symbolizer = Symbolizer::with_budget(mode, counters.clone(), budget);
    while let Ok(job) = rx.recv() {
        if job.shed {
            symbolizer.shed();
        }
        let snap = job.aggregate.into_snapshot(frequency, |reqs| symbolizer.resolve(reqs), || counters.stats());
        let _ = job.reply.send(snap);
        // Parsing binaries leaves large freed blocks in this thread's malloc arena; hand them
        // back so that the resident size returns to its baseline between periods.
        crate::memory::trim();
    }
}

impl Profiler {
    /// Loads and attaches the sampler, then starts draining. Errors are returned here, on
    /// the caller's thread: privileges, kernel support, bad arguments.
    pub fn start(cfg: ProfilerConfig) -> Result<Profiler> {
        raise_nofile_limit();
        let sampler = Sampler::start(&SamplerConfig {
            frequency: cfg.frequency,
            pids: cfg.pids,
            stack_bytes: cfg.stack_bytes,
            follow_children: cfg.follow_children,
            idle: cfg.idle,
            off_cpu: cfg.off_cpu,
        })?;
        let counters: Arc<Counters> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let (sym_tx, sym_rx) = mpsc::channel();
        let spawn_err = |e| Error::Io { context: "starting a profiler thread".into(), source: e };
        let c1 = counters.clone();
        let (python, budget) = (cfg.python, cfg.memory_budget);
        let off_cpu_rate = cfg.off_cpu.map(|o| o.rate);
        let drain = std::thread::Builder::new()
            .name("ddprof-drain".into())
            .spawn(move || drain_loop(sampler, rx, sym_tx, c1, python, off_cpu_rate, budget))
            .map_err(spawn_err)?;
        let c2 = counters.clone();
        let (frequency, mode) = (cfg.frequency, cfg.symbolize);
        let symbolize = std::thread::Builder::new()
            .name("ddprof-symbols".into())
            .spawn(move || symbolize_loop(sym_rx, c2, frequency, mode, budget))
            .map_err(spawn_err)?;
        Ok(Profiler { commands: Mutex::new(Some(tx)), threads: Mutex::new(vec![drain, symbolize]), counters })
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.counters.stats()
    }

    fn sender(&self) -> Result<Sender<Command>> {
        let closed = || Error::State("the profiler is closed".into());
        self.commands.lock().map_err(|_| closed())?.clone().ok_or_else(closed)
    }

    /// The period so far, symbolized; with `reset`, the next period starts now. Blocks for
    /// the symbolization.
    pub fn snapshot(&self, reset: bool) -> Result<Snapshot> {
        let stopped = || Error::State("the profiler's threads have stopped".into());
        let (reply, rx) = mpsc::channel();
        self.sender()?.send(Command::Snapshot { reset, reply }).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// Stops sampling and detaches the BPF program after a last drain. Snapshots of what was
    /// collected stay available until [`Profiler::close`].
    pub fn stop(&self) {
        if let Ok(tx) = self.sender() {
            let _ = tx.send(Command::Stop);
        }
    }

    /// Stops, ends the threads and waits for them (a snapshot being symbolized finishes
    /// first). Idempotent.
    pub fn close(&self) {
        self.stop();
        if let Ok(mut c) = self.commands.lock() {
            // Closing the channel ends the drain thread, which closes the symbolizer's.
            *c = None;
        }
        let threads = self.threads.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Profiler {
    /// Stops and lets the threads end on their own, without waiting: a thread may be
    /// logging through a caller that holds a lock of its own (the Python binding's GIL).
    /// Call [`Profiler::close`] to wait.
    fn drop(&mut self) {
        self.stop();
        if let Ok(mut c) = self.commands.lock() {
            *c = None;
        }
    }
}

/// Each cached ELF file holds a descriptor; make room beyond the usual soft limit of 1024.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain syscalls with valid pointers.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
