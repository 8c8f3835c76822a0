"""Python frames inside native stacks, on every CPython version this machine has.

One workload (tests/workloads/pychains.py) runs one known chain per thread: plain
functions, methods of a class hierarchy, a closure, a generator, a C function calling back
(`sorted(key=...)`), an asyncio task, a recursion 100 deep; the leaf's hot loop spans three
lines. `record` samples it; for each thread, at least 95% of its samples must show the
whole chain, leaf first, with the workload's file name and, for every caller, the line of
its call; the leaf's lines must move with the loop. Then: side by side with py-spy on the
same process; processes that fork, exec and exit; interpreters we do not support, and one
whose memory makes no sense; the continuous profiler's upload to the agent emulator.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import Workload, record, skip_or_fail

pytestmark = pytest.mark.bpf

WORKLOAD = Path(__file__).parent / "workloads" / "pychains.py"
SOURCE = WORKLOAD.read_text().splitlines()

# (label, how to find it): pyenv's builds (libpython shared) and Debian's (static), and a
# program that embeds Debian's shared libpython3.11 (as gdb, vim or a C++ service do).
INTERPRETERS = [(f"3.{m}", f"~/.pyenv/versions/3.{m}.*/bin/python3.{m}") for m in range(8, 15)]
INTERPRETERS.append(("debian-3.11", "/usr/bin/python3.11"))
INTERPRETERS.append(("debian-libpython3.11", "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"))
# The versions CI must have (the machine's pyenv and Debian's python3.11); others (3.14)
# are tested where installed, supported untested elsewhere.
REQUIRED = {"3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "debian-3.11", "debian-libpython3.11"}
EMBED = Path(os.environ.get("TMPDIR", "/tmp")) / f"ddprof-pyembed-{os.getuid()}" / "pyembed"


def embedding_program() -> str:
    """A C program that runs Python through Debian's shared libpython3.11 (Py_BytesMain:
    the same command line as python3)."""
    if not EMBED.exists():
        EMBED.parent.mkdir(parents=True, exist_ok=True)
        src = EMBED.with_suffix(".c")
        src.write_text("#include <Python.h>\nint main(int argc, char **argv) { return Py_BytesMain(argc, argv); }\n")
        try:
            subprocess.run(["gcc", "-O2", "-o", str(EMBED), str(src), "-I/usr/include/python3.11", "-lpython3.11"],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as e:
            skip_or_fail(f"cannot build a libpython3.11 embedding program (apt-get install libpython3.11-dev): {e}")
    return str(EMBED)


def installed(label: str) -> list:
    return sorted(glob.glob(os.path.expanduser(dict(INTERPRETERS)[label])))


TESTED = [label for label, _ in INTERPRETERS if label in REQUIRED or installed(label)]


def interpreter(label: str) -> str:
    found = installed(label)
    if not found:
        skip_or_fail(f"CPython {label} is not installed ({dict(INTERPRETERS)[label]})")
    return embedding_program() if label == "debian-libpython3.11" else found[-1]


def line_of(text: str, after: str = "") -> int:
    """The line number of the first line containing `text` (after the line with `after`)."""
    start = next(i for i, s in enumerate(SOURCE) if after in s) if after else 0
    return next(i + 1 for i, s in enumerate(SOURCE) if i >= start and text in s)


BURN_LINES = {line_of("# LINE burn_a"), line_of("# LINE burn_b"), line_of("# LINE burn_c"),
              line_of("for i in range(n):", "def burn(")}
BURN_DEF = line_of("def burn(")


def chain(mode: str, qualnames: bool) -> list[tuple[str, int]]:
    """(function, line) of the mode's Python chain, leaf first; the leaf's line is checked
    apart (it moves with the loop)."""
    q = (lambda new, old: new if qualnames else old)
    burn = ("burn", 0)
    return {
        "plain": [burn, ("plain_leaf", line_of("return burn(", "def plain_leaf")),
                  ("plain_mid", line_of("return plain_leaf()")), ("plain_top", line_of("plain_mid()", "def plain_top"))],
        "methods": [burn, (q("Child.step", "step"), line_of("return burn(", "def step")),
                    (q("Base.run", "run"), line_of("return self.step()")),
                    ("methods_top", line_of("child.run()"))],
        "closure": [burn, (q("make_closure.<locals>.inner", "inner"), line_of("return burn(", "def inner")),
                    ("closure_top", line_of("f()", "def closure_top"))],
        "generator": [burn, ("gen_values", line_of("yield burn(")),
                      ("generator_top", line_of("for _ in gen_values():"))],
        "sorted": [burn, ("key_fn", line_of("return burn(", "def key_fn")),
                   ("sorted_top", line_of("sorted(range(20), key=key_fn)"))],
        "asyncio": [burn, ("coro_leaf", line_of("return burn(", "async def coro_leaf")),
                    ("coro_mid", line_of("await coro_leaf()"))],
        "recursion": [burn, ("recurse", line_of("return burn(", "def recurse"))]
        + [("recurse", line_of("return recurse(n - 1)"))] * 100
        + [("recursion_top", line_of("recurse(100)", "def recursion_top"))],
    }[mode]


def frames_of(profile, sample):
    """(kind, function, file, line) leaf first; kind 'python' for the [python X.Y.Z] mapping."""
    st = profile.string_table
    funcs = {f.id: (st[f.name], st[f.filename]) for f in profile.function}
    maps = {m.id: st[m.filename] for m in profile.mapping}
    locs = {loc.id: loc for loc in profile.location}
    out = []
    for lid in sample.location_id:
        loc = locs[lid]
        kind = "python" if maps.get(loc.mapping_id, "").startswith("[python ") else "native"
        for ln in loc.line:
            name, file = funcs[ln.function_id]
            out.append((kind, name, file, ln.line))
        if not loc.line:
            out.append((kind, "", "", 0))
    return out


def label(profile, sample, key: str) -> str:
    st = profile.string_table
    return next((st[lb.str] for lb in sample.label if st[lb.key] == key), "")


def run_workload(python: str, tmp_path: Path, modes: str, seconds: float = 4, hz: int = 499):
    """Records the workload; (profile, {mode: [(count, frames)]}, record result)."""
    ids = tmp_path / "tids"
    with Workload([python, str(WORKLOAD), "30", modes, str(ids)], ready_timeout=20) as w:
        tids = {int(t): mode for mode, t in (ln.split() for ln in ids.read_text().splitlines())}
        res = record(tmp_path / "py.pprof", "--pid", w.pid, "--duration", seconds, "--frequency", hz).check()
    by_mode: dict[str, list] = {m: [] for m in modes.split(",")}
    for s in res.profile.sample:
        mode = tids.get(int(label(res.profile, s, "thread id") or 0))
        if mode:
            by_mode[mode].append((s.value[0], frames_of(res.profile, s)))
    return res.profile, by_mode, res


def check_chain(mode: str, samples: list, qualnames: bool, file: str) -> tuple[int, int, Counter, list]:
    """(samples with the whole chain, samples, leaf lines, a few stacks without it)."""
    want = chain(mode, qualnames)
    ok, total, leaf_lines, bad = 0, 0, Counter(), []
    for count, frames in samples:
        py = [f for f in frames if f[0] == "python"]
        if mode == "asyncio" and py and py[0][2] != file and not any(f[1] == "burn" for f in py):
            # The event loop's own time (epoll, freeing a finished frame): a right stack
            # that by design does not hold the coroutine's chain.
            continue
        total += count
        got = [(name, line) for _, name, _, line in py[:len(want)]]
        if len(got) == len(want) and got[0][0] == "burn" and got[1:] == want[1:] \
                and all(f[2] == file for f in py[:len(want)]):
            if mode == "sorted":
                # The C code of sorted() between the callback and its caller, in place.
                i = next(i for i, f in enumerate(frames) if f[1] == "key_fn")
                j = next(i for i, f in enumerate(frames) if f[1] == "sorted_top")
                if not any(f[0] == "native" for f in frames[i + 1:j]):
                    continue
            ok += count
            leaf_lines[got[0][1]] += count
        elif len(bad) < 3:
            bad.append(" <- ".join(f"{n}:{ln}" if k == "python" else n for k, n, _, ln in frames))
    return ok, total, leaf_lines, bad


@pytest.mark.parametrize("version", TESTED)
def test_known_chains_on_every_version(version, tmp_path):
    python = interpreter(version)
    minor = int(version.rsplit(".", 1)[-1])
    modes = "plain,methods,closure,generator,sorted,asyncio,recursion"
    profile, by_mode, res = run_workload(python, tmp_path, modes)
    report = []
    for mode, samples in by_mode.items():
        ok, total, leaf_lines, bad = check_chain(mode, samples, minor >= 11, str(WORKLOAD))
        report.append(f"{mode}: {ok}/{total}, leaf lines {dict(leaf_lines)}")
        assert total >= 30, f"{version} {mode}: only {total} samples\n" + "\n".join(report) + res.proc.stderr
        assert ok >= 0.95 * total, f"{version} {mode}: {ok}/{total} with the chain; e.g. {bad}\n" + "\n".join(report)
        # The loop's lines, not the def line: at least two of them, and the def line only
        # for the rare sample taken as the function starts (its RESUME instruction).
        assert leaf_lines[BURN_DEF] <= 0.05 * ok and len(set(leaf_lines) & BURN_LINES) >= 2, (mode, leaf_lines)
    # The profile says which interpreter, and the summary how many samples got frames.
    names = {profile.string_table[m.filename] for m in profile.mapping}
    assert any(n.startswith(f"[python 3.{minor}") for n in names), names
    m = re.search(r"python: (\d+) samples with Python frames", res.proc.stderr)
    assert m and int(m.group(1)) > 0.9 * sum(s.value[0] for s in profile.sample), res.proc.stderr


def spy_stacks(path: Path) -> Counter:
    """py-spy's raw output: (root..leaf function names) -> samples."""
    c: Counter = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        names = tuple(re.sub(r" \(.*\)$", "", f) for f in stack.split(";"))
        c[names] += int(n)
    return c


