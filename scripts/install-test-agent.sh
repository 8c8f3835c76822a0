#!/usr/bin/env bash
# Install Datadog's agent emulator ddapm-test-agent (PyPI) into .venv-testagent/ at the repo
# root, apart from the project's own environment (its protobuf pins clash with ours).
# Idempotent: a venv whose ddapm-test-agent already runs is left as it is.
# Used by tests/test_upload_agent.py (and CI). Override the interpreter with PYTHON=...,
# the version with DDAPM_TEST_AGENT_SPEC=... (a pip requirement).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-testagent"
PYTHON="${PYTHON:-python3}"
SPEC="${DDAPM_TEST_AGENT_SPEC:-ddapm-test-agent}"

if [ -x "$VENV/bin/ddapm-test-agent" ] && "$VENV/bin/ddapm-test-agent" --help >/dev/null 2>&1; then
    echo "ddapm-test-agent already installed in $VENV"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's python3 has no venv/ensurepip without the python3-venv package.
        rm -rf "$VENV"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        else
            echo "cannot create a venv with $PYTHON: install python3-venv" >&2
            exit 1
        fi
    fi
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$SPEC"
"$VENV/bin/ddapm-test-agent" --help >/dev/null
echo "installed $("$VENV/bin/python" -m pip show ddapm-test-agent | sed -n 's/^Version: //p' | sed 's/^/ddapm-test-agent /') in $VENV"
