"""Container identity from the text of /proc/PID/cgroup.

Contract
- ``container_id_from_cgroup(text) -> Optional[str]``, pure. Lines are
  ``hierarchy:controllers:path`` (cgroup v1, and ``0::path`` for v2); the first line that
  names a container wins (as libdatadog and dd-trace-go do). In a path, segments are read
  from the last one up, and the innermost that is a container id wins:
  ``[<prefix>-|<prefix>:]<id>[.scope]`` with ``<id>`` 64 lowercase hex (Docker ``/docker/<id>``
  and ``docker-<id>.scope``, containerd ``cri-containerd-<id>.scope`` and ``...slice:cri-
  containerd:<id>``, CRI-O ``crio-<id>[.scope]``, Podman ``libpod-<id>.scope``, Kubernetes
  cgroupfs ``/kubepods/<qos>/pod<uid>/<id>``) or an ECS task id ``<32 hex>-<digits>``
  (Fargate); a last segment that is wholly a UUID (8-4-4-4-12) or a Garden handle (8-4-4-4-4)
  is taken too. Runtime monitors are not containers: a ``*conmon*`` prefix (``crio-conmon-``,
  ``libpod-conmon-``) is skipped. Uppercase or wrong-length hex is no id.
- ``pod_uid_from_cgroup(text) -> Optional[str]``: the Kubernetes pod UID of a ``pod<uid>``
  segment (systemd's ``_`` turned back into ``-``), also for pod-level cgroups without a
  container.
- ``cgroup_inode(text, root="/sys/fs/cgroup") -> Optional[int]``: inode of the process's
  cgroup directory, as libdatadog picks it for ``Datadog-Entity-ID: in-<inode>``: the
  ``memory`` controller's directory when the file has a v1 memory line (v1 and hybrid hosts,
  where the Agent indexes cgroups by that controller), else the ``0::`` path under ``root``
  when ``root`` is a cgroup2 mount, else under ``root/unified`` (hybrid). None when absent.
- ``is_host_cgroup(text) -> bool``: the process sits in a host-level cgroup (``/``,
  ``/init.scope``, ``/user.slice/...``, ``/system.slice[/<unit>.service]``).

Non-goals: no runtime API calls (container names, pod names come from elsewhere); LXC and
buildkit names; paths are as the reader's cgroup namespace shows them (run in the host's).
"""
from __future__ import annotations

import os
import re
from typing import Iterator, Optional, Tuple

_LINE = re.compile(r"^(\d+):([^:]*):(.*)$")
_SEGMENT_ID = re.compile(r"^(?:(.*)[-:])?([0-9a-f]{64}|[0-9a-f]{32}-\d+)(?:\.scope)?$")
_WHOLE_ID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-(?:[0-9a-f]{12}|[0-9a-f]{4})$"
)
_POD_UID = re.compile(
    r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"
    r"(?:\.slice)?(?:[/:]|$)"
)
_HOST = re.compile(r"^/(?:init\.scope|user\.slice(?:/.*)?|system\.slice(?:/[^/]+\.service)?)?$")


def _entries(text: str) -> Iterator[Tuple[str, str, str]]:
    for line in (text or "").splitlines():
        m = _LINE.match(line.strip())
        if m:
            yield m.group(1), m.group(2), m.group(3).strip()


def _id_in_path(path: str) -> Optional[str]:
    segments = [s for s in path.split("/") if s]
    for i in range(len(segments) - 1, -1, -1):
        m = _SEGMENT_ID.match(segments[i])
        if m:
            if "conmon" in (m.group(1) or ""):
                continue
            return m.group(2)
        if i == len(segments) - 1 and _WHOLE_ID.match(segments[i]):
            return segments[i]
    return None


def container_id_from_cgroup(text: str) -> Optional[str]:
    for _, _, path in _entries(text):
        cid = _id_in_path(path)
        if cid:
            return cid
    return None


def pod_uid_from_cgroup(text: str) -> Optional[str]:
    for _, _, path in _entries(text):
        m = _POD_UID.search(path)
        if m:
            return m.group(1).replace("_", "-")
    return None


def _paths(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(v1 memory controller path, v2 path) of the file, each None when absent."""
    memory = unified = None
    for hierarchy, controllers, path in _entries(text):
        if memory is None and "memory" in controllers.split(","):
            memory = path
        elif unified is None and hierarchy == "0" and controllers == "":
            unified = path
    return memory, unified


def cgroup_inode(text: str, root: str = "/sys/fs/cgroup") -> Optional[int]:
    memory, unified = _paths(text)
    dirs = []
    if memory is not None:
        dirs.append(os.path.join(root, "memory", memory.lstrip("/")))
    if unified is not None:
        v2_root = root if os.path.exists(os.path.join(root, "cgroup.controllers")) \
            else os.path.join(root, "unified")
        dirs.append(os.path.join(v2_root, unified.lstrip("/")))
    for d in dirs:
        try:
            return os.stat(d).st_ino
        except OSError:
            continue
    return None


def is_host_cgroup(text: str) -> bool:
    memory, unified = _paths(text)
    path = memory if memory is not None else unified
    return path is None or bool(_HOST.match(path))
