"""The continuous profiler's loop: sample, close a period, tag, split, hand to an exporter.

Input: settings, a started ``_native.Profiler``, an exporter (``ddprofiler.exporters``).
Output: one profile per (service, env, version, container) per period, submitted to the
exporter; a telemetry line per period at info level. The period is ``upload_period`` with
a few percent of jitter, so that a fleet started together does not upload together.
Closing a period is one ``snapshot(reset=True)``: the drain thread swaps the aggregate, so
there is no gap and no sample is counted twice. Non-goals: transport (exporters), parsing
containers and services (tagging).
"""
from __future__ import annotations

import collections
import logging
import platform
import random
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import ddprofiler
from ddprofiler.config import Settings
from ddprofiler.exporters import ProfilePayload
from ddprofiler.pprof.builder import build_profile
from ddprofiler.pprof.split import split
from ddprofiler.tagging import ProcessTags, TagCache, validate_tags

log = logging.getLogger(__name__)

JITTER = 0.05
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}  # Go's names, as Datadog's host profiler sends
FAILURE_STATS = ("lost", "process_gone", "maps_errors", "elf_errors", "symbolize_failures")


class Runner:
    def __init__(self, settings: Settings, profiler: Any, exporter: Any, *,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random,
                 symbols: Any = None):
        self.settings = settings
        self.symbols = symbols  # symbols.background.BackgroundSymbolUpload, when uploading
        self.profiler = profiler
        self.exporter = exporter
        self.clock = clock
        self.rng = rng
        self.tag_cache = TagCache()
        self.profile_seq: Dict[str, int] = collections.Counter()
        self.last_stats: Dict[str, int] = {}
        valid, invalid = validate_tags(settings.tags)
        if invalid:
            log.warning("dropped %d invalid tag(s): %s", len(invalid), ", ".join(invalid))
        self.user_tags = list(valid)

    def next_period(self) -> float:
        return self.settings.upload_period * (1 + JITTER * (2 * self.rng() - 1))

    def run(self, stop_requested: Callable[[], bool]) -> None:
        """Until `stop_requested()`; then stops sampling and exports the partial period."""
        deadline = self.clock() + self.next_period()
        while not stop_requested():
            remaining = deadline - self.clock()
            if remaining > 0:
                time.sleep(min(0.2, remaining))
                continue
            self.export(self.profiler.snapshot(True))
            deadline += self.next_period()
            if deadline < self.clock():  # a stall (suspend, overload): no burst of catch-ups
                deadline = self.clock() + self.next_period()
        self.profiler.stop()
        self.export(self.profiler.snapshot(True))

    # ----------------------------------------------------------------- one period

    def export(self, snapshot: Mapping[str, Any]) -> int:
        """Tags, splits and submits one period; returns how many profiles it made."""
        infos = {p["pid"]: p for p in snapshot.get("processes", ())}
        tags_of: Dict[int, ProcessTags] = {}
        for sample in snapshot["samples"]:
            pid = sample["pid"]
            t = tags_of.get(pid)
            if t is None:
                t = tags_of[pid] = self.tag_cache.get(pid, infos.get(pid))
            if t.container_id:
                sample["container_id"] = t.container_id
            if t.container_name:
                sample["container_name"] = t.container_name
            if t.pod_name:
                sample["pod_name"] = t.pod_name
        if self.symbols is not None:
            self.symbols.offer(native_binaries(snapshot))
        if self.settings.symbolize == "backend":
            _leave_native_frames_to_backend(snapshot)
        groups = split(snapshot, lambda s: self._key(tags_of[s["pid"]]))
        made = 0
        for key, sub in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            service, env, version, container_id, cgroup_inode, inferred = key
            profile = build_profile(sub)
            self.profile_seq[service] += 1
            remote = self.settings.symbolize != "host" or _has_unsymbolized(sub)
            tags = self._tags(service, inferred, env, version, self.profile_seq[service],
                              remote_symbols=remote)
            self.exporter.submit(ProfilePayload(
                pprof=profile.SerializeToString(), start_ns=int(snapshot["start_ns"]),
                end_ns=int(snapshot["end_ns"]), tags=tags, service=service,
                container_id=container_id, cgroup_inode=cgroup_inode))
            made += 1
        self._telemetry(snapshot, made)
        return made

    def _key(self, t: ProcessTags) -> Tuple[Any, ...]:
        s = self.settings
        if not s.split_by_service:
            return (s.host_service, s.environment, None, None, None, False)
        return (t.service, t.env or s.environment, t.version, t.container_id,
                None if t.container_id else t.cgroup_inode, t.service_inferred)

    def _tags(self, service: str, inferred: bool, env: Optional[str], version: Optional[str],
              seq: int, remote_symbols: bool) -> List[str]:
        tags = [f"service:{service}", f"service_inferred:{'yes' if inferred else 'no'}"]
        if env:
            tags.append(f"env:{env}")
        if version:
            tags.append(f"version:{version}")
        tags += [f"host:{self.settings.node}", "runtime:ebpf", "profiler_name:ddprofiler",
                 f"profiler_version:{ddprofiler.__version__}",
                 f"cpu_arch:{_ARCH.get(platform.machine(), platform.machine())}",
                 f"profile_seq:{seq}"]
        if remote_symbols:
            tags.append("remote_symbols:yes")
        valid, _ = validate_tags(tags)
        return valid + self.user_tags

    def _telemetry(self, snapshot: Mapping[str, Any], profiles: int) -> None:
        stats = dict(snapshot.get("stats", {}))
        delta = {k: v - self.last_stats.get(k, 0) for k, v in stats.items()}
        self.last_stats = stats
        samples = sum(s["count"] for s in snapshot["samples"])
        unwind = {k[7:]: v for k, v in delta.items() if k.startswith("unwind_") and k != "unwind_complete" and v}
        up = self.exporter.stats()
        log.info(
            "period: %d samples in %d profiles, lost %d, unwind failures %s, errors %s; uploads ok %d "
            "failed %d dropped %d, queue %d B",
            samples, profiles, delta.get("lost", 0), _fmt(unwind) or "0",
            _fmt({k: delta[k] for k in FAILURE_STATS if k != "lost" and delta.get(k)}) or "0",
            up.get("uploads_ok", 0), up.get("uploads_failed", 0), up.get("uploads_dropped", 0),
            up.get("queue_bytes", 0))


