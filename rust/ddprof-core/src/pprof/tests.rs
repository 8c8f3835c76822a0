//! The encoder against hand-made snapshots, read back with prost.
use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;

use super::*;
use crate::addr::{Avma, FileOffset};
use crate::aggregate::{SnapshotFrame, SnapshotMapping, SnapshotSample};
use crate::symbolize::Line;

fn line(function: &str, system_name: &str, file: &str, line: u32) -> Line {
    Line {
        function: function.into(),
        system_name: system_name.into(),
        file: file.into(),
        line,
    }
}

fn mapping(start: u64, path: &str, id: &str, is_kernel: bool) -> SnapshotMapping {
    SnapshotMapping {
        start: Avma(start),
        limit: Avma(start + 0x1000),
        offset: FileOffset(0x200),
        path: path.into(),
        file_id: id.into(),
        is_kernel,
        file: None,
    }
}

fn frame(mapping: Option<u32>, address: u64, kind: FrameKind, lines: Vec<Line>) -> SnapshotFrame {
    SnapshotFrame {
        mapping,
        address: Avma(address),
        kind,
        lines: Arc::from(lines),
    }
}

fn sample(pid: u32, stack: u32, count: u64) -> SnapshotSample {
    SnapshotSample {
        pid,
        tid: pid + 1,
        cpu: 0,
        stack,
        count,
        off_cpu_ns: 0,
        thread_name: "worker".into(),
        process_name: String::new(),
    }
}

/// Two processes: 10 runs /app (an inlined frame and a frame left for the backend), 20 is
/// in the kernel under a marker-less frame of libc; a third mapping nobody samples.
fn snapshot() -> Snapshot {
    Snapshot {
        start_ns: 1_000,
        end_ns: 10_001_000,
        frequency: 100,
        mappings: vec![
            mapping(0x1000, "/app", "abc", false),
            mapping(0x9000, "/unused.so", "zzz", false),
            mapping(0xffff_0000, "vmlinux", "", true),
            mapping(0x5000, "/libc.so", "cde", false),
        ],
        frames: vec![
            frame(
                Some(0),
                0x1100,
                FrameKind::Native,
                vec![
                    line("inner", "_Z5innerv", "app.cc", 42),
                    line("outer", "", "app.cc", 7),
                ],
            ),
            frame(Some(0), 0x1200, FrameKind::Native, vec![]),
            frame(
                Some(2),
                0xffff_0100,
                FrameKind::Kernel,
                vec![line("do_syscall_64", "", "", 0)],
            ),
            frame(
                Some(3),
                0x5100,
                FrameKind::Native,
                vec![line("read", "", "", 0)],
            ),
            frame(
                None,
                0,
                FrameKind::Marker,
                vec![line("[truncated]", "", "", 0)],
            ),
            frame(
                Some(1),
                0x9100,
                FrameKind::Native,
                vec![line("never", "", "", 0)],
            ),
        ],
        stacks: vec![
            Box::from([0u32, 1]),
            Box::from([2u32, 3, 4]),
            Box::from([5u32]),
        ],
        samples: vec![sample(10, 0, 3), sample(20, 1, 2), sample(10, 2, 0)],
        ..Default::default()
    }
}

/// One profile of every sample (every pid in group 0).
fn encode_all(s: &Snapshot, extra: &ExtraLabels) -> Result<Encoded> {
    let pids: HashMap<u32, usize> = s.samples.iter().map(|x| (x.pid, 0)).collect();
    Ok(encode_groups(s, &pids, 1, extra)?.remove(0))
}

fn decode(e: &Encoded) -> proto::Profile {
    proto::Profile::decode(e.pprof.as_slice()).expect("the encoder's output decodes")
}

