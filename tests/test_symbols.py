"""Host symbolization checked against binutils' `addr2line -i -f -C`, address by address:
a C program built here with -O2 -g and a forced inline (inlined function above its caller,
each with its own line), and real Debian binaries nobody here wrote (python3, libc, and liblzma: the code of xz,
whose executable exports nothing).

Addresses are virtual addresses of the file, as addr2line takes them
(`ddprofiler._native.symbolize_file`). Where addr2line names a function we must name the
same one (or an alias at the same address); where both give a line, the same line.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from helpers import skip_or_fail

WORKLOADS = Path(__file__).parent / "workloads"


@pytest.fixture(scope="module")
def native():
    try:
        from ddprofiler import _native
    except ImportError as e:
        skip_or_fail(f"the extension is not built: {e}")
    return _native


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        skip_or_fail(f"{name} (binutils) is not installed")
    return path


def addr2line(path: str, addrs: list[int]) -> list[list[tuple[str, int]]]:
    """Per address, the (function, line) frames addr2line reports, innermost first."""
    out = subprocess.run([tool("addr2line"), "-a", "-i", "-f", "-C", "-e", path, *map(hex, addrs)],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    groups: list[list[tuple[str, int]]] = []
    i = 0
    while i < len(out):
        if re.fullmatch(r"0x[0-9a-f]+", out[i]):
            groups.append([])
            i += 1
            continue
        func, where = out[i], out[i + 1]
        m = re.search(r":(\d+)", where)
        groups[-1].append((func, int(m.group(1)) if m else 0))
        i += 2
    assert len(groups) == len(addrs)
    return groups


def functions(path: str, dynamic: bool) -> list[tuple[int, int, str]]:
    """(start, size, name) of the defined functions of a file, from nm."""
    args = [tool("nm"), "-S", "--defined-only"] + (["-D"] if dynamic else []) + [path]
    rows = []
    for line in subprocess.run(args, capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW" and int(parts[1], 16) > 8:
            rows.append((int(parts[0], 16), int(parts[1], 16), parts[3].split("@")[0]))
    return rows


def ours(native, path, addrs):
    """Per address, our (function, line) frames, innermost first."""
    got = [[(function, line) for function, _, _, line in lines] for lines in native.symbolize_file(path, addrs)]
    assert len(got) == len(addrs)
    return got


def test_inline_chain_and_lines_match_addr2line(native, tmp_path):
    exe = tmp_path / "inline"
    subprocess.run(["gcc", "-O2", "-g", "-o", str(exe), str(WORKLOADS / "inline.c")], check=True)
    [(start, size, _)] = [f for f in functions(str(exe), dynamic=False) if f[2] == "caller"]
    addrs = list(range(start, start + size))
    got, want = ours(native, str(exe), addrs), addr2line(str(exe), addrs)
    inlined = 0
    for a, g, w in zip(addrs, got, want):
        assert g == w, f"{a:#x}: ours {g}, addr2line {w}"
        inlined += [f for f, _ in g] == ["inlined_fn", "caller"]
    assert inlined > 4, "no address inside the inlined code"
    # The lines are the source's: inlined_fn's loop body, caller's call site.
    src = (WORKLOADS / "inline.c").read_text().splitlines()
    frames = next(g for g in got if [f for f, _ in g] == ["inlined_fn", "caller"])
    assert "x * 6364136223846793005UL" in src[frames[0][1] - 1]
    assert "inlined_fn(x)" in src[frames[1][1] - 1]


@pytest.mark.parametrize("path", ["/usr/bin/python3", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/liblzma.so.5"])
def test_matches_addr2line_on_debian_binaries(native, path):
    if not os.path.exists(path):
        skip_or_fail(f"{path} is not installed")
    path = os.path.realpath(path)
    funcs = functions(path, dynamic=True)
    assert funcs, f"no dynamic function symbols in {path}"
    aliases = defaultdict(set)
    for start, _, name in funcs + functions(path, dynamic=False):
        aliases[start].add(name)
    step = max(1, len(funcs) // 80)
    picked = funcs[::step][:80]
    addrs = [start + size // 2 for start, size, _ in picked]
    got, want = ours(native, path, addrs), addr2line(path, addrs)
    named = 0
    for (start, _, _), a, g, w in zip(picked, addrs, got, want):
        if w[0][0] == "??":
            continue
        named += 1
        where = f"{path} {a:#x}: ours {g}, addr2line {w}"
        assert len(g) == len(w), where
        # The outer function: addr2line picks one of the names at that address; so may we.
        assert g[-1][0] == w[-1][0] or {g[-1][0], w[-1][0]} <= aliases[start] | {w[-1][0]}, where
        assert [f for f, _ in g[:-1]] == [f for f, _ in w[:-1]], where  # inlined ones
        assert all(gl == wl for (_, gl), (_, wl) in zip(g, w) if wl), where  # lines, where known
    assert named >= len(addrs) // 2, f"addr2line named only {named} of {len(addrs)}"


def _stripped_chain(tmp_path, name: str, compress: str = "zlib") -> tuple[Path, Path]:
    """The chain workload built with -g, then split: (stripped binary, its debug file, debug
    sections compressed with zlib or zstd). Debian's binutils objcopy cannot write zstd (it
    quietly leaves the sections as they are); LLVM's can."""
    src = WORKLOADS / "chain.c"
    exe, dbg = tmp_path / name, tmp_path / f"{name}.debug"
    subprocess.run(["gcc", "-O2", "-g", "-fomit-frame-pointer", "-Wl,--build-id", "-I", str(WORKLOADS),
                    "-o", str(exe), str(src)], check=True)
    objcopy = "objcopy" if compress == "zlib" else (shutil.which("llvm-objcopy-19") or "llvm-objcopy")
    subprocess.run([objcopy, "--only-keep-debug", f"--compress-debug-sections={compress}", str(exe), str(dbg)],
                   check=True)
    sections = subprocess.run(["readelf", "-tW", str(dbg)], capture_output=True, text=True).stdout
    assert re.search(rf"\.debug_info\s*\n.*\n.*COMPRESSED\s*\n\s*{compress.upper()},", sections), sections
    subprocess.run(["strip", "--strip-all", str(exe)], check=True)
    assert "leaf" not in subprocess.run(["nm", "-a", str(exe)], capture_output=True, text=True).stdout
    return exe, dbg


