//! The per-process module table framehop walks with: one module per executable mapping with
//! a file, its CFI sections borrowed from the file's memory map (no copy).
//!
//! Input: a [`Process`] (its mappings, each with the bias between its addresses and the
//! file's). Output: an `arch::Unwinder`, built once per process generation (that is, again
//! after the process's mappings were re-read) and dropped when the process is forgotten.
use std::collections::HashMap;

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder as _};

use crate::arch::Unwinder;
use crate::elf::MapSlice;
use crate::process::{Process, Registry};

/// Module tables by pid, each for one generation of its process.
#[derive(Default)]
pub struct ModuleTables {
    tables: HashMap<u32, (u64, Unwinder<MapSlice>)>,
}

impl ModuleTables {
    /// The table of `process`, built (again) when its mappings changed.
    pub fn get(&mut self, process: &Process) -> &Unwinder<MapSlice> {
        let entry = self.tables.entry(process.pid).or_insert_with(|| (process.generation, build(process)));
        if entry.0 != process.generation {
            *entry = (process.generation, build(process));
        }
        &entry.1
    }

    /// Drops the tables of processes the registry no longer knows, or knows anew.
    pub fn forget_stale(&mut self, registry: &Registry) {
        self.tables.retain(|pid, (generation, _)| registry.get(*pid).is_some_and(|p| p.generation == *generation));
    }

    pub fn len(&self) -> usize {
        self.tables.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

fn build(process: &Process) -> Unwinder<MapSlice> {
    let mut unwinder = Unwinder::new();
    for m in &process.mappings {
        let Some(f) = &m.file else { continue };
        let s = &f.unwind;
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: s.text.as_ref().map(|s| s.svma.clone()),
            text: f.slice(&s.text),
            got_svma: s.got.as_ref().map(|s| s.svma.clone()),
            eh_frame_svma: s.eh_frame.as_ref().map(|s| s.svma.clone()),
            eh_frame: f.slice(&s.eh_frame),
            eh_frame_hdr_svma: s.eh_frame_hdr.as_ref().map(|s| s.svma.clone()),
            eh_frame_hdr: f.slice(&s.eh_frame_hdr),
            debug_frame: f.slice(&s.debug_frame),
            stubs_svma: None,
            stub_helper_svma: None,
            unwind_info: None,
            text_segment_svma: None,
            text_segment: None,
        };
        // With base_svma 0, framehop's base AVMA is the bias itself.
        unwinder.add_module(Module::new(m.path.clone(), m.range.start.0..m.range.end.0, m.bias.0, info));
    }
    unwinder
}
