//! `ddprofiler._native`: a thin pyo3 binding of ddprof-core.
//!
//! Conversions live here and nowhere else: core errors become Python exceptions in
//! [`to_py_err`], snapshots become dicts in [`snapshot_to_py`], and every call that can block
//! (starting, snapshotting, stopping, writing debug files) runs with the GIL released through
//! [`blocking`].
use std::sync::Mutex;

use ddprof_core::aggregate::Snapshot;
use ddprof_core::symbolize::Line;
use ddprof_core::{Error, Profiler as CoreProfiler, SamplerConfig};
use pyo3::exceptions::{PyOSError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

pyo3::create_exception!(_native, BpfUnavailableError, PyRuntimeError, "The kernel lacks something the BPF sampler needs.");

fn to_py_err(e: Error) -> PyErr {
    match e {
        Error::Permission(m) => PyPermissionError::new_err(m),
        Error::BpfUnavailable(m) => BpfUnavailableError::new_err(m),
        Error::InvalidArgument(m) => PyValueError::new_err(m),
        Error::Io { .. } => PyOSError::new_err(e.to_string()),
        Error::Other(m) => PyRuntimeError::new_err(m),
    }
}

/// Runs `f` without the GIL: Python threads (and signal handlers) keep running meanwhile.
fn blocking<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(f)
}

fn lines_to_py<'py>(py: Python<'py>, lines: &[Line]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for line in lines {
        let x = PyDict::new(py);
        x.set_item("function", &line.function)?;
        x.set_item("system_name", "")?;
        x.set_item("file", &line.file)?;
        x.set_item("line", line.line)?;
        out.append(x)?;
    }
    Ok(out)
}

fn snapshot_to_py<'py>(py: Python<'py>, s: &Snapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("start_ns", s.start_ns)?;
    d.set_item("end_ns", s.end_ns)?;
    d.set_item("frequency", s.frequency)?;
    let mappings = PyList::empty(py);
    for m in &s.mappings {
        let md = PyDict::new(py);
        md.set_item("start", m.start)?;
        md.set_item("limit", m.limit)?;
        md.set_item("offset", m.offset)?;
        md.set_item("path", &m.path)?;
        md.set_item("build_id", &m.build_id)?;
        md.set_item("is_kernel", m.is_kernel)?;
        mappings.append(md)?;
    }
    d.set_item("mappings", mappings)?;
    let locations = PyList::empty(py);
    for l in &s.locations {
        let ld = PyDict::new(py);
        ld.set_item("mapping", l.mapping)?;
        ld.set_item("address", l.address)?;
        ld.set_item("lines", lines_to_py(py, &l.lines)?)?;
        locations.append(ld)?;
    }
    d.set_item("locations", locations)?;
    let stacks = PyList::empty(py);
    for st in &s.stacks {
        stacks.append(PyList::new(py, st.iter())?)?;
    }
    d.set_item("stacks", stacks)?;
    let samples = PyList::empty(py);
    for x in &s.samples {
        let sd = PyDict::new(py);
        sd.set_item("pid", x.pid)?;
        sd.set_item("tid", x.tid)?;
        sd.set_item("cpu", x.cpu)?;
        sd.set_item("stack", x.stack)?;
        sd.set_item("count", x.count)?;
        sd.set_item("thread_name", &x.thread_name)?;
        sd.set_item("process_name", &x.process_name)?;
        samples.append(sd)?;
    }
    d.set_item("samples", samples)?;
    let processes = PyList::empty(py);
    for p in &s.processes {
        let pd = PyDict::new(py);
        pd.set_item("pid", p.pid)?;
        pd.set_item("name", &p.name)?;
        pd.set_item("exe", &p.exe)?;
        let env = PyDict::new(py);
        for (k, v) in &p.env {
            env.set_item(k, v)?;
        }
        pd.set_item("env", env)?;
        pd.set_item("cgroup", &p.cgroup)?;
        processes.append(pd)?;
    }
    d.set_item("processes", processes)?;
    let stats = PyDict::new(py);
    for (k, v) in &s.stats {
        stats.set_item(k, v)?;
    }
    d.set_item("stats", stats)?;
    Ok(d)
}

