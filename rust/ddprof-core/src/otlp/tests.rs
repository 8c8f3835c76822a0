//! The encoder against a hand-made snapshot, read back with prost.
use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::*;
use crate::addr::{Avma, FileOffset};
use crate::aggregate::{SnapshotFrame, SnapshotMapping, SnapshotSample};
use crate::symbolize::Line;

fn snapshot() -> Snapshot {
    let line = |f: &str| Line { function: f.into(), system_name: String::new(), file: "a.c".into(), line: 7 };
    let frame = |mapping, address, kind, lines: Vec<Line>| SnapshotFrame { mapping, address: Avma(address), kind, lines: Arc::from(lines) };
    Snapshot {
        start_ns: 5_000,
        end_ns: 10_000_005_000,
        frequency: 20,
        mappings: vec![
            SnapshotMapping { start: Avma(0x1000), limit: Avma(0x2000), offset: FileOffset(0), path: "/app".into(), file_id: "x".into(), is_kernel: false, file: None },
            SnapshotMapping { start: Avma(0xffff_0000), limit: Avma(u64::MAX), offset: FileOffset(0), path: "vmlinux".into(), file_id: String::new(), is_kernel: true, file: None },
        ],
        frames: vec![
            frame(Some(0), 0x1100, FrameKind::Native, vec![line("main")]),
            frame(Some(0), 0x1200, FrameKind::Native, vec![line("work")]),
            frame(Some(1), 0xffff_0100, FrameKind::Kernel, vec![line("do_syscall_64")]),
            frame(None, 0, FrameKind::Marker, vec![line("[truncated]")]),
        ],
        stacks: vec![Box::from([1u32, 0]), Box::from([2u32, 1, 0]), Box::from([3u32, 0])],
        samples: vec![
            SnapshotSample { pid: 10, tid: 11, cpu: 0, stack: 0, count: 3, off_cpu_ns: 0, thread_name: "w".into(), process_name: "app".into() },
            SnapshotSample { pid: 20, tid: 20, cpu: 1, stack: 1, count: 2, off_cpu_ns: 0, thread_name: String::new(), process_name: "db".into() },
            SnapshotSample { pid: 10, tid: 10, cpu: 1, stack: 2, count: 1, off_cpu_ns: 0, thread_name: "app".into(), process_name: "app".into() },
        ],
        ..Default::default()
    }
}

