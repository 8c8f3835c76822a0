"""Off-CPU mode (`record --off-cpu`): the time threads spend switched out, by the stack they
blocked in, as the profile's `off-cpu-time` sample type beside the CPU samples.

With real BPF: a C workload (tests/workloads/offcpu.c) whose `wait_here` sleeps in
nanosleep and whose `burn_here` burns CPU, and which measures its own time asleep. The
off-CPU time under `wait_here` must match that time (rate 1), with the kernel's sleep
frames on top; `burn_here` must have the CPU samples and little off-CPU time (only what
preemption gave it); `go tool pprof -sample_index=off-cpu-time` must read it; the per-CPU
cap must count what it drops. Without BPF: the formats and the report choose the value,
and the pprof round trip keeps it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ddprofiler import Frame, Line, Profile, Sample, formats
from helpers import record

FREQ = "99"
# The summary line record prints in off-CPU mode (cli.py).
SUMMARY = re.compile(r"off-CPU: ([\d.]+) s switched out; (\d+) of (\d+) switch-outs recorded \((\d+) over the cap\), "
                     r"(\d+) joined")


def record_command(out, *options, command):
    """`record OPTIONS -o OUT -- COMMAND` to completion (the output before the command)."""
    argv = [sys.executable, "-m", "ddprofiler", "record", *map(str, options), "-o", str(out), "--", *map(str, command)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.exists(), f"record exited {done.returncode}:\n{done.stderr}"
    return done


def load_profile(path) -> Profile:
    from ddprofiler.pprof.reader import read_pprof, to_profile

    return to_profile(read_pprof(str(path)))


def off_cpu_under(profile: Profile, function: str) -> int:
    return sum(s.off_cpu_ns for s in profile.samples
               if any(function in profile.frames[i].functions for i in profile.stacks[s.stack]))


def cpu_under(profile: Profile, function: str) -> int:
    return sum(s.count for s in profile.samples
               if any(function in profile.frames[i].functions for i in profile.stacks[s.stack]))


def blocked_ns(stdout: str) -> int:
    m = re.search(r"^blocked_ns (\d+)$", stdout, re.MULTILINE)
    assert m, f"the workload did not report its time asleep:\n{stdout}"
    return int(m.group(1))


@pytest.mark.bpf
def test_off_cpu_time_goes_to_the_blocking_stack(workloads, tmp_path, go_binary):
    out = tmp_path / "off.pprof"
    # 10 rounds: 200 ms asleep in wait_here, 100 ms of CPU in burn_here.
    done = record_command(out, "--off-cpu", "-F", FREQ, command=[workloads["offcpu"], 10, 200, 100])
    asleep = blocked_ns(done.stdout)
    profile = load_profile(out)
    assert profile.off_cpu, "the pprof has no off-cpu-time sample type"
    assert SUMMARY.search(done.stderr), f"no off-CPU summary:\n{done.stderr}"
    print(done.stderr)

    waited = off_cpu_under(profile, "wait_here")
    assert 0.7 * asleep <= waited <= 1.3 * asleep, (
        f"off-CPU time under wait_here {waited / 1e9:.3f} s, the workload slept {asleep / 1e9:.3f} s")
    # The blocking stack: the kernel's sleep on top of wait_here (and main below it).
    sleeping = [s for s in profile.samples if s.off_cpu_ns > 0
                and any("wait_here" in profile.frames[i].functions for i in profile.stacks[s.stack])]
    names = [f.name for f in profile.stack(max(sleeping, key=lambda s: s.off_cpu_ns))]
    assert "schedule" in names and any("nanosleep" in n for n in names), names
    assert names.index("schedule") < names.index("wait_here") < names.index("main"), names
    kinds = {f.kind for f in profile.stack(sleeping[0])}
    assert {"kernel", "native"} <= kinds
    # Each stack carries one value: CPU samples carry no off-CPU time and the other way.
    assert all(s.count == 0 or s.off_cpu_ns == 0 for s in profile.samples)
    # burn_here has the CPU samples (about 1 s at 99 Hz), wait_here almost none; burn_here's
    # off-CPU time is only preemption (as long as the machine's load makes it), marked so:
    # it never blocks by its own choice.
    burned = cpu_under(profile, "burn_here")
    assert burned >= 40, f"only {burned} CPU samples in burn_here"
    assert cpu_under(profile, "wait_here") <= max(3, 0.05 * profile.total)
    def blocked_under(function: str) -> int:  # off-CPU time not marked [preempted]
        return sum(s.off_cpu_ns for s in profile.samples
                   if function in (names := {n for i in profile.stacks[s.stack] for n in profile.frames[i].functions})
                   and "[preempted]" not in names)
    assert blocked_under("burn_here") <= 0.02 * waited, f"burn_here blocked {blocked_under('burn_here') / 1e9:.3f} s"
    assert blocked_under("wait_here") >= 0.7 * asleep, "the sleeps are blocking, not preemption"
    assert profile.check_value("off-cpu") == "off-cpu"

    # An independent reader sees the sample type and the function.
    top = subprocess.run([go_binary, "tool", "pprof", "-sample_index=off-cpu-time", "-top", str(out)],
                         capture_output=True, text=True, timeout=600,
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GOTOOLCHAIN": "local",
                              "PPROF_TMPDIR": str(tmp_path), "GOCACHE": "/tmp/ddprofiler-test-gocache"})
    assert top.returncode == 0, top.stderr
    assert "Type: off-cpu-time" in top.stdout and "wait_here" in top.stdout, top.stdout


@pytest.mark.bpf
def test_the_cap_counts_what_it_drops(workloads, tmp_path):
    out = tmp_path / "capped.pprof"
    # About 1000 switch-outs a second (1 ms sleeps, no burn) for ~2 s, a cap of 5 a second.
    done = record_command(out, "--off-cpu", "--off-cpu-cap", 5, "-F", FREQ, command=[workloads["offcpu"], 2000, 1, 0])
    m = SUMMARY.search(done.stderr)
    assert m, f"no off-CPU summary:\n{done.stderr}"
    recorded, switches, capped = int(m.group(2)), int(m.group(3)), int(m.group(4))
    print(done.stderr)
    assert switches >= 1000 and capped > 0, done.stderr
    assert recorded + capped == switches, "rate 1: every switch-out is recorded or capped"
    seconds = load_profile(out).duration_s
    cpus = os.cpu_count() or 1
    assert recorded <= 5 * cpus * (seconds + 2), f"{recorded} stacks recorded in {seconds:.1f} s at 5/s per CPU"


def test_record_refuses_off_cpu_options_without_it(tmp_path):
    res = record(tmp_path / "x.pprof", "--value", "off-cpu", "-d", "1")
    assert res.proc.returncode == 2 and "--value off-cpu needs --off-cpu" in res.proc.stderr
    res = record(tmp_path / "x.pprof", "--off-cpu-rate", "0.5", "-d", "1")
    assert res.proc.returncode == 2 and "--off-cpu" in res.proc.stderr


def hand_made(off_cpu: bool = True) -> Profile:
    main = Frame(0x1000, None, "native", (Line("main", "", "", 0),))
    wait = Frame(0x1100, None, "native", (Line("wait_here", "", "", 0),))
    burn = Frame(0x1200, None, "native", (Line("burn_here", "", "", 0),))
    sched = Frame(0xFFFF0000, None, "kernel", (Line("schedule", "", "", 0),))
    samples = [Sample(7, 7, 0, 0, 5, "w", "w"),                   # burn_here on CPU
               Sample(7, 7, 1, 1, 0, "w", "w", 400_000_000),      # wait_here switched out
               Sample(7, 7, 1, 0, 0, "w", "w", 1_000_000)]        # burn_here preempted
    return Profile(1_000, 2_000_000_000, 100, [], [main, wait, burn, sched],
                   [(2, 0), (3, 1, 0)], samples, off_cpu=off_cpu)


def test_formats_and_report_choose_the_value():
    from ddprofiler import report

    p = hand_made()
    assert formats.collapsed(p) == ["w;main;burn_here 5"]
    assert formats.collapsed(p, "off-cpu") == ["w;main;burn_here 1000000", "w;main;wait_here;schedule 400000000"]
    assert p.top(1, value="off-cpu")[0].function == "schedule"
    rows = report.top_table(p, 5, "total", value="off-cpu")
    assert "0.40 s off-CPU" in rows[0] and "wait_here" in "\n".join(rows), rows
    weights = formats.speedscope(p, value="off-cpu")["profiles"][0]["weights"]  # type: ignore[index]
    assert sorted(weights) == [1_000_000, 400_000_000]
    assert p.off_cpu_total_ns == 401_000_000
    with pytest.raises(ValueError, match="no off-CPU time"):
        formats.render(hand_made(off_cpu=False), "collapsed", value="off-cpu")
    with pytest.raises(ValueError, match="unknown value"):
        p.check_value("wall")


def test_pprof_keeps_the_off_cpu_value(native, tmp_path):
    from ddprofiler.pprof.builder import build_profile

    p = hand_made()
    pb = build_profile(p)
    types = [(pb.string_table[t.type], pb.string_table[t.unit]) for t in pb.sample_type]
    assert types == [("cpu-samples", "count"), ("cpu-time", "nanoseconds"), ("off-cpu-time", "nanoseconds")]
    assert pb.string_table[pb.default_sample_type] == "cpu-time"
    path = tmp_path / "p.pprof"
    p.write(path)
    back = load_profile(path)
    assert back.off_cpu and back.off_cpu_total_ns == 401_000_000 and back.total == 5
    assert not load_profile(_written(hand_made(off_cpu=False), tmp_path)).off_cpu


def _written(p: Profile, tmp_path):
    path = tmp_path / "plain.pprof"
    p.write(path)
    return path


def test_run_takes_off_cpu_from_flags_and_the_environment():
    from ddprofiler import config

    settings, sources = config.resolve({}, {"DD_HOST_PROFILING_OFF_CPU": "true", "DD_HOST_PROFILING_OFF_CPU_RATE": "0.5"})
    assert (settings.off_cpu, settings.off_cpu_rate, settings.off_cpu_cap) == (True, 0.5, 250)
    assert sources["off_cpu"] == "env DD_HOST_PROFILING_OFF_CPU"
    settings, _ = config.resolve({"off_cpu": True, "off_cpu_cap": "40"}, {})
    assert (settings.off_cpu, settings.off_cpu_rate, settings.off_cpu_cap) == (True, 0.1, 40)
    for bad in ({"off_cpu_rate": "0"}, {"off_cpu_rate": "1.5"}, {"off_cpu_cap": "0"}):
        with pytest.raises(config.ConfigError):
            config.resolve(bad, {})


@pytest.mark.bpf
def test_a_thread_still_blocked_at_the_stop_gets_its_time_so_far(workloads, tmp_path):
    out = tmp_path / "open.pprof"
    # One 3 s sleep; the recording stops after 1 s, while wait_here still sleeps.
    record_command(out, "--off-cpu", "-d", 1, command=[workloads["offcpu"], 1, 3000, 0])
    waited = off_cpu_under(load_profile(out), "wait_here")
    assert 0.5e9 <= waited <= 1.5e9, f"{waited / 1e9:.3f} s under wait_here, about 1 s expected"