fn s(p: &proto::Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

#[test]
fn one_profile_follows_the_contract() {
    let extra: ExtraLabels = HashMap::from([(
        10,
        vec![
            ("container_id".to_string(), "c1".to_string()),
            ("pod_name".to_string(), String::new()),
        ],
    )]);
    let e = encode_all(&snapshot(), &extra).expect("encodes");
    assert_eq!(e.samples, 5);
    assert!(
        e.backend_frames,
        "0x1200 in /app has no lines and a build id"
    );
    let p = decode(&e);
    assert_eq!(s(&p, 0), "");
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (s(&p, t.r#type), s(&p, t.unit)))
        .collect();
    assert_eq!(
        types,
        [("cpu-samples", "count"), ("cpu-time", "nanoseconds")]
    );
    let pt = p.period_type.expect("period type");
    assert_eq!(
        (s(&p, pt.r#type), s(&p, pt.unit), p.period),
        ("cpu-time", "nanoseconds", 10_000_000)
    );
    assert_eq!(
        (s(&p, p.default_sample_type), p.time_nanos, p.duration_nanos),
        ("cpu-time", 1_000, 10_000_000)
    );

    // The unused mapping and frame are left out; ids follow the table order.
    let maps: Vec<(u64, &str, &str, u64, u64)> = p
        .mapping
        .iter()
        .map(|m| {
            (
                m.id,
                s(&p, m.filename),
                s(&p, m.build_id),
                m.memory_start,
                m.file_offset,
            )
        })
        .collect();
    assert_eq!(
        maps,
        [
            (1, "/app", "abc", 0x1000, 0x200),
            (2, "/libc.so", "cde", 0x5000, 0x200),
            (3, "[kernel.kallsyms]", "", 0xffff_0000, 0x200)
        ]
    );
    let app = &p.mapping[0];
    assert!(
        app.has_functions && app.has_filenames && app.has_line_numbers && app.has_inline_frames
    );
    let libc = &p.mapping[1];
    assert!(
        libc.has_functions
            && !libc.has_filenames
            && !libc.has_line_numbers
            && !libc.has_inline_frames
    );

    let locs: Vec<(u64, u64, u64, usize)> = p
        .location
        .iter()
        .map(|l| (l.id, l.mapping_id, l.address, l.line.len()))
        .collect();
    assert_eq!(
        locs,
        [
            (1, 1, 0x1100, 2),
            (2, 1, 0x1200, 0),
            (3, 3, 0xffff_0100, 1),
            (4, 2, 0x5100, 1),
            (5, 0, 0, 1)
        ]
    );
    let functions: HashMap<u64, (&str, &str, &str)> = p
        .function
        .iter()
        .map(|f| {
            (
                f.id,
                (s(&p, f.name), s(&p, f.system_name), s(&p, f.filename)),
            )
        })
        .collect();
    let inner = p.location[0].line[0];
    assert_eq!(
        (functions[&inner.function_id], inner.line),
        (("inner", "_Z5innerv", "app.cc"), 42)
    );
    // "" as a system name means the same as the name.
    assert_eq!(
        functions[&p.location[0].line[1].function_id],
        ("outer", "outer", "app.cc")
    );
    assert_eq!(
        p.function.len(),
        5,
        "inner, outer, do_syscall_64, read, [truncated]"
    );

    // The count-0 sample is not written; labels are strings, empty ones left out.
    assert_eq!(p.sample.len(), 2);
    let labels = |x: &proto::Sample| -> Vec<(String, String)> {
        x.label
            .iter()
            .map(|l| (s(&p, l.key).to_string(), s(&p, l.str).to_string()))
            .collect()
    };
    assert_eq!(
        (
            p.sample[0].location_id.as_slice(),
            p.sample[0].value.as_slice()
        ),
        ([1u64, 2].as_slice(), [3i64, 30_000_000].as_slice())
    );
    let want = |pid: &str, tid: &str, extra: &[(&str, &str)]| -> Vec<(String, String)> {
        let mut v = vec![
            ("process_id", pid),
            ("thread id", tid),
            ("thread name", "worker"),
        ];
        v.extend_from_slice(extra);
        v.push(("cpu.logical_number", "0"));
        v.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        labels(&p.sample[0]),
        want("10", "11", &[("container_id", "c1")])
    );
    assert_eq!(p.sample[1].location_id, [3, 4, 5]);
    assert_eq!(labels(&p.sample[1]), want("20", "21", &[]));
}

#[test]
fn groups_hold_only_their_samples_and_tables() {
    let groups = HashMap::from([(10, 1), (20, 0)]);
    let out = encode_groups(&snapshot(), &groups, 2, &ExtraLabels::new()).expect("encodes");
    let (kernel, app) = (decode(&out[0]), decode(&out[1]));
    assert_eq!((out[0].samples, out[1].samples), (2, 3));
    assert!(!out[0].backend_frames && out[1].backend_frames);
    let names = |p: &proto::Profile| {
        p.mapping
            .iter()
            .map(|m| p.string_table[m.filename as usize].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&kernel), ["/libc.so", "[kernel.kallsyms]"], "the kernel last");
    assert_eq!(names(&app), ["/app"]);
    assert_eq!(
        kernel
            .location
            .iter()
            .map(|l| (l.id, l.mapping_id))
            .collect::<Vec<_>>(),
        [(1, 2), (2, 1), (3, 0)]
    );
    assert_eq!(kernel.sample[0].location_id, [1, 2, 3]);
    assert!(
        !app.string_table.iter().any(|t| t == "read"),
        "another group's functions stay out"
    );
}

#[test]
fn a_sampled_pid_without_a_group_is_an_error() {
    let err = encode_groups(
        &snapshot(),
        &HashMap::from([(10, 0)]),
        1,
        &ExtraLabels::new(),
    )
    .expect_err("pid 20 has no group");
    assert!(err.to_string().contains("pid 20"), "{err}");
    let err = encode_groups(
        &snapshot(),
        &HashMap::from([(10, 0), (20, 3)]),
        2,
        &ExtraLabels::new(),
    )
    .expect_err("group 3 of 2");
    assert!(err.to_string().contains("pid 20"), "{err}");
}

#[test]
fn a_frequency_of_zero_is_an_error() {
    let snap = Snapshot {
        frequency: 0,
        ..snapshot()
    };
    assert!(encode_all(&snap, &ExtraLabels::new()).is_err());
}

#[test]
fn snapshot_helpers_see_only_counted_samples() {
    let snap = snapshot();
    assert_eq!(snap.sampled_pids(), [10, 20]);
    assert_eq!(
        snap.sampled_mappings(),
        [0, 2, 3],
        "the count-0 sample's /unused.so is out"
    );
    assert_eq!(snap.total(), 5);
}

#[test]
fn off_cpu_mode_adds_its_sample_type_and_value() {
    let mut snap = snapshot();
    // Without off-CPU mode: two sample types, whatever the samples carry.
    let plain = decode(&encode_all(&snap, &ExtraLabels::new()).expect("encodes"));
    assert_eq!(plain.sample_type.len(), 2);
    snap.off_cpu = true;
    // Stack 2 blocked 250 ms and was never seen on CPU: written, with 0 CPU samples.
    snap.samples[2].off_cpu_ns = 250_000_000;
    let e = encode_all(&snap, &ExtraLabels::new()).expect("encodes");
    assert_eq!(e.samples, 5, "the CPU sample total");
    let p = decode(&e);
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(&p, t.r#type), s(&p, t.unit))).collect();
    assert_eq!(types, [("cpu-samples", "count"), ("cpu-time", "nanoseconds"), ("off-cpu-time", "nanoseconds")]);
    assert_eq!(s(&p, p.default_sample_type), "cpu-time", "the default stays CPU time");
    let values: Vec<Vec<i64>> = p.sample.iter().map(|x| x.value.clone()).collect();
    assert_eq!(values, [vec![3, 30_000_000, 0], vec![2, 20_000_000, 0], vec![0, 0, 250_000_000]]);
    assert_eq!(snap.off_cpu_total(), 250_000_000);
    assert_eq!(snap.sampled_pids(), [10, 20]);
}
