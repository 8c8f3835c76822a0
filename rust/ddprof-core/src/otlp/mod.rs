//! OTLP profiles (the `v1development` profiles signal of opentelemetry-proto): one export
//! request per period, one profile per group of processes under its own resource, and one
//! dictionary for them all, in one pass over the snapshot's interned tables.
//!
//! Input: a [`Snapshot`], each sampled pid's group, and each group's resource attributes
//! (`service.name`, `host.name`, `container.id`, ...: the caller's tags). Output: the
//! serialized `ExportProfilesServiceRequest` ([`proto`]), for `POST /v1development/profiles`
//! with `Content-Type: application/x-protobuf`. What it holds, by the .proto's rules and
//! OpenTelemetry's semantic conventions:
//! - every dictionary table starts with its zero value (string `""`, `Mapping{}`, ...);
//! - each profile: sample type `samples`/`count`, period type `cpu`/`nanoseconds`, period
//!   `1e9 / frequency`, the period's start and length, a non-zero 16-byte id;
//! - in off-CPU mode (`Snapshot::off_cpu`) a second profile beside each group's CPU one,
//!   sample type `off-cpu`/`nanoseconds` (no period), values `[time switched out]`, of the
//!   stacks threads blocked in;
//! - samples: the stack (leaf first), `[count]`, attributes `process.pid`, `thread.id`
//!   (integers), `thread.name`, `process.executable.name` (when known);
//! - mappings with `process.executable.build_id.gnu` or `.go` when the file has one;
//!   locations with `profile.frame.type` (`native`, `kernel`, `cpython`, `abort-marker` for
//!   the markers of cut stacks); functions interned by (name, system name, file).
//!
//! Non-goals: transport (Python's exporter), links to traces, other sample types.
use std::collections::HashMap;

use prost::Message;

use crate::aggregate::{FrameKind, Snapshot};
use crate::error::{Error, Result};

pub mod proto;

const NS_PER_S: u64 = 1_000_000_000;

/// Resource attributes of each group, in order: `[(key, value)]`.
pub type Resources = Vec<Vec<(String, String)>>;

/// The encoded request and the sample total of each group's profile.
pub struct Request {
    pub bytes: Vec<u8>,
    pub samples: Vec<u64>,
}

