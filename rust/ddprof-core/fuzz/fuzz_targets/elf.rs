//! Fuzzes the ELF and DWARF entry points with arbitrary file contents: parsing for unwind
//! sections and segments (ElfFile), the bias computation, and symbolization of a few
//! addresses through blazesym. Any panic, hang or runaway allocation is a finding.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ddprof_core::elf::fuzz_parse(data);
});
