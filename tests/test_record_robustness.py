"""What must not break a profile: a binary linked by lld (packed PT_LOAD segments), an
executable mapping of a file that is not ELF, and a binary replaced on disk while it runs.

Each test profiles a workload by pid with the CLI and checks its stacks and the summary's
counters.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from helpers import Workload, find_seq, for_pid, format_stacks, record, skip_or_fail, total, weighted_fraction

pytestmark = pytest.mark.bpf

CHAIN = ["leaf", "middle", "outer", "main"]
RUN = "40"


def _profile(tmp_path, pid):
    res = record(tmp_path / "p.pprof", "--pid", pid, "--duration", "3", "--frequency", "999").check()
    mine = for_pid(res.stacks, pid)
    assert total(mine) > 300, f"too few samples for {pid}:\n{res.proc.stderr}"
    return res, mine


@pytest.fixture(scope="module")
def rust_chain(tmp_path_factory):
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.access(rustc, os.X_OK):
        skip_or_fail("rustc is needed to build the Rust workload")
    out = tmp_path_factory.mktemp("rust") / "chain_rs"
    src = os.path.join(os.path.dirname(__file__), "workloads", "chain.rs")
    subprocess.run([rustc, "-O", "--crate-name", "chain_rs", "-C", "force-frame-pointers=no", "-o", str(out), src], check=True)
    return out


def test_rust_binary_linked_by_lld(tmp_path, rust_chain):
    comment = subprocess.run(["readelf", "-p", ".comment", str(rust_chain)], capture_output=True, text=True).stdout
    if "Linker: LLD" not in comment:
        skip_or_fail(f"rustc did not link with lld (Rust 1.90+ does on x86-64), nothing to test: {comment.strip()!r}")
    # What lld does and the test is about: code whose addresses are not its file offsets (GNU
    # ld page-aligns the code segment, so that only its data segments differ).
    loads = [ln.split() for ln in subprocess.run(["readelf", "-lW", str(rust_chain)], capture_output=True,
                                                 text=True, check=True).stdout.splitlines()
             if ln.split()[:1] == ["LOAD"]]
    packed = [f for f in loads if "E" in f[6:-1] and int(f[1], 16) != int(f[2], 16)]
    assert packed, f"no executable PT_LOAD packed below its address: {loads}"
    with Workload([rust_chain, RUN]) as w:
        _, mine = _profile(tmp_path, w.pid)
    chain = ["chain_rs::rs_leaf", "chain_rs::rs_middle", "chain_rs::rs_outer", "chain_rs::main"]
    in_leaf = [s for s in mine if s.frames and s.frames[0] == "chain_rs::rs_leaf"]
    assert total(in_leaf) >= 0.8 * total(mine), format_stacks(mine)
    frac = weighted_fraction(in_leaf, lambda s: find_seq(s.frames, chain) >= 0)
    assert frac >= 0.95, f"{frac:.1%} whole Rust chains ({comment.strip()!r}):\n{format_stacks(in_leaf)}"
    # ... and below main, Rust's runtime start and glibc's.
    whole = [s for s in in_leaf if find_seq(s.frames, chain) >= 0]
    assert all("main" in s.frames[s.frames.index("chain_rs::main") + 1:] for s in whole), format_stacks(whole)


def test_corrupt_elf_mapping_is_counted_not_fatal(tmp_path, workloads):
    src = os.path.join(os.path.dirname(__file__), "workloads", "mapcorrupt.c")
    exe = tmp_path / "mapcorrupt"
    subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-I", os.path.dirname(src), "-o", str(exe), src], check=True)
    bogus = tmp_path / "bogus.so"
    # An ELF magic followed by garbage: parsing must fail, cleanly.
    bogus.write_bytes(b"\x7fELF\x02\x01\x01" + os.urandom(65536))
    with Workload([exe, RUN, bogus]) as w:
        res, mine = _profile(tmp_path, w.pid)
    m = re.search(r"elf_errors (\d+)", res.proc.stderr)
    assert m and int(m.group(1)) >= 1, f"the bad mapping was not counted:\n{res.proc.stderr}"
    frac = weighted_fraction(mine, lambda s: find_seq(s.frames, CHAIN) >= 0)
    assert frac >= 0.95, format_stacks(mine)


def test_binary_replaced_on_disk(tmp_path, workloads):
    exe = tmp_path / "chain"
    shutil.copy(workloads["chain"], exe)
    with Workload([exe, RUN]) as w:
        # What a package upgrade does: a new file renamed over the old name.
        replacement = tmp_path / "chain.new"
        shutil.copy(workloads["syscalls"], replacement)
        os.replace(replacement, exe)
        _, mine = _profile(tmp_path, w.pid)
    frac = weighted_fraction(mine, lambda s: find_seq(s.frames, CHAIN) >= 0)
    assert frac >= 0.95, format_stacks(mine)
    assert not any("sys_leaf" in s.frames for s in mine), "symbols came from the new file"


def test_jit_code_named_by_its_perf_map(tmp_path):
    src = os.path.join(os.path.dirname(__file__), "workloads", "jit.c")
    exe = tmp_path / "jit"
    subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-I", os.path.dirname(src), "-o", str(exe), src], check=True)
    with Workload([exe, RUN]) as w:
        _, mine = _profile(tmp_path, w.pid)
    chain = ["jitted_busy_loop", "jit_caller", "main"]
    in_jit = [s for s in mine if s.frames and s.frames[0] == "jitted_busy_loop"]
    assert total(in_jit) >= 0.7 * total(mine), format_stacks(mine)
    frac = weighted_fraction(in_jit, lambda s: find_seq(s.frames, chain) >= 0)
    assert frac >= 0.95, format_stacks(in_jit)


def test_code_remapped_into_anonymous_memory_is_the_files(tmp_path):
    """Huge-page tuned servers copy their .text into anonymous memory at the same addresses:
    the frames are still the binary's, named from its symbols, and unwound by its CFI."""
    src = os.path.join(os.path.dirname(__file__), "workloads", "remap.c")
    exe = tmp_path / "remap"
    subprocess.run(["gcc", "-O2", "-g", "-fomit-frame-pointer", "-o", str(exe), src], check=True)
    with Workload([exe, RUN]) as w:
        maps = open(f"/proc/{w.pid}/maps").read()
        assert not re.search(rf"r-xp .* {re.escape(str(exe))}$", maps, re.M), "the text was not remapped:\n" + maps
        res, mine = _profile(tmp_path, w.pid)
    chain = ["remap_leaf", "remap_outer", "main"]
    in_leaf = [s for s in mine if s.frames and s.frames[0] == "remap_leaf"]
    assert total(in_leaf) >= 0.7 * total(mine), format_stacks(mine)
    frac = weighted_fraction(in_leaf, lambda s: find_seq(s.frames, chain) >= 0 and s.frames[-1] == "_start")
    assert frac >= 0.95, format_stacks(in_leaf)
    st = res.profile.string_table
    paths = {st[m.filename] for m in res.profile.mapping}
    assert str(exe) in paths, paths


