"""Issue 10, "Stacks that never lie": the cases of programs profilers are known to get wrong.

Each case of tests/cases/<case>/ (a copy of the sources of ../shared/cases, whose README.txt
gives the build line, the run line and the right answer) is built here with exactly its
README's build line, run, and recorded with `python -m ddprofiler record`; at least 95% of
its relevant samples (those whose leaf is the case's hot function) must show the right stack,
leaf to root, or, where the kind says so, the right frames followed by a marker frame.

Then real binaries nobody here wrote, side by side with `perf record --call-graph dwarf` on
the same process at the same time (`openssl speed`, Debian's python3, node), a stripped Go
program against its own runtime/pprof CPU profile, and one test over all workloads that no
stack ends unmarked anywhere but a known entry point.

How a stack may end (the issue's kind 9): at a known thread or process entry point
(ENTRY_POINTS; the stack is complete; a stripped executable's nameless _start right under
glibc's __libc_start_main counts as the _start it is), at a marker frame (`[truncated]`: the stack goes on
beyond what was captured; `[unwind failed: <reason>]`; `[process exited]`: the process was
gone before it could be read), or it is kernel-only. A stack deeper than 600 frames keeps
both ends, with one `[elided frames]` marker in the middle. Anything else is a stack that
ends unmarked, which a user would take for a whole one.

Many of these tests fail until the unwinder of issue 10 lands: they encode the right answer.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest

from helpers import (TRUNCATED, UNSYMBOLIZED, Workload, for_pid, format_stacks,
                     kernel_function_names, record, skip_or_fail, total, weighted_fraction)

pytestmark = pytest.mark.bpf

CASES = Path(__file__).parent / "cases"
FREQ = "999"
DURATION = "4"
RUN = "60"          # seconds a case may run; it is killed once its profile is written
MIN_FRAC = 0.95

ELIDED = "[elided frames]"
# The known entry points: a stack whose root-most frame is one of them is complete.
# (Go's are runtime.goexit.abi0 etc. in `go tool nm`; .gopclntab names them without .abi0.)
ENTRY_POINTS = {
    "_start", "__libc_start_main", "__libc_start_call_main", "__libc_start_main_impl",
    "start_thread", "clone", "clone3", "__clone", "__clone3", "_dl_start", "_dl_start_user",
    # musl
    "start", "libc_start_main_stage2", "_start_c",
    # Go; runtime.mcall roots the scheduler's stack (the goroutine that called it is parked,
    # not a caller: Go's own profiler ends such stacks there too)
    "runtime.goexit", "runtime.mstart", "runtime.rt0_go", "runtime.mcall",
}
# What may sit below main in a glibc program (2.34+), root-most last.
GLIBC_START = {"__libc_start_call_main", "__libc_start_main_impl", "__libc_start_main", "_start"}


# ---------------------------------------------------------------- names and stack shapes


def norm(name: str) -> str:
    """A frame name without Go's ABI suffix, glibc's internal prefix or a symbol version."""
    name = name.split("@")[0] if not name.startswith("[") else name
    if name.endswith(".abi0"):
        name = name[:-len(".abi0")]
    if name.startswith("__GI_"):
        name = name[len("__GI_"):]
    return name


def is_entry(frame: str) -> bool:
    return norm(frame) in ENTRY_POINTS


def is_marker(frame: str) -> bool:
    """A marker frame that may end a stack: it says the stack is not whole, and why."""
    return frame == TRUNCATED or frame.startswith("[unwind failed: ") or frame == "[process exited]"


def user_frames(s, kernel: set) -> list:
    """The frames below the kernel's (leaf first), names normalized."""
    i = 0
    while i < len(s.frames) and s.frames[i] in kernel:
        i += 1
    return [norm(f) for f in s.frames[i:]]


def reaches_entry(frames: Sequence[str]) -> bool:
    """The root-most frame is a known entry point. A stripped executable's _start has no
    name (`<file>+0x<address>`); directly under glibc's __libc_start_main, which only _start
    calls, it counts as the entry point it is."""
    if frames and is_entry(frames[-1]):
        return True
    return (len(frames) >= 2 and UNSYMBOLIZED.match(frames[-1]) is not None
            and norm(frames[-2]) in ("__libc_start_main", "__libc_start_main_impl"))


