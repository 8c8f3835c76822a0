//! `ddprofiler._native`: a thin pyo3 binding of ddprof-core. Its typed stub is
//! `python/ddprofiler/_native.pyi` (checked by stubtest); users import from `ddprofiler`.
//!
//! Three rules, each kept in one place:
//! - errors: core errors become the classes of `ddprofiler.errors` in [`to_py_err`];
//! - the GIL: every call that can block runs through [`blocking`], and no lock of ours is
//!   ever held while the GIL is released or acquired (the core's handle needs none: its
//!   methods take `&self`);
//! - data: a snapshot stays in Rust; its pprof is encoded there, and its tables cross as
//!   plain tuples only when asked for ([`snapshot`]).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use ddprof_core::counters::SPECS;
use ddprof_core::elf::debug_writer::DebugFileStats as CoreDebugFileStats;
use ddprof_core::elf::inspect::{inspect_path, BinaryInfo as CoreBinaryInfo};
use ddprof_core::elf::{ElfFile, SymbolSource};
use ddprof_core::{Error, OffCpuConfig, Profiler as CoreProfiler, ProfilerConfig};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyType};

mod snapshot;
use snapshot::{lines_to_py, stats_to_py, Snapshot};

/// The one conversion of core errors into Python exceptions (classes of `ddprofiler.errors`).
pub(crate) fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    let class = match &e {
        Error::InvalidArgument(_) => return PyValueError::new_err(e.to_string()),
        Error::Io { .. } => return PyOSError::new_err(e.to_string()),
        Error::Permission(_) => "PrivilegeError",
        Error::BpfUnavailable(_) => "BpfUnavailableError",
        Error::InvalidBinary(_) => "InvalidBinaryError",
        Error::DebugFile(_) => "DebugFileError",
        Error::State(_) | Error::Other(_) => "ProfilerError",
    };
    let ty = py
        .import("ddprofiler.errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
    match ty {
        Ok(ty) => PyErr::from_type(ty, e.to_string()),
        Err(import_error) => {
            let err = PyRuntimeError::new_err(e.to_string());
            err.set_cause(py, Some(import_error));
            err
        }
    }
}

/// Runs `f` without the GIL: Python threads (and signal handlers) keep running meanwhile.
/// The only place the GIL is released.
pub(crate) fn blocking<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(f)
}

#[pyfunction]
fn counter_specs(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for s in SPECS {
        out.append((s.name, s.kind.as_str(), s.help))?;
    }
    Ok(out)
}

// The constructor's default memory budget, written out so that Python's signature shows it.
const _: () = assert!(ddprof_core::memory::DEFAULT_BUDGET == 134_217_728);

#[pyclass(module = "ddprofiler._native", frozen)]
struct Profiler {
    config: ProfilerConfig,
    started: AtomicBool,
    core: OnceLock<CoreProfiler>,
}

impl Profiler {
    fn running(&self, py: Python<'_>) -> PyResult<&CoreProfiler> {
        self.core.get().ok_or_else(|| to_py_err(py, Error::State("the profiler is not running (call start() first)".into())))
    }
}

#[pymethods]
impl Profiler {
    #[new]
    #[pyo3(signature = (frequency = 99, pids = None, stack_bytes = 16384, symbolize = "host", python = true, follow_children = false, idle = false, memory_budget = 134217728, off_cpu_rate = None, off_cpu_cap = 250))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of a Python constructor
    fn new(
        py: Python<'_>,
        frequency: u64,
        pids: Option<Vec<u32>>,
        stack_bytes: u32,
        symbolize: &str,
        python: bool,
        follow_children: bool,
        idle: bool,
        memory_budget: u64,
        off_cpu_rate: Option<f64>,
        off_cpu_cap: u32,
    ) -> PyResult<Self> {
        let symbolize = symbolize.parse().map_err(|e| to_py_err(py, e))?;
        let memory_budget = ddprof_core::memory::MemoryBudget::new(memory_budget).map_err(|e| to_py_err(py, e))?;
        let off_cpu = off_cpu_rate.map(|rate| OffCpuConfig { rate, cap: off_cpu_cap });
        let config = ProfilerConfig {
            frequency,
            pids: pids.unwrap_or_default(),
            stack_bytes,
            symbolize,
            python,
            follow_children,
            idle,
            memory_budget,
            off_cpu,
        };
        Ok(Profiler { config, started: AtomicBool::new(false), core: OnceLock::new() })
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Err(to_py_err(py, Error::State("start() was already called".into())));
        }
        let config = self.config.clone();
        match blocking(py, move || CoreProfiler::start(config)) {
            Ok(p) => {
                // Only this call got past `started`, so the cell is empty.
                let _ = self.core.set(p);
                Ok(())
            }
            Err(e) => {
                self.started.store(false, Ordering::SeqCst);
                Err(to_py_err(py, e))
            }
        }
    }

    fn stop(&self) {
        if let Some(p) = self.core.get() {
            p.stop();
        }
    }

    fn close(&self, py: Python<'_>) {
        if let Some(p) = self.core.get() {
            blocking(py, || p.close());
        }
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.core.get().map(CoreProfiler::stats).unwrap_or_default();
        stats_to_py(py, &stats)
    }

    #[pyo3(signature = (reset = true))]
    fn snapshot(&self, py: Python<'_>, reset: bool) -> PyResult<Snapshot> {
        let p = self.running(py)?;
        let snap = blocking(py, || p.snapshot(reset)).map_err(|e| to_py_err(py, e))?;
        Ok(Snapshot { core: Arc::new(snap) })
    }
}

