"""Settings: precedence (flag > DD_HOST_PROFILING_X > DD_X > default), sources, validation
(one-line usage errors, exit 2) and the API key never shown unmasked."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ddprofiler import config

KEY = "0123456789abcdef0123456789abcdef"


def resolve(flags=None, **env):
    return config.resolve(flags or {}, env)


def test_defaults_match_the_contract():
    s, src = resolve()
    assert (s.agent_url, s.sampling_rate, s.upload_period) == ("http://localhost:8126", 20, 60.0)
    assert (s.split_by_service, s.site, s.agentless, s.shutdown_timeout) == (True, "datadoghq.com", False, 10.0)
    assert s.node and src["node"].startswith("default")
    assert src["agent_url"] == "default"


@pytest.mark.parametrize("flags, env, expected, source", [
    ({"environment": "flag"}, {"DD_HOST_PROFILING_ENV": "hp", "DD_ENV": "dd"}, "flag", "flag --environment"),
    ({}, {"DD_HOST_PROFILING_ENV": "hp", "DD_ENV": "dd"}, "hp", "env DD_HOST_PROFILING_ENV"),
    ({}, {"DD_ENV": "dd"}, "dd", "env DD_ENV"),
    ({}, {"DD_ENV": "  "}, None, "default"),
])
def test_precedence(flags, env, expected, source):
    s, src = config.resolve(flags, env)
    assert s.environment == expected
    assert src["environment"] == source


def test_agent_url_from_host_and_port_and_unix_socket():
    s, src = resolve(DD_AGENT_HOST="10.0.0.7", DD_TRACE_AGENT_PORT="9126")
    assert s.agent_url == "http://10.0.0.7:9126"
    assert "DD_AGENT_HOST" in src["agent_url"]
    s, _ = resolve(DD_TRACE_AGENT_URL="unix:///var/run/datadog/apm.socket", DD_AGENT_HOST="ignored")
    assert s.agent_url == "unix:///var/run/datadog/apm.socket"


def test_durations_booleans_and_tags():
    s, _ = resolve(DD_HOST_PROFILING_UPLOAD_PERIOD="2m", DD_HOST_PROFILING_SPLIT_BY_SERVICE="false",
                   DD_HOST_PROFILING_SERVICE="host", DD_TAGS="team:core, tier:1,a:b")
    assert s.upload_period == 120.0
    assert s.split_by_service is False
    assert s.tags == ("team:core", "tier:1", "a:b")
    s, _ = resolve({"upload_period": "1.5"})
    assert s.upload_period == 1.5
    with pytest.raises(config.ConfigError):
        resolve({"upload_period": "500ms"})  # under the 1 s minimum


@pytest.mark.parametrize("flags, env, needle", [
    ({"agent_url": "ftp://x"}, {}, "--agent-url"),
    ({}, {"DD_SITE": "datadoghq.org"}, "DD_SITE"),
    ({"agentless": True}, {"DD_API_KEY": "short"}, "DD_API_KEY"),
    ({}, {"DD_API_KEY": "short", "DD_HOST_PROFILING_UPLOAD_SYMBOLS": "1"}, "DD_API_KEY"),
    ({}, {"DD_TRACE_AGENT_PORT": "http"}, "DD_TRACE_AGENT_PORT"),
    ({}, {"DD_TRACE_AGENT_PORT": "70000"}, "DD_TRACE_AGENT_PORT"),
    ({}, {"DD_AGENT_HOST": "h", "DD_TRACE_AGENT_PORT": "0"}, "DD_TRACE_AGENT_PORT"),
    ({}, {"DD_LOG_LEVEL": "loud"}, "DD_LOG_LEVEL"),
    ({}, {"DD_HOST_PROFILING_STATUS_FILE": "relative.json"}, "DD_HOST_PROFILING_STATUS_FILE"),
    ({}, {"DD_HOST_PROFILING_SAMPLING_RATE": "0"}, "DD_HOST_PROFILING_SAMPLING_RATE"),
    ({}, {"DD_HOST_PROFILING_UPLOAD_PERIOD": "soon"}, "DD_HOST_PROFILING_UPLOAD_PERIOD"),
    ({"split_by_service": False}, {}, "--host-service"),
    ({"agentless": True}, {}, "API key"),
    ({"stack_bytes": "1025"}, {}, "multiple of 8"),
    ({}, {"DD_HOST_PROFILING_UPLOAD_SYMBOLS": "true"}, "API key"),
    ({}, {"DD_HOST_PROFILING_EXPERIMENTAL_UPLOAD_SYMBOLS": "yes"}, "API key"),
])
def test_malformed_settings_are_errors(flags, env, needle):
    with pytest.raises(config.ConfigError) as e:
        config.resolve(flags, env)
    assert needle in str(e.value)


def test_key_is_masked_everywhere():
    s, src = resolve(DD_API_KEY=KEY, DD_APP_KEY="app" + KEY, DD_HOST_PROFILING_UPLOAD_SYMBOLS="1")
    assert s.upload_symbols and "app" + KEY not in repr(s)
    assert all("app" + KEY not in v for _, v, _ in config.describe(s, src))
    assert KEY not in repr(s)
    rows = config.describe(s, src)
    assert ("api_key", "****cdef", "env DD_API_KEY") in rows
    assert all(KEY not in v for _, v, _ in rows)
    with pytest.raises(config.ConfigError) as e:
        resolve(DD_API_KEY=KEY.upper(), DD_HOST_PROFILING_AGENTLESS="1")
    assert KEY.upper() not in str(e.value)


def test_api_key_is_checked_only_where_it_is_used():
    # Through the Agent the key is never read: another component's key must not stop us.
    s, _ = resolve(DD_API_KEY="not-a-key")
    assert not s.agentless and not s.upload_symbols
    with pytest.raises(config.ConfigError, match="DD_API_KEY"):
        resolve(DD_API_KEY="not-a-key", DD_HOST_PROFILING_AGENTLESS="true")
    s, _ = resolve({"output_dir": "/tmp/x", "agentless": True}, DD_API_KEY="not-a-key")
    assert s.output_dir  # files: the key is not used either


def test_trace_agent_port_alone_means_localhost():
    s, src = resolve(DD_TRACE_AGENT_PORT="9126")
    assert s.agent_url == "http://localhost:9126" and src["agent_url"] == "env DD_TRACE_AGENT_PORT"
    s, src = resolve(DD_AGENT_HOST="agent.local")
    assert s.agent_url == "http://agent.local:8126" and src["agent_url"] == "env DD_AGENT_HOST"
    s, _ = resolve(DD_AGENT_HOST="fd00::1", DD_TRACE_AGENT_PORT=" 8127 ")
    assert s.agent_url == "http://[fd00::1]:8127"
    s, _ = resolve(DD_TRACE_AGENT_URL="http://a:1", DD_TRACE_AGENT_PORT="9126")
    assert s.agent_url == "http://a:1"  # the URL wins, as in the tracers


def test_dd_hostname_sets_the_host_tag():
    s, src = resolve(DD_HOSTNAME="web-1", NODE_NAME="k8s-node")
    assert s.node == "web-1" and src["node"] == "env DD_HOSTNAME"
    s, _ = resolve(DD_HOST_PROFILING_NODE="hp", DD_HOSTNAME="web-1")
    assert s.node == "hp"


def test_reserved_keys_of_dd_tags_are_fallbacks_never_sent_twice():
    # As dd-trace-py: DD_ENV (and the dedicated settings) win over env: in DD_TAGS.
    s, src = resolve(DD_ENV="prod", DD_TAGS="env:staging,team:core,version:1.2,host:tagged,service:api")
    assert s.environment == "prod" and s.version == "1.2" and s.node == "tagged"
    assert s.tags == ("team:core",)
    assert set(s.unused_tags) == {"env:staging", "service:api"}  # split by service: each its own
    assert src["node"] == "env DD_TAGS (host:)"
    s, _ = resolve(DD_TAGS="env:staging,Service:batch", DD_HOST_PROFILING_SPLIT_BY_SERVICE="false")
    assert s.environment == "staging" and s.host_service == "batch" and s.unused_tags == ()
    s, _ = resolve({"node": "flag-host"}, DD_TAGS="host:tagged")
    assert s.node == "flag-host" and s.unused_tags == ("host:tagged",)


def test_repeated_tags_flag_adds():
    r = _cli("--tags", "team:core", "--tags", "tier:1,zone:a", "config")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert lines["tags"].split()[1] == "team:core,tier:1,zone:a", lines["tags"]
    r = _cli("config", "--tags", "a:1", "--tags", "b:2", DD_TAGS="c:3")
    assert {line.split()[0]: line for line in r.stdout.splitlines()}["tags"].split()[1] == "a:1,b:2"


def _cli(*args, **env):
    full = {**os.environ, **env}
    full["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "python"),
                                          full.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "ddprofiler", *args], capture_output=True, text=True,
                          env=full, timeout=60)


def test_config_command_shows_sources_and_masks_the_key():
    r = _cli("--upload-period", "30", "config", DD_API_KEY=KEY, DD_SITE="datadoghq.eu",
             DD_HOST_PROFILING_AGENTLESS="true")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert lines["upload_period"].split()[1:] == ["30.0", "flag", "--upload-period"]
    assert lines["site"].split()[1:] == ["datadoghq.eu", "env", "DD_SITE"]
    assert lines["agentless"].split()[1:] == ["true", "env", "DD_HOST_PROFILING_AGENTLESS"]
    assert KEY not in r.stdout + r.stderr


def test_bad_setting_is_one_line_exit_2():
    r = _cli("config", DD_API_KEY="not-a-key", DD_HOST_PROFILING_AGENTLESS="true")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "DD_API_KEY" in r.stderr and "Traceback" not in r.stderr
    r = _cli("--agent-url", "http://[::1", "config")
    assert r.returncode == 2 and "--agent-url" in r.stderr


def _mentions(text: str, word: str) -> bool:
    """`word` as a whole word of `text`: NODE_NAME is not found in KUBERNETES_NODE_NAME."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_help_documents_each_setting_with_its_variable():
    r = _cli("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for spec in config.SPECS:
        assert _mentions(text, spec.flag.split("/")[0]), spec.flag
        for env in spec.envs:
            assert _mentions(text, env), env