def ending(s, kernel: set) -> str:
    """'entry', 'marker', 'kernel' (a kernel-only stack) or 'unmarked'."""
    if s.frames and all(f in kernel for f in s.frames):
        return "kernel"
    if not s.frames:
        return "unmarked"
    if reaches_entry(s.frames):
        return "entry"
    if is_marker(s.frames[-1]):
        return "marker"
    return "unmarked"


def start_tail(tail: Sequence[str], allowed: Sequence[str]) -> bool:
    """tail (the frames below main, root-most last) is a nonempty ordered subsequence of
    allowed (the start code of the C library) that ends at an entry point."""
    if not tail or not is_entry(tail[-1]):
        return False
    it = iter(allowed)
    return all(any(f == a for a in it) for f in tail)


def glibc_rooted(tail: Sequence[str]) -> bool:
    return (0 < len(tail) <= 4 and is_entry(tail[-1]) and all(f in GLIBC_START for f in tail))


def chain_then_glibc(chain: Sequence[str], kernel: set) -> Callable:
    """Predicate: the user frames are exactly chain (leaf first) then glibc's start code."""
    n = len(chain)
    return lambda s: (user_frames(s, kernel)[:n] == list(chain)
                      and glibc_rooted(user_frames(s, kernel)[n:]))


def compress(frames: Sequence[str], head: int = 24, tail: int = 10) -> list:
    """frames with runs of one frame as `name x N`, and the middle of a long stack left out,
    so that an assertion message shows both ends of a deep stack."""
    out: list = []
    for f in frames:
        if out and out[-1][0] == f:
            out[-1][1] += 1
        else:
            out.append([f, 1])
    shown = [f if n == 1 else f"{f} x{n}" for f, n in out]
    if len(shown) > head + tail:
        shown = shown[:head] + [f"... {len(shown) - head - tail} more ..."] + shown[-tail:]
    return shown


def show(stacks: Sequence, n: int = 8) -> str:
    """format_stacks of stacks, with repeated frames compressed and both ends shown."""
    short = [dataclasses.replace(s, frames=compress(s.frames)) for s in stacks]
    return format_stacks(short, n=n, width=1000)


def assert_right(stacks: Sequence, relevant: Callable, right: Callable, what: str,
                 answer: str, min_samples: int = 200, min_frac: float = MIN_FRAC) -> None:
    """At least min_frac of the relevant samples (weighted) satisfy right()."""
    rel = [s for s in stacks if relevant(s)]
    n = total(rel)
    print(f"{what}: {n} relevant samples of {total(stacks)}\n{show(rel)}")
    assert n >= min_samples, (
        f"{what}: only {n} relevant samples (want >= {min_samples}); all samples:\n{show(stacks)}")
    frac = weighted_fraction(rel, right)
    wrong = [s for s in rel if not right(s)]
    assert frac >= min_frac, (
        f"{what}: {frac:.1%} of {n} relevant samples have the right stack (want >= {min_frac:.0%})\n"
        f"right answer (leaf first): {answer}\nthe wrong ones:\n{show(wrong)}")


def annotate_mappings(res) -> None:
    """Give each reader Stack of res a `maps` list: the mapping file name of each frame."""
    prof = res.profile
    st = prof.string_table
    maps = {m.id: st[m.filename] for m in prof.mapping}
    per_loc = {loc.id: [maps.get(loc.mapping_id, "")] * max(1, len(loc.line)) for loc in prof.location}
    for sample, s in zip(prof.sample, res.stacks):
        s.maps = [m for lid in sample.location_id for m in per_loc.get(lid, [""])]


# ---------------------------------------------------------------- tools and builds


GO_CANDIDATES = ("/usr/local/go/bin/go", "/usr/lib/go/bin/go")


def need(tool: str, package: str) -> str:
    """The tool's path; a failure (not a skip) when missing: .ci/run installs it."""
    path = shutil.which(tool) or (next((p for p in GO_CANDIDATES if os.access(p, os.X_OK)), None)
                                  if tool == "go" else None)
    if path is None:
        pytest.fail(f"{tool} is not installed (.ci/run and `make deps` install it: "
                    f"apt-get install {package})", pytrace=False)
    return path