def distribution(c: Counter, key) -> dict:
    total = sum(c.values())
    out: Counter = Counter()
    for k, n in c.items():
        out[key(k)] += n
    return {k: 100.0 * n / total for k, n in out.items()}


def test_agrees_with_py_spy(tmp_path):
    spy = shutil.which("py-spy")
    if not spy:
        skip_or_fail("py-spy is not installed (pip install py-spy)")
    python = interpreter("3.12")
    mix = tmp_path / "mix.py"
    mix.write_text(
        "import sys, time\n"
        "def leaf_a(n):\n    t = 0\n    for i in range(n):\n        t += i * i\n    return t\n"
        "def leaf_b(n):\n    t = 0\n    for i in range(n):\n        t += i * i\n    return t\n"
        "def alpha(): return leaf_a(6000)\n"
        "def beta(): return leaf_b(4000)\n"
        "def gamma(): return leaf_a(2000)\n"
        "def main(s):\n    t0 = time.time()\n    while time.time() - t0 < s:\n        alpha(); beta(); gamma()\n"
        "print('ready', flush=True)\nmain(float(sys.argv[1]))\n")
    with Workload([python, str(mix), "40"]) as w:
        # Same process, same time. py-spy in its default (blocking) mode: it stops the
        # process for each sample, so its stacks are consistent.
        spy_out = tmp_path / "spy.txt"
        sp = subprocess.Popen([spy, "record", "--pid", str(w.pid), "--rate", "499", "--duration", "8",
                               "--format", "raw", "--output", str(spy_out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        res = record(tmp_path / "ours.pprof", "--pid", w.pid, "--duration", "8", "--frequency", "499").check()
        _, spy_err = sp.communicate(timeout=60)
    assert sp.returncode == 0, spy_err
    theirs = spy_stacks(spy_out)
    ours: Counter = Counter()
    for s in res.profile.sample:
        py = [f[1] for f in frames_of(res.profile, s) if f[0] == "python"]
        ours[tuple(reversed(py))] += s.value[0]
    # CPU samples: fewer when the machine is busy (py-spy also stops the process to read it).
    assert sum(ours.values()) > 1000 and sum(theirs.values()) > 1000, (sum(ours.values()), sum(theirs.values()))
    leaf = lambda k: k[-1] if k else ""  # noqa: E731
    whole = lambda k: k  # noqa: E731
    for what, key, bound in (("leaf function", leaf, 3.0), ("whole stack", whole, 5.0)):
        a, b = distribution(ours, key), distribution(theirs, key)
        for k in set(a) | set(b):
            if max(a.get(k, 0), b.get(k, 0)) < 2:
                continue
            assert abs(a.get(k, 0) - b.get(k, 0)) <= bound, f"{what} {k}: ours {a.get(k, 0):.1f}%, py-spy {b.get(k, 0):.1f}%"


def test_fork_exec_and_exit_while_profiled(tmp_path):
    python = interpreter("3.12")
    script = tmp_path / "churn.py"
    script.write_text(
        "import os, sys, time\n"
        "def child_work():\n    t = 0\n    for i in range(3_000_000):\n        t += i\n    os._exit(0)\n"
        "def parent_work():\n    t = 0\n    for i in range(300_000):\n        t += i\n"
        "def execd_work():\n    t = 0\n    for i in range(30_000_000):\n        t += i\n"
        "if len(sys.argv) > 2:\n    execd_work(); sys.exit(0)\n"
        "print('ready', flush=True)\n"
        "deadline = time.time() + float(sys.argv[1])\n"
        "while time.time() < deadline:\n"
        "    pid = os.fork()\n    if pid == 0:\n        child_work()\n    parent_work()\n    os.waitpid(pid, 0)\n"
        "os.execv(sys.executable, [sys.executable, __file__, '0', 'execd'])\n")
    with Workload([python, str(script), "2"]) as w:
        res = record(tmp_path / "churn.pprof", "--duration", "5", "--frequency", "499").check()
        w.proc.wait(30)
    names = Counter()
    pids = {}
    for s in res.profile.sample:
        for _, name, file, _ in frames_of(res.profile, s):
            if file == str(script):
                names[name] += s.value[0]
                pids.setdefault(name, set()).add(label(res.profile, s, "process_id"))
    # Forked children, the parent, and the program after exec (same pid) all named.
    assert names["child_work"] > 50 and names["parent_work"] > 5 and names["execd_work"] > 50, names
    assert len(pids["child_work"]) > 3, "forked children, each a new process"
    assert str(w.pid) in pids["execd_work"], "after exec, in the same pid"


FAKE_PYTHON = r"""
/* A binary that looks like a CPython to the profiler (its _PyRuntime, eval loop and cache
 * tag) and burns CPU. */
#include <stdio.h>
#include <string.h>
char _PyRuntime[4096];
const char *tag = "cpython-3" MINOR;
__attribute__((noinline)) long _PyEval_EvalFrameDefault(long n) {
    volatile long t = 0;
    for (long i = 0; i < n; i++) t += i ^ (t >> 3);
    return t;
}
int main(void) {
    printf("ready %s\n", tag); fflush(stdout);
    for (;;) _PyEval_EvalFrameDefault(100000000);
}
"""


@pytest.mark.parametrize("minor, outcome", [("99", "unsupported"), ("11", "unreadable")])
def test_unsupported_and_unreadable_interpreters(tmp_path, minor, outcome):
    src = tmp_path / "fake.c"
    src.write_text(FAKE_PYTHON)
    exe = tmp_path / f"python3.{minor}"
    subprocess.run(["gcc", "-O1", "-rdynamic", f'-DMINOR="{minor}"', "-o", str(exe), str(src)], check=True)
    with Workload([exe]) as w:
        res = record(tmp_path / "fake.pprof", "--pid", w.pid, "--duration", "2", "--frequency", "499").check()
    err = res.proc.stderr
    ours = [s for s in res.stacks if s.pid == w.pid]
    assert sum(s.count for s in ours) > 300, err
    # Native frames only, the eval loop named as itself: never a Python name.
    assert all("_PyEval_EvalFrameDefault" in s.frames for s in ours), ours[:3]
    assert not any(m.filename and res.profile.string_table[m.filename].startswith("[python")
                   for m in res.profile.mapping)
    if outcome == "unsupported":
        assert re.search(r"CPython 3\.99 \(pid \d+, .*python3\.99\).*version we do not support", err), err
        assert re.search(r"python_unsupported \d+", err), err
    else:
        # Its interpreter list is empty (all zeros): the walk finds no thread state.
        assert "python: 0 samples with Python frames" in err and "interpreter memory unreadable" in err, err


def test_continuous_profile_of_a_python_service_has_python_frames(test_agent, tmp_path):
    from agent_fixtures import decode_upload, recorded
    from ddprofiler.pprof import profile_pb2

    python = interpreter("3.12")
    test_agent.get("/test/session/start?test_session_token=py")
    env = {**os.environ, "DD_SERVICE": "py-checkout"}
    with Workload([python, str(WORKLOAD), "30", "plain"], env=env):
        prof = subprocess.Popen(
            [sys.executable, "-m", "ddprofiler", "--agent-url", test_agent.url, "--upload-period", "2",
             "--sampling-rate", "99"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6)
        prof.send_signal(signal.SIGTERM)
        _, err = prof.communicate(timeout=30)
    assert prof.returncode == 0, err
    ups = [decode_upload(r) for r in recorded(test_agent, "py")]
    ups = [u for u in ups if "service:py-checkout" in u.event["tags_profiler"].split(",")]
    assert ups, err
    with_chain = total = 0
    for u in ups:
        p = profile_pb2.Profile.FromString(u.pprof)
        for s in p.sample:
            total += s.value[0]
            py = [f[1] for f in frames_of(p, s) if f[0] == "python"]
            if py[:4] == ["burn", "plain_leaf", "plain_mid", "plain_top"]:
                with_chain += s.value[0]
    assert total > 100 and with_chain >= 0.9 * total, (with_chain, total)
