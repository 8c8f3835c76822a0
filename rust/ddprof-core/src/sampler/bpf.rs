//! Loads the embedded BPF sampler with aya and attaches it to a cpu-clock perf event on every
//! online CPU, and in off-CPU mode its sched_switch program to that raw tracepoint.
//!
//! Input: frequency, optional pid filter, user stack snapshot size, off-CPU mode's rate and
//! cap.
//! Output: a [`Sampler`] whose ring buffer yields raw records (see `abi`) and whose per-CPU
//! counters can be read at any time. Non-goals: parsing records beyond the header, unwinding.
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::perf_event::{
    PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::programs::{RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};

use super::abi;
use crate::counters::{Counter, Counters};
use crate::error::{self, Error, Result};

static SAMPLER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sampler.bpf.o"));

/// Pending bytes at which the program wakes the reader (at most; a quarter of the ring when
/// that is less); below that, the reader's 50 ms timer drains. Measured here: waking per
/// record costs ~2.5% of a CPU at 999 Hz.
const WAKEUP_BYTES: u64 = 1 << 20;

/// The ring buffer's size: an eighth of a second of the worst case (every CPU sampled at the
/// frequency, each record carrying a full stack snapshot) fits, so that a reader busy for
/// that long loses nothing (the program wakes it when a quarter is pending); a power of two
/// (as the kernel wants) from 1 MiB to 64 MiB. Its pages are mapped into this process (the
/// data pages twice) and all touched as the ring turns: a fixed 8 MiB was 8 MiB of resident
/// memory at 20 Hz for ~200 KiB of records a second on two CPUs.
pub fn ring_bytes(frequency: u64, cpus: usize, stack_bytes: u32) -> u32 {
    let record = u64::from(stack_bytes) + 4096; // header, registers, kernel and Python frames
    let eighth_second = frequency.saturating_mul(cpus as u64).saturating_mul(record) / 8;
    eighth_second.clamp(1 << 20, 64 << 20).next_power_of_two().min(64 << 20) as u32
}

pub struct SamplerConfig {
    pub frequency: u64,
    pub pids: Vec<u32>,
    pub stack_bytes: u32,
    /// With `pids`: the processes they start (and theirs) are sampled too.
    pub follow_children: bool,
    /// Keep the samples of the idle task (pid 0; system-wide only).
    pub idle: bool,
    /// Off-CPU mode (None: off).
    pub off_cpu: Option<OffCpuConfig>,
}

/// Off-CPU mode: which switch-outs get their stack recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OffCpuConfig {
    /// The fraction of switch-outs recorded, in (0, 1].
    pub rate: f64,
    /// Stacks recorded a second on each CPU, at most (the rest are counted, `offcpu_capped`).
    pub cap: u32,
}

impl OffCpuConfig {
    /// The BPF program's threshold for bpf_get_prandom_u32(): rate * 2^32 (2^32: all).
    pub fn threshold(&self) -> u64 {
        (self.rate.clamp(0.0, 1.0) * 4_294_967_296.0).round() as u64
    }
}

pub struct Sampler {
    // Field order matters for drop: maps before the Ebpf object that owns the program links.
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    fp_chain_pids: BpfHashMap<MapData, u32, u8>,
    py_procs: BpfHashMap<MapData, u32, abi::PyProc>,
    go_procs: BpfHashMap<MapData, u32, abi::GoProc>,
    _bpf: Ebpf,
    pub cpus: Vec<u32>,
    /// How long the reader sleeps when the BPF side has not woken it (`drain_interval_ms`).
    pub interval_ms: i32,
}

/// The reader's timer: five sampling periods, from 50 ms (100 Hz and above) to 250 ms (20 Hz
/// and below). The BPF side wakes the reader earlier for a new pid (its mappings must be read
/// while it lives) and when a quarter of the ring is pending, so a longer timer only
/// batches records: at 20 Hz, waking every 50 ms for two records was a fifth of the
/// reader's CPU in poll and context switches.
pub fn drain_interval_ms(frequency: u64) -> i32 {
    (5000 / frequency.max(1)).clamp(50, 250) as i32
}

fn check_kernel_support() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(Error::BpfUnavailable(
            "this kernel exposes no BTF (/sys/kernel/btf/vmlinux is missing): ddprofiler needs a \
             kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8+)"
                .into(),
        ));
    }
    Ok(())
}

