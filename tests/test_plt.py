"""A sample in a PLT stub is named `<function>@plt`, as perf names it, never after the
symbol that precedes `.plt` (`_init` before this was fixed): a program calls a one-line
function of its own shared library a billion times, so that a good share of its samples
land in the stub."""
from __future__ import annotations

import subprocess
import sys

import pytest

from test_formats import parse_collapsed

pytestmark = pytest.mark.bpf

LIB = "int tiny_add(int x) { return x + 1; }\n"
MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
int tiny_add(int);
int main(int c, char **v) {
    int x = 0; long n = atol(v[1]);
    for (long i = 0; i < n; i++) x = tiny_add(x);
    printf("%d\n", x);
    return 0;
}
"""


def test_plt_stub_is_named_for_its_function(tmp_path):
    (tmp_path / "lib.c").write_text(LIB)
    (tmp_path / "main.c").write_text(MAIN)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", tmp_path / "libtiny.so", tmp_path / "lib.c"], check=True)
    subprocess.run(["gcc", "-O2", "-o", tmp_path / "calls", tmp_path / "main.c", f"-L{tmp_path}", "-ltiny",
                    f"-Wl,-rpath,{tmp_path}", "-Wl,-z,lazy"], check=True)
    out = tmp_path / "p.folded"
    done = subprocess.run([sys.executable, "-m", "ddprofiler", "record", "-r", "999", "-o", str(out), "--",
                           str(tmp_path / "calls"), "400000000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    stacks = parse_collapsed(out.read_text())
    under_main = {k: n for k, n in stacks.items() if "main" in k}
    leaves = {}
    for k, n in under_main.items():
        leaf = k[k.index("main") + 1] if k.index("main") + 1 < len(k) else "main"
        leaves[leaf] = leaves.get(leaf, 0) + n
    total = sum(leaves.values())
    assert leaves.get("tiny_add@plt", 0) > 0.05 * total, leaves
    assert "_init" not in leaves, leaves
