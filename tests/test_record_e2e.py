"""End-to-end `python -m ddprofiler record` on workloads with known stacks.

Each test starts a C workload (tests/workloads) or a real Debian binary, profiles it with
the CLI as a subprocess, reads the gzip pprof back and checks the stacks: whole call chains
unwound without frame pointers (main binary, shared library, threads, deep recursion cut
at the snapshot size, kernel frames on top of user frames), CPython's own C stack, a
system-wide profile, an independent reader (go tool pprof), Ctrl-C, processes that exit
during the profile and a binary deleted while it runs.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import time

import pytest

from helpers import (TRUNCATED, Workload, find_seq, for_pid, format_stacks,
                     is_symbolized, kernel_function_names, record, start_record, total,
                     wait_record, weighted_fraction)

pytestmark = pytest.mark.bpf

FREQ = "999"
DURATION = "3"
RUN = 40  # seconds a workload may run; it is killed once the profile is written
CHAIN = ["leaf", "middle", "outer", "main"]
SHLIB_CHAIN = ["lib_leaf", "lib_middle", "outer", "main"]
# What may sit below main: glibc 2.34+ start code and the entry point.
BELOW_MAIN_MAX = 4
# Root-most symbolized frame of a process: main, or glibc's start code (whose symbol is
# __libc_start_main in .dynsym, __libc_start_main_impl / __libc_start_call_main in the
# libc6-dbg symtab), or the entry point _start.
ROOTS = {"main", "_start", "__libc_start_main", "__libc_start_main_impl",
         "__libc_start_call_main"}
# The summary's first line (ddprofiler.status.summary_lines), not any mention of "samples".
SUMMARY = re.compile(r"^\s*samples: \d+$", re.MULTILINE)


def profile_pid(tmp_path, pid, *extra):
    return record(tmp_path / "out.pprof", "--pid", pid, "--duration", DURATION,
                  "--frequency", FREQ, *extra).check()


def assert_chain(stacks, pid, chain, min_samples=500, min_frac=0.95):
    """At least min_frac of pid's samples hold chain contiguously (leaf first)."""
    mine = for_pid(stacks, pid)
    report = format_stacks(mine)
    print(f"pid {pid}:\n{report}")
    assert total(mine) > min_samples, f"too few samples for pid {pid}\n{report}"
    frac = weighted_fraction(mine, lambda s: find_seq(s.frames, chain) >= 0)
    assert frac >= min_frac, (
        f"only {frac:.1%} of pid {pid}'s samples contain {' <- '.join(chain)}\n{report}")
    # Below main, only the libc start code: no garbage frames from a runaway unwind.
    deep = weighted_fraction(mine, lambda s: find_seq(s.frames, chain) >= 0 and
                             len(s.frames) - find_seq(s.frames, chain) - len(chain)
                             > BELOW_MAIN_MAX)
    assert deep == 0, f"{deep:.1%} of samples have > {BELOW_MAIN_MAX} frames below main\n{report}"
    return mine


def test_chain(workloads, tmp_path):
    with Workload([workloads["chain"], RUN]) as w:
        res = profile_pid(tmp_path, w.pid)
    assert_chain(res.stacks, w.pid, CHAIN)
    others = {s.pid for s in res.stacks} - {w.pid}
    assert not others, f"--pid {w.pid} profile also holds pids {sorted(others)}"
    assert SUMMARY.search(res.proc.stderr), f"no summary on stderr:\n{res.proc.stderr}"


def test_shared_library(workloads, tmp_path):
    with Workload([workloads["shlib"], RUN]) as w:
        res = profile_pid(tmp_path, w.pid)
    assert_chain(res.stacks, w.pid, SHLIB_CHAIN)


def test_threads(workloads, tmp_path):
    with Workload([workloads["threads"], RUN]) as w:
        tids = w.thread_ids()
        res = profile_pid(tmp_path, w.pid)
    mine = for_pid(res.stacks, w.pid)
    print(format_stacks(mine))
    assert len(tids.get("worker-a", [])) == 1 and len(tids.get("worker-b", [])) == 1, tids
    for me, other in (("a", "b"), ("b", "a")):
        tid = tids[f"worker-{me}"][0]
        ours = [s for s in mine if s.tid == tid]
        report = format_stacks(ours)
        assert total(ours) > 500, f"too few samples for worker-{me} (tid {tid})\n{report}"
        names = {s.thread_name for s in ours}
        assert names == {f"worker-{me}"}, f"tid {tid} carries thread names {names}"
        chain = [f"thread_{me}_leaf", f"thread_{me}_outer", f"thread_{me}_start"]
        frac = weighted_fraction(ours, lambda s: find_seq(s.frames, chain) >= 0)
        assert frac >= 0.95, f"only {frac:.1%} of worker-{me} samples hold {chain}\n{report}"
        foreign = [s for s in ours if any(f.startswith(f"thread_{other}_") for f in s.frames)]
        assert not foreign, f"worker-{me} (tid {tid}) has worker-{other} frames\n{report}"


