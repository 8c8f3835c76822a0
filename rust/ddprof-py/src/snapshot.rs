//! The snapshot as Python sees it, and the pprof encoding of one.
//!
//! A [`Snapshot`] keeps the core's tables in Rust: the continuous profiler encodes each
//! period's profiles from them in one pass ([`Snapshot::encode_pprofs`]) and asks only for
//! the little it needs in Python (pids, processes, the sampled mappings). The tables cross
//! as plain tuples only when asked for (`ddprofiler.Profile` asks on first use), built on
//! each access. [`Snapshot::from_tables`] makes one of hand-made tables (a `Profile` built
//! in Python, or a part of one), so there is one pprof writer and one OTLP writer.
use std::collections::HashMap;
use std::sync::Arc;

use ddprof_core::addr::{Avma, FileOffset};
use ddprof_core::aggregate::{
    FrameKind, Snapshot as CoreSnapshot, SnapshotFrame, SnapshotMapping, SnapshotSample,
};
use ddprof_core::otlp::{self, Resources};
use ddprof_core::pprof::{encode_groups, Encoded, ExtraLabels};
use ddprof_core::symbolize::Line;
use ddprof_core::{Error, Stats};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::{blocking, to_py_err, Binary};

/// (function, system_name, file, line), as `_native.pyi` names it `_RawLine`.
type RawLine = (String, String, String, u32);

pub(crate) fn lines_to_py<'py>(py: Python<'py>, lines: &[Line]) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for l in lines {
        out.append((
            l.function.as_str(),
            l.system_name.as_str(),
            l.file.as_str(),
            l.line,
        ))?;
    }
    Ok(out)
}

pub(crate) fn stats_to_py<'py>(py: Python<'py>, stats: &Stats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (c, v) in stats.iter() {
        d.set_item(c.name(), v)?;
    }
    Ok(d)
}

#[pyclass(module = "ddprofiler._native", frozen)]
pub(crate) struct Snapshot {
    pub(crate) core: Arc<CoreSnapshot>,
}

#[pymethods]
impl Snapshot {
    #[getter]
    fn start_ns(&self) -> u64 {
        self.core.start_ns
    }
    #[getter]
    fn end_ns(&self) -> u64 {
        self.core.end_ns
    }
    #[getter]
    fn frequency(&self) -> u64 {
        self.core.frequency
    }
    #[getter]
    fn total(&self) -> u64 {
        self.core.total()
    }
    #[getter]
    fn off_cpu(&self) -> bool {
        self.core.off_cpu
    }
    #[getter]
    fn off_cpu_total(&self) -> u64 {
        self.core.off_cpu_total()
    }

    #[getter]
    fn mappings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for m in &self.core.mappings {
            let binary = m
                .file
                .as_ref()
                .map(|f| Py::new(py, Binary { file: f.clone() }))
                .transpose()?;
            out.append((
                m.start.0,
                m.limit.0,
                m.offset.0,
                m.path.as_str(),
                m.file_id.as_str(),
                m.is_kernel,
                binary,
            ))?;
        }
        Ok(out)
    }

    #[getter]
    fn frames<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for f in &self.core.frames {
            let mapping = f.mapping.map_or(-1, i64::from);
            out.append((
                mapping,
                f.address.0,
                f.kind.as_str(),
                lines_to_py(py, &f.lines)?,
            ))?;
        }
        Ok(out)
    }

    #[getter]
    fn stacks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for st in &self.core.stacks {
            out.append(PyTuple::new(py, st.iter())?)?;
        }
        Ok(out)
    }

    #[getter]
    fn samples<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for x in &self.core.samples {
            out.append((
                x.pid,
                x.tid,
                x.cpu,
                x.stack,
                x.count,
                x.thread_name.as_str(),
                x.process_name.as_str(),
                x.off_cpu_ns,
            ))?;
        }
        Ok(out)
    }

    #[getter]
    fn processes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for p in &self.core.processes {
            let env = PyDict::new(py);
            for (k, v) in &p.env {
                env.set_item(k, v)?;
            }
            out.append((
                p.pid,
                p.name.as_str(),
                p.exe.as_str(),
                env,
                p.cgroup.as_str(),
            ))?;
        }
        Ok(out)
    }

    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_to_py(py, &self.core.stats)
    }

    fn sampled_pids(&self) -> Vec<u32> {
        self.core.sampled_pids()
    }

    fn sampled_mappings(&self) -> Vec<u32> {
        self.core.sampled_mappings()
    }

    #[pyo3(signature = (group_of, groups, labels = None))]
    fn encode_pprofs<'py>(
        &self,
        py: Python<'py>,
        group_of: HashMap<u32, usize>,
        groups: usize,
        labels: Option<HashMap<u32, Vec<(String, String)>>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let core = self.core.clone();
        let labels: ExtraLabels = labels.unwrap_or_default();
        let out = blocking(py, move || encode_groups(&core, &group_of, groups, &labels))
            .map_err(|e| to_py_err(py, e))?;
        encoded_to_py(py, out)
    }

    fn encode_otlp<'py>(
        &self,
        py: Python<'py>,
        group_of: HashMap<u32, usize>,
        resources: Resources,
        version: String,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<u64>)> {
        let core = self.core.clone();
        let r = blocking(py, move || otlp::encode_request(&core, &group_of, &resources, &version)).map_err(|e| to_py_err(py, e))?;
        Ok((PyBytes::new(py, &r.bytes), r.samples))
    }

    /// A snapshot of hand-made tables (shaped as a snapshot's, the mappings without their
    /// binary), so that a `Profile` built in Python is encoded by the same encoders.
    #[staticmethod]
    #[pyo3(signature = (start_ns, end_ns, frequency, mappings, frames, stacks, samples, off_cpu = false))]
    #[allow(clippy::too_many_arguments)]
    fn from_tables(
        py: Python<'_>,
        start_ns: u64,
        end_ns: u64,
        frequency: u64,
        mappings: Vec<RawMapping>,
        frames: Vec<RawFrame>,
        stacks: Vec<Vec<u32>>,
        samples: Vec<RawSample>,
        off_cpu: bool,
    ) -> PyResult<Snapshot> {
        let mut core = core_of(start_ns, end_ns, frequency, mappings, frames, stacks, samples).map_err(|e| to_py_err(py, e))?;
        core.off_cpu = off_cpu;
        Ok(Snapshot { core: Arc::new(core) })
    }

    fn __repr__(&self) -> String {
        let s = &self.core;
        format!(
            "Snapshot(samples={}, stacks={}, frames={}, mappings={})",
            s.samples.len(),
            s.stacks.len(),
            s.frames.len(),
            s.mappings.len()
        )
    }
}