/// An ELF file the profiler holds open.
#[pyclass(module = "ddprofiler._native", frozen)]
pub(crate) struct Binary {
    pub(crate) file: Arc<ElfFile>,
}

#[pymethods]
impl Binary {
    #[getter]
    fn path(&self) -> &str {
        &self.file.origin.path
    }

    #[getter]
    fn file_id(&self) -> &str {
        self.file.file_id()
    }

    fn inspect(&self, py: Python<'_>) -> BinaryInfo {
        let file = self.file.clone();
        BinaryInfo { info: blocking(py, move || CoreBinaryInfo::of(&file)) }
    }

    fn __repr__(&self) -> String {
        format!("Binary(path={:?}, file_id={:?})", self.file.origin.path, self.file.file_id())
    }
}

#[pyclass(module = "ddprofiler._native", frozen)]
struct BinaryInfo {
    info: CoreBinaryInfo,
}

#[pymethods]
impl BinaryInfo {
    #[getter]
    fn path(&self) -> &str {
        &self.info.path
    }
    #[getter]
    fn arch(&self) -> &str {
        &self.info.arch
    }
    #[getter]
    fn gnu_build_id(&self) -> Option<&str> {
        self.info.gnu_build_id.as_deref()
    }
    #[getter]
    fn go_build_id(&self) -> Option<&str> {
        self.info.go_build_id.as_deref()
    }
    #[getter]
    fn file_hash(&self) -> &str {
        &self.info.file_hash
    }
    #[getter]
    fn symbol_source(&self) -> &'static str {
        self.info.symbol_source.as_str()
    }
    #[getter]
    fn own_symbol_source(&self) -> &'static str {
        self.info.own_symbol_source.as_str()
    }
    #[getter]
    fn file_size(&self) -> u64 {
        self.info.file_size
    }
    #[getter]
    fn debug_sections_size(&self) -> u64 {
        self.info.debug_sections_size
    }
    #[getter]
    fn symtab_entries(&self) -> u64 {
        self.info.symtab_entries
    }
    #[getter]
    fn debug_file(&self) -> Option<&str> {
        self.info.debug_file.as_ref().map(|d| d.file.origin.path.as_str())
    }
    #[getter]
    fn debug_file_via(&self) -> Option<&'static str> {
        self.info.debug_file.as_ref().map(|d| d.via.as_str())
    }
    #[getter]
    fn debug_file_symbol_source(&self) -> Option<&'static str> {
        self.info.debug_file.as_ref().map(|d| d.file.symbols.source().as_str())
    }
    #[getter]
    fn debug_file_symtab_entries(&self) -> u64 {
        self.info.debug_file.as_ref().map_or(0, |d| d.file.symbols.symtab_entries)
    }
    #[getter]
    fn build_ids(&self) -> Vec<String> {
        self.info.build_ids()
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("path", self.path())?;
        d.set_item("arch", self.arch())?;
        d.set_item("gnu_build_id", self.gnu_build_id())?;
        d.set_item("go_build_id", self.go_build_id())?;
        d.set_item("file_hash", self.file_hash())?;
        d.set_item("symbol_source", self.symbol_source())?;
        d.set_item("own_symbol_source", self.own_symbol_source())?;
        d.set_item("file_size", self.file_size())?;
        d.set_item("debug_sections_size", self.debug_sections_size())?;
        d.set_item("symtab_entries", self.symtab_entries())?;
        d.set_item("debug_file", self.debug_file())?;
        d.set_item("debug_file_via", self.debug_file_via())?;
        d.set_item("debug_file_symbol_source", self.debug_file_symbol_source())?;
        d.set_item("debug_file_symtab_entries", self.debug_file_symtab_entries())?;
        Ok(d)
    }

    fn write_debug_file(&self, py: Python<'_>, out: String) -> PyResult<DebugFileStats> {
        let stats = blocking(py, || self.info.write_debug_file(out.as_ref())).map_err(|e| to_py_err(py, e))?;
        Ok(DebugFileStats { stats })
    }

    fn __repr__(&self) -> String {
        format!("BinaryInfo(path={:?}, symbol_source={:?})", self.info.path, self.symbol_source())
    }
}