def recursion_shape(frames, kernel):
    """(recurse frames, how the stack ends) for a sample in the recursion, else None.

    Leaf first: kernel frames, [recurse_leaf], recurse * k, then `main ...` or `[truncated]`.
    """
    user = [f for f in frames if f not in kernel]
    if "recurse_leaf" not in user and "recurse" not in user:
        return None
    i = 1 if user and user[0] == "recurse_leaf" else 0
    j = i
    while j < len(user) and user[j] == "recurse":
        j += 1
    rest = user[j:]
    if rest == [TRUNCATED]:
        return j - i, "truncated"
    if len(rest) == 1 and rest[0].startswith("[unwind failed: "):
        # A rare sample whose snapshot could not be read whole: marked, not wrong.
        return j - i, "marked"
    if rest and rest[0] == "main":
        return j - i, "main"
    return j - i, f"wrong frames after the recursion: {rest[:5]}"


def check_recursion(res, pid, depth):
    mine = for_pid(res.stacks, pid)
    report = format_stacks(mine, n=5, width=8)
    assert total(mine) > 500, f"too few samples for pid {pid}\n{report}"
    kernel = kernel_function_names(res.profile)
    shapes = [(recursion_shape(s.frames, kernel), s) for s in mine]
    inside = [(sh, s) for sh, s in shapes if sh is not None]
    assert sum(s.count for _, s in inside) >= 0.95 * total(mine), report
    for (k, end), s in inside:
        assert end in ("main", "truncated", "marked"), f"{end} in {s.frames[:12]}...\n{report}"
        assert k <= depth + 1, f"{k} recurse frames, the program has {depth + 1}\n{report}"
        if end == "main" and "recurse_leaf" in s.frames:  # not mid-descent: full depth
            assert k == depth + 1, f"main reached after {k} recurse frames, not {depth + 1}"
    ks = [k for (k, _), s in inside for _ in range(s.count)]
    reached = sum(s.count for (_, end), s in inside if end == "main") / max(1, len(ks))
    print(f"recurse frames: median {statistics.median(ks)}, max {max(ks)}; "
          f"main reached in {reached:.1%}\n{report}")
    return statistics.median(ks), reached


def test_deep_recursion_cut_or_complete(workloads, tmp_path):
    depth = 200
    with Workload([workloads["recurse"], RUN, depth]) as w:
        small = record(tmp_path / "16k.pprof", "--pid", w.pid, "--duration", DURATION,
                       "--frequency", FREQ, "--stack-bytes", "16384").check()
        large = record(tmp_path / "64k.pprof", "--pid", w.pid, "--duration", DURATION,
                       "--frequency", FREQ, "--stack-bytes", "65536").check()
    k16, main16 = check_recursion(small, w.pid, depth)
    k64, main64 = check_recursion(large, w.pid, depth)
    assert k64 > k16 or main64 >= 0.95, (
        f"--stack-bytes 65536 gives median {k64} recurse frames (main in {main64:.1%}), "
        f"16384 gives {k16} (main in {main16:.1%})")


def test_kernel_frames_on_top_of_user_frames(workloads, tmp_path):
    with Workload([workloads["syscalls"], RUN]) as w:
        res = profile_pid(tmp_path, w.pid)
    mine = for_pid(res.stacks, w.pid)
    kernel = kernel_function_names(res.profile)
    report = format_stacks(mine, width=14)
    print(report)
    assert total(mine) > 500, report
    with_kernel = [s for s in mine if s.frames and s.frames[0] in kernel]
    assert total(with_kernel) >= 0.5 * total(mine), (
        f"only {total(with_kernel)} of {total(mine)} samples start in the kernel "
        f"(workload reads /dev/zero in a loop)\n{report}")

    def kernel_then_user(s):
        n = 0
        while n < len(s.frames) and s.frames[n] in kernel:
            n += 1
        user = s.frames[n:]
        return (not any(f in kernel for f in user) and "sys_leaf" in user
                and "main" in user and user.index("sys_leaf") < user.index("main"))

    frac = weighted_fraction(with_kernel, kernel_then_user)
    assert frac >= 0.95, (
        f"only {frac:.1%} of kernel-topped samples continue into sys_leaf <- main\n{report}")


