//! What a binary offers for symbolication, for symbol upload (datadog-contracts.md, "Symbol
//! upload"): its ids, its architecture, the best symbols it and its separate debug file hold,
//! and sizes.
//!
//! Input: an [`ElfFile`], opened by path ([`inspect_path`], for `symbols inspect` and
//! `symbols upload`) or held open by the profiler ([`BinaryInfo::of`], for `--upload-symbols`:
//! deleted binaries and exited processes still work, the file is open). Output: a
//! [`BinaryInfo`] that holds the binary and its debug file open, so that
//! [`BinaryInfo::write_debug_file`] reads the very files that were inspected.
//! Non-goals: talking to the backend (Python's `symbols.upload`).
use std::path::Path;
use std::sync::Arc;

use super::debug_writer::{self, DebugFileStats, Source};
use super::{ids, ElfFile, Origin, SymbolSource, Via};
use crate::{Error, Result};

pub struct DebugFileInfo {
    pub file: Arc<ElfFile>,
    pub via: Via,
}

pub struct BinaryInfo {
    /// The path as its user names it (the argument, or the path the process mapped).
    pub path: String,
    pub arch: String,
    pub gnu_build_id: Option<String>,
    pub go_build_id: Option<String>,
    pub file_hash: String,
    /// The best of the file's own and its debug file's.
    pub symbol_source: SymbolSource,
    pub own_symbol_source: SymbolSource,
    pub file_size: u64,
    /// The binary's and its debug file's `.debug_*` bytes.
    pub debug_sections_size: u64,
    pub symtab_entries: u64,
    pub debug_file: Option<DebugFileInfo>,
    pub binary: Arc<ElfFile>,
}

/// Inspects the file at `path`; its debug file is looked for inside `root` only.
pub fn inspect_path(path: &Path, root: &Path) -> Result<BinaryInfo> {
    let origin = Origin::at_path(path, root);
    let file = ElfFile::open_path(path, origin).map_err(|e| e.into_error(path))?;
    Ok(BinaryInfo::of(&Arc::new(file)))
}

impl BinaryInfo {
    /// Describes a file already open.
    pub fn of(file: &Arc<ElfFile>) -> BinaryInfo {
        let own = file.symbols.source();
        let debug = file.debug_file().map(|d| DebugFileInfo { file: d.clone(), via: d.found_via.unwrap_or(Via::BuildId) });
        let debug_source = debug.as_ref().map(|d| d.file.symbols.source());
        BinaryInfo {
            path: file.origin.path.clone(),
            arch: crate::arch::elf_machine_name(file.machine),
            gnu_build_id: file.build_id.as_deref().map(ids::hex),
            go_build_id: file.go_build_id.clone(),
            file_hash: ids::file_hash(file.bytes(), file.size),
            symbol_source: debug_source.map_or(own, |d| d.max(own)),
            own_symbol_source: own,
            file_size: file.size,
            debug_sections_size: file.symbols.debug_sections_size
                + debug.as_ref().map_or(0, |d| d.file.symbols.debug_sections_size),
            symtab_entries: file.symbols.symtab_entries,
            debug_file: debug,
            binary: file.clone(),
        }
    }

    /// Ids the backend may know this binary by: the file hash, the GNU and Go build ids.
    pub fn build_ids(&self) -> Vec<String> {
        [Some(&self.file_hash), self.gnu_build_id.as_ref(), self.go_build_id.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The file the symbols come from: the debug file when it ranks better.
    fn symbol_file(&self) -> &Arc<ElfFile> {
        match &self.debug_file {
            Some(d) if d.file.symbols.source() > self.own_symbol_source => &d.file,
            _ => &self.binary,
        }
    }

    /// Writes the debug-only ELF uploaded as `elf_symbol_file` (see `debug_writer`) from
    /// the symbol file, with Go's `.gopclntab` from the binary when the symbol file is its
    /// debug file. Works from the open files: the paths may be gone.
    pub fn write_debug_file(&self, out: &Path) -> Result<DebugFileStats> {
        let sym = self.symbol_file();
        let open = |f: &ElfFile| -> Result<Source> {
            let file = f.reopen().map_err(|e| Error::Io { context: format!("cannot reopen {}", f.origin.path), source: e })?;
            Ok(Source { name: f.origin.path.clone().into(), file })
        };
        let pcln = if Arc::ptr_eq(sym, &self.binary) { None } else { open(&self.binary).ok() };
        let stats = debug_writer::write_debug_file_from(open(sym)?, pcln, out)?;
        if stats.symtab_entries != sym.symbols.symtab_entries {
            let _ = std::fs::remove_file(out);
            return Err(Error::DebugFile(format!(
                "{}: .symtab has {} entries, expected {}",
                out.display(),
                stats.symtab_entries,
                sym.symbols.symtab_entries
            )));
        }
        Ok(stats)
    }
}
