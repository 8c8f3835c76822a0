//! The running profiler: the sampler plus the drain thread that owns the pipeline.
//!
//! Input: a [`SamplerConfig`]. Output: running stats at any time and, on request, a symbolized
//! [`Snapshot`] of the aggregate (optionally starting a new one). The drain thread wakes when
//! the BPF side signals ~1 MiB pending, or every 50 ms, whichever comes first. Callers never
//! block the drain thread for longer than a channel send.
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::aggregate::{Aggregate, Snapshot};
use crate::error::{Error, Result};
use crate::pipeline::Pipeline;
use crate::sampler::{Sampler, SamplerConfig};

const DRAIN_INTERVAL_MS: i32 = 50;

enum Command {
    Snapshot { reset: bool, reply: Sender<Snapshot> },
    Stop,
}

pub struct Profiler {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<BTreeMap<String, u64>>>,
    frequency: u64,
}

fn publish(stats: &Mutex<BTreeMap<String, u64>>, sampler: &Sampler, pipeline: &Pipeline) {
    let mut all: BTreeMap<String, u64> = pipeline.stats().into_iter().collect();
    for (k, v) in sampler.counters() {
        all.insert(k.to_string(), v);
    }
    if let Ok(mut s) = stats.lock() {
        *s = all;
    }
}

fn drain_loop(mut sampler: Sampler, rx: Receiver<Command>, stats: Arc<Mutex<BTreeMap<String, u64>>>, frequency: u64) {
    let mut pipeline = Pipeline::new();
    loop {
        sampler.wait(DRAIN_INTERVAL_MS);
        sampler.drain(|bytes| pipeline.ingest(bytes));
        publish(&stats, &sampler, &pipeline);
        match rx.recv_timeout(Duration::ZERO) {
            Ok(Command::Snapshot { reset, reply }) => {
                sampler.drain(|bytes| pipeline.ingest(bytes));
                publish(&stats, &sampler, &pipeline);
                let stat_vec = stats.lock().map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
                let agg = if reset {
                    std::mem::take(&mut pipeline.aggregate)
                } else {
                    // Without reset the caller gets a copy and we keep counting into the same.
                    let snap = std::mem::replace(&mut pipeline.aggregate, Aggregate::new());
                    let copy = snap.into_snapshot(frequency, stat_vec);
                    let _ = reply.send(copy.clone());
                    // Re-seeding an aggregate from a snapshot is not supported; keep the new
                    // (empty) one. `reset=false` is for peeking at the end of a run.
                    continue;
                };
                let _ = reply.send(agg.into_snapshot(frequency, stat_vec));
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                sampler.drain(|bytes| pipeline.ingest(bytes));
                publish(&stats, &sampler, &pipeline);
                // Detach the program and free the maps now, not when the handle goes away.
                drop(sampler);
                // Keep serving snapshots of what was collected until the handle goes away.
                while let Ok(cmd) = rx.recv() {
                    if let Command::Snapshot { reset, reply } = cmd {
                        let stat_vec = stats.lock().map(|s| s.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
                        let agg = std::mem::take(&mut pipeline.aggregate);
                        let snap = agg.into_snapshot(frequency, stat_vec);
                        let _ = reset;
                        let _ = reply.send(snap);
                    }
                }
                return;
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

impl Profiler {
    /// Loads and attaches the sampler, then starts draining. Errors are returned here, on
    /// the caller's thread: privileges, kernel support, bad arguments.
    pub fn start(cfg: SamplerConfig) -> Result<Profiler> {
        let frequency = cfg.frequency;
        let sampler = Sampler::start(&cfg)?;
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        let s2 = stats.clone();
        let thread = std::thread::Builder::new()
            .name("ddprof-drain".into())
            .spawn(move || drain_loop(sampler, rx, s2, frequency))
            .map_err(|e| Error::Io { context: "starting the drain thread".into(), source: e })?;
        Ok(Profiler { tx, thread: Some(thread), stats, frequency })
    }

    pub fn frequency(&self) -> u64 {
        self.frequency
    }

    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The aggregate so far, symbolized; with `reset`, counting restarts from empty.
    pub fn snapshot(&self, reset: bool) -> Result<Snapshot> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .send(Command::Snapshot { reset, reply })
            .map_err(|_| Error::Other("the drain thread has stopped".into()))?;
        rx.recv().map_err(|_| Error::Other("the drain thread has stopped".into()))
    }

    /// Detaches the BPF program (by dropping the sampler on the drain thread) after a last
    /// drain. Snapshots stay available.
    pub fn stop(&mut self) {
        let _ = self.tx.send(Command::Stop);
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        // Closing the channel ends the drain thread's snapshot-serving loop.
        let (dead_tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, dead_tx));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
