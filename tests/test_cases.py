"""Issue 10, "Stacks that never lie": the cases of programs profilers are known to get wrong.

Each case of tests/cases/<case>/ (a copy of the sources of ../shared/cases, whose README.txt
gives the build line, the run line and the right answer) is built here with exactly its
README's build line, run, and recorded with `python -m ddprofiler record`; at least 95% of
its relevant samples (those whose leaf is the case's hot function) must show the right stack,
leaf to root, or, where the kind says so, the right frames followed by a marker frame.
Real binaries nobody here wrote, side by side with `perf`, and the test that no stack ends
unmarked are in tests/test_real_binaries.py; what both share is in tests/cases_support.py.

How a stack may end (the issue's kind 9): at a known thread or process entry point
(ENTRY_POINTS; the stack is complete; a stripped executable's nameless _start right under
glibc's __libc_start_main counts as the _start it is), at a marker frame (`[truncated]`: the
stack goes on beyond what was captured; `[unwind failed: <reason>]`; `[process exited]`: the
process was gone before it could be read), or it is kernel-only. A stack deeper than 600
frames keeps both ends, with one `[elided frames]` marker in the middle. Anything else is a
stack that ends unmarked, which a user would take for a whole one.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Callable

import pytest

from helpers import (TRUNCATED, Workload, skip_or_fail, total)
from cases_support import (CASES, DEPTH, ELIDED, PY_INTERPRETERS, PY_MODES, RUN, annotate_mappings,
                           assert_right, chain_then_glibc, glibc_rooted, go_env, is_entry, is_marker,
                           need, norm, py_installed, record_pid, running, sh, start_tail, user_frames)
from cases_support import built  # noqa: F401 - a fixture, found by pytest in this module

pytestmark = pytest.mark.bpf


# ---------------------------------------------------------------- kind 1: CFI beyond rip/rsp/rbp


def test_openssl_cfa_expr(built, tmp_path):
    """CFA in a scratch register (rax), then a DW_CFA_def_cfa_expression reading r9 and memory.
    request_handler tail-calls crypto_like_work (-O2), so it is rightly not on the stack."""
    d = built("openssl-cfa-expr")
    with running(["./cfa", RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    chain = ["spin_asm", "crypto_like_work", "main"]
    assert_right(mine, lambda s: user_frames(s, kernel)[:1] == ["spin_asm"],
                 chain_then_glibc(chain, kernel), "cfa: samples in spin_asm",
                 " <- ".join(chain) + " <- __libc_start_call_main <- __libc_start_main_impl <- _start",
                 min_samples=500)


# ---------------------------------------------------------------- kind 2: signal frames


HANDLER = ["burn", "handler_work", "on_tick", "__restore_rt"]
INTERRUPTED = ["burn", "main_loop_work", "app_main_loop", "main"]


@pytest.mark.parametrize("mode", ["normal", "alt"])
def test_signal_frames(built, tmp_path, mode):
    """CPU time in a SIGPROF handler: the handler, __restore_rt, then the interrupted code down
    to the entry point. On a sigaltstack the interrupted stack is elsewhere: the whole stack,
    or the handler part (and right frames of the interrupted code) then a marker frame."""
    d = built("signal-frames")
    with running(["./sig", mode, RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    full = HANDLER + INTERRUPTED
    whole = chain_then_glibc(full, kernel)

    def right(s):
        if whole(s):
            return True
        if mode != "alt":
            return False
        u = user_frames(s, kernel)
        return (len(u) > len(HANDLER) and is_marker(u[-1])
                and u[:-1] == full[:len(u) - 1] and len(u) - 1 >= len(HANDLER))

    answer = " <- ".join(full) + " <- __libc_start_call_main <- __libc_start_main_impl <- _start"
    if mode == "alt":
        answer += f"  (or {' <- '.join(HANDLER)} [<- right frames of the interrupted code] <- a marker)"
    assert_right(mine, lambda s: "on_tick" in user_frames(s, kernel), right,
                 f"sig {mode}: samples in the signal handler", answer, min_samples=150)
    # The interrupted program's own samples, outside the handler.
    assert_right(mine, lambda s: "on_tick" not in user_frames(s, kernel)
                 and user_frames(s, kernel)[:1] == ["burn"],
                 chain_then_glibc(INTERRUPTED, kernel), f"sig {mode}: samples of the main loop",
                 " <- ".join(INTERRUPTED) + " <- __libc_start_call_main <- ... <- _start")


# ---------------------------------------------------------------- kind 3: return address in a register


VFORK = {"__libc_vfork", "__vfork", "vfork"}


def test_vfork_register_ra(built, tmp_path):
    """Samples inside vfork(): glibc's __vfork keeps its return address in rdi."""
    d = built("vfork-register-ra")
    with running(["./vf", RUN], d, settle=1.0) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)

    def right(s):
        u = user_frames(s, kernel)
        return (bool(u) and u[0] in VFORK and u[1:4] == ["spawn_child", "supervisor_loop", "main"]
                and glibc_rooted(u[4:]))

    assert_right(mine, lambda s: any(f in VFORK for f in user_frames(s, kernel)), right,
                 "vf: samples inside vfork()",
                 "dup_fd <- copy_process <- ... <- __libc_vfork <- spawn_child <- supervisor_loop <- "
                 "main <- __libc_start_call_main <- __libc_start_main_impl <- _start", min_samples=100)