def go_env() -> dict:
    """The machine's Go, no download (the cases have no dependencies), the user's build cache."""
    return dict(os.environ, GOTOOLCHAIN="local", GOFLAGS="-mod=mod", GOPROXY="off", CGO_ENABLED="1")


def sh(cmd: Sequence[str], cwd: Path, env: Optional[dict] = None) -> None:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{res.stdout}\n{res.stderr}",
                    pytrace=False)


DF_FLAGS = ["-O2", "-g", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
            "-fomit-frame-pointer", "-fno-optimize-sibling-calls"]


def build_case(case: str, out: Path) -> None:
    """The README.txt's build line of the case, run in out (a copy of its sources)."""
    gcc = lambda: need("gcc", "gcc")  # noqa: E731
    if case == "openssl-cfa-expr":
        sh([gcc(), "-O2", "-g", "-fno-omit-frame-pointer", "-o", "cfa", "main.c", "spin.S"], out)
    elif case == "signal-frames":
        sh([gcc(), "-O2", "-g", "-fno-optimize-sibling-calls", "-fno-inline", "-o", "sig", "sig.c"], out)
    elif case == "vfork-register-ra":
        sh([gcc(), "-O2", "-g", "-fno-optimize-sibling-calls", "-o", "vf", "vf.c"], out)
    elif case == "exec-same-pid":
        for stage in ("1", "2"):
            sh([gcc(), "-O2", "-g", "-no-pie", "-fno-pie", f"-DSTAGE={stage}", "-o", f"stage{stage}",
                "stage.c"], out)
    elif case == "deep-recursion":
        sh([gcc(), "-O2", "-g", "-o", "rec", "rec.c"], out)
    elif case == "musl-static":
        sh([need("musl-gcc", "musl-tools"), "-static", "-O2", "-g", "-fno-optimize-sibling-calls",
            "-o", "m", "m.c"], out)
    elif case == "debug-frame-only":
        sh([gcc(), *DF_FLAGS, "-o", "df-inline", "df.c"], out)
        sh([gcc(), *DF_FLAGS, "-o", "df-split", "df.c"], out)
        objcopy, strip = need("objcopy", "binutils"), need("strip", "binutils")
        sh([objcopy, "--only-keep-debug", "df-split", "df-split.debug"], out)
        sh([strip, "--strip-all", "df-split"], out)
        sh([objcopy, "--add-gnu-debuglink=df-split.debug", "df-split"], out)
    elif case == "cgo-stack-switch":
        need("gcc", "gcc")
        sh([need("go", "golang-go"), "build", "-o", "cgocb", "."], out, env=go_env())
    elif case == "go-pprof-stripped":
        sh([need("go", "golang-go"), "build", "-ldflags=-s -w", "-o", "gopprof", "."], out,
           env=go_env())
    elif case == "python-perf-trampoline":
        pass  # app.py runs as it is
    else:
        raise AssertionError(f"no build line for case {case}")


class Builds:
    """The cases, each built once per session (on first use) in a tmp dir."""

    def __init__(self, root: Path):
        self.root = root
        self.done: dict[str, Path] = {}

    def __call__(self, case: str) -> Path:
        if case not in self.done:
            out = self.root / case
            shutil.copytree(CASES / case, out)
            build_case(case, out)
            self.done[case] = out
        return self.done[case]


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Builds:
    return Builds(tmp_path_factory.mktemp("cases"))


@contextmanager
def running(argv: Sequence, cwd: Path, settle: float = 0.3, **kw) -> Iterator[subprocess.Popen]:
    """A case process (the cases print nothing): started, checked alive, killed at the end."""
    proc = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"{argv} exited {proc.returncode} at once: {err}", pytrace=False)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def record_pid(tmp_path: Path, pid: int, *extra, name: str = "out.pprof", duration: str = DURATION):
    res = record(tmp_path / name, "--pid", pid, "--duration", duration, "--frequency", FREQ,
                 *extra).check()
    return res, kernel_function_names(res.profile), for_pid(res.stacks, pid)


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


DEPTH = 1000


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


PY_INTERPRETERS = {f"3.{m}": f"~/.pyenv/versions/3.{m}.*/bin/python3.{m}" for m in (12, 13, 14)}
PY_REQUIRED = {"3.12", "3.13"}   # as tests/test_python.py: the machine's pyenv builds


