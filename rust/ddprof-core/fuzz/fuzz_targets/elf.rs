//! Fuzzes the ELF and DWARF entry points with arbitrary file contents: parsing for unwind
//! sections and segments (ElfFile), the bias computation, symbolization of a few addresses
//! through blazesym, and writing the debug-only ELF that symbol upload sends. Any panic,
//! hang or runaway allocation is a finding.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../exercise/mod.rs"]
mod exercise;

/// A directory of this process's own for the debug file writer's input and output.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let dir = base.join(format!("ddprof-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = exercise::elf(data);
    let (src, out) = (scratch().join("in"), scratch().join("out"));
    if std::fs::write(&src, data).is_ok() {
        let _ = ddprof_core::elf::debug_writer::write_debug_file(&src, None, &out);
        let _ = std::fs::remove_file(&out);
    }
});
