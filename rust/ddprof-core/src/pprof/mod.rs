//! pprof encoding of a closed period: one pass over the snapshot's interned tables for
//! each profile, no per-sample objects anywhere else.
//!
//! Input: a [`Snapshot`], which profile each sampled pid goes to (a group index), and
//! extra string labels per pid. Output: per group, the serialized *uncompressed*
//! `perftools.profiles.Profile` ([`proto`], encoded by prost), its sample total and whether
//! it carries frames left for the backend to name. Compression, tags and transport are the
//! exporters' business (Python).
//!
//! The Datadog CPU-profile contract (`datadog-contracts.md`, pprof section):
//! - sample types `[cpu-samples/count, cpu-time/nanoseconds]`, period type
//!   `cpu-time/nanoseconds`, `period = 1e9 / frequency`, values `[n, n * period]`, default
//!   sample type `cpu-time`, `time_nanos` = start, `duration_nanos` = end - start;
//! - in off-CPU mode (`Snapshot::off_cpu`) a third sample type `off-cpu-time/nanoseconds`,
//!   the time threads spent switched out in the stack: values `[n, n * period, off_ns]`
//!   (a CPU sample has 0 off-CPU time, an off-CPU stack 0 CPU samples); the default sample
//!   type stays `cpu-time`;
//! - the string table is interned, `""` at index 0;
//! - mappings, then locations, are the snapshot's in its order (the kernel's mapping last),
//!   those the profile's samples use, numbered from 1; a frame without a mapping (markers) has `mapping_id` 0; the
//!   kernel's mapping is named `[kernel.kallsyms]`; `has_*` flags say what the lines of the
//!   mapping's frames hold;
//! - functions are interned by (name, system name, file), `start_line` 0; a frame without
//!   lines (left for the backend, or not resolved) is an address and a mapping only;
//! - sample labels `process_id`, `thread id`, `thread name`, `process name`, the extra
//!   labels of the pid in the order given, `cpu.logical_number`, all strings (ids in
//!   decimal: pprof readers drop a numeric label of 0, and the backend keys on the string
//!   form, as Datadog's host profiler writes them); an empty string label is left out, and
//!   so is a sample with no value (a count of 0 and no off-CPU time);
//! - stacks are written as the aggregate capped them (one cap, one marker, in one place).
//!
//! Non-goals: reading pprof (Python's `ddprofiler.pprof.reader`), any other sample type.
use std::collections::HashMap;

use prost::Message;

use crate::aggregate::{FrameKind, Snapshot};
use crate::error::{Error, Result};

pub mod proto;

/// The pprof mapping name of the kernel (and its modules), as perf and Datadog name it.
pub const KERNEL_MAPPING_NAME: &str = "[kernel.kallsyms]";
pub const LABEL_PID: &str = "process_id";
pub const LABEL_TID: &str = "thread id";
pub const LABEL_THREAD_NAME: &str = "thread name";
pub const LABEL_PROCESS_NAME: &str = "process name";
pub const LABEL_CPU: &str = "cpu.logical_number";
/// The sample type of off-CPU time (off-CPU mode), in nanoseconds.
pub const OFF_CPU_TIME: &str = "off-cpu-time";

const NS_PER_S: u64 = 1_000_000_000;

/// Extra string labels of each pid's samples, in order: `{pid: [(key, value)]}`.
pub type ExtraLabels = HashMap<u32, Vec<(String, String)>>;

/// One encoded profile.
#[derive(Clone, Debug, Default)]
pub struct Encoded {
    /// The serialized, uncompressed `Profile` message.
    pub pprof: Vec<u8>,
    /// Sum of the sample counts.
    pub samples: u64,
    /// Some native frame has no lines and is in a file the backend can know by its id.
    pub backend_frames: bool,
}

/// One profile per group: `group_of` gives each sampled pid's group, in `0..groups`.
/// Errors (`InvalidArgument`): a frequency of 0, a sampled pid in no group or in a group
/// out of range.
pub fn encode_groups(
    s: &Snapshot,
    group_of: &HashMap<u32, usize>,
    groups: usize,
    extra: &ExtraLabels,
) -> Result<Vec<Encoded>> {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, sample) in s.samples.iter().enumerate() {
        if !sample.has_value() {
            continue;
        }
        let group = group_of
            .get(&sample.pid)
            .copied()
            .filter(|&g| g < groups)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "pid {} has samples but no group in 0..{groups}",
                    sample.pid
                ))
            })?;
        members[group].push(i);
    }
    members
        .iter()
        .map(|samples| encode(s, samples, extra))
        .collect()
}