def py_installed(label: str) -> list:
    return sorted(glob.glob(os.path.expanduser(PY_INTERPRETERS[label])))


PY_TESTED = [v for v in PY_INTERPRETERS if v in PY_REQUIRED or py_installed(v)]
PY_MODES = [(v, x) for v in PY_TESTED for x in ("perf", "perf_jit")
            if x == "perf" or int(v.split(".")[1]) >= 13]
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


# ---------------------------------------------------------------- real binaries, side by side with perf


PERF_ROOTS = {"_start", "__libc_start_call_main", "__libc_start_main", "__libc_start_main_impl"}


def perf_stacks(data: Path) -> list:
    """`perf script` of a `perf record --call-graph dwarf` file: function names, leaf first."""
    perf = need("perf", "linux-perf")
    out = subprocess.run([perf, "script", "-i", str(data), "-F", "comm,pid,tid,ip,sym,dso"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    stacks, cur = [], None
    for line in out.stdout.splitlines():
        if not line.strip():
            if cur is not None:
                stacks.append(cur)
            cur = None
        elif not line[0].isspace():
            cur = []
        elif cur is not None:
            parts = line.split()
            cur.append(re.sub(r"\+0x[0-9a-f]+$", "", parts[1]) if len(parts) > 1 else "[unknown]")
    if cur is not None:
        stacks.append(cur)
    return stacks


def side_by_side(tmp_path: Path, pid: int, duration: str = DURATION):
    """ddprofiler and `perf record --call-graph dwarf` on pid at the same time."""
    perf = need("perf", "linux-perf")
    data = tmp_path / "perf.data"
    pr = subprocess.Popen([perf, "record", "-q", "--call-graph", "dwarf", "-F", "499", "-p", str(pid),
                           "-o", str(data), "--", "sleep", str(float(duration) + 0.5)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        res, kernel, mine = record_pid(tmp_path, pid, duration=duration)
    finally:
        _, err = pr.communicate(timeout=120)
    assert pr.returncode == 0 and data.exists(), f"perf record failed: {err[-3000:]}"
    return res, kernel, mine, perf_stacks(data)


def compare_with_perf(what: str, kernel: set, mine: list, theirs: list) -> str:
    n = total(mine)
    ours_frac = weighted_fraction(mine, lambda s: reaches_entry(s.frames))
    perf_frac = sum(1 for st in theirs if any(f in PERF_ROOTS for f in st)) / max(1, len(theirs))
    ends = Counter()
    for s in mine:
        ends[ending(s, kernel)] += s.count
    summary = (f"{what}: ddprofiler {ours_frac:.1%} of {n} samples reach an entry point "
               f"(endings {dict(ends)}); perf --call-graph dwarf {perf_frac:.1%} of {len(theirs)} "
               f"reach {sorted(PERF_ROOTS)}")
    print(summary)
    assert n >= 300 and len(theirs) >= 100, f"too few samples\n{summary}\n{show(mine)}"
    not_complete = [s for s in mine if not reaches_entry(s.frames)]
    assert ours_frac >= perf_frac - 0.02, (
        f"{summary}: ddprofiler must be at least perf's fraction minus 2 points\n"
        f"our stacks that do not reach an entry point:\n{show(not_complete)}")
    return summary


@pytest.mark.parametrize("algo", ["sha512", "rsa2048"])
def test_openssl_speed_vs_perf(tmp_path, algo):
    """OpenSSL's perlasm (CFA in rax, CFA expressions): at least as complete as perf."""
    openssl = need("openssl", "openssl")
    with running([openssl, "speed", "-seconds", "6", algo], tmp_path) as p:
        res, kernel, mine, theirs = side_by_side(tmp_path, p.pid)
    compare_with_perf(f"openssl speed {algo}", kernel, mine, theirs)


def assert_entry_or_marked(what: str, kernel: set, mine: list) -> None:
    done = weighted_fraction(mine, lambda s: ending(s, kernel) != "unmarked")
    unmarked = [s for s in mine if ending(s, kernel) == "unmarked"]
    assert done >= 0.95 and not unmarked, (
        f"{what}: {done:.1%} of samples end at an entry point or a marker (want >= 95%), "
        f"{total(unmarked)} end unmarked elsewhere (want none):\n{show(unmarked)}")


def test_debian_python3_vs_perf(debian_python, tmp_path):
    script = "print('ready', flush=True)\nwhile True:\n    sum(i * i for i in range(1000))\n"
    with Workload([debian_python, "-c", script]) as w:
        res, kernel, mine, theirs = side_by_side(tmp_path, w.pid)
    assert_entry_or_marked("Debian's python3", kernel, mine)
    compare_with_perf("Debian's python3", kernel, mine, theirs)


def test_node_vs_perf(tmp_path):
    node = need("node", "nodejs")
    script = ("console.log('ready');"
              "function leaf(n){let x=0;for(let i=0;i<n;i++){x+=Math.sqrt(i)*i%7;}return x;}"
              "function mid(n){return leaf(n)+1;}"
              "let s=0;for(;;){s+=mid(1e6);}")
    with Workload([node, "-e", script]) as w:
        res, kernel, mine, theirs = side_by_side(tmp_path, w.pid)
    assert_entry_or_marked("node", kernel, mine)
    compare_with_perf("node", kernel, mine, theirs)


# ---------------------------------------------------------------- kind 9: no stack ends unmarked


def test_no_stack_ends_unmarked(built, workloads, tmp_path):
    """Every case and every workload of tests/workloads at once, recorded system-wide: the
    root-most frame of every one of their samples is an entry point or a marker frame, or the
    stack is kernel-only."""
    procs: list = []
    names: set = set()

    def start(argv, cwd, name):
        procs.append(subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        names.add(name)

    try:
        d = built("openssl-cfa-expr")
        start(["./cfa", RUN], d, "cfa")
        d = built("signal-frames")
        start(["./sig", "normal", RUN], d, "sig")
        start(["./sig", "alt", RUN], d, "sig")
        start(["./vf", RUN], built("vfork-register-ra"), "vf")
        start(["./stage1", "3", RUN], built("exec-same-pid"), "stage1")
        names.add("stage2")
        start(["./rec", RUN, str(DEPTH)], built("deep-recursion"), "rec")
        start(["./m", RUN], built("musl-static"), "m")
        d = built("debug-frame-only")
        start(["./df-inline", RUN], d, "df-inline")
        start(["./df-split", RUN], d, "df-split")
        d = built("cgo-stack-switch")
        start(["./cgocb", RUN, "c"], d, "cgocb")
        start(["./cgocb", RUN], d, "cgocb")
        d = built("go-pprof-stripped")
        start(["./gopprof", tmp_path / "go.pprof", RUN], d, "gopprof")
        d = built("python-perf-trampoline")
        for version, xopt in PY_MODES:
            for py in py_installed(version)[-1:]:
                start([py, "-X", xopt, "app.py", RUN], d, f"python{version}")
        for name, argv in (("chain", [RUN]), ("shlib", [RUN]), ("threads", [RUN]),
                           ("recurse", [RUN, "200"]), ("syscalls", [RUN])):
            start([workloads[name], *argv], workloads[name].parent, name)
        time.sleep(1.0)
        dead = [p.args for p in procs if p.poll() is not None]
        assert not dead, f"workloads exited early: {dead}"
        res = record(tmp_path / "all.pprof", "--duration", "6", "--frequency", "499").check()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    kernel = kernel_function_names(res.profile)
    pids = {p.pid for p in procs}
    mine = lambda s: s.pid in pids or s.process_name in names  # noqa: E731
    ours = [s for s in res.stacks if mine(s)]
    others = [s for s in res.stacks if not mine(s) and s.pid > 0]
    unmarked = [s for s in ours if ending(s, kernel) == "unmarked"]
    by_process = Counter()
    for s in unmarked:
        by_process[s.process_name] += s.count
    other_unmarked = [s for s in others if ending(s, kernel) == "unmarked"]
    print(f"other processes: {total(other_unmarked)} of {total(others)} samples end unmarked\n"
          f"{show(other_unmarked, n=10)}")
    seen = Counter()
    for s in ours:
        seen[s.process_name] += s.count
    assert total(ours) >= 2000, f"few samples of the workloads: {dict(seen)}"
    assert not unmarked, (
        f"{total(unmarked)} of {total(ours)} samples of the workloads end unmarked outside an "
        f"entry point (by process: {dict(by_process)}; samples per process: {dict(seen)}):\n"
        f"{show(unmarked, n=25)}")
