"""The continuous profiler's loop: sample, close a period, tag, split, hand to an exporter.

Input: settings, a started ``ddprofiler.Profiler`` (anything with ``snapshot(reset)`` and
``stop()``), an exporter (``ddprofiler.exporters``) and, with ``--upload-symbols``, a
symbol uploader (``offer(mappings)``). Output: one profile per (service, env, version,
container) per period, submitted to the exporter, its samples labelled with their
container and pod; the file-backed native mappings of the period offered for symbol
upload; a telemetry line per period at info level (its words are explained in
docs/operations.md), whose figures also go to ``on_period`` (the status file). The period
is ``upload_period`` with a few percent of jitter, so that a fleet started together does
not upload together.
Closing a period is one ``snapshot(reset=True)``: the core swaps the aggregate, so there
is no gap and no sample is counted twice. Where frames get their names is the core's
business (``Profiler(symbolize=...)``); this module only tags a profile that carries
frames left for the backend with ``remote_symbols:yes``. Non-goals: transport
(exporters), parsing containers and services (tagging).
"""
from __future__ import annotations

import collections
import logging
import platform
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Protocol, Tuple

import ddprofiler
from ddprofiler.config import Settings, format_bytes
from ddprofiler.exporters import OtlpExporter, ProfilePayload
from ddprofiler.pprof.builder import encode_otlp, encode_profiles
from ddprofiler.profile import Mapping as ProfileMapping
from ddprofiler.profile import Profile
from ddprofiler.stats import Stats
from ddprofiler.tagging import ProcessTags, TagCache, validate_tags

if TYPE_CHECKING:
    from ddprofiler.exporters.payload import Exporter

log = logging.getLogger(__name__)

JITTER = 0.05
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}  # Go's names, as Datadog's host profiler sends
_LABELS = ("container_id", "container_name", "pod_name")  # per-sample labels from the tags
_UNWIND_PREFIX = "unwind_"
_UPLOAD_COUNTS = ("uploads_ok", "uploads_failed", "uploads_dropped", "uploads_retried")


class Snapshots(Protocol):
    """What the runner needs of a profiler (``ddprofiler.Profiler``)."""

    def snapshot(self, reset: bool = True) -> Profile: ...

    def stop(self) -> None: ...


class SymbolSink(Protocol):
    """What the runner needs of a symbol uploader (``symbols.background``)."""

    def offer(self, mappings: Iterable[ProfileMapping]) -> None: ...


class GroupKey(NamedTuple):
    """What makes a profile of its own in a period."""

    service: str
    env: Optional[str]
    version: Optional[str]
    container_id: Optional[str]
    cgroup_inode: Optional[int]
    service_inferred: bool


