"""Output formats (``ddprofiler.formats``), each read back by an independent reader.

- collapsed stacks: parsed as flamegraph.pl reads them (``frames COUNT``, ``;`` between
  frames, root first), exact lines for a hand-made profile;
- speedscope: validated against speedscope's own JSON schema
  (tests/data/speedscope-file-format-schema.json, from jlfwong/speedscope, MIT), stacks
  and weights checked;
- SVG: tooltips, colours by kind and the search control in the document; then opened in
  headless Chromium (Debian's ``chromium``): a screenshot that is not blank, and the DOM
  after its scripts ran still holding the search control and a known function's box;
- pprof: ``go tool pprof`` reads it (test_pprof_builder.py);
- the CLI: the suffix picks the format, ``--format`` overrides, ``-o -`` writes to standard
  output, an unknown suffix is a usage error naming the formats; and, with BPF, a real
  workload's chain in each format.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddprofiler import Frame, Line, Mapping, Profile, ProcessInfo, Sample, formats
from helpers import Workload, skip_or_fail

DATA = Path(__file__).parent / "data"
START_NS = 1_700_000_000_000_000_000
HZ = 100
PERIOD_NS = 10_000_000


def line(function, file="", number=0):
    return Line(function, "", file, number)


def make_profile() -> Profile:
    """One Python process (python frames on the interpreter), one native process with an
    inlined function, a kernel frame and a JIT frame, a marker."""
    app = Mapping(0x400000, 0x500000, 0, "/usr/bin/app", "ab" * 20, False)
    py = Mapping(0x10000, 0x20000, 0, "/usr/bin/python3.11", "cd" * 20, False)
    kernel = Mapping(0xFFFFFFFF81000000, (1 << 64) - 1, 0, "[kernel.kallsyms]", "", True)
    jit = Mapping(0x7F0000000000, 0x7F0000100000, 0, "[anon]", "", False)
    frames = [
        Frame(0x401000, app, "native", (line("main", "app.c", 10),)),                   # 0
        Frame(0x401100, app, "native", (line("inner", "app.c", 30), line("outer", "app.c", 20))),
        Frame(0xFFFFFFFF81000100, kernel, "kernel", (line("do_syscall_64"),)),           # 2
        Frame(0x7F0000000100, jit, "jit", (line("LazyCompile:work"),)),                  # 3
        Frame(0x11000, py, "native", (line("_PyEval_EvalFrameDefault"),)),               # 4
        Frame(0, None, "python", (line("handler", "/srv/app.py", 7),)),                  # 5
        Frame(0, None, "python", (line("<module>", "/srv/app.py", 1),)),                 # 6
        Frame(0, None, "marker", (line("[truncated]"),)),                                # 7
    ]
    stacks = [
        (1, 0),        # app: main -> outer -> inner (inlined)
        (2, 1, 0),     # app: ... -> do_syscall_64
        (3, 0),        # app: main -> JIT
        (5, 6),        # python: <module> -> handler
        (7, 5, 6),     # python: a stack cut at the leaf end? markers end a stack: here on top
    ]
    samples = [
        Sample(10, 10, 0, 0, 3, "app", "app"),
        Sample(10, 11, 1, 1, 2, "worker", "app"),
        Sample(10, 10, 0, 2, 1, "app", "app"),
        Sample(20, 20, 1, 3, 4, "python3", "python3"),
        Sample(20, 20, 0, 4, 1, "python3", "python3"),
        Sample(10, 10, 0, 0, 0, "app", "app"),  # no count: left out everywhere
    ]
    processes = {10: ProcessInfo(10, "app", "/usr/bin/app", {}, ""),
                 20: ProcessInfo(20, "python3", "/usr/bin/python3.11", {}, "")}
    return Profile(START_NS, START_NS + 2 * 10**9, HZ, [app, py, kernel, jit], frames, stacks,
                   samples, processes)


def parse_collapsed(text: str) -> dict[tuple[str, ...], int]:
    """As flamegraph.pl reads collapsed stacks: the count after the last space."""
    out: dict[tuple[str, ...], int] = {}
    for row in text.splitlines():
        m = re.fullmatch(r"(.*) (\d+)", row)
        assert m, f"not a collapsed line: {row!r}"
        key = tuple(m.group(1).split(";"))
        out[key] = out.get(key, 0) + int(m.group(2))
    return out


# ----------------------------------------------------------------- format names


@pytest.mark.parametrize("path,fmt", [
    ("p.pprof", "pprof"), ("p.pb.gz", "pprof"), ("flame.SVG", "svg"),
    ("p.speedscope.json", "speedscope"), ("p.json", "speedscope"), ("p.txt", "collapsed"),
    ("p.folded", "collapsed"), ("dir.d/p.collapsed", "collapsed"),
])
def test_suffix_names_the_format(path, fmt):
    assert formats.format_of(path) == fmt
    assert formats.format_of(path, "svg") == "svg"  # a given format wins


def test_unknown_suffix_and_stdout_without_a_format_are_errors_naming_the_formats():
    for path in ("profile.html", "profile", "-"):
        with pytest.raises(ValueError, match=r"pprof \(\.pprof.*svg \(\.svg\).*speedscope.*collapsed"):
            formats.format_of(path)
    with pytest.raises(ValueError, match="unknown format 'html'"):
        formats.format_of("p.svg", "html")


# ----------------------------------------------------------------- collapsed


def test_collapsed_lines_go_from_the_process_to_the_leaf():
    got = parse_collapsed("".join(f"{x}\n" for x in formats.collapsed(make_profile())))
    assert got == {
        ("app", "main", "outer", "inner"): 3,
        ("app", "main", "outer", "inner", "do_syscall_64"): 2,
        ("app", "main", "LazyCompile:work"): 1,
        ("python3", "<module>", "handler"): 4,
        ("python3", "<module>", "handler", "[truncated]"): 1,
    }


def test_collapsed_names_never_break_the_format():
    p = make_profile()
    p.frames[0] = p.frames[0]._replace(lines=(line("operator;weird\nname"),))
    rows = formats.collapsed(p)
    assert any(r.startswith("app;operator:weird name;outer;inner ") for r in rows), rows
    assert all(len(r.splitlines()) == 1 for r in rows)


# ----------------------------------------------------------------- speedscope


def test_speedscope_matches_its_schema_and_the_stacks():
    import jsonschema  # the test extra
    doc = json.loads(formats.render(make_profile(), "speedscope"))
    jsonschema.validate(doc, json.loads((DATA / "speedscope-file-format-schema.json").read_text()))
    frames = doc["shared"]["frames"]
    by_name = {p["name"]: p for p in doc["profiles"]}
    assert list(by_name) == ["app (10)", "python3 (20)"]  # hottest first: 6 samples, then 5
    app = by_name["app (10)"]
    stacks = [[frames[i]["name"] for i in s] for s in app["samples"]]
    assert stacks == [["main", "outer", "inner"], ["main", "outer", "inner", "do_syscall_64"],
                      ["main", "LazyCompile:work"]]
    assert app["weights"] == [3 * PERIOD_NS, 2 * PERIOD_NS, PERIOD_NS]
    assert (app["unit"], app["startValue"], app["endValue"]) == ("nanoseconds", 0, 6 * PERIOD_NS)
    handler = next(f for f in frames if f["name"] == "handler")
    assert handler == {"name": "handler", "file": "/srv/app.py", "line": 7}


# ----------------------------------------------------------------- SVG


RGB = {"python": "rgb(106,155,224)", "marker": "rgb(176,176,176)"}


def test_svg_has_tooltips_search_and_colours_by_kind():
    svg = formats.render(make_profile(), "svg").decode()
    assert svg.startswith("<?xml") and svg.rstrip().endswith("</svg>")
    assert 'id="search"' in svg
    # Tooltips: samples and share; annotations (kernel, JIT, inlined) are not drawn.
    assert "<title>inner (5 samples, 45.45%)</title>" in svg
    assert "<title>do_syscall_64 (2 samples, 18.18%)</title>" in svg
    assert "<title>LazyCompile:work (1 samples, 9.09%)</title>" in svg
    assert "_[k]" not in svg and "_[j]" not in svg and "_[i]" not in svg

    def fill_of(name):
        m = re.search(r"<title>" + re.escape(name) + r" \([^<]*</title><rect [^>]*fill=\"(rgb\([^\"]+\))\"", svg)
        assert m, f"no box for {name}"
        return m.group(1)

    assert fill_of("handler") == fill_of("&lt;module&gt;") == RGB["python"]
    assert fill_of("[truncated]") == RGB["marker"]
    kernel, jit, inlined, native = (fill_of(n) for n in ("do_syscall_64", "LazyCompile:work", "inner", "main"))
    assert len({kernel, jit, inlined, native, RGB["python"]}) == 5, "each kind its own colour"
    r, g, b = map(int, re.findall(r"\d+", native))
    assert r > g and r > b, f"native code is red-ish, as perf users know it: {native}"
    r, g, b = map(int, re.findall(r"\d+", inlined))
    assert g > r and b > r, f"inner, inlined into outer, is aqua: {inlined}"
    r, g, b = map(int, re.findall(r"\d+", fill_of("outer")))
    assert r > g and r > b, "outer is the function the code is in: native"


def test_empty_profile_draws_an_empty_graph():
    empty = Profile(START_NS, START_NS + 10**9, HZ)
    assert "</svg>" in formats.render(empty, "svg").decode()
    assert formats.render(empty, "collapsed") == b""


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        skip_or_fail("chromium is not installed (apt-get install chromium; CI installs it)")
    assert path is not None
    return path


def test_svg_in_a_real_browser(tmp_path):
    browser = chromium()
    svg_path = tmp_path / "flame.svg"
    make_profile().write(svg_path)
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1200,600"]
    shot = tmp_path / "flame.png"
    done = subprocess.run([*base, f"--screenshot={shot}", svg_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, "a drawn page, not a blank one"
    dom = subprocess.run([*base, "--dump-dom", svg_path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The DOM after the SVG's own script ran (init: the search control, details, frames).
    assert 'id="search"' in dom.stdout and "Search" in dom.stdout
    assert re.search(r"<title>handler \(5 samples, 45\.45%\)</title>", dom.stdout)
    assert 'id="frames"' in dom.stdout


# ----------------------------------------------------------------- the CLI (BPF)


@pytest.mark.bpf
def test_record_writes_each_format(workloads, tmp_path):
    chain = ["main", "outer", "middle", "leaf"]
    with Workload([workloads["chain"], 40]) as w:
        outs = {}
        for name in ("flame.svg", "stacks.folded", "p.speedscope.json"):
            done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "--pid", str(w.pid),
                                   "--duration", "1.5", "-r", "499", "-o", str(tmp_path / name)],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            outs[name] = (tmp_path / name).read_text()
        stdout = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "--pid", str(w.pid),
                                 "--duration", "1", "--frequency", "499", "-o", "-", "--format", "collapsed"],
                                capture_output=True, text=True, timeout=120)
    assert stdout.returncode == 0, stdout.stderr
    assert "wrote standard output (collapsed" in stdout.stderr
    for text in (outs["stacks.folded"], stdout.stdout):
        stacks = parse_collapsed(text)
        full = sum(n for k, n in stacks.items() if "".join(f";{f}" for f in chain) in ";".join(k))
        assert full / sum(stacks.values()) > 0.9, text[:2000]
    assert all(f"<title>{f} (" in outs["flame.svg"] for f in chain)
    doc = json.loads(outs["p.speedscope.json"])
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert set(chain) <= set(names) and doc["profiles"][0]["name"].endswith(f"({w.pid})")


def test_cli_refuses_an_unknown_suffix_before_recording(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "-o", str(tmp_path / "p.html")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "cannot tell the format" in done.stderr and "svg (.svg)" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3, done.stderr
    assert not os.listdir(tmp_path)