#[pyclass(module = "ddprofiler._native", frozen)]
struct DebugFileStats {
    stats: CoreDebugFileStats,
}

#[pymethods]
impl DebugFileStats {
    #[getter]
    fn source(&self) -> &str {
        &self.stats.source
    }
    #[getter]
    fn input_bytes(&self) -> u64 {
        self.stats.input_bytes
    }
    #[getter]
    fn output_bytes(&self) -> u64 {
        self.stats.output_bytes
    }
    #[getter]
    fn sections_compressed(&self) -> u64 {
        self.stats.sections_compressed
    }
    #[getter]
    fn symtab_entries(&self) -> u64 {
        self.stats.symtab_entries
    }
    #[getter]
    fn gopclntab_bytes(&self) -> u64 {
        self.stats.gopclntab_bytes
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.stats)
    }
}

#[pyfunction]
#[pyo3(signature = (path, root = "/".to_string()), text_signature = "(path, root='/')")]
fn inspect(py: Python<'_>, path: String, root: String) -> PyResult<BinaryInfo> {
    let info = blocking(py, || inspect_path(path.as_ref(), root.as_ref())).map_err(|e| to_py_err(py, e))?;
    Ok(BinaryInfo { info })
}

#[pyfunction]
fn symbolize_file<'py>(py: Python<'py>, path: String, addresses: Vec<u64>) -> PyResult<Bound<'py, PyList>> {
    let all = blocking(py, || ddprof_core::symbolize::symbolize_file(&path, &addresses)).map_err(|e| to_py_err(py, e))?;
    let out = PyList::empty(py);
    for lines in all {
        out.append(lines_to_py(py, &lines)?)?;
    }
    Ok(out)
}

#[pyfunction]
#[pyo3(
    signature = (lines, title, subtitle = None, count_name = "samples".to_string(), colors = None, base = None),
    text_signature = "(lines, title, subtitle=None, count_name='samples', colors=None, base=None)"
)]
fn flamegraph_svg(
    py: Python<'_>,
    lines: Vec<String>,
    title: String,
    subtitle: Option<String>,
    count_name: String,
    colors: Option<std::collections::HashMap<String, String>>,
    base: Option<Vec<String>>,
) -> PyResult<String> {
    let opts = ddprof_core::flamegraph::FlameOptions { title, subtitle, count_name, colors: colors.unwrap_or_default() };
    blocking(py, || match &base {
        Some(base) => ddprof_core::flamegraph::differential(base, &lines, &opts),
        None => ddprof_core::flamegraph::svg(&lines, &opts),
    })
    .map_err(|e| to_py_err(py, e))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pyo3_log::init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    let sources: Vec<&str> = SymbolSource::ALL.iter().map(|s| s.as_str()).collect();
    m.add("SYMBOL_SOURCES", PyTuple::new(m.py(), sources)?)?;
    m.add_class::<Profiler>()?;
    m.add_class::<Snapshot>()?;
    m.add_class::<Binary>()?;
    m.add_class::<BinaryInfo>()?;
    m.add_class::<DebugFileStats>()?;
    m.add_function(wrap_pyfunction!(counter_specs, m)?)?;
    m.add_function(wrap_pyfunction!(flamegraph_svg, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(symbolize_file, m)?)?;
    Ok(())
}