def _fmt(d: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def native_binaries(snapshot: Mapping[str, Any]) -> List[Tuple[int, str, str]]:
    """(pid, path, file id) of each file-backed native mapping the period's samples touch."""
    mappings, locations, stacks = snapshot["mappings"], snapshot["locations"], snapshot["stacks"]
    seen: Dict[int, Tuple[int, str, str]] = {}
    for sample in snapshot["samples"]:
        for loc in stacks[sample["stack"]]:
            m = locations[loc]["mapping"]
            if m < 0 or m in seen:
                continue
            mp = mappings[m]
            if mp["is_kernel"] or not mp["build_id"] or not mp["path"].startswith("/"):
                continue
            seen[m] = (sample["pid"], mp["path"].removesuffix(" (deleted)"), mp["build_id"])
    return list(seen.values())


def _leave_native_frames_to_backend(snapshot: Mapping[str, Any]) -> None:
    """Drops the lines of user frames in files with an id: the backend symbolizes them from
    the mapping's build id and the address. Kernel, JIT and marker frames keep theirs."""
    mappings = snapshot["mappings"]
    for loc in snapshot["locations"]:
        m = loc["mapping"]
        if m >= 0 and mappings[m]["build_id"] and not mappings[m]["is_kernel"] \
                and not mappings[m]["path"].startswith("["):
            loc["lines"] = []


def _has_unsymbolized(snapshot: Mapping[str, Any]) -> bool:
    """True when some native frame is left for the backend (a mapping with a build id)."""
    mappings = snapshot["mappings"]
    return any(not loc["lines"] and loc["mapping"] >= 0 and mappings[loc["mapping"]]["build_id"]
               and not mappings[loc["mapping"]]["is_kernel"] for loc in snapshot["locations"])
