"""The command line, without root and without the Rust extension.

- every bad ``record`` flag is a one-line usage error (exit 2), no traceback, nothing
  written; ``--help`` lists every option;
- the whole ``record`` path (status line, summary, signals, atomic pprof, error lines) and
  the start of ``run`` run against a fake ``ddprofiler._native`` (the API of
  ``_native.pyi``: tuple tables, ``counter_specs``, ``ddprofiler.errors``) injected before
  the CLI starts;
- the privilege message and the status/summary formatting, as plain functions.

The CLI runs as ``python -m ddprofiler``: the installed package when one is importable,
else the source tree (``PYTHONPATH=python``).
"""
from __future__ import annotations

import functools
import io
import os
import pty
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from ddprofiler import Stats, privileges
from ddprofiler.pprof import read_pprof, stacks
from ddprofiler.status import StatusLine, format_status, summary_lines

REPO = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def cli_env() -> tuple:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    installed = subprocess.run(
        [sys.executable, "-c", "import ddprofiler.cli"], env=env, cwd="/", capture_output=True
    ).returncode == 0
    if not installed:
        env["PYTHONPATH"] = str(REPO / "python")
    return tuple(sorted(env.items()))


def run_cli(*args, cwd, timeout=60, **extra_env):
    env = dict(cli_env(), **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "ddprofiler", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def assert_one_line_usage_error(result, flag):
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert err and "\n" not in err, f"expected one line, got:\n{result.stderr}"
    assert flag in err, err
    assert "Traceback" not in result.stderr
    assert err.startswith("ddprofiler: error: ")


NO_SUCH_PID = "999999999"  # above the largest pid_max (2**22)

BAD_FLAGS = [
    ("--duration", ["--duration", "0"]),
    ("--duration", ["--duration", "-1"]),
    ("--duration", ["--duration=-0.5"]),
    ("--duration", ["--duration", "soon"]),
    ("--duration", ["--duration", "nan"]),
    ("--duration", ["--duration", "inf"]),
    ("--frequency", ["--frequency", "0"]),
    ("--frequency", ["--frequency", "10001"]),
    ("--frequency", ["--frequency", "-5"]),
    ("--frequency", ["--frequency", "1.5"]),
    ("--stack-bytes", ["--stack-bytes", "1016"]),
    ("--stack-bytes", ["--stack-bytes", "65544"]),
    ("--stack-bytes", ["--stack-bytes", "4100"]),
    ("--pid", ["--pid", NO_SUCH_PID]),
    ("--pid", ["--pid", "0"]),
    ("--pid", ["--pid", "self"]),
    ("--pid", ["--pid", str(os.getpid()), "--pid", NO_SUCH_PID]),
    ("--bogus", ["--bogus"]),
]


@pytest.mark.parametrize("flag,args", BAD_FLAGS, ids=[" ".join(a) for _, a in BAD_FLAGS])
def test_bad_flag_is_a_one_line_usage_error(tmp_path, flag, args):
    result = run_cli("record", *args, "-o", str(tmp_path / "out.pprof"), cwd=tmp_path)
    assert_one_line_usage_error(result, flag)
    assert list(tmp_path.iterdir()) == []


def test_output_in_missing_directory(tmp_path):
    result = run_cli("record", "-o", str(tmp_path / "nope" / "out.pprof"), cwd=tmp_path)
    assert_one_line_usage_error(result, "--output")
    assert "does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_output_is_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    for target in (str(tmp_path / "d"), str(tmp_path / "new") + "/"):
        result = run_cli("record", "--output", target, cwd=tmp_path)
        assert_one_line_usage_error(result, "--output")
        assert "directory" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert list((tmp_path / "d").iterdir()) == []


def test_output_is_not_a_regular_file(tmp_path):
    result = run_cli("record", "-o", "/dev/null", cwd=tmp_path)
    assert_one_line_usage_error(result, "--output")
    assert "regular file" in result.stderr


def _read_only_directory(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro
    # root ignores permission bits, but no one can create a file in /proc
    return Path("/proc")


def test_output_directory_not_writable(tmp_path):
    directory = _read_only_directory(tmp_path)
    target = directory / "ddprofiler-test-out.pprof"
    result = run_cli("record", "-o", str(target), cwd=tmp_path)
    assert_one_line_usage_error(result, "--output")
    assert "not writable" in result.stderr
    assert not target.exists()


def test_help_lists_every_option(tmp_path):
    result = run_cli("record", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    options = ("--pid", "--duration", "--frequency", "--stack-bytes", "-o", "--output", "-v", "--verbose")
    for option in options:  # whole options: "-o" inside "--output" does not count
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", result.stdout), option
    top = run_cli("--help", cwd=tmp_path)
    assert top.returncode == 0 and "record" in top.stdout
    assert list(tmp_path.iterdir()) == []


# --- the record path against a fake extension -------------------------------------------

FAKE_MAIN = textwrap.dedent(
    '''
    import os, sys, time, types

    from ddprofiler import errors

    mode = os.environ.get("FAKE_NATIVE", "ok")
    if mode == "missing":
        sys.modules["ddprofiler._native"] = None  # makes `import ddprofiler._native` fail
    else:
        # The API of python/ddprofiler/_native.pyi, faked; pprof is encoded by the real one.
        import ddprofiler._native as real
        native = types.ModuleType("ddprofiler._native")

        class Snapshot(types.SimpleNamespace):
            total = property(lambda self: sum(x[4] for x in self.samples))

            def sampled_pids(self):
                return list(dict.fromkeys(x[0] for x in self.samples if x[4] > 0))

            def sampled_mappings(self):
                return [0]

            def encode_pprofs(self, group_of, groups, labels=None):
                return real.Snapshot.from_tables(
                    self.start_ns, self.end_ns, self.frequency, [m[:6] for m in self.mappings],
                    self.frames, [list(st) for st in self.stacks], self.samples,
                ).encode_pprofs(group_of, groups, labels)
        SPECS = [
            ("samples", "count", "samples received"),
            ("lost", "lost", "ring buffer full"),
            ("processes", "gauge", "processes known now"),
            ("unwind_complete", "success", "walks that reached the root"),
            ("unwind_no_cfi", "unwind_failure", "no unwind rule"),
            ("unwind_bad_pc", "unwind_failure", "bad pc"),
            ("read_errors", "error", "reads that failed"),
            ("fp_chain_failed", "count", "a count whose name says failed"),
            ("stacks", "count", "stacks interned"),
        ]
        STATS = {"samples": 5, "lost": 1, "processes": 2, "unwind_complete": 2, "unwind_no_cfi": 3,
                 "unwind_bad_pc": 0, "read_errors": 2, "fp_chain_failed": 4, "stacks": 7}

        class Profiler:
            def __init__(self, frequency=99, pids=None, stack_bytes=16384, symbolize="host", python=True,
                         follow_children=False, idle=False, memory_budget=128 << 20, off_cpu_rate=None,
                         off_cpu_cap=250):
                self.frequency, self.pids, self.stack_bytes = frequency, pids, stack_bytes
                self.symbolize = symbolize
                self.start_ns = self.end_ns = 0

            def start(self):
                if mode == "eperm":
                    raise errors.PrivilegeError("missing CAP_PERFMON (fake): run as root")
                if mode == "nobpf":
                    raise errors.BpfUnavailableError("BTF is missing at /sys/kernel/btf/vmlinux (fake)")
                self.start_ns = time.time_ns()
                print(f"STARTED frequency={self.frequency} pids={self.pids} "
                      f"stack_bytes={self.stack_bytes} symbolize={self.symbolize}", flush=True)

            def stop(self):
                self.end_ns = self.end_ns or time.time_ns()

            def close(self):
                self.stop()

            def stats(self):
                return dict(STATS)

            def snapshot(self, reset=True):
                pid = self.pids[0] if self.pids else os.getpid()
                end = self.end_ns or time.time_ns()
                snap = Snapshot(
                    start_ns=self.start_ns, end_ns=end, frequency=self.frequency,
                    mappings=[(0x1000, 0x2000, 0, "/bin/fake", "", False, None)],
                    frames=[(0, 0x1010, "native", [("fake_main", "", "fake.c", 3)]),
                            (0, 0x1200, "native", [])],
                    stacks=[(1, 0)],
                    samples=[(pid, pid, 0, 0, 5, "fake", "fake", 0)],
                    processes=[(pid, "fake", "/bin/fake", {"DD_SERVICE": "fakesvc"}, "0::/\\n")],
                    stats=dict(STATS), off_cpu=False, off_cpu_total=0,
                )
                self.start_ns = end
                return snap

        native.Profiler = Profiler
        native.counter_specs = lambda: list(SPECS)
        native.Snapshot = real.Snapshot  # for profiles made by hand
        sys.modules["ddprofiler._native"] = native
        import ddprofiler
        ddprofiler._native = native  # importing the real one set the package's attribute

    from ddprofiler import privileges
    if os.environ.get("FAKE_PRIVILEGES") == "missing":
        privileges.problem = lambda **kw: "missing CAP_BPF and CAP_PERFMON (fake)"
    else:
        privileges.problem = lambda **kw: None
    privileges.shortfalls = lambda **kw: []

    from ddprofiler.cli import main
    main(prog_name="ddprofiler")
    '''
)


def fake_cmd(*args):
    return [sys.executable, "-c", FAKE_MAIN, *args]


def run_fake(*args, cwd, timeout=60, **extra_env):
    env = dict(cli_env(), **extra_env)
    return subprocess.run(fake_cmd(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_record_writes_pprof_and_summary(tmp_path):
    pid = os.getpid()
    result = run_fake("record", "--duration", "0.3", "--frequency", "100", "--pid", str(pid), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["profile.pprof"]  # the default, no temp left
    assert (tmp_path / "profile.pprof").read_bytes()[:2] == b"\x1f\x8b"
    profile = read_pprof(tmp_path / "profile.pprof")
    assert profile.period == 10_000_000
    (stack,) = stacks(profile)
    assert (stack.pid, stack.count, stack.frames) == (pid, 5, ["fake+0x200", "fake_main"])

    assert result.stdout.strip() == (f"STARTED frequency=100 pids=[{pid}] stack_bytes=16384 "
                                     "symbolize=host")

    err = result.stderr
    assert "\r" not in err  # no live line when stderr is not a TTY
    assert "wrote profile.pprof" in err
    # The summary, from the counters' kinds: never from their names.
    summary = [line.strip() for line in err.splitlines()[1:]]
    assert summary == ["samples: 5", "lost: 1 (16.7%)", "unwinding failures: 3 (no_cfi 3)",
                       "other errors: read_errors 2"], err
    assert "Traceback" not in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_early_and_still_writes(tmp_path, signum):
    out = tmp_path / "early.pprof"
    proc = subprocess.Popen(
        fake_cmd("record", "--duration", "60", "-o", str(out)),
        cwd=tmp_path, env=dict(cli_env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout.readline().startswith("STARTED ")
        started = time.monotonic()
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert "Traceback" not in stderr and "samples: 5" in stderr
    assert [p.name for p in tmp_path.iterdir()] == ["early.pprof"]
    assert stacks(read_pprof(out))[0].frames == ["fake+0x200", "fake_main"]


def test_live_status_line_on_a_tty(tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        fake_cmd("record", "--duration", "1.2"), cwd=tmp_path, env=dict(cli_env()),
        stdout=subprocess.DEVNULL, stderr=slave,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO once the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=20) == 0
    tty = b"".join(chunks).decode()
    assert "\rrecording" in tty and "samples 5 | processes 2 | lost 1" in tty
    assert "samples: 5" in tty  # the summary still follows


FAILURES = [
    ({"FAKE_NATIVE": "missing"}, "pip install ."),
    ({"FAKE_PRIVILEGES": "missing"}, "missing CAP_BPF and CAP_PERFMON (fake)"),
    ({"FAKE_NATIVE": "eperm"}, "missing CAP_PERFMON (fake): run as root"),
    ({"FAKE_NATIVE": "nobpf"}, "BTF is missing at /sys/kernel/btf/vmlinux (fake)"),
]
FAILURE_IDS = ["no-extension", "no-privileges", "PrivilegeError", "BpfUnavailableError"]


@pytest.mark.parametrize("env,expected", FAILURES, ids=FAILURE_IDS)
def test_runtime_failures_are_one_error_line(tmp_path, env, expected):
    result = run_fake("record", "--duration", "0.2", cwd=tmp_path, **env)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddprofiler: error: "), result.stderr
    assert expected in lines[0]
    assert "STARTED" not in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env,expected", FAILURES, ids=FAILURE_IDS)
def test_run_failures_are_one_error_line(tmp_path, env, expected):
    out = tmp_path / "profiles"
    result = run_fake("run", "--output-dir", str(out), cwd=tmp_path, **env)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("ddprofiler: error: "), result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.stderr and "STARTED" not in result.stdout
    assert list(out.iterdir()) == []


def test_run_passes_symbolize_to_the_core_and_exports_the_last_period(tmp_path):
    out = tmp_path / "profiles"
    proc = subprocess.Popen(
        fake_cmd("run", "--output-dir", str(out), "--symbolize", "backend", "--sampling-rate", "49",
                 "--upload-period", "60"),
        cwd=tmp_path, env=dict(cli_env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        started = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert started == "STARTED frequency=49 pids=None stack_bytes=16384 symbolize=backend"
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    files = sorted(p.name for p in out.iterdir() if p.suffix == ".pprof")  # with a .json each
    assert len(files) == 1 and files[0].startswith("fakesvc-"), files  # the partial period
    [stack] = stacks(read_pprof(out / files[0]))
    assert (stack.count, stack.frames) == (5, ["fake+0x200", "fake_main"])
    # The period line counts from the kinds: read_errors is an error, fp_chain_failed is not.
    [period] = [line for line in stderr.splitlines() if "period:" in line]
    assert "samples lost 1; stacks cut short 3 (no_cfi 3); errors 2 (read_errors 2);" in period, period


def test_package_import_does_not_load_the_extension():
    code = ("import sys, ddprofiler, ddprofiler.cli; "
            "print(sorted(m for m in ('ddprofiler._native', 'google.protobuf') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], env=dict(cli_env()), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# --- privileges -------------------------------------------------------------------------

BPF, PERFMON, SYS_ADMIN = 1 << 39, 1 << 38, 1 << 21


def test_capabilities_parsed_from_status():
    status = "Name:\tpython3\nCapPrm:\t0000000000000000\nCapEff:\t000000c000000000\n"
    assert privileges.effective_capabilities(status) == BPF | PERFMON


@pytest.mark.parametrize("caps", [SYS_ADMIN, BPF | PERFMON, (1 << 41) - 1])
def test_enough_privileges(caps):
    assert privileges.problem(cap_eff=caps, cap_last_cap=40, perf_event_paranoid=2, euid=1000) is None


def test_missing_perfmon_only():
    message = privileges.problem(cap_eff=BPF, cap_last_cap=40, perf_event_paranoid=2, euid=1000)
    assert message.startswith("missing CAP_PERFMON (or CAP_SYS_ADMIN)")
    assert "CAP_BPF and" not in message
    assert "sudo" in message and "--ambient-caps=+bpf,+perfmon" in message
    assert "setcap" not in message  # never a capability on a shared interpreter
    assert "perf_event_paranoid" not in message
    assert "\n" not in message


def test_missing_both_with_locked_down_paranoid():
    message = privileges.problem(cap_eff=0, cap_last_cap=40, perf_event_paranoid=4, euid=1000)
    assert message.startswith("missing CAP_BPF and CAP_PERFMON")
    assert "kernel.perf_event_paranoid=4" in message
    assert "AmbientCapabilities=" in message and "setcap" not in message
    assert "\n" not in message


def test_root_without_capabilities_is_a_container():
    message = privileges.problem(cap_eff=PERFMON, cap_last_cap=40, perf_event_paranoid=2, euid=0)
    assert message.startswith("missing CAP_BPF (or CAP_SYS_ADMIN)")
    assert "--cap-add BPF" in message and "--cap-add SYS_PTRACE" in message
    assert "privileged container" in message and "setcap" not in message


PTRACE, DAC, SYSLOG, RESOURCE = 1 << 19, 1 << 2, 1 << 34, 1 << 24
LEAST = BPF | PERFMON | PTRACE | DAC | SYSLOG
HOST = dict(kptr_restrict=0, perf_event_paranoid=2, kernel=(6, 1), memlock_hard=8 << 20)


def test_least_set_has_no_shortfall():
    assert privileges.shortfalls(cap_eff=LEAST, **HOST) == []
    assert privileges.shortfalls(cap_eff=(1 << 41) - 1, **HOST) == []


@pytest.mark.parametrize("name, bit, cost", [
    ("CAP_SYS_PTRACE", PTRACE, "other users' processes"),
    ("CAP_DAC_READ_SEARCH", DAC, "may not read"),
    ("CAP_SYSLOG", SYSLOG, "kernel frames stay unsymbolized"),
])
def test_each_missing_capability_is_named_with_its_cost(name, bit, cost):
    lines = privileges.shortfalls(cap_eff=LEAST & ~bit, **HOST)
    assert len(lines) == 1 and lines[0].startswith(f"missing {name}: ") and cost in lines[0]
    assert "\n" not in lines[0]


def test_syslog_not_needed_when_the_kernel_shows_addresses_to_all():
    # kallsyms shows addresses to everyone with kptr_restrict=0 and perf_event_paranoid <= 1.
    open_host = {**HOST, "perf_event_paranoid": 1}
    assert privileges.shortfalls(cap_eff=LEAST & ~SYSLOG, **open_host) == []
    assert "kptr_restrict=2" in privileges.shortfalls(cap_eff=LEAST, **{**HOST, "kptr_restrict": 2})[0]


def test_sys_resource_only_below_5_11_with_a_low_memlock_limit():
    assert privileges.shortfalls(cap_eff=LEAST, **{**HOST, "kernel": (5, 11)}) == []
    old = {**HOST, "kernel": (5, 10)}
    (line,) = privileges.shortfalls(cap_eff=LEAST, **old)
    assert line.startswith("missing CAP_SYS_RESOURCE: Linux 5.10") and "8192 KiB" in line
    assert privileges.shortfalls(cap_eff=LEAST | RESOURCE, **old) == []


def test_shortfall_hint_never_suggests_setcap():
    assert "setcap" not in privileges.shortfall_hint(euid=1000)
    assert "AmbientCapabilities=" in privileges.shortfall_hint(euid=1000)
    assert "--cap-add SYS_PTRACE" in privileges.shortfall_hint(euid=0)


def test_old_kernel_needs_sys_admin():
    message = privileges.problem(cap_eff=0, cap_last_cap=37, perf_event_paranoid=2, euid=1000)
    assert message.startswith("missing CAP_SYS_ADMIN") and "sudo" in message


# --- status line and summary ------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


STATUS_SPECS = [("samples", "count", ""), ("lost", "lost", ""), ("processes", "gauge", "")]


def status_stats(**values):
    return Stats(values, STATUS_SPECS)


def test_status_line_redraws_in_place_on_a_tty():
    stream = FakeTTY()
    line = StatusLine(stream)
    values = [status_stats(samples=12345, processes=3, lost=0), status_stats(samples=7, processes=3, lost=0),
              status_stats(samples=8, processes=3, lost=2)]
    for elapsed, stats in zip((1.0, 1.5, 2.0), values):
        line.update(elapsed, stats)
    line.finish()
    first, second, third = (format_status(e, st) for e, st in zip((1.0, 1.5, 2.0), values))
    assert first == "recording    1.0s | samples 12345 | processes 3 | lost 0"
    assert third == "recording    2.0s | samples 8 | processes 3 | lost 2"
    pad = " " * (len(first) - len(second))
    assert stream.getvalue() == f"\r{first}\r{second}{pad}\r{third}{pad}\r{' ' * len(first)}\r"


def test_status_line_is_silent_off_a_tty():
    stream = io.StringIO()
    line = StatusLine(stream)
    line.update(1.0, status_stats(samples=1))
    line.finish()
    assert stream.getvalue() == ""


SUMMARY_SPECS = [
    ("bpf_ustack_clamped", "count", ""), ("lost", "lost", ""), ("samples", "count", ""),
    ("processes", "gauge", ""), ("unwind_complete", "success", ""),
    ("unwind_no_cfi", "unwind_failure", ""), ("unwind_stack_end", "unwind_failure", ""),
    ("map_read_failed", "error", ""), ("symbolize_errors", "error", ""), ("stacks", "count", ""),
    ("fp_chain_failed", "count", ""), ("bad_records", "error", ""),
]


def test_summary_lines_follow_the_kinds():
    stats = Stats({"samples": 990, "lost": 10, "processes": 4, "unwind_no_cfi": 5, "unwind_stack_end": 7,
                   "unwind_complete": 978, "map_read_failed": 2, "symbolize_errors": 0, "stacks": 40,
                   "bpf_ustack_clamped": 300, "fp_chain_failed": 9, "bad_records": 2}, SUMMARY_SPECS)
    assert summary_lines(stats) == [
        "samples: 990",
        "lost: 10 (1.0%)",
        "unwinding failures: 12 (stack_end 7, no_cfi 5)",
        "other errors: bad_records 2, map_read_failed 2",  # fp_chain_failed is a count
    ]
    assert summary_lines(Stats({}, SUMMARY_SPECS)) == ["samples: 0", "lost: 0"]
