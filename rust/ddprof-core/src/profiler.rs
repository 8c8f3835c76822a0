//! The running profiler: the sampler, the drain thread that owns the pipeline, and the
//! symbolizer thread that turns a closed period into a [`Snapshot`].
//!
//! Input: a [`SamplerConfig`]. Output: running stats at any time and, on request, a
//! symbolized snapshot of the aggregate (optionally starting a new one). The drain thread
//! wakes when the BPF side signals ~1 MiB pending, or every 50 ms, and never symbolizes: a
//! first parse of a large binary's DWARF can take seconds, and the ring buffer would overflow
//! meanwhile.
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::aggregate::{Aggregate, Snapshot};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::sampler::{Sampler, SamplerConfig};
use crate::symbolize::Symbolizer;

const DRAIN_INTERVAL_MS: i32 = 50;

type Stats = Arc<Mutex<BTreeMap<String, u64>>>;

enum Command {
    Snapshot { reset: bool, reply: Sender<Snapshot> },
    Stop,
}

struct SymJob {
    aggregate: Aggregate,
    reply: Sender<Snapshot>,
}

pub struct Profiler {
    tx: Option<Sender<Command>>,
    threads: Vec<JoinHandle<()>>,
    stats: Stats,
    frequency: u64,
}

fn publish(stats: &Stats, sampler: Option<&Sampler>, pipeline: &Pipeline) {
    if let Ok(mut s) = stats.lock() {
        for (k, v) in pipeline.stats() {
            s.insert(k, v);
        }
        if let Some(sampler) = sampler {
            for (k, v) in sampler.counters() {
                s.insert(k.to_string(), v);
            }
        }
    }
}

fn close_period(pipeline: &mut Pipeline, reset: bool, reply: Sender<Snapshot>, sym: &Sender<SymJob>) {
    let aggregate = if reset { pipeline.aggregate.close() } else { pipeline.aggregate.clone() };
    let _ = sym.send(SymJob { aggregate, reply });
}

fn drain_loop(mut sampler: Sampler, rx: Receiver<Command>, sym: Sender<SymJob>, stats: Stats) {
    let mut pipeline = Pipeline::new();
    loop {
        sampler.wait(DRAIN_INTERVAL_MS);
        sampler.drain(|bytes| pipeline.ingest(bytes));
        for pid in pipeline.fp_chain_requests.drain(..) {
            sampler.want_fp_chain(pid);
        }
        publish(&stats, Some(&sampler), &pipeline);
        match rx.recv_timeout(Duration::ZERO) {
            Ok(Command::Snapshot { reset, reply }) => {
                sampler.drain(|bytes| pipeline.ingest(bytes));
                publish(&stats, Some(&sampler), &pipeline);
                close_period(&mut pipeline, reset, reply, &sym);
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    sampler.drain(|bytes| pipeline.ingest(bytes));
    publish(&stats, Some(&sampler), &pipeline);
    // Detach the program and free the maps now, not when the handle goes away.
    drop(sampler);
    // Keep serving snapshots of what was collected until the handle goes away.
    while let Ok(cmd) = rx.recv() {
        if let Command::Snapshot { reset, reply } = cmd {
            close_period(&mut pipeline, reset, reply, &sym);
        }
    }
}

fn symbolize_loop(rx: Receiver<SymJob>, stats: Stats, frequency: u64) {
    let mut symbolizer = Symbolizer::new();
    while let Ok(job) = rx.recv() {
        let stat_vec: Vec<(String, u64)> = stats
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        let mut snap = job.aggregate.into_snapshot(frequency, stat_vec, |reqs| symbolizer.resolve(reqs));
        snap.stats.push(("symbolize_failures".into(), symbolizer.failures));
        if let Ok(mut s) = stats.lock() {
            s.insert("symbolize_failures".into(), symbolizer.failures);
        }
        let _ = job.reply.send(snap);
        // Parsing binaries leaves large freed blocks in this thread's malloc arena; hand them
        // back so that the resident size returns to its baseline between periods.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only releases free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

impl Profiler {
    /// Loads and attaches the sampler, then starts draining. Errors are returned here, on
    /// the caller's thread: privileges, kernel support, bad arguments.
    pub fn start(cfg: SamplerConfig) -> Result<Profiler> {
        let frequency = cfg.frequency;
        raise_nofile_limit();
        let sampler = Sampler::start(&cfg)?;
        let (tx, rx) = mpsc::channel();
        let (sym_tx, sym_rx) = mpsc::channel();
        let stats: Stats = Arc::new(Mutex::new(BTreeMap::new()));
        let spawn_err = |e| Error::Io { context: "starting a profiler thread".into(), source: e };
        let s1 = stats.clone();
        let drain = std::thread::Builder::new()
            .name("ddprof-drain".into())
            .spawn(move || drain_loop(sampler, rx, sym_tx, s1))
            .map_err(spawn_err)?;
        let s2 = stats.clone();
        let symbolize = std::thread::Builder::new()
            .name("ddprof-symbols".into())
            .spawn(move || symbolize_loop(sym_rx, s2, frequency))
            .map_err(spawn_err)?;
        Ok(Profiler { tx: Some(tx), threads: vec![drain, symbolize], stats, frequency })
    }

    pub fn frequency(&self) -> u64 {
        self.frequency
    }

    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The aggregate so far, symbolized; with `reset`, counting restarts from empty.
    pub fn snapshot(&self, reset: bool) -> Result<Snapshot> {
        let stopped = || Error::Other("the profiler's threads have stopped".into());
        let (reply, rx) = mpsc::channel();
        self.tx.as_ref().ok_or_else(stopped)?.send(Command::Snapshot { reset, reply }).map_err(|_| stopped())?;
        rx.recv().map_err(|_| stopped())
    }

    /// Stops sampling and detaches the BPF program after a last drain. Snapshots of what was
    /// collected stay available.
    pub fn stop(&mut self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Command::Stop);
        }
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        self.stop();
        // Closing the channel ends the drain thread, which closes the symbolizer's.
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
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
