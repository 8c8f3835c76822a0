"""The counter registry as Python sees it: one name, one kind, one line of help each, and the
docs' table of kinds (docs/internals.md) says the same as the registry."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).parent.parent / "docs" / "internals.md"
KINDS = {"count", "gauge", "success", "unwind_failure", "lost", "error"}


@pytest.fixture
def specs(native):
    from ddprofiler import _native

    return _native.counter_specs()


def test_registry_is_well_formed(specs):
    names = [name for name, _, _ in specs]
    assert len(names) == len(set(names)), names
    assert {kind for _, kind, _ in specs} <= KINDS
    assert all(help_text and not help_text.endswith(".") for _, _, help_text in specs)
    # The BPF program's counters are in it (their indices come from bpf/sampler.h).
    assert {"bpf_samples", "lost", "bpf_ustack_failed", "bpf_fp_chain_failed"} <= set(names)
    kind = dict((n, k) for n, k, _ in specs)
    assert kind["unwind_complete"] == "success" and kind["lost"] == "lost"
    assert kind["bpf_no_user_regs"] == "count", "kernel threads have no user registers: not an error"


def test_docs_table_matches_the_registry(specs):
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `(\w+)` \| (.+) \|$", line)
        if m and m.group(1) in KINDS:
            rows[m.group(1)] = set(re.findall(r"`(\w+)`", m.group(2)))
    documented = {name: kind for kind, names in rows.items() for name in names}
    assert documented == {name: kind for name, kind, _ in specs}
