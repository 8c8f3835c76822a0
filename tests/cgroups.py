"""A process moved into a container-like cgroup for the length of a test (needs root).

``container_cgroup(pid, cid)`` creates ``<v2 root>/<tag>/docker-<cid>.scope`` and
``<v1 pids>/<tag>/docker/<cid>`` where those hierarchies exist, moves `pid` into them,
yields the list of (hierarchy root, is_v2, leaf dir), and on the way out moves the process
back (if it still lives) and removes the directories it made.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from helpers import skip_or_fail


def v2_root() -> Optional[Path]:
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (root / "cgroup.controllers").exists() and (root / "cgroup.procs").exists():
            return root
    return None


def v1_root(controller: str = "pids") -> Optional[Path]:
    root = Path("/sys/fs/cgroup") / controller
    return root if (root / "cgroup.procs").exists() and not (root / "cgroup.controllers").exists() \
        else None


def own_path(text: str, hierarchy: Path, v2: bool) -> str:
    name = hierarchy.name
    for line in text.splitlines():
        hid, controllers, path = line.split(":", 2)
        if (v2 and hid == "0" and controllers == "") or \
                (not v2 and name in controllers.split(",")):
            return path
    raise AssertionError(f"no {name} line in\n{text}")


@contextlib.contextmanager
def container_cgroup(pid: int, cid: str) -> Iterator[List[Tuple[Path, bool, Path]]]:
    if os.geteuid() != 0:
        skip_or_fail("creating cgroups and moving a process into one needs root")
    hierarchies = [(r, True) for r in [v2_root()] if r] + [(r, False) for r in [v1_root()] if r]
    if not hierarchies:
        skip_or_fail("no writable cgroup hierarchy (neither v2 nor a v1 pids controller)")
    tag = f"ddprof-test-{os.getpid()}-{secrets.token_hex(4)}"
    made: List[Path] = []
    moved: List[Tuple[Path, str]] = []  # (hierarchy root, original path) to move back to
    leaves: List[Tuple[Path, bool, Path]] = []
    try:
        before = Path(f"/proc/{pid}/cgroup").read_text()
        for root, v2 in hierarchies:
            leaf = root / tag / (f"docker-{cid}.scope" if v2 else f"docker/{cid}")
            try:
                leaf.mkdir(parents=True)
            except OSError as e:
                skip_or_fail(f"cannot create {leaf}: {e}")
            made += [p for p in [root / tag, root / tag / "docker", leaf] if p.exists() and p not in made]
            (leaf / "cgroup.procs").write_text(str(pid))
            moved.append((root, own_path(before, root, v2)))
            leaves.append((root, v2, leaf))
        yield leaves
    finally:
        for root, path in moved:
            try:
                (root / path.lstrip("/") / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass
        for d in sorted(made, key=lambda p: len(p.parts), reverse=True):
            for _ in range(50):  # the kernel frees a cgroup shortly after its last task
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        left = [d for d in made if d.exists()]
        assert not left, f"left behind: {left}"
