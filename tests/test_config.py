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
    ({}, {"DD_API_KEY": "short"}, "DD_API_KEY"),
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
        resolve(DD_API_KEY=KEY.upper())
    assert KEY.upper() not in str(e.value)


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
    r = _cli("config", DD_API_KEY="not-a-key")
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