fn encoded_to_py(py: Python<'_>, out: Vec<Encoded>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for e in out {
        list.append((PyBytes::new(py, &e.pprof), e.samples, e.backend_frames))?;
    }
    Ok(list)
}

fn frame_kind(kind: &str) -> Result<FrameKind, Error> {
    Ok(match kind {
        "native" => FrameKind::Native,
        "kernel" => FrameKind::Kernel,
        "jit" => FrameKind::Jit,
        "python" => FrameKind::Python,
        "marker" => FrameKind::Marker,
        other => {
            return Err(Error::InvalidArgument(format!(
                "frame kind {other:?} is not native, kernel, jit, python or marker"
            )))
        }
    })
}

type RawMapping = (u64, u64, u64, String, String, bool);
type RawFrame = (i64, u64, String, Vec<RawLine>);
/// (pid, tid, cpu, stack, count, thread name, process name, off-CPU ns).
type RawSample = (u32, u32, u32, u32, u64, String, String, u64);

/// A core snapshot of hand-made tables (shaped as `Snapshot`'s, the mappings without their
/// binary). Errors: an index out of range, an unknown frame kind.
#[allow(clippy::too_many_arguments)]
fn core_of(
    start_ns: u64,
    end_ns: u64,
    frequency: u64,
    mappings: Vec<RawMapping>,
    frames: Vec<RawFrame>,
    stacks: Vec<Vec<u32>>,
    samples: Vec<RawSample>,
) -> Result<CoreSnapshot, Error> {
    let n_mappings = mappings.len();
    let n_frames = frames.len();
    let mut snap = CoreSnapshot { start_ns, end_ns, frequency, ..Default::default() };
    snap.mappings = mappings
        .into_iter()
        .map(|(start, limit, offset, path, file_id, is_kernel)| SnapshotMapping {
            start: Avma(start),
            limit: Avma(limit),
            offset: FileOffset(offset),
            path,
            file_id,
            is_kernel,
            file: None,
        })
        .collect();
    for (mapping, address, kind, lines) in frames {
        let mapping = match u32::try_from(mapping) {
            Ok(m) if (m as usize) < n_mappings => Some(m),
            _ if mapping < 0 => None,
            _ => return Err(Error::InvalidArgument(format!("frame mapping {mapping} is not below {n_mappings}"))),
        };
        let lines: Vec<Line> =
            lines.into_iter().map(|(function, system_name, file, line)| Line { function, system_name, file, line }).collect();
        snap.frames.push(SnapshotFrame { mapping, address: Avma(address), kind: frame_kind(&kind)?, lines: Arc::from(lines) });
    }
    for st in stacks {
        if let Some(f) = st.iter().find(|&&f| f as usize >= n_frames) {
            return Err(Error::InvalidArgument(format!("stack frame {f} is not below {n_frames}")));
        }
        snap.stacks.push(st.into_boxed_slice());
    }
    for (pid, tid, cpu, stack, count, thread_name, process_name, off_cpu_ns) in samples {
        if stack as usize >= snap.stacks.len() {
            return Err(Error::InvalidArgument(format!("sample stack {stack} is not below {}", snap.stacks.len())));
        }
        snap.samples.push(SnapshotSample { pid, tid, cpu, stack, count, off_cpu_ns, thread_name, process_name });
    }
    Ok(snap)
}
