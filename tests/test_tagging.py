"""Service, env, version and pod of a process; Datadog tag rules; DD_TAGS; the tag cache."""
from __future__ import annotations

import pytest

from ddprofiler import ProcessInfo
from ddprofiler.tagging import (ProcessTags, TagCache, normalize_service, normalize_tag,
                                parse_dd_tags, process_tags, validate_tags)

CID = "b6fca87d67bd05a61568efae6f10178d739033a478c212adfa93637732c3cb37"


def info(env=None, exe="/usr/local/bin/web-server", name="web-server", cgroup="0::/", pid=10):
    return ProcessInfo(pid=pid, name=name, exe=exe, env=dict(env or {}), cgroup=cgroup)


# ---------------------------------------------------------------- service


def test_dd_service_first():
    t = process_tags(info({"DD_SERVICE": "checkout", "OTEL_SERVICE_NAME": "otel-name"}))
    assert (t.service, t.service_inferred) == ("checkout", False)


def test_otel_service_name_second():
    t = process_tags(info({"OTEL_SERVICE_NAME": "payments"}))
    assert (t.service, t.service_inferred) == ("payments", False)


def test_empty_or_invalid_variable_falls_through():
    assert process_tags(info({"DD_SERVICE": "  ", "OTEL_SERVICE_NAME": "api"})).service == "api"
    t = process_tags(info({"DD_SERVICE": "###"}))
    assert (t.service, t.service_inferred) == ("web-server", True)


def test_explicit_service_normalized():
    t = process_tags(info({"DD_SERVICE": "My Service!"}))
    assert (t.service, t.service_inferred) == ("my_service", False)


def test_inferred_from_exe_basename_then_comm():
    assert process_tags(info()).service == "web-server"
    assert process_tags(info()).service_inferred is True
    t = process_tags(info(exe="", name="kube-proxy"))
    assert (t.service, t.service_inferred) == ("kube-proxy", True)
    assert process_tags(info(exe="/usr/bin/python3.11", name="gunicorn")).service == "python3.11"


def test_inferred_from_deleted_or_memfd_exe():
    assert process_tags(info(exe="/opt/app/server (deleted)")).service == "server"
    assert process_tags(info(exe="/memfd:jit-code (deleted)", name="x")).service == "jit-code"


def test_nothing_known_is_unknown_service():
    t = process_tags(info(exe="", name=""))
    assert (t.service, t.service_inferred) == ("unknown-service", True)


def test_kernel_threads_are_system():
    t = process_tags(None)
    assert t == ProcessTags(service="system", service_inferred=False)


def test_containerd_shim_folded():
    # the shim sets OTEL_SERVICE_NAME=containerd-shim-<id>; its binaries embed the runtime
    t = process_tags(info({"OTEL_SERVICE_NAME": f"containerd-shim-{CID}"}))
    assert (t.service, t.service_inferred) == ("containerd-shim", False)
    t = process_tags(info(exe="/usr/bin/containerd-shim-runc-v2", name="containerd-shim"))
    assert (t.service, t.service_inferred) == ("containerd-shim", True)


@pytest.mark.parametrize("name,want", [
    ("nginx", "nginx"),
    ("Xorg", "xorg"),
    ("python3.11", "python3.11"),                  # versions are kept
    ("php-fpm8.2", "php-fpm8.2"),
    ("containerd-shim-runc-v2", "containerd-shim"),
    (f"worker-{CID}", "worker"),                    # embedded ids dropped
    ("job_0123456789abcdef0123", "job"),
    ("task-3f1b7a2c-9d4e-4b5a-8c6d-7e8f90a1b2c3-run", "task-run"),
    ("cafebabe-server", "cafebabe-server"),         # short hex words are not ids
    ("my app", "my_app"),
    ("7zip", "zip"),                                # Datadog: must start with a letter
    ("memfd:loader (deleted)", "loader"),
    ("", "unknown-service"),
    ("!!!", "unknown-service"),
])
def test_normalize_service(name, want):
    assert normalize_service(name) == want


def test_normalize_service_length():
    assert normalize_service("a" * 150) == "a" * 100
    assert len(normalize_service("s" + "é" * 300)) == 100


# ---------------------------------------------------------------- env, version, pod, container


def test_env_version_pod():
    t = process_tags(info({"DD_ENV": "Prod", "DD_VERSION": "1.2.3-RC1", "POD_NAME": "web-7d4b9-x2x"}))
    assert (t.env, t.version, t.pod_name) == ("prod", "1.2.3-rc1", "web-7d4b9-x2x")
    t = process_tags(info({"DD_ENV": "", "KUBERNETES_POD_NAME": "api-0"}))
    assert (t.env, t.version, t.pod_name) == (None, None, "api-0")
    assert process_tags(info({"POD_NAME": "a", "KUBERNETES_POD_NAME": "b"})).pod_name == "a"
    assert process_tags(info({"DD_ENV": "###"})).env is None


