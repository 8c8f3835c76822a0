//! Reading another process's memory: `process_vm_readv`, bounded.
//!
//! Input: a pid and AVMAs. Output: bytes, or an error saying why (the process is gone, the
//! address is not mapped, no permission: CAP_SYS_PTRACE for other users' processes).
//! Non-goals: writing, ptrace (the process is never stopped).
use std::io;

use crate::addr::Avma;

/// The largest read a caller may ask for (a line table, a long file name).
pub const MAX_READ: usize = 1 << 20;

pub struct ProcessMemory {
    pub pid: u32,
}

impl ProcessMemory {
    pub fn new(pid: u32) -> Self {
        ProcessMemory { pid }
    }

    /// Fills `buf` from `at`; a short read is an error.
    pub fn read_into(&self, at: Avma, buf: &mut [u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        let remote = libc::iovec { iov_base: at.0 as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: one local iovec over `buf`, which lives for the call; the remote one is
        // only read by the kernel, which checks it against the target's mappings.
        let n = unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != buf.len() => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read")),
            _ => Ok(()),
        }
    }

    pub fn read(&self, at: Avma, len: usize) -> io::Result<Vec<u8>> {
        if len > MAX_READ {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("read of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        self.read_into(at, &mut buf)?;
        Ok(buf)
    }

    pub fn u64(&self, at: Avma) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read_into(at, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }
}

/// A little-endian field of a block read at once.
pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_memory_and_refuses_nonsense() {
        let data: Vec<u8> = (0..64u8).collect();
        let me = ProcessMemory::new(std::process::id());
        let got = me.read(Avma(data.as_ptr() as u64), 64).expect("our own heap");
        assert_eq!(got, data);
        assert_eq!(me.u64(Avma(data.as_ptr() as u64 + 8)).ok(), u64_at(&data, 8));
        assert!(me.read(Avma(8), 8).is_err(), "page zero is never mapped");
        assert!(me.read(Avma(0), MAX_READ + 1).is_err());
        assert_eq!(u32_at(&data, 62), None);
    }
}
