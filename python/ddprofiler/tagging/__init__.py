"""What a sampled process is, in Datadog's terms: service, env, version, container, pod.

Contract
- ``process_tags(info) -> ProcessTags``; ``info`` is a ``ddprofiler.ProcessInfo``
  (``name``, ``exe``, ``env``, ``cgroup``), or None for a pid without one (kernel threads:
  their stacks hold only kernel frames) which gives service ``system``, not inferred.
  Service: see ``service.py``. ``env``/``version`` from the process's ``DD_ENV`` /
  ``DD_VERSION``, normalized as tag values (``env:Prod`` is sent as ``env:prod``), None
  when unset or empty. ``container_id``/``pod_uid`` from the cgroup text (``containers.py``);
  ``cgroup_inode`` only when no container id is known and the cgroup is not a host-level
  one (root, init.scope, user.slice, system.slice services), for ``in-<inode>``.
  ``pod_name`` from ``POD_NAME`` then ``KUBERNETES_POD_NAME`` (downward API convention).
  ``container_name`` stays None (no runtime API calls).
- ``TagCache(maxsize)``: ``get(pid, info)`` memoizes ``process_tags`` by the content of
  ``info`` (same name, exe, env and cgroup text give the same tags whatever the pid), least
  recently used entries evicted past ``maxsize``; thread-safe.
- Re-exports the tag helpers: ``validate_tags``, ``parse_dd_tags``, ``normalize_tag``,
  ``normalize_service``, ``container_id_from_cgroup``, ``pod_uid_from_cgroup``,
  ``cgroup_inode``.

Non-goals: reading /proc (the native side did, once per process); deciding what a profile's
tag list is (the runner); logging.
"""
from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable, Mapping, Optional

from .containers import (cgroup_inode, container_id_from_cgroup, is_host_cgroup,
                         pod_uid_from_cgroup)
from .service import SYSTEM_SERVICE, UNKNOWN_SERVICE, normalize_service, service_of
from .tags import normalize_tag, parse_dd_tags, validate_tags

if TYPE_CHECKING:
    from ddprofiler.profile import ProcessInfo

__all__ = [
    "ProcessTags", "SYSTEM_SERVICE", "TagCache", "UNKNOWN_SERVICE", "cgroup_inode",
    "container_id_from_cgroup", "normalize_service", "normalize_tag", "parse_dd_tags",
    "pod_uid_from_cgroup", "process_tags", "validate_tags",
]


@dataclass(frozen=True)
class ProcessTags:
    service: str
    service_inferred: bool = False
    env: Optional[str] = None
    version: Optional[str] = None
    container_id: Optional[str] = None
    cgroup_inode: Optional[int] = None
    pod_name: Optional[str] = None
    container_name: Optional[str] = None
    pod_uid: Optional[str] = None


SYSTEM_TAGS = ProcessTags(service=SYSTEM_SERVICE, service_inferred=False)


def _tag_value(key: str, value: Optional[str]) -> Optional[str]:
    value = (value or "").strip()
    if not value:
        return None
    _, _, normalized = normalize_tag(f"{key}:{value}").partition(":")
    return normalized or None


def process_tags(info: Optional["ProcessInfo"]) -> ProcessTags:
    if info is None:
        return SYSTEM_TAGS
    env: Mapping[str, str] = info.env or {}
    service, inferred = service_of(info)
    cgroup = info.cgroup or ""
    container_id = container_id_from_cgroup(cgroup)
    inode = None
    if container_id is None and cgroup and not is_host_cgroup(cgroup):
        inode = cgroup_inode(cgroup)
    pod_name = (env.get("POD_NAME") or "").strip() or (env.get("KUBERNETES_POD_NAME") or "").strip()
    return ProcessTags(
        service=service,
        service_inferred=inferred,
        env=_tag_value("env", env.get("DD_ENV")),
        version=_tag_value("version", env.get("DD_VERSION")),
        container_id=container_id,
        cgroup_inode=inode,
        pod_name=pod_name or None,
        pod_uid=pod_uid_from_cgroup(cgroup),
    )


class TagCache:
    """Bounded LRU memo of ``process_tags``."""

    def __init__(self, maxsize: int = 4096):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._entries: "collections.OrderedDict[Hashable, ProcessTags]" = collections.OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(info: "ProcessInfo") -> Hashable:
        return (info.name, info.exe, tuple(sorted((info.env or {}).items())), info.cgroup)

    def get(self, pid: int, info: Optional["ProcessInfo"]) -> ProcessTags:
        """Tags of the process ``pid`` described by ``info`` (None: a kernel thread)."""
        if info is None:
            return SYSTEM_TAGS
        key = self._key(info)
        with self._lock:
            tags = self._entries.get(key)
            if tags is not None:
                self._entries.move_to_end(key)
                return tags
        tags = process_tags(info)
        with self._lock:
            self._entries[key] = tags
            self._entries.move_to_end(key)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return tags

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
