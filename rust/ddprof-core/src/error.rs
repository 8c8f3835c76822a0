//! The core's error type. The binding maps each variant to one Python exception, in one place.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges; the message says which and how to get them.
    #[error("{0}")]
    Permission(String),
    /// The kernel lacks a feature the sampler needs; the message names it.
    #[error("{0}")]
    BpfUnavailable(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file that is not an ELF file we can read; the message names it.
    #[error("{0}")]
    InvalidBinary(String),
    /// A debug-only ELF that does not verify after writing; the message names it and why.
    #[error("{0}")]
    DebugFile(String),
    /// A call the profiler's state does not allow (snapshot before start, start twice...).
    #[error("{0}")]
    State(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub const PERMISSION_HINT: &str = "ddprofiler needs root, or the capabilities CAP_BPF and \
CAP_PERFMON (and CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH and CAP_SYSLOG to see other users' processes and the kernel whole): run it with sudo";

/// Classifies an OS error met while loading or attaching BPF.
pub fn from_os(context: &str, err: &io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::Permission(format!("{context}: permission denied. {PERMISSION_HINT}"))
        }
        Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(libc::ENOENT) => {
            Error::BpfUnavailable(format!(
                "{context}: the kernel refused ({err}); ddprofiler needs Linux 5.8+ with BPF, \
                 BPF ring buffers, perf events and BTF (/sys/kernel/btf/vmlinux)"
            ))
        }
        _ => Error::Io { context: context.to_string(), source: io::Error::new(err.kind(), err.to_string()) },
    }
}