def _profile_lines(tmp_path, exe: Path) -> dict[str, tuple[str, int]]:
    """Record the workload; {function: (file, line)} of its leaf-most samples' frames."""
    from helpers import Workload, for_pid, record, total

    with Workload([exe, "40"]) as w:
        res = record(tmp_path / "p.pprof", "--pid", w.pid, "--duration", "2", "--frequency", "999").check()
    mine = for_pid(res.stacks, w.pid)
    assert total(mine) > 200
    p = res.profile
    funcs = {f.id: (p.string_table[f.name], p.string_table[f.filename]) for f in p.function}
    out = {}
    for loc in p.location:
        for ln in loc.line:
            name, file = funcs[ln.function_id]
            out.setdefault(name, (file, ln.line))
    return out


@pytest.mark.bpf
@pytest.mark.parametrize("compress", ["zlib", "zstd"])
def test_debug_file_found_through_gnu_debuglink(tmp_path, compress):
    exe, dbg = _stripped_chain(tmp_path, "chain_dl", compress)
    subprocess.run(["objcopy", f"--add-gnu-debuglink={dbg}", str(exe)], check=True, cwd=tmp_path)
    lines = _profile_lines(tmp_path, exe)
    for fn in ("leaf", "middle", "outer", "main"):
        assert fn in lines, f"{fn} not symbolized: {sorted(lines)[:20]}"
    file, line = lines["leaf"]
    assert file.endswith("chain.h") and line > 0, lines["leaf"]


@pytest.mark.bpf
def test_debug_file_found_by_build_id(tmp_path):
    exe, dbg = _stripped_chain(tmp_path, "chain_bid")
    note = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True).stdout
    bid = re.search(r"Build ID: ([0-9a-f]+)", note).group(1)
    target = Path("/usr/lib/debug/.build-id") / bid[:2] / f"{bid[2:]}.debug"
    made_dir = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(dbg, target)
    try:
        lines = _profile_lines(tmp_path, exe)
    finally:
        target.unlink()
        if made_dir:
            target.parent.rmdir()
    for fn in ("leaf", "middle", "outer", "main"):
        assert fn in lines, f"{fn} not symbolized: {sorted(lines)[:20]}"
    assert lines["middle"][0].endswith("chain.h") and lines["middle"][1] > 0


def test_cpp_templates_demangled_as_addr2line_does(native, tmp_path):
    if not shutil.which("g++"):
        skip_or_fail("g++ is needed for the C++ test program")
    exe = tmp_path / "templates"
    subprocess.run(["g++", "-O2", "-g", "-o", str(exe), str(WORKLOADS / "templates.cpp")], check=True)
    picked = [f for f in functions(str(exe), dynamic=False) if "Basket" in f[2]]
    assert len(picked) == 2, picked
    addrs = [start + size // 2 for start, size, _ in picked]
    got, want = ours(native, str(exe), addrs), addr2line(str(exe), addrs)
    assert got == want
    names = {frames[-1][0] for frames in got}
    assert names == {"shop::Basket<double, 3>::total(std::vector<double, std::allocator<double> > const&) const",
                     "shop::Basket<long, 5>::total(std::vector<long, std::allocator<long> > const&) const"}, names


@pytest.mark.parametrize("mangling,prefix", [("legacy", "_ZN"), ("v0", "_R")])
def test_rust_names_demangled_in_both_manglings(native, tmp_path, mangling, prefix):
    """Rust's default (legacy, stable rustc asks -Z to name it) and v0 symbol names."""
    rustc = shutil.which("rustc") or os.path.expanduser("~/.cargo/bin/rustc")
    if not os.access(rustc, os.X_OK):
        skip_or_fail("rustc is needed to build the Rust workload")
    exe = tmp_path / f"chain_{mangling}"
    flags = ["-Csymbol-mangling-version=v0"] if mangling == "v0" else []
    subprocess.run([rustc, "-O", "--crate-name", "chain_rs", *flags, "-o", str(exe), str(WORKLOADS / "chain.rs")],
                   check=True)
    raw = {name: (start, size) for start, size, name in functions(str(exe), dynamic=False)}
    mangled = [name for name in raw if "rs_leaf" in name or "rs_middle" in name]
    assert len(mangled) == 2 and all(n.startswith(prefix) for n in mangled), mangled
    addrs = [raw[n][0] + raw[n][1] // 2 for n in sorted(mangled)]
    names = sorted(frames[-1][0] for frames in ours(native, str(exe), addrs))
    assert names == ["chain_rs::rs_leaf", "chain_rs::rs_middle"], names
