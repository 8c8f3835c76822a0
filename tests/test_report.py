"""`ddprofiler report`: the hottest functions of a pprof file, and what changed between two.

The profiles are made by hand with known counts and written as pprof (gzip, and zstd as
Datadog uploads them), then read back by the CLI as a user would run it: exact rows of the
tables, the differential flame graph's tooltips, a conversion to another format, and a
file that is no profile.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from ddprofiler import Frame, Line, Mapping, Profile, Sample
from ddprofiler.pprof import encode_profile, write_pprof
from test_formats import parse_collapsed

START_NS = 1_700_000_000_000_000_000


def profile(counts: dict[str, int]) -> Profile:
    """main -> work -> <leaf> for each leaf of ``counts``, each in its own source line."""
    app = Mapping(0x400000, 0x500000, 0, "/usr/bin/app", "ab" * 20, False)
    frames = [Frame(0x401000, app, "native", (Line("main", "", "/src/app.c", 3),)),
              Frame(0x401100, app, "native", (Line("work", "", "/src/app.c", 10),))]
    stacks, samples = [], []
    for leaf, n in counts.items():
        frames.append(Frame(0x402000 + len(frames), app, "native",
                            (Line(leaf, "", "/src/app.c", 20 + len(frames)),)))
        stacks.append((len(frames) - 1, 1, 0))
        samples.append(Sample(7, 7, 0, len(stacks) - 1, n, "app", "app"))
    return Profile(START_NS, START_NS + 10**9, 100, [app], frames, stacks, samples)


def report(*args):
    return subprocess.run([sys.executable, "-m", "ddprofiler", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_top_by_self_and_total(tmp_path):
    path = tmp_path / "p.pprof"
    write_pprof(profile({"parse": 6, "render": 3, "flush": 1}), path)
    done = report(path, "-n", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "5 functions, 10 samples (0.10 s of CPU at 100 Hz); top 2 by self:",
        "  self%     self  total%    total  function",
        " 60.00%        6  60.00%        6  parse",
        " 30.00%        3  30.00%        3  render",
    ]
    rows = report(path, "--by", "total", "-n", "3").stdout.splitlines()[2:]
    assert [r.split()[-1] for r in rows] == ["main", "work", "parse"]
    assert rows[0].split()[:4] == ["0.00%", "0", "100.00%", "10"]


def test_lines_count_each_source_line(tmp_path):
    path = tmp_path / "p.pprof"
    write_pprof(profile({"parse": 6, "render": 3}), path)
    rows = report(path, "--lines", "-n", "1").stdout.splitlines()
    assert rows[-1].endswith("  parse (app.c:22)"), rows
    assert rows[0].startswith("4 function lines, 9 samples") and rows[1].endswith("  function (line)"), rows


def test_zstd_profile_as_datadog_uploads_it(tmp_path):
    import zstandard
    path = tmp_path / "cpu.pprof"
    path.write_bytes(zstandard.ZstdCompressor().compress(encode_profile(profile({"parse": 4})).pprof))
    done = report(path)
    assert done.returncode == 0, done.stderr
    assert "100.00%        4 100.00%        4  parse" in done.stdout.splitlines()


def test_diff_lists_what_grew_then_what_shrank_and_draws_it(tmp_path):
    base, new = tmp_path / "base.pprof", tmp_path / "new.pprof"
    write_pprof(profile({"parse": 5, "render": 5}), base)
    write_pprof(profile({"parse": 18, "render": 2}), new)  # twice the samples: shares count
    done = report(new, "--diff", base, "-o", tmp_path / "diff.svg")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "self share, base 10 samples -> new 20 samples:",
        "  base%    new%   change  function",
        " 50.00%  90.00%  +40.00%  parse",
        " 50.00%  10.00%  -40.00%  render",
    ]
    svg = (tmp_path / "diff.svg").read_text()
    assert "<title>parse (18 samples, 90.00%; +40.00%)</title>" in svg, svg[-3000:]
    assert "<title>render (2 samples, 10.00%; -40.00%)</title>" in svg


def test_output_converts_to_another_format(tmp_path):
    path = tmp_path / "p.pprof"
    write_pprof(profile({"parse": 6, "render": 3}), path)
    done = report(path, "-o", tmp_path / "p.folded")
    assert done.returncode == 0, done.stderr
    assert parse_collapsed((tmp_path / "p.folded").read_text()) == {
        ("app", "main", "work", "parse"): 6, ("app", "main", "work", "render"): 3}


@pytest.mark.parametrize("content", [b"", b"not a profile at all", b"\x1f\x8b\x08broken gzip"])
def test_a_file_that_is_no_profile_is_one_line_and_exit_1(tmp_path, content):
    path = tmp_path / "junk.pprof"
    path.write_bytes(content)
    done = report(path)
    if content == b"":  # an empty pprof is a valid empty profile
        assert done.returncode == 0 and "0 samples" in done.stdout
        return
    assert done.returncode == 1, done.stderr
    assert "is not a pprof profile" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_diff_refuses_an_output_that_is_not_svg(tmp_path):
    base, new = tmp_path / "base.pprof", tmp_path / "new.pprof"
    write_pprof(profile({"parse": 5}), base)
    write_pprof(profile({"parse": 6}), new)
    for out in ("d.pprof", "d.txt"):
        done = report(new, "--diff", base, "-o", tmp_path / out)
        assert done.returncode == 2 and "--diff draws an SVG flame graph" in done.stderr, done.stderr
        assert not (tmp_path / out).exists()
    done = report(new, "--diff", base, "-o", tmp_path / "d.svg")
    assert done.returncode == 0 and f"wrote {tmp_path / 'd.svg'} (differential flame graph)" in done.stderr