#[test]
fn one_request_two_resources_one_dictionary() {
    let resources: Resources = vec![vec![("service.name".into(), "app".into())], vec![("service.name".into(), "db".into())]];
    let r = encode_request(&snapshot(), &HashMap::from([(10, 0), (20, 1)]), &resources, "1.0").expect("encodes");
    assert_eq!(r.samples, [4, 2]);
    let req = proto::ExportProfilesServiceRequest::decode(r.bytes.as_slice()).expect("decodes");
    let d = req.dictionary.expect("a dictionary");
    // Zero values first, as the .proto requires.
    assert_eq!(d.string_table[0], "");
    assert_eq!((d.mapping_table[0].clone(), d.location_table[0].clone()), (proto::Mapping::default(), proto::Location::default()));
    assert_eq!(d.stack_table[0], proto::Stack::default());
    let s = |i: i32| d.string_table[i as usize].as_str();
    let fname = |loc: i32| {
        let l = &d.location_table[loc as usize];
        s(d.function_table[l.lines[0].function_index as usize].name_strindex)
    };
    assert_eq!(req.resource_profiles.len(), 2);
    let app = &req.resource_profiles[0];
    let attr = &app.resource.as_ref().expect("resource").attributes[0];
    assert_eq!(attr.key, "service.name");
    let p = &app.scope_profiles[0].profiles[0];
    let st = p.sample_type.expect("type");
    assert_eq!((s(st.type_strindex), s(st.unit_strindex), p.period, p.time_unix_nano, p.duration_nano), ("samples", "count", 50_000_000, 5_000, 10_000_000_000));
    assert!(p.profile_id.len() == 16 && p.profile_id.iter().any(|&b| b != 0));
    let stacks: Vec<(Vec<&str>, i64)> = p
        .samples
        .iter()
        .map(|x| (d.stack_table[x.stack_index as usize].location_indices.iter().map(|&l| fname(l)).collect(), x.values[0]))
        .collect();
    assert_eq!(stacks, [(vec!["work", "main"], 3), (vec!["[truncated]", "main"], 1)]);
    let attrs: Vec<(&str, String)> = p.samples[0]
        .attribute_indices
        .iter()
        .map(|&i| {
            let a = &d.attribute_table[i as usize];
            let v = match a.value.as_ref().and_then(|v| v.value.clone()) {
                Some(proto::Value::StringValue(t)) => t,
                Some(proto::Value::IntValue(n)) => n.to_string(),
                None => String::new(),
            };
            (s(a.key_strindex), v)
        })
        .collect();
    assert_eq!(attrs, [("process.pid", "10".into()), ("thread.id", "11".into()), ("thread.name", "w".into()), ("process.executable.name", "app".into())]);
    // The kernel location: its mapping named as perf does, its frame type said.
    let db = &req.resource_profiles[1].scope_profiles[0].profiles[0];
    let stack = &d.stack_table[db.samples[0].stack_index as usize];
    let kernel = &d.location_table[stack.location_indices[0] as usize];
    assert_eq!(s(d.mapping_table[kernel.mapping_index as usize].filename_strindex), "[kernel.kallsyms]");
    let t = &d.attribute_table[kernel.attribute_indices[0] as usize];
    assert_eq!((s(t.key_strindex), t.value.clone().and_then(|v| v.value)), ("profile.frame.type", Some(proto::Value::StringValue("kernel".into()))));
    // Shared: main is one location for both resources' stacks.
    assert_eq!(d.location_table.iter().filter(|l| l.address == 0x1100).count(), 1);
}

#[test]
fn a_pid_without_a_group_is_an_error() {
    let err = encode_request(&snapshot(), &HashMap::from([(10, 0)]), &vec![vec![]], "1").err().expect("pid 20");
    assert!(err.to_string().contains("pid 20"), "{err}");
}

#[test]
fn off_cpu_mode_adds_a_profile_of_its_own() {
    let mut snap = snapshot();
    snap.off_cpu = true;
    snap.samples[0].off_cpu_ns = 0;
    // pid 10 blocked 2 ms in stack 2, never seen on CPU there.
    snap.samples.push(SnapshotSample { pid: 10, tid: 10, cpu: 0, stack: 2, count: 0, off_cpu_ns: 2_000_000, thread_name: "app".into(), process_name: "app".into() });
    let resources: Resources = vec![vec![], vec![]];
    let r = encode_request(&snap, &HashMap::from([(10, 0), (20, 1)]), &resources, "1.0").expect("encodes");
    assert_eq!(r.samples, [4, 2], "the CPU totals");
    let req = proto::ExportProfilesServiceRequest::decode(r.bytes.as_slice()).expect("decodes");
    let d = req.dictionary.expect("a dictionary");
    let profiles = &req.resource_profiles[0].scope_profiles[0].profiles;
    assert_eq!(profiles.len(), 2);
    let st = profiles[1].sample_type.expect("a type");
    assert_eq!((d.string_table[st.type_strindex as usize].as_str(), d.string_table[st.unit_strindex as usize].as_str()), ("off-cpu", "nanoseconds"));
    let values: Vec<Vec<i64>> = profiles[1].samples.iter().map(|x| x.values.clone()).collect();
    assert_eq!(values, [vec![2_000_000]]);
    assert!(profiles[0].samples.iter().all(|x| x.values[0] > 0), "no 0-count sample in the CPU profile");
    assert_ne!(profiles[0].profile_id, profiles[1].profile_id);
    // pid 20 blocked nowhere: its off-CPU profile is empty but there.
    assert_eq!(req.resource_profiles[1].scope_profiles[0].profiles[1].samples.len(), 0);
}