/// The export request of `s`: group `g` of `resources` holds the samples of the pids
/// `group_of` maps to `g`. Errors (`InvalidArgument`): a frequency of 0, a sampled pid in no
/// group or in a group out of range.
pub fn encode_request(s: &Snapshot, group_of: &HashMap<u32, usize>, resources: &Resources, scope_version: &str) -> Result<Request> {
    if s.frequency == 0 {
        return Err(Error::InvalidArgument("profile frequency must be positive, got 0".into()));
    }
    let groups = resources.len();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
    for (i, x) in s.samples.iter().enumerate().filter(|(_, x)| x.has_value()) {
        let g = group_of.get(&x.pid).copied().filter(|&g| g < groups).ok_or_else(|| {
            Error::InvalidArgument(format!("pid {} has samples but no group in 0..{groups}", x.pid))
        })?;
        members[g].push(i);
    }
    let mut d = Dictionary::new(s);
    let period = (NS_PER_S / s.frequency) as i64;
    let sample_type = proto::ValueType { type_strindex: d.string("samples"), unit_strindex: d.string("count") };
    let period_type = proto::ValueType { type_strindex: d.string("cpu"), unit_strindex: d.string("nanoseconds") };
    let off_cpu_type = s.off_cpu.then(|| proto::ValueType { type_strindex: d.string("off-cpu"), unit_strindex: d.string("nanoseconds") });
    let mut resource_profiles = Vec::with_capacity(groups);
    let mut totals = Vec::with_capacity(groups);
    for (g, (samples, attributes)) in members.iter().zip(resources).enumerate() {
        let mut total = 0;
        let sample = |d: &mut Dictionary<'_>, i: usize, value: u64| {
            let x = &s.samples[i];
            let mut attribute_indices = vec![d.attribute_int("process.pid", i64::from(x.pid)), d.attribute_int("thread.id", i64::from(x.tid))];
            if !x.thread_name.is_empty() {
                attribute_indices.push(d.attribute_str("thread.name", &x.thread_name));
            }
            if !x.process_name.is_empty() {
                attribute_indices.push(d.attribute_str("process.executable.name", &x.process_name));
            }
            let stack_index = d.stack(x.stack as usize);
            proto::Sample { stack_index, attribute_indices, values: vec![i64::try_from(value).unwrap_or(i64::MAX)] }
        };
        let mut out = Vec::with_capacity(samples.len());
        for &i in samples.iter().filter(|&&i| s.samples[i].count > 0) {
            total += s.samples[i].count;
            out.push(sample(&mut d, i, s.samples[i].count));
        }
        totals.push(total);
        let mut profiles = vec![proto::Profile {
            sample_type: Some(sample_type),
            samples: out,
            time_unix_nano: s.start_ns,
            duration_nano: s.end_ns.saturating_sub(s.start_ns),
            period_type: Some(period_type),
            period,
            profile_id: profile_id(s.start_ns, g),
        }];
        if off_cpu_type.is_some() {
            let off: Vec<proto::Sample> = samples
                .iter()
                .filter(|&&i| s.samples[i].off_cpu_ns > 0)
                .map(|&i| sample(&mut d, i, s.samples[i].off_cpu_ns))
                .collect();
            profiles.push(proto::Profile {
                sample_type: off_cpu_type,
                samples: off,
                time_unix_nano: s.start_ns,
                duration_nano: s.end_ns.saturating_sub(s.start_ns),
                period_type: None,
                period: 0,
                profile_id: profile_id(s.start_ns, g + groups),
            });
        }
        let attributes = attributes
            .iter()
            .map(|(k, v)| proto::KeyValue { key: k.clone(), value: Some(proto::AnyValue { value: Some(proto::Value::StringValue(v.clone())) }) })
            .collect();
        resource_profiles.push(proto::ResourceProfiles {
            resource: Some(proto::Resource { attributes }),
            scope_profiles: vec![proto::ScopeProfiles {
                scope: Some(proto::InstrumentationScope { name: "ddprofiler".into(), version: scope_version.into() }),
                profiles,
            }],
        });
    }
    let request = proto::ExportProfilesServiceRequest { resource_profiles, dictionary: Some(d.finish()) };
    Ok(Request { bytes: request.encode_to_vec(), samples: totals })
}

/// A profile's id: 16 bytes from the period's start and the group, never all zero (which
/// the .proto calls invalid). splitmix64, for spreading bits; not a secret.
fn profile_id(start_ns: u64, group: usize) -> Vec<u8> {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(start_ns ^ (group as u64).rotate_left(32));
    let b = mix(a) | 1;
    [a.to_be_bytes(), b.to_be_bytes()].concat()
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum AttrValue {
    Str(String),
    Int(i64),
}

/// The request's dictionary, filled as the samples need it; snapshot indices to table
/// indices (0 is each table's zero value, so a snapshot index maps to one past it).
struct Dictionary<'a> {
    s: &'a Snapshot,
    d: proto::ProfilesDictionary,
    strings: HashMap<String, i32>,
    attributes: HashMap<(i32, AttrValue), i32>,
    functions: HashMap<(i32, i32, i32), i32>,
    mapping_of: Vec<i32>,
    location_of: Vec<i32>,
    stack_of: Vec<i32>,
}

impl<'a> Dictionary<'a> {
    fn new(s: &'a Snapshot) -> Self {
        let d = proto::ProfilesDictionary {
            mapping_table: vec![proto::Mapping::default()],
            location_table: vec![proto::Location::default()],
            function_table: vec![proto::Function::default()],
            link_table: vec![proto::Link::default()],
            string_table: vec![String::new()],
            attribute_table: vec![proto::KeyValueAndUnit::default()],
            stack_table: vec![proto::Stack::default()],
        };
        Dictionary {
            s,
            d,
            strings: HashMap::from([(String::new(), 0)]),
            attributes: HashMap::new(),
            functions: HashMap::new(),
            mapping_of: vec![0; s.mappings.len()],
            location_of: vec![0; s.frames.len()],
            stack_of: vec![0; s.stacks.len()],
        }
    }