class Runner:
    def __init__(self, settings: Settings, profiler: Optional[Snapshots], exporter: Exporter, *,
                 clock: Callable[[], float] = time.monotonic,
                 rng: Callable[[], float] = random.random,
                 symbols: Optional[SymbolSink] = None,
                 on_period: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        self.settings = settings
        self.symbols = symbols
        self.profiler = profiler
        self.exporter = exporter
        self.clock = clock
        self.rng = rng
        self.tag_cache = TagCache()
        self.profile_seq: Dict[str, int] = collections.Counter()
        self.last_stats: Optional[Stats] = None
        self.last_uploads: Dict[str, int] = {}
        self.on_period = on_period
        valid, invalid = validate_tags(settings.tags)
        if invalid:
            log.warning("dropped %d invalid tag(s): %s", len(invalid), ", ".join(invalid))
        self.user_tags = list(valid)

    def next_period(self) -> float:
        return self.settings.upload_period * (1 + JITTER * (2 * self.rng() - 1))

    def run(self, stop_requested: Callable[[], bool]) -> None:
        """Until `stop_requested()`; then stops sampling and exports the partial period."""
        profiler = self.profiler
        if profiler is None:
            raise ValueError("Runner.run needs a profiler")
        deadline = self.clock() + self.next_period()
        while not stop_requested():
            remaining = deadline - self.clock()
            if remaining > 0:
                time.sleep(min(0.2, remaining))
                continue
            self.export(profiler.snapshot(True))
            deadline += self.next_period()
            if deadline < self.clock():  # a stall (suspend, overload): no burst of catch-ups
                deadline = self.clock() + self.next_period()
        profiler.stop()
        self.export(profiler.snapshot(True))

    # ----------------------------------------------------------------- one period

    def export(self, profile: Profile) -> int:
        """Tags, groups and submits one period; returns how many profiles it made."""
        tags_of = self.tags_of(profile)
        labels = {pid: labels_of(t) for pid, t in tags_of.items()}
        if self.symbols is not None:
            self.symbols.offer(symbol_mappings(profile))
        key_of = {pid: self._key(t) for pid, t in tags_of.items()}
        keys = sorted(set(key_of.values()), key=lambda k: tuple(str(x) for x in k))
        index = {key: i for i, key in enumerate(keys)}
        if isinstance(self.exporter, OtlpExporter):  # one request a period, not a pprof a group
            # One resource per distinct set of attributes: groups that OTLP cannot tell apart
            # (the same service in two cgroups without a container id) are one profile.
            attrs = [tuple(self._resource(key)) for key in keys]
            resource_index = {a: i for i, a in enumerate(dict.fromkeys(attrs))}
            body, _ = encode_otlp(profile, {pid: resource_index[attrs[index[k]]] for pid, k in key_of.items()},
                                  [list(a) for a in resource_index], ddprofiler.__version__)
            self.exporter.submit_request(body, f"{len(resource_index)} profiles")
            self._telemetry(profile, len(resource_index))
            return len(resource_index)
        encoded = encode_profiles(profile, {pid: index[k] for pid, k in key_of.items()}, len(keys),
                                  {pid: extra for pid, extra in labels.items() if extra})
        for key, profile_of_key in zip(keys, encoded):
            self.profile_seq[key.service] += 1
            remote = self.settings.symbolize != "host" or profile_of_key.backend_frames
            tags = self._tags(key, self.profile_seq[key.service], remote_symbols=remote)
            self.exporter.submit(ProfilePayload(
                pprof=profile_of_key.pprof, start_ns=profile.start_ns,
                end_ns=profile.end_ns, tags=tags, service=key.service,
                container_id=key.container_id, cgroup_inode=key.cgroup_inode))
        self._telemetry(profile, len(keys))
        return len(keys)

    def tags_of(self, profile: Profile) -> Dict[int, ProcessTags]:
        """The tags of each sampled pid (memoized across periods by the tag cache)."""
        return {pid: self.tag_cache.get(pid, profile.processes.get(pid)) for pid in sampled_pids(profile)}

    def _key(self, t: ProcessTags) -> GroupKey:
        s = self.settings
        if not s.split_by_service:
            return GroupKey(s.host_service or "", s.environment, s.version, None, None, False)
        return GroupKey(t.service, t.env or s.environment, t.version or s.version, t.container_id,
                        None if t.container_id else t.cgroup_inode, t.service_inferred)

    def _resource(self, key: GroupKey) -> List[Tuple[str, str]]:
        """A group's OTLP resource attributes (OpenTelemetry's semantic conventions), then
        the user's tags as they are (``key:value`` -> ``key``, ``value``)."""
        attrs = [("service.name", key.service), ("host.name", self.settings.node),
                 ("host.arch", _ARCH.get(platform.machine(), platform.machine()))]
        if key.env:
            attrs.append(("deployment.environment.name", key.env))
        if key.version:
            attrs.append(("service.version", key.version))
        if key.container_id:
            attrs.append(("container.id", key.container_id))
        taken = {k for k, _ in attrs}
        for tag in self.user_tags:
            k, _, v = tag.partition(":")
            if k not in taken:
                attrs.append((k, v))
        return attrs

    def _tags(self, key: GroupKey, seq: int, remote_symbols: bool) -> List[str]:
        tags = [f"service:{key.service}",
                f"service_inferred:{'yes' if key.service_inferred else 'no'}"]
        if key.env:
            tags.append(f"env:{key.env}")
        if key.version:
            tags.append(f"version:{key.version}")
        tags += [f"host:{self.settings.node}", "runtime:ebpf", "profiler_name:ddprofiler",
                 f"profiler_version:{ddprofiler.__version__}",
                 f"cpu_arch:{_ARCH.get(platform.machine(), platform.machine())}",
                 f"profile_seq:{seq}"]
        if remote_symbols:
            tags.append("remote_symbols:yes")
        valid, _ = validate_tags(tags)
        return valid + self.user_tags

    def _telemetry(self, profile: Profile, profiles: int) -> None:
        stats = profile.stats
        delta = stats.delta(self.last_stats)
        self.last_stats = stats
        changed = {name: value for name, value in delta.items() if value}
        lost = sum(v for k, v in changed.items() if stats.kind(k) == "lost")
        unwind = {_reason(k): v for k, v in changed.items() if stats.kind(k) == "unwind_failure"}
        errors = {k: v for k, v in changed.items() if stats.kind(k) == "error"}
        up = self.exporter.stats()
        moved = {k: up.get(k, 0) - self.last_uploads.get(k, 0) for k in _UPLOAD_COUNTS}
        self.last_uploads = dict(up)
        health_of = getattr(self.exporter, "health", None)
        dest: Dict[str, Any] = health_of() if health_of is not None else {}
        seconds = max(0, profile.end_ns - profile.start_ns) / 1e9
        resident = stats.get("resident_bytes", 0)
        memory = (f"memory {format_bytes(resident)} of {format_bytes(self.settings.memory_budget)}"
                  + (f", caches shed {changed['memory_sheds']} time(s)" if changed.get("memory_sheds") else "")
                  if resident else "memory not measured")
        # Profiles written to --output-dir are files written, not uploads sent.
        noun, verb = ("files", "written") if self.settings.output_dir else ("uploads", "sent")
        log.info(
            "period: %d samples in %d profiles over %.1f s; samples lost %d; stacks cut short %s; "
            f"errors %s; {noun} %d {verb}, %d failed, %d dropped, %d retries, %d waiting in the "
            "queue (%s); %s; destination %s",
            profile.total, profiles, seconds, lost, _total(unwind), _total(errors),
            moved["uploads_ok"], moved["uploads_failed"], moved["uploads_dropped"],
            moved["uploads_retried"], up.get("queue_len", 0), format_bytes(up.get("queue_bytes", 0)),
            memory, _destination(dest))
        if self.on_period is not None:
            self.on_period({"period_s": round(seconds, 3), "samples": profile.total,
                            "profiles": profiles, "samples_lost": lost,
                            "stacks_cut_short": dict(unwind), "errors": dict(errors),
                            "uploads": dict(up), "destination": dest,
                            "memory": {"resident_bytes": resident,
                                       "budget_bytes": self.settings.memory_budget,
                                       "sheds_total": stats.get("memory_sheds", 0),
                                       "parses_evicted_total": stats.get("parses_evicted", 0)}})


def labels_of(t: ProcessTags) -> Dict[str, str]:
    """The extra sample labels of a process's tags (container and pod), where known."""
    values = {"container_id": t.container_id, "container_name": t.container_name,
              "pod_name": t.pod_name}
    return {key: value for key in _LABELS if (value := values[key])}


def _reason(name: str) -> str:
    return name[len(_UNWIND_PREFIX):] if name.startswith(_UNWIND_PREFIX) else name


def _fmt(d: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def sampled_pids(profile: Profile) -> List[int]:
    """The pids of the samples with a count or off-CPU time, each once, in order of first
    appearance."""
    if profile.native is not None:
        return profile.native.sampled_pids()
    return list(dict.fromkeys(s.pid for s in profile.samples if s.count > 0 or s.off_cpu_ns > 0))


def _total(d: Mapping[str, int]) -> str:
    """``0``, or ``5 (no_cfi 3, bad_pc 2)``."""
    return f"{sum(d.values())} ({_fmt(d)})" if d else "0"


def _destination(health: Mapping[str, Any]) -> str:
    if health.get("state") != "failing":
        return "ok" if health.get("last_ok") or not health else "not contacted yet"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(health.get("failing_since") or 0))
    return f"FAILING since {since}: {health.get('reason', '')}"


def symbol_mappings(profile: Profile) -> List[ProfileMapping]:
    """The file-backed native mappings that the samples' stacks touch and whose symbols
    could be uploaded: an open ``binary`` and a ``build_id``; one per build id."""
    if profile.native is not None:
        table = profile.native.mappings
        touched = [ProfileMapping._make(table[i]) for i in profile.native.sampled_mappings()]
    else:
        touched = []
        for stack_index in dict.fromkeys(s.stack for s in profile.samples if s.count > 0 or s.off_cpu_ns > 0):
            touched.extend(m for i in profile.stacks[stack_index]
                           if (m := profile.frames[i].mapping) is not None)
    seen: Dict[str, ProfileMapping] = {}
    for m in touched:
        if (m.binary is not None and m.build_id and not m.is_kernel and m.path.startswith("/")
                and m.build_id not in seen):
            seen[m.build_id] = m
    return list(seen.values())