def test_debian_python3(debian_python, tmp_path):
    script = ("import time\nprint('ready', flush=True)\nt = time.time()\n"
              f"while time.time() - t < {RUN}: pass\n")
    with Workload([debian_python, "-c", script]) as w:
        res = profile_pid(tmp_path, w.pid)
    mine = for_pid(res.stacks, w.pid)
    report = format_stacks(mine, width=20)
    print(report)
    assert total(mine) > 500, report

    def rooted(s):
        symbolized = [f for f in s.frames if is_symbolized(f)]
        return (bool(symbolized) and "Py_RunMain" in s.frames
                and symbolized[-1].split("@")[0] in ROOTS)

    frac = weighted_fraction(mine, rooted)
    assert frac >= 0.90, (f"only {frac:.1%} of python3 samples hold Py_RunMain and end "
                          f"at one of {sorted(ROOTS)}\n{report}")


def test_system_wide(workloads, tmp_path):
    with Workload([workloads["chain"], RUN]) as chain, \
            Workload([workloads["syscalls"], RUN]) as other:
        res = record(tmp_path / "all.pprof", "--duration", DURATION,
                     "--frequency", FREQ).check()
    assert_chain(res.stacks, chain.pid, CHAIN)
    pids = {s.pid for s in res.stacks}
    print(format_stacks([s for s in res.stacks if s.pid != chain.pid], n=15, width=10))
    assert other.pid in pids, f"the other busy workload {other.pid} is missing from {pids}"
    assert total(for_pid(res.stacks, other.pid)) > 500, (
        f"few samples of the other busy workload {other.pid}\n"
        f"{format_stacks(for_pid(res.stacks, other.pid))}")


def test_go_tool_pprof_reads_profile(workloads, go_binary, tmp_path):
    with Workload([workloads["chain"], RUN]) as w:
        res = profile_pid(tmp_path, w.pid)
    env = dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache"),
               GOPATH=str(tmp_path / "gopath"), GOTOOLCHAIN="local", GOFLAGS="",
               GOPROXY="off", PPROF_TMPDIR=str(tmp_path))
    # -symbolize=none: the names must come from our file, not from pprof re-symbolizing.
    go = subprocess.run([go_binary, "tool", "pprof", "-raw", "-symbolize=none", str(res.path)],
                        capture_output=True, text=True, env=env, timeout=300)
    assert go.returncode == 0, f"go tool pprof failed:\n{go.stderr}"
    # go's own reading of the file: as many samples as ours, and the same call chains.
    theirs = go_pprof_raw_samples(go.stdout)
    ours = total(res.stacks)
    assert sum(c for c, _ in theirs) == ours, (
        f"go tool pprof reads {sum(c for c, _ in theirs)} samples, we read {ours}\n{go.stdout[:3000]}")
    whole = sum(c for c, frames in theirs if find_seq(frames, CHAIN) >= 0)
    assert whole >= 0.95 * ours, (
        f"go tool pprof finds {' <- '.join(CHAIN)} in {whole} of {ours} samples\n{go.stdout[:3000]}")


_RAW_SAMPLE = re.compile(r"^\s*(\d+(?:\s+\d+)*):((?:\s+\d+)*)\s*$")
_RAW_LOCATION = re.compile(r"^\s*(\d+): 0x[0-9a-f]+(?: M=\d+)?(?: (\S+))?")
_RAW_INLINED = re.compile(r"^\s+(\S+) \S*:-?\d+:-?\d+ s=")


