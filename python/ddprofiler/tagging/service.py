"""The service of a process, from what the snapshot says about it.

Contract
- ``service_of(info) -> (service, inferred)``; ``info`` is a ``ddprofiler.ProcessInfo``.
  Order (as Datadog's eBPF host profiler): ``DD_SERVICE``, then ``OTEL_SERVICE_NAME`` from
  the process's environment (``inferred=False``); else the basename of ``exe``, else the
  comm ``name`` (``inferred=True``); else ``unknown-service`` (inferred). A variable whose
  value normalizes to nothing is skipped, not fatal.
- ``normalize_service(name) -> str``, never empty: drops a ``" (deleted)"`` suffix and a
  ``memfd:`` prefix (what /proc/PID/exe shows for replaced or in-memory executables); folds
  every ``containerd-shim*`` to ``containerd-shim`` (the shim sets
  ``OTEL_SERVICE_NAME=containerd-shim-<id>``, and its binaries are
  ``containerd-shim-runc-v2`` etc.); removes embedded ids (UUIDs, runs of >= 16 hex
  digits with a digit among them) unless nothing else is left; then Datadog's
  service rules: at most 100 characters, then tag normalization (lowercase, allowed
  characters). Falls back to ``unknown-service``.

Non-goals: version numbers are kept (``python3.11`` stays), interpreters are not looked
through (every Python script of one interpreter is one inferred service, as in Datadog's
host profiler); kernel-only stacks are the caller's business (``SYSTEM_SERVICE``).
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Mapping, Tuple

from .tags import normalize_tag

if TYPE_CHECKING:
    from ddprofiler.profile import ProcessInfo

SERVICE_ENV_VARS = ("DD_SERVICE", "OTEL_SERVICE_NAME")
SYSTEM_SERVICE = "system"
UNKNOWN_SERVICE = "unknown-service"
MAX_SERVICE_CHARS = 100

_ID = re.compile(
    r"[-_.]?(?<![0-9A-Za-z])"
    r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|(?=[0-9a-f]*[0-9])[0-9a-f]{16,})"
    r"(?![0-9A-Za-z])",
    re.IGNORECASE,
)


def _clean(name: str) -> str:
    """Normalized service name, or "" when nothing usable is left."""
    name = (name or "").strip()
    if name.endswith(" (deleted)"):
        name = name[: -len(" (deleted)")].strip()
    if name.startswith("memfd:"):
        name = name[len("memfd:"):]
    if name.startswith("containerd-shim"):
        return "containerd-shim"
    stripped = _ID.sub("", name).strip("-_.")
    if stripped:
        name = stripped
    return normalize_tag(name[:MAX_SERVICE_CHARS], MAX_SERVICE_CHARS)


def normalize_service(name: str) -> str:
    return _clean(name) or UNKNOWN_SERVICE


def _basename(exe: str) -> str:
    exe = (exe or "").strip()
    if exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    return os.path.basename(exe.rstrip("/"))


def service_of(info: "ProcessInfo") -> Tuple[str, bool]:
    env: Mapping[str, str] = info.env or {}
    for var in SERVICE_ENV_VARS:
        service = _clean(env.get(var) or "")
        if service:
            return service, False
    for candidate in (_basename(info.exe or ""), info.name or ""):
        service = _clean(candidate)
        if service:
            return service, True
    return UNKNOWN_SERVICE, True