/// The profile of the samples at `samples` (indices into `s.samples`, with a value).
fn encode(s: &Snapshot, samples: &[usize], extra: &ExtraLabels) -> Result<Encoded> {
    if s.frequency == 0 {
        return Err(Error::InvalidArgument(
            "profile frequency must be positive, got 0".into(),
        ));
    }
    let period = (NS_PER_S / s.frequency) as i64;
    let mut strings = Strings::default();
    let mut pb = proto::Profile {
        sample_type: vec![
            proto::ValueType {
                r#type: strings.id("cpu-samples"),
                unit: strings.id("count"),
            },
            proto::ValueType {
                r#type: strings.id("cpu-time"),
                unit: strings.id("nanoseconds"),
            },
        ],
        period_type: Some(proto::ValueType {
            r#type: strings.id("cpu-time"),
            unit: strings.id("nanoseconds"),
        }),
        period,
        default_sample_type: strings.id("cpu-time"),
        time_nanos: clamp_i64(s.start_ns),
        duration_nanos: clamp_i64(s.end_ns.saturating_sub(s.start_ns)),
        ..Default::default()
    };
    if s.off_cpu {
        pb.sample_type.push(proto::ValueType {
            r#type: strings.id(OFF_CPU_TIME),
            unit: strings.id("nanoseconds"),
        });
    }

    // What the samples use: stacks, then frames, then mappings; ids in table order.
    let mut frame_used = vec![false; s.frames.len()];
    let mut stack_seen = vec![false; s.stacks.len()];
    for &i in samples {
        let stack = s.samples[i].stack as usize;
        if let Some(frames) = s.stacks.get(stack) {
            if !std::mem::replace(&mut stack_seen[stack], true) {
                for &f in frames.iter() {
                    if let Some(used) = frame_used.get_mut(f as usize) {
                        *used = true;
                    }
                }
            }
        }
    }
    let mut mapping_id = vec![0u64; s.mappings.len()];
    for (frame, _) in s.frames.iter().zip(&frame_used).filter(|(_, &used)| used) {
        if let Some(m) = frame.mapping.and_then(|m| mapping_id.get_mut(m as usize)) {
            *m = 1; // used; numbered below, in table order
        }
    }
    // The kernel's mapping last: pprof readers take the first mapping for the main binary
    // (`go tool pprof` prints it as `File:`), which a profile of one program should name.
    let order: Vec<usize> = (0..s.mappings.len())
        .filter(|&m| mapping_id[m] != 0 && !s.mappings[m].is_kernel)
        .chain((0..s.mappings.len()).filter(|&m| mapping_id[m] != 0 && s.mappings[m].is_kernel))
        .collect();
    for (next, &m) in order.iter().enumerate() {
        mapping_id[m] = next as u64 + 1;
    }

    let mut flags = vec![Flags::default(); s.mappings.len()];
    let mut backend_frames = false;
    for (frame, _) in s.frames.iter().zip(&frame_used).filter(|(_, &used)| used) {
        let Some(m) = frame
            .mapping
            .map(|m| m as usize)
            .filter(|&m| m < s.mappings.len())
        else {
            continue;
        };
        if frame.lines.is_empty() {
            let mapping = &s.mappings[m];
            backend_frames |= frame.kind == FrameKind::Native
                && !mapping.file_id.is_empty()
                && !mapping.is_kernel;
            continue;
        }
        let f = &mut flags[m];
        f.functions = true;
        f.filenames |= frame.lines.iter().any(|l| !l.file.is_empty());
        f.line_numbers |= frame.lines.iter().any(|l| l.line > 0);
        f.inline_frames |= frame.lines.len() > 1;
    }
    for &m in &order {
        let (mapping, f) = (&s.mappings[m], &flags[m]);
        pb.mapping.push(proto::Mapping {
            id: mapping_id[m],
            memory_start: mapping.start.0,
            memory_limit: mapping.limit.0,
            file_offset: mapping.offset.0,
            filename: strings.id(if mapping.is_kernel {
                KERNEL_MAPPING_NAME
            } else {
                &mapping.path
            }),
            build_id: strings.id(&mapping.file_id),
            has_functions: f.functions,
            has_filenames: f.filenames,
            has_line_numbers: f.line_numbers,
            has_inline_frames: f.inline_frames,
        });
    }

    let mut location_id = vec![0u64; s.frames.len()];
    let mut functions: HashMap<(i64, i64, i64), u64> = HashMap::new();
    for (i, frame) in s.frames.iter().enumerate().filter(|(i, _)| frame_used[*i]) {
        let id = pb.location.len() as u64 + 1;
        location_id[i] = id;
        let mut lines = Vec::with_capacity(frame.lines.len());
        for l in frame.lines.iter() {
            // An empty system name means "same as the name"; pprof wants it spelled out.
            let system = if l.system_name.is_empty() {
                &l.function
            } else {
                &l.system_name
            };
            let key = (
                strings.id(&l.function),
                strings.id(system),
                strings.id(&l.file),
            );
            let next_id = functions.len() as u64 + 1;
            let function_id = *functions.entry(key).or_insert_with(|| {
                pb.function.push(proto::Function {
                    id: next_id,
                    name: key.0,
                    system_name: key.1,
                    filename: key.2,
                    start_line: 0,
                });
                next_id
            });
            lines.push(proto::Line {
                function_id,
                line: i64::from(l.line),
            });
        }
        let mapping_id = frame
            .mapping
            .and_then(|m| mapping_id.get(m as usize).copied())
            .unwrap_or(0);
        pb.location.push(proto::Location {
            id,
            mapping_id,
            address: frame.address.0,
            line: lines,
        });
    }

    let keys = [
        LABEL_PID,
        LABEL_TID,
        LABEL_THREAD_NAME,
        LABEL_PROCESS_NAME,
        LABEL_CPU,
    ]
    .map(|k| strings.id(k));
    let mut total = 0u64;
    pb.sample.reserve(samples.len());
    for &i in samples {
        let x = &s.samples[i];
        total += x.count;
        let count = clamp_i64(x.count);
        let location_ids = s
            .stacks
            .get(x.stack as usize)
            .map(|st| {
                st.iter()
                    .map(|&f| location_id.get(f as usize).copied().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default();
        let mut label = vec![
            proto::Label {
                key: keys[0],
                str: strings.id(&x.pid.to_string()),
            },
            proto::Label {
                key: keys[1],
                str: strings.id(&x.tid.to_string()),
            },
        ];
        for (key, text) in [(keys[2], &x.thread_name), (keys[3], &x.process_name)] {
            if !text.is_empty() {
                label.push(proto::Label {
                    key,
                    str: strings.id(text),
                });
            }
        }
        for (key, text) in extra.get(&x.pid).map(Vec::as_slice).unwrap_or_default() {
            if !text.is_empty() {
                label.push(proto::Label {
                    key: strings.id(key),
                    str: strings.id(text),
                });
            }
        }
        label.push(proto::Label {
            key: keys[4],
            str: strings.id(&x.cpu.to_string()),
        });
        let mut value = vec![count, count.saturating_mul(period)];
        if s.off_cpu {
            value.push(clamp_i64(x.off_cpu_ns));
        }
        pb.sample.push(proto::Sample {
            location_id: location_ids,
            value,
            label,
        });
    }
    pb.string_table = strings.table;
    Ok(Encoded {
        pprof: pb.encode_to_vec(),
        samples: total,
        backend_frames,
    })
}

#[derive(Clone, Copy, Default)]
struct Flags {
    functions: bool,
    filenames: bool,
    line_numbers: bool,
    inline_frames: bool,
}

/// The profile's string table: interned, `""` first.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Default for Strings {
    fn default() -> Self {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Strings {
    fn id(&mut self, text: &str) -> i64 {
        if let Some(&id) = self.index.get(text) {
            return id;
        }
        let id = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), id);
        id
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
