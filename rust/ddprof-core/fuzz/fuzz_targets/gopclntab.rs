//! Fuzzes Go's symbol table reader with arbitrary files (seeded with a real stripped Go
//! binary): finding .gopclntab and the moduledata, and lookups through the function table,
//! pc-value tables and inline trees. Any panic, hang or runaway allocation is a finding.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../exercise/mod.rs"]
mod exercise;

fuzz_target!(|data: &[u8]| {
    let _ = exercise::gopclntab(data);
});
