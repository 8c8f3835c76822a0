"""The deployment files agree on the least set of capabilities (issue 11): the systemd
unit's ambient and bounding sets, the image's file capabilities, the Kubernetes manifest
and the chart all grant exactly `privileges.LEAST_CAPABILITIES`, the set that
tests/test_capabilities.py proves enough (and each member needed) on this kernel; and
`systemd-analyze verify` accepts the unit. (The manifests' own validation, with helm and
the Kubernetes API types, is scripts/check-kubernetes.sh.)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ddprofiler import privileges

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy/systemd/ddprofiler.service"
LEAST = set(privileges.LEAST_CAPABILITIES)


def _unit_values(key: str) -> set[str]:
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith(f"{key}=")]
    assert len(lines) == 1, f"{key}= appears {len(lines)} times"
    return set(lines[0].split("=", 1)[1].split())


def test_systemd_unit_grants_exactly_the_least_set():
    assert _unit_values("AmbientCapabilities") == LEAST
    assert _unit_values("CapabilityBoundingSet") == LEAST
    assert _unit_values("User") == {"ddprofiler"}
    assert _unit_values("NoNewPrivileges") == {"yes"}  # ambient capabilities survive it


def test_image_interpreter_gets_exactly_the_least_set():
    (line,) = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if "setcap " in line]
    caps = re.search(r"setcap (\S+)\+p ", line)
    assert caps, line
    assert {c.upper() for c in caps.group(1).split(",")} == LEAST


@pytest.mark.parametrize("path", ["deploy/kubernetes/daemonset.yaml",
                                  "deploy/helm/ddprofiler/templates/daemonset.yaml"])
def test_kubernetes_adds_exactly_the_least_set(path):
    text = (ROOT / path).read_text()
    (add,) = re.findall(r"^\s+add: \[(.*)\]$", text, re.M)
    assert {f"CAP_{c.strip().strip(chr(34))}" for c in add.split(",")} == LEAST
    assert re.search(r"^\s+drop: \[\"ALL\"\]$", text, re.M)
    assert "privileged: false" in text


def test_systemd_analyze_verifies_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # The unit as installed, with this host's interpreter standing in for /opt/ddprofiler's.
    unit = tmp_path / "ddprofiler.service"
    unit.write_text(UNIT.read_text().replace("/opt/ddprofiler/bin/python", sys.executable))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert res.returncode == 0 and not res.stderr.strip(), res.stderr