def go_pprof_raw_samples(text: str) -> list:
    """(count, function names leaf first, inlined frames expanded) per sample of
    `go tool pprof -raw`; the count is the value of type cpu-samples."""
    section, samples, functions, current, column = "", [], {}, None, None
    for raw in text.splitlines():
        if raw in ("Samples:", "Locations", "Mappings"):
            section = raw
            continue
        if section == "Samples:" and column is None:  # the header: type/unit per value
            column = [t.split("/")[0] for t in raw.split()].index("cpu-samples")
        elif section == "Samples:" and (m := _RAW_SAMPLE.match(raw)):
            samples.append((int(m.group(1).split()[column]), [int(x) for x in m.group(2).split()]))
        elif section == "Locations":
            if m := _RAW_LOCATION.match(raw):
                current = functions.setdefault(int(m.group(1)), [])
                current.append(m.group(2) or "?")  # "?": a frame with no name, kept in place
            elif current is not None and (m := _RAW_INLINED.match(raw)):
                current.append(m.group(1))
    assert samples and functions, f"no samples or locations in go tool pprof -raw:\n{text[:3000]}"
    return [(count, [f for loc in locs for f in functions[loc]]) for count, locs in samples]


def test_ctrl_c_writes_profile(workloads, tmp_path):
    out = tmp_path / "int.pprof"
    with Workload([workloads["chain"], RUN]) as w:
        proc = start_record(out, "--pid", w.pid, "--duration", "30", "--frequency", FREQ)
        time.sleep(2.5)
        assert proc.poll() is None, f"record ended early: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        res = wait_record(proc, out, timeout=20)
        took = time.monotonic() - t0
    assert res.proc.returncode == 0, f"exit {res.proc.returncode}:\n{res.proc.stderr}"
    assert took < 5, f"record took {took:.1f}s to exit after SIGINT"
    assert "Traceback" not in res.proc.stderr, res.proc.stderr
    assert res.stacks is not None, f"no profile written:\n{res.proc.stderr}"
    # The profile of the 2.5 s before the signal, not an empty file.
    assert_chain(res.stacks, w.pid, CHAIN, min_samples=100)


@pytest.fixture(scope="module")
def short_lived(workloads, tmp_path_factory):
    """A 5 s system-wide record while 0.7 s chain workloads start and exit one by one."""
    out = tmp_path_factory.mktemp("short") / "short.pprof"
    proc = start_record(out, "--duration", "5", "--frequency", FREQ)
    t0, pids = time.monotonic(), []
    time.sleep(0.5)
    try:
        while time.monotonic() - t0 < 4.0:
            child = subprocess.Popen([str(workloads["chain"]), "0.7"], stdout=subprocess.DEVNULL)
            pids.append(child.pid)
            child.wait(timeout=10)
    finally:
        res = wait_record(proc, out, timeout=65)
    return res, pids


def test_processes_exiting_during_profile(short_lived):
    res, pids = short_lived
    assert res.proc.returncode == 0, f"exit {res.proc.returncode}:\n{res.proc.stderr}"
    assert "Traceback" not in res.proc.stderr, res.proc.stderr
    assert SUMMARY.search(res.proc.stderr), f"no summary on stderr:\n{res.proc.stderr}"
    assert res.stacks is not None, f"no profile written:\n{res.proc.stderr}"


def test_exited_processes_are_symbolized(short_lived):
    res, pids = short_lived
    assert res.stacks is not None, res.proc.stderr
    theirs = [s for s in res.stacks if s.pid in set(pids)]
    report = format_stacks(theirs)
    print(report)
    assert total(theirs) > 300, f"few samples of the short-lived pids {pids}\n{report}"
    frac = weighted_fraction(theirs, lambda s: find_seq(s.frames, CHAIN) >= 0)
    assert frac >= 0.90, f"only {frac:.1%} of exited processes' samples hold the chain\n{report}"


def test_deleted_binary(workloads, tmp_path):
    copy = tmp_path / "chain-deleted"
    shutil.copy2(workloads["chain"], copy)
    with Workload([copy, RUN]) as w:
        copy.unlink()
        assert "(deleted)" in os.readlink(f"/proc/{w.pid}/exe")
        res = profile_pid(tmp_path, w.pid)
    assert_chain(res.stacks, w.pid, CHAIN)


def test_thread_name_follows_exec(short_lived):
    """Forked from python3 then exec'd: samples in chain's code are named chain."""
    res, pids = short_lived
    assert res.stacks is not None, res.proc.stderr
    theirs = [s for s in res.stacks if s.pid in set(pids) and "leaf" in s.frames]
    assert theirs, format_stacks([s for s in res.stacks if s.pid in set(pids)])
    stale = [s for s in theirs if s.thread_name != "chain" or s.process_name != "chain"]
    assert not stale, (f"{total(stale)} of {total(theirs)} samples in chain's leaf carry "
                       f"another name: {sorted({(s.pid, s.thread_name, s.process_name) for s in stale})}")