def test_container_fields():
    t = process_tags(info(cgroup=f"0::/system.slice/docker-{CID}.scope"))
    assert (t.container_id, t.cgroup_inode, t.container_name) == (CID, None, None)
    t = process_tags(info(cgroup="0::/user.slice/user-1000.slice/session-2.scope"))
    assert (t.container_id, t.cgroup_inode) == (None, None)


def test_missing_keys_tolerated():
    t = process_tags(ProcessInfo(pid=3, name="", exe="", env={}, cgroup=""))
    assert (t.service, t.service_inferred, t.container_id) == ("unknown-service", True, None)


# ---------------------------------------------------------------- tag rules


@pytest.mark.parametrize("text,want", [
    ("env:prod", "env:prod"),
    ("Team:Backend", "team:backend"),
    ("path:/var/log/app.log", "path:/var/log/app.log"),
    ("a b  c", "a_b_c"),
    ("a__b", "a_b"),
    ("key:value!!", "key:value"),                   # trailing illegal run dropped
    ("#!key", "key"),                               # leading non-letters trimmed
    (":colon", ":colon"),
    ("émoji:🍣ok", "émoji:_ok"),
    ("x" * 250, "x" * 200),
])
def test_normalize_tag(text, want):
    assert normalize_tag(text) == want


def test_validate_tags():
    valid, invalid = validate_tags([
        "env:staging", "Team:My App", "owner : alice", "simple", "version:1.0.0",
        "#invalid:tag", "1abc:x", "env:", ":value", "", "   ", "env:staging",
    ])
    assert valid == ["env:staging", "team:my_app", "owner:alice", "simple", "version:1.0.0"]
    assert invalid == ["#invalid:tag", "1abc:x", "env:", ":value", "", "   "]


def test_validate_tags_long_value_truncated():
    (tag,), invalid = validate_tags(["k:" + "v" * 300])
    assert tag == "k:" + "v" * 198 and invalid == []


@pytest.mark.parametrize("value,want", [
    ("", []),
    ("   ", []),
    ("env:prod,team:web", ["env:prod", "team:web"]),
    ("env:prod team:web", ["env:prod", "team:web"]),
    ("env:prod, team:web ,,", ["env:prod", "team:web"]),
    ("env : prod,owner:a b", ["env:prod", "owner:a b"]),  # commas win over spaces
    ("url:http://x:8080/a", ["url:http://x:8080/a"]),  # split at the first colon only
    ("bare other", ["bare", "other"]),
    ("k=v", ["k=v"]),                                   # not a Datadog form
])
def test_parse_dd_tags(value, want):
    assert parse_dd_tags(value) == want


def test_parse_then_validate():
    valid, invalid = validate_tags(parse_dd_tags("env:prod,owner:a b,k=v,#x:y"))
    assert valid == ["env:prod", "owner:a_b", "k_v"]
    assert invalid == ["#x:y"]


# ---------------------------------------------------------------- cache


def test_cache_memoizes_by_content():
    cache = TagCache(maxsize=8)
    a = cache.get(100, info({"DD_SERVICE": "a"}, pid=100))
    assert cache.get(100, info({"DD_SERVICE": "a"}, pid=100)) is a
    assert cache.get(101, info({"DD_SERVICE": "a"}, pid=101)) is a  # same process content
    assert cache.get(100, info({"DD_SERVICE": "b"})).service == "b"
    assert len(cache) == 2
    assert cache.get(5, None).service == "system"
    assert len(cache) == 2


def test_cache_bounded_lru():
    cache = TagCache(maxsize=3)
    made = [cache.get(i, info(name=f"p{i}", exe="")) for i in range(10)]
    assert len(cache) == 3
    assert cache.get(7, info(name="p7", exe="")) is made[7]  # a hit: p7 is now the newest
    cache.get(10, info(name="p10", exe=""))  # evicts p8, the least recently used
    assert cache.get(7, info(name="p7", exe="")) is made[7]
    assert cache.get(9, info(name="p9", exe="")) is made[9]
    assert cache.get(8, info(name="p8", exe="")) is not made[8]  # gone: computed again
    assert len(cache) == 3
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError):
        TagCache(maxsize=0)


def test_cache_does_not_call_process_tags_twice(monkeypatch):
    import ddprofiler.tagging as tagging
    calls = []
    real = tagging.process_tags
    monkeypatch.setattr(tagging, "process_tags", lambda i: calls.append(i) or real(i))
    cache = TagCache()
    proc = info({"DD_SERVICE": "x"}, cgroup=f"0::/docker/{CID}")
    for _ in range(1000):
        cache.get(1, proc)
    assert len(calls) == 1