    fn finish(self) -> proto::ProfilesDictionary {
        self.d
    }

    fn string(&mut self, text: &str) -> i32 {
        if let Some(&i) = self.strings.get(text) {
            return i;
        }
        let i = self.d.string_table.len() as i32;
        self.d.string_table.push(text.to_string());
        self.strings.insert(text.to_string(), i);
        i
    }

    fn attribute(&mut self, key: &str, value: AttrValue) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attributes.get(&(key, value.clone())) {
            return i;
        }
        let any = match &value {
            AttrValue::Str(v) => proto::Value::StringValue(v.clone()),
            AttrValue::Int(v) => proto::Value::IntValue(*v),
        };
        let i = self.d.attribute_table.len() as i32;
        self.d.attribute_table.push(proto::KeyValueAndUnit { key_strindex: key, value: Some(proto::AnyValue { value: Some(any) }) });
        self.attributes.insert((key, value), i);
        i
    }

    fn attribute_str(&mut self, key: &str, value: &str) -> i32 {
        self.attribute(key, AttrValue::Str(value.to_string()))
    }

    fn attribute_int(&mut self, key: &str, value: i64) -> i32 {
        self.attribute(key, AttrValue::Int(value))
    }

    fn stack(&mut self, i: usize) -> i32 {
        let Some(frames) = self.s.stacks.get(i) else { return 0 };
        if self.stack_of[i] != 0 {
            return self.stack_of[i];
        }
        let location_indices = frames.iter().map(|&f| self.location(f as usize)).collect();
        let index = self.d.stack_table.len() as i32;
        self.d.stack_table.push(proto::Stack { location_indices });
        self.stack_of[i] = index;
        index
    }

    fn location(&mut self, i: usize) -> i32 {
        let Some(frame) = self.s.frames.get(i) else { return 0 };
        if self.location_of[i] != 0 {
            return self.location_of[i];
        }
        let mapping_index = frame.mapping.map_or(0, |m| self.mapping(m as usize));
        let mut lines = Vec::with_capacity(frame.lines.len());
        for l in frame.lines.iter() {
            let system = if l.system_name.is_empty() { &l.function } else { &l.system_name };
            let key = (self.string(&l.function), self.string(system), self.string(&l.file));
            let next = self.d.function_table.len() as i32;
            let function_index = *self.functions.entry(key).or_insert(next);
            if function_index == next {
                self.d.function_table.push(proto::Function { name_strindex: key.0, system_name_strindex: key.1, filename_strindex: key.2, start_line: 0 });
            }
            lines.push(proto::Line { function_index, line: i64::from(l.line) });
        }
        let kind = match frame.kind {
            FrameKind::Kernel => "kernel",
            FrameKind::Python => "cpython",
            FrameKind::Marker => "abort-marker",
            FrameKind::Native | FrameKind::Jit => "native",
        };
        let attribute_indices = vec![self.attribute_str("profile.frame.type", kind)];
        let index = self.d.location_table.len() as i32;
        self.d.location_table.push(proto::Location { mapping_index, address: frame.address.0, lines, attribute_indices });
        self.location_of[i] = index;
        index
    }

    fn mapping(&mut self, i: usize) -> i32 {
        let Some(m) = self.s.mappings.get(i) else { return 0 };
        if self.mapping_of[i] != 0 {
            return self.mapping_of[i];
        }
        let filename_strindex = self.string(if m.is_kernel { crate::pprof::KERNEL_MAPPING_NAME } else { &m.path });
        let mut attribute_indices = Vec::new();
        if let Some(file) = &m.file {
            if let Some(id) = &file.build_id {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                attribute_indices.push(self.attribute_str("process.executable.build_id.gnu", &hex));
            }
            if let Some(go) = &file.go_build_id {
                attribute_indices.push(self.attribute_str("process.executable.build_id.go", go));
            }
        }
        let index = self.d.mapping_table.len() as i32;
        self.d.mapping_table.push(proto::Mapping { memory_start: m.start.0, memory_limit: m.limit.0, file_offset: m.offset.0, filename_strindex, attribute_indices });
        self.mapping_of[i] = index;
        index
    }
}

#[cfg(test)]
mod tests;