#[pyclass(module = "ddprofiler._native")]
struct Profiler {
    cfg: Mutex<Option<SamplerConfig>>,
    inner: Mutex<Option<CoreProfiler>>,
}

fn closed() -> PyErr {
    PyRuntimeError::new_err("the profiler is not running (call start() first)")
}

#[pymethods]
impl Profiler {
    #[new]
    #[pyo3(signature = (frequency = 99, pids = None, stack_bytes = 16384))]
    fn new(frequency: u64, pids: Option<Vec<u32>>, stack_bytes: u32) -> Self {
        let cfg = SamplerConfig { frequency, pids: pids.unwrap_or_default(), stack_bytes };
        Profiler { cfg: Mutex::new(Some(cfg)), inner: Mutex::new(None) }
    }

    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let cfg = self
            .cfg
            .lock()
            .map_err(|_| closed())?
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("start() was already called"))?;
        let p = blocking(py, move || CoreProfiler::start(cfg)).map_err(to_py_err)?;
        *self.inner.lock().map_err(|_| closed())? = Some(p);
        Ok(())
    }

    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = self.inner.lock().map_err(|_| closed())?;
        if let Some(p) = g.as_mut() {
            blocking(py, || p.stop());
        }
        Ok(())
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let g = self.inner.lock().map_err(|_| closed())?;
        let d = PyDict::new(py);
        if let Some(p) = g.as_ref() {
            for (k, v) in p.stats() {
                d.set_item(k, v)?;
            }
        }
        Ok(d)
    }

    #[pyo3(signature = (reset = true))]
    fn snapshot<'py>(&self, py: Python<'py>, reset: bool) -> PyResult<Bound<'py, PyDict>> {
        let g = self.inner.lock().map_err(|_| closed())?;
        let p = g.as_ref().ok_or_else(closed)?;
        let snap = blocking(py, || p.snapshot(reset)).map_err(to_py_err)?;
        snapshot_to_py(py, &snap)
    }
}

/// Lines of each address of an ELF file (addresses as the file states them, as addr2line
/// takes them), innermost inlined function first.
#[pyfunction]
fn symbolize_file<'py>(py: Python<'py>, path: String, addresses: Vec<u64>) -> PyResult<Bound<'py, PyList>> {
    let all = blocking(py, || ddprof_core::symbolize::symbolize_file(&path, &addresses))
        .map_err(PyOSError::new_err)?;
    let out = PyList::empty(py);
    for lines in all {
        out.append(lines_to_py(py, &lines)?)?;
    }
    Ok(out)
}

/// Writes the debug-only ELF of `src` to `out` (see `ddprof_core::debugfile`), taking Go's
/// `.gopclntab` from `gopclntab_from` when `src` is a debug file without its bytes.
#[pyfunction]
#[pyo3(signature = (src, out, gopclntab_from = None))]
fn make_debug_file<'py>(
    py: Python<'py>,
    src: String,
    out: String,
    gopclntab_from: Option<String>,
) -> PyResult<Bound<'py, PyDict>> {
    let from = gopclntab_from.as_deref().map(std::path::Path::new);
    let stats = blocking(py, || {
        ddprof_core::debugfile::write_debug_file(src.as_ref(), from, out.as_ref())
    })
    .map_err(to_py_err)?;
    let d = PyDict::new(py);
    d.set_item("input_bytes", stats.input_bytes)?;
    d.set_item("output_bytes", stats.output_bytes)?;
    d.set_item("sections_compressed", stats.sections_compressed)?;
    d.set_item("symtab_entries", stats.symtab_entries)?;
    d.set_item("gopclntab_bytes", stats.gopclntab_bytes)?;
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    pyo3_log::init();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BpfUnavailableError", m.py().get_type::<BpfUnavailableError>())?;
    m.add_class::<Profiler>()?;
    m.add_function(wrap_pyfunction!(symbolize_file, m)?)?;
    m.add_function(wrap_pyfunction!(make_debug_file, m)?)?;
    Ok(())
}