def test_short_lived_processes_keep_their_stacks(tmp_path, workloads):
    """Processes that live ~40 ms, less than the drain interval: the first sample of a pid
    wakes the reader at once, so their mappings are read before they exit."""
    from helpers import start_record, wait_record

    prof = start_record(tmp_path / "p.pprof", "--duration", "4", "--frequency", "999")
    time.sleep(1.0)  # sampling has started
    pids = []
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        p = subprocess.Popen([workloads["chain"], "0.04"], stdout=subprocess.DEVNULL)
        pids.append(p.pid)
        p.wait()
    res = wait_record(prof, tmp_path / "p.pprof", timeout=60).check()
    theirs = [s for s in res.stacks if s.pid in set(pids)]
    assert total(theirs) > 200, f"{total(theirs)} samples of {len(pids)} short-lived processes"
    in_leaf = [s for s in theirs if "leaf" in s.frames]
    assert total(in_leaf) >= 0.6 * total(theirs), format_stacks(theirs)
    frac = weighted_fraction(in_leaf, lambda s: find_seq(s.frames, CHAIN) >= 0)
    assert frac >= 0.95, format_stacks(in_leaf)


def test_stacks_in_the_dynamic_loader_are_complete(tmp_path):
    """A process starting up spends its first milliseconds in the dynamic loader (clang's
    --version: relocating libLLVM). Debian's ld.so is stripped: its `_start` is known from the
    ELF header's entry address and its debug file, so these stacks are complete, not
    `[unwind failed: no unwind info]`."""
    from helpers import start_record, wait_record

    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None:
        pytest.skip("clang-19 not installed (make deps installs it)")
    prof = start_record(tmp_path / "p.pprof", "--duration", "4", "--frequency", "999")
    time.sleep(1.0)
    pids = []
    end = time.monotonic() + 2.5
    while time.monotonic() < end:
        p = subprocess.Popen([clang, "--version"], stdout=subprocess.DEVNULL)
        pids.append(p.pid)
        p.wait()
    res = wait_record(prof, tmp_path / "p.pprof", timeout=60).check()
    theirs = [s for s in res.stacks if s.pid in set(pids) and s.frames]
    assert total(theirs) > 100, f"{total(theirs)} samples of {len(pids)} clang processes"
    # Before the loader's entry was known, ~80% of these samples ended so. (A process in
    # exit_group has no stack left to copy: `stack memory not captured`, rightly.)
    failed = [s for s in theirs if s.frames[-1] == "[unwind failed: no unwind info]"]
    assert total(failed) <= 0.02 * total(theirs), format_stacks(failed)