fn ebpf_error(context: &str, e: EbpfError) -> Error {
    match &e {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            error::from_os(context, io_error)
        }
        EbpfError::ProgramError(aya::programs::ProgramError::SyscallError(s)) => {
            error::from_os(context, &s.io_error)
        }
        EbpfError::BtfError(_) => Error::BpfUnavailable(format!("{context}: {e} (is BTF available?)")),
        _ => Error::Other(format!("{context}: {e}")),
    }
}

fn program_error(context: &str, e: aya::programs::ProgramError) -> Error {
    match &e {
        aya::programs::ProgramError::SyscallError(s) => error::from_os(context, &s.io_error),
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            if matches!(io_error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                error::from_os(context, io_error)
            } else {
                Error::BpfUnavailable(format!("{context}: the verifier refused the sampler ({io_error}): {verifier_log}"))
            }
        }
        _ => Error::Other(format!("{context}: {e}")),
    }
}

fn raise_memlock_rlimit() {
    // Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones ignore it.
    let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// The programs that move a process's mappings generation (exec, code unmaps; see
/// `map_gens` in sampler.bpf.c). Without them samples are still right, only later after
/// an exec or a library swap (the registry then notices by addresses outside its maps, and
/// the exe's inode): a warning, not a failure.
fn attach_mapping_watchers(bpf: &mut Ebpf) {
    let exec = (|| -> std::result::Result<(), String> {
        let prog: &mut RawTracePoint =
            bpf.program_mut("ddprof_exec").ok_or("missing")?.try_into().map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("{e}"))?;
        prog.attach("sched_process_exec").map_err(|e| format!("{e}"))?;
        Ok(())
    })();
    if let Err(e) = exec {
        log::warn!("exec() is not watched (raw tracepoint sched_process_exec: {e}): after an exec, samples may be named from the old program for a moment");
    }
    let unmap = (|| -> std::result::Result<(), String> {
        let prog: &mut TracePoint =
            bpf.program_mut("ddprof_munmap").ok_or("missing")?.try_into().map_err(|e| format!("{e}"))?;
        prog.load().map_err(|e| format!("{e}"))?;
        prog.attach("syscalls", "sys_enter_munmap").map_err(|e| format!("{e}"))?;
        Ok(())
    })();
    if let Err(e) = unmap {
        log::warn!("munmap() is not watched (tracepoint syscalls/sys_enter_munmap: {e}; is tracefs mounted?): a library unloaded and another loaded at its address may keep the first one's names for a moment");
    }
}

/// Off-CPU mode's program, on the sched_switch raw tracepoint. Asked for, so a failure is an
/// error.
fn attach_switch(bpf: &mut Ebpf) -> Result<()> {
    let prog: &mut RawTracePoint = bpf
        .program_mut("ddprof_switch")
        .ok_or_else(|| Error::Other("program ddprof_switch missing from the object".into()))?
        .try_into()
        .map_err(|e| program_error("ddprof_switch", e))?;
    prog.load().map_err(|e| program_error("loading the off-CPU program", e))?;
    prog.attach("sched_switch")
        .map_err(|e| program_error("off-CPU mode (raw tracepoint sched_switch)", e))?;
    Ok(())
}

