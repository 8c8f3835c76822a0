"""Cut a snapshot into several, one per group of samples, keeping only what each uses.

Input: a ``_native.Snapshot`` dict and a key function over its samples. Output: per key, a
snapshot of the same shape whose stacks, locations and mappings are only those its samples
reference (indices renumbered), so that each profile carries no other service's frames.
Non-goals: deciding the keys (see ``ddprofiler.runner``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Hashable, List, Mapping


def split(snapshot: Mapping[str, Any], key: Callable[[Mapping[str, Any]], Hashable]) -> Dict[Hashable, dict]:
    groups: Dict[Hashable, List[Mapping[str, Any]]] = {}
    for sample in snapshot["samples"]:
        groups.setdefault(key(sample), []).append(sample)
    return {k: subset(snapshot, samples) for k, samples in groups.items()}


def subset(snapshot: Mapping[str, Any], samples: List[Mapping[str, Any]]) -> dict:
    stacks_in = snapshot["stacks"]
    locations_in = snapshot["locations"]
    mappings_in = snapshot["mappings"]
    stack_map: Dict[int, int] = {}
    location_map: Dict[int, int] = {}
    mapping_map: Dict[int, int] = {}
    stacks: List[List[int]] = []
    locations: List[dict] = []
    mappings: List[Mapping[str, Any]] = []
    out_samples = []

    def location(i: int) -> int:
        j = location_map.get(i)
        if j is None:
            loc = dict(locations_in[i])
            m = loc["mapping"]
            if m >= 0:
                mj = mapping_map.get(m)
                if mj is None:
                    mj = mapping_map[m] = len(mappings)
                    mappings.append(mappings_in[m])
                loc["mapping"] = mj
            j = location_map[i] = len(locations)
            locations.append(loc)
        return j

    for sample in samples:
        s = sample["stack"]
        sj = stack_map.get(s)
        if sj is None:
            sj = stack_map[s] = len(stacks)
            stacks.append([location(i) for i in stacks_in[s]])
        out = dict(sample)
        out["stack"] = sj
        out_samples.append(out)

    pids = {s["pid"] for s in samples}
    result = {k: v for k, v in snapshot.items() if k not in ("stacks", "locations", "mappings", "samples", "processes")}
    result.update(stacks=stacks, locations=locations, mappings=mappings, samples=out_samples,
                  processes=[p for p in snapshot.get("processes", ()) if p["pid"] in pids])
    return result