# ---------------------------------------------------------------- kind 4: several programs in one pid


def test_exec_same_pid(built, tmp_path):
    """stage1 works, then exec()s stage2 in the same pid (both non-PIE, code at the same
    addresses): one recording spanning the exec; each phase named from its own program."""
    d = built("exec-same-pid")
    with running(["./stage1", "2.5", RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid, duration="6")
    annotate_mappings(res)
    for stage, other in (("stage1", "stage2"), ("stage2", "stage1")):
        n = stage[-1]
        chain = [f"stage_work_{n}", "main"]
        frames_right = chain_then_glibc(chain, kernel)

        def right(s, stage=stage, other=other, frames_right=frames_right):
            if not frames_right(s):
                return False
            k = len(s.frames) - len(user_frames(s, kernel))   # kernel frames on top
            exe = [os.path.basename(m) for m in s.maps[k:k + 2]]  # stage_work_N, main
            return (exe == [stage, stage]
                    and not any(os.path.basename(m) == other for m in s.maps))

        mapped: Counter = Counter()   # (user leaf, its mapping) of the phase's samples
        for s in mine:
            u = user_frames(s, kernel)
            if s.thread_name == stage and u:
                mapped[(u[0], os.path.basename(s.maps[len(s.frames) - len(u)]))] += s.count
        assert_right(mine, lambda s, stage=stage: s.thread_name == stage, right,
                     f"exec: samples of thread name {stage} (user leaf, mappings: "
                     f"{mapped.most_common(4)})",
                     " <- ".join(chain) + f" <- __libc_start_call_main <- ... <- _start, "
                     f"the first two from the mapping of {stage}",
                     min_samples=300 if stage == "stage2" else 100)


# ---------------------------------------------------------------- kind 5: deeper than the snapshot


@pytest.mark.parametrize("stack_bytes", ["default", "65536"])
def test_deep_recursion(built, tmp_path, stack_bytes):
    """leaf_work under 1001 descend frames (~32 KiB of stack). 64 KiB: both ends, the middle
    behind exactly one [elided frames] marker (the stack is over 600 frames); the default
    16 KiB: the leaf end, then [truncated] (never an unmarked stop)."""
    d = built("deep-recursion")
    extra = [] if stack_bytes == "default" else ["--stack-bytes", stack_bytes]
    with running(["./rec", RUN, str(DEPTH)], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid, *extra)

    def complete(s):
        u = user_frames(s, kernel)
        if u[:1] != ["leaf_work"] or "main" not in u:
            return False
        m = u.index("main")
        middle = u[1:m]
        return (glibc_rooted(u[m + 1:]) and middle.count(ELIDED) == 1
                and middle[0] == "descend" and middle[-1] == "descend"
                and all(f in ("descend", ELIDED) for f in middle))

    def cut(s):
        u = user_frames(s, kernel)
        return (len(u) >= 3 and u[0] == "leaf_work" and u[-1] == TRUNCATED
                and all(f == "descend" for f in u[1:-1]))

    relevant = lambda s: user_frames(s, kernel)[:1] == ["leaf_work"]  # noqa: E731
    if stack_bytes == "default":
        assert_right(mine, relevant, lambda s: cut(s) or complete(s),
                     "rec, --stack-bytes default (16384): samples in leaf_work",
                     "leaf_work <- descend x k <- [truncated] (or the whole stack)", min_samples=500)
    else:
        assert_right(mine, relevant, complete,
                     "rec, --stack-bytes 65536: samples in leaf_work",
                     f"leaf_work <- descend x{DEPTH + 1} (the middle as one [elided frames]) <- main "
                     "<- __libc_start_call_main <- __libc_start_main_impl <- _start", min_samples=500)


# ---------------------------------------------------------------- kind 6: code without unwind tables


MUSL_MAIN_START = ["libc_start_main_stage2", "__libc_start_main", "_start_c", "_start"]
MUSL_THREAD_START = ["start", "__clone"]


def test_musl_static(built, tmp_path):
    """Static musl: memcpy/memset (assembly, no CFI, no frame pointer) in the main thread and
    in a pthread; the stacks go down to musl's start code and are complete there."""
    d = built("musl-static")
    with running(["./m", RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    for who, root_fn, start in (("main thread", "main", MUSL_MAIN_START),
                                ("worker thread", "worker", MUSL_THREAD_START)):
        chain = ["copy_block", "pump", root_fn]

        def right(s, chain=chain, start=start):
            u = user_frames(s, kernel)
            if u[:1] and u[0] in ("memcpy", "memset"):
                u = u[1:]
            return u[:3] == chain and start_tail(u[3:], start)

        main_thread = who == "main thread"
        assert_right(mine, lambda s, main_thread=main_thread: (s.tid == p.pid) == main_thread
                     and user_frames(s, kernel)[:1] in (["memcpy"], ["memset"], ["copy_block"]),
                     right, f"m: {who} samples in memcpy, memset or copy_block",
                     "memcpy|memset <- " + " <- ".join(chain + start))


@pytest.mark.parametrize("binary", ["df-inline", "df-split"])
def test_debug_frame_only(built, tmp_path, binary):
    """No .eh_frame, no frame pointers: the only CFI is .debug_frame, in the binary or (df-split,
    stripped) only in the separate debug file found through .gnu_debuglink next to it."""
    d = built("debug-frame-only")
    sections = subprocess.run(["readelf", "-SW", str(d / binary)], capture_output=True,
                              text=True).stdout
    if binary == "df-split":
        assert ".gnu_debuglink" in sections and ".debug_frame" not in sections, sections
        debug = subprocess.run(["readelf", "-SW", str(d / "df-split.debug")], capture_output=True,
                               text=True).stdout
        assert ".debug_frame" in debug, debug
    else:
        assert ".debug_frame" in sections, sections
    with running([f"./{binary}", RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    chain = ["df_leaf", "df_middle", "df_outer", "main"]
    assert_right(mine, lambda s: user_frames(s, kernel)[:1] == ["df_leaf"],
                 chain_then_glibc(chain, kernel), f"{binary}: samples in df_leaf",
                 " <- ".join(chain) + " <- __libc_start_call_main <- __libc_start_main_impl <- _start",
                 min_samples=500)


# ---------------------------------------------------------------- kind 7: Go


# From main.go: main.main -> runCOnly -> C.c_only (cgo: main._Cfunc_c_only -> runtime.cgocall ->
# runtime.asmcgocall on the system stack -> the C stub, which tail-calls c_only) -> c_work.
CGO_C_ONLY = ["c_work", "c_only", "runtime.asmcgocall", "runtime.cgocall", "main._Cfunc_c_only",
              "main.runCOnly", "main.main", "runtime.main", "runtime.goexit"]
# main.main -> runDriver -> C.c_driver (as above) -> goWork, the C wrapper cgo exports ->
# crosscall2 -> runtime.cgocallback (back on the goroutine's stack) -> runtime.cgocallbackg...
# -> _cgoexp_<hash>_goWork -> main.goWork (the Go function, maybe inlined there).
CGO_BELOW_CALLBACK = ["crosscall2", "goWork", "c_driver", "runtime.asmcgocall", "runtime.cgocall",
                      "main._Cfunc_c_driver", "main.runDriver", "main.main", "runtime.main",
                      "runtime.goexit"]


# Go 1.19 (Debian's golang-1.19), whose runtime differs where the sampler reads it (gobuf
# still has its `ret` word, so gobuf.bp and m.curg are 8 bytes further; asmcgocall and
# systemstack_switch keep no frame): the cgo tests run with it too when it is installed.
GO_OLD = Path("/usr/lib/go-1.19/bin/go")
TOOLCHAINS = ["go", "go1.19"]


def toolchain(which: str) -> str:
    """The go command of a TOOLCHAINS entry; Go 1.19 is optional (skipped when absent)."""
    if which == "go":
        return need("go", "golang-go")
    if not os.access(GO_OLD, os.X_OK):
        pytest.skip(f"{GO_OLD} is not installed (apt-get install golang-1.19-go)")
    return str(GO_OLD)


@pytest.fixture(scope="session")
def built_go(tmp_path_factory) -> Callable[[str, str], Path]:
    """(source dir or inline program, toolchain) -> its build dir, each built once."""
    done: dict = {}

    def build(what: str, which: str) -> Path:
        if (what, which) not in done:
            go = toolchain(which)
            need("gcc", "gcc")
            out = tmp_path_factory.mktemp(f"{what}-{which}")
            if what == "cgo-rbp":
                (out / "go.mod").write_text("module cgorbp\n\ngo 1.19\n")
                (out / "main.go").write_text(CGO_RBP_MAIN)
                sh([go, "build", "-o", "cgorbp", "."], out, env=go_env())
            else:
                shutil.copytree(CASES / what, out, dirs_exist_ok=True)
                sh([go, "build", "-o", "cgocb", "."], out, env=go_env())
            done[(what, which)] = out
        return done[(what, which)]

    return build


@pytest.mark.parametrize("mode", ["c", "callback"])
def test_cgo_stack_switch(built, tmp_path, mode):
    """Go -> C (c_work on the system stack) and Go -> C -> Go (goWork called back from C):
    the stacks join across the switches down to runtime.goexit. In a callback the C frames
    between crosscall2 and runtime.asmcgocall are on the system stack, which the sampler
    copies for Go programs (the Go window) from where runtime.cgocallback left it."""
    check_cgo_stack_switch(built("cgo-stack-switch"), tmp_path, mode)


@pytest.mark.parametrize("mode", ["c", "callback"])
def test_cgo_stack_switch_older_go(built_go, tmp_path, mode):
    """The same, built by Go 1.19 (another runtime layout, read at other offsets)."""
    check_cgo_stack_switch(built_go("cgo-stack-switch", "go1.19"), tmp_path, mode)


def check_cgo_stack_switch(d: Path, tmp_path: Path, mode: str) -> None:
    source = (d / "main.go").read_text()
    for call in ("func runDriver() { C.c_driver(50) }", "func runCOnly() { C.c_only(50) }",
                 "goWork(200000)", "c_work(200000)", "runCOnly()", "runDriver()"):
        assert call in source, f"main.go changed: the right answer here is derived from {call!r}"
    argv = ["./cgocb", RUN] + (["c"] if mode == "c" else [])
    with running(argv, d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    if mode == "c":
        assert_right(mine, lambda s: user_frames(s, kernel)[:1] == ["c_work"],
                     lambda s: user_frames(s, kernel) == CGO_C_ONLY,
                     "cgocb c: samples in c_work", " <- ".join(CGO_C_ONLY))
        return

    def right(s):
        u = user_frames(s, kernel)
        if "runtime.cgocallback" not in u:
            return False
        i = u.index("runtime.cgocallback")
        go_part = u[:i]   # main.goWork ... runtime.cgocallbackg*, on the goroutine's stack
        return (go_part[:1] == ["main.goWork"]
                and any(re.fullmatch(r"_cgoexp_[0-9a-f]+_goWork", f) for f in go_part)
                and all(f.startswith("runtime.") or f == "main.goWork"
                        or re.fullmatch(r"_cgoexp_[0-9a-f]+_goWork", f) for f in go_part)
                and u[i + 1:] == CGO_BELOW_CALLBACK)

    assert_right(mine, lambda s: user_frames(s, kernel)[:1] == ["main.goWork"], right,
                 "cgocb callback: samples in main.goWork",
                 "main.goWork <- _cgoexp_<hash>_goWork <- runtime.cgocallbackg1 <- "
                 "runtime.cgocallbackg <- runtime.cgocallback <- " + " <- ".join(CGO_BELOW_CALLBACK))


# Go -> C where the C code keeps data in rbp, as code compiled without frame pointers does
# when it runs out of registers: c_rbp holds its loop bound and counter in rbx and rbp across
# an indirect call. The kernel's frame-pointer chain from c_work starts at that data, so only
# the goroutine's saved state (curg.sched), read by the sampler with a window of the
# goroutine's stack, leads from runtime.asmcgocall back to main.
CGO_RBP_MAIN = """package main

/*
#include <stdint.h>
static volatile double c_sink;
static void __attribute__((noinline)) c_work(int64_t n) {
    double x = 0; for (int64_t i = 0; i < n; i++) x += i * 0.25; c_sink += x;
}
static void (*volatile c_leaf)(int64_t) = c_work;
static void __attribute__((noinline)) c_rbp(int64_t rounds) {
    for (int64_t i = 0; i < rounds; i++) c_leaf(200000);
}
*/
import "C"

import (
	"os"
	"strconv"
	"time"
)

//go:noinline
func runCRbp() { C.c_rbp(50) }

func main() {
	secs, _ := strconv.ParseFloat(os.Args[1], 64)
	t0 := time.Now()
	for time.Since(t0).Seconds() < secs {
		runCRbp()
	}
}
"""
CGO_RBP = ["c_work", "c_rbp", "runtime.asmcgocall", "runtime.cgocall", "main._Cfunc_c_rbp",
           "main.runCRbp", "main.main", "runtime.main", "runtime.goexit"]


@pytest.mark.parametrize("which", TOOLCHAINS)
def test_cgo_c_code_using_rbp(built_go, tmp_path, which):
    """Go -> C whose C code uses rbp for data: the stack still joins down to runtime.goexit
    (before the Go window it ended `runtime.asmcgocall <- [unwind failed: stack switch]`)."""
    d = built_go("cgo-rbp", which)
    body = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "--disassemble=c_rbp",
                           str(d / "cgorbp")], capture_output=True, text=True).stdout
    assert re.search(r"\bmov\s+%\w+,%rbp\b", body), (
        f"c_rbp does not keep data in rbp with this compiler; the test needs it to:\n{body}")
    with running(["./cgorbp", RUN], d) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid)
    assert_right(mine, lambda s: user_frames(s, kernel)[:1] == ["c_work"],
                 lambda s: user_frames(s, kernel) == CGO_RBP,
                 f"cgorbp ({which}): samples in c_work", " <- ".join(CGO_RBP))


_TRACE_VALUE = re.compile(r"^\s*([0-9.]+)(ns|us|µs|ms|s|m|h)?\s+(\S.*)$")
_UNITS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6, None: 1.0}


def go_pprof_traces(text: str) -> Counter:
    """`go tool pprof -traces`: (function names leaf first, inlined ones included) -> ms.

    After the header, traces are separated by `-----------+---...` lines; a trace's first
    line is its value and its leaf, each next line one caller."""
    out: Counter = Counter()
    frames: list = []
    value, in_trace = 0.0, False
    for line in text.splitlines():
        if line.startswith("-----------+"):
            if frames:
                out[tuple(frames)] += value
            frames, value, in_trace = [], 0.0, True
        elif in_trace and line.strip():
            name = line.strip()
            if not frames:
                m = _TRACE_VALUE.match(line)
                assert m, f"unexpected trace line {line!r}"
                value, name = float(m.group(1)) * _UNITS[m.group(2)], m.group(3)
            frames.append(name.replace(" (inline)", "").strip())
    if frames:
        out[tuple(frames)] += value
    return out


def test_go_stripped_vs_runtime_pprof(built, tmp_path):
    """A stripped Go program whose hot leaf (main.hash) has no frame: our stacks against the
    program's own runtime/pprof CPU profile, taken at the same time (same function sequences,
    for at least 90% of the samples both ways)."""
    d = built("go-pprof-stripped")
    go = need("go", "golang-go")
    sections = subprocess.run(["readelf", "-SW", str(d / "gopprof")], capture_output=True,
                              text=True).stdout
    assert ".symtab" not in sections and ".gopclntab" in sections, sections
    prof = tmp_path / "own.pprof"
    with Workload([d / "gopprof", prof, "6"]) as w:
        res, kernel, mine = record_pid(tmp_path, w.pid)
        w.proc.wait(timeout=30)
    theirs_text = subprocess.run([go, "tool", "pprof", "-traces", str(d / "gopprof"), str(prof)],
                                 capture_output=True, text=True, env=go_env(), timeout=300)
    assert theirs_text.returncode == 0, theirs_text.stderr
    theirs = go_pprof_traces(theirs_text.stdout)
    assert sum(theirs.values()) > 0, theirs_text.stdout[:3000]

    def seq(frames):
        """pprof leaves runtime.goexit out; runtime.asyncPreempt, where the runtime's own
        preemption signal lands, is a leaf runtime/pprof's SIGPROF catches far more often
        than a perf event does (the frames under it are the goroutine's): both left out."""
        frames = list(frames)
        if frames[:1] == ["runtime.asyncPreempt"]:
            frames = frames[1:]
        if frames[-1:] == ["runtime.goexit"]:
            frames = frames[:-1]
        return tuple(frames)

    ours: Counter = Counter()
    for s in mine:
        ours[seq(user_frames(s, kernel))] += s.count
    own: Counter = Counter()
    for k, v in theirs.items():
        own[seq(k)] += v
    theirs = own
    fmt = lambda c: "\n".join(f"  {v / sum(c.values()):6.1%}  {' <- '.join(k)}"  # noqa: E731
                              for k, v in c.most_common(8))
    report = f"runtime/pprof's own profile:\n{fmt(theirs)}\nddprofiler:\n{fmt(ours)}"
    print(report)
    assert total(mine) >= 500, report
    ours_in_theirs = sum(v for k, v in ours.items() if k in theirs) / sum(ours.values())
    theirs_in_ours = sum(v for k, v in theirs.items() if k in ours) / sum(theirs.values())
    assert ours_in_theirs >= 0.90 and theirs_in_ours >= 0.90, (
        f"{ours_in_theirs:.1%} of our samples have a function sequence that runtime/pprof has, "
        f"{theirs_in_ours:.1%} of runtime/pprof's have one of ours (want >= 90% both)\n{report}")


# ---------------------------------------------------------------- kind 8: CPython's perf trampolines


PY_CHAIN = ["inner_math", "score_item", "handle_batch.<locals>.<genexpr>", "handle_batch", "main",
            "<module>"]


@pytest.mark.parametrize("frames", ["python", "no-python"])
@pytest.mark.parametrize("version,xopt", PY_MODES, ids=[f"{v}-{x}" for v, x in PY_MODES])
def test_python_perf_trampoline(built, tmp_path, version, xopt, frames):
    """python -X perf / -X perf_jit: the trampolines (anonymous code without CFI) do not cut the
    stack: with Python frames, the whole Python chain over the native stack down to _start;
    without (--no-python), the native stack still reaches the entry point."""
    found = py_installed(version)
    if not found:
        skip_or_fail(f"CPython {version} is not installed ({PY_INTERPRETERS[version]})")
    d = built("python-perf-trampoline")
    extra = ["--no-python"] if frames == "no-python" else []
    with running([found[-1], "-X", xopt, "app.py", RUN], d, settle=0.5) as p:
        res, kernel, mine = record_pid(tmp_path, p.pid, *extra)
    annotate_mappings(res)
    rooted = lambda s: (bool(s.frames) and is_entry(s.frames[-1]) and "Py_RunMain" in s.frames  # noqa: E731
                        and not any(is_marker(f) or f == "[unknown]" for f in s.frames))
    if frames == "python":
        def right(s):
            py = [norm(f) for f, m in zip(s.frames, s.maps) if m.startswith("[python ")]
            py = ["handle_batch.<locals>.<genexpr>" if f == "<genexpr>" else f for f in py]
            return (py == PY_CHAIN and rooted(s)
                    and s.frames.index("Py_RunMain") > s.frames.index("<module>"))

        assert_right(mine, lambda s: "inner_math" in s.frames, right,
                     f"python{version} -X {xopt}: samples in inner_math",
                     " <- ".join(PY_CHAIN) + " (Python) <- ... <- Py_RunMain <- ... <- _start")
        return

    def right_native(s):
        if not rooted(s):
            return False
        if xopt != "perf":
            return True
        # -X perf: the trampolines are named from /tmp/perf-PID.map, one per Python call.
        named = [m.group(0) for f in s.frames if (m := re.match(r"py::[^:]+", f))]
        want = ["py::inner_math", "py::score_item", "py::handle_batch", "py::main"]
        it = iter(named)
        return all(any(n == w for n in it) for w in want)

    assert_right(mine, lambda s: "_PyEval_EvalFrameDefault" in s.frames, right_native,
                 f"python{version} -X {xopt} --no-python: samples in the eval loop",
                 "... <- _PyEval_EvalFrameDefault <- " + ("py::inner_math <- ... <- py::score_item "
                 "<- ... <- py::handle_batch <- ... <- py::main <- " if xopt == "perf" else
                 "[trampolines] <- ") + "... <- Py_RunMain <- ... <- _start")
