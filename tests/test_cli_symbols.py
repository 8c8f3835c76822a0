"""`ddprofiler symbols inspect|upload` on the command line: output and errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

WORKLOADS = Path(__file__).parent / "workloads"


def cli(*args, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("DD_API_KEY", "DD_HOST_PROFILING_API_KEY")}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent.parent / "python"), full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "ddprofiler", "symbols", *args], capture_output=True,
                          text=True, env=full, timeout=60)


def test_inspect_prints_ids_arch_and_source(tmp_path):
    exe = tmp_path / "chain"
    subprocess.run(["gcc", "-O2", "-g", "-Wl,--build-id", "-I", str(WORKLOADS), "-o", str(exe),
                    str(WORKLOADS / "chain.c")], check=True)
    r = cli("inspect", str(exe))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    note = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True).stdout
    assert info["gnu_build_id"] == re.search(r"Build ID: ([0-9a-f]+)", note).group(1)
    assert info["arch"] == "x86_64" and info["symbol_source"] == "debug_info"
    assert re.fullmatch(r"[0-9a-f]{32}", info["file_hash"])


def test_bad_input_is_a_usage_error(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\xff" * 100)
    r = cli("inspect", str(junk))
    assert r.returncode == 2 and "junk" in r.stderr and "Traceback" not in r.stderr
    r = cli("upload", str(junk))
    assert r.returncode == 2 and "DD_API_KEY" in r.stderr
    r = cli("upload", str(junk), DD_API_KEY="not-a-key")
    assert r.returncode == 2 and "not-a-key" not in r.stderr