/// The programs that add the processes a followed one starts to the pid filter, and take
/// exited ones out. Asked for, so a failure is an error.
fn attach_followers(bpf: &mut Ebpf) -> Result<()> {
    for (name, tracepoint) in [("ddprof_fork", "sched_process_fork"), ("ddprof_exit", "sched_process_exit")] {
        let prog: &mut RawTracePoint = bpf
            .program_mut(name)
            .ok_or_else(|| Error::Other(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(|e| program_error(name, e))?;
        prog.load().map_err(|e| program_error(&format!("loading {name}"), e))?;
        prog.attach(tracepoint)
            .map_err(|e| program_error(&format!("following child processes (raw tracepoint {tracepoint})"), e))?;
    }
    Ok(())
}

impl Sampler {
    pub fn start(cfg: &SamplerConfig) -> Result<Sampler> {
        if cfg.frequency == 0 || cfg.frequency > 10_000 {
            return Err(Error::InvalidArgument(format!("frequency {} is outside 1..10000", cfg.frequency)));
        }
        if cfg.stack_bytes > abi::MAX_USTACK_BYTES || !cfg.stack_bytes.is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "stack snapshot size {} must be a multiple of 8 up to {}",
                cfg.stack_bytes,
                abi::MAX_USTACK_BYTES
            )));
        }
        if let Some(o) = &cfg.off_cpu {
            if !(o.rate > 0.0 && o.rate <= 1.0) || o.cap == 0 {
                return Err(Error::InvalidArgument(format!(
                    "off-CPU rate {} must be in (0, 1] and its cap ({}) above 0",
                    o.rate, o.cap
                )));
            }
        }
        check_kernel_support()?;
        raise_memlock_rlimit();
        let nr_cpus = aya::util::nr_cpus().map_err(|(f, e)| error::from_os(f, &e))? as u32;
        let cpus = aya::util::online_cpus().map_err(|(f, e)| error::from_os(f, &e))?;
        let filter: u32 = u32::from(!cfg.pids.is_empty());
        let follow: u32 = u32::from(cfg.follow_children && !cfg.pids.is_empty());
        let idle: u32 = u32::from(cfg.idle);
        let stack_bytes = cfg.stack_bytes;
        // Off-CPU stacks come at most `cap` a second on each CPU, on top of the samples.
        let records_per_cpu = cfg.frequency + cfg.off_cpu.map_or(0, |o| u64::from(o.cap));
        let ring_size = ring_bytes(records_per_cpu, cpus.len(), stack_bytes);
        let (threshold, cap) = cfg.off_cpu.map_or((0, 0), |o| (o.threshold(), u64::from(o.cap)));
        let wakeup = WAKEUP_BYTES.min(u64::from(ring_size) / 4);
        let mut bpf = EbpfLoader::new()
            .override_global("ustack_size", &stack_bytes, true)
            .override_global("filter_pids", &filter, true)
            .override_global("follow_children", &follow, true)
            .override_global("keep_idle", &idle, true)
            .override_global("wakeup_bytes", &wakeup, true)
            .override_global("offcpu_threshold", &threshold, true)
            .override_global("offcpu_cap", &cap, true)
            .map_max_entries("scratch_bufs", nr_cpus)
            .map_max_entries("samples", ring_size)
            .load(SAMPLER_OBJ)
            .map_err(|e| ebpf_error("loading the BPF sampler", e))?;

        if !cfg.pids.is_empty() {
            let mut pf: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
                bpf.map_mut("pid_filter").ok_or_else(|| Error::Other("map pid_filter missing".into()))?,
            )
            .map_err(|e| Error::Other(format!("pid_filter: {e}")))?;
            for pid in &cfg.pids {
                pf.insert(pid, 1, 0).map_err(|e| Error::Other(format!("pid_filter insert: {e}")))?;
            }
        }

        let prog: &mut PerfEvent = bpf
            .program_mut("ddprof_sample")
            .ok_or_else(|| Error::Other("program ddprof_sample missing from the object".into()))?
            .try_into()
            .map_err(|e| program_error("ddprof_sample", e))?;
        prog.load().map_err(|e| program_error("loading the BPF sampler", e))?;
        for &cpu in &cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(cfg.frequency),
                false,
            )
            .map_err(|e| program_error(&format!("attaching to the cpu-clock event of CPU {cpu}"), e))?;
        }

        attach_mapping_watchers(&mut bpf);
        if follow == 1 {
            attach_followers(&mut bpf)?;
        }
        if cfg.off_cpu.is_some() {
            attach_switch(&mut bpf)?;
        }

        let ring = RingBuf::try_from(
            bpf.take_map("samples").ok_or_else(|| Error::Other("map samples missing".into()))?,
        )
        .map_err(|e| Error::Other(format!("ring buffer: {e}")))?;
        let counters = PerCpuArray::try_from(
            bpf.take_map("counters").ok_or_else(|| Error::Other("map counters missing".into()))?,
        )
        .map_err(|e| Error::Other(format!("counters: {e}")))?;
        let fp_chain_pids = BpfHashMap::try_from(
            bpf.take_map("fp_chain_pids").ok_or_else(|| Error::Other("map fp_chain_pids missing".into()))?,
        )
        .map_err(|e| Error::Other(format!("fp_chain_pids: {e}")))?;
        let py_procs = BpfHashMap::try_from(
            bpf.take_map("py_procs").ok_or_else(|| Error::Other("map py_procs missing".into()))?,
        )
        .map_err(|e| Error::Other(format!("py_procs: {e}")))?;
        let go_procs = BpfHashMap::try_from(
            bpf.take_map("go_procs").ok_or_else(|| Error::Other("map go_procs missing".into()))?,
        )
        .map_err(|e| Error::Other(format!("go_procs: {e}")))?;
        log::info!(
            "sampling {} CPUs at {} Hz, {} B user stack snapshots, {} KiB ring buffer{}{}",
            cpus.len(),
            cfg.frequency,
            cfg.stack_bytes,
            ring_size >> 10,
            cfg.off_cpu.map_or(String::new(), |o| format!(", off-CPU stacks of {} of switch-outs (at most {}/s per CPU)", o.rate, o.cap)),
            if cfg.pids.is_empty() { String::new() } else { format!(", pids {:?}", cfg.pids) }
        );
        let interval_ms = drain_interval_ms(cfg.frequency);
        Ok(Sampler { ring, counters, fp_chain_pids, py_procs, go_procs, _bpf: bpf, cpus, interval_ms })
    }

    /// Waits up to `timeout_ms` for the ring buffer to have data (or the timer to expire).
    pub fn wait(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd { fd: self.ring.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }

    /// Calls `f` on every pending record, then releases them. Returns how many were seen.
    pub fn drain(&mut self, mut f: impl FnMut(&[u8])) -> u64 {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            f(&item);
            n += 1;
        }
        n
    }

    /// From now on, samples of `pid` carry the user frame-pointer chain (see sampler.h). The
    /// map is an LRU: a failed insert only means the chain stays off for that pid.
    pub fn want_fp_chain(&mut self, pid: u32) {
        if let Err(e) = self.fp_chain_pids.insert(pid, 1, 0) {
            log::debug!("fp_chain_pids insert {pid}: {e}");
        }
    }

    /// From now on, samples of `pid` carry the Python frames of its interpreter, described
    /// by `cfg` (`None`: no longer, after an exec). The map is an LRU, as above.
    pub fn want_python(&mut self, pid: u32, cfg: Option<&abi::PyProc>) {
        let res = match cfg {
            Some(c) => self.py_procs.insert(pid, *c, 0),
            None => self.py_procs.remove(&pid),
        };
        if let Err(e) = res {
            log::debug!("py_procs {pid}: {e}");
        }
    }

    /// From now on, samples of `pid` carry the Go window (see sampler.h), read as `cfg`
    /// says (`None`: no longer, after an exec). The map is an LRU, as above.
    pub fn want_go(&mut self, pid: u32, cfg: Option<&abi::GoProc>) {
        let res = match cfg {
            Some(c) => self.go_procs.insert(pid, *c, 0),
            None => self.go_procs.remove(&pid),
        };
        if let Err(e) = res {
            log::debug!("go_procs {pid}: {e}");
        }
    }

    /// Copies the BPF counters (summed over CPUs) into the registry.
    pub fn copy_counters(&self, into: &Counters) {
        for &c in Counter::ALL {
            if let Some(idx) = c.spec().bpf_index {
                let v: u64 = self.counters.get(&idx, 0).map(|vals| vals.iter().sum()).unwrap_or(0);
                into.set(c, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{drain_interval_ms, ring_bytes};

    #[test]
    fn timer_follows_the_rate() {
        assert_eq!(drain_interval_ms(20), 250);
        assert_eq!(drain_interval_ms(49), 102);
        assert_eq!(drain_interval_ms(1), 250);
        assert_eq!(drain_interval_ms(99), 50);
        assert_eq!(drain_interval_ms(999), 50);
    }

    #[test]
    fn off_cpu_threshold_is_the_rate_of_2_to_the_32() {
        let t = |rate| super::OffCpuConfig { rate, cap: 1 }.threshold();
        assert_eq!(t(1.0), 1 << 32, "all: the program's test is skipped");
        assert_eq!(t(0.5), 1 << 31);
        assert_eq!(t(0.0), 0);
    }

    #[test]
    fn ring_grows_with_the_rate_within_bounds() {
        assert_eq!(ring_bytes(20, 2, 16384), 1 << 20, "the default rate: the floor");
        assert_eq!(ring_bytes(99, 2, 16384), 1 << 20);
        assert_eq!(ring_bytes(999, 2, 16384), 8 << 20, "as before sizes followed the rate");
        assert_eq!(ring_bytes(20, 64, 16384), 4 << 20);
        assert_eq!(ring_bytes(10_000, 256, 65536), 64 << 20, "the ceiling");
        assert!(ring_bytes(99, 3, 16384).is_power_of_two());
    }
}
